//! Maglev (loadBalancingAlgorithm: maglev): every node picks the same backend for a flow, so a
//! load balancer may spread one client's packets over nodes.

use sluice_datapath::{BpfMaps, LbMaps};

use crate::harness::*;

#[test]
fn maglev_sends_a_flow_to_the_same_backend_from_every_node() {
    // Two nodes' datapaths, programmed from the same objects (each has its own maps, as two
    // nodes do; the second could as well be the first after losing its conntrack).
    let Some(node_a) = node("maglev-a").maglev().start() else { return };
    let Some(node_b) = node("maglev-b").maglev().start() else { return };
    let state = LbMaps::dump(&BpfMaps::open(node_a.pins()).unwrap()).unwrap();
    let nodeport = state.services.iter().find(|(k, v)| k.slot == 0 && k.port_be == 30083u16.to_be() && v.lb_alg == abi::LB_ALG_MAGLEV);
    assert!(nodeport.is_some(), "the NodePort frontend uses Maglev");
    assert!(
        state.services.iter().filter(|(k, _)| k.slot == 0 && k.addr == Addr::from(Ipv4Addr::new(10, 96, 0, 83))).all(|(_, v)| v.lb_alg == abi::LB_ALG_RANDOM),
        "the ClusterIP (socket-LB) stays random"
    );
    let backends: Vec<IpAddr> = (10..18).map(|i| IpAddr::from([10, 244, 2, i])).collect();
    let mut seen = std::collections::BTreeSet::new();
    for port in 44000..44060 {
        let pkt = tcp(CLIENT, port).to(NODE4, 30083).syn();
        let (a, b) = (node_a.ingress(&pkt).seen().flow.dst, node_b.ingress(&pkt).seen().flow.dst);
        assert_eq!(a, b, "flow from port {port}: node a picked {a}, node b {b}");
        assert!(backends.contains(&a));
        seen.insert(a);
    }
    assert!(seen.len() >= 5, "60 flows over 8 backends reached only {seen:?}");
}
