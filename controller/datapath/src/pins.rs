//! Pinned maps across agent versions. The agent reuses every pinned map it finds, so the
//! programs it loads must find each map in the shape their object defines: an older or newer
//! build may have pinned one with another capacity (or, against the header's rule, another
//! layout under the same name), and the verifier would then judge the programs against the pinned
//! shape, or they would read entries laid out for another build. So before anything is loaded:
//! - a pin whose type, key size, value size or capacity differs from the objects' definition is
//!   replaced by a map of the right shape, its entries copied over when the key and value sizes
//!   match (as many as fit), else started empty; the old map lives on, unpinned, for the old
//!   programs still attached, until their links are swapped a moment later;
//! - a pin this build does not know (another build's `sluice_*_vN`) is removed, so a later
//!   downgrade or upgrade to that build starts it empty instead of serving entries a newer
//!   build left there.
//!
//! The shapes come from the embedded objects themselves, the one source of truth.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use aya::maps::{MapData, MapInfo};

/// What a map is, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl Shape {
    fn of_object(m: &aya_obj::Map) -> Shape {
        Shape { map_type: m.map_type(), key_size: m.key_size(), value_size: m.value_size(), max_entries: m.max_entries() }
    }
}

/// What happened to the pins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PinReport {
    /// (map, entries copied, entries that did not fit or could not be read as this build's)
    pub reshaped: Vec<(String, usize, usize)>,
    pub removed: Vec<String>,
}

/// Every pinned map of the embedded objects, by name, with its definition (at the capacity this
/// process loads it with, `loader::capacity`).
fn definitions() -> Result<BTreeMap<String, aya_obj::Map>, aya_obj::ParseError> {
    let mut out = BTreeMap::new();
    for object in [crate::SOCK_LB_OBJECT, crate::NODEPORT_OBJECT, crate::XDP_OBJECT, crate::XDP_WATCH_OBJECT] {
        for (name, mut map) in aya_obj::Object::parse(object)?.maps {
            if sluice_abi::ALL_MAPS.contains(&name.as_str()) {
                if let Some(size) = crate::loader::capacity(&name) {
                    map.set_max_entries(size);
                }
                out.insert(name, map);
            }
        }
    }
    Ok(out)
}

/// The shape each pinned map must have, from the objects.
pub fn expected_shapes() -> Result<BTreeMap<String, Shape>, aya_obj::ParseError> {
    Ok(definitions()?.iter().map(|(n, m)| (n.clone(), Shape::of_object(m))).collect())
}

/// The shape of the map pinned at `path`.
pub fn pinned_shape(path: &Path) -> Result<Shape, aya::maps::MapError> {
    let info = MapInfo::from_pin(path)?;
    Ok(Shape { map_type: info.map_type()? as u32, key_size: info.key_size(), value_size: info.value_size(), max_entries: info.max_entries() })
}

/// Maps replaced by `reconcile`, still held: the programs attached before the swap go on writing
/// them (new and changed conntrack entries) until their links are swapped, so what they wrote
/// meanwhile is brought over afterwards (`catch_up`). The conntrack tables among them are offered
/// to the new programs meanwhile (`offer_conntrack`), so that no packet between the swap and that
/// copy misses its flow.
#[derive(Default)]
pub struct Superseded(Vec<(String, MapData, Shape)>);

/// Where a replaced conntrack table is offered: (outer map, its slot, the table).
const PREVIOUS_SLOTS: [(&str, u32, &str); 3] = [
    (sluice_abi::MAP_CT_PREVIOUS, sluice_abi::CT_PREVIOUS_TCP, sluice_abi::MAP_CT),
    (sluice_abi::MAP_CT_PREVIOUS, sluice_abi::CT_PREVIOUS_OTHER, sluice_abi::MAP_CT_OTHER),
    (sluice_abi::MAP_CT_HANDSHAKE_PREVIOUS, 0, sluice_abi::MAP_CT_HANDSHAKE),
];

/// Where the replaced conntrack table `table` is offered: (outer map, slot).
pub fn previous_slot(table: &str) -> Option<(&'static str, u32)> {
    PREVIOUS_SLOTS.iter().find(|(_, _, t)| *t == table).map(|(outer, slot, _)| (*outer, *slot))
}

