//! The objects the planner reads, keyed by namespace/name. apply/delete/reset only: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice_core::ObjectKey;
use sluice_core::incremental::{Changed, GroupKey, PlanInputs, slice_group};
use sluice_core::model::{Service, Slice};
use sluice_crds::{ProxyConfig, SourceBlocklist};
use tokio::sync::Notify;

/// The objects as planning reads them ([`sluice_core::model`]): what the agent keeps of every
/// Service and EndpointSlice of the cluster.
#[derive(Debug, Default)]
pub struct Index {
    pub services: BTreeMap<ObjectKey, Service>,
    pub slices: BTreeMap<ObjectKey, Slice>,
    /// The slices of each Service (by its label), so a change replans only that Service. A
    /// sorted list: nearly every Service has one or two.
    slices_by_group: BTreeMap<GroupKey, Vec<ObjectKey>>,
    /// The groups changed since the planner last looked (all, after a full list).
    pub changed: Changed,
    services_listed: bool,
    slices_listed: bool,
    /// Bumped on every change so the planner can tell whether it is behind.
    pub generation: u64,
    /// When the oldest change not yet planned arrived; the agent reports programming latency from it.
    pub pending_since: Option<Instant>,
    /// SourceBlocklists by name. Not part of `complete()`: a cluster without the CRD still gets
    /// its Services programmed.
    pub blocklists: BTreeMap<String, SourceBlocklist>,
    /// The ProxyConfig named `default`.
    pub proxy_config: Option<ProxyConfig>,
    /// This agent's Node, once listed (cluster mode with a node name only; see `expect_node`).
    pub node: Option<crate::NodeFacts>,
    node_pending: bool,
    /// Events received per kind, for the change counters.
    pub service_events: u64,
    pub slice_events: u64,
}

impl Index {
    fn touched(&mut self) {
        self.generation += 1;
        self.pending_since.get_or_insert_with(Instant::now);
    }

    pub fn apply_service(&mut self, s: Service) {
        self.changed.mark(s.key.clone());
        self.services.insert(s.key.clone(), s);
        self.service_events += 1;
        self.touched();
    }
    pub fn delete_service(&mut self, key: &ObjectKey) {
        self.changed.mark(key.clone());
        self.services.remove(key);
        self.service_events += 1;
        self.touched();
    }
    /// Replaces all Services at once (a complete list arrived) and marks them listed.
    pub fn reset_services(&mut self, all: Vec<Service>) {
        self.services = all.into_iter().map(|s| (s.key.clone(), s)).collect();
        self.changed = Changed::All;
        self.services_listed = true;
        self.service_events += 1;
        self.touched();
    }
    pub fn apply_slice(&mut self, s: Slice) {
        // Its label may have moved it from one Service to another: both change.
        self.forget_slice(&s.key);
        let group = slice_group(&s);
        let list = self.slices_by_group.entry(group.clone()).or_default();
        if let Err(at) = list.binary_search(&s.key) {
            list.reserve_exact(1);
            list.insert(at, s.key.clone());
        }
        self.changed.mark(group);
        self.slices.insert(s.key.clone(), s);
        self.slice_events += 1;
        self.touched();
    }
    pub fn delete_slice(&mut self, key: &ObjectKey) {
        self.forget_slice(key);
        self.slice_events += 1;
        self.touched();
    }
    pub fn reset_slices(&mut self, all: Vec<Slice>) {
        self.slices = all.into_iter().map(|s| (s.key.clone(), s)).collect();
        self.slices_by_group.clear();
        // In key order, so each list is sorted as it grows.
        for (k, s) in &self.slices {
            let list = self.slices_by_group.entry(slice_group(s)).or_default();
            list.reserve_exact(1);
            list.push(k.clone());
        }
        self.changed = Changed::All;
        self.slices_listed = true;
        self.slice_events += 1;
        self.touched();
    }

