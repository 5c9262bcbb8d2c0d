//! IPv6 NodePorts in tc, and the node's IPv6 address as SNAT source.

use crate::harness::*;

#[test]
fn ipv6_tcp_nodeport_to_a_remote_backend_and_back() {
    let Some(fx) = node("v6").start() else { return };
    let c2f = tcp(CLIENT6, 42000).to(NODE6, 30084);

    fx.establish(c2f);
    let seen = fx.ingress(&c2f.data(b"GET /")).expect(TC_ACT_OK);
    assert_eq!(seen.flow, tcp(NODE6, 42000).to(REMOTE_BE6, 8080));
    assert_eq!(seen.payload, b"GET /");

    let seen = fx.ingress(&seen.flow.reply().data(b"200 OK")).expect(TC_ACT_OK);
    assert_eq!(seen.flow, tcp(NODE6, 30084).to(CLIENT6, 42000));
    assert_eq!(seen.payload, b"200 OK");

    // A v6 packet to the v4 NodePort's port on the v6 address is no frontend: untouched.
    let stray = tcp(CLIENT6, 42001).to(NODE6, 30082).syn();
    assert_eq!(fx.ingress(&stray), (TC_ACT_UNSPEC, stray.clone()));
    assert_eq!(
        fx.counters(),
        vec![(Counter::NpNewFlow, 1), (Counter::NpForward, 2), (Counter::NpReverse, 2), (Counter::NpFibFail, 5), (Counter::NpEstablished, 1)]
    );
}

#[test]
fn ipv6_snat_address_ending_in_a_zero_word_is_used() {
    let Some(mut fx) = node("v6zero").start() else { return };
    let snat = Ipv6Addr::new(0xfd00, 0x30, 0, 1, 0, 0, 0, 0);
    fx.config_with(NODE4, snat, false);
    let seen = fx.ingress(&tcp(CLIENT6, 42000).to(NODE6, 30084).syn()).expect(TC_ACT_OK);
    assert_eq!(seen.flow, tcp(snat, 42000).to(REMOTE_BE6, 8080));
    // No address configured at all still refuses to SNAT.
    fx.config_with(Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, false);
    assert_eq!(fx.ingress(&tcp(CLIENT6, 42001).to(NODE6, 30084).syn()).verdict, TC_ACT_SHOT);
    assert_eq!(fx.ingress(&tcp(CLIENT, 42001).to(NODE4, 30082).syn()).verdict, TC_ACT_SHOT);
    assert_eq!(fx.counter(Counter::NpDropSnatPort), 2);
}
