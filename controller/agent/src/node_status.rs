//! What this node's datapath looks like, written to its SluiceNode status, and the per-entry
//! SourceBlocklist drops summed over every node into each SourceBlocklist's status. Every agent
//! writes the same sums, so no leader is needed; they converge within one period.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams};
use sluice_core::blocklist::BlockOwner;
use sluice_crds::{DeviceStatus, MapStatus, ProgramStatus, SluiceNode, SluiceNodeStatus, SyncStatus};
use sluice_datapath::counters;

use crate::usage::MapUsage;

pub const PERIOD: Duration = Duration::from_secs(5);
const MANAGER: &str = "sluice-agent";

/// Filled by the agent as it goes; read by the status writer.
#[derive(Default)]
pub struct Facts {
    pub programs: Vec<ProgramStatus>,
    pub devices: Vec<DeviceStatus>,
    pub features: Vec<String>,
    pub last_sync: Option<SyncStatus>,
    pub errors: Vec<String>,
    /// Blocklist entry id → which objects and CIDR it stands for.
    pub block_owners: BTreeMap<u32, BlockOwner>,
    /// name → generation of the SourceBlocklists programmed.
    pub block_generations: BTreeMap<String, Option<i64>>,
    /// How the ProxyConfig `default` was applied, if there is one.
    pub proxy_config: Option<ProxyConfigReport>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfigReport {
    pub generation: Option<i64>,
    /// Fields that could not be applied as asked, and why.
    pub problems: Vec<String>,
}

pub fn kernel_version() -> String {
    // SAFETY: uname fills the zeroed struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: release is NUL-terminated by uname.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned()
}

fn status(root: &PathBuf, facts: &Facts, usage: &MapUsage) -> SluiceNodeStatus {
    let maps = usage
        .snapshot()
        .into_iter()
        .map(|(name, entries, capacity)| MapStatus { name: name.into(), entries: entries as i64, capacity: i64::from(capacity) })
        .collect();
    let mut blocklist_drops = BTreeMap::new();
    if let Ok(hits) = counters::block_hits(root, facts.block_owners.keys().copied()) {
        for (id, n) in hits {
            if let Some(owner) = facts.block_owners.get(&id) {
                for list in &owner.blocklists {
                    blocklist_drops.insert(format!("{list}/{}", owner.cidr), n as i64);
                }
            }
        }
    }
    let mut devices = facts.devices.clone();
    let mut errors = facts.errors.clone();
    // The acceleration state lives in the pinned map the XDP program reads: one source.
    for (_, entry) in sluice_datapath::xdp_proof::read_devices(root).unwrap_or_default() {
        if let Some(d) = devices.iter_mut().find(|d| d.name == sluice_abi::get_str(&entry.name)) {
            let state = sluice_abi::XdpState::from_raw(entry.state);
            d.acceleration = state.map_or("unknown", |s| s.name()).into();
            d.acceleration_reason = sluice_abi::get_str(&entry.reason);
            // Native acceleration demanded and not delivering is an error, not a detail.
            if state == Some(sluice_abi::XdpState::Failed) {
                errors.push(format!("XDP acceleration (native) failed on {}: {}", d.name, d.acceleration_reason));
            }
        }
    }
    SluiceNodeStatus {
        kernel_version: kernel_version(),
        bpf_features: facts.features.clone(),
        programs: facts.programs.clone(),
        devices,
        maps,
        last_sync: facts.last_sync.clone(),
        errors,
        blocklist_drops,
    }
}

async fn write_once(client: &kube::Client, node: &str, root: &PathBuf, facts: &Mutex<Facts>, usage: &MapUsage) -> Result<(), kube::Error> {
    let (st, generations, proxy_config) = {
        let f = facts.lock().expect("facts");
        (status(root, &f, usage), f.block_generations.clone(), f.proxy_config.clone())
    };
    let nodes: Api<SluiceNode> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    // The object has no spec to speak of; it exists so its status can be written.
    let object = serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "SluiceNode", "metadata": {"name": node}, "spec": {}});
    nodes.patch(node, &pp, &Patch::Apply(&object)).await?;
    let status = serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "SluiceNode", "status": st});
    nodes.patch_status(node, &pp, &Patch::Apply(&status)).await?;

    // Sum every node's drops per blocklist.
    let mut sums: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for n in nodes.list(&ListParams::default()).await?.items {
        for (key, count) in n.status.map(|s| s.blocklist_drops).unwrap_or_default() {
            if let Some((list, cidr)) = key.split_once('/') {
                *sums.entry(list.to_string()).or_default().entry(cidr.to_string()).or_default() += count;
            }
        }
    }
    let lists: Api<sluice_crds::SourceBlocklist> = Api::all(client.clone());
    for (name, generation) in generations {
        let drops = sums.remove(&name).unwrap_or_default();
        let patch = serde_json::json!({"status": {"drops": drops, "observedGeneration": generation}});
        lists.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if let Some(mut report) = proxy_config {
        // Native acceleration demanded and not delivering (the proof decides that after the
        // ProxyConfig was applied, so it is read here, from the device map, at each write).
        for (_, d) in sluice_datapath::xdp_proof::read_devices(root).unwrap_or_default() {
            if d.state == sluice_abi::XdpState::Failed as u32 {
                report.problems.push(format!("xdpAcceleration native: {}: {}", sluice_abi::get_str(&d.name), sluice_abi::get_str(&d.reason)));
            }
        }
        let configs: Api<sluice_crds::ProxyConfig> = Api::all(client.clone());
        let applied = report.problems.is_empty();
        let patch = serde_json::json!({"status": {
            "observedGeneration": report.generation,
            "conditions": [{
                "type": "Applied",
                "status": if applied { "True" } else { "False" },
                "reason": if applied { "Applied" } else { "PartlyApplied" },
                "message": if applied { "every field in effect".to_string() } else { report.problems.join("; ") },
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                "observedGeneration": report.generation,
            }],
        }});
        configs.patch_status(sluice_crds::PROXY_CONFIG_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// Writes the status every PERIOD until the process ends.
pub async fn run(client: kube::Client, node: String, root: PathBuf, facts: Arc<Mutex<Facts>>, usage: Arc<MapUsage>) {
    let mut failing = false;
    loop {
        match write_once(&client, &node, &root, &facts, &usage).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                tracing::warn!(node, "cannot write SluiceNode/SourceBlocklist status (CRDs installed? RBAC?): {e}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(PERIOD).await;
    }
}