    pub fn apply_blocklist(&mut self, b: SourceBlocklist) {
        self.blocklists.insert(b.metadata.name.clone().unwrap_or_default(), b);
        self.touched();
    }
    pub fn delete_blocklist(&mut self, name: &str) {
        self.blocklists.remove(name);
        self.touched();
    }
    pub fn reset_blocklists(&mut self, all: Vec<SourceBlocklist>) {
        self.blocklists = all.into_iter().map(|b| (b.metadata.name.clone().unwrap_or_default(), b)).collect();
        self.touched();
    }

    /// The first plan waits for the Node too: its zone decides which topology hints apply, and
    /// programming every endpoint first, then narrowing, would move connections for nothing.
    pub fn expect_node(&mut self) {
        self.node_pending = true;
    }

    /// The Node as last seen (`NodeFacts::GONE` when it does not exist). Returns whether anything
    /// the agent uses changed; only then is it a change to plan.
    pub fn set_node(&mut self, facts: crate::NodeFacts) -> bool {
        self.node_pending = false;
        if self.node.as_ref() == Some(&facts) {
            return false;
        }
        self.node = Some(facts);
        self.touched();
        true
    }

    pub fn set_proxy_config(&mut self, config: Option<ProxyConfig>) {
        self.proxy_config = config;
        self.touched();
    }

    fn forget_slice(&mut self, k: &ObjectKey) {
        if let Some(old) = self.slices.remove(k) {
            let group = slice_group(&old);
            if let Some(set) = self.slices_by_group.get_mut(&group) {
                set.retain(|s| s != k);
                if set.is_empty() {
                    self.slices_by_group.remove(&group);
                }
            }
            self.changed.mark(group);
        }
    }

    /// What changed since the last call; the planner takes it with the objects.
    pub fn take_changed(&mut self) -> Changed {
        std::mem::replace(&mut self.changed, Changed::Groups(BTreeSet::new()))
    }

    /// True once every watched kind has delivered a complete list.
    pub fn complete(&self) -> bool {
        self.services_listed && self.slices_listed && !self.node_pending
    }

    /// Marks everything up to now as planned; returns when the oldest pending change arrived.
    pub fn take_pending(&mut self) -> Option<Instant> {
        self.pending_since.take()
    }
}

impl PlanInputs for Index {
    fn service(&self, group: &GroupKey) -> Option<&Service> {
        self.services.get(group)
    }
    fn slices(&self, group: &GroupKey) -> Vec<&Slice> {
        self.slices_by_group.get(group).into_iter().flatten().filter_map(|k| self.slices.get(k)).collect()
    }
    fn groups(&self) -> BTreeSet<GroupKey> {
        self.services.keys().chain(self.slices_by_group.keys()).cloned().collect()
    }
}

/// The index shared between the sources and the planner, with a wake-up for the planner.
#[derive(Clone, Default)]
pub struct Shared {
    pub index: Arc<Mutex<Index>>,
    pub changed: Arc<Notify>,
}

