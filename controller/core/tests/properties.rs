//! Property tests of translate → plan on arbitrary Services, EndpointSlices, node contexts
//! (ProxyConfig) and SourceBlocklists: no input panics the planner, every planned state keeps the
//! invariants written down at `arbitrary::check_planned`, no map ever holds more than its
//! capacity, and planning one change at a time ends where a full plan of the same inputs does.
//! The datapath side (what the reconciler writes, with failing writes) is in
//! sluice-datapath's tests/properties.rs.

mod arbitrary;

use std::collections::BTreeSet;

use arbitrary::{LARGE, SMALL, Universe, World, check_planned};
use proptest::collection::vec;
use proptest::prelude::*;
use sluice_core::blocklist;
use sluice_core::incremental::Changed;
use sluice_core::{Capacity, Ids, LbState, Planner, Touched, WarningReason, model, plan, translate};

fn capacity() -> impl Strategy<Value = Capacity> {
    prop_oneof![1 => Just(Capacity::default()), 2 => arbitrary::small_capacity()]
}

/// A world built from a list of changes, so it holds what a sequence of events leaves behind
/// (several slices per Service, slices of unknown Services, relabelled ones).
fn world(u: Universe) -> impl Strategy<Value = World> {
    (arbitrary::node(), vec(arbitrary::change(u), 0..24)).prop_map(|(node, changes)| {
        let mut w = World::new(node);
        let mut ignored = Changed::All;
        for c in &changes {
            w.apply(c, &mut ignored);
        }
        w
    })
}

