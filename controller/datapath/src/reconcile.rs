//! Desired state vs what the maps hold → the ordered writes that get from one to the other.
//!
//! Order is what keeps every lookup whole: backends and rev-NAT entries exist before any slot
//! names them; slots exist before the slot-0 count that makes them reachable; on removal the
//! reverse. Only entries whose value changed are written.

use std::collections::BTreeSet;

use sluice_abi::SvcKey;
use sluice_core::state::PHASES;
use sluice_core::{LbState, MapKey, Op, Touched};

use crate::maps::{LbMaps, MapError};

/// The ordered operations turning `current` into `desired`: first the deletions nothing that
/// stays refers to (they make room, so a plan that removes one Service and adds another near a
/// map's capacity fits), then the puts, then the other deletions.
pub fn diff(desired: &LbState, current: &LbState) -> Vec<Op> {
    let mut ops = room_first(desired, current);
    if ops.is_empty() {
        ordered(desired, current, &mut ops);
    } else {
        let mut after = current.clone();
        for op in &ops {
            op.apply_to(&mut after);
        }
        ordered(desired, &after, &mut ops);
    }
    ops
}

/// Deletions that need nothing put first: frontends that leave entirely (header, then slots),
/// and what no entry that stays refers to (backends, rev-NAT ids and names, source ranges and
/// Maglev tables of frontends that left; NodePorts, LoadBalancer addresses and SourceBlocklist
/// entries no longer wanted).
fn room_first(desired: &LbState, current: &LbState) -> Vec<Op> {
    let header = |k: &SvcKey| SvcKey { slot: 0, ..*k };
    let staying = |k: &SvcKey| desired.services.contains_key(&header(k));
    let mut ops: Vec<Op> = Vec::new();
    let del = Op::Del;
    // An address that drops unknown ports goes before its last frontend does (phase 4 before
    // phase 3), or XDP would drop the frontend's traffic in between. That includes an address
    // that stays but whose every frontend leaves here (one port's protocol changed, say): it
    // comes back once its new frontends are in.
    // (Built only when there are such addresses: it walks every header.)
    let addrs_kept: BTreeSet<_> = if current.lb_addrs.is_empty() {
        BTreeSet::new()
    } else {
        current.services.keys().filter(|k| k.slot == 0 && staying(k)).map(|k| k.addr).collect()
    };
    ops.extend(
        current.lb_addrs.keys().filter(|a| !desired.lb_addrs.contains_key(a) || !addrs_kept.contains(a)).map(|a| del(MapKey::LbAddrs(*a))),
    );
    ops.extend(current.services.keys().filter(|k| k.slot == 0 && !staying(k)).map(|k| del(MapKey::Services(*k))));
    ops.extend(current.services.keys().filter(|k| k.slot != 0 && !staying(k)).map(|k| del(MapKey::Services(*k))));
    // What the entries that stay still name until the puts replace them.
    let kept = current.services.iter().filter(|(k, _)| staying(k));
    let (mut backends, mut frontends) = (BTreeSet::new(), BTreeSet::new());
    let mut maglev_users = BTreeSet::new();
    for (k, v) in kept {
        frontends.insert(v.rev_nat_id());
        if k.slot != 0 {
            backends.insert(v.backend_id);
        } else if v.lb_alg == sluice_abi::LB_ALG_MAGLEV {
            maglev_users.insert(v.rev_nat_id());
        }
    }
    let unused_frontend = |id: u32| !desired.revnat.contains_key(&id) && !frontends.contains(&id);
    ops.extend(
        current.maglev.keys().filter(|k| !desired.maglev.contains_key(k) && !maglev_users.contains(&u32::from(k.rev_nat_id))).map(|k| del(MapKey::Maglev(*k))),
    );
    ops.extend(current.src_ranges.keys().filter(|k| !desired.src_ranges.contains_key(k) && unused_frontend(k.rev_nat_id)).map(|k| del(MapKey::SrcRanges(*k))));
    ops.extend(current.nodeports.keys().filter(|k| !desired.nodeports.contains_key(k)).map(|k| del(MapKey::NodePorts(*k))));
    ops.extend(current.blocklist.keys().filter(|k| !desired.blocklist.contains_key(k)).map(|k| del(MapKey::Blocklist(*k))));
    ops.extend(current.revnat.keys().filter(|id| unused_frontend(**id)).map(|id| del(MapKey::RevNat(*id))));
    ops.extend(current.names.keys().filter(|id| unused_frontend(**id)).map(|id| del(MapKey::Names(*id))));
    ops.extend(current.backends.keys().filter(|id| !desired.backends.contains_key(id) && !backends.contains(*id)).map(|id| del(MapKey::Backends(*id))));
    ops
}

