//! The one trait all map writes go through. `BpfMaps` is the kernel; `FakeMaps` and
//! `FaultyMaps` let the reconciler be tested without privileges, including partial failure.

use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashMap, Map, MapData};
use sluice_abi::{
    self as abi, Addr, Backend, BlockKey, BlockValue, FrontendAddrValue, FrontendName, MaglevKey, MaglevTable, NodePortKey, RevNatKey, RevNatValue,
    SrcRangeData, SrcRangeKey, SvcKey, SvcValue,
};
use sluice_core::LbState;

/// One write to one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutBackend(u32, Backend),
    PutRevNat(u32, RevNatValue),
    PutName(u32, FrontendName),
    PutSrcRange(SrcRangeKey),
    PutLbAddr(Addr, FrontendAddrValue),
    PutNodePort(NodePortKey),
    PutService(SvcKey, SvcValue),
    PutBlock(BlockKey, BlockValue),
    DelBlock(BlockKey),
    PutMaglev(MaglevKey, Box<MaglevTable>),
    DelMaglev(MaglevKey),
    DelService(SvcKey),
    DelLbAddr(Addr),
    DelNodePort(NodePortKey),
    DelSrcRange(SrcRangeKey),
    DelRevNat(u32),
    DelName(u32),
    DelBackend(u32),
}

impl Op {
    /// Mirrors the op onto an in-memory state, as the kernel map would change.
    pub fn apply_to(&self, state: &mut LbState) {
        match self {
            Op::PutBackend(id, b) => {
                state.backends.insert(*id, *b);
            }
            Op::PutRevNat(id, r) => {
                state.revnat.insert(*id, *r);
            }
            Op::PutName(id, n) => {
                state.names.insert(*id, *n);
            }
            Op::PutService(k, v) => {
                state.services.insert(*k, *v);
            }
            Op::DelService(k) => {
                state.services.remove(k);
            }
            Op::DelRevNat(id) => {
                state.revnat.remove(id);
            }
            Op::DelName(id) => {
                state.names.remove(id);
            }
            Op::DelBackend(id) => {
                state.backends.remove(id);
            }
            Op::PutSrcRange(k) => {
                state.src_ranges.insert(*k);
            }
            Op::DelSrcRange(k) => {
                state.src_ranges.remove(k);
            }
            Op::PutLbAddr(a, v) => {
                state.lb_addrs.insert(*a, *v);
            }
            Op::DelLbAddr(a) => {
                state.lb_addrs.remove(a);
            }
            Op::PutNodePort(k) => {
                state.nodeports.insert(*k);
            }
            Op::DelNodePort(k) => {
                state.nodeports.remove(k);
            }
            Op::PutBlock(k, v) => {
                state.blocklist.insert(*k, *v);
            }
            Op::DelBlock(k) => {
                state.blocklist.remove(k);
            }
            Op::PutMaglev(k, t) => {
                state.maglev.insert(*k, **t);
            }
            Op::DelMaglev(k) => {
                state.maglev.remove(k);
            }
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(
            self,
            Op::DelService(_)
                | Op::DelBlock(_)
                | Op::DelMaglev(_)
                | Op::DelLbAddr(_)
                | Op::DelNodePort(_)
                | Op::DelSrcRange(_)
                | Op::DelRevNat(_)
                | Op::DelName(_)
                | Op::DelBackend(_)
        )
    }
}

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
    #[error("injected failure at op {0}")]
    Injected(usize),
}

pub trait LbMaps {
    fn apply(&mut self, op: &Op) -> Result<(), MapError>;
    /// Everything the maps hold now.
    fn dump(&self) -> Result<LbState, MapError>;
}

