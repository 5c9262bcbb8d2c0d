//! Property tests of plan → diff → write against the in-memory maps, with writes failing
//! persistently from an arbitrary op on: after every op the maps the datapath reads stay
//! whole (`reconcile::check_consistent`: a header never counts a slot that is not there, a slot
//! never names a missing backend, ...), a failed sync starts over from what the maps hold, and once the
//! failures stop the next sync converges to the plan, which equals a full plan of the final
//! inputs and keeps the planner's invariants. The inputs are sluice-core's generators.

#[path = "../../core/tests/arbitrary/mod.rs"]
mod arbitrary;

use std::collections::BTreeSet;

use arbitrary::{SMALL, World, check_planned};
use proptest::collection::vec;
use proptest::prelude::*;
use sluice_core::blocklist;
use sluice_core::ids::IdSpace;
use sluice_core::incremental::Changed;
use sluice_core::{Capacity, Ids, LbState, Planner, ids_from_state, plan};
use sluice_datapath::reconcile::check_consistent;
use sluice_datapath::reconcile::SyncError;
use sluice_datapath::{FaultyMaps, LbMaps, Reconciler};

/// The agent's sync loop (sluice's `Syncer::step`) without its side effects: plan the marked
/// groups, lay out the blocklists, write the touched keys (everything after a full plan), and
/// after a failed write start over from what the maps hold.
struct Agent {
    planner: Planner,
    reconciler: Reconciler,
    block_ids: IdSpace<sluice_abi::BlockKey>,
    maps: FaultyMaps,
}

impl Agent {
    fn new(maps: FaultyMaps) -> Agent {
        let reconciler = Reconciler::from_maps(&maps).unwrap();
        let found = reconciler.found().unwrap();
        Agent { planner: Planner::new(ids_from_state(found)), block_ids: blocklist::ids_from_state(found), reconciler, maps }
    }

    /// One sync; Err(why) when an invariant broke, Ok(whether the writes all landed).
    fn step(&mut self, w: &World, changed: Changed, cap: Capacity) -> Result<bool, String> {
        let mut report = self.planner.plan(changed, w, &w.node, cap);
        let blocks = blocklist::lay_out(&w.blocklists(), &self.block_ids);
        self.planner.set_blocklist(blocks.entries);
        let before = self.maps.inner.state.clone();
        let logged = self.maps.inner.log.len();
        let touched = report.touched.as_ref();
        let synced = self
            .reconciler
            .before(&self.maps, touched, report.replaced.take())
            .map_err(SyncError::reading)
            .and_then(|b| self.reconciler.write(&mut self.maps, self.planner.desired(), b, touched));
        // Every state a lookup racing the writer could see.
        let mut seen = before;
        for (i, op) in self.maps.inner.log[logged..].iter().enumerate() {
            op.apply_to(&mut seen);
            check_consistent(&seen).map_err(|e| format!("after op {i} of the sync, {op:?}: {e}"))?;
        }
        match synced {
            Ok(_) => {
                self.block_ids = blocks.ids;
                if &self.maps.inner.state != self.planner.desired() {
                    return Err("a sync that succeeded left the maps apart from the plan".into());
                }
                Ok(true)
            }
            Err(_) => {
                let held = self.reconciler.recover(&self.maps).map_err(|e| e.to_string())?;
                self.planner.reset(ids_from_state(held));
                self.block_ids = blocklist::ids_from_state(held);
                Ok(false)
            }
        }
    }
}

fn capacity() -> impl Strategy<Value = Capacity> {
    prop_oneof![1 => Just(Capacity::default()), 1 => arbitrary::small_capacity()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn maps_stay_whole_under_persistent_write_failures_and_converge_once_they_stop(
        node in arbitrary::node(),
        steps in vec(vec(arbitrary::change(SMALL), 1..4), 1..10),
        fail_from in 0..150usize,
        healed_after in 0..10usize,
        cap in capacity(),
    ) {
        let mut w = World::new(node);
        let mut agent = Agent::new(FaultyMaps::failing_from(fail_from));
        let mut changed = Changed::All;
        for (step, batch) in steps.iter().enumerate() {
            if step == healed_after {
                agent.maps.fail_at = None;
            }
            for c in batch {
                w.apply(c, &mut changed);
            }
            let taken = std::mem::replace(&mut changed, Changed::Groups(BTreeSet::new()));
            if let Err(e) = agent.step(&w, taken, cap) {
                return Err(TestCaseError::fail(format!("step {step} after {batch:?}: {e}")));
            }
        }
        agent.maps.fail_at = None;
        let ids = agent.planner.ids();
        let landed = agent.step(&w, Changed::Groups(BTreeSet::new()), cap).map_err(TestCaseError::fail)?;
        prop_assert!(landed, "the sync after the failures stopped failed");
        let mut full = plan(w.services.values(), w.slices.values(), &w.node, &ids, cap).desired;
        full.blocklist = agent.maps.inner.state.blocklist.clone();
        prop_assert_eq!(&agent.maps.inner.state, &full, "converged to a full plan of the final inputs");
        check_planned(&agent.maps.inner.state, &cap).map_err(TestCaseError::fail)?;
    }
}

/// A restarted agent over maps a failed sync left half-written keeps them whole too: it plans
/// from the ids the maps hold and prunes what the plan lacks.
#[test]
fn a_restart_over_half_written_maps_converges() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: d}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: d, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\n\
        ports: [{port: 80}]\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]\n";
    let (services, slices, _) = sluice_core::manifest::parse_str(yaml);
    let p = plan(&services, &slices, &sluice_core::NodeContext::default(), &Ids::default(), Capacity::default());
    // Seven writes: two backends, a rev-NAT id and its name, two slots, the header.
    for fail_from in 0..7 {
        let mut maps = FaultyMaps::failing_from(fail_from);
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        assert!(rec.sync(&mut maps, &p.desired).is_err());
        maps.fail_at = None;
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        let again = plan(&services, &slices, &sluice_core::NodeContext::default(), &ids_from_state(&maps.dump().unwrap()), Capacity::default());
        rec.sync(&mut maps, &again.desired).unwrap();
        check_consistent(&maps.inner.state).unwrap();
        assert_eq!(maps.inner.state, again.desired);
        assert_ne!(maps.inner.state, LbState::default());
    }
}
