//! More frontends than 16-bit ids can number: once the shared ids are taken, ClusterIPs that
//! only socket-LB serves take ids above 65,535, and the frontends whose ids connection state
//! records in 16 bits (north-south ones, and ClusterIPs with sessionAffinity) still get narrow ones.

mod arbitrary;

use std::fmt::Write;

use sluice_core::{Capacity, Ids, NodeContext, manifest, plan};

const CLUSTER_IPS: u32 = 70_000;

fn manifests() -> String {
    let mut yaml = String::new();
    for i in 0..CLUSTER_IPS {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) + 1 + i);
        let _ =
            write!(yaml, "apiVersion: v1\nkind: Service\nmetadata: {{name: s-{i}, namespace: demo}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n---\n");
    }
    yaml.push_str(
        r#"apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: demo}
spec: {clusterIP: 10.100.0.1, sessionAffinity: ClientIP, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: outside, namespace: demo}
spec: {type: NodePort, clusterIP: 10.100.0.2, ports: [{port: 80, nodePort: 30080}]}
"#,
    );
    yaml
}

#[test]
fn more_frontends_than_sixteen_bits_hold_are_all_programmed() {
    let (services, slices, warnings) = manifest::parse_str(&manifests());
    assert!(warnings.is_empty(), "{warnings:?}");
    let node = NodeContext { node_name: Some("n1".into()), node_ips: vec!["172.30.0.11".parse().unwrap()], ..NodeContext::default() };
    let capacity = Capacity { services: 1 << 20, revnat: 1 << 20, ..Capacity::default() };
    let p = plan(&services, &slices, &node, &Ids::default(), capacity);
    assert!(p.warnings.is_empty(), "{:?}", &p.warnings[..p.warnings.len().min(3)]);
    let heads: Vec<_> = p.desired.services.iter().filter(|(k, _)| k.slot == 0).collect();
    assert_eq!(heads.len(), CLUSTER_IPS as usize + 3, "every ClusterIP, and the NodePort");
    let wide = heads.iter().filter(|(_, v)| v.rev_nat_id() > sluice_abi::REV_NAT_ID_NARROW_MAX).count();
    assert!(wide >= (CLUSTER_IPS - sluice_core::ids::SHARED_FRONTEND_IDS) as usize, "{wide} wide ids");
    let id_of = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        heads.iter().find(|(k, _)| k.addr.ip() == ip).map(|(_, v)| v.rev_nat_id()).unwrap()
    };
    assert!(id_of("10.100.0.1") <= sluice_abi::REV_NAT_ID_NARROW_MAX, "the ClusterIP with affinity names its group in 16 bits");
    assert!(id_of("172.30.0.11") <= sluice_abi::REV_NAT_ID_NARROW_MAX, "the NodePort's id goes into conntrack");
    arbitrary::check_planned(&p.desired, &capacity).unwrap();
}
