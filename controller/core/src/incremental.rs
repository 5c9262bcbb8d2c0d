//! Planning that translates only the Services that changed.
//!
//! Translation (Service + Slices → frontends) is most of a plan's cost and depends on
//! nothing but one Service, its own slices and the node, so each Service's translation is kept
//! and redone only when that Service, one of its slices, or the node changes. The layout keeps
//! which entries each Service owns ([`crate::layout`]), so only the changed Services' entries
//! are laid out again and only their keys are diffed. A full plan ([`crate::plan`]) is the same
//! machinery run over everything, and a test holds the two to the same result.

use std::collections::{BTreeMap, BTreeSet};

use crate::claims::{self, Claims};
use crate::layout::Layout;
use crate::model::{Service, Slice};
use crate::state::Touched;
use crate::state::LbState;
use crate::names::ObjectKey;
use crate::translate::{self, HealthCheck, NodeContext, Translation, Warning};
use crate::{Capacity, Ids};

/// A Service, or the Service an EndpointSlice names in its label (slices without the label group
/// under their namespace and name ""): what the planner replans as one.
pub type GroupKey = ObjectKey;

/// What changed since the last plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Changed {
    #[default]
    All,
    Groups(BTreeSet<GroupKey>),
}

impl Changed {
    pub fn mark(&mut self, key: GroupKey) {
        if let Changed::Groups(set) = self {
            set.insert(key);
        }
    }
}

pub fn service_group(svc: &Service) -> GroupKey {
    svc.key.clone()
}

pub fn slice_group(slice: &Slice) -> GroupKey {
    ObjectKey::new(&slice.key.namespace, slice.service.clone().unwrap_or_default())
}

/// Where the planner finds the objects of a group.
pub trait PlanInputs {
    fn service(&self, group: &GroupKey) -> Option<&Service>;
    fn slices(&self, group: &GroupKey) -> Vec<&Slice>;
    /// Every group that has a Service or a slice.
    fn groups(&self) -> BTreeSet<GroupKey>;
}

/// What a plan decided besides the map contents, which stay in the planner
/// ([`Planner::desired`]).
#[derive(Debug)]
pub struct PlanReport {
    /// How many frontends are planned.
    pub frontends: usize,
    pub health_checks: Vec<HealthCheck>,
    pub warnings: Vec<Warning>,
    /// The keys this plan may have changed; None when it laid out everything anew (the
    /// reconciler then compares every entry).
    pub touched: Option<Touched>,
    /// What a plan that laid out everything anew replaced: the maps' contents, when the sync of
    /// the plan before landed (the reconciler compares against it instead of a copy of its own).
    pub replaced: Option<LbState>,
}

/// What the planner keeps of a Service's translation once it is laid out: the addresses it
/// claims and what it reports. Its frontends (with every endpoint) are translated again when
/// the Service is laid out again, so they are never kept for every Service at once.
#[derive(Debug, Default)]
struct Part {
    asks: Vec<claims::Ask>,
    health_checks: Vec<HealthCheck>,
    warnings: Vec<Warning>,
}

impl Part {
    fn of(t: &Translation) -> Part {
        Part { asks: t.frontends.iter().map(claims::ask).collect(), health_checks: t.health_checks.clone(), warnings: t.warnings.clone() }
    }
}

/// Every group's part, with what each plan reports over all of them kept up to date as parts
/// come and go: walking 100,000 parts for it cost a change at that scale 20 ms.
#[derive(Default)]
struct Parts {
    by_group: BTreeMap<GroupKey, Part>,
    /// The groups whose part has warnings or health checks.
    noted: BTreeSet<GroupKey>,
    frontends: usize,
}

impl Parts {
    fn get(&self, group: &GroupKey) -> Option<&Part> {
        self.by_group.get(group)
    }

    fn contains_key(&self, group: &GroupKey) -> bool {
        self.by_group.contains_key(group)
    }

    fn insert(&mut self, group: GroupKey, part: Part) {
        self.remove(&group);
        self.frontends += part.asks.len();
        if !part.warnings.is_empty() || !part.health_checks.is_empty() {
            self.noted.insert(group.clone());
        }
        self.by_group.insert(group, part);
    }

