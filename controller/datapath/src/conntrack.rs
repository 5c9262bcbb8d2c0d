//! Conntrack housekeeping from userspace.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use sluice_abi::{self as abi, Addr, CtKey, CtValue};

use crate::maps::{MapError, open_pinned};

/// Forgets the UDP flows of backends that are gone, as kube-proxy clears their conntrack
/// entries: a UDP client keeps its source port for long, and without this its datagrams would
/// follow the old entry to a backend that no longer exists. TCP flows are left to end by
/// themselves. Returns how many entries were removed.
pub fn forget_udp_backends(root: &Path, gone: &[(Addr, u16)]) -> Result<usize, MapError> {
    if gone.is_empty() {
        return Ok(0);
    }
    let map = open_pinned(root, abi::MAP_CT)?;
    let data = match map {
        Map::LruHashMap(d) | Map::HashMap(d) => d,
        _ => return Ok(0),
    };
    let mut ct: HashMap<MapData, CtKey, CtValue> =
        HashMap::try_from(Map::HashMap(data)).map_err(|source| MapError::Open { path: root.join(abi::MAP_CT), source })?;
    let matches = |a: &Addr, port_be: u16| gone.iter().any(|(ga, gp)| ga == a && gp.to_be() == port_be);
    let stale: Vec<CtKey> = ct
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| k.proto == abi::IPPROTO_UDP && if k.dir == abi::CT_FORWARD { matches(&v.addr1, v.port1_be) } else { matches(&k.saddr, k.sport_be) })
        .map(|(k, _)| k)
        .collect();
    for k in &stale {
        let _ = ct.remove(k);
    }
    Ok(stale.len())
}