/// Whether writing only the touched keys (and the blocklist, compared whole), as the
/// reconciler's incremental sync does, takes the maps from `before` to `after`.
fn untouched_changes(before: &LbState, after: &LbState, t: &Touched) -> Option<String> {
    let (want, have) = (after.restrict(t), before.restrict(t));
    let mut ops = Vec::new();
    for phase in sluice_core::state::PHASES {
        want.puts_in_phase(&have, phase, &mut ops);
        want.deletes_in_phase(&have, phase, &mut ops);
    }
    let mut synced = before.clone();
    ops.iter().for_each(|op| op.apply_to(&mut synced));
    (&synced != after).then(|| format!("a sync of the touched keys leaves\n{synced:?}\nwhere the plan has\n{after:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any input plans, and the state keeps every invariant; with small capacities, every
    /// frontend translation asked for and the plan left out is explained by a warning on its
    /// Service.
    #[test]
    fn any_input_plans_into_a_state_that_keeps_every_invariant(w in world(SMALL), cap in capacity(), lists in vec(arbitrary::blocklist(), 0..3)) {
        let p = plan(w.services.values(), w.slices.values(), &w.node, &Ids::default(), cap);
        let blocks = blocklist::lay_out(&lists, &blocklist::empty_ids());
        let mut desired = p.desired.clone();
        desired.blocklist = blocks.entries;
        if let Err(e) = check_planned(&desired, &cap) {
            return Err(TestCaseError::fail(format!("{e}\nfrontends {:?}", arbitrary::frontends(&desired))));
        }
        let asked = translate::translate(w.services.values(), w.slices.values(), &w.node);
        // As the maps key them: an IPv4-mapped IPv6 address is its IPv4 address.
        let programmed: BTreeSet<_> = desired.services.keys().filter(|k| k.slot == 0).map(|k| (k.addr, k.port(), k.proto)).collect();
        let warned: BTreeSet<_> = p.warnings.iter().map(|w| w.subject.clone()).collect();
        for fe in &asked.frontends {
            if !programmed.contains(&(sluice_abi::Addr::from(fe.ip), fe.port, fe.proto.number())) {
                prop_assert!(warned.contains(&sluice_core::Subject::service(&fe.service)), "{}:{}/{} of {} left out without a warning: {:?}", fe.ip, fe.port, fe.proto, fe.service, p.warnings);
            }
        }
        if p.warnings.iter().all(|w| w.reason != WarningReason::MapFull) {
            prop_assert_eq!(p.frontends, asked.frontends.len());
        }
    }

    /// A sequence of changes planned one at a time (only the groups each change marks, as the
    /// agent's index marks them) gives after every step the state, ids, warnings and health
    /// checks a full plan of the same inputs from the same ids gives; every entry that changed
    /// is among the keys the step reports as touched; and the invariants hold throughout.
    #[test]
    fn planning_one_change_at_a_time_equals_a_full_plan(start in world(SMALL), steps in vec(vec(arbitrary::change(SMALL), 1..4), 1..12), cap in capacity()) {
        let mut w = start;
        let mut planner = Planner::new(Ids::default());
        let mut block_ids = blocklist::empty_ids();
        let mut changed = Changed::All;
        for (step, batch) in std::iter::once(Vec::new()).chain(steps).enumerate() {
            for c in &batch {
                w.apply(c, &mut changed);
            }
            let ids_before = planner.ids();
            let before = planner.desired().clone();
            let report = planner.plan(std::mem::replace(&mut changed, Changed::Groups(BTreeSet::new())), &w, &w.node, cap);
            let blocks = blocklist::lay_out(&w.blocklists(), &block_ids);
            block_ids = blocks.ids.clone();
            planner.set_blocklist(blocks.entries.clone());

            let mut full = plan(w.services.values(), w.slices.values(), &w.node, &ids_before, cap);
            full.desired.blocklist = blocks.entries;
            prop_assert_eq!(planner.desired(), &full.desired, "step {} after {:?}", step, batch);
            prop_assert_eq!(planner.ids(), full.ids, "step {}", step);
            prop_assert_eq!(&report.warnings, &full.warnings, "step {}", step);
            prop_assert_eq!(&report.health_checks, &full.health_checks, "step {}", step);
            prop_assert_eq!(report.frontends, full.frontends, "step {}", step);
            if let Err(e) = check_planned(planner.desired(), &cap) {
                return Err(TestCaseError::fail(format!("step {step}: {e}")));
            }
            if let Some(t) = &report.touched {
                if let Some(e) = untouched_changes(&before, planner.desired(), t) {
                    return Err(TestCaseError::fail(format!("step {step} after {batch:?}: {e}")));
                }
            }
        }
    }
}

/// A world at `LARGE` scale: a few Services, and slices drawn until about 100,000 endpoints.
fn large_world() -> impl Strategy<Value = World> {
    (arbitrary::node(), vec(arbitrary::service(LARGE), 1..=3), vec(arbitrary::slice(LARGE), 200)).prop_map(|(node, services, slices)| {
        let mut w = World::new(node);
        let mut ignored = Changed::All;
        for s in services {
            w.apply(&arbitrary::Change::Service(model::Service::from_api(&s)), &mut ignored);
        }
        for s in slices {
            w.apply(&arbitrary::Change::Slice(model::Slice::from_api(&s)), &mut ignored);
        }
        w
    })
}

proptest! {
    // Each case is large (seconds to plan): a few draws, no long shrinking.
    #![proptest_config(ProptestConfig { cases: 3, max_shrink_iters: 16, ..ProptestConfig::default() })]

    /// At the scale of thousands of ports and a hundred thousand endpoints, with mixed families,
    /// duplicates and out-of-range values: planning does not panic, keeps every invariant and
    /// every capacity (the built-in ones, or small ones that force refusals), and planning the
    /// world again after one more change equals a full plan.
    #[test]
    fn a_hundred_thousand_endpoints_plan_within_every_capacity(w in large_world(), cap in capacity(), more in arbitrary::change(LARGE)) {
        let endpoints: usize = w.slices.values().map(|s| s.endpoints.len()).sum();
        prop_assume!(endpoints > 10_000);
        let mut planner = Planner::new(Ids::default());
        planner.plan(Changed::All, &w, &w.node, cap);
        if let Err(e) = check_planned(planner.desired(), &cap) {
            return Err(TestCaseError::fail(format!("{endpoints} endpoints: {e}")));
        }
        let mut w = w;
        let mut changed = Changed::Groups(BTreeSet::new());
        w.apply(&more, &mut changed);
        let ids_before = planner.ids();
        let report = planner.plan(changed, &w, &w.node, cap);
        let full = plan(w.services.values(), w.slices.values(), &w.node, &ids_before, cap);
        prop_assert!(planner.desired() == &full.desired, "incremental and full plans differ after {:?}", more);
        prop_assert_eq!(&report.warnings, &full.warnings);
        if let Err(e) = check_planned(planner.desired(), &cap) {
            return Err(TestCaseError::fail(format!("after one more change: {e}")));
        }
    }
}

/// Found by `any_input_plans_into_a_state_that_keeps_every_invariant`: two Services with one
/// ClusterIP and port (standalone manifests are not validated). The loser's NodePort took the
/// winner's ClusterIP rev-NAT id as its session-affinity group, so a client that reached the
/// winner's ClusterIP was sent by the loser's NodePort to the winner's backend.
#[test]
fn a_service_never_shares_its_affinity_group_with_another_service() {
    let yaml = "
apiVersion: v1
kind: Service
metadata: {name: first, namespace: a}
spec: {clusterIP: 10.96.0.1, sessionAffinity: ClientIP, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: second, namespace: a}
spec: {type: NodePort, clusterIP: 10.96.0.1, sessionAffinity: ClientIP, ports: [{port: 80, nodePort: 30080}]}
";
    let (services, slices, warnings) = sluice_core::manifest::parse_str(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let node = sluice_core::NodeContext { node_ips: vec!["172.30.0.11".parse().unwrap()], ..Default::default() };
    let p = plan(&services, &slices, &node, &Ids::default(), Capacity::default());
    let head = |ip: &str, port: u16| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        *p.desired.services.iter().find(|(k, _)| k.slot == 0 && k.addr.ip() == ip && k.port() == port).expect("programmed").1
    };
    let (cluster_ip, node_port) = (head("10.96.0.1", 80), head("172.30.0.11", 30080));
    assert_ne!(node_port.backend_id & 0xffff, cluster_ip.rev_nat_id(), "the second Service's NodePort has an affinity group of its own");
    check_planned(&p.desired, &Capacity::default()).unwrap();
}

/// Plans `first`, then `first` and `second` one change later, and returns the incremental and
/// the full plan of the second step.
fn arriving(first: &str, second: &str, cap: Capacity) -> (LbState, LbState) {
    let node = sluice_core::NodeContext { node_ips: vec!["172.30.0.11".parse().unwrap()], ..Default::default() };
    let (s1, e1, _) = sluice_core::manifest::parse_str(first);
    let (s2, e2, _) = sluice_core::manifest::parse_str(&format!("{first}\n---\n{second}"));
    let mut planner = Planner::new(Ids::default());
    planner.plan(Changed::All, &sluice_core::Listed::new(&s1, &e1), &node, cap);
    let ids = planner.ids();
    let group = sluice_core::incremental::service_group(s2.last().unwrap());
    planner.plan(Changed::Groups([group].into()), &sluice_core::Listed::new(&s2, &e2), &node, cap);
    (planner.desired().clone(), plan(&s2, &e2, &node, &ids, cap).desired)
}

/// Found by `planning_one_change_at_a_time_equals_a_full_plan`: with room for one Service, the
/// one that arrived first kept it, where a full plan (and every other node) gives it to the
/// first by name.
#[test]
fn a_full_map_goes_to_the_same_service_whatever_order_they_arrived_in() {
    let svc = |ns: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s0, namespace: {ns}}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n")
    };
    let (incremental, full) = arriving(&svc("b", "10.96.0.2"), &svc("a", "10.96.0.1"), Capacity { services: 1, ..Capacity::default() });
    assert_eq!(incremental, full);
    assert_eq!(arbitrary::frontends(&full), vec![("10.96.0.1".parse().unwrap(), 80, 6, 0)], "a/s0 comes first");
}

