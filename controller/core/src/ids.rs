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
    /// Where the search for a free id resumes (after the last one handed out), in 1..=narrow.
    pub(crate) cursor: u32,
    pub(crate) max: u32,
    /// Ids up to `shared` go to any holder while some are free; then, any holder takes ids above
    /// `narrow` (the wide tier), and those between are kept for the holders that need an id up
    /// to `narrow`. All three are `max` when the space has one tier.
    pub(crate) shared: u32,
    pub(crate) narrow: u32,
    /// The cursor of the wide tier, narrow+1..=max.
    pub(crate) wide_cursor: u32,
}

impl<K: Ord + Copy> IdSpace<K> {
    pub(crate) fn restore(held: impl IntoIterator<Item = (K, u32)>, max: u32) -> Self {
        Self::restore_tiered(held, max, max, max)
    }

    /// A space of ids 1..=max in tiers (see the fields).
    pub(crate) fn restore_tiered(held: impl IntoIterator<Item = (K, u32)>, shared: u32, narrow: u32, max: u32) -> Self {
        let held: BTreeMap<K, u32> = held.into_iter().filter(|(_, id)| (1..=max).contains(id)).collect();
        let cursor = held.values().filter(|id| **id <= narrow).max().copied().unwrap_or(0);
        let wide_cursor = held.values().filter(|id| **id > narrow).max().copied().unwrap_or(narrow);
        IdSpace { held, cursor, max, shared, narrow, wide_cursor }
    }

    /// An empty space for ids 1..=max.
    pub fn with_max(max: u32) -> Self {
        Self::restore([], max)
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
/// Frontend ids any frontend takes first: the 16,384 narrow ids above stay for north-south and
/// sessionAffinity frontends once ClusterIPs have taken these (see `sluice_abi::REV_NAT_ID_MAX`).
pub const SHARED_FRONTEND_IDS: u32 = sluice_abi::REV_NAT_ID_NARROW_MAX - 16_384;

impl Default for Ids {
    fn default() -> Self {
        Ids::restore([], [])
    }
}

impl Ids {
    pub fn restore(backends: impl IntoIterator<Item = (BackendIdent, u32)>, frontends: impl IntoIterator<Item = (FrontendIdent, u32)>) -> Ids {
        Ids {
            backends: IdSpace::restore(backends, MAX_BACKEND_ID),
            frontends: IdSpace::restore_tiered(frontends, SHARED_FRONTEND_IDS, sluice_abi::REV_NAT_ID_NARROW_MAX, sluice_abi::REV_NAT_ID_MAX),
        }
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
    /// How many of `blocked` are shared ids (so a full shared tier is known without a search).
    blocked_shared: usize,
    freed_this_plan: Vec<u32>,
    /// Wide ids given up in this plan by keys that moved to the narrow tier.
    moved: Vec<u32>,
}

/// Which ids a new holder may take (see `IdSpace::shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// A shared id while there are free ones, else a wide one.
    Any,
    /// Only ids up to `IdSpace::narrow`.
    Narrow,
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
            blocked_shared: previous.held.values().filter(|id| **id <= previous.shared).count(),
            freed_this_plan: Vec::new(),
            moved: Vec::new(),
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
        self.acquire_in(key, Tier::Any)
    }

    /// The id of `key` for one more user, in `tier`; None when that tier is exhausted, or when
    /// `key` holds an id outside it that another user already took in this plan. A key moved to
    /// the narrow tier gives up its wide id at the end of the plan, as a key without users does.
    pub(crate) fn acquire_in(&mut self, key: K, tier: Tier) -> Option<u32> {
        let narrow = self.space.narrow;
        let id = match self.space.held.get(&key) {
            Some(id) if tier == Tier::Narrow && *id > narrow => {
                if self.refs.contains_key(&key) {
                    return None;
                }
                let old = *id;
                self.space.held.remove(&key);
                self.idents.remove(&old);
                self.moved.push(old);
                return self.acquire_in(key, tier);
            }
            Some(id) => *id,
            None => {
                let shared = self.space.shared;
                let id = match tier {
                    Tier::Narrow => self.free_id(1, narrow),
                    Tier::Any if self.blocked_shared < shared as usize => self.free_id(1, shared),
                    Tier::Any => self.free_id(narrow + 1, self.space.max),
                }?;
                if id > narrow {
                    self.space.wide_cursor = id;
                } else {
                    self.space.cursor = id;
                }
                self.space.held.insert(key, id);
                self.idents.insert(id, key);
                id
            }
        };
        *self.refs.entry(key).or_insert(0) += 1;
        self.unreferenced.remove(&key);
        Some(id)
    }

    /// A free id in first..=last, searched from after that range's cursor, and blocked for the
    /// caller.
    fn free_id(&mut self, first: u32, last: u32) -> Option<u32> {
        let cursor = if first > self.space.narrow { self.space.wide_cursor } else { self.space.cursor };
        let mut candidate = cursor.clamp(first - 1, last);
        for _ in first..=last {
            candidate = if candidate >= last { first } else { candidate + 1 };
            if self.blocked.insert(candidate) {
                if candidate <= self.space.shared {
                    self.blocked_shared += 1;
                }
                return Some(candidate);
            }
        }
        None
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
            if self.blocked.remove(&id) && id <= self.space.shared {
                self.blocked_shared -= 1;
            }
        }
    }

