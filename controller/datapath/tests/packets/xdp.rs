//! XDP acceleration: what XDP translates and sends itself (remote backends, on a proven device,
//! with a route), and what it leaves to tc, which must then find the flow as XDP recorded it.

use std::os::fd::AsFd;

use sluice_datapath::sys::{self, RunMode, TestContext};
use sluice_datapath::{loader, xdp_proof};

use crate::harness::*;

#[test]
fn xdp_acceleration_translates_remote_flows_and_passes_local_ones() {
    let Some(fx) = node("accel").accelerated().with_ip().start() else { return };

    // No route to the backend yet (FIB miss): XDP cannot send the packet itself, and a
    // translated packet handed to the stack would carry the node's own address as source and be
    // dropped as martian. So XDP records the flow and leaves the packet untouched ...
    let c2f = tcp(CLIENT_IN_RANGE, 48000).to(LB_REMOTE, 80);
    let first = c2f.syn();
    assert_eq!(fx.xdp(&first), (XDP_PASS, first.clone()));
    assert_eq!(fx.counter(Counter::XdpForward), 0, "counted only when XDP sends it itself");
    assert_eq!(fx.counter(Counter::NpFibFail), 1);
    // ... and tc translates it from that entry (resolving the neighbour on its way out).
    let seen = fx.ingress(&first).seen();
    assert_eq!(seen.flow, tcp(NODE4, 48000).to(REMOTE_BE, 8080));
    // The SYN-ACK: XDP leaves handshakes to tc, which reverses it and, with the client's ACK,
    // completes the handshake.
    let reply = seen.flow.reply().segment(SYN | ACK);
    assert_eq!(fx.xdp(&reply), (XDP_PASS, reply.clone()));
    assert_eq!(fx.ingress(&reply).seen().flow, c2f.reply());
    let ack = c2f.handshake_ack();
    assert_eq!(fx.xdp(&ack), (XDP_PASS, ack.clone()));
    fx.ingress(&ack);
    assert_eq!(fx.counter(Counter::NpEstablished), 1);

    // With routes, the same flow's next packet and its reply are translated in XDP itself.
    fx.routes_to_backends();
    fx.routes_to_clients();
    let out = fx.xdp(&c2f.data(b"second"));
    let second = out.expect(XDP_REDIRECT);
    assert_eq!(second.flow, seen.flow);
    assert_eq!(second.payload, b"second");
    assert_eq!(fx.counter(Counter::XdpForward), 1);
    // tc, seeing the already translated packet, leaves it alone.
    assert_eq!(fx.ingress(&out.frame), (TC_ACT_UNSPEC, out.frame.clone()));
    assert_eq!(fx.xdp(&seen.flow.reply().data(b"reply")).expect(XDP_REDIRECT).flow, c2f.reply());
    assert_eq!(fx.counter(Counter::XdpReverse), 1);

    // UDP without checksum stays without one in XDP as well.
    let u = udp(CLIENT, 5002).to(NODE4, 30053);
    let seen = fx.xdp(&u.packet().payload(b"x").without_udp_checksum().build()).seen();
    assert_eq!((seen.flow, seen.l4_csum), (udp(NODE4, 5002).to(REMOTE_BE, 5353), 0));
    // ... and with one, it is patched correctly (parse checks it).
    assert_eq!(fx.xdp(&udp(CLIENT, 5003).to(NODE4, 30053).data(b"y")).seen().flow, udp(NODE4, 5003).to(REMOTE_BE, 5353));

    // IPv6 in XDP.
    let c6 = tcp(CLIENT6, 48001).to(NODE6, 30084);
    let seen = fx.xdp(&c6.syn()).seen();
    assert_eq!(seen.flow, tcp(NODE6, 48001).to(REMOTE_BE6, 8080));
    fx.ingress(&seen.flow.reply().segment(SYN | ACK));
    fx.ingress(&c6.handshake_ack());
    assert_eq!(fx.xdp(&c6.data(b"v6")).seen().flow, seen.flow);
    assert_eq!(fx.xdp(&seen.flow.reply().data(b"v6 reply")).seen().flow, c6.reply());

    // A local backend is tc's: XDP passes the packet untouched, having recorded its choice.
    let local_flow = tcp(CLIENT_IN_RANGE, 48002).to(LB_LOCAL, 80);
    let local = local_flow.syn();
    assert_eq!(fx.xdp(&local), (XDP_PASS, local.clone()));
    assert_eq!(fx.counter(Counter::XdpPassLocal), 1);
    let fwd = fx.ct_get(&local_flow.ct_key(abi::CT_FORWARD)).expect("XDP records the local backend it picked");
    assert_eq!((fwd.addr1, fwd.flags), (Addr::from(LOCAL_BE), abi::CT_F_LOCAL));
    // tc then does the DNAT to that backend.
    let out = fx.ingress(&local);
    assert_eq!(out.verdict, TC_ACT_OK);
    assert_eq!(out.seen().flow, tcp(CLIENT_IN_RANGE, 48002).to(LOCAL_BE, 8080));
    // Once tc owns the flow, XDP keeps passing it: its SYN sent again, and once established,
    // its data.
    assert_eq!(fx.xdp(&local), (XDP_PASS, local.clone()));
    assert_eq!(fx.egress(&tcp(LOCAL_BE, 8080).to(CLIENT_IN_RANGE, 48002).segment(SYN | ACK)).seen().flow, local_flow.reply());
    fx.ingress(&local_flow.handshake_ack());
    let data = local_flow.data(b"local");
    assert_eq!(fx.xdp(&data), (XDP_PASS, data.clone()));
    assert_eq!(fx.counter(Counter::XdpPassLocal), 1);
}