/// The pinned kernel maps.
pub struct BpfMaps {
    services: HashMap<MapData, SvcKey, SvcValue>,
    backends: HashMap<MapData, u32, Backend>,
    revnat: HashMap<MapData, RevNatKey, RevNatValue>,
    names: HashMap<MapData, RevNatKey, FrontendName>,
    src_ranges: LpmTrie<MapData, SrcRangeData, u8>,
    lb_addrs: HashMap<MapData, Addr, FrontendAddrValue>,
    nodeports: HashMap<MapData, NodePortKey, u8>,
    blocklist: LpmTrie<MapData, Addr, BlockValue>,
    maglev: HashMap<MapData, MaglevKey, MaglevTable>,
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

impl BpfMaps {
    /// Opens the maps pinned under `root` (by the agent's loader).
    pub fn open(root: &Path) -> Result<Self, MapError> {
        Ok(BpfMaps {
            services: open_hash(root, abi::MAP_SERVICES)?,
            backends: open_hash(root, abi::MAP_BACKENDS)?,
            revnat: open_hash(root, abi::MAP_REVNAT)?,
            names: open_hash(root, abi::MAP_NAMES)?,
            src_ranges: {
                let map = open_pinned(root, abi::MAP_SRC_RANGES)?;
                LpmTrie::try_from(map).map_err(|source| MapError::Open { path: root.join(abi::MAP_SRC_RANGES), source })?
            },
            lb_addrs: open_hash(root, abi::MAP_LB_ADDRS)?,
            nodeports: open_hash(root, abi::MAP_NODEPORTS)?,
            blocklist: {
                let map = open_pinned(root, abi::MAP_BLOCKLIST)?;
                LpmTrie::try_from(map).map_err(|source| MapError::Open { path: root.join(abi::MAP_BLOCKLIST), source })?
            },
            maglev: open_hash(root, abi::MAP_MAGLEV)?,
        })
    }
}

fn kernel(map: &'static str, op: &Op) -> impl FnOnce(aya::maps::MapError) -> MapError {
    let op = format!("{op:?}");
    move |source| MapError::Kernel { map, op, source }
}

fn dump_hash<K: aya::Pod + Ord, V: aya::Pod, O: Ord>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
    key: impl Fn(K) -> O,
) -> Result<std::collections::BTreeMap<O, V>, MapError> {
    let mut out = std::collections::BTreeMap::new();
    for item in map.iter() {
        let (k, v) = item.map_err(|source| MapError::Kernel { map: name, op: "iterate".into(), source })?;
        out.insert(key(k), v);
    }
    Ok(out)
}

impl LbMaps for BpfMaps {
    fn apply(&mut self, op: &Op) -> Result<(), MapError> {
        match op {
            Op::PutBackend(id, b) => self.backends.insert(id, b, 0).map_err(kernel(abi::MAP_BACKENDS, op)),
            Op::PutRevNat(id, r) => self.revnat.insert(RevNatKey { id: *id }, r, 0).map_err(kernel(abi::MAP_REVNAT, op)),
            Op::PutName(id, n) => self.names.insert(RevNatKey { id: *id }, n, 0).map_err(kernel(abi::MAP_NAMES, op)),
            Op::PutService(k, v) => self.services.insert(k, v, 0).map_err(kernel(abi::MAP_SERVICES, op)),
            Op::DelService(k) => ignore_missing(self.services.remove(k)).map_err(kernel(abi::MAP_SERVICES, op)),
            Op::DelRevNat(id) => ignore_missing(self.revnat.remove(&RevNatKey { id: *id })).map_err(kernel(abi::MAP_REVNAT, op)),
            Op::DelName(id) => ignore_missing(self.names.remove(&RevNatKey { id: *id })).map_err(kernel(abi::MAP_NAMES, op)),
            Op::DelBackend(id) => ignore_missing(self.backends.remove(id)).map_err(kernel(abi::MAP_BACKENDS, op)),
            Op::PutSrcRange(k) => self.src_ranges.insert(&LpmKey::new(k.prefixlen, k.data()), 1, 0).map_err(kernel(abi::MAP_SRC_RANGES, op)),
            Op::DelSrcRange(k) => ignore_missing(self.src_ranges.remove(&LpmKey::new(k.prefixlen, k.data()))).map_err(kernel(abi::MAP_SRC_RANGES, op)),
            Op::PutLbAddr(a, v) => self.lb_addrs.insert(a, v, 0).map_err(kernel(abi::MAP_LB_ADDRS, op)),
            Op::DelLbAddr(a) => ignore_missing(self.lb_addrs.remove(a)).map_err(kernel(abi::MAP_LB_ADDRS, op)),
            Op::PutNodePort(k) => self.nodeports.insert(k, 1, 0).map_err(kernel(abi::MAP_NODEPORTS, op)),
            Op::DelNodePort(k) => ignore_missing(self.nodeports.remove(k)).map_err(kernel(abi::MAP_NODEPORTS, op)),
            Op::PutBlock(k, v) => self.blocklist.insert(&LpmKey::new(k.prefixlen, k.addr), v, 0).map_err(kernel(abi::MAP_BLOCKLIST, op)),
            Op::DelBlock(k) => ignore_missing(self.blocklist.remove(&LpmKey::new(k.prefixlen, k.addr))).map_err(kernel(abi::MAP_BLOCKLIST, op)),
            Op::PutMaglev(k, t) => self.maglev.insert(k, t.as_ref(), 0).map_err(kernel(abi::MAP_MAGLEV, op)),
            Op::DelMaglev(k) => ignore_missing(self.maglev.remove(k)).map_err(kernel(abi::MAP_MAGLEV, op)),
        }
    }

