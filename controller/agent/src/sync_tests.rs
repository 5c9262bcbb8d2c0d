//! The sync step against in-memory maps: what it writes, what it reports, and how it recovers.

use std::sync::Mutex;

use sluice_abi::Addr;
use sluice_core::{Subject, WarningReason, manifest};
use sluice_crds::{DeviceStatus, ProxyConfig, SourceBlocklist};
use sluice_datapath::{FakeMaps, FakeNodeMaps, FaultyMaps, LbMaps};
use sluice_k8s::Index;

use super::*;

const WEB: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: dns, port: 53, targetPort: 5353, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: [10.244.1.2], conditions: {ready: true}}
- {addresses: [10.244.1.3], conditions: {ready: true}}
";

fn settings(devices: &[(&str, &str)]) -> Settings {
    Settings {
        flag_acceleration: loader::Acceleration::Disabled,
        devices: devices.iter().map(|(name, mode)| DeviceStatus { name: (*name).into(), xdp_mode: (*mode).into(), ..Default::default() }).collect(),
        node_ips: ["192.0.2.10", "2001:db8::10", "198.51.100.10", "2001:db8::20"].iter().map(|ip| ip.parse().unwrap()).collect(),
    }
}

fn syncer(settings: Settings) -> Syncer {
    let reconciler = Reconciler::from_maps(&FakeMaps::default()).unwrap();
    Syncer::new(settings, reconciler, NodeContext { node_name: Some("n1".into()), ..Default::default() }, 42)
}