    fn remove(&mut self, group: &GroupKey) -> Option<Part> {
        let part = self.by_group.remove(group)?;
        self.frontends -= part.asks.len();
        self.noted.remove(group);
        Some(part)
    }

    fn clear(&mut self) {
        *self = Parts::default();
    }

    fn noted(&self) -> impl Iterator<Item = &Part> {
        self.noted.iter().filter_map(|g| self.by_group.get(g))
    }
}

pub struct Planner {
    parts: Parts,
    /// Who asks for each frontend address, over every part.
    claims: Claims,
    node: Option<NodeContext>,
    layout: Option<Layout>,
    /// The ids a full plan starts from when there is no layout yet (restored from the maps).
    previous: Ids,
}

/// A group's translation from its objects; None when it has neither a Service nor a slice.
fn translate_group(inputs: &impl PlanInputs, group: &GroupKey, node: &NodeContext) -> Option<Translation> {
    let svc = inputs.service(group);
    let group_slices = inputs.slices(group);
    (svc.is_some() || !group_slices.is_empty()).then(|| translate::translate(svc, group_slices, node))
}

impl Planner {
    pub fn new(previous: Ids) -> Planner {
        Planner { parts: Parts::default(), claims: Claims::default(), node: None, layout: None, previous }
    }

    /// Forgets the layout: the next plan lays out everything again from `previous` (the ids the
    /// maps hold), e.g. after a sync failed half-way.
    pub fn reset(&mut self, previous: Ids) {
        self.layout = None;
        self.previous = previous;
    }

    /// The map contents every plan so far adds up to.
    pub fn desired(&self) -> &LbState {
        static EMPTY: std::sync::OnceLock<LbState> = std::sync::OnceLock::new();
        self.layout.as_ref().map_or_else(|| EMPTY.get_or_init(LbState::default), |l| &l.state)
    }

    /// SourceBlocklist entries are planned elsewhere; they ride along in the desired state.
    pub fn set_blocklist(&mut self, entries: BTreeMap<sluice_abi::BlockKey, sluice_abi::BlockValue>) {
        if let Some(l) = &mut self.layout {
            l.state.blocklist = entries;
        }
    }

    pub fn ids(&self) -> Ids {
        self.layout.as_ref().map_or_else(|| self.previous.clone(), Layout::ids)
    }

    /// Plans from every Service and slice, retranslating and laying out again only the groups
    /// in `changed` (everything when the node context differs from the last plan's, or there is
    /// no layout yet).
    pub fn plan(&mut self, changed: Changed, inputs: &impl PlanInputs, node: &NodeContext, capacity: Capacity) -> PlanReport {
        let full = self.layout.is_none() || self.node.as_ref() != Some(node) || changed == Changed::All;
        let touched = match changed {
            Changed::Groups(groups) if !full => self.plan_groups(groups, inputs, node, capacity),
            _ => None,
        };
        let (touched, replaced) = match touched {
            Some(touched) => (Some(touched), None),
            None => (None, self.plan_all(inputs, node, capacity)),
        };
        self.node = Some(node.clone());

        let layout = self.layout.as_ref().expect("laid out");
        let mut warnings: Vec<Warning> = self.parts.noted().flat_map(|t| t.warnings.iter()).chain(layout.warnings()).cloned().collect();
        warnings.sort();
        warnings.dedup();
        PlanReport {
            frontends: self.parts.frontends,
            health_checks: self.parts.noted().flat_map(|t| t.health_checks.iter().cloned()).collect(),
            warnings,
            touched,
            replaced,
        }
    }

