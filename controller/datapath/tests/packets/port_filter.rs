//! The port filter: packets of ports no north-south flow can use leave tc and XDP after one
//! lookup, XDP looks up only addresses whose hash bit is set, and nothing a flow needs is filtered: not before the agent has filled the filter, not
//! after the frontend is gone, not after an upgrade brings an empty filter to live flows.

use crate::harness::*;

fn without(mut filter: abi::PortFilter, frontend: u16, local_backend: u16) -> abi::PortFilter {
    filter.frontend.0[usize::from(frontend >> 6)] &= !(1u64 << (frontend & 63));
    filter.local_backend.0[usize::from(local_backend >> 6)] &= !(1u64 << (local_backend & 63));
    filter
}

#[test]
fn packets_of_ports_no_flow_can_use_pass_untouched_once_the_filter_is_complete_and_not_before() {
    let Some(fx) = node("port-filter").start() else { return };
    let filter = fx.port_filter();
    assert_ne!(filter.flags & abi::PORT_FILTER_F_COMPLETE, 0);
    // NodePort, ClusterIP and the local backend's port; a remote backend's is not ours to see.
    assert!(filter.frontend.contains(30081) && filter.frontend.contains(80), "{:?}", filter.frontend);
    assert!(filter.local_backend.contains(8080), "{:?}", filter.local_backend);
    assert!(!filter.frontend.contains(8080) && !filter.local_backend.contains(40200), "{filter:?}");

    let c2f = tcp(CLIENT, 40200).to(NODE4, 30081);
    let to_backend = fx.establish(c2f);
    let before = fx.counters();

    // As if the flow's frontend and backend ports had never been seen here: its packets are
    // not looked at, though conntrack knows the flow.
    fx.set_port_filter(&without(filter, 30081, 8080));
    let request = c2f.data(b"GET");
    assert_eq!(fx.ingress(&request), (TC_ACT_UNSPEC, request.clone()));
    let reply = to_backend.reply().data(b"200");
    assert_eq!(fx.egress(&reply), (TC_ACT_UNSPEC, reply.clone()));
    assert_eq!(fx.counters(), before, "nothing counted: no lookup");

    // The same filter not yet complete filters nothing.
    fx.set_port_filter(&abi::PortFilter { flags: 0, ..without(filter, 30081, 8080) });
    assert_eq!(fx.ingress(&request).expect(TC_ACT_OK).flow, to_backend);
    assert_eq!(fx.egress(&reply).expect(TC_ACT_OK).flow, c2f.reply());
}

#[test]
fn a_frontend_that_is_gone_keeps_its_ports_and_its_flows_translated() {
    let Some(fx) = node("port-filter-gone").start() else { return };
    let c2f = tcp(CLIENT, 40201).to(NODE4, 30081);
    let to_backend = fx.establish(c2f);

    fx.replan("");
    let filter = fx.port_filter();
    assert!(filter.frontend.contains(30081) && filter.local_backend.contains(8080), "{filter:?}");
    assert_eq!(fx.ingress(&c2f.data(b"GET")).expect(TC_ACT_OK).flow, to_backend);
    assert_eq!(fx.egress(&to_backend.reply().data(b"200")).expect(TC_ACT_OK).flow, c2f.reply());
}

#[test]
fn completing_a_new_filter_adds_the_ports_of_the_flows_conntrack_holds() {
    let Some(fx) = node("port-filter-upgrade").start() else { return };
    let tcp_local = tcp(CLIENT, 40202).to(NODE4, 30081);
    let to_backend = fx.establish(tcp_local);
    let udp_remote = udp(CLIENT, 5002).to(NODE4, 30053);
    fx.ingress(&udp_remote.data(b"q")).expect(TC_ACT_OK);

    // An upgrade: the maps are emptied by the new plan, and the filter is new and empty.
    fx.replan("");
    fx.set_port_filter(&abi::PortFilter::default());
    let mut maps = sluice_datapath::BpfMaps::open(fx.pins()).unwrap();
    let rec = sluice_datapath::Reconciler::from_maps(&maps).unwrap();
    assert!(rec.found().unwrap().services.is_empty());
    assert!(maps.complete_port_filter(rec.found().unwrap(), fx.pins()).unwrap(), "a new filter is completed");
    assert!(!maps.complete_port_filter(rec.found().unwrap(), fx.pins()).unwrap(), "once");

    let filter = fx.port_filter();
    assert_ne!(filter.flags & abi::PORT_FILTER_F_COMPLETE, 0);
    assert_eq!(filter.frontend.iter().collect::<Vec<_>>(), vec![30053, 30081], "the flows' frontends, from conntrack alone");
    // The UDP flow's backend is remote (SNATed): its replies come to the node, not past the filter.
    assert_eq!(filter.local_backend.iter().collect::<Vec<_>>(), vec![8080]);
    assert_eq!(fx.ingress(&tcp_local.data(b"GET")).expect(TC_ACT_OK).flow, to_backend);
    assert_eq!(fx.egress(&to_backend.reply().data(b"200")).expect(TC_ACT_OK).flow, tcp_local.reply());
}

#[test]
fn xdp_drops_unknown_ports_of_a_loadbalancer_address_by_its_hash_bit() {
    let Some(fx) = node("port-filter-xdp").start() else { return };
    let filter = fx.port_filter();
    assert!(!filter.frontend.contains(9999));
    // The agent's hash is the programs' (the drop below needs the bit the programs read).
    assert!(filter.lb_addr.contains(Addr::from(IpAddr::from(LB_REMOTE)).hash16()));
    let stray = tcp(CLIENT, 40203).to(LB_REMOTE, 9999).syn();
    assert_eq!(fx.xdp(&stray).verdict, XDP_DROP);
    assert_eq!(fx.counter(Counter::XdpDropUnknownPort), 1);
    let between_pods = tcp(Ipv4Addr::new(10, 244, 2, 9), 40203).to(LOCAL_BE, 9999).syn();
    assert_eq!(fx.xdp(&between_pods), (XDP_PASS, between_pods.clone()));

    // An address whose bit is clear is not looked up: as if it were no LoadBalancer's.
    let mut cleared = filter;
    let bit = Addr::from(IpAddr::from(LB_REMOTE)).hash16();
    cleared.lb_addr.0[usize::from(bit >> 6)] &= !(1u64 << (bit & 63));
    fx.set_port_filter(&cleared);
    assert_eq!(fx.xdp(&stray), (XDP_PASS, stray.clone()));
    assert_eq!(fx.counter(Counter::XdpDropUnknownPort), 1);
}
