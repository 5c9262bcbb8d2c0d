//! Conntrack: a flow stays on its backend, its entries survive other flows on the same tuple,
//! and a flow that is over (closed TCP, UDP idle for two epochs) gives its SNAT port up for good.

use crate::harness::*;

use sluice_abi::CtValue;

/// Fills every SNAT port towards `backend` with a flow still open from another client (through
/// another frontend), so a new flow to it finds no free port.
fn hold_every_snat_port(fx: &Fixture, backend: Source, epoch: u8) {
    hold_snat_ports(fx, backend, epoch, abi::SNAT_PORT_MIN..=abi::SNAT_PORT_MAX);
}

fn hold_snat_ports(fx: &Fixture, backend: Source, epoch: u8, ports: impl Iterator<Item = u16>) {
    let other = Ipv4Addr::new(198, 51, 100, 99);
    fx.ct_put(ports.map(|port| {
        let held = CtValue {
            addr1: Addr::from(NODE4),
            addr2: Addr::from(other),
            port1_be: 30099u16.to_be(),
            port2_be: port.to_be(),
            rev_nat_id: 1,
            flags: abi::CT_F_SNAT,
            epoch,
        };
        (backend.to(NODE4, port).ct_key(abi::CT_REVERSE), held)
    }));
}

#[test]
fn a_flow_reclaims_its_reverse_entry_from_a_later_flow_on_the_same_client_port() {
    let Some(fx) = node("reclaim").start() else { return };
    // Two frontends of one local backend, one client port: at the backend both flows are the
    // same tuple, so the reverse entry can hold only one of them at a time.
    let a = tcp(CLIENT, 45555).to(NODE4, 30081);
    let b = tcp(CLIENT, 45555).to(Ipv4Addr::new(10, 96, 0, 81), 80);
    let to_backend = fx.establish(a);
    assert_eq!(to_backend, tcp(CLIENT, 45555).to(LOCAL_BE, 8080));
    fx.establish(b);
    // Flow a sends again (its earlier connection ended; the client reused the port for it).
    fx.ingress(&a.data(b"a again"));
    assert_eq!(fx.egress(&to_backend.reply().data(b"reply")).seen().flow, a.reply(), "the reply must come from the frontend flow a used");
}

