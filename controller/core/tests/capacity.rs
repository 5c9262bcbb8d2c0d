//! Every map a Service adds to is checked for room when the plan is made: a Service that does
//! not fit is refused alone, with a warning naming the map, and every other Service is still
//! programmed. (A map write that failed instead would stop the sync for everyone, on every node.)

use sluice_core::{Capacity, Ids, NodeContext, ObjectKey, Subject, WarningReason, manifest, plan};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: many-ranges, namespace: demo}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  loadBalancerSourceRanges: [192.0.2.0/28, 192.0.2.16/28, 192.0.2.32/28, 192.0.2.48/28, 192.0.2.64/28]
  ports: [{port: 80, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 172.31.1.10}]}}
---
apiVersion: v1
kind: Service
metadata: {name: few-ranges, namespace: demo}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  loadBalancerSourceRanges: [198.51.100.0/24, 203.0.113.0/24]
  ports: [{port: 80, nodePort: 30081}]
status: {loadBalancer: {ingress: [{ip: 172.31.1.11}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: many-ranges-1, namespace: demo, labels: {kubernetes.io/service-name: many-ranges}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.244.2.2], nodeName: n2}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: few-ranges-1, namespace: demo, labels: {kubernetes.io/service-name: few-ranges}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.244.2.3], nodeName: n2}]
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: demo}
spec:
  clusterIP: 10.96.0.12
  ports: [{port: 80}]
"#;

fn node() -> NodeContext {
    NodeContext { node_name: Some("n1".into()), node_ips: vec!["172.30.0.11".parse().unwrap()], external_ip_cidrs: None, maglev: false, zone: None, nodeport_bind_protection: true, ..NodeContext::default() }
}

fn frontends_of(p: &sluice_core::Plan, ip: &str) -> usize {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    p.desired.services.keys().filter(|k| k.addr.ip() == ip).count()
}

#[test]
fn a_service_with_more_source_ranges_than_the_map_holds_is_refused_alone() {
    let (services, slices, warnings) = manifest::parse_str(SERVICES);
    assert!(warnings.is_empty(), "{warnings:?}");
    let p = plan(&services, &slices, &node(), &Ids::default(), Capacity { src_ranges: 4, ..Capacity::default() });
    let refused: Vec<_> = p.warnings.iter().filter(|w| w.reason == WarningReason::MapFull).collect();
    assert_eq!(refused.len(), 1, "{:?}", p.warnings);
    assert_eq!(refused[0].subject, Subject::service(&ObjectKey::new("demo", "many-ranges")));
    assert!(refused[0].message.contains("sluice_src_ranges_v1"), "names the map: {}", refused[0].message);
    assert_eq!(frontends_of(&p, "172.31.1.10"), 0, "the LoadBalancer IP that does not fit is not programmed");
    assert!(frontends_of(&p, "172.31.1.11") > 0, "the other Service's ranges fit: programmed");
    assert!(frontends_of(&p, "10.96.0.12") > 0, "Services that need no range are programmed");
    assert_eq!(p.desired.src_ranges.len(), 2, "only the ranges that fit are written");
    // The ClusterIP and NodePort of the refused Service need no range: they are programmed.
    assert!(frontends_of(&p, "10.96.0.10") > 0);
}

#[test]
fn nodeports_lb_addresses_and_maglev_tables_are_bounded_too() {
    let (services, slices, _) = manifest::parse_str(SERVICES);
    let p = plan(&services, &slices, &node(), &Ids::default(), Capacity { nodeports: 1, ..Capacity::default() });
    assert_eq!(p.desired.nodeports.len(), 1);
    assert_eq!(p.warnings.iter().filter(|w| w.message.contains("sluice_nodeports_v1 map is full")).count(), 1, "{:?}", p.warnings);

    let p = plan(&services, &slices, &node(), &Ids::default(), Capacity { lb_addrs: 1, ..Capacity::default() });
    assert_eq!(p.desired.lb_addrs.len(), 1);
    assert_eq!(p.warnings.iter().filter(|w| w.message.contains("sluice_lb_addrs_v1 map is full")).count(), 1, "{:?}", p.warnings);

    let maglev = NodeContext { maglev: true, ..node() };
    let p = plan(&services, &slices, &maglev, &Ids::default(), Capacity { maglev: 3, ..Capacity::default() });
    assert!(p.desired.maglev.len() <= 3);
    assert!(p.warnings.iter().any(|w| w.message.contains("sluice_maglev_v1 map is full")), "{:?}", p.warnings);
}

#[test]
fn with_room_for_everything_nothing_is_refused() {
    let (services, slices, _) = manifest::parse_str(SERVICES);
    let p = plan(&services, &slices, &node(), &Ids::default(), Capacity::default());
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.desired.src_ranges.len(), 7);
}