#[test]
fn xdp_takes_only_the_clients_own_port_as_snat_port_and_leaves_the_search_and_closes_to_tc() {
    let Some(fx) = node("xdpsearch").accelerated().routed().start() else { return };
    let a = tcp(CLIENT_IN_RANGE, 48100).to(LB_REMOTE, 80);
    assert_eq!(fx.xdp(&a.syn()).expect(XDP_REDIRECT).flow, tcp(NODE4, 48100).to(REMOTE_BE, 8080));
    // Another client on the same port: that SNAT port is taken, so XDP hands the packet on
    // untouched and records nothing; tc finds another port.
    let b = tcp(Ipv4Addr::new(192, 0, 2, 8), 48100).to(LB_REMOTE, 80);
    let syn = b.syn();
    assert_eq!(fx.xdp(&syn), (XDP_PASS, syn.clone()));
    assert!(fx.ct_get(&b.ct_key(abi::CT_FORWARD)).is_none());
    let seen = fx.ingress(&syn).seen().flow;
    assert_eq!((seen.src, seen.dst), (IpAddr::from(NODE4), IpAddr::from(REMOTE_BE)));
    assert_ne!(seen.sport, 48100);
    // A FIN is tc's to see, so the close is recorded.
    let fin = a.segment(FIN | ACK);
    assert_eq!(fx.xdp(&fin), (XDP_PASS, fin.clone()));
    fx.ingress(&fin);
    assert_eq!(fx.ct_get(&a.ct_key(abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_FIN_FWD);
}

#[test]
fn xdp_leaves_remote_flows_to_tc_on_a_device_not_proven() {
    let Some(fx) = node("unproven").accelerated().routed().start() else { return };
    for state in [XdpState::Unproven, XdpState::Fallback, XdpState::Failed] {
        fx.device_state(1, state);
        let pkt = tcp(CLIENT_IN_RANGE, 48100 + state as u16).to(LB_REMOTE, 80).syn();
        assert_eq!(fx.xdp(&pkt), (XDP_PASS, pkt.clone()), "{state:?}: untouched, for tc");
        assert_eq!(fx.ingress(&pkt).seen().flow.dst, IpAddr::from(REMOTE_BE), "{state:?}: tc translates it");
    }
    assert_eq!(fx.counter(Counter::XdpForward), 0);
    // Proven: the same flow's next packet goes out from XDP.
    fx.device_state(1, XdpState::Accelerated);
    let pkt = tcp(CLIENT_IN_RANGE, 48100 + XdpState::Failed as u16).to(LB_REMOTE, 80).syn();
    assert_eq!(fx.xdp(&pkt).verdict, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpForward), 1);
}

#[test]
fn a_syn_sent_again_on_a_flow_xdp_created_and_nobody_answered_is_counted() {
    let Some(fx) = node("unanswered").accelerated().routed().start() else { return };
    let syn = tcp(CLIENT_IN_RANGE, 48200).to(LB_REMOTE, 80).syn();
    let b2n = fx.xdp(&syn).expect(XDP_REDIRECT).flow.reply();
    let flags = || fx.ct_get(&b2n.ct_key(abi::CT_REVERSE)).unwrap().flags;
    assert_eq!(flags(), abi::CT_F_SNAT | abi::CT_F_XDP_UNANSWERED);
    // SYNs repeating the tuple with another sequence number, or sooner than TCP sends again (a
    // spoofed flood's random tuples meeting): not the client waiting for an answer.
    let (c2f, resent_after) = (tcp(CLIENT_IN_RANGE, 48200).to(LB_REMOTE, 80), handshake_ticks(abi::CT_HS_RESENT_TICKS + 1));
    assert_eq!(fx.xdp(&c2f.packet().flags(SYN).seq(TCP_SEQ ^ 0x5555).build()).verdict, XDP_REDIRECT);
    assert_eq!(fx.xdp(&syn).verdict, XDP_REDIRECT);
    std::thread::sleep(resent_after);
    assert_eq!(fx.xdp(&c2f.packet().flags(SYN).seq(TCP_SEQ ^ 0x5555).build()).verdict, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpSynUnanswered), 0);
    // The client sends its SYN again after TCP's timeout: nothing came back.
    assert_eq!(fx.xdp(&syn).verdict, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpSynUnanswered), 1);
    // The SYN-ACK (XDP leaves handshakes to tc): the flow is answered, once.
    assert_eq!(fx.xdp(&b2n.segment(SYN | ACK)).verdict, XDP_PASS);
    assert_eq!(fx.ingress(&b2n.segment(SYN | ACK)).verdict, TC_ACT_REDIRECT);
    assert_eq!(flags(), abi::CT_F_SNAT);
    assert_eq!(fx.ingress(&b2n.segment(SYN | ACK)).verdict, TC_ACT_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpFlowAnswered), 1);
    // A SYN sent again now (its SYN-ACK was lost on the way back) is not counted, nor is a flow
    // tc created.
    let by_tc = tcp(CLIENT_IN_RANGE, 48201).to(LB_REMOTE, 80);
    fx.ingress(&by_tc.syn());
    std::thread::sleep(resent_after);
    assert_eq!(fx.xdp(&syn).verdict, XDP_REDIRECT);
    assert_eq!(fx.xdp(&by_tc.syn()).verdict, XDP_REDIRECT);
    assert_eq!(fx.counter(Counter::XdpSynUnanswered), 1);
}