    /// Lays out every group anew. Who owns each address is settled over all of them first
    /// (frontend addresses depend on endpoints only in that too many refuse the Service, so that
    /// pass counts them and builds no backend lists); then each group is translated in full,
    /// laid out and let go, one at a time. Returns the state it replaced, if any.
    fn plan_all(&mut self, inputs: &impl PlanInputs, node: &NodeContext, capacity: Capacity) -> Option<LbState> {
        let groups = inputs.groups();
        self.parts.clear();
        self.claims.clear();
        for group in &groups {
            if let Some(svc) = inputs.service(group) {
                let asks: Vec<claims::Ask> = translate::frontends_only(Some(svc), inputs.slices(group), node).frontends.iter().map(claims::ask).collect();
                self.claims.claim(group, &asks);
            }
        }
        let previous = self.layout.as_ref().map_or_else(|| self.previous.clone(), Layout::ids);
        let replaced = self.layout.take().map(|l| l.state);
        let mut layout = Layout::new(&previous);
        layout.state.blocklist = replaced.as_ref().map(|r| r.blocklist.clone()).unwrap_or_default();
        for group in &groups {
            if let Some(t) = translate_group(inputs, group, node) {
                layout.add(group, &t.frontends, node, capacity, &self.claims);
                self.parts.insert(group.clone(), Part::of(&t));
            }
        }
        layout.finish();
        self.layout = Some(layout);
        replaced
    }

    /// Translates and lays out again the changed groups only (and those an address changed
    /// hands between). None when only a full plan gives every node the same answer.
    fn plan_groups(&mut self, mut groups: BTreeSet<GroupKey>, inputs: &impl PlanInputs, node: &NodeContext, capacity: Capacity) -> Option<Touched> {
        let mut fresh: BTreeMap<GroupKey, Option<Translation>> = groups.iter().map(|g| (g.clone(), translate_group(inputs, g, node))).collect();
        // Which Services a full map refuses depends on the order they are laid out in: a full
        // plan goes by Service, a change at a time by arrival. Near a capacity, or once a Service
        // was refused (room that frees up must go to the first in order), only a full plan
        // gives every node the same answer.
        let layout = self.layout.as_ref().expect("an incremental plan has a layout");
        if layout.refused() || !layout.surely_fits(fresh.values().flatten().flat_map(|t| t.frontends.iter()), capacity) {
            return None;
        }
        // Who owned each address these groups asked for or ask for now, before and after: when
        // an address changes hands, every Service asking for it is laid out again, the old and
        // the new owner and every loser (whose warning names the owner).
        let old = groups.iter().filter_map(|g| self.parts.get(g)).flat_map(|p| p.asks.iter().map(|(a, _)| *a));
        let new = fresh.values().flatten().flat_map(|t| t.frontends.iter()).map(claims::address);
        let contested: BTreeSet<claims::Address> = old.chain(new).collect();
        let before: Vec<Option<claims::Precedence>> = contested.iter().map(|a| self.claims.winner(a).cloned()).collect();
        for (group, part) in &fresh {
            if let Some(old) = self.parts.remove(group) {
                self.claims.withdraw(group, &old.asks);
            }
            if let Some(t) = part {
                let part = Part::of(t);
                self.claims.claim(group, &part.asks);
                self.parts.insert(group.clone(), part);
            }
        }
        for (address, before) in contested.iter().zip(before) {
            let after = self.claims.winner(address).cloned();
            if after != before {
                let claimants: Vec<GroupKey> = self.claims.claimants(address).map(|(_, group)| group.clone()).collect();
                groups.extend(before.into_iter().map(|(_, group)| group).chain(claimants));
            }
        }
        // The groups laid out again only for an address that changed hands: their objects did
        // not change, so their translation is what it was.
        for group in &groups {
            if !fresh.contains_key(group) && self.parts.contains_key(group) {
                fresh.insert(group.clone(), translate_group(inputs, group, node));
            }
        }
        let layout = self.layout.as_mut().expect("an incremental plan has a layout");
        layout.begin();
        // Every group out before any goes back in: an address that changes hands is free
        // when its new owner is laid out.
        for group in &groups {
            layout.remove(group);
        }
        for group in &groups {
            if let Some(Some(t)) = fresh.get(group) {
                layout.add(group, &t.frontends, node, capacity, &self.claims);
            }
        }
        layout.finish();
        Some(layout.touched.take().unwrap_or_default())
    }

    /// Consumes the planner for its state (a one-shot full plan).
    pub(crate) fn into_desired(self) -> LbState {
        self.layout.map(|l| l.state).unwrap_or_default()
    }
}

/// Slices grouped by the Service they belong to, for a one-shot plan from plain lists.
pub struct Listed<'a> {
    services: BTreeMap<GroupKey, &'a Service>,
    slices: BTreeMap<GroupKey, Vec<&'a Slice>>,
}

