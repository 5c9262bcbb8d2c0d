//! The contents of the load-balancing maps as plain data: what the planner wants, what the
//! reconciler believes is in the kernel, and what the CLI reads back are all an [`LbState`].
//!
//! Every such map is described once, in [`for_each_lb_map!`]; the state, the set of touched
//! keys, the map operations, the usage table and the ordering of writes here, and the kernel
//! maps in sluice-datapath, are all generated from that one list. Adding a map is one line there
//! (plus its key and value types in sluice-abi).

use std::collections::{BTreeMap, BTreeSet};

/// The value of the maps that are sets (source ranges, NodePorts): the kernel stores a byte.
pub const PRESENT: u8 = 1;

/// Calls `$callback!` with every load-balancing map, one row each:
///
/// `field Variant: Key => Value, pinned name, capacity, kernel kind, touched, phase;`
///
/// - kernel kind: `hash` or `lpm` (an LPM trie whose key starts with its prefix length);
/// - touched: `touched` when an incremental sync compares only the keys a plan touched,
///   `whole` when it always compares the whole map;
/// - phase: when a key is written in a sync (a closure of the key). Puts go in ascending phase,
///   deletes in descending phase, so what a lookup follows (a backend, a rev-NAT id, a Maglev
///   table) exists before what points at it, and outlives it.
#[macro_export]
macro_rules! for_each_lb_map {
    ($callback:ident) => {
        $callback! {
            // Slots (phase 1) before the header (phase 3) whose count makes them reachable.
            services Services: $crate::abi::SvcKey => $crate::abi::SvcValue, $crate::abi::MAP_SERVICES, $crate::abi::SERVICES_MAX, hash, touched,
                |k: &$crate::abi::SvcKey| if k.slot == 0 { 3 } else { 1 };
            backends Backends: u32 => $crate::abi::Backend, $crate::abi::MAP_BACKENDS, $crate::abi::BACKENDS_MAX, hash, touched, |_: &u32| 0;
            revnat RevNat: u32 => $crate::abi::RevNatValue, $crate::abi::MAP_REVNAT, $crate::abi::REVNAT_MAX, hash, touched, |_: &u32| 0;
            names Names: u32 => $crate::abi::FrontendName, $crate::abi::MAP_NAMES, $crate::abi::REVNAT_MAX, hash, touched, |_: &u32| 0;
            // loadBalancerSourceRanges per rev-NAT id.
            src_ranges SrcRanges: $crate::abi::SrcRangeKey => u8, $crate::abi::MAP_SRC_RANGES, $crate::abi::SRC_RANGES_MAX, lpm, touched,
                |_: &$crate::abi::SrcRangeKey| 0;
            // LoadBalancer and ExternalIP addresses, for dropping unknown ports early: only once
            // their frontends answer (phase 4).
            lb_addrs LbAddrs: $crate::abi::Addr => $crate::abi::FrontendAddrValue, $crate::abi::MAP_LB_ADDRS, $crate::abi::LB_ADDRS_MAX, hash, touched,
                |_: &$crate::abi::Addr| 4;
            // NodePorts, for bind protection.
            nodeports NodePorts: $crate::abi::NodePortKey => u8, $crate::abi::MAP_NODEPORTS, $crate::abi::NODEPORTS_MAX, hash, touched,
                |_: &$crate::abi::NodePortKey| 0;
            // SourceBlocklist entries, dropped in XDP; planned apart from Services, so compared whole.
            blocklist Blocklist: $crate::abi::BlockKey => $crate::abi::BlockValue, $crate::abi::MAP_BLOCKLIST, $crate::abi::BLOCKLIST_MAX, lpm, whole,
                |_: &$crate::abi::BlockKey| 0;
            // Maglev tables of north-south frontends: a header switches to Maglev only once its
            // table is there (phase 2), and leaves it before the table goes.
            maglev Maglev: $crate::abi::MaglevKey => $crate::abi::MaglevTable, $crate::abi::MAP_MAGLEV, $crate::abi::MAGLEV_MAX, hash, touched,
                |_: &$crate::abi::MaglevKey| 2;
        }
    };
}

