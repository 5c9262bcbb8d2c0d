//! Packet tests of the north-south programs (bpf/nodeport.c, bpf/xdp.c) through
//! BPF_PROG_TEST_RUN: hand-built Ethernet frames go through the loaded programs, and the frames
//! that come out are parsed and checked: verdict, addresses, ports and every checksum.
//!
//! Nothing is attached and nothing is sent. Each test loads both objects with their maps pinned
//! in a fresh bpffs directory (removed on drop, also on failure) and runs in a private network
//! namespace of its own thread, so the FIB helper sees no routes and forwarding disabled: a
//! translated packet that would be forwarded falls back to the stack (TC_ACT_OK / XDP_PASS and
//! the `NpFibFail` counter). Tests that need the redirect path ask for routes (`.routed()`): a
//! veth pair with permanent neighbours inside that namespace.
//!
//! Without root or bpffs the tests say why and pass, unless CI=true: then they fail.
//!
//! # Adding a case
//!
//! Pick the file of its area (below), or start one and add it here. A case sets up a node, sends,
//! and expects; the cluster it runs against is cluster.yaml, its addresses named in harness/net.rs:
//!
//! ```ignore
//! #[test]
//! fn a_udp_nodeport_to_a_remote_backend_is_snated() {
//!     let Some(fx) = node("udp-snat").start() else { return };
//!     let seen = fx.ingress(&udp(CLIENT, 5000).to(NODE4, 30053).data(b"q")).expect(TC_ACT_OK);
//!     assert_eq!(seen.flow, udp(NODE4, 5000).to(REMOTE_BE, 5353));
//!     assert_eq!(fx.counter(Counter::NpNewFlow), 1);
//! }
//! ```
//!
//! `node(..)` takes `.accelerated()`, `.maglev()`, `.routed()`; `fx.ingress`, `fx.egress` and
//! `fx.xdp` return the verdict and frame (`.expect(verdict)` parses it, checking checksums);
//! `fx.ct_get`, `fx.counter`, `fx.affinity` read the maps. See harness/.

mod harness;

mod affinity;
mod conntrack;
mod fib;
mod fragments;
mod icmp_errors;
mod lb_filters;
mod maglev;
mod monitor;
mod nodeport;
mod port_filter;
mod reject;
mod sctp;
mod v6;
mod xdp;
