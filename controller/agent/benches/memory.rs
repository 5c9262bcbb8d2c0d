//! Where the agent's memory goes at scale, in-process and without a kernel: live heap bytes
//! (a counting allocator) after each stage the agent runs through, with objects shaped as the
//! apiserver lists them (managedFields, uid, targetRef, ...), decoded from JSON pages of 5,000 as
//! the watcher does. `e2e/bench/memory` measures the real process (RSS) against a real apiserver;
//! this tells which part of it is which.
//!
//!     cargo bench -p sluice --bench memory [-- 10000 100000] [--endpoints 10] [--pool 150000]

#[path = "support/scale_args.rs"]
mod scale_args;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_core::model::{ServiceObject, SliceObject};
use sluice_core::{Capacity, Ids, NodeContext, Planner};
use sluice_datapath::Reconciler;
use scale_args::NullMaps;
use sluice_k8s::index::Index;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Maps that keep nothing: the kernel's memory is not the agent's.

const TIME: &str = "2026-12-01T12:00:00Z";

/// A Service as `kubectl create` leaves it and the apiserver lists it.
fn service(i: usize) -> String {
    let ip = if i < 65_000 { format!("10.96.{}.{}", i / 250, i % 250 + 1) } else { format!("10.97.{}.{}", (i - 65_000) / 250, i % 250 + 1) };
    format!(
        r#"{{"metadata":{{"name":"s-{i}","namespace":"default","uid":"6c0e4d2a-0000-4000-8000-{i:012}","resourceVersion":"{rv}","creationTimestamp":"{TIME}","labels":{{"bench":"scale"}},"managedFields":[{{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"{TIME}","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:bench":{{}}}}}},"f:spec":{{"f:internalTrafficPolicy":{{}},"f:ports":{{".":{{}},"k:{{\"port\":80,\"protocol\":\"TCP\"}}":{{".":{{}},"f:name":{{}},"f:port":{{}},"f:protocol":{{}},"f:targetPort":{{}}}}}},"f:sessionAffinity":{{}},"f:type":{{}}}}}}}}]}},"spec":{{"ports":[{{"name":"http","protocol":"TCP","port":80,"targetPort":8080}}],"clusterIP":"{ip}","clusterIPs":["{ip}"],"type":"ClusterIP","sessionAffinity":"None","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","internalTrafficPolicy":"Cluster"}},"status":{{"loadBalancer":{{}}}}}}"#,
        rv = 1000 + 2 * i
    )
}

/// Its EndpointSlice, endpoints written as the EndpointSlice controller writes them (what
/// `e2e/bench/gen.py --pool` creates).
fn slice(i: usize, endpoints: usize, pool: usize) -> String {
    let eps: Vec<String> = (0..endpoints)
        .map(|j| {
            let k = (i * endpoints + j) % pool;
            let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 128, 0, 0)) + k as u32);
            format!(
                r#"{{"addresses":["{ip}"],"conditions":{{"ready":true,"serving":true,"terminating":false}},"targetRef":{{"kind":"Pod","namespace":"default","name":"pod-{k}","uid":"00000000-0000-4000-8000-{k:012}"}},"nodeName":"node-{}","zone":"zone-{}"}}"#,
                k % 5000,
                k % 3
            )
        })
        .collect();
    format!(
        r#"{{"metadata":{{"name":"s-{i}-1","namespace":"default","uid":"7d1f5e3b-0000-4000-8000-{i:012}","resourceVersion":"{rv}","generation":1,"creationTimestamp":"{TIME}","labels":{{"bench":"scale","endpointslice.kubernetes.io/managed-by":"sluice-bench","kubernetes.io/service-name":"s-{i}"}},"managedFields":[{{"manager":"kubectl-create","operation":"Update","apiVersion":"discovery.k8s.io/v1","time":"{TIME}","fieldsType":"FieldsV1","fieldsV1":{{"f:addressType":{{}},"f:endpoints":{{}},"f:metadata":{{"f:labels":{{".":{{}},"f:bench":{{}},"f:endpointslice.kubernetes.io/managed-by":{{}},"f:kubernetes.io/service-name":{{}}}}}},"f:ports":{{}}}}}}]}},"addressType":"IPv4","endpoints":[{}],"ports":[{{"name":"http","protocol":"TCP","port":8080}}]}}"#,
        eps.join(","),
        rv = 1001 + 2 * i
    )
}

