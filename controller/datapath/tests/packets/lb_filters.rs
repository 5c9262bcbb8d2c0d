//! What XDP drops on LoadBalancer addresses before anything else, acceleration or not:
//! sources outside loadBalancerSourceRanges, and ports no frontend has.

use crate::harness::*;

#[test]
fn xdp_drops_sources_outside_load_balancer_source_ranges() {
    let Some(fx) = node("ranges").start() else { return };
    let outside = tcp(CLIENT_OUT_OF_RANGE, 46000).to(LB_REMOTE, 80).syn();
    assert_eq!(fx.xdp(&outside).verdict, XDP_DROP);
    assert_eq!(fx.counter(Counter::XdpDropSourceRange), 1);

    let inside = tcp(CLIENT_IN_RANGE, 46000).to(LB_REMOTE, 80).syn();
    assert_eq!(fx.xdp(&inside), (XDP_PASS, inside.clone()), "inside the range, no acceleration: untouched");
    // Another address in the /24.
    assert_eq!(fx.xdp(&tcp(Ipv4Addr::new(192, 0, 2, 254), 46000).to(LB_REMOTE, 80).syn()).verdict, XDP_PASS);
    // The ranges belong to the LoadBalancer frontend, not to the service's NodePort.
    assert_eq!(fx.xdp(&tcp(CLIENT_OUT_OF_RANGE, 46001).to(NODE4, 30090).syn()).verdict, XDP_PASS);
    assert_eq!(fx.counters(), vec![(Counter::XdpDropSourceRange, 1)]);
}

#[test]
fn xdp_drops_unknown_ports_on_load_balancer_addresses() {
    let Some(fx) = node("unknown").start() else { return };
    assert_eq!(fx.xdp(&tcp(CLIENT_IN_RANGE, 47000).to(LB_REMOTE, 81).syn()).verdict, XDP_DROP);
    // Port 80 is TCP only.
    assert_eq!(fx.xdp(&udp(CLIENT_IN_RANGE, 47000).to(LB_REMOTE, 80).data(b"")).verdict, XDP_DROP);
    assert_eq!(fx.counter(Counter::XdpDropUnknownPort), 2);
    // The node's own address is not a LoadBalancer address: everything else on it passes.
    let ssh = tcp(CLIENT, 47000).to(NODE4, 22).syn();
    assert_eq!(fx.xdp(&ssh), (XDP_PASS, ssh.clone()));
    assert_eq!(fx.counters(), vec![(Counter::XdpDropUnknownPort, 2)]);
}
