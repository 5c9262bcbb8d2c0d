//! The network namespaces whose sockets socket-LB serves: the agent's own (node processes) and
//! those of the processes under the cgroup it is attached to (pods). Work inside one happens on
//! a short-lived thread that enters it, so no agent thread ever changes namespace.
//!
//! Socket-LB needs to know each namespace's source address: a socket that connects before it
//! has one is judged against loadBalancerSourceRanges by the address its namespace gives it
//! (`sluice_netns_addrs_v1`, kept here).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use sluice_abi::{Addr, NetnsAddrs};

use crate::maps::{MapError, open_hash};

/// A network namespace, open, with its identity (device and inode of its nsfs file).
pub struct Namespace {
    pub file: File,
    pub id: (u64, u64),
    /// The agent's own namespace: the node's.
    pub node: bool,
}

/// The agent's namespace first, then (with `pods`) each one the processes of a cgroup under
/// `cgroup` live in, each once.
pub fn namespaces(cgroup: &Path, pods: bool) -> Vec<Namespace> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |path: PathBuf, node: bool| {
        if let Ok(file) = File::open(&path)
            && let Ok(m) = file.metadata()
            && seen.insert((m.dev(), m.ino()))
        {
            out.push(Namespace { file, id: (m.dev(), m.ino()), node });
        }
    };
    add(PathBuf::from("/proc/thread-self/ns/net"), true);
    if pods {
        for pid in cgroup_pids(cgroup) {
            add(PathBuf::from(format!("/proc/{pid}/ns/net")), false);
        }
    }
    out
}

/// Runs `work` on a thread inside `ns`, and waits for it.
pub fn inside<T: Send>(ns: &File, work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a namespace fd we hold; it changes only this scoped thread, which ends here.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// One process of each cgroup in the subtree: the processes of a cgroup (a pod's container)
/// share their network namespace, so one stands for all, and a walk done every second stays one
/// read per cgroup rather than a namespace open per process. (A directory that goes while it is
/// walked is skipped.)
fn cgroup_pids(root: &Path) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()).find(|&p| p != 0));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    pids
}

/// The calling thread's network namespace cookie (what `bpf_get_netns_cookie` returns there).
fn cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: plain socket(2), owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (mut cookie, mut len) = (0u64, size_of::<u64>() as libc::socklen_t);
    // SAFETY: getsockopt into a u64 of the size given.
    if unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE, &mut cookie as *mut u64 as *mut libc::c_void, &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Whether an interface address can be a socket's source towards a Service.
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local() && !a.is_unspecified() && a.to_ipv4_mapped().is_none(),
    }
}

/// One address of one interface of the calling thread's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub device: String,
    pub loopback: bool,
    pub ip: IpAddr,
}

/// Every IPv4 and IPv6 address of the calling thread's network namespace (getifaddrs).
pub fn interface_addresses() -> io::Result<Vec<InterfaceAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates the list, freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur walks the list getifaddrs returned, until its end.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => IpAddr::from((*(ifa.ifa_addr as *const libc::sockaddr_in)).sin_addr.s_addr.to_ne_bytes()),
                libc::AF_INET6 => IpAddr::from((*(ifa.ifa_addr as *const libc::sockaddr_in6)).sin6_addr.s6_addr),
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let device = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        out.push(InterfaceAddr { device, loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0, ip });
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The calling thread's namespace's candidate source addresses: the usable addresses of its
/// interfaces other than loopback first, then loopback's (a namespace that only has loopback
/// addresses uses them).
fn interface_addrs() -> io::Result<Vec<IpAddr>> {
    let all: Vec<InterfaceAddr> = interface_addresses()?.into_iter().filter(|a| usable(&a.ip)).collect();
    Ok(all.iter().filter(|a| !a.loopback).chain(all.iter().filter(|a| a.loopback)).map(|a| a.ip).collect())
}

/// The first address of each family, as the map holds them (zero: none).
pub fn source_addrs(ips: &[IpAddr]) -> NetnsAddrs {
    let first = |v4: bool| ips.iter().find(|ip| ip.is_ipv4() == v4).map(|ip| Addr::from(*ip)).unwrap_or_default();
    NetnsAddrs { v4: first(true), v6: first(false) }
}

