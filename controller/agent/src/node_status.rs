//! What this node's datapath looks like, written to its SluiceNode status when it changes: its
//! programs, maps, last sync, drops per SourceBlocklist entry and how it applied the
//! ProxyConfig. The shared objects' status is summed from these by one elected agent
//! (`cluster_status`); an idle node writes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use sluice_core::blocklist::BlockOwner;
use sluice_crds::{DeviceStatus, MapStatus, NodeProxyConfigStatus, ProgramStatus, SluiceNode, SluiceNodeStatus, SyncStatus};
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
    let mut proxy_config = facts.proxy_config.clone().map(|r| NodeProxyConfigStatus { observed_generation: r.generation, problems: r.problems });
    if let Some(report) = proxy_config.as_mut() {
        // Native acceleration demanded and not delivering (the proof decides that after the
        // ProxyConfig was applied, so it is read here, from the device map).
        for (_, d) in sluice_datapath::xdp_proof::read_devices(root).unwrap_or_default() {
            if d.state == sluice_abi::XdpState::Failed as u32 {
                report.problems.push(format!("xdpAcceleration native: {}: {}", sluice_abi::get_str(&d.name), sluice_abi::get_str(&d.reason)));
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
        blocklist_generations: facts.block_generations.iter().filter_map(|(name, g)| g.map(|g| (name.clone(), g))).collect(),
        proxy_config,
    }
}

/// Writes this node's SluiceNode: the object itself once (it has no spec to speak of; it
/// exists so its status can be written), then its status.
async fn write(nodes: &Api<SluiceNode>, node: &str, st: &SluiceNodeStatus, object_written: &mut bool) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(MANAGER).force();
    if !*object_written {
        let object = serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "SluiceNode", "metadata": {"name": node}, "spec": {}});
        nodes.patch(node, &pp, &Patch::Apply(&object)).await?;
        *object_written = true;
    }
    let status = serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "SluiceNode", "status": st});
    if let Err(e) = nodes.patch_status(node, &pp, &Patch::Apply(&status)).await {
        // Deleted meanwhile (kubectl delete sluicenode): recreated at the next write.
        *object_written = false;
        return Err(e);
    }
    Ok(())
}

/// Writes the status when it changed, looking every PERIOD, until the process ends.
pub async fn run(client: kube::Client, node: String, root: PathBuf, facts: Arc<Mutex<Facts>>, usage: Arc<MapUsage>) {
    let nodes: Api<SluiceNode> = Api::all(client);
    let (mut written, mut object_written) = (None, false);
    // After a failed write the next try waits longer (to 5 minutes): a cluster without the CRDs
    // or the RBAC must not get a refused write from every node every period.
    let mut wait = PERIOD;
    loop {
        let st = {
            let f = facts.lock().expect("facts");
            status(&root, &f, &usage)
        };
        if written.as_ref() != Some(&st) {
            match write(&nodes, &node, &st, &mut object_written).await {
                Ok(()) => {
                    written = Some(st);
                    wait = PERIOD;
                }
                Err(e) => {
                    if wait == PERIOD {
                        tracing::warn!(node, "cannot write SluiceNode status (CRDs installed? RBAC?), retrying with backoff: {e}");
                    }
                    wait = (wait * 2).min(Duration::from_secs(300));
                }
            }
        }
        tokio::time::sleep(wait).await;
    }
}