#[test]
fn xdp_leaves_a_udp_flows_first_reply_of_an_epoch_to_tc_which_stamps_both_entries() {
    let Some(fx) = node("xdpepoch").accelerated().routed().start() else { return };
    away_from_an_epoch_edge();
    let c2f = udp(CLIENT_IN_RANGE, 5400).to(NODE4, 30053);
    let snated = fx.xdp(&c2f.data(b"q")).expect(XDP_REDIRECT).flow;
    assert_eq!(snated, udp(NODE4, 5400).to(REMOTE_BE, 5353));
    let reply = snated.reply().data(b"a");
    assert_eq!(fx.xdp(&reply).verdict, XDP_REDIRECT, "a reply within the epoch stays in XDP");
    // The epoch moves on: the next reply goes to tc, which stamps the reverse and the forward entry.
    let (fk, rk) = (c2f.ct_key(abi::CT_FORWARD), snated.reply().ct_key(abi::CT_REVERSE));
    let now = fx.ct_get(&rk).unwrap().epoch;
    fx.set_epoch(&[fk, rk], if now == 1 { 255 } else { now - 1 });
    assert_eq!(fx.xdp(&reply), (XDP_PASS, reply.clone()));
    assert_eq!(fx.ingress(&reply).expect(TC_ACT_REDIRECT).flow, c2f.reply());
    assert_eq!((fx.ct_get(&fk).unwrap().epoch, fx.ct_get(&rk).unwrap().epoch), (now, now), "both entries stamped");
    assert_eq!(fx.xdp(&reply).verdict, XDP_REDIRECT, "and XDP takes the replies again");
}