impl Shared {
    pub fn update(&self, f: impl FnOnce(&mut Index)) {
        f(&mut self.index.lock().expect("index lock"));
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    use k8s_openapi::api::core::v1 as api;
    use k8s_openapi::api::discovery::v1 as discovery;

    fn svc(ns: &str, name: &str) -> Service {
        Service::from_api(&api::Service {
            metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
            ..Default::default()
        })
    }
    fn k8s_slice(ns: &str, name: &str) -> discovery::EndpointSlice {
        discovery::EndpointSlice {
            metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
            address_type: "IPv4".into(),
            endpoints: vec![],
            ports: None,
        }
    }
    fn slice(ns: &str, name: &str) -> Slice {
        Slice::from_api(&k8s_slice(ns, name))
    }

    fn labelled(ns: &str, name: &str, service: &str) -> Slice {
        let mut s = k8s_slice(ns, name);
        s.metadata.labels = Some([("kubernetes.io/service-name".to_string(), service.to_string())].into());
        Slice::from_api(&s)
    }

    fn groups(c: Changed) -> Vec<(&'static str, String)> {
        match c {
            Changed::All => vec![("all", String::new())],
            Changed::Groups(g) => g.into_iter().map(|k| ("group", k.to_string())).collect(),
        }
    }

    #[test]
    fn changes_name_the_services_to_replan() {
        let mut i = Index::default();
        i.reset_services(vec![svc("a", "web"), svc("a", "db")]);
        i.reset_slices(vec![labelled("a", "web-1", "web")]);
        assert_eq!(groups(i.take_changed()), vec![("all", String::new())]);
        assert_eq!(groups(i.take_changed()), vec![], "taken");
        // A slice relabelled from web to db changes both.
        i.apply_slice(labelled("a", "web-1", "db"));
        assert_eq!(groups(i.take_changed()), vec![("group", "a/db".into()), ("group", "a/web".into())]);
        assert_eq!(i.slices(&ObjectKey::new("a", "db")).len(), 1);
        assert!(i.slices(&ObjectKey::new("a", "web")).is_empty());
        i.delete_slice(&labelled("a", "web-1", "db").key);
        i.apply_service(svc("", "nons"));
        assert_eq!(groups(i.take_changed()), vec![("group", "a/db".into()), ("group", "default/nons".into())], "no namespace means default");
        assert!(i.groups().contains(&ObjectKey::new("a", "web")));
        assert!(!i.groups().iter().any(|k| k.name == "web-1"));
    }

    #[test]
    fn incomplete_until_both_kinds_are_listed() {
        let mut i = Index::default();
        i.apply_service(svc("a", "x"));
        assert!(!i.complete(), "a watch event is not a complete list");
        i.reset_services(vec![svc("a", "x")]);
        assert!(!i.complete());
        i.reset_slices(vec![]);
        assert!(i.complete());
    }

    #[test]
    fn waits_for_the_node_when_told_to_and_plans_only_its_changes() {
        let mut i = Index::default();
        i.expect_node();
        i.reset_services(vec![]);
        i.reset_slices(vec![]);
        assert!(!i.complete(), "the Node's zone is not known yet");
        let zoned = crate::NodeFacts { zone: Some("z1".into()), eligible: true };
        assert!(i.set_node(zoned.clone()));
        assert!(i.complete());
        let generation = i.generation;
        assert!(!i.set_node(zoned), "an update that changes nothing the agent uses");
        assert_eq!(i.generation, generation);
        assert!(i.set_node(crate::NodeFacts::GONE));
    }

    #[test]
    fn apply_delete_and_reset_replace_by_namespace_and_name() {
        let mut i = Index::default();
        i.apply_service(svc("a", "x"));
        i.apply_service(svc("b", "x"));
        i.apply_service(svc("a", "x"));
        assert_eq!(i.services.len(), 2);
        i.delete_service(&svc("a", "x").key);
        assert_eq!(i.services.keys().cloned().collect::<Vec<_>>(), vec![ObjectKey::new("b", "x")]);
        i.apply_slice(slice("a", "s1"));
        i.apply_slice(slice("a", "s2"));
        i.reset_slices(vec![slice("a", "s3")]);
        assert_eq!(i.slices.len(), 1, "a reset drops what the new list lacks");
        i.delete_slice(&slice("a", "s3").key);
        assert!(i.slices.is_empty());
    }

    #[test]
    fn pending_time_is_the_oldest_unplanned_change() {
        let mut i = Index::default();
        assert!(i.take_pending().is_none());
        i.apply_service(svc("a", "x"));
        let first = i.pending_since.unwrap();
        i.apply_service(svc("a", "y"));
        assert_eq!(i.take_pending(), Some(first));
        assert!(i.take_pending().is_none());
        let g = i.generation;
        i.delete_service(&svc("a", "y").key);
        assert_eq!(i.generation, g + 1);
    }
}
