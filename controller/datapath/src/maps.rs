//! The one trait all map writes go through. `BpfMaps` is the kernel; `FakeMaps` and
//! `FaultyMaps` let the reconciler be tested without privileges, including partial failure.

use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashMap, Map, MapData};
use sluice_abi::{Addr, BlockKey, SrcRangeData, SrcRangeKey};
use sluice_core::{LbState, MapEntry, MapKey, Op, Touched};

use crate::port_filter::PortFilterMap;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("map {map}: {op} failed: {source}")]
    Kernel {
        map: &'static str,
        op: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("opening pinned map {path}: {source} (is the agent running, or has it run, with this --bpf-root?)")]
    Open {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{0} is not pinned (the loader pins every map the programs use: were they loaded from this build?)")]
    NotPinned(PathBuf),
    #[error("injected failure at op {0}")]
    Injected(usize),
}

pub trait LbMaps {
    fn apply(&mut self, op: &Op) -> Result<(), MapError>;
    /// Everything the maps hold now.
    fn dump(&self) -> Result<LbState, MapError>;
    /// What the maps hold now under these keys (of a map compared whole: all of it).
    fn read(&self, keys: &Touched) -> Result<LbState, MapError>;
}

pub(crate) fn open_pinned(root: &Path, name: &str) -> Result<Map, MapError> {
    let path = root.join(name);
    let data = MapData::from_pin(&path).map_err(|source| MapError::Open { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| MapError::Open { path, source })
}

/// A pinned hash map, plain or LRU (the datapath fills the LRU ones; userspace reads and prunes
/// them like any hash).
pub(crate) fn open_hash<K: aya::Pod, V: aya::Pod>(root: &Path, name: &str) -> Result<HashMap<MapData, K, V>, MapError> {
    let map = match open_pinned(root, name)? {
        Map::LruHashMap(d) => Map::HashMap(d),
        other => other,
    };
    HashMap::try_from(map).map_err(|source| MapError::Open { path: root.join(name), source })
}

/// The error of `op` on `map`; the op is described only when it failed (formatting every op
/// cost a cold start at 100,000 Services about a second).
fn kernel<'a>(map: &'static str, op: &'a Op) -> impl FnOnce(aya::maps::MapError) -> MapError + 'a {
    move |source| MapError::Kernel { map, op: format!("{op:?}"), source }
}

/// How one map's entries are read and written in the kernel.
trait KernelMap<K, V> {
    fn put(&mut self, key: &K, value: &V) -> Result<(), aya::maps::MapError>;
    fn del(&mut self, key: &K) -> Result<(), aya::maps::MapError>;
    fn entries(&self) -> Result<BTreeMap<K, V>, aya::maps::MapError>;
    /// The entries under `keys`.
    fn entries_of(&self, keys: &BTreeSet<K>) -> Result<BTreeMap<K, V>, aya::maps::MapError>;
}

impl<K: aya::Pod + Ord, V: aya::Pod> KernelMap<K, V> for HashMap<MapData, K, V> {
    fn put(&mut self, key: &K, value: &V) -> Result<(), aya::maps::MapError> {
        self.insert(key, value, 0)
    }
    fn del(&mut self, key: &K) -> Result<(), aya::maps::MapError> {
        self.remove(key)
    }
    fn entries(&self) -> Result<BTreeMap<K, V>, aya::maps::MapError> {
        self.iter().collect()
    }
    fn entries_of(&self, keys: &BTreeSet<K>) -> Result<BTreeMap<K, V>, aya::maps::MapError> {
        let mut found = BTreeMap::new();
        for k in keys {
            match self.get(k, 0) {
                Ok(v) => {
                    found.insert(*k, v);
                }
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }
}

/// A key that is an LPM trie key: a prefix length, then the data it applies to.
pub trait LpmKeyed: Sized {
    type Data: aya::Pod;
    fn split(&self) -> (u32, Self::Data);
    fn join(prefixlen: u32, data: Self::Data) -> Self;
}

impl LpmKeyed for SrcRangeKey {
    type Data = SrcRangeData;
    fn split(&self) -> (u32, SrcRangeData) {
        (self.prefixlen, self.data())
    }
    fn join(prefixlen: u32, data: SrcRangeData) -> Self {
        SrcRangeKey::from_parts(prefixlen, data)
    }
}

impl LpmKeyed for BlockKey {
    type Data = Addr;
    fn split(&self) -> (u32, Addr) {
        (self.prefixlen, self.addr)
    }
    fn join(prefixlen: u32, addr: Addr) -> Self {
        BlockKey { prefixlen, addr }
    }
}

struct Lpm<K: LpmKeyed, V>(LpmTrie<MapData, K::Data, V>);

impl<K: LpmKeyed, V: aya::Pod> Lpm<K, V> {
    fn open(root: &Path, name: &str) -> Result<Self, MapError> {
        let map = open_pinned(root, name)?;
        Ok(Lpm(LpmTrie::try_from(map).map_err(|source| MapError::Open { path: root.join(name), source })?))
    }
}

impl<K: LpmKeyed + Ord, V: aya::Pod> KernelMap<K, V> for Lpm<K, V> {
    fn put(&mut self, key: &K, value: &V) -> Result<(), aya::maps::MapError> {
        let (prefixlen, data) = key.split();
        self.0.insert(&LpmKey::new(prefixlen, data), value, 0)
    }
    fn del(&mut self, key: &K) -> Result<(), aya::maps::MapError> {
        let (prefixlen, data) = key.split();
        self.0.remove(&LpmKey::new(prefixlen, data))
    }
    fn entries(&self) -> Result<BTreeMap<K, V>, aya::maps::MapError> {
        self.0.iter().map(|item| item.map(|(k, v)| (K::join(k.prefix_len(), k.data()), v))).collect()
    }
    /// A trie's lookup matches the longest prefix, not the key: so the whole trie, filtered.
    fn entries_of(&self, keys: &BTreeSet<K>) -> Result<BTreeMap<K, V>, aya::maps::MapError> {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut all = self.entries()?;
        all.retain(|k, _| keys.contains(k));
        Ok(all)
    }
}

macro_rules! kernel_map_type {
    (hash, $key:ty, $value:ty) => { HashMap<MapData, $key, $value> };
    (lpm, $key:ty, $value:ty) => { Lpm<$key, $value> };
}

macro_rules! open_kernel_map {
    (hash, $root:expr, $name:expr) => {
        open_hash($root, $name)?
    };
    (lpm, $root:expr, $name:expr) => {
        Lpm::open($root, $name)?
    };
}

macro_rules! read_kernel_map {
    (touched, $map:expr, $keys:expr) => {
        $map.entries_of(&$keys)
    };
    (whole, $map:expr, $keys:expr) => {
        $map.entries()
    };
}

macro_rules! define_bpf_maps {
    ($($field:ident $variant:ident: $key:ty => $value:ty, $name:expr, $capacity:expr, $kind:ident, $touched:ident, $phase:expr;)*) => {
        /// The pinned kernel maps, one per entry of `sluice_core::for_each_lb_map!`.
        pub struct BpfMaps {
            $($field: kernel_map_type!($kind, $key, $value),)*
            ports: Option<PortFilterMap>,
        }

        impl BpfMaps {
            /// Opens the maps pinned under `root` (by the agent's loader).
            pub fn open(root: &Path) -> Result<Self, MapError> {
                Ok(BpfMaps { $($field: open_kernel_map!($kind, root, $name),)* ports: PortFilterMap::open(root)? })
            }
        }

        impl LbMaps for BpfMaps {
            fn apply(&mut self, op: &Op) -> Result<(), MapError> {
                if let Some(ports) = &mut self.ports {
                    ports.learn(op)?;
                }
                match op {
                    $(Op::Put(MapEntry::$variant(k, v)) => self.$field.put(k, v).map_err(kernel($name, op)),)*
                    $(Op::Del(MapKey::$variant(k)) => ignore_missing(self.$field.del(k)).map_err(kernel($name, op)),)*
                }
            }

            fn dump(&self) -> Result<LbState, MapError> {
                Ok(LbState {
                    $($field: self.$field.entries().map_err(|source| MapError::Kernel { map: $name, op: "iterate".into(), source })?,)*
                })
            }

            fn read(&self, keys: &Touched) -> Result<LbState, MapError> {
                Ok(LbState {
                    $($field: read_kernel_map!($touched, self.$field, keys.$field).map_err(|source| MapError::Kernel { map: $name, op: "read".into(), source })?,)*
                })
            }
        }
    };
}

sluice_core::for_each_lb_map!(define_bpf_maps);

impl BpfMaps {
    /// The port filter, once: see [`PortFilterMap::complete`]. Whether it had to be completed;
    /// an error where the pins have no filter.
    pub fn complete_port_filter(&mut self, current: &LbState, root: &Path) -> Result<bool, MapError> {
        match &mut self.ports {
            Some(ports) => ports.complete(current, root),
            None => Err(MapError::NotPinned(root.join(sluice_abi::MAP_PORT_FILTER))),
        }
    }

    pub fn port_filter(&self) -> Option<&sluice_abi::PortFilter> {
        self.ports.as_ref().map(PortFilterMap::value)
    }
}

/// Deleting what is already gone is success: the goal state is reached.
fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// In-memory maps that count what is written to them.
#[derive(Debug, Default, Clone)]
pub struct FakeMaps {
    pub state: LbState,
    pub writes: usize,
    /// Every op applied, in order, for tests that check ordering.
    pub log: Vec<Op>,
}

impl LbMaps for FakeMaps {
    fn apply(&mut self, op: &Op) -> Result<(), MapError> {
        op.apply_to(&mut self.state);
        self.writes += 1;
        self.log.push(op.clone());
        Ok(())
    }
    fn dump(&self) -> Result<LbState, MapError> {
        Ok(self.state.clone())
    }
    fn read(&self, keys: &Touched) -> Result<LbState, MapError> {
        Ok(self.state.restrict(keys))
    }
}

/// Fake maps that fail the `fail_at`-th op (0-based) once, like a transient kernel error would;
/// or, `persistent`, that op and every later one until `fail_at` is cleared, like a map the
/// kernel keeps refusing.
#[derive(Debug, Default)]
pub struct FaultyMaps {
    pub inner: FakeMaps,
    pub fail_at: Option<usize>,
    pub persistent: bool,
    seen: usize,
}

impl FaultyMaps {
    pub fn failing_at(n: usize) -> Self {
        FaultyMaps { fail_at: Some(n), ..Default::default() }
    }

    pub fn failing_from(n: usize) -> Self {
        FaultyMaps { fail_at: Some(n), persistent: true, ..Default::default() }
    }
}

impl LbMaps for FaultyMaps {
    fn apply(&mut self, op: &Op) -> Result<(), MapError> {
        let n = self.seen;
        self.seen += 1;
        if self.fail_at.is_some_and(|at| n == at || (self.persistent && n > at)) {
            if !self.persistent {
                self.fail_at = None;
            }
            return Err(MapError::Injected(n));
        }
        self.inner.apply(op)
    }
    fn dump(&self) -> Result<LbState, MapError> {
        self.inner.dump()
    }
    fn read(&self, keys: &Touched) -> Result<LbState, MapError> {
        self.inner.read(keys)
    }
}