/// Lists `n` objects in pages of 5,000 as the watcher does: each page's JSON is read whole and
/// decoded, its items kept (as the index keeps them) until the list is complete.
fn list<K: serde::de::DeserializeOwned + Clone, Kept>(n: usize, kind: &str, item: impl Fn(usize) -> String, keep: impl Fn(K) -> Kept) -> Vec<Kept> {
    let mut all = Vec::with_capacity(0);
    for first in (0..n).step_by(5000) {
        let mut page = format!(r#"{{"kind":"{kind}","apiVersion":"v1","metadata":{{"resourceVersion":"99"}},"items":["#);
        for i in first..(first + 5000).min(n) {
            if i > first {
                page.push(',');
            }
            page.push_str(&item(i));
        }
        page.push_str("]}");
        let list: kube::core::ObjectList<K> = serde_json::from_slice(page.as_bytes()).expect("a page decodes");
        drop(page);
        all.extend(list.items.into_iter().map(&keep));
    }
    all
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn main() {
    let scale_args::ScaleArgs { scales, endpoints, pool } = scale_args::parse();
    let node =
        NodeContext { node_name: Some("n1".into()), node_ips: vec![], external_ip_cidrs: None, maglev: false, zone: None, nodeport_bind_protection: true, ..NodeContext::default() };
    let capacity = Capacity { services: 4 << 20, backends: 1 << 20, revnat: 1 << 20, ..Capacity::default() };
    println!("Services × {endpoints} endpoints from {pool} pod addresses; live heap (MiB) after each stage, bytes per Service in ()\n");
    println!("| Services | index | list peak | planner | reconciler (after the first sync) | one change | total | peak |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for n in scales {
        let base = live();
        reset_peak();
        let per = |bytes: usize| format!("{:.1} ({})", mib(bytes), bytes / n.max(1));
        let mut index = Index::default();
        index.expect_node();
        index.set_node(sluice_k8s::NodeFacts { zone: None, eligible: true });
        let services = list(n, "ServiceList", service, ServiceObject::into_model);
        index.reset_services(services);
        let slices = list(n, "EndpointSliceList", |i| slice(i, endpoints, pool), SliceObject::into_model);
        index.reset_slices(slices);
        let list_peak = peak() - base;
        let after_index = live();

        let mut planner = Planner::new(Ids::default());
        let changed = index.take_changed();
        planner.plan(changed, &index, &node, capacity);
        let after_plan = live();

        let mut maps = NullMaps;
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        rec.sync(&mut maps, planner.desired()).unwrap();
        let after_sync = live();

        // One endpoint change, planned and written as the agent does.
        let changed_slice = serde_json::from_str::<SliceObject>(&slice(n / 2, endpoints, pool + 1)).unwrap().into_model();
        index.apply_slice(changed_slice);
        let changed = index.take_changed();
        let report = planner.plan(changed, &index, &node, capacity);
        match &report.touched {
            Some(t) => rec.sync_touched(&mut maps, planner.desired(), t).unwrap(),
            None => rec.sync(&mut maps, planner.desired()).unwrap(),
        };
        drop(report);
        let after_change = live();
        println!(
            "| {n} | {} | {} | {} | {} | {:+.1} | {} | {:.1} |",
            per(after_index - base),
            per(list_peak),
            per(after_plan - after_index),
            per(after_sync - after_plan),
            (after_change as f64 - after_sync as f64) / 1_048_576.0,
            per(after_change - base),
            mib(peak() - base)
        );
        drop((index, planner, rec));
    }
}
