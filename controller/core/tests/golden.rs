//! Golden tests: Kubernetes YAML in → a text dump of the maps out. Each `golden/NAME.yaml`
//! has a `NAME.golden` beside it. `UPDATE_GOLDEN=1 cargo test -p sluice-core --test golden`
//! rewrites them; review the diff before committing.
//!
//! A `# node: NAME` line in the YAML sets the node the plan is made for, and
//! `# node-ips: IP,IP` the addresses its NodePorts are served on, and
//! `# external-ip-cidrs: CIDR,CIDR` a ProxyConfig's externalIPCIDRs, and `# zone: NAME` the
//! node's topology.kubernetes.io/zone label.

use std::fs;

use sluice_core::manifest::{self, Objects};
use sluice_core::{Capacity, Ids, NodeContext, plan, view};

fn render_case(yaml: &str) -> String {
    let node_name = yaml.lines().find_map(|l| l.strip_prefix("# node: ")).map(|s| s.trim().to_string());
    let node_ips =
        yaml.lines().find_map(|l| l.strip_prefix("# node-ips: ")).map(|s| s.split(',').map(|ip| ip.trim().parse().unwrap()).collect()).unwrap_or_default();
    let external_ip_cidrs = yaml
        .lines()
        .find_map(|l| l.strip_prefix("# external-ip-cidrs: "))
        .map(|s| s.split(',').map(|c| sluice_core::Cidr::parse(c).unwrap()).collect());
    let zone = yaml.lines().find_map(|l| l.strip_prefix("# zone: ")).map(|s| s.trim().to_string());
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    manifest::parse("input", yaml, &mut objects, &mut warnings);
    let node = NodeContext { node_name, node_ips, external_ip_cidrs, zone, ..NodeContext::default() };
    let p = plan(&objects.services, &objects.slices, &node, &Ids::default(), Capacity::default());
    let mut out = view::render_text(&view::frontends(&p.desired));
    for (addr, v) in &p.desired.lb_addrs {
        out.push_str(&format!("frontend address {:?} flags={:#x}\n", addr, v.flags));
    }
    for np in p.desired.nodeports.keys() {
        out.push_str(&format!("nodeport {}/{} (bind-protected)\n", np.port, np.proto));
    }
    for hc in &p.health_checks {
        out.push_str(&format!("health check :{} for {} local endpoints={}\n", hc.port, hc.service, hc.local_endpoints));
    }
    for w in warnings.iter().chain(&p.warnings) {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

#[test]
fn golden_cases() {
    let dir = manifest_dir().join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases went missing from {}", dir.display());
    let mut failures = Vec::new();
    for case in cases {
        let got = render_case(&fs::read_to_string(&case).unwrap());
        let golden = case.with_extension("golden");
        if update {
            fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!("{}:\n--- want\n{want}--- got\n{got}", case.display()));
        }
    }
    assert!(failures.is_empty(), "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}", failures.join("\n"));
}

#[test]
fn the_plan_is_deterministic() {
    for case in fs::read_dir(manifest_dir().join("tests/golden")).unwrap() {
        let path = case.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let yaml = fs::read_to_string(&path).unwrap();
            assert_eq!(render_case(&yaml), render_case(&yaml), "{}", path.display());
        }
    }
}

/// The crate's directory, asked of cargo when the test runs rather than baked in when it was
/// built: a test binary reused from a clone at another path (one shared CARGO_TARGET_DIR) would
/// otherwise read that clone's files, or a deleted directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from).expect("run by cargo test")
}
