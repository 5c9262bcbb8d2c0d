//! The first sync of a cold start, into real kernel maps: N Services × E endpoints planned, then
//! written by the reconciler into maps pinned under a scratch bpffs directory, against the
//! kernel's own cost for the same number of writes (one BPF_MAP_UPDATE_ELEM each, timed on a map
//! of the services map's shape in the same run) and against the reconciler with maps that do
//! nothing (its diff and ordering alone). Root only; the scratch pins are removed at the end.
//!
//!     cargo bench -p sluice --bench first_sync [-- 10000 100000] [--endpoints 10] [--pool 150000]

#[path = "support/scale_args.rs"]
mod scale_args;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use sluice_core::model::{Service, ServiceObject, Slice, SliceObject};
use sluice_core::{Capacity, Ids, NodeContext, Planner};
use sluice_datapath::{BpfMaps, Reconciler, loader};
use scale_args::NullMaps;
use sluice_k8s::index::Index;


fn service(i: usize) -> Service {
    let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 1)) + i as u32);
    serde_json::from_value::<ServiceObject>(serde_json::json!({
        "metadata": {"name": format!("s{i}"), "namespace": "bench"},
        "spec": {"clusterIP": ip.to_string(), "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap()
    .into_model()
}

fn slice(i: usize, endpoints: usize, pool: usize) -> Slice {
    let eps: Vec<serde_json::Value> = (0..endpoints)
        .map(|j| {
            let k = (i * endpoints + j) % pool;
            let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 128, 0, 0)) + k as u32);
            serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})
        })
        .collect();
    serde_json::from_value::<SliceObject>(serde_json::json!({
        "metadata": {"name": format!("s{i}-x"), "namespace": "bench", "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "ports": [{"port": 8080}],
        "endpoints": eps,
    }))
    .unwrap()
    .into_model()
}

/// A scratch directory of pins, removed when dropped (a failed run included).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let root = PathBuf::from(format!("/sys/fs/bpf/sluice-bench-first-sync-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {} (root, and bpffs mounted at /sys/fs/bpf?): {e}", root.display()));
        Scratch(root)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one BPF_MAP_UPDATE_ELEM of the services map's shape costs this kernel: `count` new keys
/// written one by one into the (still empty) services map, then removed.
fn kernel_update_cost(root: &std::path::Path, count: usize) -> Duration {
    let data = MapData::from_pin(root.join(sluice_abi::MAP_SERVICES)).unwrap();
    let mut map: HashMap<MapData, sluice_abi::SvcKey, sluice_abi::SvcValue> = HashMap::try_from(Map::HashMap(data)).unwrap();
    let keys: Vec<sluice_abi::SvcKey> = (0..count)
        .map(|i| sluice_abi::SvcKey { addr: sluice_abi::Addr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32)), port_be: 99u16.to_be(), ..Default::default() })
        .collect();
    let value = sluice_abi::SvcValue::default();
    let t = Instant::now();
    for k in &keys {
        map.insert(k, value, 0).unwrap();
    }
    let took = t.elapsed();
    for k in &keys {
        map.remove(k).unwrap();
    }
    took
}

fn main() {
    let scale_args::ScaleArgs { scales, endpoints, pool } = scale_args::parse();
    let largest = *scales.iter().max().unwrap();
    // Every map sized for the largest scale, as mapSizes would be.
    let services = (largest * (endpoints + 1) + 4096).next_power_of_two();
    let frontends = (largest + 4096).min(sluice_abi::REV_NAT_ID_MAX as usize);
    let backends = (pool + 4096).min(sluice_core::ids::MAX_BACKEND_ID as usize);
    loader::set_capacities(
        [
            (sluice_abi::MAP_SERVICES, services as u32),
            (sluice_abi::MAP_REVNAT, frontends as u32),
            (sluice_abi::MAP_NAMES, frontends as u32),
            (sluice_abi::MAP_BACKENDS, backends as u32),
        ]
        .into_iter()
        .collect(),
    );
    let capacity = Capacity { services, backends, revnat: frontends, ..Capacity::default() };
    let node = NodeContext { node_name: Some("n1".into()), service_slots: services, ..NodeContext::default() };
    println!("Services × {endpoints} endpoints from {pool} pod addresses; the first sync into empty maps\n");
    println!("| Services | map writes | plan (s) | reconciler alone (s) | into kernel maps (s) | µs per write | kernel's own µs per write | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in scales {
        let mut index = Index::default();
        index.reset_services((0..n).map(service).collect());
        index.reset_slices((0..n).map(|i| slice(i, endpoints, pool)).collect());
        let mut planner = Planner::new(Ids::default());
        let t = Instant::now();
        let changed = index.take_changed();
        planner.plan(changed, &index, &node, capacity);
        let planned = t.elapsed();

        let t = Instant::now();
        let stats = Reconciler::from_maps(&NullMaps).unwrap().sync(&mut NullMaps, planner.desired()).unwrap();
        let alone = t.elapsed();
        let writes = stats.writes + stats.deletes;

        let scratch = Scratch::new();
        let root = scratch.0.clone();
        let _objects: Vec<_> = [sluice_datapath::SOCK_LB_OBJECT, sluice_datapath::NODEPORT_OBJECT, sluice_datapath::XDP_OBJECT]
            .iter()
            .map(|o| loader::load_object(&root, o).expect("the objects' maps are created"))
            .collect();
        let kernel = kernel_update_cost(&root, writes.min(200_000));
        let mut maps = BpfMaps::open(&root).unwrap();
        let mut rec = Reconciler::from_maps(&maps).unwrap();
        let t = Instant::now();
        rec.sync(&mut maps, planner.desired()).unwrap();
        let real = t.elapsed();
        drop(maps);
        drop(_objects);
        drop(scratch);

        let per = |d: Duration, count: usize| d.as_secs_f64() * 1e6 / count.max(1) as f64;
        let (us, kernel_us) = (per(real, writes), per(kernel, writes.min(200_000)));
        println!(
            "| {n} | {writes} | {:.2} | {:.2} | {:.2} | {us:.2} | {kernel_us:.2} | {:.1}× |",
            planned.as_secs_f64(),
            alone.as_secs_f64(),
            real.as_secs_f64(),
            us / kernel_us
        );
    }
}
