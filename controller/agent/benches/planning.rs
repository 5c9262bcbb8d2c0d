//! What one EndpointSlice change costs the agent at 1,000 / 10,000 / 50,000 Services: plan
//! (translate + lay out) and reconcile (diff + ordered writes), with incremental planning as the
//! agent runs it, against a full re-plan of every Service (what it did before) in the same run.
//! The maps are the in-memory fake, so this is the agent's CPU time alone, without the kernel's
//! map updates (three of them per change) or the API server.
//!
//!     cargo bench -p sluice --bench planning [-- 1000 10000]

use std::time::{Duration, Instant};

use sluice_core::model::{Service, ServiceObject, Slice, SliceObject};
use sluice_core::{Capacity, Ids, NodeContext, Planner, plan};
use sluice_datapath::{FakeMaps, Reconciler};
use sluice_k8s::index::Index;

fn service(i: usize) -> Service {
    serde_json::from_value::<ServiceObject>(serde_json::json!({
        "metadata": {"name": format!("s{i}"), "namespace": "bench"},
        "spec": {"clusterIP": format!("10.{}.{}.{}", 96 + i / 62_500, i / 250 % 250, i % 250 + 1), "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap()
    .into_model()
}

fn slice(i: usize, gen_: usize) -> Slice {
    // Valid addresses at every scale (an octet past 255 is a warning and no endpoint).
    let (a, b, c) = (100 + i / 62_500, i / 250 % 250, i % 250 + 1);
    serde_json::from_value::<SliceObject>(serde_json::json!({
        "metadata": {"name": format!("s{i}-x"), "namespace": "bench", "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        "endpoints": [
            {"addresses": [format!("10.{a}.{b}.{c}")], "conditions": {"ready": true}},
            {"addresses": [format!("11.{}.{b}.{c}", gen_ % 200)], "conditions": {"ready": true}},
        ],
    }))
    .unwrap()
    .into_model()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let scales: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.replace(['_', ','], "").parse().ok()).collect::<Vec<_>>().into_iter().collect();
    let scales = if scales.is_empty() { vec![1_000, 10_000, 50_000] } else { scales };
    const CHANGES: usize = 40;
    // Maps sized for the largest scale, as mapSizes would be: at the built-in sizes every change
    // past about 20,000 Services is planned in full (a map is over its capacity).
    let capacity = Capacity { services: 4 << 20, backends: 1 << 20, revnat: 1 << 20, ..Capacity::default() };
    let node = NodeContext { node_name: Some("n1".into()), node_ips: vec![], external_ip_cidrs: None, maglev: false, zone: None, nodeport_bind_protection: true, ..NodeContext::default() };
    println!(
        "| services | cold plan+sync (ms) | one change, full re-plan p50 / p99 (ms) | one change, incremental p50 / p99 (ms) | speed-up at p50 | writes per change |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for n in scales {
        let mut index = Index::default();
        index.reset_services((0..n).map(service).collect());
        index.reset_slices((0..n).map(|i| slice(i, 0)).collect());

        let mut planner = Planner::new(Ids::default());
        let mut maps = FakeMaps::default();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        let t = Instant::now();
        let changed = index.take_changed();
        planner.plan(changed, &index, &node, capacity);
        rec.sync(&mut maps, planner.desired()).unwrap();
        let cold = t.elapsed();

        let (mut full, mut inc) = (Vec::new(), Vec::new());
        let (mut writes, mut laid_out_in_full) = (0, 0);
        for c in 1..=CHANGES {
            let target = (c * 7919) % n;
            index.apply_slice(slice(target, c));
            // The old way: translate and lay out every Service.
            let t = Instant::now();
            let p_full = plan(index.services.values(), index.slices.values(), &node, &planner.ids(), capacity);
            let planned = t.elapsed();
            let mut shadow_maps = maps.clone();
            let mut shadow = Reconciler::from_maps(&shadow_maps).unwrap();
            let t = Instant::now();
            shadow.sync(&mut shadow_maps, &p_full.desired).unwrap();
            full.push(planned + t.elapsed());
            // The agent's way.
            let t = Instant::now();
            let changed = index.take_changed();
            let mut report = planner.plan(changed, &index, &node, capacity);
            // Over a map's capacity the planner lays everything out, so every node refuses the
            // same Services (the last ones by name) whatever order changes came in.
            if report.touched.is_none() {
                laid_out_in_full += 1;
            }
            let before = rec.before(&maps, report.touched.as_ref(), report.replaced.take()).unwrap();
            let stats = rec.write(&mut maps, planner.desired(), before, report.touched.as_ref()).unwrap();
            inc.push(t.elapsed());
            assert_eq!(planner.desired(), &p_full.desired, "incremental and full plans agree");
            assert_eq!(&maps.state, &p_full.desired, "the maps hold the plan");
            writes = writes.max(stats.writes + stats.deletes);
        }
        let (f50, f99, i50, i99) = (percentile(&mut full, 0.5), percentile(&mut full, 0.99), percentile(&mut inc, 0.5), percentile(&mut inc, 0.99));
        println!(
            "| {n} | {:.1} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1}× | {writes} |",
            ms(cold),
            ms(f50),
            ms(f99),
            ms(i50),
            ms(i99),
            f50.as_secs_f64() / i50.as_secs_f64()
        );
        if laid_out_in_full > 0 {
            println!("  ({laid_out_in_full} of {CHANGES} changes planned in full at {n}: a map is over its capacity)");
        }
    }
}
