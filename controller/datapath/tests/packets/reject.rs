//! Frontends with no backend to use: rejected with a port unreachable, as kube-proxy's REJECT,
//! or dropped where externalTrafficPolicy Local has endpoints only on other nodes.

use crate::harness::*;

#[test]
fn a_frontend_without_endpoints_answers_with_a_port_unreachable_as_kube_proxys_reject() {
    let Some(fx) = node("reject").start() else { return };
    for f in [tcp(CLIENT, 40000).to(NODE4, 30095), udp(CLIENT, 40000).to(NODE4, 30096), tcp(CLIENT, 40000).to(NODE4, 30097)] {
        let port = f.dport;
        let out = fx.ingress(&if f.proto == TCP { f.syn() } else { f.data(b"query") });
        assert_eq!(out.verdict, TC_ACT_REDIRECT, "{port}: sent back out; counters {:?}", fx.counters());
        assert_eq!((&out.frame[0..6], &out.frame[6..12]), (&MAC_CLIENT[..], &MAC_NODE[..]), "back to the sender's MAC");
        let e = out.icmp4();
        assert_eq!((e.src, e.dst, e.typ, e.code), (NODE4, CLIENT, 3, 3), "{port}: port unreachable from the frontend");
        assert_eq!(e.quoted, f, "{port}: quotes what the client sent");
        assert_eq!(out.frame.len(), 14 + 20 + 8 + 20 + 8);
    }
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 3);
    let f6 = tcp(CLIENT6, 40001).to(NODE6, 30098);
    let out = fx.ingress(&f6.syn());
    assert_eq!(out.verdict, TC_ACT_REDIRECT);
    let e = out.icmp6();
    assert_eq!((e.src, e.dst, e.typ, e.code), (NODE6, CLIENT6, 1, 4), "ICMPv6 port unreachable");
    assert_eq!(e.quoted, f6);
    // externalTrafficPolicy Local with endpoints only on other nodes still drops, as kube-proxy.
    assert_eq!(fx.ingress(&tcp(CLIENT, 40002).to(NODE4, 30085).syn()).verdict, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 4);
}

#[test]
fn the_port_unreachable_for_a_first_fragment_quotes_its_ports() {
    let Some(fx) = node("reject-frag").start() else { return };
    let f4 = udp(CLIENT, 40004).to(NODE4, 30096);
    let out = fx.ingress(&f4.packet().payload(&[1; 3000]).fragments(4, &[1480])[0]);
    assert_eq!(out.verdict, TC_ACT_REDIRECT);
    assert_eq!(out.icmp4().quoted, f4);
    // IPv6: the Fragment header comes between the fixed header and the ports, so the quote is
    // 8 bytes longer, or the client could not tell which socket the error is for.
    let f6 = tcp(CLIENT6, 40004).to(NODE6, 30098);
    let out = fx.ingress(&f6.packet().payload(&[1; 3000]).fragments(6, &[1448])[0]);
    assert_eq!(out.verdict, TC_ACT_REDIRECT);
    let e = out.icmp6();
    assert_eq!((e.src, e.dst, e.typ, e.code, e.quoted), (NODE6, CLIENT6, 1, 4, f6));
    assert_eq!(out.frame.len(), 14 + 40 + 8 + 40 + 8 + 8);
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 2);
}

#[test]
fn xdp_leaves_the_reject_to_tc() {
    let Some(fx) = node("reject-xdp").accelerated().routed().start() else { return };
    let syn = tcp(CLIENT, 40003).to(NODE4, 30095).syn();
    assert_eq!(fx.xdp(&syn), (XDP_PASS, syn.clone()));
    assert_eq!(fx.ingress(&syn).verdict, TC_ACT_REDIRECT);
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 1);
}

#[test]
fn external_traffic_policy_local_without_a_local_backend_drops() {
    let Some(mut fx) = node("etp").start() else { return };
    for (i, (dst, port)) in [(NODE4, 30085), (LB_ETP_LOCAL, 80)].into_iter().enumerate() {
        assert_eq!(fx.ingress(&tcp(CLIENT, 45000).to(dst, port).syn()).verdict, TC_ACT_SHOT, "{dst}:{port}");
        assert_eq!(fx.counter(Counter::NpDropLocalNone), i as u64 + 1);
    }
    assert_eq!(fx.counter(Counter::NpRejectNoBackend), 0);
    assert!(fx.ct().is_empty(), "a dropped packet must not create conntrack state");

    // XDP leaves it to tc without acceleration, and drops it itself with.
    let pkt = tcp(CLIENT, 45001).to(LB_ETP_LOCAL, 80).syn();
    assert_eq!(fx.xdp(&pkt), (XDP_PASS, pkt.clone()));
    fx.config(true);
    assert_eq!(fx.xdp(&pkt).verdict, XDP_DROP);
    assert_eq!(fx.counter(Counter::NpDropLocalNone), 3);
}
