//! What every scenario shares: the node under test (`node`), the packets it is sent (`packet`),
//! the checks on what comes out (`parse`), and the names of the cluster's addresses (`net`).
//! Scenarios `use crate::harness::*` and need nothing else.

mod net;
mod node;
mod packet;
mod parse;
mod routes;

pub use net::*;
pub use node::*;
pub use packet::*;
pub use parse::*;
pub use routes::sh;

pub use sluice_abi::{self as abi, Addr, Counter, XdpState};
pub use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (BPF_PROG_TEST_RUN, bpffs, network namespaces)".into());
    }
    let c = std::ffi::CString::new("/sys/fs/bpf").unwrap();
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != 0xcafe4a11 {
        return Err("/sys/fs/bpf is not a mounted BPF filesystem".into());
    }
    Ok(())
}

/// Returns false (after saying why) when the test cannot run here; panics under CI=true, where a
/// skipped test would hide a datapath that no longer works.
fn can_run(test: &str) -> bool {
    match prerequisites() {
        Ok(()) => true,
        Err(why) if under_ci() => panic!("{test} cannot run under CI=true: {why}"),
        Err(why) => {
            println!("{test} not run: {why} (it is required under CI=true)");
            false
        }
    }
}

/// Whether iproute2 is there to build routes with; as `can_run` otherwise.
fn have_ip(test: &str) -> bool {
    match std::process::Command::new("ip").arg("-V").output() {
        Ok(_) => true,
        Err(e) if under_ci() => panic!("iproute2 is required under CI=true: {e}"),
        Err(e) => {
            println!("{test} not run: `ip` missing ({e})");
            false
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock the datapath stamps events and affinity entries with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How long `ticks` of the datapath's handshake clock last, at least (plus a jiffy or two of the
/// coarse clock).
pub fn handshake_ticks(ticks: u16) -> std::time::Duration {
    std::time::Duration::from_nanos((u64::from(ticks) << sluice_abi::CT_HS_TICK_SHIFT) + 10_000_000)
}

/// Waits while the datapath's conntrack epoch (2^CT_EPOCH_SHIFT ns of CLOCK_MONOTONIC_COARSE, about 69 s)
/// is less than 2 s from its end, so a test that expects one epoch throughout gets it.
pub fn away_from_an_epoch_edge() {
    let ns = sluice_datapath::conntrack::coarse_now_ns();
    let epoch = 1u64 << sluice_abi::CT_EPOCH_SHIFT;
    let left = epoch - (ns % epoch);
    if left < 2_000_000_000 {
        std::thread::sleep(std::time::Duration::from_nanos(left + 10_000_000));
    }
}