/// Puts in the order lookups need them (ascending phase, see `for_each_lb_map!`), then the
/// deletions in reverse order.
fn ordered(desired: &LbState, current: &LbState, ops: &mut impl Extend<Op>) {
    for phase in PHASES {
        desired.puts_in_phase(current, phase, ops);
    }
    for phase in PHASES.rev() {
        desired.deletes_in_phase(current, phase, ops);
    }
}

/// Writes ops to the maps as they are made, until one fails; counts the rest.
struct Writer<'a> {
    maps: &'a mut dyn LbMaps,
    stats: SyncStats,
    failed: Option<MapError>,
    total: usize,
}

impl Extend<Op> for Writer<'_> {
    fn extend<I: IntoIterator<Item = Op>>(&mut self, ops: I) {
        for op in ops {
            self.total += 1;
            if self.failed.is_some() {
                continue;
            }
            match self.maps.apply(&op) {
                Ok(()) if op.is_delete() => self.stats.deletes += 1,
                Ok(()) => self.stats.writes += 1,
                Err(e) => self.failed = Some(e),
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub writes: usize,
    pub deletes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{applied} of {total} map operations applied, then: {source}")]
pub struct SyncError {
    pub applied: usize,
    pub total: usize,
    #[source]
    pub source: MapError,
}

impl SyncError {
    /// Reading what the maps hold failed: nothing was written.
    pub fn reading(source: MapError) -> SyncError {
        SyncError { applied: 0, total: 0, source }
    }
}

/// Knows what the maps hold without keeping a copy of them: the planner's state is what they
/// hold once a sync landed, the keys a change touches are read back from the maps themselves,
/// and only what an agent finds at start (or after a failed sync) is held whole, until the full
/// sync compared against it. At 100,000 Services a copy was a quarter of the agent's memory.
pub struct Reconciler {
    /// What the maps held when they were last read whole (at start, after a failed sync), until
    /// a full sync has been compared against it.
    found: Option<LbState>,
    /// Whether every sync since `found` landed: then the maps hold the last desired state.
    in_step: bool,
}

impl Reconciler {
    /// Starts from what the (possibly pinned, pre-existing) maps hold.
    pub fn from_maps(maps: &dyn LbMaps) -> Result<Self, MapError> {
        Ok(Reconciler { found: Some(maps.dump()?), in_step: false })
    }

    /// What the maps held when last read whole, until a full sync was compared against it.
    pub fn found(&self) -> Option<&LbState> {
        self.found.as_ref()
    }

    /// After a failed sync: what the maps hold now, read whole, for the planner to start over
    /// from (its ids) and the next full sync to be compared against.
    pub fn recover(&mut self, maps: &dyn LbMaps) -> Result<&LbState, MapError> {
        self.in_step = false;
        self.found = None;
        Ok(self.found.insert(maps.dump()?))
    }

    /// What the maps hold under the keys a sync compares: for a change (`touched`), those keys,
    /// read back from the maps; for a full sync, everything: what was found, or `replaced` (the
    /// state the planner's full plan replaced) when every sync since landed, or else the maps
    /// read whole.
    pub fn before(&mut self, maps: &dyn LbMaps, touched: Option<&Touched>, replaced: Option<LbState>) -> Result<LbState, MapError> {
        if let Some(t) = touched {
            return maps.read(t);
        }
        match (self.found.take(), replaced) {
            (Some(found), _) => Ok(found),
            (None, Some(replaced)) if self.in_step => Ok(replaced),
            (None, _) => maps.dump(),
        }
    }

    /// Applies the ops that turn `before` (from [`Reconciler::before`]) into `desired`, in
    /// order; on the first failure it stops, so the maps stay consistent, and the next sync
    /// starts over from what they hold ([`Reconciler::recover`]).
    ///
    /// A full sync's ops are written as they are made, never listed (at 100,000 Services the
    /// list of a cold start's ops would be one more copy of the world): the deletions that make
    /// room first, then the puts and other deletions against what is left.
    pub fn write(&mut self, maps: &mut dyn LbMaps, desired: &LbState, before: LbState, touched: Option<&Touched>) -> Result<SyncStats, SyncError> {
        let result = match touched {
            Some(t) => apply(maps, &diff(&desired.restrict(t), &before)),
            None => write_all(maps, desired, before),
        };
        self.in_step = result.is_ok();
        result
    }

    /// [`Reconciler::before`] and [`Reconciler::write`] of a full sync.
    pub fn sync(&mut self, maps: &mut dyn LbMaps, desired: &LbState) -> Result<SyncStats, SyncError> {
        let before = self.before(maps, None, None).map_err(SyncError::reading)?;
        self.write(maps, desired, before, None)
    }

    /// [`Reconciler::before`] and [`Reconciler::write`] of a change: only the keys a plan says it
    /// touched (and every SourceBlocklist entry) are compared, so its cost does not grow with the
    /// number of Services.
    pub fn sync_touched(&mut self, maps: &mut dyn LbMaps, desired: &LbState, touched: &Touched) -> Result<SyncStats, SyncError> {
        let before = self.before(maps, Some(touched), None).map_err(SyncError::reading)?;
        self.write(maps, desired, before, Some(touched))
    }
}

/// A full sync's writes: the deletions that make room, then the rest against what is left.
fn write_all(maps: &mut dyn LbMaps, desired: &LbState, mut before: LbState) -> Result<SyncStats, SyncError> {
    let room = room_first(desired, &before);
    let room_ops = room.len();
    let first = apply(maps, &room)?;
    for op in &room {
        op.apply_to(&mut before);
    }
    let mut writer = Writer { maps, stats: SyncStats::default(), failed: None, total: 0 };
    ordered(desired, &before, &mut writer);
    let Writer { stats, failed, total, .. } = writer;
    match failed {
        None => Ok(SyncStats { writes: first.writes + stats.writes, deletes: first.deletes + stats.deletes }),
        Some(source) => Err(SyncError { applied: room_ops + stats.writes + stats.deletes, total: room_ops + total, source }),
    }
}

/// Applies ops in order until one fails.
fn apply(maps: &mut dyn LbMaps, ops: &[Op]) -> Result<SyncStats, SyncError> {
    let mut stats = SyncStats::default();
    for (i, op) in ops.iter().enumerate() {
        if let Err(source) = maps.apply(op) {
            return Err(SyncError { applied: i, total: ops.len(), source });
        }
        if op.is_delete() {
            stats.deletes += 1;
        } else {
            stats.writes += 1;
        }
    }
    Ok(stats)
}

/// Checks the invariant the datapath relies on: every reachable slot and backend exists.
pub fn check_consistent(state: &LbState) -> Result<(), String> {
    for (k, head) in state.services.iter().filter(|(k, _)| k.slot == 0) {
        for slot in 1..=head.count {
            let Some(entry) = state.services.get(&SvcKey { slot, ..*k }) else {
                return Err(format!("{k:?} counts {} slots but slot {slot} is missing", head.count));
            };
            if !state.backends.contains_key(&entry.backend_id) {
                return Err(format!("{k:?} slot {slot} names missing backend {}", entry.backend_id));
            }
        }
        if !state.revnat.contains_key(&head.rev_nat_id()) {
            return Err(format!("{k:?} names missing rev-NAT {}", head.rev_nat_id()));
        }
        if head.flags & sluice_abi::SVC_F_SOURCE_RANGES != 0 && !state.src_ranges.keys().any(|r| r.rev_nat_id == head.rev_nat_id()) {
            return Err(format!("{k:?} enforces source ranges but has none"));
        }
    }
    for (k, head) in state.services.iter().filter(|(k, v)| k.slot == 0 && v.lb_alg == sluice_abi::LB_ALG_MAGLEV) {
        let table = sluice_abi::MaglevKey { rev_nat_id: head.narrow_rev_nat_id(), scope: k.scope, proto: k.proto };
        if !state.maglev.contains_key(&table) {
            return Err(format!("{k:?} uses Maglev but has no table"));
        }
    }
    for (k, table) in &state.maglev {
        if let Some(id) = table.backend_ids.iter().find(|id| !state.backends.contains_key(id)) {
            return Err(format!("maglev table {k:?} names missing backend {id}"));
        }
    }
    for addr in state.lb_addrs.keys() {
        if !state.services.keys().any(|k| k.slot == 0 && k.addr == *addr) {
            return Err(format!("frontend address {addr:?} drops traffic but has no frontend"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{FakeMaps, FaultyMaps};
    use sluice_core::model::{Service, Slice as EndpointSlice};
    use sluice_core::{Capacity, Ids, NodeContext, manifest, plan};

    fn objects(yaml: &str) -> (Vec<Service>, Vec<EndpointSlice>) {
        let (services, slices, warnings) = manifest::parse_str(yaml);
        assert!(warnings.is_empty(), "{warnings:?}");
        (services, slices)
    }

    fn service_yaml(i: usize, endpoints: &[String]) -> String {
        let (a, b) = (i / 250, i % 250 + 1);
        let eps: String = endpoints.iter().map(|e| format!("- addresses: [{e}]\n")).collect();
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bench}}\nspec: {{clusterIP: 10.96.{a}.{b}, ports: [{{port: 80, targetPort: 8080}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{i}-x, namespace: bench, labels: {{kubernetes.io/service-name: s{i}}}}}\n\
             addressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n{eps}"
        )
    }

    fn eps(i: usize) -> Vec<String> {
        vec![format!("10.{}.{}.1", 100 + i / 250, i % 250), format!("10.{}.{}.2", 100 + i / 250, i % 250)]
    }

    /// Applies each op of a sync to a copy and checks the invariant after every single one,
    /// as a datapath lookup racing the reconciler would see it.
    fn assert_every_step_consistent(before: &LbState, ops: &[Op]) {
        let mut s = before.clone();
        for (i, op) in ops.iter().enumerate() {
            op.apply_to(&mut s);
            check_consistent(&s).unwrap_or_else(|e| panic!("after op {i} {op:?}: {e}"));
        }
    }

    #[test]
    fn incremental_syncs_keep_the_maps_equal_to_the_plan_and_whole_at_every_step() {
        use sluice_core::{Changed, Listed, PlanInputs, Planner};
        let node = NodeContext { node_name: Some("n1".into()), ..NodeContext::default() };
        // 60 services; each round drops some, brings others back, moves endpoints.
        let world = |round: usize| -> String {
            (0..60)
                .filter(|i| (i + round) % 7 != 0)
                .map(|i| service_yaml(i, &[format!("10.{}.{}.{}", 100 + i / 250, i % 250, 1 + (i * round) % 5), format!("10.200.0.{}", 1 + (i + round) % 3)]))
                .collect()
        };
        let mut planner = Planner::new(Ids::default());
        let mut maps = FakeMaps::default();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        let mut last = objects(&world(0));
        planner.plan(Changed::All, &Listed::new(&last.0, &last.1), &node, Capacity::default());
        rec.sync(&mut maps, planner.desired()).unwrap();
        for round in 1..15 {
            let now = objects(&world(round));
            let (a, b) = (Listed::new(&last.0, &last.1), Listed::new(&now.0, &now.1));
            let changed: std::collections::BTreeSet<_> =
                a.groups().union(&b.groups()).filter(|k| a.service(k) != b.service(k) || a.slices(k) != b.slices(k)).cloned().collect();
            let report = planner.plan(Changed::Groups(changed), &b, &node, Capacity::default());
            let before = maps.state.clone();
            let logged = maps.log.len();
            rec.sync_touched(&mut maps, planner.desired(), report.touched.as_ref().unwrap()).unwrap();
            assert_every_step_consistent(&before, &maps.log[logged..]);
            assert_eq!(&maps.state, planner.desired(), "round {round}");
            assert_eq!(&maps.state, &plan(&now.0, &now.1, &node, &planner.ids(), Capacity::default()).desired, "round {round}");
            last = now;
        }
    }

    #[test]
    fn one_endpoint_change_among_10000_services_writes_a_constant_number_of_entries() {
        let n = 10_000;
        let mut yaml: String = (0..n).map(|i| service_yaml(i, &eps(i))).collect();
        let (svcs, slices) = objects(&yaml);
        let node = NodeContext::default();
        let p1 = plan(&svcs, &slices, &node, &Ids::default(), Capacity::default());
        assert_eq!(p1.frontends, n);
        let mut maps = FakeMaps::default();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &p1.desired).unwrap();
        let full = maps.writes;
        assert!(full > 4 * n, "initial sync wrote {full}");

        // Replace the second endpoint of service 4242.
        let mut changed = eps(4242);
        changed[1] = "10.250.0.99".into();
        yaml = (0..n).map(|i| if i == 4242 { service_yaml(i, &changed) } else { service_yaml(i, &eps(i)) }).collect();
        let (svcs, slices) = objects(&yaml);
        let p2 = plan(&svcs, &slices, &node, &p1.ids, Capacity::default());
        let before = maps.state.clone();
        let ops = diff(&p2.desired, &before);
        assert_every_step_consistent(&before, &ops);
        maps.writes = 0;
        let stats = rec.sync(&mut maps, &p2.desired).unwrap();
        // new backend, its slot, and the old backend's removal: nothing else may be touched.
        assert_eq!(maps.writes, 3, "ops: {ops:?}");
        assert_eq!(stats, SyncStats { writes: 2, deletes: 1 });
        assert_eq!(maps.state, p2.desired);
    }

    /// Fake maps that refuse a write past `cap` entries in the service or blocklist map, as the
    /// kernel's full hash maps do.
    struct Bounded {
        inner: FakeMaps,
        cap: usize,
    }

    impl LbMaps for Bounded {
        fn apply(&mut self, op: &Op) -> Result<(), MapError> {
            let mut next = self.inner.state.clone();
            op.apply_to(&mut next);
            if next.services.len() > self.cap || next.blocklist.len() > self.cap {
                return Err(MapError::Injected(self.inner.writes));
            }
            self.inner.apply(op)
        }
        fn dump(&self) -> Result<LbState, MapError> {
            self.inner.dump()
        }
        fn read(&self, keys: &Touched) -> Result<LbState, MapError> {
            self.inner.read(keys)
        }
    }

    #[test]
    fn near_full_churn_converges_because_deletes_make_room_first() {
        // Five Services fill the service map to the last entry; the next plan deletes one and
        // adds another of the same size.
        let five: String = (0..5).map(|i| service_yaml(i, &eps(i))).collect();
        let swapped: String = (1..6).map(|i| service_yaml(i, &eps(i))).collect();
        let p1 = plan_of(&five, &Ids::default());
        let p2 = plan_of(&swapped, &p1.ids);
        let cap = p1.desired.services.len();
        assert_eq!(p2.desired.services.len(), cap);
        let mut maps = Bounded { inner: FakeMaps::default(), cap };
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &p1.desired).unwrap();
        let before = maps.inner.state.clone();
        let logged = maps.inner.log.len();
        rec.sync(&mut maps, &p2.desired).expect("the deletes make room for the puts");
        assert_eq!(maps.inner.state, p2.desired);
        assert_every_step_consistent(&before, &maps.inner.log[logged..]);

        // A SourceBlocklist swapped for a disjoint one of the same size, at capacity.
        let block = |first: u8| -> LbState {
            let mut s = p2.desired.clone();
            for i in 0..4u8 {
                let ip: std::net::IpAddr = format!("192.0.{}.{i}", first).parse().unwrap();
                let key = sluice_abi::BlockKey::new(ip, 32);
                s.blocklist.insert(key, sluice_abi::BlockValue { id: u32::from(i), ..Default::default() });
            }
            s
        };
        let mut maps = Bounded { inner: FakeMaps::default(), cap: cap.max(4) };
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &block(2)).unwrap();
        rec.sync(&mut maps, &block(3)).expect("the old entries leave before the new ones arrive");
        assert_eq!(maps.inner.state, block(3));
    }

    const TWO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: d}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}, {name: u, port: 53, protocol: UDP}]}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: d, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\n\
        ports: [{port: 80}, {name: u, port: 53, protocol: UDP}]\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}, {addresses: [10.0.0.3]}]\n";

    fn plan_of(yaml: &str, ids: &Ids) -> sluice_core::Plan {
        let (s, e) = objects(yaml);
        plan(&s, &e, &NodeContext::default(), ids, Capacity::default())
    }

    #[test]
    fn every_intermediate_state_is_consistent_when_growing_shrinking_and_deleting() {
        let empty = Ids::default();
        let p3 = plan_of(TWO, &empty);
        let one = TWO.replace(", {addresses: [10.0.0.2]}, {addresses: [10.0.0.3]}", "");
        let p1 = plan_of(&one, &p3.ids);
        let none = LbState::default();
        for (from, to) in [(&none, &p3.desired), (&p3.desired, &p1.desired), (&p1.desired, &p3.desired), (&p3.desired, &none)] {
            let ops = diff(to, from);
            assert_every_step_consistent(from, &ops);
            let mut end = from.clone();
            ops.iter().for_each(|o| o.apply_to(&mut end));
            assert_eq!(&end, to);
        }
    }

    /// An ExternalIP's only port changes protocol: its address stays, its one frontend is
    /// replaced. The address (XDP drops its unknown ports) must not outlive the old frontend
    /// while the new one is not in yet (found by the reconcile property test).
    #[test]
    fn an_address_whose_every_frontend_is_replaced_never_drops_traffic_without_a_frontend() {
        let tcp = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: d}\nspec: {clusterIP: 10.96.0.1, externalIPs: [192.0.2.10], ports: [{port: 1}]}\n";
        let p1 = plan_of(tcp, &Ids::default());
        assert_eq!(p1.desired.lb_addrs.len(), 1);
        let p2 = plan_of(&tcp.replace("{port: 1}", "{port: 1, protocol: UDP}"), &p1.ids);
        assert_eq!(p2.desired.lb_addrs, p1.desired.lb_addrs);
        let ops = diff(&p2.desired, &p1.desired);
        assert_every_step_consistent(&p1.desired, &ops);
        let mut end = p1.desired.clone();
        ops.iter().for_each(|o| o.apply_to(&mut end));
        assert_eq!(end, p2.desired);
    }

    #[test]
    fn a_change_is_compared_with_what_the_maps_hold_not_with_a_copy_of_them() {
        use sluice_core::{Changed, Listed, Planner};
        let node = NodeContext { node_name: Some("n1".into()), ..NodeContext::default() };
        let (first, second) = (objects(&service_yaml(1, &eps(1))), objects(&service_yaml(1, &eps(2))));
        let mut planner = Planner::new(Ids::default());
        let mut maps = FakeMaps::default();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        planner.plan(Changed::All, &Listed::new(&first.0, &first.1), &node, Capacity::default());
        rec.sync(&mut maps, planner.desired()).unwrap();
        // Something else changed the header the next change rewrites anyway, and one it leaves.
        let header = *maps.state.services.keys().find(|k| k.slot == 0).unwrap();
        maps.state.services.get_mut(&header).unwrap().affinity_timeout = 7;
        let group = sluice_core::incremental::service_group(&second.0[0]);
        let report = planner.plan(Changed::Groups([group].into()), &Listed::new(&second.0, &second.1), &node, Capacity::default());
        let touched = report.touched.expect("a change");
        assert!(touched.services.contains(&header));
        rec.sync_touched(&mut maps, planner.desired(), &touched).unwrap();
        assert_eq!(&maps.state, planner.desired(), "the header read back differed from the plan, so it was written");
    }

    #[test]
    fn a_full_sync_after_one_that_landed_compares_with_the_state_the_plan_replaced() {
        let (p1, p2) = (plan_of(TWO, &Ids::default()), plan_of(&service_yaml(3, &eps(3)), &Ids::default()));
        let mut maps = FakeMaps::default();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &p1.desired).unwrap();
        // The maps are not read: what they are said to hold is what is compared.
        maps.state = LbState::default();
        let before = rec.before(&maps, None, Some(p1.desired.clone())).unwrap();
        assert_eq!(before, p1.desired);
        rec.write(&mut maps, &p2.desired, before, None).unwrap();
        assert!(maps.log.iter().any(|op| op.is_delete()), "p1's entries were deleted");
        // After a failed sync, the maps are read whatever the plan replaced.
        let mut faulty = FaultyMaps::failing_at(0);
        let mut rec = Reconciler::from_maps(&faulty).unwrap();
        rec.sync(&mut faulty, &p1.desired).unwrap_err();
        rec.recover(&faulty).unwrap();
        assert_eq!(rec.before(&faulty, None, Some(p2.desired.clone())).unwrap(), faulty.inner.state);
        let held = faulty.inner.state.clone();
        rec.write(&mut faulty, &p1.desired, held, None).unwrap();
        assert_eq!(rec.before(&faulty, None, None).unwrap(), p1.desired, "read whole when nothing is handed over");
    }

    #[test]
    fn an_unchanged_plan_writes_nothing() {
        let p = plan_of(TWO, &Ids::default());
        let mut maps = FakeMaps::default();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &p.desired).unwrap();
        let again = plan_of(TWO, &sluice_core::ids_from_state(&maps.state));
        maps.writes = 0;
        rec.sync(&mut maps, &again.desired).unwrap();
        assert_eq!(maps.writes, 0, "a restart-style replan from restored ids must not rewrite anything");
    }

    #[test]
    fn a_failed_write_leaves_the_maps_consistent_and_the_next_sync_converges() {
        let p = plan_of(TWO, &Ids::default());
        let total = diff(&p.desired, &LbState::default()).len();
        for fail_at in 0..total {
            let mut maps = FaultyMaps::failing_at(fail_at);
            let mut rec = Reconciler::from_maps(&maps).unwrap();
            let err = rec.sync(&mut maps, &p.desired).unwrap_err();
            assert_eq!(err.applied, fail_at);
            check_consistent(&maps.inner.state).unwrap();
            assert_eq!(rec.recover(&maps).unwrap(), &maps.inner.state, "recovering reads what landed");
            rec.sync(&mut maps, &p.desired).unwrap();
            assert_eq!(maps.inner.state, p.desired);
        }
    }

    #[test]
    fn leftovers_from_an_earlier_run_are_pruned() {
        let p = plan_of(TWO, &Ids::default());
        let mut maps = FakeMaps::default();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &p.desired).unwrap();
        // A restarted agent whose manifests no longer have the service.
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, &LbState::default()).unwrap();
        assert_eq!(maps.state, LbState::default());
    }
}
