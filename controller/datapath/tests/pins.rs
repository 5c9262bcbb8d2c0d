//! Pinned maps of another build, against the real kernel: a pin of another capacity is replaced
//! by one of this build's shape with its entries, one of another layout starts empty, one this
//! build does not know is removed, and the objects then load on the pins. Needs root and bpffs;
//! under CI=true a missing prerequisite fails the test.

use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData};
use sluice_abi::{self as abi, Addr, AffinityKey, AffinityValue};
use sluice_datapath::pins;

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let bpffs = Path::new("/sys/fs/bpf").is_dir();
    if root && bpffs {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "pins tests need root and /sys/fs/bpf under CI=true");
    println!("not run: needs root and /sys/fs/bpf");
    false
}

struct Root(PathBuf);

impl Root {
    /// A bpffs directory of this test's own, or None when the test cannot run (see can_run).
    fn new(test: &str) -> Option<Root> {
        if !can_run() {
            return None;
        }
        let root = Root(PathBuf::from(format!("/sys/fs/bpf/sluice-{test}-{}", std::process::id())));
        std::fs::create_dir_all(&root.0).unwrap();
        Some(root)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This build's definition of `name`, as the sock_lb object (or else the tc object) has it.
fn definition(name: &str) -> aya_obj::Map {
    let of = |object| aya_obj::Object::parse(object).unwrap().maps.remove(name);
    of(sluice_datapath::SOCK_LB_OBJECT).or_else(|| of(sluice_datapath::NODEPORT_OBJECT)).unwrap()
}

/// Pins a map like `name` with `tweak` applied to its definition, as another build would have.
fn pin_other_build(root: &Path, name: &str, tweak: impl FnOnce(&mut aya_obj::Map)) -> MapData {
    let mut def = definition(name);
    tweak(&mut def);
    let map = pins::create_map(&def, name).unwrap();
    map.pin(root.join(name)).unwrap();
    map
}

#[test]
fn another_build_s_pins_are_brought_to_this_build_s_shapes_before_loading() {
    let Some(root) = Root::new("pins-test") else { return };

    // An older build's affinity map held 1,000 entries; three clients are remembered in it.
    let old = pin_other_build(&root.0, abi::MAP_AFFINITY, |d| d.set_max_entries(1000));
    let mut old_affinity: HashMap<MapData, AffinityKey, AffinityValue> = HashMap::try_from(Map::LruHashMap(old)).unwrap();
    let client = |last: u8| AffinityKey { client: Addr::from(std::net::Ipv4Addr::new(198, 51, 100, last)), group: 7, set: 0, by_cookie: 0 };
    for last in 1..=3 {
        old_affinity.insert(client(last), AffinityValue { last_used_ns: 1, backend_id: u32::from(last), pad: 0 }, 0).unwrap();
    }
    // Another layout under the same name (against the rule, but possible): nothing to copy.
    pin_other_build(&root.0, abi::MAP_LB_ADDRS, |d| d.set_value_size(8));
    // A map this build does not have, and one that is already right.
    pin_other_build(&root.0, abi::MAP_HOST_NETNS, |_| {});
    std::fs::rename(root.0.join(abi::MAP_HOST_NETNS), root.0.join("sluice_retired_v3")).unwrap();
    pin_other_build(&root.0, abi::MAP_COUNTERS, |_| {});

    let (report, superseded) = pins::reconcile(&root.0).unwrap();
    assert_eq!(report.removed, vec!["sluice_retired_v3".to_string()]);
    let mut reshaped = report.reshaped.clone();
    reshaped.sort();
    assert_eq!(reshaped, vec![(abi::MAP_AFFINITY.to_string(), 3, 0), (abi::MAP_LB_ADDRS.to_string(), 0, 0)]);

    let shapes = pins::expected_shapes().unwrap();
    for name in [abi::MAP_AFFINITY, abi::MAP_LB_ADDRS, abi::MAP_COUNTERS] {
        assert_eq!(pins::pinned_shape(&root.0.join(name)).unwrap(), shapes[name], "{name}");
    }
    assert_eq!(shapes[abi::MAP_AFFINITY].max_entries, abi::AFFINITY_MAX);
    let affinity: HashMap<MapData, AffinityKey, AffinityValue> =
        HashMap::try_from(Map::LruHashMap(MapData::from_pin(root.0.join(abi::MAP_AFFINITY)).unwrap())).unwrap();
    let kept: Vec<u32> = (1..=3).map(|last| affinity.get(&client(last), 0).unwrap().backend_id).collect();
    assert_eq!(kept, vec![1, 2, 3], "the remembered clients came along");
    assert!(!root.0.join("sluice_retired_v3").exists());
    // What the old programs add until their links are swapped follows once they are.
    old_affinity.insert(client(4), AffinityValue { last_used_ns: 1, backend_id: 4, pad: 0 }, 0).unwrap();
    assert_eq!(superseded.catch_up(&root.0), 1);
    assert_eq!(affinity.get(&client(4), 0).unwrap().backend_id, 4);

    // Nothing left to do the second time, and the objects load on these pins.
    assert_eq!(pins::reconcile(&root.0).unwrap().0, pins::PinReport::default());
    sluice_datapath::loader::load_sock_lb(&root.0).expect("the socket-LB object loads on the reconciled pins");
}

/// A conntrack table of another size: the replaced one is offered to the programs loaded after
/// it (they create the slots); the catch-up after the swap moves what the old programs added or
/// changed meanwhile, and releasing the slots empties them.
#[test]
fn a_replaced_conntrack_table_is_offered_to_the_new_programs_and_released() {
    let Some(root) = Root::new("pins-ct-test") else { return };
    let old = pin_other_build(&root.0, abi::MAP_CT, |d| d.set_max_entries(4096));
    let mut old: HashMap<MapData, abi::CtKey, abi::CtValue> = HashMap::try_from(Map::LruHashMap(old)).unwrap();
    let key = |port: u16| abi::CtKey { sport_be: port.to_be(), proto: abi::IPPROTO_TCP, ..Default::default() };
    old.insert(key(1), abi::CtValue::default(), 0).unwrap();
    let (report, superseded) = pins::reconcile(&root.0).unwrap();
    assert_eq!(report.reshaped, vec![(abi::MAP_CT.to_string(), 1, 0)]);
    let _programs = sluice_datapath::loader::load_object(&root.0, sluice_datapath::NODEPORT_OBJECT).expect("the tc object loads");
    assert_eq!(superseded.offer_conntrack(&root.0).unwrap(), 1);
    // What the old programs add and change after the copy, before their links are swapped: the
    // old table's entry is the newer one, and is moved (a packet moving it meanwhile keeps it).
    old.insert(key(2), abi::CtValue::default(), 0).unwrap();
    let closed = abi::CtValue { flags: abi::CT_F_CLOSED, ..Default::default() };
    old.insert(key(1), closed, 0).unwrap();
    assert_eq!(superseded.catch_up(&root.0), 2);
    let new: HashMap<MapData, abi::CtKey, abi::CtValue> =
        HashMap::try_from(Map::LruHashMap(MapData::from_pin(root.0.join(abi::MAP_CT)).unwrap())).unwrap();
    assert_eq!(new.get(&key(1), 0).unwrap(), closed, "the copy made at reconcile is replaced");
    assert!(new.get(&key(2), 0).is_ok());
    assert!(old.get(&key(1), 0).is_err() && old.get(&key(2), 0).is_err(), "moved, not copied");
    assert_eq!(superseded.catch_up(&root.0), 0, "nothing left");
    // An agent that died before emptying the slots: the next one brings over what is newer
    // (copied: old programs may still use that table) and empties them.
    old.insert(key(3), closed, 0).unwrap();
    assert_eq!(pins::release_previous_conntrack(&root.0, true).unwrap(), 1);
    assert_eq!(new.get(&key(3), 0).unwrap(), closed);
    assert!(old.get(&key(3), 0).is_ok(), "copied, not moved");
    assert_eq!(pins::release_previous_conntrack(&root.0, true).unwrap(), 0, "the slots are empty");
}
