//! The kernel side of Sluice: loading and attaching the programs, the one map trait every
//! writer goes through, and the reconciler that turns a plan into ordered map operations.

pub mod conntrack;
pub mod housekeeping;
pub mod counters;
pub mod loader;
pub mod maps;
pub mod netns;
pub mod node_maps;
pub mod pins;
pub mod port_filter;
pub mod reconcile;
pub mod report;
pub mod sockets;
pub mod sys;
pub mod xdp_proof;

/// The compiled objects, embedded at build time: socket hooks (bpf/sock_lb.c), tc programs
/// (bpf/nodeport.c), XDP (bpf/xdp.c) and the XDP loss counters (bpf/xdp_watch.c).
pub static SOCK_LB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.o"));
pub static NODEPORT_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodeport.o"));
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp.o"));
/// Counters of the frames the kernel lost after XDP sent them (bpf/xdp_watch.c).
pub static XDP_WATCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_watch.o"));

pub use maps::{BpfMaps, FakeMaps, FaultyMaps, LbMaps, MapError};
pub use sluice_core::Op;
pub use node_maps::{FakeNodeMaps, NodeMaps, PinnedNodeMaps};
pub use reconcile::{Reconciler, SyncStats};