#[test]
fn a_closed_flows_snat_port_goes_to_a_new_flow_only_when_no_port_is_free() {
    let Some(fx) = node("snatreuse").start() else { return };
    let a = tcp(CLIENT, 40001).to(NODE4, 30082);
    assert_eq!(fx.establish(a), tcp(NODE4, 40001).to(REMOTE_BE, 8080));
    // Every other port to that backend is held by a flow still open (long-lived connections
    // through another frontend), so flow a's port is the only candidate left.
    hold_every_snat_port(&fx, tcp(REMOTE_BE, 8080), 0);
    let b = tcp(Ipv4Addr::new(198, 51, 100, 21), 40001).to(NODE4, 30082);
    assert_eq!(fx.ingress(&b.syn()).verdict, TC_ACT_SHOT, "no free SNAT port while flow a is open");
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 1);

    // Flow a closes: FIN from the client, FIN from the backend. Both entries record it.
    fx.ingress(&a.segment(FIN | ACK));
    let b2n = tcp(REMOTE_BE, 8080).to(NODE4, 40001);
    assert_eq!(fx.ingress(&b2n.segment(FIN | ACK)).seen().flow, a.reply());
    assert_eq!(fx.ct_get(&a.ct_key(abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_CLOSED);
    assert_eq!(fx.ct_get(&b2n.ct_key(abi::CT_REVERSE)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_CLOSED);

    // Now flow b gets the closed flow's port, and the backend's replies go to b.
    assert_eq!(fx.ingress(&b.syn()).seen().flow, tcp(NODE4, 40001).to(REMOTE_BE, 8080));
    assert_eq!(fx.ingress(&b2n.segment(ACK)).seen().flow, b.reply());
    // Flow a's last ACK still reaches the backend, but must not take the port back from b.
    fx.ingress(&a.segment(ACK));
    let late = b2n.packet().flags(ACK).payload(b"x").build();
    assert_eq!(fx.ingress(&late).seen().flow, b.reply(), "a closed flow reclaimed its SNAT port");
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 1);
}

#[test]
fn a_handshake_whose_client_went_silent_gives_up_its_snat_port_when_no_port_is_free() {
    let Some(fx) = node("hsstale").start() else { return };
    // A spoofed SYN's handshake: the backend will answer, the client never will.
    let a = tcp(CLIENT, 40002).to(NODE4, 30082);
    assert_eq!(fx.ingress(&a.syn()).seen().flow, tcp(NODE4, 40002).to(REMOTE_BE, 8080));
    let b2n = tcp(REMOTE_BE, 8080).to(NODE4, 40002);
    assert_eq!(fx.ingress(&b2n.segment(SYN | ACK)).seen().flow, a.reply());
    let a_keys = [a.ct_key(abi::CT_FORWARD), b2n.ct_key(abi::CT_REVERSE)];
    // Every other port to the backend is held by an established flow.
    hold_snat_ports(&fx, tcp(REMOTE_BE, 8080), 0, (abi::SNAT_PORT_MIN..=abi::SNAT_PORT_MAX).filter(|p| *p != 40002));
    let b = tcp(Ipv4Addr::new(198, 51, 100, 22), 40002).to(NODE4, 30082);
    assert_eq!(fx.ingress(&b.syn()).verdict, TC_ACT_SHOT, "a handshake a moment old keeps its port");
    // Silent just short of the limit, then its client sends the SYN again: still kept.
    fx.handshakes_silent_for(&a_keys, abi::CT_HS_STALE_TICKS - 1);
    assert_eq!(fx.ingress(&b.syn()).verdict, TC_ACT_SHOT, "a handshake silent for less than the limit keeps its port");
    fx.handshakes_silent_for(&a_keys, abi::CT_HS_STALE_TICKS);
    assert_eq!(fx.ingress(&a.syn()).seen().flow, tcp(NODE4, 40002).to(REMOTE_BE, 8080));
    assert_eq!(fx.ingress(&b.syn()).verdict, TC_ACT_SHOT, "a client sending its SYN again keeps its port");
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 3);
    // A SYN on the same tuple with another sequence number (a flood repeating it) is not the
    // client's: it does not keep the handshake alive.
    fx.handshakes_silent_for(&a_keys, abi::CT_HS_STALE_TICKS);
    assert_eq!(fx.ingress(&a.packet().flags(SYN).seq(TCP_SEQ ^ 0x5555).build()).seen().flow, tcp(NODE4, 40002).to(REMOTE_BE, 8080));
    // Given up: the new flow takes the port, and the backend's replies go to it.
    assert_eq!(fx.ingress(&b.syn()).seen().flow, tcp(NODE4, 40002).to(REMOTE_BE, 8080));
    assert_eq!(fx.ingress(&b2n.segment(SYN | ACK)).seen().flow, b.reply());
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 3);
}

