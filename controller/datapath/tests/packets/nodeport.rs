//! NodePort translation in tc: DNAT to a local backend, DNAT and SNAT to a remote one, and the
//! replies turned back into the frontend's, for TCP and UDP.

use crate::harness::*;

#[test]
fn nodeport_local_backend_is_dnat_only_and_egress_restores_the_frontend() {
    let Some(fx) = node("local").start() else { return };
    let c2f = tcp(CLIENT, 40000).to(NODE4, 30081);

    let out = fx.ingress(&c2f.syn());
    assert_eq!(out.verdict, TC_ACT_OK, "a local backend is delivered by the stack");
    let seen = out.seen();
    assert_eq!(seen.flow, tcp(CLIENT, 40000).to(LOCAL_BE, 8080), "DNAT only: the client's address stays");
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_NODE, MAC_CLIENT), "the stack routes it; MACs untouched");

    let fwd = fx.ct_get(&c2f.ct_key(abi::CT_FORWARD)).expect("forward conntrack entry");
    assert_eq!((fwd.addr1, u16::from_be(fwd.port1_be), fwd.flags), (Addr::from(LOCAL_BE), 8080, abi::CT_F_LOCAL));
    let b2c = tcp(LOCAL_BE, 8080).to(CLIENT, 40000);
    let rev = fx.ct_get(&b2c.ct_key(abi::CT_REVERSE)).expect("reverse conntrack entry keyed backend -> client");
    assert_eq!((rev.addr1, u16::from_be(rev.port1_be)), (Addr::from(NODE4), 30081));
    assert_eq!(fx.ct().len(), 2);

    // The backend's reply, leaving the node: source becomes the frontend again.
    let reply = b2c.data(b"hello");
    let seen = fx.egress(&reply).expect(TC_ACT_OK);
    assert_eq!(seen.flow, tcp(NODE4, 30081).to(CLIENT, 40000));
    assert_eq!(seen.payload, b"hello");

    // The same reply seen by ingress is not ingress's to translate (no SNAT): untouched.
    assert_eq!(fx.ingress(&reply), (TC_ACT_UNSPEC, reply.clone()));

    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 1), (Counter::NpReverse, 1)]);
}

