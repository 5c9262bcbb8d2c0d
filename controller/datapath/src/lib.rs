//! The kernel side of Sluice: loading and attaching the programs, the one map trait every
//! writer goes through, and the reconciler that turns a plan into ordered map operations.

pub mod counters;
pub mod loader;
pub mod maps;
pub mod reconcile;
mod sys;

/// The compiled socket-LB object (bpf/sock_lb.c), embedded at build time.
pub static SOCK_LB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.o"));

pub use maps::{BpfMaps, FakeMaps, FaultyMaps, LbMaps, MapError, Op};
pub use reconcile::{Reconciler, SyncStats};