#[test]
fn xdp_acceleration_takes_a_reply_to_a_snat_port_that_is_also_a_node_port_as_a_reply() {
    let Some(fx) = node("collide").accelerated().routed().start() else { return };
    // The client's source port happens to be a NodePort; it is kept as the SNAT port.
    let c2f = tcp(CLIENT, 30082).to(NODE4, 30082);
    let snated = fx.xdp(&c2f.syn()).expect(XDP_REDIRECT).flow;
    assert_eq!(snated, tcp(NODE4, 30082).to(REMOTE_BE, 8080));
    // The reply is addressed to NODE4:30082, which is also a frontend: a SYN-ACK XDP leaves to
    // tc, as every handshake's, and once the flow is established, the replies XDP sends itself.
    let syn_ack = snated.reply().segment(SYN | ACK);
    assert_eq!(fx.xdp(&syn_ack), (XDP_PASS, syn_ack.clone()), "the SYN-ACK was taken for a new flow");
    assert_eq!(fx.ingress(&syn_ack).seen().flow, c2f.reply());
    fx.ingress(&c2f.handshake_ack());
    let reply = snated.reply().data(b"reply");
    assert_eq!(fx.xdp(&reply).expect(XDP_REDIRECT).flow, c2f.reply(), "the reply was taken for a new flow");
    // tc (replies first) agrees.
    let out = fx.ingress(&reply);
    assert_eq!(out.verdict, TC_ACT_REDIRECT);
    assert_eq!(out.seen().flow, c2f.reply());
    assert_eq!(fx.counter(Counter::XdpForward), 1);
}

#[test]
fn xdp_acceleration_keeps_the_split_between_local_and_remote_backends_even() {
    let Some(fx) = node("split").accelerated().start() else { return };
    let n = 400;
    let (mut local, mut remote) = (0, 0);
    for port in 0..n {
        let pkt = tcp(CLIENT, 20000 + port).to(NODE4, 30086).syn();
        let out = fx.xdp(&pkt);
        assert_eq!(out.verdict, XDP_PASS);
        // What XDP passes untouched, tc ingress gets next.
        let out = if out.frame == pkt { fx.ingress(&pkt) } else { out };
        match v4(out.seen().flow.dst) {
            LOCAL_BE => local += 1,
            REMOTE_BE => remote += 1,
            other => panic!("backend {other}"),
        }
    }
    // Binomial(400, 1/2): 150..250 is 5 standard deviations either way.
    assert!((150..=250).contains(&local), "{local} local vs {remote} remote of {n} flows");
}

#[test]
fn the_proof_frame_leaves_the_way_a_translated_flow_does() {
    let Some(mut fx) = node("probe").accelerated().routes_to_backends().start() else { return };
    let s0 = fx.s0();
    let probe = loader::load_xdp_probe(fx.xdp_object()).expect("loading sluice_xdp_probe");
    let run = |frame: &[u8], ifindex| sys::prog_test_run(probe.as_fd(), frame, TestContext::XdpIngress(ifindex), RunMode::Dry).unwrap();
    let frame = xdp_proof::echo_frame(NODE4.into(), REMOTE_BE.into(), 7, 1);
    // Back out of the device it came in on, addressed to the next hop ...
    let (verdict, out) = run(&frame, s0);
    assert_eq!(verdict, sys::XDP_TX);
    assert_eq!((&out[0..6], &out[6..12]), (&MAC_BACKEND[..], &MAC_S0[..]), "MACs of the next hop");
    assert_eq!(&out[12..], &frame[12..], "nothing else changed");
    // ... or redirected out of another one ...
    assert_eq!(run(&frame, 1).0, sys::XDP_REDIRECT);
    // ... and dropped where XDP finds no way, as a flow would be left to tc.
    let nowhere = xdp_proof::echo_frame(NODE4.into(), "203.0.113.9".parse().unwrap(), 7, 2);
    assert_eq!(run(&nowhere, s0).0, sys::XDP_DROP);
    let v6 = xdp_proof::echo_frame(NODE6.into(), REMOTE_BE6.into(), 7, 3);
    assert_eq!(run(&v6, s0).0, sys::XDP_TX);
    assert_eq!(fx.counters(), vec![], "the proof counts nothing");
}
