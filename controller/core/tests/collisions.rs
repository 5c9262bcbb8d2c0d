//! Two Services asking for one frontend address (CVE-2020-8554: an externalIP or LoadBalancer IP
//! naming another Service's ClusterIP, or a node address and a port a NodePort uses): one fixed
//! owner, whatever order the objects arrive in, and the other Service is told.

use std::collections::BTreeSet;

use sluice_core::incremental::{Changed, Listed};
use sluice_core::model::{Service, Slice as EndpointSlice};
use sluice_core::{Capacity, Ids, LbState, NodeContext, ObjectKey, Planner, manifest, view};

const CLUSTER_IP: &str = "
apiVersion: v1
kind: Service
metadata: {name: victim, namespace: prod}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: victim-1, namespace: prod, labels: {kubernetes.io/service-name: victim}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.1.10]}]
";

const EXTERNAL_IP: &str = "
apiVersion: v1
kind: Service
metadata: {name: attacker, namespace: dev}
spec: {clusterIP: 10.96.0.20, externalIPs: [10.96.0.10, 172.30.0.11], ports: [{port: 80, targetPort: 8080}, {name: np, port: 30080, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: attacker-1, namespace: dev, labels: {kubernetes.io/service-name: attacker}}
addressType: IPv4
ports: [{port: 8080}, {name: np, port: 8080}]
endpoints: [{addresses: [10.244.2.20]}]
";

const NODE_PORT: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec: {type: NodePort, clusterIP: 10.96.0.30, ports: [{port: 80, targetPort: 8080, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: prod, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.244.1.30]}]
";

fn node() -> NodeContext {
    NodeContext { node_name: Some("n1".into()), node_ips: vec!["172.30.0.11".parse().unwrap()], ..NodeContext::default() }
}

fn objects(docs: &[&str]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let (services, slices, warnings) = manifest::parse_str(&docs.join("\n---\n"));
    assert!(warnings.is_empty(), "{warnings:?}");
    (services, slices)
}

/// Who serves each address, with which backends (ids left out: they depend on history).
fn owners(state: &LbState) -> BTreeSet<String> {
    view::frontends(state)
        .into_iter()
        .map(|f| format!("{}:{} {} {} -> {:?}", f.address, f.port, f.scope, f.service, f.backends.iter().map(|b| &b.address).collect::<Vec<_>>()))
        .collect()
}

/// Plans the documents one at a time, in this order, incrementally.
fn arriving(order: &[&str]) -> (BTreeSet<String>, Vec<String>) {
    let mut planner = Planner::new(Ids::default());
    let mut seen: Vec<&str> = Vec::new();
    let mut warnings = Vec::new();
    for (i, doc) in order.iter().enumerate() {
        seen.push(doc);
        let (services, slices) = objects(&seen);
        let listed = Listed::new(&services, &slices);
        let (new_services, _) = objects(&[doc]);
        let changed = if i == 0 { Changed::All } else { Changed::Groups(new_services.iter().map(|s| s.key.clone()).collect()) };
        warnings = planner.plan(changed, &listed, &node(), Capacity::default()).warnings.iter().map(|w| w.to_string()).collect();
    }
    (owners(planner.desired()), warnings)
}

#[test]
fn a_clusterip_keeps_its_address_and_a_nodeport_its_port_whatever_arrives_first() {
    let full = sluice_core::plan(
        &objects(&[CLUSTER_IP, EXTERNAL_IP, NODE_PORT]).0,
        &objects(&[CLUSTER_IP, EXTERNAL_IP, NODE_PORT]).1,
        &node(),
        &Ids::default(),
        Capacity::default(),
    );
    let want = owners(&full.desired);
    assert!(want.contains("10.96.0.10:80 external prod/victim -> [\"10.244.1.10\"]"), "{want:#?}");
    assert!(want.contains("172.30.0.11:30080 external prod/web -> [\"10.244.1.30\"]"), "{want:#?}");
    assert!(!want.iter().any(|o| o.starts_with("10.96.0.10:80") && o.contains("dev/attacker")), "{want:#?}");
    let told: Vec<String> = full.warnings.iter().map(|w| w.to_string()).collect();
    assert!(told.contains(&"Service dev/attacker: 10.96.0.10:80/TCP: the ClusterIP of Service prod/victim has this address; not programmed".to_string()), "{told:#?}");
    assert!(told.contains(&"Service dev/attacker: 172.30.0.11:30080/TCP: the NodePort of Service prod/web has this address; not programmed".to_string()), "{told:#?}");
    assert!(want.contains("172.30.0.11:80 external dev/attacker -> [\"10.244.2.20\"]"), "an externalIP nobody else asks for is served: {want:#?}");

    for order in [
        [EXTERNAL_IP, CLUSTER_IP, NODE_PORT],
        [EXTERNAL_IP, NODE_PORT, CLUSTER_IP],
        [CLUSTER_IP, EXTERNAL_IP, NODE_PORT],
        [NODE_PORT, CLUSTER_IP, EXTERNAL_IP],
    ] {
        let (got, mut warnings) = arriving(&order);
        assert_eq!(got, want, "same owners when the objects arrive in another order");
        let mut full_warnings = told.clone();
        warnings.sort();
        full_warnings.sort();
        assert_eq!(warnings, full_warnings, "the same Service is told");
    }
}

#[test]
fn an_address_whose_owner_leaves_goes_to_the_next_service_asking_for_it() {
    let mut planner = Planner::new(Ids::default());
    let (services, slices) = objects(&[CLUSTER_IP, EXTERNAL_IP]);
    planner.plan(Changed::All, &Listed::new(&services, &slices), &node(), Capacity::default());
    let (services, slices) = objects(&[EXTERNAL_IP]);
    let report = planner.plan(Changed::Groups([ObjectKey::new("prod", "victim")].into()), &Listed::new(&services, &slices), &node(), Capacity::default());
    let got = owners(planner.desired());
    assert!(got.contains("10.96.0.10:80 external dev/attacker -> [\"10.244.2.20\"]"), "{got:#?}");
    assert!(report.warnings.iter().all(|w| !w.message.contains("has this address")), "{:?}", report.warnings);
    let full = sluice_core::plan(&services, &slices, &node(), &Ids::default(), Capacity::default());
    assert_eq!(got, owners(&full.desired));
}

/// Found by `planning_one_change_at_a_time_equals_a_full_plan`: three Services with one
/// ClusterIP (as a hand-written manifest can have them); the one that arrives last comes first
/// in precedence and takes the address. Every loser's warning must name the new owner, not
/// only the old owner's.
#[test]
fn when_an_address_changes_hands_every_loser_is_told_the_new_owner() {
    let svc = |ns: &str, name: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{clusterIP: 10.96.0.50, ports: [{{port: 80}}]}}\n")
    };
    let (a, b, c) = (svc("default", "s0"), svc("default", "s1"), svc("a", "s0"));
    let mut planner = Planner::new(Ids::default());
    let (services, slices) = objects(&[&a, &b]);
    planner.plan(Changed::All, &Listed::new(&services, &slices), &node(), Capacity::default());
    let (services, slices) = objects(&[&a, &b, &c]);
    let report = planner.plan(Changed::Groups([ObjectKey::new("a", "s0")].into()), &Listed::new(&services, &slices), &node(), Capacity::default());
    let mut got: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
    got.sort();
    let full = sluice_core::plan(&services, &slices, &node(), &Ids::default(), Capacity::default());
    let mut want: Vec<String> = full.warnings.iter().map(|w| w.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(got.iter().all(|w| !w.contains("default/s0 has this address")), "{got:#?}");
}