impl<'a> Listed<'a> {
    pub fn new(services: impl IntoIterator<Item = &'a Service>, slices: impl IntoIterator<Item = &'a Slice>) -> Self {
        let services = services.into_iter().map(|s| (service_group(s), s)).collect();
        let mut grouped: BTreeMap<GroupKey, Vec<&Slice>> = BTreeMap::new();
        for slice in slices {
            grouped.entry(slice_group(slice)).or_default().push(slice);
        }
        Listed { services, slices: grouped }
    }
}

impl PlanInputs for Listed<'_> {
    fn service(&self, group: &GroupKey) -> Option<&Service> {
        self.services.get(group).copied()
    }
    fn slices(&self, group: &GroupKey) -> Vec<&Slice> {
        self.slices.get(group).cloned().unwrap_or_default()
    }
    fn groups(&self) -> BTreeSet<GroupKey> {
        self.services.keys().chain(self.slices.keys()).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    fn objects(yaml: &str) -> (Vec<Service>, Vec<Slice>) {
        let (services, slices, _) = manifest::parse_str(yaml);
        (services, slices)
    }

    fn world(step: usize) -> String {
        // Services a..e in two namespaces; each step moves endpoints, drops one Service, adds a
        // slice for an unknown Service and one without the label, so every path is exercised.
        let mut y = String::new();
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            if (i + step) % 5 == 0 {
                continue;
            }
            let ns = if i % 2 == 0 { "one" } else { "two" };
            let lb = if i == 2 { format!(", externalIPs: [192.0.2.{}], loadBalancerSourceRanges: [198.51.100.0/24]", 10 + step % 2) } else { String::new() };
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{type: NodePort, clusterIP: 10.96.{i}.1, ports: [{{port: 80, targetPort: 8080}}]{lb}}}\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
                 addressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n- addresses: [10.244.{i}.{}]\n  nodeName: n1\n- addresses: [10.244.{i}.{}]\n",
                1 + step % 3,
                10 + (step + i) % 4
            ));
        }
        y.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: orphan-{step}, namespace: one, labels: {{kubernetes.io/service-name: ghost}}}}\n\
             addressType: IPv4\nendpoints: []\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: nolabel, namespace: two}}\naddressType: IPv4\nendpoints: []\n"
        ));
        y
    }

    /// The groups whose objects differ between two worlds: what the index would mark.
    fn differences(a: &Listed, b: &Listed) -> Changed {
        let mut keys = BTreeSet::new();
        for k in a.groups().union(&b.groups()) {
            if a.service(k) != b.service(k) || a.slices(k) != b.slices(k) {
                keys.insert(k.clone());
            }
        }
        Changed::Groups(keys)
    }

    #[test]
    fn incremental_plans_equal_full_plans_through_a_sequence_of_changes() {
        let node =
            NodeContext { node_name: Some("n1".into()), node_ips: vec!["172.30.0.11".parse().unwrap()], external_ip_cidrs: None, maglev: false, zone: None, nodeport_bind_protection: true, ..NodeContext::default() };
        let mut planner = Planner::new(Ids::default());
        let mut before: Option<LbState> = None;
        let worlds: Vec<_> = (0..12).map(|step| objects(&world(step))).collect();
        for (step, (services, slices)) in worlds.iter().enumerate() {
            let now = Listed::new(services, slices);
            let changed = match step {
                0 => Changed::All,
                _ => differences(&Listed::new(&worlds[step - 1].0, &worlds[step - 1].1), &now),
            };
            let ids_before = planner.ids();
            let report = planner.plan(changed, &now, &node, Capacity::default());
            let full = crate::plan(services, slices, &node, &ids_before, Capacity::default());
            assert_eq!(planner.desired(), &full.desired, "step {step}");
            assert_eq!(planner.ids(), full.ids, "step {step}");
            assert_eq!(report.warnings, full.warnings, "step {step}");
            assert_eq!(report.health_checks, full.health_checks, "step {step}");
            assert_eq!(report.frontends, full.frontends, "step {step}");
            assert!(report.warnings.iter().any(|w| w.message.contains("unknown")), "the orphan slice is reported at step {step}");
            // Everything that changed is among the touched keys.
            if let (Some(t), Some(b)) = (&report.touched, &before) {
                let everything = Touched::all_of(b, planner.desired());
                let untouched = |s: &LbState| {
                    let mut u = s.restrict(&everything);
                    u.services.retain(|k, _| !t.services.contains(k));
                    u.backends.retain(|k, _| !t.backends.contains(k));
                    u.revnat.retain(|k, _| !t.revnat.contains(k));
                    u.names.retain(|k, _| !t.names.contains(k));
                    u.src_ranges.retain(|k, _| !t.src_ranges.contains(k));
                    u.lb_addrs.retain(|k, _| !t.lb_addrs.contains(k));
                    u.nodeports.retain(|k, _| !t.nodeports.contains(k));
                    u.maglev.retain(|k, _| !t.maglev.contains(k));
                    u
                };
                assert_eq!(untouched(b), untouched(planner.desired()), "an entry changed without being touched at step {step}");
                assert!(t.services.len() < planner.desired().services.len() + b.services.len(), "step {step} touched less than everything");
            }
            before = Some(planner.desired().clone());
        }
    }

    #[test]
    fn a_changed_node_retranslates_everything() {
        let (services, slices) = objects(&world(1));
        let inputs = Listed::new(&services, &slices);
        let mut planner = Planner::new(Ids::default());
        let node = NodeContext { node_name: Some("n1".into()), node_ips: vec![], external_ip_cidrs: None, maglev: false, zone: None, nodeport_bind_protection: true, ..NodeContext::default() };
        planner.plan(Changed::All, &inputs, &node, Capacity::default());
        let before = planner.desired().clone();
        // Nothing marked, but the node lost its name: local flags must go.
        let other = NodeContext { node_name: Some("n2".into()), ..node.clone() };
        let report = planner.plan(Changed::Groups(BTreeSet::new()), &inputs, &other, Capacity::default());
        assert!(report.touched.is_none(), "a full plan");
        assert_eq!(planner.desired(), &crate::plan(&services, &slices, &other, &planner.ids(), Capacity::default()).desired);
        assert_ne!(planner.desired(), &before);
    }

    #[test]
    fn a_service_replaced_in_place_keeps_its_ids_and_a_freed_id_waits_one_plan() {
        let node = NodeContext::default();
        let one = |ip: &str| {
            objects(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: a, namespace: x}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: a-1, namespace: x, labels: {{kubernetes.io/service-name: a}}}}\n\
             addressType: IPv4\nports: [{{port: 80}}]\nendpoints: [{{addresses: [{ip}]}}]\n"
            ))
        };
        // Two backend ids only, so "free again" is visible: the search for a new id wraps.
        let ids = Ids { backends: crate::ids::IdSpace::with_max(2), ..Ids::default() };
        let mut planner = Planner::new(ids);
        let (s, e) = one("10.244.0.1");
        planner.plan(Changed::All, &Listed::new(&s, &e), &node, Capacity::default());
        let rev_nat = |p: &Planner| *p.desired().revnat.keys().next().unwrap();
        let backend = |p: &Planner| *p.desired().backends.keys().next().unwrap();
        let (r0, b0) = (rev_nat(&planner), backend(&planner));
        let group = ObjectKey::new("x", "a");
        let (s, e) = one("10.244.0.2");
        let report = planner.plan(Changed::Groups([group.clone()].into()), &Listed::new(&s, &e), &node, Capacity::default());
        assert_eq!(rev_nat(&planner), r0, "same frontend, same rev-NAT id");
        let b1 = backend(&planner);
        assert_ne!(b1, b0, "the gone backend's id is not reused in the plan that freed it");
        let t = report.touched.unwrap();
        assert!(t.backends.contains(&b0) && t.backends.contains(&b1));
        assert_eq!(t.revnat, [r0].into(), "the rev-NAT entry is rewritten in place, not moved");
        let (s, e) = one("10.244.0.3");
        planner.plan(Changed::Groups([group].into()), &Listed::new(&s, &e), &node, Capacity::default());
        assert_eq!(backend(&planner), b0, "one plan later the freed id is free again");
    }
}