/// When a map is full, the cluster's own Services are the last refused: `kube-system` is laid
/// out first, whatever its name sorts like, on every node.
#[test]
fn kube_system_services_are_kept_first_when_a_map_is_full() {
    let svc = |ns: &str, name: &str, ip: &str| {
        format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{clusterIP: {ip}, ports: [{{port: 53, protocol: UDP}}]}}\n")
    };
    let yaml = svc("default", "aaa", "10.96.0.20") + &svc("kube-system", "kube-dns", "10.96.0.10") + &svc("apps", "web", "10.96.0.30");
    let (services, slices, _) = manifest::parse_str(&yaml);
    // Room for one header only.
    let p = plan(&services, &slices, &node(), &Ids::default(), Capacity { services: 1, ..Capacity::default() });
    assert_eq!(frontends_of(&p, "10.96.0.10"), 1, "kube-dns is programmed");
    assert_eq!(frontends_of(&p, "10.96.0.20") + frontends_of(&p, "10.96.0.30"), 0);
    let refused: Vec<String> = p.warnings.iter().filter(|w| w.reason == WarningReason::MapFull).map(|w| w.subject.to_string()).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
}

/// One Service whose ports × addresses × endpoints need more slots than the whole frontend map
/// holds is refused before its backend lists are built (with thousands of ports, externalIPs or
/// endpoints, building them took gigabytes, and the agent's memory on every node); the other
/// Services are programmed. Found by the property test at 10,000 ports and 100,000 endpoints.
#[test]
fn a_service_that_alone_overflows_the_frontend_map_is_refused_before_it_is_built() {
    let ports: Vec<String> = (1..=300).map(|p| format!("{{name: p{p}, port: {p}}}")).collect();
    let slice_ports: Vec<String> = (1..=100).map(|p| format!("{{name: p{p}, port: {}}}", 8000 + p)).collect();
    let externals: Vec<String> = (1..=200).map(|i| format!("192.0.2.{i}")).collect();
    let endpoints: Vec<String> = (1..=1000).map(|i| format!("{{addresses: [10.244.{}.{}]}}", i / 250, i % 250 + 1)).collect();
    let huge = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: huge, namespace: demo}}\nspec: {{clusterIP: 10.96.0.20, externalIPs: [{}], ports: [{}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: huge-1, namespace: demo, labels: {{kubernetes.io/service-name: huge}}}}\naddressType: IPv4\nports: [{}]\nendpoints: [{}]\n---\n",
        externals.join(", "),
        ports.join(", "),
        slice_ports.join(", "),
        endpoints.join(", ")
    );
    let mut o = manifest::Objects::default();
    let mut w = Vec::new();
    manifest::parse("t", &(huge + SERVICES), &mut o, &mut w);
    assert!(w.is_empty(), "{w:?}");
    let p = plan(&o.services, &o.slices, &node(), &Ids::default(), Capacity::default());
    let refusal = p.warnings.iter().find(|w| w.subject == Subject::service(&ObjectKey::new("demo", "huge"))).expect("a warning on the huge Service");
    assert_eq!(refusal.reason, WarningReason::MapFull);
    assert!(refusal.message.contains("20160300 frontend slots"), "{}", refusal.message);
    assert_eq!(frontends_of(&p, "10.96.0.20") + frontends_of(&p, "192.0.2.1"), 0);
    assert!(frontends_of(&p, "10.96.0.12") > 0, "the other Services are programmed");
}

/// A Service refused for its size claims none of its addresses: another Service asking for the
/// same externalIP, one the refused Service would win, gets it. (A full plan settles who owns
/// each address before it lays anything out; it must count the endpoints that refuse a Service
/// there too.)
#[test]
fn a_service_refused_for_its_size_leaves_its_addresses_to_the_next_in_line() {
    let svc = |name: &str, ip: &str, endpoints: &[&str]| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{clusterIP: {ip}, externalIPs: [192.0.2.1], ports: [{{port: 80}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{port: 80}}]\nendpoints: [{}]\n",
            endpoints.iter().map(|e| format!("{{addresses: [{e}]}}")).collect::<Vec<_>>().join(", ")
        )
    };
    // demo/a would own 192.0.2.1:80 (it sorts first) but needs 2 frontends × (1 + 3) = 8 slots;
    // demo/b needs 2 × (1 + 1) = 4.
    let yaml = svc("a", "10.96.0.40", &["10.244.0.1", "10.244.0.2", "10.244.0.3"]) + &svc("b", "10.96.0.41", &["10.244.0.4"]);
    let (services, slices, warnings) = manifest::parse_str(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let p = plan(&services, &slices, &NodeContext { service_slots: 6, ..node() }, &Ids::default(), Capacity::default());
    let refused: Vec<String> = p.warnings.iter().filter(|w| w.reason == WarningReason::MapFull).map(|w| w.subject.to_string()).collect();
    assert_eq!(refused.len(), 1, "{:?}", p.warnings);
    assert_eq!(frontends_of(&p, "10.96.0.40"), 0, "demo/a is refused");
    assert!(frontends_of(&p, "10.96.0.41") > 0);
    assert!(frontends_of(&p, "192.0.2.1") > 0, "demo/b has the externalIP: {:?}", p.warnings);
}
