//! Connected UDP sockets that socket-LB can no longer serve, closed through sock_diag.
//!
//! Socket-LB translates a UDP socket once, at connect(): the kernel then sends every datagram
//! to the backend the socket was given, and no hook runs again. kube-proxy's answer to a
//! backend leaving (clearing its conntrack entries, so the next datagram is balanced again)
//! therefore has no equivalent in the socket: the only way to take it off a backend that left is
//! to close it (SOCK_DESTROY: its owner sees ECONNABORTED and connects again, as with Cilium).
//! The same holds for a socket connected to a frontend's address before the frontend existed
//! or had a backend: it was never translated and never will be.
//!
//! A socket is only closed when socket-LB itself connected it to the gone backend (its cookie
//! and peer are in the socket rev-NAT map), so a client that talks to a pod's address directly
//! is left alone. Sockets live in network namespaces: the agent's own (node processes) and
//! those of the processes in the cgroup subtree socket-LB is attached to (pods).

use std::collections::BTreeSet;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use sluice_abi::{Addr, SockRevNatKey};

/// Looks a socket up in the socket rev-NAT map: the frontend it was translated for.
pub type FrontendOf<'a> = dyn Fn(&SockRevNatKey) -> Option<Endpoint> + Sync + 'a;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
/// `1 << TCP_ESTABLISHED`: the state a connected UDP socket reports.
const STATE_CONNECTED: u32 = 1 << 1;

/// `struct inet_diag_sockid`: ports and addresses in network order, the cookie as two halves.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagRequest {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `struct inet_diag_msg`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagMessage {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    header: libc::nlmsghdr,
    body: DiagRequest,
}

/// One connected UDP socket as sock_diag shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPeer {
    pub cookie: u64,
    pub peer: Addr,
    pub peer_port: u16,
}

/// A UDP address: (address, port).
pub type Endpoint = (Addr, u16);

/// What makes a connected UDP socket unservable after a sync.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaleUdp {
    /// (frontend, backend): the backend left that frontend's Service.
    pub gone_backends: BTreeSet<(Endpoint, Endpoint)>,
    /// Frontends that now have backends and had none, or did not exist.
    pub woken_frontends: BTreeSet<Endpoint>,
}

impl StaleUdp {
    pub fn is_empty(&self) -> bool {
        self.gone_backends.is_empty() && self.woken_frontends.is_empty()
    }

    /// Whether the socket must go; `frontend` tells which frontend socket-LB connected it to its
    /// peer for, if it did.
    pub fn must_close(&self, s: &UdpPeer, frontend: impl FnOnce() -> Option<Endpoint>) -> bool {
        let peer = (s.peer, s.peer_port);
        self.woken_frontends.contains(&peer) || frontend().is_some_and(|f| self.gone_backends.contains(&(f, peer)))
    }
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub namespaces: usize,
    pub closed: usize,
    /// Namespaces that could not be entered or listed (a process that exited meanwhile, say).
    pub failed: usize,
}

/// Closes the connected UDP sockets `stale` names in the agent's network namespace and in those
/// of the processes under `cgroup` (all of them when `pods` is true, else only the agent's).
/// `frontend_of` answers which frontend socket-LB connected a socket to its peer for, if any.
pub fn close_stale_udp(stale: &StaleUdp, cgroup: &Path, pods: bool, frontend_of: &FrontendOf<'_>) -> SweepReport {
    let mut report = SweepReport::default();
    if stale.is_empty() {
        return report;
    }
    let namespaces = crate::netns::namespaces(cgroup, pods);
    report.namespaces = namespaces.len();
    for ns in &namespaces {
        match crate::netns::inside(&ns.file, || close_in_current_namespace(stale, frontend_of)) {
            Ok(n) => report.closed += n,
            Err(e) => {
                tracing::debug!("cannot sweep UDP sockets in a network namespace: {e}");
                report.failed += 1;
            }
        }
    }
    report
}

