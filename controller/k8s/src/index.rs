//! The objects the planner reads, keyed by namespace/name. apply/delete/reset only: no I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use tokio::sync::Notify;

pub type Key = (String, String);

fn key<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

#[derive(Debug, Default)]
pub struct Index {
    pub services: BTreeMap<Key, Service>,
    pub slices: BTreeMap<Key, EndpointSlice>,
    services_listed: bool,
    slices_listed: bool,
    /// Bumped on every change so the planner can tell whether it is behind.
    pub generation: u64,
    /// When the oldest change not yet planned arrived; the agent reports programming latency from it.
    pub pending_since: Option<Instant>,
    /// SourceBlocklists by name. Not part of `complete()`: a cluster without the CRD still gets
    /// its Services programmed.
    pub blocklists: BTreeMap<String, sluice_core::blocklist::Blocklist>,
    /// The ProxyConfig named `default` (sluice.dev/v1alpha1), as the API returned it.
    pub proxy_config: Option<serde_json::Value>,
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
        self.services.insert(key(&s), s);
        self.service_events += 1;
        self.touched();
    }
    pub fn delete_service(&mut self, s: &Service) {
        self.services.remove(&key(s));
        self.service_events += 1;
        self.touched();
    }
    /// Replaces all Services at once (a complete list arrived) and marks them listed.
    pub fn reset_services(&mut self, all: Vec<Service>) {
        self.services = all.into_iter().map(|s| (key(&s), s)).collect();
        self.services_listed = true;
        self.service_events += 1;
        self.touched();
    }
    pub fn apply_slice(&mut self, s: EndpointSlice) {
        self.slices.insert(key(&s), s);
        self.slice_events += 1;
        self.touched();
    }
    pub fn delete_slice(&mut self, s: &EndpointSlice) {
        self.slices.remove(&key(s));
        self.slice_events += 1;
        self.touched();
    }
    pub fn reset_slices(&mut self, all: Vec<EndpointSlice>) {
        self.slices = all.into_iter().map(|s| (key(&s), s)).collect();
        self.slices_listed = true;
        self.slice_events += 1;
        self.touched();
    }

    pub fn apply_blocklist(&mut self, b: sluice_core::blocklist::Blocklist) {
        self.blocklists.insert(b.metadata.name.clone(), b);
        self.touched();
    }
    pub fn delete_blocklist(&mut self, name: &str) {
        self.blocklists.remove(name);
        self.touched();
    }
    pub fn reset_blocklists(&mut self, all: Vec<sluice_core::blocklist::Blocklist>) {
        self.blocklists = all.into_iter().map(|b| (b.metadata.name.clone(), b)).collect();
        self.touched();
    }

    pub fn set_proxy_config(&mut self, config: Option<serde_json::Value>) {
        self.proxy_config = config;
        self.touched();
    }

    /// True once every watched kind has delivered a complete list.
    pub fn complete(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    /// Marks everything up to now as planned; returns when the oldest pending change arrived.
    pub fn take_pending(&mut self) -> Option<Instant> {
        self.pending_since.take()
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

    fn svc(ns: &str, name: &str) -> Service {
        Service { metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() }, ..Default::default() }
    }
    fn slice(ns: &str, name: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
            address_type: "IPv4".into(),
            endpoints: vec![],
            ports: None,
        }
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
    fn apply_delete_and_reset_replace_by_namespace_and_name() {
        let mut i = Index::default();
        i.apply_service(svc("a", "x"));
        i.apply_service(svc("b", "x"));
        i.apply_service(svc("a", "x"));
        assert_eq!(i.services.len(), 2);
        i.delete_service(&svc("a", "x"));
        assert_eq!(i.services.keys().cloned().collect::<Vec<_>>(), vec![("b".to_string(), "x".to_string())]);
        i.apply_slice(slice("a", "s1"));
        i.apply_slice(slice("a", "s2"));
        i.reset_slices(vec![slice("a", "s3")]);
        assert_eq!(i.slices.len(), 1, "a reset drops what the new list lacks");
        i.delete_slice(&slice("a", "s3"));
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
        i.delete_service(&svc("a", "y"));
        assert_eq!(i.generation, g + 1);
    }
}