/// What one refresh did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RefreshReport {
    pub added: usize,
    pub removed: usize,
    /// Namespaces that could not be read (their process exited meanwhile, say), tried again next time.
    pub failed: usize,
}

/// Keeps `sluice_netns_addrs_v1` in step with the namespaces socket-LB serves.
pub struct SourceAddrs {
    map: HashMap<MapData, u64, NetnsAddrs>,
    cgroup: PathBuf,
    /// Namespace id → (cookie, what the map holds for it).
    known: BTreeMap<(u64, u64), (u64, NetnsAddrs)>,
}

impl SourceAddrs {
    pub fn open(root: &Path, cgroup: &Path) -> Result<Self, MapError> {
        Ok(SourceAddrs { map: open_hash(root, sluice_abi::MAP_NETNS_ADDRS)?, cgroup: cgroup.to_path_buf(), known: BTreeMap::new() })
    }

    /// Records the namespaces new since the last call and forgets those gone. The node's
    /// namespace gets `node_ips` (when there are any: else its interfaces' addresses, as a pod's);
    /// a pod's addresses do not change while it lives, so each is read once.
    pub fn refresh(&mut self, node_ips: &[IpAddr], pods: bool) -> RefreshReport {
        let mut report = RefreshReport::default();
        let present = namespaces(&self.cgroup, pods);
        for ns in &present {
            let fixed = (ns.node && !node_ips.is_empty()).then(|| source_addrs(node_ips));
            if let Some((_, held)) = self.known.get(&ns.id)
                && fixed.is_none_or(|f| f == *held)
            {
                continue;
            }
            let read = inside(&ns.file, || {
                let cookie = cookie()?;
                Ok((cookie, match fixed {
                    Some(f) => f,
                    None => source_addrs(&interface_addrs()?),
                }))
            });
            match read {
                // Not set up yet (a pod whose network is still being wired): tried again next time.
                Ok((_, addrs)) if addrs == NetnsAddrs::default() => report.failed += 1,
                Ok((cookie, addrs)) => match self.map.insert(cookie, addrs, 0) {
                    Ok(()) => {
                        self.known.insert(ns.id, (cookie, addrs));
                        report.added += 1;
                    }
                    Err(e) => {
                        tracing::warn!("cannot record a network namespace's source addresses: {e}");
                        report.failed += 1;
                    }
                },
                Err(_) => report.failed += 1,
            }
        }
        let ids: BTreeSet<(u64, u64)> = present.iter().map(|ns| ns.id).collect();
        let gone: Vec<(u64, u64)> = self.known.keys().filter(|id| !ids.contains(id)).copied().collect();
        for id in gone {
            if let Some((cookie, _)) = self.known.remove(&id) {
                let _ = self.map.remove(&cookie);
                report.removed += 1;
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_address_of_each_family_is_the_source() {
        let ips: Vec<IpAddr> = ["fd00::5", "10.0.0.5", "10.0.0.6"].iter().map(|s| s.parse().unwrap()).collect();
        let a = source_addrs(&ips);
        assert_eq!((a.v4.ip(), a.v6.ip()), ("10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()));
        assert_eq!(source_addrs(&ips[1..2]).v6, Addr::default());
    }

    #[test]
    fn loopback_and_link_local_addresses_are_never_a_source() {
        for s in ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "::ffff:10.0.0.1"] {
            assert!(!usable(&s.parse().unwrap()), "{s}");
        }
        assert!(usable(&"10.244.0.3".parse().unwrap()));
    }

    /// The real kernel: the cookie read through a socket of a namespace is the one the agent's
    /// own namespace has, whichever thread asks.
    #[test]
    fn a_namespace_cookie_is_the_same_from_any_thread_inside_it() {
        let own = cookie().unwrap();
        let node = namespaces(Path::new("/nonexistent"), false);
        assert_eq!(node.len(), 1);
        assert_eq!(inside(&node[0].file, cookie).unwrap(), own);
    }
}
