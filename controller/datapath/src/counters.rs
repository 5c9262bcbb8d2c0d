//! Reading the per-CPU datapath counters.

use std::path::Path;

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use sluice_abi::{self as abi, Counter};

use crate::maps::{MapError, open_pinned};

/// Each counter summed over CPUs.
pub fn read(root: &Path) -> Result<Vec<(Counter, u64)>, MapError> {
    let map = open_pinned(root, abi::MAP_COUNTERS)?;
    let array: PerCpuArray<MapData, u64> = PerCpuArray::try_from(map).map_err(|source| MapError::Open { path: root.join(abi::MAP_COUNTERS), source })?;
    let mut out = Vec::new();
    for c in Counter::ALL {
        let values = array.get(&(c as u32), 0).map_err(|source| MapError::Kernel { map: abi::MAP_COUNTERS, op: "read".into(), source })?;
        out.push((c, values.iter().sum()));
    }
    Ok(out)
}

/// Per-entry SourceBlocklist hits (summed over CPUs) for the given entry ids.
pub fn block_hits(root: &Path, ids: impl IntoIterator<Item = u32>) -> Result<Vec<(u32, u64)>, MapError> {
    let map = open_pinned(root, abi::MAP_BLOCK_HITS)?;
    let array: PerCpuArray<MapData, u64> = PerCpuArray::try_from(map).map_err(|source| MapError::Open { path: root.join(abi::MAP_BLOCK_HITS), source })?;
    ids.into_iter()
        .map(|id| {
            let values = array.get(&id, 0).map_err(|source| MapError::Kernel { map: abi::MAP_BLOCK_HITS, op: "read".into(), source })?;
            Ok((id, values.iter().sum()))
        })
        .collect()
}

/// Adds `n` to a counter only the agent writes (`Counter::CtOtherDeleted`): kept in the pinned
/// counters map, so it survives restarts as the datapath's own counters do. Not for a counter
/// the datapath also increments: this read-modify-write of every CPU's value would lose theirs.
pub fn add_agent_owned(root: &Path, counter: Counter, n: u64) -> Result<(), MapError> {
    if n == 0 {
        return Ok(());
    }
    let map = open_pinned(root, abi::MAP_COUNTERS)?;
    let mut array: PerCpuArray<MapData, u64> = PerCpuArray::try_from(map).map_err(|source| MapError::Open { path: root.join(abi::MAP_COUNTERS), source })?;
    let kernel = |op: &str| {
        let op = op.to_string();
        move |source| MapError::Kernel { map: abi::MAP_COUNTERS, op, source }
    };
    let mut values: Vec<u64> = array.get(&(counter as u32), 0).map_err(kernel("read"))?.to_vec();
    values[0] += n;
    let values = PerCpuValues::try_from(values).expect("as many values as were read");
    array.set(counter as u32, values, 0).map_err(kernel("write"))
}
