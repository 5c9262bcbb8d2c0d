//! Stable IDs for backends and frontends. IDs are data the maps already hold, so after a
//! restart they are restored from the pinned maps and every unchanged entry keeps its ID.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sluice_crds::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendIdent {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: Protocol,
}

/// Rev-NAT identity: the address a reply must show. TCP and UDP on one address:port share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrontendIdent {
    pub ip: IpAddr,
    pub port: u16,
}

/// One kind of ID: who holds which, and where the search for a free one resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSpace<K: Ord> {
    pub held: BTreeMap<K, u32>,
    /// Where the search for a free id resumes (after the last one handed out).
    pub(crate) cursor: u32,
    pub(crate) max: u32,
}

impl<K: Ord + Copy> IdSpace<K> {
    pub(crate) fn restore(held: impl IntoIterator<Item = (K, u32)>, max: u32) -> Self {
        let held: BTreeMap<K, u32> = held.into_iter().filter(|(_, id)| (1..=max).contains(id)).collect();
        let cursor = held.values().max().copied().unwrap_or(0);
        IdSpace { held, cursor, max }
    }

    /// An empty space for ids 1..=max.
    pub fn with_max(max: u32) -> Self {
        IdSpace { held: BTreeMap::new(), cursor: 0, max }
    }

    pub fn get(&self, key: &K) -> Option<u32> {
        self.held.get(key).copied()
    }
}

/// The IDs in use. `plan` takes the previous generation and returns the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub backends: IdSpace<BackendIdent>,
    pub frontends: IdSpace<FrontendIdent>,
}

pub const MAX_BACKEND_ID: u32 = sluice_abi::BACKENDS_MAX * 4;
/// Rev-NAT ids travel in 16-bit fields of the datapath.
pub const MAX_FRONTEND_ID: u32 = u16::MAX as u32;

impl Default for Ids {
    fn default() -> Self {
        Ids::restore([], [])
    }
}

impl Ids {
    pub fn restore(backends: impl IntoIterator<Item = (BackendIdent, u32)>, frontends: impl IntoIterator<Item = (FrontendIdent, u32)>) -> Ids {
        Ids { backends: IdSpace::restore(backends, MAX_BACKEND_ID), frontends: IdSpace::restore(frontends, MAX_FRONTEND_ID) }
    }
}

/// The one ID allocator: an ID space with reference counts (Services' backends and frontends,
/// SourceBlocklist entries). An ident whose last user leaves keeps its id until the
/// end of the plan (a Service replaced in place keeps its ids), and a freed id is not handed to
/// a new owner until the next plan: its old entries may still be in the maps until then.
#[derive(Debug, Clone)]
pub(crate) struct IdTable<K: Ord> {
    pub(crate) space: IdSpace<K>,
    /// Who holds each id (`space` the other way round).
    idents: BTreeMap<u32, K>,
    refs: BTreeMap<K, u32>,
    /// Idents that lost their last user in this plan (swept at its end).
    unreferenced: BTreeSet<K>,
    /// Ids held, and ids freed in this plan: no new owner may take them now.
    blocked: BTreeSet<u32>,
    freed_this_plan: Vec<u32>,
}

impl<K: Ord + Copy> IdTable<K> {
    /// Starts from the previous generation: every ident keeps its id if something uses it again
    /// in this plan; the rest are freed at its end.
    pub(crate) fn from_previous(previous: &IdSpace<K>) -> Self {
        IdTable {
            space: previous.clone(),
            idents: previous.held.iter().map(|(k, id)| (*id, *k)).collect(),
            refs: BTreeMap::new(),
            unreferenced: previous.held.keys().copied().collect(),
            blocked: previous.held.values().copied().collect(),
            freed_this_plan: Vec::new(),
        }
    }

    /// The ident holding `id`.
    pub(crate) fn ident_of(&self, id: u32) -> Option<K> {
        self.idents.get(&id).copied()
    }

    /// Whether a user holds `key` now.
    pub(crate) fn holds(&self, key: &K) -> bool {
        self.refs.contains_key(key)
    }

    /// The id of `key` for one more user; None when the space is exhausted.
    pub(crate) fn acquire(&mut self, key: K) -> Option<u32> {
        let id = match self.space.held.get(&key) {
            Some(id) => *id,
            None => {
                let max = self.space.max;
                let mut candidate = self.space.cursor;
                let mut found = None;
                for _ in 0..max {
                    candidate = if candidate >= max { 1 } else { candidate + 1 };
                    if self.blocked.insert(candidate) {
                        found = Some(candidate);
                        break;
                    }
                }
                let id = found?;
                self.space.cursor = id;
                self.space.held.insert(key, id);
                self.idents.insert(id, key);
                id
            }
        };
        *self.refs.entry(key).or_insert(0) += 1;
        self.unreferenced.remove(&key);
        Some(id)
    }

    pub(crate) fn release(&mut self, key: K) {
        if let Some(n) = self.refs.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&key);
                self.unreferenced.insert(key);
            }
        }
    }

    /// Starts a plan: the ids freed by the previous one may now go to new owners.
    pub(crate) fn begin(&mut self) {
        for id in self.freed_this_plan.drain(..) {
            self.blocked.remove(&id);
        }
    }

    /// Ends the plan: idents nobody uses any more give up their ids (returned, so their entries
    /// can go); those ids stay blocked until the next plan begins.
    pub(crate) fn sweep(&mut self) -> Vec<u32> {
        let mut freed = Vec::new();
        for key in std::mem::take(&mut self.unreferenced) {
            if let Some(id) = self.space.held.remove(&key) {
                self.idents.remove(&id);
                freed.push(id);
            }
        }
        // Still blocked until the next plan's sweep.
        self.freed_this_plan = freed.clone();
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fe(last: u8) -> FrontendIdent {
        FrontendIdent { ip: IpAddr::from([10, 96, 0, last]), port: 80 }
    }

    #[test]
    fn kept_keys_keep_their_ids_and_released_ids_are_not_reused_at_once() {
        let prev = IdSpace::restore([(fe(1), 1), (fe(2), 2)], 3);
        let mut table = IdTable::from_previous(&prev);
        assert_eq!(table.acquire(fe(2)), Some(2));
        assert_eq!(table.acquire(fe(2)), Some(2), "a second user of the same key");
        // 1 was released by fe(1) in this generation, so fe(3) must not get it.
        assert_eq!(table.acquire(fe(3)), Some(3));
        assert_eq!(table.acquire(fe(4)), None, "space of 3 with 1 still draining is full");
        assert_eq!(table.sweep(), vec![1], "fe(1) had no user: its id is freed");
        table.begin();
        assert_eq!(table.acquire(fe(4)), Some(1), "a plan later the id is free again");
        table.release(fe(2));
        assert!(table.holds(&fe(2)), "one user left");
        table.release(fe(2));
        assert!(!table.holds(&fe(2)));
    }
}
