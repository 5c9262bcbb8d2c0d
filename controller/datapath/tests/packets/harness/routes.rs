//! Routes in the test's private namespace, for the cases where the FIB helper must succeed
//! (redirects, XDP_TX). Children inherit the calling thread's namespace, so `ip` configures ours.

use std::process::Command;

use super::net::*;

/// Runs a command, failing the test with its stderr if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn permanent_neighbour(ip: &str, lladdr: [u8; 6]) {
    let family = if ip.contains(':') { "-6" } else { "-4" };
    sh(&["ip", family, "neigh", "replace", ip, "lladdr", &mac(lladdr), "dev", "s0", "nud", "permanent"]);
}

/// veth s0 (10.244.2.1/24, fd00:244:2::1/64) with permanent neighbours for the remote backends,
/// lo up, forwarding on.
pub fn to_backends() {
    let s0 = mac(MAC_S0);
    for cmd in [
        "ip link set lo up",
        &format!("ip link add s0 address {s0} type veth peer name s1"),
        "ip link set s0 up",
        "ip link set s1 up",
        "ip addr add 10.244.2.1/24 dev s0",
        "ip -6 addr add fd00:244:2::1/64 dev s0 nodad",
    ] {
        sh(&cmd.split(' ').collect::<Vec<_>>());
    }
    permanent_neighbour(&REMOTE_BE.to_string(), MAC_BACKEND);
    permanent_neighbour(&REMOTE_BE6.to_string(), MAC_BACKEND);
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").unwrap();
}

pub fn s0_ifindex() -> u32 {
    let name = std::ffi::CString::new("s0").unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no s0: the test did not ask for routes");
    ifindex
}

/// Routes the clients through s0 too (after `to_backends`), so replies can be sent from XDP.
pub fn to_clients() {
    for (net, ip) in [("198.51.100.0/24", CLIENT.to_string()), ("192.0.2.0/24", CLIENT_IN_RANGE.to_string())] {
        sh(&["ip", "route", "add", net, "dev", "s0"]);
        permanent_neighbour(&ip, MAC_CLIENT);
    }
    sh(&["ip", "-6", "route", "add", "2001:db8::/64", "dev", "s0"]);
    permanent_neighbour(&CLIENT6.to_string(), MAC_CLIENT);
}