#[test]
fn nodeport_remote_backend_is_dnat_and_snat_and_the_reply_is_reversed_on_ingress() {
    let Some(fx) = node("remote").start() else { return };
    let c2f = tcp(CLIENT, 40001).to(NODE4, 30082);

    // Translated for forwarding; the FIB helper has no route in this namespace, so the code
    // leaves the packet to the stack (TC_ACT_OK) and counts the miss.
    let seen = fx.ingress(&c2f.syn()).expect(TC_ACT_OK);
    assert_eq!(fx.counter(Counter::NpFibFail), 1);
    // The client's port is kept as SNAT port while no other flow to that backend uses it.
    assert_eq!(seen.flow, tcp(NODE4, 40001).to(REMOTE_BE, 8080));

    let fwd = fx.ct_get(&c2f.ct_key(abi::CT_FORWARD)).expect("forward entry");
    assert_eq!(fwd.flags, abi::CT_F_SNAT);
    assert_eq!((fwd.addr2, u16::from_be(fwd.port2_be)), (Addr::from(NODE4), 40001));
    let b2n = tcp(REMOTE_BE, 8080).to(NODE4, 40001);
    let rev = fx.ct_get(&b2n.ct_key(abi::CT_REVERSE)).expect("reverse entry keyed backend -> node");
    assert_eq!((rev.addr1, u16::from_be(rev.port1_be), rev.addr2, u16::from_be(rev.port2_be)), (Addr::from(NODE4), 30082, Addr::from(CLIENT), 40001));

    let out = fx.ingress(&b2n.data(b"reply"));
    assert_eq!(out.verdict, TC_ACT_OK, "reverse-translated for forwarding, FIB miss -> stack");
    let seen = out.seen();
    assert_eq!(seen.flow, tcp(NODE4, 30082).to(CLIENT, 40001));
    assert_eq!(seen.payload, b"reply");

    // Egress leaves SNATed replies to ingress.
    let b2n_pkt = b2n.data(b"x");
    assert_eq!(fx.egress(&b2n_pkt), (TC_ACT_UNSPEC, b2n_pkt.clone()));

    // A second client with the same source port gets another SNAT port to the same backend.
    let other = tcp(Ipv4Addr::new(198, 51, 100, 21), 40001).to(NODE4, 30082);
    let seen = fx.ingress(&other.syn()).expect(TC_ACT_OK);
    assert_eq!((seen.flow.src, seen.flow.dst, seen.flow.dport), (IpAddr::from(NODE4), IpAddr::from(REMOTE_BE), 8080));
    assert_ne!(seen.flow.sport, 40001, "SNAT port collides with the first flow");
    assert!((abi::SNAT_PORT_MIN..=abi::SNAT_PORT_MAX).contains(&seen.flow.sport), "SNAT port {}", seen.flow.sport);
    assert_eq!(fx.ingress(&seen.flow.reply().syn()).seen().flow, other.reply(), "the second flow's reply goes to the second client");

    // The first client's port towards another frontend of the same backend is another flow:
    // it must get its own SNAT port, or the first flow's replies would come back from the
    // second frontend (seen as rare timeouts when clients reuse ports across Services).
    let third = tcp(CLIENT, 40001).to(Ipv4Addr::new(10, 96, 0, 82), 80);
    let seen3 = fx.ingress(&third.syn()).seen();
    assert_eq!(seen3.flow.dst, IpAddr::from(REMOTE_BE));
    assert_ne!(seen3.flow.sport, 40001, "two flows share one SNAT tuple");
    assert_eq!(fx.ingress(&b2n.data(b"again")).seen().flow, tcp(NODE4, 30082).to(CLIENT, 40001), "the first flow's replies keep their frontend");
    assert_eq!(fx.ingress(&seen3.flow.reply().syn()).seen().flow, third.reply());

    assert_eq!(fx.counters(), vec![(Counter::NpNewFlow, 3), (Counter::NpReverse, 4), (Counter::NpFibFail, 7)]);
}

#[test]
fn udp_nodeport_to_a_remote_backend_and_back() {
    let Some(fx) = node("udp").start() else { return };
    let c2f = udp(CLIENT, 5000).to(NODE4, 30053);

    let seen = fx.ingress(&c2f.data(b"query")).expect(TC_ACT_OK);
    assert_eq!(seen.flow, udp(NODE4, 5000).to(REMOTE_BE, 5353));
    assert_ne!(seen.l4_csum, 0);
    assert_eq!(seen.payload, b"query");

    let seen = fx.ingress(&seen.flow.reply().data(b"answer")).expect(TC_ACT_OK);
    assert_eq!(seen.flow, udp(NODE4, 30053).to(CLIENT, 5000));
    assert_eq!(seen.payload, b"answer");

    // UDP over IPv4 without a checksum must stay without one (not become a wrong one).
    let c2f = udp(CLIENT, 5001).to(NODE4, 30053);
    let seen = fx.ingress(&c2f.packet().payload(b"nocsum").without_udp_checksum().build()).expect(TC_ACT_OK);
    assert_eq!(seen.flow, udp(NODE4, 5001).to(REMOTE_BE, 5353));
    assert_eq!(seen.l4_csum, 0);
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
    assert_eq!(fx.counter(Counter::NpReverse), 1);

    // The backend is removed: the agent forgets its UDP flows (both directions), so the
    // client's next datagram is balanced anew instead of following a dead entry.
    let fwd_key = udp(CLIENT, 5000).to(NODE4, 30053).ct_key(abi::CT_FORWARD);
    assert!(fx.ct_get(&fwd_key).is_some());
    let removed = sluice_datapath::conntrack::forget_udp_backends(fx.pins(), &[(Addr::from(REMOTE_BE), 5353)]).unwrap();
    assert_eq!(removed, 4, "forward and reverse entries of both flows");
    assert!(fx.ct_get(&fwd_key).is_none());
    assert_eq!(sluice_datapath::conntrack::forget_udp_backends(fx.pins(), &[(Addr::from(REMOTE_BE), 8080)]).unwrap(), 0);
}