/// The phases `for_each_lb_map!` uses, lowest first.
pub const PHASES: std::ops::RangeInclusive<u8> = 0..=4;

macro_rules! define_lb_state {
    (@restrict touched, $map:expr, $keys:expr) => {
        $keys.iter().filter_map(|k| $map.get(k).map(|v| (*k, *v))).collect()
    };
    (@restrict whole, $map:expr, $keys:expr) => {
        $map.clone()
    };
    ($($field:ident $variant:ident: $key:ty => $value:ty, $name:expr, $capacity:expr, $kind:ident, $touched:ident, $phase:expr;)*) => {
        /// Every load-balancing map's entries.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct LbState {
            $(pub $field: BTreeMap<$key, $value>,)*
        }

        /// The keys of each map a plan may have changed: an incremental sync compares only these.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Touched {
            $(pub $field: BTreeSet<$key>,)*
        }

        /// One entry of one map.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum MapEntry {
            // Boxed: a Maglev table is 4 KiB, and most ops carry a few bytes.
            $($variant($key, Box<$value>),)*
        }

        /// One key of one map.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum MapKey {
            $($variant($key),)*
        }

        /// One write to one map.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Op {
            Put(MapEntry),
            Del(MapKey),
        }

        impl Op {
            /// Mirrors the op onto an in-memory state, as the kernel map would change.
            pub fn apply_to(&self, state: &mut LbState) {
                match self {
                    $(Op::Put(MapEntry::$variant(k, v)) => {
                        state.$field.insert(*k, **v);
                    })*
                    $(Op::Del(MapKey::$variant(k)) => {
                        state.$field.remove(k);
                    })*
                }
            }

            pub fn is_delete(&self) -> bool {
                matches!(self, Op::Del(_))
            }

            /// The pinned name of the map it writes.
            pub fn map_name(&self) -> &'static str {
                match self {
                    $(Op::Put(MapEntry::$variant(..)) | Op::Del(MapKey::$variant(_)) => $name,)*
                }
            }
        }

        impl LbState {
            /// Each map with its entries and capacity, for status, metrics and the CLI.
            pub fn map_usage(&self) -> Vec<(&'static str, usize, u32)> {
                vec![$(($name, self.$field.len(), $capacity),)*]
            }

            pub fn entry_count(&self) -> usize {
                0 $(+ self.$field.len())*
            }

            /// The entries under the touched keys (all of a map compared whole).
            pub fn restrict(&self, touched: &Touched) -> LbState {
                LbState {
                    $($field: define_lb_state!(@restrict $touched, self.$field, touched.$field),)*
                }
            }

            /// The writes of one phase that make `current` hold what `self` holds: puts of new
            /// or changed entries, or deletes of entries `self` lacks. Made one at a time into
            /// `ops` (a list, or a sink that writes them straight to the maps).
            pub fn puts_in_phase(&self, current: &LbState, phase: u8, ops: &mut impl Extend<Op>) {
                $(
                    let in_phase = $phase;
                    ops.extend(
                        self.$field
                            .iter()
                            .filter(|&(k, v)| in_phase(k) == phase && current.$field.get(k) != Some(v))
                            .map(|(k, v)| Op::Put(MapEntry::$variant(*k, Box::new(*v)))),
                    );
                )*
            }

            pub fn deletes_in_phase(&self, current: &LbState, phase: u8, ops: &mut impl Extend<Op>) {
                $(
                    let in_phase = $phase;
                    ops.extend(
                        current.$field.keys().filter(|&k| in_phase(k) == phase && !self.$field.contains_key(k)).map(|k| Op::Del(MapKey::$variant(*k))),
                    );
                )*
            }
        }

        impl Touched {
            /// Every key of both states: an incremental sync that compares everything.
            pub fn all_of(a: &LbState, b: &LbState) -> Touched {
                Touched {
                    $($field: a.$field.keys().chain(b.$field.keys()).copied().collect(),)*
                }
            }
        }
    };
}

for_each_lb_map!(define_lb_state);
