//! The agent's own report, kept in pinned maps beside the datapath: when it last synced, what
//! failed, and which objects it could not program. `sluice status` and `sluice service list`
//! read it on the node, with no API server and even after the agent has stopped.

use std::path::Path;

use aya::maps::{Array, HashMap, MapData};
use sluice_abi::{self as abi, AgentStatus, Problem};

use crate::MapError;
use crate::maps::{open_hash, open_pinned};

fn status_array(root: &Path) -> Result<Array<MapData, AgentStatus>, MapError> {
    Array::try_from(open_pinned(root, abi::MAP_AGENT_STATUS)?).map_err(|source| MapError::Open { path: root.join(abi::MAP_AGENT_STATUS), source })
}

fn problems_map(root: &Path) -> Result<HashMap<MapData, u32, Problem>, MapError> {
    open_hash(root, abi::MAP_PROBLEMS)
}

fn kernel(op: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> MapError {
    move |source| MapError::Kernel { map, op: op.into(), source }
}

pub fn write_status(root: &Path, status: &AgentStatus) -> Result<(), MapError> {
    status_array(root)?.set(0, *status, 0).map_err(kernel("write", abi::MAP_AGENT_STATUS))
}

pub fn read_status(root: &Path) -> Result<AgentStatus, MapError> {
    status_array(root)?.get(&0, 0).map_err(kernel("read", abi::MAP_AGENT_STATUS))
}

/// Replaces the problem list with `problems` (object, message); at most PROBLEMS_MAX are kept.
pub fn write_problems(root: &Path, problems: &[(String, String)]) -> Result<(), MapError> {
    let mut map = problems_map(root)?;
    let keep = problems.len().min(abi::PROBLEMS_MAX as usize) as u32;
    for (i, (object, message)) in problems.iter().take(keep as usize).enumerate() {
        let mut p = Problem { object: [0; 128], message: [0; 256] };
        abi::put_str(&mut p.object, object);
        abi::put_str(&mut p.message, message);
        map.insert(i as u32, p, 0).map_err(kernel("write", abi::MAP_PROBLEMS))?;
    }
    let stale: Vec<u32> = map.keys().filter_map(Result::ok).filter(|k| *k >= keep).collect();
    for k in stale {
        map.remove(&k).map_err(kernel("delete", abi::MAP_PROBLEMS))?;
    }
    Ok(())
}

/// Every recorded problem as (object, message), in the order the agent wrote them.
pub fn read_problems(root: &Path) -> Result<Vec<(String, String)>, MapError> {
    let map = problems_map(root)?;
    let mut rows: Vec<(u32, Problem)> = map.iter().filter_map(Result::ok).collect();
    rows.sort_by_key(|(k, _)| *k);
    Ok(rows.into_iter().map(|(_, p)| (abi::get_str(&p.object), abi::get_str(&p.message))).collect())
}

/// Entries in the LRU maps the datapath fills itself (conntrack, socket rev-NAT, affinity,
/// fragments), as (name, entries, capacity). An LRU never refuses an entry, it evicts the oldest, so a full one means
/// flows forgotten early. Counting walks the keys (one syscall each, about 0.1 s when full),
/// so it is done on demand, not on every sync.
/// The same usage with each map's capacity as pinned (ProxyConfig `mapSizes` may have made it
/// other than the built-in one).
pub fn with_pinned_capacities(root: &Path, usage: Vec<(&'static str, usize, u32)>) -> Vec<(&'static str, usize, u32)> {
    usage.into_iter().map(|(name, n, cap)| (name, n, crate::pins::pinned_shape(&root.join(name)).map_or(cap, |s| s.max_entries))).collect()
}

pub fn lru_usage(root: &Path) -> Vec<(&'static str, usize, u32)> {
    fn count<K: aya::Pod, V: aya::Pod>(root: &Path, name: &'static str) -> Option<usize> {
        let map: HashMap<MapData, K, V> = open_hash(root, name).ok()?;
        Some(map.keys().filter(Result::is_ok).count())
    }
    let mut out = Vec::new();
    if let Some(n) = count::<abi::CtKey, abi::CtValue>(root, abi::MAP_CT) {
        out.push((abi::MAP_CT, n, abi::CT_MAX));
    }
    if let Some(n) = count::<abi::CtKey, abi::CtHandshake>(root, abi::MAP_CT_HANDSHAKE) {
        out.push((abi::MAP_CT_HANDSHAKE, n, abi::CT_HANDSHAKE_MAX));
    }
    if let Some(n) = count::<abi::CtKey, abi::CtValue>(root, abi::MAP_CT_OTHER) {
        out.push((abi::MAP_CT_OTHER, n, abi::CT_OTHER_MAX));
    }
    if let Some(n) = count::<abi::SockRevNatKey, abi::SockRevNatValue>(root, abi::MAP_SOCK_REVNAT) {
        out.push((abi::MAP_SOCK_REVNAT, n, abi::SOCK_REVNAT_MAX));
    }
    if let Some(n) = count::<abi::AffinityKey, abi::AffinityValue>(root, abi::MAP_AFFINITY) {
        out.push((abi::MAP_AFFINITY, n, abi::AFFINITY_MAX));
    }
    if let Some(n) = count::<abi::FragKey, abi::FragPorts>(root, abi::MAP_FRAG) {
        out.push((abi::MAP_FRAG, n, abi::FRAG_MAX));
    }
    with_pinned_capacities(root, out)
}
