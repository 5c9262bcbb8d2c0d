//! `sluice monitor` events: written to the ring only while a monitor holds the lease, so a
//! node nobody watches pays nothing for them.

use crate::harness::*;

#[test]
fn monitor_events_are_written_only_while_a_lease_is_held() {
    let Some(fx) = node("monitor").start() else { return };
    // Nobody listening: decisions leave no trace in the ring.
    fx.ingress(&tcp(CLIENT, 41000).to(NODE4, 30082).syn());
    fx.xdp(&tcp(CLIENT_IN_RANGE, 47000).to(LB_REMOTE, 81).syn());
    assert!(fx.drain_events().is_empty(), "events without a monitor");

    fx.set_monitor_lease(monotonic_ns() + 5_000_000_000);
    let before = monotonic_ns();
    fx.ingress(&tcp(CLIENT, 41001).to(NODE4, 30082).syn());
    fx.xdp(&tcp(CLIENT_OUT_OF_RANGE, 46000).to(LB_REMOTE, 80).syn());
    fx.xdp(&tcp(CLIENT_IN_RANGE, 47001).to(LB_REMOTE, 81).syn());
    let events = fx.drain_events();
    assert_eq!(events.len(), 3, "{events:?}");
    let (new_flow, out_of_range, unknown_port) = (events[0], events[1], events[2]);
    assert!(events.iter().all(|e| e.ts_ns >= before), "timestamps from CLOCK_MONOTONIC");

    assert_eq!(new_flow.reason, Counter::NpNewFlow as u32);
    assert_eq!(new_flow.hook, abi::HOOK_TC);
    assert_eq!((new_flow.saddr, u16::from_be(new_flow.sport_be)), (Addr::from(CLIENT), 41001));
    assert_eq!((new_flow.daddr, u16::from_be(new_flow.dport_be)), (Addr::from(NODE4), 30082));
    assert_eq!((new_flow.to_addr, u16::from_be(new_flow.to_port_be)), (Addr::from(REMOTE_BE), 8080));
    assert_ne!(new_flow.rev_nat_id, 0);

    assert_eq!((out_of_range.reason, out_of_range.hook), (Counter::XdpDropSourceRange as u32, abi::HOOK_XDP));
    assert_eq!(out_of_range.saddr, Addr::from(CLIENT_OUT_OF_RANGE));
    assert_ne!(out_of_range.rev_nat_id, 0, "the frontend whose ranges refused it");
    assert_eq!(out_of_range.to_addr, Addr::default());

    assert_eq!(unknown_port.reason, Counter::XdpDropUnknownPort as u32);
    assert_eq!((unknown_port.daddr, u16::from_be(unknown_port.dport_be)), (Addr::from(LB_REMOTE), 81));

    // A lease that ran out (a monitor that died) stops the stream as surely as one cleared.
    fx.set_monitor_lease(monotonic_ns() - 1);
    fx.ingress(&tcp(CLIENT, 41002).to(NODE4, 30082).syn());
    fx.set_monitor_lease(0);
    fx.ingress(&tcp(CLIENT, 41003).to(NODE4, 30082).syn());
    assert!(fx.drain_events().is_empty());
    assert_eq!(fx.counter(Counter::MonitorLost), 0);
}
