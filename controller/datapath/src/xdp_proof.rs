//! Proof that what XDP sends from a device arrives. A driver, or the peer of a veth, may accept
//! an XDP program and still drop every frame it transmits (a veth delivers XDP_TX frames only
//! while its peer runs XDP or GRO), and nothing in the program can tell. So before XDP takes
//! flows on a device, an ICMP echo request from the node's SNAT address to a remote backend is
//! sent the way a translated flow is (the `sluice_xdp_probe` program: the same FIB lookup, MAC
//! rewrite and XDP_TX or redirect, run on the device's ingress with live frames), and the echo
//! reply must come back. The same request through the stack first tells a target that answers
//! from one that does not.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData};
use sluice_abi::{self as abi, XdpDevice};

use crate::MapError;
use crate::maps::open_hash;
use crate::sys::{self, RunMode, TestContext};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
const PAYLOAD: &[u8] = b"sluice xdp proof";

/// How long an echo reply may take; a path that delivers answers in well under a millisecond.
pub const REPLY_WAIT: Duration = Duration::from_millis(500);
/// Echo requests XDP sends to one target before the path is judged not to deliver.
pub const XDP_TRIES: u16 = 3;

fn ones_complement_sum(mut sum: u32, bytes: &[u8]) -> u32 {
    for chunk in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ICMP or ICMPv6 echo request itself (checksum filled for ICMPv4; ICMPv6's needs the
/// addresses, see [`echo_frame`]).
fn echo_message(v6: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![if v6 { ICMP6_ECHO_REQUEST } else { ICMP_ECHO_REQUEST }, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(PAYLOAD);
    if !v6 {
        let c = fold(ones_complement_sum(0, &m));
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// An Ethernet frame carrying an echo request from `src` to `dst` (both of one family). The
/// MAC addresses are left zero: the probe program writes what the FIB says, as for a flow.
pub fn echo_frame(src: IpAddr, dst: IpAddr, ident: u16, seq: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let icmp = echo_message(false, ident, seq);
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + icmp.len()) as u16;
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]); // id 0, DF, TTL 64, ICMP
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = fold(ones_complement_sum(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&icmp);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut icmp = echo_message(true, ident, seq);
            let len = icmp.len() as u32;
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            let c = fold(ones_complement_sum(ones_complement_sum(0, &pseudo), &icmp));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(len as u16).to_be_bytes());
            f.extend_from_slice(&[58, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(&icmp);
        }
        _ => panic!("echo_frame: {src} and {dst} are of different families"),
    }
    f
}

/// A raw ICMP socket bound to the node's address: sends echo requests through the stack and
/// sees every echo reply, whichever way its request left.
pub struct Pinger {
    sock: OwnedFd,
    src: IpAddr,
}

fn sockaddr(ip: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

impl Pinger {
    pub fn new(src: IpAddr) -> io::Result<Self> {
        let (domain, proto) = if src.is_ipv6() { (libc::AF_INET6, libc::IPPROTO_ICMPV6) } else { (libc::AF_INET, libc::IPPROTO_ICMP) };
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let (ss, len) = sockaddr(src);
        // SAFETY: ss holds a valid sockaddr of `len` bytes.
        if unsafe { libc::bind(sock.as_raw_fd(), &ss as *const _ as *const libc::sockaddr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pinger { sock, src })
    }

    /// An echo request routed by the stack (which also resolves the neighbour XDP needs).
    pub fn send_via_stack(&self, dst: IpAddr, ident: u16, seq: u16) -> io::Result<()> {
        let msg = echo_message(dst.is_ipv6(), ident, seq);
        let (ss, len) = sockaddr(dst);
        // SAFETY: msg and ss are valid for the call; the kernel fills in the ICMPv6 checksum.
        let r = unsafe { libc::sendto(self.sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0, &ss as *const _ as *const libc::sockaddr, len) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Waits for the echo reply from `from` to (`ident`, `seq`); its round trip if it came.
    pub fn wait_reply(&self, from: IpAddr, ident: u16, seq: u16, sent: Instant, wait: Duration) -> io::Result<Option<Duration>> {
        let deadline = sent + wait;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            // SAFETY: sockaddr_storage is plain data.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut sl = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: buf and ss are ours and sized as passed.
            let got = unsafe {
                libc::recvfrom(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, &mut ss as *mut _ as *mut libc::sockaddr, &mut sl)
            };
            if got < 0 {
                continue;
            }
            if is_echo_reply(&buf[..got as usize], peer(&ss), from, ident, seq) {
                return Ok(Some(sent.elapsed()));
            }
        }
    }

    pub fn source(&self) -> IpAddr {
        self.src
    }
}

fn peer(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Whether a raw socket's datagram is our echo reply: ICMPv4 comes with its IP header,
/// ICMPv6 without.
fn is_echo_reply(data: &[u8], sender: Option<IpAddr>, from: IpAddr, ident: u16, seq: u16) -> bool {
    let icmp = match from {
        IpAddr::V4(a) => {
            let Some(&first) = data.first() else { return false };
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 || data.len() < ihl + 8 || data[9] != 1 || data[12..16] != a.octets() {
                return false;
            }
            &data[ihl..]
        }
        IpAddr::V6(_) => {
            if sender != Some(from) {
                return false;
            }
            data
        }
    };
    let reply = if from.is_ipv6() { ICMP6_ECHO_REPLY } else { ICMP_ECHO_REPLY };
    icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == ident.to_be_bytes() && icmp[6..8] == seq.to_be_bytes()
}

/// What the proof found on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// XDP's echo request to `target` was answered.
    Delivered { target: IpAddr, rtt: Duration },
    /// `target` answered through the stack, never to what XDP sent (`tries` requests).
    NotDelivered { target: IpAddr, tries: u16 },
    /// Nothing to prove it with: why, target by target.
    NoTarget(String),
}

/// Proves one device with the first of `targets` that answers a ping through the stack.
/// `src` is the node's SNAT address of the targets' family; `seq` advances per request.
pub fn prove(probe: BorrowedFd<'_>, ifindex: u32, src: IpAddr, targets: &[IpAddr], ident: u16, seq: &mut u16) -> io::Result<Proof> {
    let pinger = Pinger::new(src)?;
    let mut notes = Vec::new();
    let mut next = || {
        *seq = seq.wrapping_add(1);
        *seq
    };
    for &target in targets.iter().filter(|t| t.is_ipv6() == src.is_ipv6()) {
        // The stack first: it resolves the neighbour XDP will need, and tells whether the
        // target answers at all.
        let s = next();
        pinger.send_via_stack(target, ident, s)?;
        if pinger.wait_reply(target, ident, s, Instant::now(), REPLY_WAIT * 2)?.is_none() {
            notes.push(format!("{target} did not answer a ping through the stack"));
            continue;
        }
        let s = next();
        let (verdict, _) = sys::prog_test_run(probe, &echo_frame(src, target, ident, s), TestContext::XdpIngress(ifindex), RunMode::Dry)?;
        if verdict != sys::XDP_TX && verdict != sys::XDP_REDIRECT {
            notes.push(format!("XDP finds no route to {target} (verdict {verdict}); tc would carry such flows"));
            continue;
        }
        for _ in 0..XDP_TRIES {
            let s = next();
            let sent = Instant::now();
            sys::prog_test_run(probe, &echo_frame(src, target, ident, s), TestContext::XdpIngress(ifindex), RunMode::Live)?;
            if let Some(rtt) = pinger.wait_reply(target, ident, s, sent, REPLY_WAIT)? {
                return Ok(Proof::Delivered { target, rtt });
            }
        }
        return Ok(Proof::NotDelivered { target, tries: XDP_TRIES });
    }
    if notes.is_empty() {
        notes.push(format!("no remote backend of the {} family to send a proof to yet", if src.is_ipv6() { "IPv6" } else { "IPv4" }));
    }
    Ok(Proof::NoTarget(notes.join("; ")))
}

fn devices_map(root: &Path) -> Result<HashMap<MapData, u32, XdpDevice>, MapError> {
    open_hash(root, abi::MAP_XDP_DEVICES)
}

/// Records a device's acceleration state; XDP reads its flags on every frame.
pub fn write_device(root: &Path, ifindex: u32, device: &XdpDevice) -> Result<(), MapError> {
    devices_map(root)?.insert(ifindex, *device, 0).map_err(|source| MapError::Kernel { map: abi::MAP_XDP_DEVICES, op: "write".into(), source })
}

/// Every device's acceleration state, by ifindex.
pub fn read_devices(root: &Path) -> Result<Vec<(u32, XdpDevice)>, MapError> {
    let map = devices_map(root)?;
    let mut out: Vec<(u32, XdpDevice)> = map.iter().filter_map(Result::ok).collect();
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

/// Forgets devices no longer in `keep` (a device left --devices, or was recreated).
pub fn prune_devices(root: &Path, keep: &[u32]) -> Result<(), MapError> {
    let mut map = devices_map(root)?;
    let stale: Vec<u32> = map.keys().filter_map(Result::ok).filter(|i| !keep.contains(i)).collect();
    for i in stale {
        map.remove(&i).map_err(|source| MapError::Kernel { map: abi::MAP_XDP_DEVICES, op: "delete".into(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETH_HLEN: usize = 14;

    fn verify(bytes: &[u8]) -> u16 {
        fold(ones_complement_sum(0, bytes))
    }

    #[test]
    fn ipv4_echo_frame_has_valid_checksums() {
        let f = echo_frame("172.30.0.11".parse().unwrap(), "10.244.2.5".parse().unwrap(), 0x1234, 7);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[ETH_HLEN..ETH_HLEN + 20];
        assert_eq!(verify(ip), 0, "IP header checksum");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, f.len() - ETH_HLEN);
        let icmp = &f[ETH_HLEN + 20..];
        assert_eq!(verify(icmp), 0, "ICMP checksum");
        assert_eq!((icmp[0], &icmp[4..8]), (ICMP_ECHO_REQUEST, &[0x12, 0x34, 0, 7][..]));
    }

    #[test]
    fn ipv6_echo_frame_checksum_covers_the_pseudo_header() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00:30::11".parse().unwrap(), "fd00:244::5".parse().unwrap());
        let f = echo_frame(IpAddr::V6(s), IpAddr::V6(d), 9, 1);
        let icmp = &f[ETH_HLEN + 40..];
        let mut pseudo = s.octets().to_vec();
        pseudo.extend_from_slice(&d.octets());
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(fold(ones_complement_sum(ones_complement_sum(0, &pseudo), icmp)), 0);
        assert_eq!(icmp[0], ICMP6_ECHO_REQUEST);
    }

    #[test]
    fn only_the_awaited_reply_counts() {
        let from: IpAddr = "10.244.2.5".parse().unwrap();
        let mut reply = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 244, 2, 5, 172, 30, 0, 11];
        reply.extend_from_slice(&[ICMP_ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_echo_reply(&reply, None, from, 0x1234, 7));
        assert!(!is_echo_reply(&reply, None, from, 0x1234, 8), "another sequence number");
        assert!(!is_echo_reply(&reply, None, "10.244.2.6".parse().unwrap(), 0x1234, 7), "another sender");
        let mut request = reply.clone();
        request[20] = ICMP_ECHO_REQUEST;
        assert!(!is_echo_reply(&request, None, from, 0x1234, 7), "a request is no reply");
    }
}
