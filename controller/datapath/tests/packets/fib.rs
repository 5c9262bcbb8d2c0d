//! With a route and a neighbour, translated packets leave by redirect (tc) or XDP_TX/redirect
//! (XDP) addressed to the next hop, instead of falling back to the stack.

use crate::harness::*;

#[test]
fn fib_success_redirects_translated_packets_with_next_hop_macs() {
    let Some(fx) = node("fib").accelerated().routes_to_backends().start() else { return };
    let s0 = fx.s0();
    fx.device_state(s0, XdpState::Accelerated);

    let seen = fx.ingress(&tcp(CLIENT, 49000).to(NODE4, 30082).syn()).expect(TC_ACT_REDIRECT);
    assert_eq!(seen.flow, tcp(NODE4, 49000).to(REMOTE_BE, 8080));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, MAC_S0), "MACs of the next hop");

    let seen = fx.ingress(&tcp(CLIENT6, 49001).to(NODE6, 30084).syn()).expect(TC_ACT_REDIRECT);
    assert_eq!(seen.flow, tcp(NODE6, 49001).to(REMOTE_BE6, 8080));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, MAC_S0));

    // XDP: out of another device than the one it came in on (lo) -> redirect ...
    let seen = fx.xdp(&tcp(CLIENT, 49002).to(NODE4, 30082).syn()).expect(XDP_REDIRECT);
    assert_eq!(seen.flow, tcp(NODE4, 49002).to(REMOTE_BE, 8080));
    // ... and back out of the device it came in on -> XDP_TX.
    let pkt = tcp(CLIENT, 49003).to(NODE4, 30082).syn();
    // struct xdp_md: data, data_end (must be the packet's length), data_meta, ingress_ifindex, ...
    let mut xdp_md = [0u8; 24];
    xdp_md[4..8].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
    xdp_md[12..16].copy_from_slice(&s0.to_ne_bytes());
    let seen = fx.xdp_ctx(&pkt, &xdp_md).expect(XDP_TX);
    assert_eq!(seen.flow, tcp(NODE4, 49003).to(REMOTE_BE, 8080));
    assert_eq!((seen.dst_mac, seen.src_mac), (MAC_BACKEND, MAC_S0));
    assert_eq!(fx.counter(Counter::NpFibFail), 0);
}
