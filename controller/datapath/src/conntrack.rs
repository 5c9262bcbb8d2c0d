//! Conntrack and session-affinity housekeeping from userspace.

use std::collections::BTreeSet;
use std::path::Path;

use aya::maps::{HashMap, MapData};
use sluice_abi::{self as abi, Addr, AffinityKey, AffinityValue, CtKey, CtValue, SvcKey, SvcValue};
use sluice_core::LbState;

use crate::maps::{MapError, open_hash};

/// Forgets the UDP flows of backends that are gone, as kube-proxy clears their conntrack
/// entries: a UDP client keeps its source port for long, and without this its datagrams would
/// follow the old entry to a backend that no longer exists. TCP flows are left to end by
/// themselves. Returns how many entries were removed.
pub fn forget_udp_backends(root: &Path, gone: &[(Addr, u16)]) -> Result<usize, MapError> {
    if gone.is_empty() {
        return Ok(0);
    }
    let mut ct: HashMap<MapData, CtKey, CtValue> = open_hash(root, abi::MAP_CT)?;
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

/// Forgets the sessionAffinity entries that name a backend no longer in their affinity group
/// (the frontends of one Service port that offer one endpoint set, see `sluice_affinity_key`),
/// so the datapath never has to check membership: a client whose backend left gets a new one at
/// its next connection, as with kube-proxy. Only the groups of frontends in `frontends` (rev-NAT
/// ids; every one when None) are looked at, and the map is read only if one of them has affinity
/// at all. Returns how many entries were removed.
pub fn forget_stale_affinity(root: &Path, desired: &LbState, frontends: Option<&BTreeSet<u32>>) -> Result<usize, MapError> {
    // The sticky headers to look at: those of the frontends a plan touched (a few per change,
    // found through their rev-NAT entries rather than a walk of every Service), or all of them.
    // A Service's frontends are laid out together, so a touched group has all its frontends here.
    let heads: Vec<(&SvcKey, &SvcValue)> = match frontends {
        Some(ids) => ids
            .iter()
            .filter_map(|id| desired.revnat.get(id).map(|fe| (*id, *fe)))
            .flat_map(|(id, fe)| {
                let lo = SvcKey { addr: fe.addr, port_be: fe.port_be, proto: 0, scope: 0, slot: 0, pad: 0 };
                let hi = SvcKey { addr: fe.addr, port_be: fe.port_be, proto: u8::MAX, scope: u8::MAX, slot: 0, pad: u16::MAX };
                desired.services.range(lo..=hi).filter(move |(k, v)| k.slot == 0 && u32::from(v.rev_nat_id) == id)
            })
            .filter(|(_, v)| v.flags & abi::SVC_F_AFFINITY != 0)
            .collect(),
        None => desired.services.iter().filter(|(k, v)| k.slot == 0 && v.flags & abi::SVC_F_AFFINITY != 0).collect(),
    };
    let groups: BTreeSet<(u16, u8)> = heads.iter().map(|(k, v)| affinity_group(k, v)).collect();
    // Groups that lost affinity altogether leave entries nobody reads; the LRU ages them out.
    if groups.is_empty() {
        return Ok(0);
    }
    // (group, set, backend id) of every slot of every scope in those groups.
    let mut members = BTreeSet::new();
    for (k, v) in &heads {
        let (group, set) = affinity_group(k, v);
        for slot in 1..=v.count {
            if let Some(entry) = desired.services.get(&SvcKey { slot, ..**k }) {
                members.insert((group, set, entry.backend_id));
            }
        }
    }
    let mut affinity: HashMap<MapData, AffinityKey, AffinityValue> = open_hash(root, abi::MAP_AFFINITY)?;
    let stale: Vec<AffinityKey> = affinity
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| groups.contains(&(k.group, k.set)) && !members.contains(&(k.group, k.set, v.backend_id)))
        .map(|(k, _)| k)
        .collect();
    for k in &stale {
        let _ = affinity.remove(k);
    }
    Ok(stale.len())
}

/// The affinity group a header's scope belongs to, as the datapath reads it (lb.h).
fn affinity_group(key: &SvcKey, head: &SvcValue) -> (u16, u8) {
    if head.backend_id == 0 {
        (head.rev_nat_id, key.scope)
    } else {
        (head.backend_id as u16, (head.backend_id >> abi::AFFINITY_SET_SHIFT) as u8)
    }
}
