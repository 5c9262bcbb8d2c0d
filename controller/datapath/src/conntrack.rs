//! Conntrack and session-affinity housekeeping from userspace.

use std::collections::BTreeSet;
use std::path::Path;

use aya::maps::{HashMap, MapData};
use sluice_abi::{self as abi, Addr, AffinityKey, AffinityValue, CtKey, CtValue, SvcKey};
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

/// Forgets the sessionAffinity entries that name a backend no longer in their frontend's scope,
/// so the datapath never has to check membership: a client whose backend left gets a new one at
/// its next connection, as with kube-proxy. Only frontends in `frontends` (rev-NAT ids; every
/// one when None) are looked at, and the map is read only if one of them has affinity at all.
/// Returns how many entries were removed.
pub fn forget_stale_affinity(root: &Path, desired: &LbState, frontends: Option<&BTreeSet<u32>>) -> Result<usize, MapError> {
    // The slots of one frontend (all protocols and scopes) are one range of the service map.
    let slots_of = |id: u32| {
        let fe = desired.revnat.get(&id).copied();
        fe.into_iter().flat_map(move |fe| {
            let lo = SvcKey { addr: fe.addr, port_be: fe.port_be, proto: 0, scope: 0, slot: 0, pad: 0 };
            let hi = SvcKey { addr: fe.addr, port_be: fe.port_be, proto: u8::MAX, scope: u8::MAX, slot: u16::MAX, pad: u16::MAX };
            desired.services.range(lo..=hi).filter(move |(_, v)| u32::from(v.rev_nat_id) == id)
        })
    };
    let has_affinity = |id: u32| slots_of(id).any(|(k, v)| k.slot == 0 && v.flags & abi::SVC_F_AFFINITY != 0);
    // Only the frontends a plan touched (a few per change), or every one after a full plan.
    let with_affinity: BTreeSet<u16> = match frontends {
        Some(ids) => ids.iter().copied().filter(|id| has_affinity(*id)).map(|id| id as u16).collect(),
        None => desired.services.iter().filter(|(k, v)| k.slot == 0 && v.flags & abi::SVC_F_AFFINITY != 0).map(|(_, v)| v.rev_nat_id).collect(),
    };
    // Frontends that lost affinity altogether leave entries nobody reads; the LRU ages them out.
    if with_affinity.is_empty() {
        return Ok(0);
    }
    // (rev-NAT id, scope, backend id) of every slot of those frontends.
    let mut members = BTreeSet::new();
    for id in &with_affinity {
        for (k, v) in slots_of(u32::from(*id)).filter(|(k, _)| k.slot != 0) {
            members.insert((*id, k.scope, v.backend_id));
        }
    }
    let mut affinity: HashMap<MapData, AffinityKey, AffinityValue> = open_hash(root, abi::MAP_AFFINITY)?;
    let stale: Vec<AffinityKey> = affinity
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| with_affinity.contains(&k.rev_nat_id) && !members.contains(&(k.rev_nat_id, k.scope, v.backend_id)))
        .map(|(k, _)| k)
        .collect();
    for k in &stale {
        let _ = affinity.remove(k);
    }
    Ok(stale.len())
}