fn close_in_current_namespace(stale: &StaleUdp, frontend_of: &FrontendOf<'_>) -> io::Result<usize> {
    let diag = DiagSocket::open()?;
    let mut closed = 0;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for (id, peer) in diag.connected_udp(family)? {
            let frontend = || frontend_of(&SockRevNatKey { cookie: peer.cookie, addr: peer.peer, port_be: peer.peer_port.to_be(), ..Default::default() });
            if stale.must_close(&peer, frontend) {
                match diag.destroy(family, id) {
                    Ok(()) => closed += 1,
                    // Closed by its owner meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(closed)
}

/// A NETLINK_SOCK_DIAG socket of the calling thread's network namespace.
struct DiagSocket(OwnedFd);

impl DiagSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: setsockopt with a correctly sized timeval: a kernel that never answers must not hang the sync.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const _ as *const libc::c_void,
                size_of::<libc::timeval>() as u32,
            )
        };
        Ok(DiagSocket(fd))
    }

    fn send(&self, kind: u16, flags: u16, body: DiagRequest) -> io::Result<()> {
        let req = Request {
            header: libc::nlmsghdr { nlmsg_len: size_of::<Request>() as u32, nlmsg_type: kind, nlmsg_flags: flags, nlmsg_seq: 1, nlmsg_pid: 0 },
            body,
        };
        // SAFETY: sending the bytes of a plain repr(C) struct we own.
        let n = unsafe { libc::send(self.0.as_raw_fd(), &req as *const _ as *const libc::c_void, size_of::<Request>(), 0) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Reads replies until the dump ends (or the ACK arrives), handing each payload to `each`.
    fn receive(&self, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: recv into a buffer we own, of its length.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut msgs = &buf[..n as usize];
            while msgs.len() >= size_of::<libc::nlmsghdr>() {
                // SAFETY: at least a header's worth of bytes; read unaligned.
                let h: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(msgs.as_ptr() as *const libc::nlmsghdr) };
                let len = h.nlmsg_len as usize;
                if len < size_of::<libc::nlmsghdr>() || len > msgs.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                let payload = &msgs[size_of::<libc::nlmsghdr>()..len];
                match h.nlmsg_type as i32 {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = payload.get(..4).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    _ => each(payload),
                }
                msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
            }
        }
    }

    fn connected_udp(&self, family: u8) -> io::Result<Vec<(SockId, UdpPeer)>> {
        let req = DiagRequest { family, protocol: libc::IPPROTO_UDP as u8, states: STATE_CONNECTED, ..Default::default() };
        self.send(SOCK_DIAG_BY_FAMILY, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, req)?;
        let mut out = Vec::new();
        self.receive(|payload| {
            if payload.len() < size_of::<DiagMessage>() {
                return;
            }
            // SAFETY: a full inet_diag_msg's worth of bytes; read unaligned.
            let m: DiagMessage = unsafe { std::ptr::read_unaligned(payload.as_ptr() as *const DiagMessage) };
            out.push((m.id, peer_of(family, &m.id)));
        })?;
        Ok(out)
    }

    fn destroy(&self, family: u8, id: SockId) -> io::Result<()> {
        let req = DiagRequest { family, protocol: libc::IPPROTO_UDP as u8, states: u32::MAX, id, ..Default::default() };
        self.send(SOCK_DESTROY, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, req)?;
        self.receive(|_| {})
    }
}

fn peer_of(family: u8, id: &SockId) -> UdpPeer {
    let peer = if family == libc::AF_INET as u8 {
        Addr::from(std::net::IpAddr::from(<[u8; 4]>::try_from(&id.dst[..4]).unwrap()))
    } else {
        Addr(id.dst)
    };
    UdpPeer { cookie: (id.cookie[1] as u64) << 32 | id.cookie[0] as u64, peer, peer_port: u16::from_be_bytes(id.dport) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};

    fn addr(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn the_kernel_structs_have_their_sizes() {
        assert_eq!(size_of::<SockId>(), 48);
        assert_eq!(size_of::<DiagRequest>(), 56);
        assert_eq!(size_of::<DiagMessage>(), 72);
    }

    #[test]
    fn a_gone_backend_closes_only_sockets_socket_lb_connected() {
        let vip = (addr("10.96.0.10"), 53);
        let stale = StaleUdp { gone_backends: [(vip, (addr("10.244.0.4"), 5353))].into(), ..Default::default() };
        let s = UdpPeer { cookie: 7, peer: addr("10.244.0.4"), peer_port: 5353 };
        assert!(stale.must_close(&s, || Some(vip)));
        assert!(!stale.must_close(&s, || None), "a client of the pod's own address keeps its socket");
        assert!(!stale.must_close(&s, || Some((addr("10.96.0.99"), 53))), "the backend still serves the Service this socket came through");
        assert!(!stale.must_close(&UdpPeer { peer_port: 53, ..s }, || Some(vip)));
    }

    #[test]
    fn a_woken_frontend_closes_every_socket_connected_to_it() {
        let stale = StaleUdp { woken_frontends: [(addr("10.96.0.13"), 53)].into(), ..Default::default() };
        assert!(stale.must_close(&UdpPeer { cookie: 1, peer: addr("10.96.0.13"), peer_port: 53 }, || None));
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// The real kernel: sock_diag lists a connected UDP socket of this namespace with the cookie
    /// SO_COOKIE gives, and SOCK_DESTROY closes it (its owner sees an error).
    #[test]
    fn sock_diag_lists_and_closes_a_connected_udp_socket() {
        if !root() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "needs root under CI=true");
            println!("not run: needs root (sock_diag SOCK_DESTROY)");
            return;
        }
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client.connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let mut cookie = 0u64;
        let mut len = size_of::<u64>() as u32;
        // SAFETY: getsockopt into a u64 of the right size.
        assert_eq!(unsafe { libc::getsockopt(client.as_raw_fd(), libc::SOL_SOCKET, libc::SO_COOKIE, &mut cookie as *mut u64 as *mut libc::c_void, &mut len) }, 0);
        let vip = (addr("10.96.0.10"), 53);
        let stale = StaleUdp { gone_backends: [(vip, (addr("127.0.0.1"), port))].into(), ..Default::default() };
        let asked = std::sync::Mutex::new(Vec::new());
        let closed = close_in_current_namespace(&stale, &|k: &SockRevNatKey| {
            asked.lock().unwrap().push(k.cookie);
            (k.cookie == cookie).then_some(vip)
        })
        .unwrap();
        assert_eq!(closed, 1, "cookies asked about: {:?}, ours {cookie}", asked.lock().unwrap());
        client.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
        let err = client.send(b"x").and_then(|_| client.recv(&mut [0u8; 8])).unwrap_err();
        assert!(err.raw_os_error().is_some(), "the closed socket fails: {err}");
    }
}
