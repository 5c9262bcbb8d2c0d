//! What the north-south programs cost a packet that is none of theirs: TCP between pods of two
//! nodes, after socket-LB has translated the connect (issue 13's item 6: at most 0.5 µs per
//! connection in tc). Each packet a connection puts on the node's device runs one of four hooks
//! (tc egress and ingress on the client's node and on the server's); XDP runs before tc ingress.
//!
//! Every case runs in the kernel through BPF_PROG_TEST_RUN with `repeat` (the kernel's own mean
//! time per run), three ways in the same process: a program that only returns (the floor: what
//! running any program costs), Sluice's program with the port filter, and the same program with
//! the filter not complete, which looks the packet up as every build before the filter did.
//!
//! `cargo bench -p sluice-datapath --bench east_west -- [REPEAT]` as root (bpffs, a private
//! network namespace; the pinned maps are removed afterwards). The cluster is the packet tests'
//! (tests/packets/cluster.yaml): its Services' targetPort 8080 is a local backend's port, so the
//! server's replies still take a conntrack lookup; the other three hooks pass them after one bit.

#[path = "../tests/packets/harness/mod.rs"]
#[allow(dead_code, unused_imports)]
mod harness;

use std::os::fd::{AsFd, BorrowedFd};

use harness::*;
use sluice_datapath::loader;
use sluice_datapath::sys::{self, TestContext};

/// Each hook runs this many times per connection of `e2e/bench/run`'s east-west client (connect,
/// one request, one reply, close with RST: 16 tc runs over the four hooks, in its BPF stats).
const RUNS_PER_HOOK: f64 = 4.0;
const ROUNDS: usize = 7;

fn median_ns(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> u32 {
    let mut times: Vec<u32> = (0..ROUNDS)
        .map(|_| sys::prog_test_run_timed(prog, frame, TestContext::None, repeat).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}")).1)
        .collect();
    times.sort_unstable();
    times[ROUNDS / 2]
}

struct Case {
    hook: &'static str,
    packet: &'static str,
    frame: Vec<u8>,
    xdp: bool,
    egress: bool,
}

fn main() {
    let repeat: u32 = std::env::args().skip(1).find(|a| !a.starts_with('-')).map(|a| a.parse().expect("REPEAT: a number")).unwrap_or(200_000);
    let Some(fx) = node("bench-east-west").start() else {
        eprintln!("east_west: cannot run here (see above)");
        std::process::exit(1);
    };
    let filter = fx.port_filter();
    let client_pod = Ipv4Addr::new(10, 244, 1, 50);
    let remote_pod = Ipv4Addr::new(10, 244, 2, 50);
    let cases = [
        Case { hook: "client node, tc egress", packet: "request, pod -> remote pod:8080", frame: tcp(client_pod, 40300).to(REMOTE_BE, 8080).data(b"GET"), xdp: false, egress: true },
        Case { hook: "server node, XDP", packet: "request, remote pod -> pod:8080", frame: tcp(remote_pod, 40300).to(LOCAL_BE, 8080).data(b"GET"), xdp: true, egress: false },
        Case { hook: "server node, tc ingress", packet: "request, remote pod -> pod:8080", frame: tcp(remote_pod, 40300).to(LOCAL_BE, 8080).data(b"GET"), xdp: false, egress: false },
        Case { hook: "server node, tc egress", packet: "reply, pod:8080 -> remote pod", frame: tcp(LOCAL_BE, 8080).to(remote_pod, 40300).data(b"200"), xdp: false, egress: true },
        Case { hook: "client node, XDP", packet: "reply, remote pod:8080 -> pod", frame: tcp(REMOTE_BE, 8080).to(client_pod, 40300).data(b"200"), xdp: true, egress: false },
        Case { hook: "client node, tc ingress", packet: "reply, remote pod:8080 -> pod", frame: tcp(REMOTE_BE, 8080).to(client_pod, 40300).data(b"200"), xdp: false, egress: false },
    ];
    let tc_floor = sys::load_verdict_only(sys::BPF_PROG_TYPE_SCHED_CLS, TC_ACT_UNSPEC).expect("loading a tc program that only returns");
    let xdp_floor = sys::load_verdict_only(sys::BPF_PROG_TYPE_XDP, XDP_PASS).expect("loading an XDP program that only returns");

    println!("east-west packets through the north-south programs: kernel ns per run, median of {ROUNDS} rounds of {repeat} (BPF_PROG_TEST_RUN)\n");
    println!("| hook | packet | only returns | with the port filter | without (every lookup) | filter, above the floor | without, above the floor |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let (mut tc_with, mut tc_without) = (0.0, 0.0);
    for case in &cases {
        let (prog, floor) = match (case.xdp, case.egress) {
            (true, _) => (fx.xdp_program(), xdp_floor.as_fd()),
            (false, true) => (fx.tc_program(loader::TC_EGRESS), tc_floor.as_fd()),
            (false, false) => (fx.tc_program(loader::TC_INGRESS), tc_floor.as_fd()),
        };
        // Untouched either way: the filter changes the cost, never the verdict.
        let untouched = |verdict: i32| {
            let out = if case.xdp { fx.xdp(&case.frame) } else if case.egress { fx.egress(&case.frame) } else { fx.ingress(&case.frame) };
            assert!(out == (verdict, case.frame.clone()), "{}: {} was changed or dropped", case.hook, case.packet);
        };
        let pass = if case.xdp { XDP_PASS } else { TC_ACT_UNSPEC };
        let floor_ns = median_ns(floor, &case.frame, repeat);
        fx.set_port_filter(&filter);
        untouched(pass);
        let with = median_ns(prog, &case.frame, repeat);
        fx.set_port_filter(&abi::PortFilter { flags: 0, ..filter });
        untouched(pass);
        let without = median_ns(prog, &case.frame, repeat);
        fx.set_port_filter(&filter);
        let above = |ns: u32| ns.saturating_sub(floor_ns);
        println!("| {} | {} | {floor_ns} | {with} | {without} | {} | {} |", case.hook, case.packet, above(with), above(without));
        if !case.xdp {
            tc_with += f64::from(above(with));
            tc_without += f64::from(above(without));
        }
    }
    println!(
        "\ntc programs per east-west connection ({RUNS_PER_HOOK} runs of each of the four tc hooks), above the floor: \
         {:.0} ns with the port filter, {:.0} ns without ({:.1}x)",
        tc_with * RUNS_PER_HOOK,
        tc_without * RUNS_PER_HOOK,
        tc_without / tc_with.max(1.0)
    );
}