    fn dump(&self) -> Result<LbState, MapError> {
        Ok(LbState {
            services: dump_hash(&self.services, abi::MAP_SERVICES, |k| k)?,
            backends: dump_hash(&self.backends, abi::MAP_BACKENDS, |k| k)?,
            revnat: dump_hash(&self.revnat, abi::MAP_REVNAT, |k: RevNatKey| k.id)?,
            names: dump_hash(&self.names, abi::MAP_NAMES, |k: RevNatKey| k.id)?,
            src_ranges: {
                let mut out = std::collections::BTreeSet::new();
                for item in self.src_ranges.iter() {
                    let (k, _) = item.map_err(|source| MapError::Kernel { map: abi::MAP_SRC_RANGES, op: "iterate".into(), source })?;
                    out.insert(SrcRangeKey::from_parts(k.prefix_len(), k.data()));
                }
                out
            },
            lb_addrs: dump_hash(&self.lb_addrs, abi::MAP_LB_ADDRS, |k| k)?,
            nodeports: dump_hash(&self.nodeports, abi::MAP_NODEPORTS, |k| k)?.into_keys().collect(),
            blocklist: {
                let mut out = std::collections::BTreeMap::new();
                for item in self.blocklist.iter() {
                    let (k, v) = item.map_err(|source| MapError::Kernel { map: abi::MAP_BLOCKLIST, op: "iterate".into(), source })?;
                    out.insert(BlockKey { prefixlen: k.prefix_len(), addr: k.data() }, v);
                }
                out
            },
            maglev: dump_hash(&self.maglev, abi::MAP_MAGLEV, |k| k)?,
        })
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
}

/// Fake maps that fail the `fail_at`-th op (0-based) once, like a full map or a transient
/// kernel error would.
#[derive(Debug, Default)]
pub struct FaultyMaps {
    pub inner: FakeMaps,
    pub fail_at: Option<usize>,
    seen: usize,
}

impl FaultyMaps {
    pub fn failing_at(n: usize) -> Self {
        FaultyMaps { fail_at: Some(n), ..Default::default() }
    }
}

impl LbMaps for FaultyMaps {
    fn apply(&mut self, op: &Op) -> Result<(), MapError> {
        let n = self.seen;
        self.seen += 1;
        if self.fail_at == Some(n) {
            self.fail_at = None;
            return Err(MapError::Injected(n));
        }
        self.inner.apply(op)
    }
    fn dump(&self) -> Result<LbState, MapError> {
        self.inner.dump()
    }
}