#[test]
fn a_udp_flow_idle_for_two_epochs_is_over_and_its_snat_port_can_go_to_a_new_flow() {
    let Some(fx) = node("udpidle").start() else { return };
    let a = udp(CLIENT, 5300).to(NODE4, 30053);
    assert_eq!(fx.ingress(&a.data(b"q")).seen().flow, udp(NODE4, 5300).to(REMOTE_BE, 5353));
    let (fk, rk) = (a.ct_key(abi::CT_FORWARD), udp(REMOTE_BE, 5353).to(NODE4, 5300).ct_key(abi::CT_REVERSE));
    let now = fx.ct_get(&fk).unwrap().epoch;
    assert_ne!(now, 0, "a UDP entry carries its epoch");
    // An entry from before epochs (0) is fresh: the flow goes on, and gets stamped.
    fx.set_epoch(&[fk], 0);
    fx.ingress(&a.data(b"q2"));
    assert_eq!(fx.counter(Counter::NpNewFlow), 1);
    assert_ne!(fx.ct_get(&fk).unwrap().epoch, 0);
    // Every other port to that backend is held by fresh UDP flows: a new client is dropped.
    hold_every_snat_port(&fx, udp(REMOTE_BE, 5353), now);
    let b = udp(Ipv4Addr::new(198, 51, 100, 21), 5300).to(NODE4, 30053);
    assert_eq!(fx.ingress(&b.data(b"q")).verdict, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 1);
    // Flow a goes quiet for two epochs: its port goes to b, and b gets the replies.
    let timeout = abi::CT_UDP_TIMEOUT_EPOCHS;
    let idle = if now.wrapping_sub(timeout) == 0 { now.wrapping_sub(timeout + 1) } else { now.wrapping_sub(timeout) };
    fx.set_epoch(&[fk, rk], idle);
    assert_eq!(fx.ingress(&b.data(b"q")).seen().flow, udp(NODE4, 5300).to(REMOTE_BE, 5353));
    let reply = udp(REMOTE_BE, 5353).to(NODE4, 5300).data(b"a");
    assert_eq!(fx.ingress(&reply).seen().flow, b.reply());
    // a speaks again: a new flow (no port is free here, so it is dropped), never b's port.
    assert_eq!(fx.ingress(&a.data(b"q3")).verdict, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
    assert_eq!(fx.ingress(&reply).seen().flow, b.reply(), "an idle flow took its port back");
}

#[test]
fn a_syn_on_a_closed_flows_tuple_is_a_new_flow() {
    let Some(fx) = node("synclose").start() else { return };
    let a = tcp(CLIENT, 40002).to(NODE4, 30082);
    fx.ingress(&a.syn());
    // An RST closes the flow at once (both sides).
    fx.ingress(&tcp(REMOTE_BE, 8080).to(NODE4, 40002).segment(RST | ACK));
    assert_eq!(fx.ct_get(&a.ct_key(abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT | abi::CT_F_CLOSED);
    // The client reuses its port: a new flow, counted as one, with its entries open again.
    fx.ingress(&a.syn());
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
    assert_eq!(fx.ct_get(&a.ct_key(abi::CT_FORWARD)).unwrap().flags, abi::CT_F_SNAT);
    // Without a close, a SYN retransmission stays the same flow.
    fx.ingress(&a.syn());
    assert_eq!(fx.counter(Counter::NpNewFlow), 2);
}

#[test]
fn conntrack_keeps_a_flow_on_its_backend_among_several() {
    let Some(fx) = node("ct").start() else { return };
    let backends: Vec<IpAddr> = (10..18).map(|i| IpAddr::from(Ipv4Addr::new(10, 244, 2, i))).collect();

    let c2f = tcp(CLIENT, 41000).to(NODE4, 30083);
    let first = fx.ingress(&c2f.syn()).seen().flow;
    assert!(backends.contains(&first.dst), "{first:?}");
    for i in 0..20 {
        let out = fx.ingress(&c2f.data(format!("segment {i}").as_bytes()));
        assert_eq!(out.verdict, TC_ACT_OK);
        assert_eq!(out.seen().flow, first, "packet {i} of the flow moved");
    }
    assert_eq!(fx.counter(Counter::NpNewFlow), 1);
    assert_eq!(fx.counter(Counter::NpForward), 20);

    // New flows do spread (all 40 on one backend of 8 would be a 1 in 8^39 accident).
    let mut seen = std::collections::BTreeSet::new();
    for port in 42000..42040 {
        seen.insert(fx.ingress(&tcp(CLIENT, port).to(NODE4, 30083).syn()).seen().flow.dst);
    }
    assert!(seen.len() >= 3, "40 flows reached only {seen:?}");
    assert!(seen.iter().all(|b| backends.contains(b)));
    assert_eq!(fx.counter(Counter::NpNewFlow), 41);
}

// ------------------------------------------------------------------ the three tables

#[test]
fn a_tcp_packet_other_than_a_syn_starts_no_flow() {
    let Some(fx) = node("notsyn").accelerated().routed().start() else { return };
    // An ACK, a data segment, a FIN to a frontend, of no flow conntrack knows: dropped, and
    // nothing recorded, so a flood of them cannot evict anything.
    for (i, flags) in [ACK, PSH | ACK, FIN | ACK].into_iter().enumerate() {
        let pkt = tcp(CLIENT_IN_RANGE, 40100 + i as u16).to(LB_REMOTE, 80).segment(flags);
        assert_eq!(fx.ingress(&pkt).verdict, TC_ACT_SHOT, "flags {flags:#x}");
    }
    assert_eq!(fx.counter(Counter::NpDropNotSyn), 3);
    // XDP drops them first (a FIN goes on to tc, which records closes).
    let ack = tcp(CLIENT_IN_RANGE, 40110).to(LB_REMOTE, 80).segment(ACK);
    assert_eq!(fx.xdp(&ack).verdict, XDP_DROP);
    assert_eq!(fx.counter(Counter::XdpDropNotSyn), 1);
    assert!(fx.ct().is_empty(), "{:?}", fx.ct());
    // To an address that is no frontend: not ours, on the node's address or, between pods of
    // different nodes, on a pod's.
    let other = tcp(CLIENT, 40120).to(NODE4, 22).segment(ACK);
    assert_eq!(fx.ingress(&other), (TC_ACT_UNSPEC, other.clone()));
    assert_eq!(fx.xdp(&other), (XDP_PASS, other.clone()));
    let pod_to_pod = tcp(REMOTE_BE, 8080).to(LOCAL_BE, 40130).data(b"east-west");
    assert_eq!(fx.ingress(&pod_to_pod), (TC_ACT_UNSPEC, pod_to_pod.clone()));
    assert_eq!(fx.egress(&pod_to_pod), (TC_ACT_UNSPEC, pod_to_pod.clone()));
    // To a frontend without endpoints: refused as any packet to it, as kube-proxy's REJECT.
    assert_eq!(fx.ingress(&tcp(CLIENT, 40130).to(NODE4, 30095).segment(ACK)).verdict, TC_ACT_REDIRECT);
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 1);
    assert_eq!(fx.counter(Counter::NpDropNotSyn), 3);
}

#[test]
fn a_flow_is_established_only_by_the_ack_that_answers_its_syn_ack() {
    let Some(fx) = node("handshake").start() else { return };
    let c2f = tcp(CLIENT, 40200).to(NODE4, 30082);
    let to_backend = fx.ingress(&c2f.syn()).seen().flow;
    let (fk, b2n) = (c2f.ct_key(abi::CT_FORWARD), to_backend.reply());
    // The SYN: both entries in the handshake table, none in the established one.
    assert_eq!(fx.handshakes().len(), 2);
    assert!(fx.ct_table(abi::MAP_CT).is_empty());
    // A segment before the SYN-ACK is translated, and proves nothing.
    assert_eq!(fx.ingress(&c2f.data(b"early")).seen().flow, to_backend);
    assert!(fx.ct_table(abi::MAP_CT).is_empty());
    // The SYN-ACK: recorded on the reverse entry, and reversed to the client.
    assert_eq!(fx.ingress(&b2n.segment(SYN | ACK)).seen().flow, c2f.reply());
    let rev = fx.handshakes().into_iter().find(|(k, _)| *k == b2n.ct_key(abi::CT_REVERSE)).unwrap().1;
    assert_eq!((rev.answered, u32::from_be(rev.seq_be)), (1, TCP_SEQ));
    // An ACK that does not answer it (a blind spoofer's guess) is translated, but counted and
    // left in the handshake table.
    assert_eq!(fx.ingress(&c2f.packet().flags(ACK).ack(TCP_SEQ + 2).build()).seen().flow, to_backend);
    assert_eq!(fx.counter(Counter::NpAckUnproven), 1);
    assert!(fx.ct_table(abi::MAP_CT).is_empty());
    // The client's real ACK: both entries move to the established table.
    assert_eq!(fx.ingress(&c2f.handshake_ack()).seen().flow, to_backend);
    assert_eq!(fx.counter(Counter::NpEstablished), 1);
    assert!(fx.handshakes().is_empty());
    let established: Vec<_> = fx.ct_table(abi::MAP_CT).into_iter().map(|(k, _)| k).collect();
    assert_eq!(established.len(), 2);
    assert!(established.contains(&fk) && established.contains(&b2n.ct_key(abi::CT_REVERSE)));
    assert_eq!((fx.counter(Counter::CtHandshakeInserted), fx.counter(Counter::CtHandshakeDeleted), fx.counter(Counter::CtTcpInserted)), (2, 2, 2));
    // The flow goes on in both directions from there.
    assert_eq!(fx.ingress(&c2f.data(b"more")).seen().flow, to_backend);
    assert_eq!(fx.ingress(&b2n.data(b"reply")).seen().flow, c2f.reply());
    assert_eq!(fx.counter(Counter::NpNewFlow), 1);
}

#[test]
fn udp_flows_have_a_table_of_their_own() {
    let Some(fx) = node("ctother").start() else { return };
    let c2f = udp(CLIENT, 5500).to(NODE4, 30053);
    fx.ingress(&c2f.data(b"q"));
    assert_eq!(fx.ct_table(abi::MAP_CT_OTHER).len(), 2);
    assert!(fx.ct_table(abi::MAP_CT).is_empty() && fx.handshakes().is_empty());
    // What the agent removes it counts, so what the LRU evicted can be told apart.
    sluice_datapath::conntrack::forget_udp_backends(fx.pins(), &[(Addr::from(REMOTE_BE), 5353)]).unwrap();
    assert_eq!((fx.counter(Counter::CtOtherInserted), fx.counter(Counter::CtOtherDeleted)), (2, 2));
}

/// An upgrade from a build that kept every flow in `sluice_ct_v1`: the agent moves the UDP
/// entries to their table (before its programs are swapped in, and again after), and the flow
/// carries on with its backend and SNAT port instead of being balanced again.
#[test]
fn a_previous_builds_udp_flows_move_to_their_table_and_carry_on() {
    let Some(fx) = node("ctsplit").start() else { return };
    let c2f = udp(CLIENT, 5600).to(NODE4, 30053);
    let snated = fx.ingress(&c2f.data(b"q")).seen().flow;
    let entries = fx.ct_table(abi::MAP_CT_OTHER);
    assert_eq!(entries.len(), 2);
    fx.ct_table_set(abi::MAP_CT_OTHER, &[]);
    fx.ct_table_set(abi::MAP_CT, &entries);
    assert_eq!(sluice_datapath::conntrack::split_non_tcp(fx.pins(), false).unwrap(), 2);
    assert_eq!(sluice_datapath::conntrack::split_non_tcp(fx.pins(), true).unwrap(), 0, "already there");
    assert!(fx.ct_table(abi::MAP_CT).is_empty());
    assert_eq!(fx.ingress(&c2f.data(b"q2")).seen().flow, snated);
    assert_eq!(fx.counter(Counter::NpNewFlow), 1, "the flow went on, not balanced again");
}

/// Floods of spoofed SYNs, ACKs and UDP datagrams through tc, far beyond what the handshake and
/// other tables hold, do not evict a connection established before them: the failure of one
/// LRU for every flow, where such a flood took the entries (and the SNAT port) of live flows.
#[test]
fn floods_of_syns_acks_and_udp_do_not_evict_an_established_flow() {
    let Some(fx) = node("flood").start() else { return };
    let kept = tcp(CLIENT, 40300).to(NODE4, 30082);
    let to_backend = fx.establish(kept);
    let n = abi::CT_HANDSHAKE_MAX as usize / 2 + 8192;
    let source = |i: usize| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i as u32);
    for i in 0..n {
        fx.ingress(&tcp(source(i), 1024 + (i % 60000) as u16).to(NODE4, 30081).syn());
        fx.ingress(&tcp(source(i), 1).to(NODE4, 30082).segment(ACK));
    }
    for i in 0..abi::CT_OTHER_MAX as usize / 2 + 8192 {
        fx.ingress(&udp(source(i), 5000).to(NODE4, 30055).data(b"x"));
    }
    assert_eq!(fx.counter(Counter::NpDropNotSyn), n as u64);
    // The established flow is where it was, and goes on.
    assert_eq!(fx.ct_table(abi::MAP_CT).len(), 2, "only the established flow is in the established table");
    assert_eq!(fx.ingress(&kept.data(b"after")).seen().flow, to_backend);
    assert_eq!(fx.ingress(&to_backend.reply().data(b"reply")).seen().flow, kept.reply());
    // The agent's account: the floods evicted from their own tables only.
    let usage = sluice_datapath::report::lru_usage(fx.pins());
    let evicted: std::collections::BTreeMap<_, _> = sluice_datapath::conntrack::evictions(fx.pins(), &usage).into_iter().collect();
    assert_eq!(evicted[abi::MAP_CT], 0);
    assert!(evicted[abi::MAP_CT_HANDSHAKE] > 0 && evicted[abi::MAP_CT_OTHER] > 0, "{evicted:?}");
}

/// An agent starting with other mapSizes swaps its programs in while the old ones may just have
/// added a flow to the old tables. Until it has copied what the new tables lack and emptied the
/// slots, a lookup that misses finds the flow in the table offered in its slot and takes it over:
/// the flow's next packets are translated, in both directions, instead of dropped as untracked or
/// passed to the stack (which answers a backend's reply with an RST).
#[test]
fn a_flow_only_a_replaced_table_holds_is_taken_over() {
    let Some(fx) = node("takeover").start() else { return };
    // An established TCP flow to a remote backend, and one in its handshake.
    let c2f = tcp(CLIENT, 40300).to(NODE4, 30082);
    let to_backend = fx.establish(c2f);
    let young = tcp(CLIENT, 40301).to(NODE4, 30082);
    let young_to_backend = fx.ingress(&young.syn()).seen().flow;
    let (established, handshakes) = (fx.ct_table(abi::MAP_CT), fx.handshakes());
    assert_eq!((established.len(), handshakes.len()), (2, 2));
    // A UDP flow too.
    let u2f = udp(CLIENT, 5700).to(NODE4, 30053);
    let u_to_backend = fx.ingress(&u2f.data(b"q")).seen().flow;
    let other = fx.ct_table(abi::MAP_CT_OTHER);
    fx.offer_replaced_table(abi::MAP_CT, &established);
    fx.offer_replaced_table(abi::MAP_CT_OTHER, &other);
    fx.offer_replaced_table(abi::MAP_CT_HANDSHAKE, &handshakes);
    fx.ct_table_set(abi::MAP_CT, &[]);
    fx.ct_table_set(abi::MAP_CT_OTHER, &[]);
    fx.handshakes_set(&[]);

    assert_eq!(fx.ingress(&to_backend.reply().data(b"reply")).seen().flow, c2f.reply(), "the backend's reply");
    assert_eq!(fx.ingress(&c2f.data(b"more")).seen().flow, to_backend, "the client's next segment");
    assert_eq!(fx.ingress(&young_to_backend.reply().segment(SYN | ACK)).seen().flow, young.reply(), "a SYN-ACK");
    assert_eq!(fx.ingress(&u_to_backend.reply().data(b"a")).seen().flow, u2f.reply(), "a UDP reply");
    assert_eq!(fx.counter(Counter::CtTakenOver), 4, "{:?}", fx.counters());
    assert_eq!((fx.ct_table(abi::MAP_CT).len(), fx.handshakes().len(), fx.ct_table(abi::MAP_CT_OTHER).len()), (2, 1, 1));

    // Emptied slots: the agent copied first what the new tables lacked (the young flow's forward
    // entry, the UDP flow's), and a table missing a flow is then just that.
    assert_eq!(sluice_datapath::pins::release_previous_conntrack(fx.pins(), true).unwrap(), 2);
    assert_eq!(sluice_datapath::pins::release_previous_conntrack(fx.pins(), true).unwrap(), 0, "nothing offered any more");
    fx.ct_table_set(abi::MAP_CT, &[]);
    assert_eq!(fx.ingress(&c2f.data(b"later")).verdict, TC_ACT_SHOT, "untracked, not taken over: {:?}", fx.counters());
    assert_eq!(fx.counter(Counter::CtTakenOver), 4);
}

/// The agent copies a resized table's entries into the new one when it starts, seconds before
/// its programs are swapped in; the old programs go on changing entries meanwhile. A client
/// that reuses a port (thousands of connects through one NodePort wrap the port range) closes
/// its flow and opens a new one on the same tuple in those seconds: the copy still says the old
/// flow is open. The client's ACK that completes the new handshake, the first packet the new
/// programs see, must follow the replaced table (the old flow closed, the new one in its
/// handshake) and not the copy, which would send it to the old flow's backend: the connection
/// hung until the client gave up (the lost connect of the northsouth resize check).
#[test]
fn an_entry_the_replaced_table_changed_after_the_copy_follows_the_replaced_table() {
    let Some(fx) = node("takeover-newer").start() else { return };
    let c2f = tcp(CLIENT, 40400).to(NODE4, 30082);
    fx.establish(c2f);
    let copied_at_start = fx.ct_table(abi::MAP_CT);
    // The old programs, meanwhile: the client resets the flow and opens another from its port.
    fx.ingress(&c2f.segment(RST | ACK));
    let second = fx.ingress(&c2f.syn()).seen().flow;
    let syn_ack = second.reply().segment(SYN | ACK);
    let answered = if second.src == c2f.src { fx.egress(&syn_ack) } else { fx.ingress(&syn_ack) };
    assert_eq!(answered.seen().flow, c2f.reply());
    let replaced = fx.ct_table(abi::MAP_CT);
    assert_ne!(replaced, copied_at_start, "the reset is recorded");
    fx.offer_replaced_table(abi::MAP_CT, &replaced);
    fx.ct_table_set(abi::MAP_CT, &copied_at_start);

    let established = fx.counter(Counter::NpEstablished);
    assert_eq!(fx.ingress(&c2f.handshake_ack()).seen().flow, second, "the ACK goes to the new flow's backend");
    assert_eq!(fx.counter(Counter::NpEstablished), established + 1, "the new flow is established: {:?}", fx.counters());
    assert!(fx.handshakes().is_empty(), "its handshake entry is promoted");
    // What the packet took over left the replaced table: the agent's catch-up finds nothing of it.
    assert_eq!(sluice_datapath::pins::release_previous_conntrack(fx.pins(), true).unwrap(), 0);
}

/// The programs an agent replaces read the slots too, until their links are swapped, and find
/// their own tables there: moving an entry onto itself would delete it, and every flow they
/// touched in those moments would be lost.
#[test]
fn programs_finding_their_own_table_offered_leave_it_alone() {
    let Some(fx) = node("takeover-self").start() else { return };
    let c2f = tcp(CLIENT, 40500).to(NODE4, 30082);
    let to_backend = fx.establish(c2f);
    let u2f = udp(CLIENT, 5701).to(NODE4, 30053);
    let u_to_backend = fx.ingress(&u2f.data(b"q")).seen().flow;
    let young = tcp(CLIENT, 40501).to(NODE4, 30082);
    let young_to_backend = fx.ingress(&young.syn()).seen().flow;
    for table in [abi::MAP_CT, abi::MAP_CT_OTHER, abi::MAP_CT_HANDSHAKE] {
        fx.offer_own_table(table);
    }
    assert_eq!(fx.ingress(&c2f.data(b"more")).seen().flow, to_backend);
    assert_eq!(fx.ingress(&to_backend.reply().data(b"r")).seen().flow, c2f.reply());
    assert_eq!(fx.ingress(&u_to_backend.reply().data(b"a")).seen().flow, u2f.reply());
    assert_eq!(fx.ingress(&young_to_backend.reply().segment(SYN | ACK)).seen().flow, young.reply());
    assert_eq!((fx.ct_table(abi::MAP_CT).len(), fx.handshakes().len(), fx.ct_table(abi::MAP_CT_OTHER).len()), (2, 2, 2));
    assert_eq!(fx.counter(Counter::CtTakenOver), 0);
}

/// A client port reused across two frontends of one local backend, each flow closed before the
/// next: the new handshake's entries, not the closed flows', carry the replies (the backend sees
/// one tuple for all three flows).
#[test]
fn a_new_flow_on_a_port_two_closed_flows_used_gets_replies_from_its_own_frontend() {
    let Some(fx) = node("reuse3").start() else { return };
    let a = tcp(CLIENT, 45556).to(NODE4, 30081);
    let b = tcp(CLIENT, 45556).to(Ipv4Addr::new(10, 96, 0, 81), 80);
    let to_backend = fx.establish(a);
    fx.ingress(&a.segment(RST | ACK));
    fx.establish(b);
    fx.ingress(&b.segment(RST | ACK));
    assert_eq!(fx.ingress(&a.syn()).seen().flow, to_backend);
    assert_eq!(fx.egress(&to_backend.reply().segment(SYN | ACK)).seen().flow, a.reply());
    fx.ingress(&a.handshake_ack());
    assert_eq!(fx.egress(&to_backend.reply().data(b"greeting")).seen().flow, a.reply(), "{:?}", fx.ct());
}