/// An index that has delivered its complete lists.
fn listed(yaml: &str) -> Mutex<Index> {
    let (services, slices, warnings) = manifest::parse_str(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut index = Index::default();
    index.reset_services(services);
    index.reset_slices(slices);
    Mutex::new(index)
}

fn synced(report: &Report) -> &SyncStats {
    match &report.outcome {
        Outcome::Synced(stats) => stats,
        other => panic!("not synced: {other:?}"),
    }
}

#[test]
fn nothing_is_planned_or_written_until_every_list_is_complete() {
    let mut s = syncer(settings(&[]));
    let index = Mutex::new(Index::default());
    let (services, slices, _) = manifest::parse_str(WEB);
    index.lock().unwrap().reset_services(services);
    let (mut maps, mut node_maps) = (FakeMaps::default(), FakeNodeMaps::default());
    let report = s.step(&index, &mut maps, &mut node_maps);
    assert!(matches!(report.outcome, Outcome::Waiting), "{report:?}");
    assert!(report.config.is_none());
    assert_eq!(maps.writes, 0, "no map is written from a partial list");
    assert_eq!((node_maps.statuses_written, node_maps.problems_written), (0, 0));
    index.lock().unwrap().reset_slices(slices);
    let report = s.step(&index, &mut maps, &mut node_maps);
    assert!(synced(&report).writes > 0);
}

#[test]
fn a_sync_programs_the_maps_records_its_status_and_an_unchanged_index_writes_nothing() {
    let mut s = syncer(settings(&[]));
    let index = listed(WEB);
    let (mut maps, mut node_maps) = (FakeMaps::default(), FakeNodeMaps::default());
    let report = s.step(&index, &mut maps, &mut node_maps);
    synced(&report);
    assert_eq!(maps.dump().unwrap(), *s.desired(), "the maps hold the plan");
    assert_eq!(report.frontends, 1);
    assert!(report.pending_since.is_some(), "the latency of the change is reported");
    let status = node_maps.status.expect("status recorded for the CLI");
    assert_eq!((status.pid, status.failed_syncs, status.generation), (42, 0, report.generation));
    assert_eq!(node_maps.problems_written, 1, "the (empty) problem list replaces an older agent's");

    let writes = maps.writes;
    let report = s.step(&index, &mut maps, &mut node_maps);
    assert_eq!(synced(&report).writes + synced(&report).deletes, 0);
    assert_eq!(maps.writes, writes);
    assert_eq!(node_maps.problems_written, 1, "an unchanged problem list is not rewritten");
    assert!(report.pending_since.is_none(), "nothing was pending");
}

#[test]
fn a_warning_is_reported_once_with_its_subject_and_reason_and_kept_in_the_problems_map() {
    let mut s = syncer(settings(&[]));
    let index = listed(&format!("{WEB}---\napiVersion: v1\nkind: Service\nmetadata: {{name: odd, namespace: demo}}\nspec: {{clusterIP: 10.96.0.11, externalIPs: [not-an-ip], ports: [{{port: 80}}]}}\n"));
    let blocklist: SourceBlocklist =
        serde_json::from_str(r#"{"metadata": {"name": "edge"}, "spec": {"entries": [{"cidr": "203.0.113.0/24", "ports": [{"port": 0}]}]}}"#).unwrap();
    index.lock().unwrap().reset_blocklists(vec![blocklist]);
    let (mut maps, mut node_maps) = (FakeMaps::default(), FakeNodeMaps::default());
    let report = s.step(&index, &mut maps, &mut node_maps);
    synced(&report);
    let subjects: Vec<String> = report.new_warnings.iter().map(|w| w.subject.to_string()).collect();
    assert_eq!(subjects, ["Service demo/odd", "SourceBlocklist edge"], "{:?}", report.new_warnings);
    assert!(report.new_warnings.iter().all(|w| w.reason == WarningReason::NotProgrammed));
    assert_eq!(report.new_warnings[0].subject, Subject::service(&sluice_core::ObjectKey::new("demo", "odd")));
    assert_eq!(node_maps.problems.len(), 2, "{:?}", node_maps.problems);
    assert_eq!(report.block_generations.keys().collect::<Vec<_>>(), ["edge"]);

    index.lock().unwrap().apply_service(manifest::parse_str(WEB).0[0].clone());
    let report = s.step(&index, &mut maps, &mut node_maps);
    assert!(report.new_warnings.is_empty(), "said once: {:?}", report.new_warnings);
    assert_eq!(node_maps.problems.len(), 2);
}

#[test]
fn a_failed_write_is_reported_and_the_next_step_converges() {
    let mut s = syncer(settings(&[]));
    let index = listed(WEB);
    let mut node_maps = FakeNodeMaps::default();
    let mut maps = FaultyMaps::failing_at(1);
    let report = s.step(&index, &mut maps, &mut node_maps);
    let Outcome::Failed(error) = &report.outcome else { panic!("{report:?}") };
    assert!(error.starts_with("sync failed:"), "{error}");
    let status = node_maps.status.unwrap();
    assert_eq!(status.failed_syncs, 1);
    assert!(sluice_abi::get_str(&status.last_error).starts_with("sync failed:"));
    assert!(index.lock().unwrap().pending_since.is_some(), "the change is still to be programmed");

    // The retry (no new event) programs everything, as a fresh agent would.
    let report = s.step(&index, &mut maps, &mut node_maps);
    synced(&report);
    assert_eq!(maps.dump().unwrap(), *s.desired());
    assert_eq!(node_maps.status.unwrap().failed_syncs, 0);
    assert!(index.lock().unwrap().pending_since.is_none());
}

#[test]
fn the_proxy_config_sets_the_datapath_flags_and_reports_what_it_cannot_apply() {
    let mut s = syncer(settings(&[("eth0", "generic")]));
    let index = listed(WEB);
    let config: ProxyConfig = serde_json::from_str(
        r#"{"metadata": {"name": "default", "generation": 3},
            "spec": {"xdpAcceleration": "native", "hostNamespaceOnly": true, "mapSizes": {"conntrack": 65536}, "externalIPCIDRs": ["192.0.2.0/24"]}}"#,
    )
    .unwrap();
    index.lock().unwrap().set_proxy_config(Some(config));
    let (mut maps, mut node_maps) = (FakeMaps::default(), FakeNodeMaps::default());
    let report = s.step(&index, &mut maps, &mut node_maps);
    let applied = report.config.unwrap();
    assert_eq!(applied.acceleration, loader::Acceleration::Native);
    assert_eq!(node_maps.config.flags, sluice_abi::CFG_F_XDP_ACCEL | sluice_abi::CFG_F_HOST_NS_ONLY);
    assert_eq!(applied.external_ip_cidrs, Some(vec![Cidr::parse("192.0.2.0/24").unwrap()]));
    let status = applied.status.unwrap();
    assert_eq!(status.generation, Some(3));
    assert!(status.problems.iter().any(|p| p.contains("eth0 runs XDP in generic mode")), "{:?}", status.problems);
    assert!(status.problems.iter().any(|p| p.starts_with("mapSizes")), "{:?}", status.problems);

    // Deleted: the agent's own flag (disabled) decides again, and nothing is reported.
    index.lock().unwrap().set_proxy_config(None);
    let report = s.step(&index, &mut maps, &mut node_maps);
    assert_eq!(node_maps.config.flags, 0);
    assert_eq!(report.config.unwrap().status, None);
}

#[test]
fn a_udp_backend_that_leaves_has_its_flows_forgotten() {
    let mut s = syncer(settings(&[]));
    let index = listed(WEB);
    let (mut maps, mut node_maps) = (FakeMaps::default(), FakeNodeMaps::default());
    synced(&s.step(&index, &mut maps, &mut node_maps));
    assert!(node_maps.cleanups[0].gone_udp.is_empty());
    let (_, slices, _) = manifest::parse_str(&WEB.replace("- {addresses: [10.244.1.3], conditions: {ready: true}}\n", ""));
    index.lock().unwrap().apply_slice(slices[0].clone());
    synced(&s.step(&index, &mut maps, &mut node_maps));
    assert_eq!(node_maps.cleanups[1].gone_udp, [(Addr::from("10.244.1.3".parse::<std::net::IpAddr>().unwrap()), 5353)].into());
    assert_eq!(node_maps.cleanups.len(), 2, "every sync hands over its clean-up");
}

fn ip(s: &str) -> Addr {
    Addr::from(s.parse::<std::net::IpAddr>().unwrap())
}

#[test]
fn connected_udp_sockets_are_swept_for_a_backend_that_leaves_and_a_frontend_that_wakes() {
    let sweeps = |m: &FakeNodeMaps| -> Vec<StaleUdp> { m.cleanups.iter().map(|c| c.stale_sockets.clone()).filter(|s| !s.is_empty()).collect() };
    let mut s = syncer(settings(&[]));
    let vip = (ip("10.96.0.10"), 53);
    // Without endpoints nothing is stale; the first endpoints wake the frontend.
    let index = listed(&WEB.replace("- {addresses: [10.244.1.2], conditions: {ready: true}}\n- {addresses: [10.244.1.3], conditions: {ready: true}}\n", "[]\n").replace("endpoints:\n[]", "endpoints: []"));
    let (mut maps, mut node_maps) = (FakeMaps::default(), FakeNodeMaps::default());
    synced(&s.step(&index, &mut maps, &mut node_maps));
    assert!(sweeps(&node_maps).is_empty(), "{:?}", sweeps(&node_maps));
    let (_, slices, _) = manifest::parse_str(WEB);
    index.lock().unwrap().apply_slice(slices[0].clone());
    synced(&s.step(&index, &mut maps, &mut node_maps));
    assert_eq!(sweeps(&node_maps), [StaleUdp { woken_frontends: [vip].into(), ..Default::default() }]);
    // One endpoint leaves: the sockets socket-LB connected to it through this ClusterIP go.
    let (_, slices, _) = manifest::parse_str(&WEB.replace("- {addresses: [10.244.1.3], conditions: {ready: true}}\n", ""));
    index.lock().unwrap().apply_slice(slices[0].clone());
    synced(&s.step(&index, &mut maps, &mut node_maps));
    assert_eq!(sweeps(&node_maps)[1], StaleUdp { gone_backends: [(vip, (ip("10.244.1.3"), 5353))].into(), ..Default::default() });
    // A sync that changes nothing sweeps nothing.
    synced(&s.step(&index, &mut maps, &mut node_maps));
    assert_eq!(sweeps(&node_maps).len(), 2);
}

const NODEPORT: &str = "
apiVersion: v1
kind: Service
metadata: {name: np, namespace: demo}
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [10.96.0.20, fd00:96::20]
  ports: [{port: 80, nodePort: 30080, targetPort: 8080}]
";

/// The addresses NodePort frontends are planned on, and whether the port is bind-protected.
fn nodeport_frontends(s: &Syncer) -> (Vec<String>, bool) {
    let mut ips: Vec<String> =
        s.desired().services.keys().filter(|k| k.port() == 30080 && k.slot == 0).map(|k| k.addr.ip().to_string()).collect();
    ips.dedup();
    (ips, !s.desired().nodeports.is_empty())
}

fn with_config(spec: &str) -> Mutex<Index> {
    let index = listed(NODEPORT);
    let config: ProxyConfig = serde_json::from_str(&format!(r#"{{"metadata": {{"name": "default"}}, "spec": {spec}}}"#)).unwrap();
    index.lock().unwrap().set_proxy_config(Some(config));
    index
}

#[test]
fn node_port_addresses_pick_where_nodeports_are_served_and_bind_protection_can_be_switched_off() {
    let (mut maps, mut node_maps) = (FakeMaps::default(), FakeNodeMaps::default());
    let all = ["192.0.2.10", "198.51.100.10", "2001:db8::10", "2001:db8::20"];

    // No ProxyConfig, or one without the field: every address, bind-protected (as before).
    let mut s = syncer(settings(&[]));
    synced(&s.step(&listed(NODEPORT), &mut maps, &mut node_maps));
    assert_eq!(nodeport_frontends(&s), (all.map(String::from).to_vec(), true));

    let mut s = syncer(settings(&[]));
    let report = s.step(&with_config(r#"{"nodePortAddresses": ["198.51.100.0/24", "2001:db8::20/128"]}"#), &mut maps, &mut node_maps);
    let applied = report.config.unwrap();
    assert_eq!(applied.status.unwrap().problems, Vec::<String>::new());
    let selected: Vec<IpAddr> = ["198.51.100.10", "2001:db8::20"].iter().map(|ip| ip.parse().unwrap()).collect();
    assert_eq!(applied.health_check_addresses, Some(selected), "healthCheckNodePorts listen there too");
    assert_eq!(nodeport_frontends(&s).0, ["198.51.100.10", "2001:db8::20"], "only the addresses inside the CIDRs");

    let mut s = syncer(settings(&[]));
    s.step(&with_config(r#"{"nodePortAddresses": ["primary"], "nodeportBindProtection": false}"#), &mut maps, &mut node_maps);
    assert_eq!(nodeport_frontends(&s), (vec!["192.0.2.10".to_string(), "2001:db8::10".to_string()], false), "the first of each family, not bind-protected");

    let mut s = syncer(settings(&[]));
    let report = s.step(&with_config(r#"{"nodePortAddresses": ["203.0.113.0/24", "nope"]}"#), &mut maps, &mut node_maps);
    let problems = report.config.unwrap().status.unwrap().problems;
    assert!(problems.iter().any(|p| p.contains("\"nope\" is neither a CIDR nor primary")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("no NodePort is served here")), "{problems:?}");
    assert_eq!(nodeport_frontends(&s).0, Vec::<String>::new());
    assert!(s.desired().services.keys().any(|k| k.port() == 80), "the ClusterIPs stay");
}
