//! sessionAffinity: ClientIP. A client stays on its backend across flows until the timeout, and
//! the agent forgets affinity to backends that left the Service.

use sluice_datapath::{BpfMaps, LbMaps, conntrack};

use crate::harness::*;

#[test]
fn session_affinity_keeps_a_client_on_its_backend_across_flows() {
    let Some(fx) = node("affinity").start() else { return };
    let backends: Vec<IpAddr> = (20..28).map(|i| IpAddr::from([10, 244, 2, i])).collect();
    let dst_of = |client: Ipv4Addr, port: u16| fx.ingress(&tcp(client, port).to(NODE4, 30087).syn()).seen().flow.dst;
    // 40 new flows (new source ports) from one client: one backend. Without affinity, 40 flows
    // over 8 backends all on one would be a 1 in 8^39 accident.
    let first = dst_of(CLIENT, 43000);
    assert!(backends.contains(&first));
    for port in 43001..43040 {
        assert_eq!(dst_of(CLIENT, port), first, "flow from port {port} left its backend");
    }
    let other = dst_of(CLIENT_IN_RANGE, 43000);
    for port in 43001..43020 {
        assert_eq!(dst_of(CLIENT_IN_RANGE, port), other, "a second client keeps its own backend");
    }
    let entries = fx.affinity();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (key, value) = *entries.iter().find(|(k, _)| k.client == Addr::from(CLIENT)).expect("the client's entry");
    assert_eq!((key.by_cookie, key.set), (0, 0), "an address; the cluster-wide set of a TCP port");

    // The backend it names is gone (the agent removes such entries; here the entry outlives its
    // backend): the next flow gets a live backend and the entry follows it.
    fx.set_affinity(key, abi::AffinityValue { backend_id: 999_999, ..value });
    let moved = dst_of(CLIENT, 43100);
    assert!(backends.contains(&moved));
    let now_entry = fx.affinity().into_iter().find(|(k, _)| *k == key).unwrap().1;
    assert_ne!(now_entry.backend_id, 999_999);
    assert_eq!(dst_of(CLIENT, 43101), moved);

    // Past the timeout (60 s) the choice is made again and the entry refreshed.
    fx.set_affinity(key, abi::AffinityValue { last_used_ns: monotonic_ns() - 61_000_000_000, ..now_entry });
    dst_of(CLIENT, 43102);
    let refreshed = fx.affinity().into_iter().find(|(k, _)| *k == key).unwrap().1;
    assert!(monotonic_ns() - refreshed.last_used_ns < 5_000_000_000, "entry refreshed after expiry");
    assert_eq!(fx.counter(Counter::NpNewFlow), 40 + 20 + 3);
}

#[test]
fn a_client_keeps_its_backend_across_the_frontends_of_a_service_port() {
    let Some(fx) = node("affinity-group").start() else { return };
    // Through the NodePort first, then the externalIP of the same Service port: one backend,
    // as kube-proxy keeps one affinity list per Service port.
    let via_nodeport = fx.ingress(&tcp(CLIENT, 44000).to(NODE4, 30087).syn()).seen().flow.dst;
    for port in 44001..44011 {
        let via_external_ip = fx.ingress(&tcp(CLIENT, port).to(STICKY_EXTERNAL_IP, 80).syn()).seen().flow.dst;
        assert_eq!(via_external_ip, via_nodeport, "flow from port {port} through the externalIP left the client's backend");
    }
    let entries = fx.affinity();
    assert_eq!(entries.len(), 1, "one entry for the client and the Service port: {entries:?}");
}

#[test]
fn the_agent_forgets_affinity_to_a_backend_that_left_the_frontend() {
    let Some(fx) = node("affinity-gc").start() else { return };
    let maps = BpfMaps::open(fx.pins()).unwrap();
    let state = LbMaps::dump(&maps).unwrap();
    let sticky_head = state.services.iter().find(|(k, _)| k.slot == 0 && k.port_be == 80u16.to_be() && k.addr == Addr::from(Ipv4Addr::new(10, 96, 0, 87)));
    let (head_key, head) = sticky_head.expect("sticky's ClusterIP header");
    let member = state.services.get(&abi::SvcKey { slot: 1, ..*head_key }).unwrap().backend_id;
    // A backend that exists, but belongs to another Service ("many").
    let stranger = state.backends.iter().find(|(_, b)| b.addr == Addr::from(Ipv4Addr::new(10, 244, 2, 10))).map(|(id, _)| *id).unwrap();
    let key =
        |last: u8| abi::AffinityKey { client: Addr::from(Ipv4Addr::new(198, 51, 100, last)), group: head.narrow_rev_nat_id(), set: 0, by_cookie: 0 };
    let value = |backend_id| abi::AffinityValue { last_used_ns: monotonic_ns(), backend_id, pad: 0 };
    fx.set_affinity(key(1), value(member));
    fx.set_affinity(key(2), value(stranger));
    let removed = conntrack::forget_stale_affinity(fx.pins(), &conntrack::affinity_members(&state, None)).unwrap();
    assert_eq!(removed, 1);
    assert_eq!(fx.affinity().into_iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![key(1)]);
    // Limited to frontends a plan touched: another frontend's id leaves the entry alone.
    fx.set_affinity(key(2), value(stranger));
    let other = std::collections::BTreeSet::from([head.rev_nat_id() + 1000]);
    assert_eq!(conntrack::forget_stale_affinity(fx.pins(), &conntrack::affinity_members(&state, Some(&other))).unwrap(), 0);
}
