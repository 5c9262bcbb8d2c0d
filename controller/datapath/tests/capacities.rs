//! ProxyConfig mapSizes as the loader applies them, against the real kernel: pinned maps of the
//! built-in size are resized to the configured capacities with their entries, and the objects
//! load on them. (The capacities are process-wide, set once: this file is its own process.)
//! Needs root and bpffs; under CI=true a missing prerequisite fails the test.

use std::path::PathBuf;

use aya::maps::{HashMap, Map, MapData};
use sluice_abi::{self as abi, CtKey, CtValue};
use sluice_datapath::{loader, pins};

#[test]
fn configured_capacities_resize_the_pinned_maps_with_their_entries() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/sys/fs/bpf").is_dir() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "needs root and /sys/fs/bpf under CI=true");
        println!("not run: needs root and /sys/fs/bpf");
        return;
    }
    let root = PathBuf::from(format!("/sys/fs/bpf/sluice-capacities-test-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.clone());

    // A node that ran with the built-in sizes: its conntrack holds two flows.
    let mut ebpf = loader::load_object(&root, sluice_datapath::NODEPORT_OBJECT).unwrap();
    let mut ct: HashMap<MapData, CtKey, CtValue> = HashMap::try_from(Map::LruHashMap(MapData::from_pin(root.join(abi::MAP_CT)).unwrap())).unwrap();
    for port in [1000u16, 1001] {
        ct.insert(CtKey { sport_be: port.to_be(), proto: abi::IPPROTO_TCP, ..Default::default() }, CtValue::default(), 0).unwrap();
    }
    drop(ebpf.take_map(abi::MAP_CT));
    assert_eq!(pins::pinned_shape(&root.join(abi::MAP_CT)).unwrap().max_entries, abi::CT_MAX);

    assert!(loader::set_capacities([(abi::MAP_CT, abi::CT_MAX * 2), (abi::MAP_SERVICES, abi::SERVICES_MAX * 2)].into_iter().collect()));
    let (report, _) = pins::reconcile(&root).unwrap();
    let mut reshaped = report.reshaped.clone();
    reshaped.sort();
    assert_eq!(reshaped, vec![(abi::MAP_CT.to_string(), 2, 0), (abi::MAP_SERVICES.to_string(), 0, 0)]);
    loader::load_object(&root, sluice_datapath::NODEPORT_OBJECT).expect("the object loads with the configured capacities");
    assert_eq!(pins::pinned_shape(&root.join(abi::MAP_CT)).unwrap().max_entries, abi::CT_MAX * 2);
    assert_eq!(pins::pinned_shape(&root.join(abi::MAP_SERVICES)).unwrap().max_entries, abi::SERVICES_MAX * 2);
    let ct: HashMap<MapData, CtKey, CtValue> = HashMap::try_from(Map::LruHashMap(MapData::from_pin(root.join(abi::MAP_CT)).unwrap())).unwrap();
    assert_eq!(ct.keys().filter(Result::is_ok).count(), 2, "the flows came along");
}