/// Found by `planning_one_change_at_a_time_equals_a_full_plan`: a TCP and a UDP Service on one
/// address and port (a shared LoadBalancer IP) share its rev-NAT id, whose name was whichever
/// was laid out last.
#[test]
fn a_shared_rev_nat_id_is_named_the_same_whatever_order_its_services_arrived_in() {
    let svc = |name: &str, ip: &str, proto: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: a}}\nspec: {{type: LoadBalancer, clusterIP: {ip}, ports: [{{port: 53, protocol: {proto}, nodePort: 30053}}]}}\nstatus: {{loadBalancer: {{ingress: [{{ip: 192.0.2.10}}]}}}}\n"
        )
    };
    let (incremental, full) = arriving(&svc("dns-udp", "10.96.0.2", "UDP"), &svc("dns-tcp", "10.96.0.1", "TCP"), Capacity::default());
    assert_eq!(incremental, full);
}

/// Found by sluice-datapath's property test: "::ffff:10.96.0.1" and "10.96.0.1" are one key in
/// the maps but were two addresses to the claims, so the Service that arrived first kept it.
#[test]
fn an_ipv4_mapped_address_is_claimed_as_its_ipv4_address() {
    let svc = |ns: &str, ip: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s0, namespace: {ns}}}\nspec: {{clusterIP: '{ip}', ports: [{{port: 80}}]}}\n")
    };
    let (incremental, full) = arriving(&svc("b", "::ffff:10.96.0.1"), &svc("a", "10.96.0.1"), Capacity::default());
    assert_eq!(incremental, full);
}