#[test]
fn udp_snat_avoids_the_nodes_own_ports_and_leaves_their_replies_to_them() {
    let Some(fx) = node("udpown").routes_to_backends().start() else { return };
    sh(&["ip", "addr", "add", "172.30.0.11/32", "dev", "lo"]);
    // A process of the node has UDP port 5100 (bound, not connected): a reply to it would reach
    // that socket, so a client on port 5100 gets another SNAT port.
    let bound = std::net::UdpSocket::bind((NODE4, 5100)).unwrap();
    let seen = fx.ingress(&udp(CLIENT, 5100).to(NODE4, 30053).data(b"q")).seen().flow;
    assert_eq!((seen.src, seen.dst), (IpAddr::from(NODE4), IpAddr::from(REMOTE_BE)));
    assert_ne!(seen.sport, 5100, "SNAT took a port a node socket holds");
    drop(bound);
    // A NAT flow on port 5200; then a node process talks to the same backend from that port.
    // Its connected socket owns the tuple: the replies are its own, not the NAT flow's.
    let c2f = udp(CLIENT, 5200).to(NODE4, 30053);
    assert_eq!(fx.ingress(&c2f.data(b"q")).seen().flow, udp(NODE4, 5200).to(REMOTE_BE, 5353));
    let reply = udp(REMOTE_BE, 5353).to(NODE4, 5200).data(b"a");
    assert_eq!(fx.ingress(&reply).seen().flow, c2f.reply(), "a NAT reply while no node socket has the port");
    let own = std::net::UdpSocket::bind((NODE4, 5200)).unwrap();
    own.connect((REMOTE_BE, 5353)).unwrap();
    assert_eq!(fx.ingress(&reply), (TC_ACT_UNSPEC, reply.clone()), "the node's connected socket owns the tuple");
}

/// What tc ingress redirects out of the device it came in on (a remote backend's request, or
/// its reply back to the client) passes egress on that device without a lookup: only a local
/// backend's reply is egress's, and that never comes in by the device it leaves by.
#[test]
fn egress_leaves_alone_what_came_in_by_the_same_device() {
    let Some(fx) = node("egress_same_dev").start() else { return };
    let c2f = tcp(CLIENT, 40001).to(NODE4, 30081);
    fx.ingress(&c2f.syn()).expect(TC_ACT_OK);
    let reply = tcp(LOCAL_BE, 8080).to(CLIENT, 40001).data(b"hi");
    // From a pod's veth (another device), the local backend's reply is translated...
    let seen = fx.egress_via(&reply, 7, 1).expect(TC_ACT_OK);
    assert_eq!(seen.flow, tcp(NODE4, 30081).to(CLIENT, 40001));
    // ...but the very same bytes coming in by the device they leave by are not egress's.
    assert_eq!(fx.egress_via(&reply, 1, 1), (TC_ACT_UNSPEC, reply.clone()));
    assert_eq!(fx.counter(Counter::NpReverse), 1);
}

/// One direct packet write anywhere in a tc program makes the verifier prepend an "unclone"
/// prologue (skb->cloned tested, then bpf_skb_pull_data(skb, 0)) that copies the head of every
/// cloned packet the program sees, ours or not: every TCP segment on egress is a clone, its
/// original waiting for its ACK. So tc writes packets through helpers only.
#[test]
fn tc_programs_do_not_copy_the_packets_they_see() {
    let Some(fx) = node("tc_no_unclone").start() else { return };
    for name in [sluice_datapath::loader::TC_INGRESS, sluice_datapath::loader::TC_EGRESS] {
        let insns = fx.tc_xlated(name);
        assert!(insns.len() > 2, "{name}: {} instructions read back", insns.len());
        // The prologue's first two steps: BPF_LDX|BPF_MEM|BPF_B (0x71) of the skb's cloned byte
        // into r6 from r1 (dst and src nibbles: 0x16), then BPF_ALU|BPF_AND|BPF_K (0x54) on r6.
        let prologue = insns[0][0] == 0x71 && insns[0][1] == 0x16 && insns[1][0] == 0x54 && insns[1][1] & 0x0f == 6;
        assert!(!prologue, "{name} starts with the kernel's unclone prologue: some code writes the packet directly");
    }
}
