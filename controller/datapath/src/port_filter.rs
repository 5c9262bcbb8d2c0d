//! The port filter (`struct sluice_port_filter`): the ports north-south flows can use on this
//! node, and the hashes of the addresses XDP drops unknown ports of, which let the tc and XDP
//! programs pass every other packet after reading a bit.
//!
//! Only ever grows: a port stays once added, so the flows of a frontend or backend that is gone
//! stay translated for as long as conntrack keeps them. A port is added before the map write
//! that makes it reachable (`learn`, called for every op), and the programs filter only once
//! `complete` has added what the maps and conntrack held when the agent started.

use std::path::Path;

use aya::maps::{Array, HashMap, MapData};
use sluice_abi::{self as abi, Backend, CtHandshake, CtKey, CtValue, PortFilter, SvcKey};
use sluice_core::{LbState, MapEntry, Op};

use crate::maps::{MapError, open_hash, open_pinned};

pub struct PortFilterMap {
    map: Array<MapData, PortFilter>,
    value: Box<PortFilter>,
}

fn kernel(op: &'static str) -> impl FnOnce(aya::maps::MapError) -> MapError {
    move |source| MapError::Kernel { map: abi::MAP_PORT_FILTER, op: op.into(), source }
}

/// The port a frontend header makes reachable.
fn add_frontend(k: &SvcKey, filter: &mut PortFilter) -> bool {
    k.slot == 0 && filter.frontend.insert(u16::from_be(k.port_be))
}

/// The port a backend on this node listens on.
fn add_backend(be: &Backend, filter: &mut PortFilter) -> bool {
    be.flags & abi::BACKEND_F_LOCAL != 0 && filter.local_backend.insert(u16::from_be(be.port_be))
}

/// The ports a conntrack entry's flow uses: its frontend's (forward entries are keyed by it),
/// and for a flow to a local backend (not SNATed), the backend's (its reverse entry's source).
fn ports_of_flow(key: &CtKey, value: &CtValue, filter: &mut PortFilter) {
    if key.dir == abi::CT_FORWARD {
        filter.frontend.insert(u16::from_be(key.dport_be));
    } else if value.flags & abi::CT_F_SNAT == 0 {
        filter.local_backend.insert(u16::from_be(key.sport_be));
    }
}

impl PortFilterMap {
    /// The filter pinned under `root`; None where the pins are from a build without one.
    pub fn open(root: &Path) -> Result<Option<Self>, MapError> {
        if !root.join(abi::MAP_PORT_FILTER).exists() {
            return Ok(None);
        }
        let map = open_pinned(root, abi::MAP_PORT_FILTER)?;
        let map = Array::try_from(map).map_err(|source| MapError::Open { path: root.join(abi::MAP_PORT_FILTER), source })?;
        let value = Box::new(map.get(&0, 0).map_err(kernel("read"))?);
        Ok(Some(PortFilterMap { map, value }))
    }

    pub fn value(&self) -> &PortFilter {
        &self.value
    }

    /// Adds the port `op` makes reachable, if any, to the kernel's filter before `op` is applied.
    pub fn learn(&mut self, op: &Op) -> Result<(), MapError> {
        let new = match op {
            Op::Put(MapEntry::Services(k, _)) => add_frontend(k, &mut self.value),
            Op::Put(MapEntry::Backends(_, be)) => add_backend(be, &mut self.value),
            Op::Put(MapEntry::LbAddrs(addr, _)) => self.value.lb_addr.insert(addr.hash16()),
            _ => false,
        };
        if new {
            self.write()?;
        }
        Ok(())
    }

    /// Once per filter: adds the ports of what the maps hold (`current`) and of every flow in
    /// the conntrack tables under `root`, then lets the programs filter. Whether it had to.
    pub fn complete(&mut self, current: &LbState, root: &Path) -> Result<bool, MapError> {
        if self.value.flags & abi::PORT_FILTER_F_COMPLETE != 0 {
            return Ok(false);
        }
        for k in current.services.keys() {
            add_frontend(k, &mut self.value);
        }
        for be in current.backends.values() {
            add_backend(be, &mut self.value);
        }
        for addr in current.lb_addrs.keys() {
            self.value.lb_addr.insert(addr.hash16());
        }
        for table in [abi::MAP_CT, abi::MAP_CT_OTHER] {
            let ct: HashMap<MapData, CtKey, CtValue> = open_hash(root, table)?;
            for (k, v) in ct.iter().filter_map(Result::ok) {
                ports_of_flow(&k, &v, &mut self.value);
            }
        }
        let handshakes: HashMap<MapData, CtKey, CtHandshake> = open_hash(root, abi::MAP_CT_HANDSHAKE)?;
        for (k, v) in handshakes.iter().filter_map(Result::ok) {
            ports_of_flow(&k, &v.ct, &mut self.value);
        }
        // The ports first, then the flag that makes the programs read them.
        self.write()?;
        self.value.flags |= abi::PORT_FILTER_F_COMPLETE;
        self.write()?;
        Ok(true)
    }

    fn write(&mut self) -> Result<(), MapError> {
        self.map.set(0, *self.value, 0).map_err(kernel("write"))
    }
}