    /// Ends the plan: idents nobody uses any more give up their ids (returned, so their entries
    /// can go); those ids stay blocked until the next plan begins.
    pub(crate) fn sweep(&mut self) -> Vec<u32> {
        let mut freed = std::mem::take(&mut self.moved);
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

    #[test]
    fn frontends_that_need_narrow_ids_get_them_and_the_rest_go_wide() {
        // Ids 1-2 shared, 3 kept for narrow holders, 4-5 wide.
        let mut table = IdTable::from_previous(&IdSpace::restore_tiered([(fe(1), 1)], 2, 3, 5));
        assert_eq!(table.acquire_in(fe(1), Tier::Any), Some(1), "a restored id is kept");
        assert_eq!(table.acquire_in(fe(2), Tier::Any), Some(2), "shared ids first");
        assert_eq!(table.acquire_in(fe(3), Tier::Any), Some(4), "then wide ones, not the kept one");
        assert_eq!(table.acquire_in(fe(4), Tier::Narrow), Some(3));
        assert_eq!(table.acquire_in(fe(5), Tier::Narrow), None, "the narrow ids are taken");
        assert_eq!(table.acquire_in(fe(5), Tier::Any), Some(5));
        assert_eq!(table.acquire_in(fe(6), Tier::Any), None, "every id is taken");
        assert_eq!(table.acquire_in(fe(3), Tier::Narrow), None, "fe(3) is in use with a wide id in this plan");
        assert_eq!(table.sweep(), Vec::<u32>::new());
    }

    #[test]
    fn a_frontend_that_comes_to_need_a_narrow_id_moves_and_frees_its_wide_one() {
        let mut table = IdTable::from_previous(&IdSpace::restore_tiered([(fe(1), 3)], 1, 2, 4));
        assert_eq!(table.acquire_in(fe(1), Tier::Narrow), Some(1), "laid out again with sessionAffinity, say");
        assert_eq!(table.acquire_in(fe(2), Tier::Any), Some(4), "3 is not handed out in the plan that gave it up");
        assert_eq!(table.sweep(), vec![3], "its entries go at the end of the plan");
        table.begin();
        assert_eq!(table.acquire_in(fe(3), Tier::Any), Some(3));
    }

    #[test]
    fn a_shared_id_freed_is_shared_again_a_plan_later() {
        let mut table = IdTable::from_previous(&IdSpace::restore_tiered([(fe(1), 1)], 1, 2, 4));
        assert_eq!(table.acquire_in(fe(2), Tier::Any), Some(3), "the shared id is held");
        assert_eq!(table.sweep(), vec![1], "fe(1) had no user");
        table.begin();
        assert_eq!(table.acquire_in(fe(3), Tier::Any), Some(1));
    }
}
