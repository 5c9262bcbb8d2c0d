//! Conntrack and session-affinity housekeeping from userspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aya::maps::{HashMap, MapData};
use sluice_abi::{self as abi, Addr, AffinityKey, AffinityValue, Counter, CtKey, CtValue, SvcKey, SvcValue};
use sluice_core::LbState;

use crate::maps::{MapError, open_hash};

/// The datapath's clock: bpf_ktime_get_coarse_ns reads CLOCK_MONOTONIC_COARSE.
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Now in handshake ticks (`CtHandshake::syn_at`).
pub fn handshake_tick() -> u16 {
    (coarse_now_ns() >> abi::CT_HS_TICK_SHIFT) as u16
}

/// Forgets the UDP flows of backends that are gone, as kube-proxy clears their conntrack
/// entries: a UDP client keeps its source port for long, and without this its datagrams would
/// follow the old entry to a backend that no longer exists. TCP flows are left to end by
/// themselves. Returns how many entries were removed.
pub fn forget_udp_backends(root: &Path, gone: &[(Addr, u16)]) -> Result<usize, MapError> {
    if gone.is_empty() {
        return Ok(0);
    }
    let mut ct: HashMap<MapData, CtKey, CtValue> = open_hash(root, abi::MAP_CT_OTHER)?;
    let matches = |a: &Addr, port_be: u16| gone.iter().any(|(ga, gp)| ga == a && gp.to_be() == port_be);
    let stale: Vec<CtKey> = ct
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| k.proto == abi::IPPROTO_UDP && if k.dir == abi::CT_FORWARD { matches(&v.addr1, v.port1_be) } else { matches(&k.saddr, k.sport_be) })
        .map(|(k, _)| k)
        .collect();
    let removed = stale.iter().filter(|k| ct.remove(k).is_ok()).count();
    crate::counters::add_agent_owned(root, Counter::CtOtherDeleted, removed as u64)?;
    Ok(removed)
}

/// Moves the entries of every protocol but TCP from the established-TCP table, where a build
/// from before the split into three tables kept every flow, to the other table (those it lacks),
/// so UDP and SCTP flows keep their backends and SNAT ports across the upgrade. Run before the
/// new programs are swapped in (they look in the other table), and again after with `remove`,
/// for what the old ones added meanwhile. Returns how many entries were copied.
pub fn split_non_tcp(root: &Path, remove: bool) -> Result<usize, MapError> {
    let mut tcp: HashMap<MapData, CtKey, CtValue> = open_hash(root, abi::MAP_CT)?;
    let mut other: HashMap<MapData, CtKey, CtValue> = open_hash(root, abi::MAP_CT_OTHER)?;
    let non_tcp: Vec<(CtKey, CtValue)> = tcp.iter().filter_map(Result::ok).filter(|(k, _)| k.proto != abi::IPPROTO_TCP).collect();
    let mut copied = 0;
    for (k, v) in &non_tcp {
        if other.get(k, 0).is_err() && other.insert(k, v, 0).is_ok() {
            copied += 1;
        }
        if remove {
            let _ = tcp.remove(k);
        }
    }
    Ok(copied)
}

/// Entries the LRU evicted from each conntrack table, as (table, evicted): what the datapath
/// added, less what Sluice removed and what is there now (`entries`, from `report::lru_usage`).
/// The counts are read a moment apart from the walk, so a busy table's figure is off by the
/// flows of that moment; it is exact at rest.
pub fn evictions(root: &Path, entries: &[(&'static str, usize, u32)]) -> Vec<(&'static str, u64)> {
    let Ok(counts) = crate::counters::read(root) else { return Vec::new() };
    let get = |c: Counter| counts.iter().find(|(k, _)| *k == c).map_or(0, |(_, n)| *n);
    [
        (abi::MAP_CT, get(Counter::CtTcpInserted), 0),
        (abi::MAP_CT_HANDSHAKE, get(Counter::CtHandshakeInserted), get(Counter::CtHandshakeDeleted)),
        (abi::MAP_CT_OTHER, get(Counter::CtOtherInserted), get(Counter::CtOtherDeleted)),
    ]
    .into_iter()
    .filter_map(|(table, inserted, deleted)| {
        let live = entries.iter().find(|(name, _, _)| *name == table)?.1 as u64;
        Some((table, inserted.saturating_sub(deleted).saturating_sub(live)))
    })
    .collect()
}

/// The sessionAffinity groups a sync may have left stale entries in, with their members now:
/// (group, set) → the backend ids in it.
pub type AffinityMembers = BTreeMap<(u16, u8), BTreeSet<u32>>;

/// The affinity groups of the frontends in `frontends` (rev-NAT ids; every one when None) and
/// their members in `desired`: what `forget_stale_affinity` checks the map against. Computed in
/// the sync step (it reads the plan); the map walk happens later, off it.
pub fn affinity_members(desired: &LbState, frontends: Option<&BTreeSet<u32>>) -> AffinityMembers {
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
                desired.services.range(lo..=hi).filter(move |(k, v)| k.slot == 0 && v.rev_nat_id() == id)
            })
            .filter(|(_, v)| v.flags & abi::SVC_F_AFFINITY != 0)
            .collect(),
        None => desired.services.iter().filter(|(k, v)| k.slot == 0 && v.flags & abi::SVC_F_AFFINITY != 0).collect(),
    };
    let mut members = AffinityMembers::new();
    for (k, v) in &heads {
        let group = members.entry(affinity_group(k, v)).or_default();
        for slot in 1..=v.count {
            if let Some(entry) = desired.services.get(&SvcKey { slot, ..**k }) {
                group.insert(entry.backend_id);
            }
        }
    }
    members
}

/// Forgets the sessionAffinity entries of the groups in `members` that name a backend no longer
/// in their group (the frontends of one Service port that offer one endpoint set, see
/// `sluice_affinity_key`), so the datapath never has to check membership: a client whose backend
/// left gets a new one at its next connection, as with kube-proxy. The map is read only if a
/// group is given. Returns how many entries were removed.
pub fn forget_stale_affinity(root: &Path, members: &AffinityMembers) -> Result<usize, MapError> {
    // Groups that lost affinity altogether leave entries nobody reads; the LRU ages them out.
    if members.is_empty() {
        return Ok(0);
    }
    let mut affinity: HashMap<MapData, AffinityKey, AffinityValue> = open_hash(root, abi::MAP_AFFINITY)?;
    let stale: Vec<AffinityKey> = affinity
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| members.get(&(k.group, k.set)).is_some_and(|m| !m.contains(&v.backend_id)))
        .map(|(k, _)| k)
        .collect();
    for k in &stale {
        let _ = affinity.remove(k);
    }
    Ok(stale.len())
}

/// The affinity group a header's scope belongs to, as the datapath reads it (lb.h).
fn affinity_group(key: &SvcKey, head: &SvcValue) -> (u16, u8) {
    if head.backend_id == 0 { (head.narrow_rev_nat_id(), key.scope) } else { (head.backend_id as u16, (head.backend_id >> abi::AFFINITY_SET_SHIFT) as u8) }
}