impl Superseded {
    /// Brings over what the old programs wrote since `reconcile`; call it once every link is
    /// swapped (nothing writes the old maps any more). A replaced conntrack table's entries that
    /// the new table lacks or holds otherwise are moved: the old programs kept changing entries
    /// after the copy (a flow closed, a client port reused for a new flow), so the old table's
    /// entry is the newer one, as `ct_take_over` in bpf/lib/conntrack.h has it. Other maps get
    /// the keys they lack (their entries are the agent's, unchanged since the copy). Returns the
    /// entries brought over.
    pub fn catch_up(&self, root: &Path) -> usize {
        let mut brought = 0;
        for (name, old, shape) in &self.0 {
            let Ok(new) = MapData::from_pin(root.join(name)) else { continue };
            brought += if previous_slot(name).is_some() {
                bring_over(old.fd().as_fd(), new.fd().as_fd(), *shape, Bring::Move)
            } else {
                copy_missing(old.fd().as_fd(), new.fd().as_fd(), *shape)
            };
        }
        brought
    }

    /// Puts the replaced conntrack tables where the new programs look when a lookup misses (see
    /// SLUICE_CT_PREVIOUS_* in sluice_abi.h): call it after the new objects are loaded (they
    /// create the outer maps) and before their links are swapped; `release_previous_conntrack`
    /// empties the slots once `catch_up` has run after the swap. Returns the tables offered.
    pub fn offer_conntrack(&self, root: &Path) -> Result<usize, String> {
        let mut offered = 0;
        for (name, old, _) in &self.0 {
            let Some((outer, slot)) = previous_slot(name) else { continue };
            let path = root.join(outer);
            let outer = MapData::from_pin(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
            let fd = old.fd().as_fd().as_raw_fd() as u32;
            crate::sys::map_update(outer.fd().as_fd(), &slot.to_ne_bytes(), &fd.to_ne_bytes())
                .map_err(|e| format!("offering the replaced {name} to the new programs: {e}"))?;
            offered += 1;
        }
        Ok(offered)
    }
}

/// Copies the keys of `from` that `to` lacks (both of `shape`'s key and value sizes). A key that
/// vanishes meanwhile, or does not fit, is skipped.
fn copy_missing(from: BorrowedFd<'_>, to: BorrowedFd<'_>, shape: Shape) -> usize {
    let (k, v) = (shape.key_size as usize, shape.value_size as usize);
    let mut added = 0;
    for key in crate::sys::map_keys(from, k).unwrap_or_default() {
        if matches!(crate::sys::map_lookup(to, &key, v), Ok(None))
            && let Ok(Some(value)) = crate::sys::map_lookup(from, &key, v)
            && crate::sys::map_update(to, &key, &value).is_ok()
        {
            added += 1;
        }
    }
    added
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bring {
    /// Taken out of the old table first: a packet that moves the entry meanwhile (the programs
    /// do, on a lookup) keeps what it wrote after, instead of having it overwritten with the
    /// value read before.
    Move,
    /// The old table left as it is, for programs that may still use it.
    Copy,
}

/// Brings the entries of a replaced conntrack table `from` that `to` lacks or holds otherwise
/// into `to`. Returns how many.
fn bring_over(from: BorrowedFd<'_>, to: BorrowedFd<'_>, shape: Shape, how: Bring) -> usize {
    let (k, v) = (shape.key_size as usize, shape.value_size as usize);
    let mut brought = 0;
    for key in crate::sys::map_keys(from, k).unwrap_or_default() {
        let Ok(Some(value)) = crate::sys::map_lookup(from, &key, v) else { continue };
        if matches!(crate::sys::map_lookup(to, &key, v), Ok(Some(ref current)) if *current == value) {
            continue;
        }
        if how == Bring::Move && !matches!(crate::sys::map_remove(from, &key), Ok(true)) {
            continue; // a packet moved it meanwhile
        }
        if crate::sys::map_update(to, &key, &value).is_ok() {
            brought += 1;
        }
    }
    brought
}

/// Empties the slots where new programs found the conntrack tables they replaced: once nothing
/// writes those tables any more and what they hold is in the new ones. With `copy_first`, brings
/// over first what the new tables lack or hold otherwise (for slots an agent filled and died
/// before emptying: its programs may have been swapped in or not, so the old tables are copied,
/// not emptied, for old programs still using them). Returns the entries brought over; without
/// outer maps (no north-south programs were ever loaded here) there is nothing to do.
pub fn release_previous_conntrack(root: &Path, copy_first: bool) -> Result<usize, String> {
    let mut copied = 0;
    for (outer, slot, table) in PREVIOUS_SLOTS {
        let path = root.join(outer);
        let Ok(outer) = MapData::from_pin(&path) else { continue };
        let id = match crate::sys::map_lookup(outer.fd().as_fd(), &slot.to_ne_bytes(), 4) {
            Ok(Some(id)) => u32::from_ne_bytes(id.try_into().expect("4 bytes")),
            Ok(None) => continue,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        if copy_first
            && let Ok(previous) = crate::sys::map_fd_by_id(id)
            && let Ok(current) = MapData::from_pin(root.join(table))
            && let Ok(shape) = pinned_shape(&root.join(table))
        {
            copied += bring_over(previous.as_fd(), current.fd().as_fd(), shape, Bring::Copy);
        }
        crate::sys::map_delete(outer.fd().as_fd(), &slot.to_ne_bytes()).map_err(|e| format!("emptying slot {slot} of {}: {e}", path.display()))?;
    }
    Ok(copied)
}

/// Brings the pins under `root` to this build's shapes, as the module says. Call it before the
/// objects are loaded.
pub fn reconcile(root: &Path) -> Result<(PinReport, Superseded), String> {
    let mut report = PinReport::default();
    let mut superseded = Superseded::default();
    let definitions = definitions().map_err(|e| format!("reading the embedded objects' maps: {e}"))?;
    let Ok(entries) = std::fs::read_dir(root) else { return Ok((report, superseded)) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_file()) || !is_map_pin_name(&name) {
            continue;
        }
        let path = entry.path();
        let Some(def) = definitions.get(&name) else {
            std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
            report.removed.push(name);
            continue;
        };
        let want = Shape::of_object(def);
        let have = pinned_shape(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        if have != want {
            let (old, copied, lost) = reshape(&path, &name, def, have, want)?;
            tracing::warn!(map = name, ?have, ?want, copied, lost, "a pinned map had another shape (another build's, or other mapSizes): replaced, its entries copied where they fit");
            if copyable(have, want) {
                superseded.0.push((name.clone(), old, want));
            }
            report.reshaped.push((name, copied, lost));
        }
    }
    Ok((report, superseded))
}

/// A map of `def`'s shape, outside any object: without the object's BTF, which the kernel would
/// need loaded to accept the definition's BTF type ids (none of these maps needs BTF to work).
pub fn create_map(def: &aya_obj::Map, name: &str) -> Result<MapData, aya::maps::MapError> {
    let mut def = def.clone();
    if let aya_obj::Map::Btf(m) = &mut def {
        m.def.btf_key_type_id = 0;
        m.def.btf_value_type_id = 0;
    }
    MapData::create(def, name, None)
}

/// Whether entries read with one shape mean the same in the other: only the plain key/value
/// maps, of one key and value size. Per-CPU values are laid out per possible CPU (such maps,
/// the counters, start again from zero), and a ring buffer has no entries to walk.
fn copyable(have: Shape, want: Shape) -> bool {
    use aya_obj::generated::bpf_map_type::*;
    let plain = |t: u32| [BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LPM_TRIE].iter().any(|k| *k as u32 == t);
    have.key_size == want.key_size && have.value_size == want.value_size && plain(have.map_type) && plain(want.map_type)
}

/// `sluice_<name>_v<N>`: the pins this or another build of the agent makes for its maps.
fn is_map_pin_name(name: &str) -> bool {
    name.starts_with("sluice_") && name.rsplit_once("_v").is_some_and(|(_, v)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// Creates a map of `want`'s shape, copies what it can from the pinned one, and pins it in its
/// place. Returns the old map, and (copied, not copied).
fn reshape(path: &Path, name: &str, def: &aya_obj::Map, have: Shape, want: Shape) -> Result<(MapData, usize, usize), String> {
    let old = MapData::from_pin(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let new = create_map(def, name).map_err(|e| format!("creating {name}: {e}"))?;
    let (mut copied, mut lost) = (0, 0);
    if copyable(have, want) {
        let keys = crate::sys::map_keys(old.fd().as_fd(), have.key_size as usize).map_err(|e| format!("reading {name}: {e}"))?;
        for key in keys {
            match crate::sys::map_lookup(old.fd().as_fd(), &key, have.value_size as usize) {
                Ok(Some(value)) if crate::sys::map_update(new.fd().as_fd(), &key, &value).is_ok() => copied += 1,
                Ok(None) => {}
                _ => lost += 1,
            }
        }
    } else if copyable(have, have) {
        lost = crate::sys::map_keys(old.fd().as_fd(), have.key_size as usize).map(|k| k.len()).unwrap_or(0);
    }
    // Unpinning does not free the old map: the programs still attached hold it until their
    // links are swapped to the new ones, which will find the new map here.
    std::fs::remove_file(path).map_err(|e| format!("unpinning {}: {e}", path.display()))?;
    new.pin(path).map_err(|e| format!("pinning {}: {e}", path.display()))?;
    Ok((old, copied, lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_of_any_build_are_recognised_and_nothing_else() {
        for n in ["sluice_svc_v1", "sluice_frag4_v1", "sluice_frag_v2", "sluice_netns_addrs_v12"] {
            assert!(is_map_pin_name(n), "{n}");
        }
        for n in ["links", "sluice_svc", "sluice_svc_v", "sluice_svc_vx", "other_v1", "sluice_links_v1x"] {
            assert!(!is_map_pin_name(n), "{n}");
        }
    }

    #[test]
    fn only_plain_key_value_maps_of_one_layout_are_copied() {
        use aya_obj::generated::bpf_map_type::*;
        let shape = |t: aya_obj::generated::bpf_map_type, value_size| Shape { map_type: t as u32, key_size: 4, value_size, max_entries: 16 };
        assert!(copyable(shape(BPF_MAP_TYPE_LRU_HASH, 8), shape(BPF_MAP_TYPE_LRU_HASH, 8)));
        assert!(copyable(shape(BPF_MAP_TYPE_HASH, 8), shape(BPF_MAP_TYPE_LRU_HASH, 8)));
        assert!(!copyable(shape(BPF_MAP_TYPE_LRU_HASH, 8), shape(BPF_MAP_TYPE_LRU_HASH, 16)), "another layout");
        // A ring buffer has no keys to walk (reading it would fail the agent's start), and
        // per-CPU values are laid out per CPU.
        assert!(!copyable(shape(BPF_MAP_TYPE_RINGBUF, 0), shape(BPF_MAP_TYPE_RINGBUF, 0)));
        assert!(!copyable(shape(BPF_MAP_TYPE_PERCPU_ARRAY, 8), shape(BPF_MAP_TYPE_PERCPU_ARRAY, 8)));
    }

    #[test]
    fn every_pinned_map_is_defined_by_an_object_and_the_objects_agree() {
        let shapes = expected_shapes().unwrap();
        for name in sluice_abi::ALL_MAPS {
            assert!(shapes.contains_key(name), "{name} is in ALL_MAPS but no object defines it");
        }
        // The same map in two objects must have one shape (the first definition would win).
        let mut seen: BTreeMap<String, Shape> = BTreeMap::new();
        for object in [crate::SOCK_LB_OBJECT, crate::NODEPORT_OBJECT, crate::XDP_OBJECT, crate::XDP_WATCH_OBJECT] {
            for (name, map) in aya_obj::Object::parse(object).unwrap().maps {
                if let Some(s) = seen.insert(name.clone(), Shape::of_object(&map)) {
                    assert_eq!(s, Shape::of_object(&map), "{name} differs between objects");
                }
            }
        }
    }
}
