//! What the node's network looks like from the agent's namespace: the default-route device
//! and the addresses of a device.

use std::net::IpAddr;

/// The device of the IPv4 default route (then IPv6), as `ip route` would name it.
pub fn default_route_device() -> Option<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").ok()?;
    for line in v4.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
            return Some(f[0].to_string());
        }
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
    for line in v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 10 && f[0] == "00000000000000000000000000000000" && f[1] == "00" && f[9] != "lo" {
            return Some(f[9].to_string());
        }
    }
    None
}

/// The IPv4 and global IPv6 addresses on `device`.
pub fn device_addresses(device: &str) -> Vec<IpAddr> {
    sluice_datapath::netns::interface_addresses()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.device == device && !matches!(a.ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|a| a.ip)
        .collect()
}
