//! The examples in manifests/examples/ deserialize into the types, and the Rust defaults agree
//! with the defaults the CRD schema makes the apiserver fill in.

use kube::CustomResourceExt;
use sluice_crds::*;

fn example(name: &str) -> String {
    let path = manifest_dir().join("../../manifests/examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn proxyconfig_example() {
    let pc: ProxyConfig = serde_yaml::from_str(&example("proxyconfig.yaml")).expect("ProxyConfig");
    assert_eq!(pc.metadata.name.as_deref(), Some(PROXY_CONFIG_NAME));
    assert_eq!(pc.spec.xdp_acceleration, XdpAcceleration::BestEffort);
    assert_eq!(pc.spec.load_balancing_algorithm, LoadBalancingAlgorithm::Maglev);
    assert_eq!(pc.spec.external_ip_cidrs.as_deref(), Some(&["192.0.2.0/24".to_string(), "2001:db8:1::/64".to_string()][..]));
}

#[test]
fn sourceblocklist_example() {
    let b: SourceBlocklist = serde_yaml::from_str(&example("sourceblocklist.yaml")).expect("SourceBlocklist");
    assert_eq!(b.spec.entries.len(), 3);
    assert_eq!(b.spec.entries[1].ports, vec![BlocklistPort { port: 22, protocol: Protocol::TCP }, BlocklistPort { port: 53, protocol: Protocol::UDP },]);
}

#[test]
fn sluicenode_example() {
    let n: SluiceNode = serde_yaml::from_str(&example("sluicenode.yaml")).expect("SluiceNode");
    let status = n.status.expect("status");
    assert_eq!(status.maps[0].capacity, 65536);
    assert!(status.programs.iter().all(|p| p.attached));
}

#[test]
fn empty_spec_means_the_defaults() {
    let spec: ProxyConfigSpec = serde_json::from_str("{}").unwrap();
    assert_eq!(spec, ProxyConfigSpec::default());
    let spec: ProxyConfigSpec = serde_json::from_str(r#"{"mapSizes": {"conntrack": 65536}}"#).unwrap();
    assert_eq!(spec.map_sizes, MapSizes { conntrack: 65536, ..MapSizes::default() });
}

#[test]
fn schema_defaults_match_rust_defaults() {
    let crd = serde_json::to_value(ProxyConfig::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let d = ProxyConfigSpec::default();
    assert_eq!(spec["mapSizes"]["default"], serde_json::to_value(d.map_sizes).unwrap());
    assert_eq!(spec["xdpAcceleration"]["default"], serde_json::to_value(d.xdp_acceleration).unwrap());
    assert_eq!(spec["loadBalancingAlgorithm"]["default"], serde_json::to_value(d.load_balancing_algorithm).unwrap());
    assert_eq!(spec["hostNamespaceOnly"]["default"], serde_json::json!(d.host_namespace_only));
    assert_eq!(spec["nodeportBindProtection"]["default"], serde_json::json!(d.nodeport_bind_protection));
}

/// The crate's directory, asked of cargo when the test runs rather than baked in when it was
/// built: a test binary reused from a clone at another path (one shared CARGO_TARGET_DIR) would
/// otherwise read that clone's files, or a deleted directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from).expect("run by cargo test")
}
