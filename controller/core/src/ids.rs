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

/// Hands out the next generation of one ID space (SourceBlocklist entries; Services use the
/// reference-counted table in `layout`, which follows the same rules). An ID released in this generation is not
/// given to a new owner in the same generation: its old owner's slots may still be live in the
/// maps until the reconciler has removed them.
pub(crate) struct Allocator<'a, K: Ord> {
    previous: &'a IdSpace<K>,
    next: IdSpace<K>,
    taken: BTreeSet<u32>,
}

impl<'a, K: Ord + Copy> Allocator<'a, K> {
    pub(crate) fn new(previous: &'a IdSpace<K>) -> Self {
        Allocator {
            previous,
            next: IdSpace { held: BTreeMap::new(), cursor: previous.cursor, max: previous.max },
            taken: previous.held.values().copied().collect(),
        }
    }

    /// None when the space is exhausted.
    pub(crate) fn id(&mut self, key: K) -> Option<u32> {
        if let Some(id) = self.next.held.get(&key) {
            return Some(*id);
        }
        let id = match self.previous.held.get(&key) {
            Some(id) => *id,
            None => {
                let mut candidate = self.next.cursor;
                for _ in 0..self.next.max {
                    candidate = if candidate >= self.next.max { 1 } else { candidate + 1 };
                    if self.taken.insert(candidate) {
                        self.next.cursor = candidate;
                        self.next.held.insert(key, candidate);
                        return Some(candidate);
                    }
                }
                return None;
            }
        };
        self.next.held.insert(key, id);
        Some(id)
    }

    pub(crate) fn finish(self) -> IdSpace<K> {
        self.next
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
        let mut alloc = Allocator::new(&prev);
        assert_eq!(alloc.id(fe(2)), Some(2));
        // 1 was released by fe(1) in this generation, so fe(3) must not get it.
        assert_eq!(alloc.id(fe(3)), Some(3));
        assert_eq!(alloc.id(fe(4)), None, "space of 3 with 1 still draining is full");
        let next = alloc.finish();
        let mut alloc = Allocator::new(&next);
        assert_eq!(alloc.id(fe(4)), Some(1), "a generation later the id is free again");
    }
}
