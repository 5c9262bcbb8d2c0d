//! Rust view of `bpf/include/sluice_abi.h`. The C header owns the layout; the datapath crate's
//! BTF test fails when these mirrors disagree with the compiled object.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const SCOPE_EXT: u8 = 0;
pub const SCOPE_INT: u8 = 1;

pub const SVC_F_CLUSTER_IP: u16 = 1 << 0;
pub const SVC_F_NODE_PORT: u16 = 1 << 1;
pub const SVC_F_EXTERNAL_IP: u16 = 1 << 2;
pub const SVC_F_LOAD_BALANCER: u16 = 1 << 3;
pub const SVC_F_TWO_SCOPES: u16 = 1 << 4;
pub const SVC_F_AFFINITY: u16 = 1 << 5;
pub const SVC_F_EXT_LOCAL: u16 = 1 << 6;
pub const SVC_F_INT_LOCAL: u16 = 1 << 7;
pub const SVC_F_TERMINATING_FALLBACK: u16 = 1 << 8;

pub const LB_ALG_RANDOM: u8 = 0;
pub const LB_ALG_MAGLEV: u8 = 1;

pub const BACKEND_F_TERMINATING: u8 = 1 << 0;
pub const BACKEND_F_LOCAL: u8 = 1 << 1;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

pub const MAP_SERVICES: &str = "sluice_svc_v1";
pub const MAP_BACKENDS: &str = "sluice_backends_v1";
pub const MAP_REVNAT: &str = "sluice_revnat_v1";
pub const MAP_SOCK_REVNAT: &str = "sluice_sock_revnat_v1";
pub const MAP_COUNTERS: &str = "sluice_counters_v1";
pub const MAP_NAMES: &str = "sluice_frontend_names_v1";
/// Every map the agent pins; the CLI opens them by these names.
pub const ALL_MAPS: [&str; 6] =
    [MAP_SERVICES, MAP_BACKENDS, MAP_REVNAT, MAP_SOCK_REVNAT, MAP_COUNTERS, MAP_NAMES];

pub const SERVICES_MAX: u32 = 65536;
pub const BACKENDS_MAX: u32 = 65536;
pub const REVNAT_MAX: u32 = 65536;

/// Per-CPU counter indices (`enum sluice_counter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    SockXlate = 0,
    SockNoBackend = 1,
    SockMissingSlot = 2,
    SockRevnat = 3,
    SockRevnatStale = 4,
}

impl Counter {
    pub const ALL: [Counter; 5] = [
        Counter::SockXlate,
        Counter::SockNoBackend,
        Counter::SockMissingSlot,
        Counter::SockRevnat,
        Counter::SockRevnatStale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::SockXlate => "sock_translated",
            Counter::SockNoBackend => "sock_rejected_no_backend",
            Counter::SockMissingSlot => "sock_missing_slot",
            Counter::SockRevnat => "sock_reverse_translated",
            Counter::SockRevnatStale => "sock_reverse_stale",
        }
    }
}

/// 16-byte address; IPv4 is stored v4-mapped so one map holds both families.
#[repr(C, align(4))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Addr(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => Addr(v6.octets()),
        }
    }
}

impl From<Ipv4Addr> for Addr {
    fn from(ip: Ipv4Addr) -> Self {
        IpAddr::V4(ip).into()
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ip())
    }
}

/// `struct sluice_svc_key`; `port` is in network byte order as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct SvcKey {
    pub addr: Addr,
    pub port_be: u16,
    pub proto: u8,
    pub scope: u8,
    pub slot: u16,
    pub pad: u16,
}

impl SvcKey {
    pub fn new(ip: IpAddr, port: u16, proto: u8, scope: u8, slot: u16) -> Self {
        SvcKey { addr: ip.into(), port_be: port.to_be(), proto, scope, slot, pad: 0 }
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// `struct sluice_svc_value`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SvcValue {
    pub backend_id: u32,
    pub affinity_timeout: u32,
    pub count: u16,
    pub rev_nat_id: u16,
    pub flags: u16,
    pub lb_alg: u8,
    pub pad: u8,
}

/// `struct sluice_backend`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Backend {
    pub addr: Addr,
    pub port_be: u16,
    pub proto: u8,
    pub flags: u8,
    pub zone: u32,
}

impl Backend {
    pub fn new(ip: IpAddr, port: u16, proto: u8, flags: u8) -> Self {
        Backend { addr: ip.into(), port_be: port.to_be(), proto, flags, zone: 0 }
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// `struct sluice_revnat_key`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct RevNatKey {
    pub id: u32,
}

/// `struct sluice_revnat_value`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct RevNatValue {
    pub addr: Addr,
    pub port_be: u16,
    pub pad: u16,
}

impl RevNatValue {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        RevNatValue { addr: ip.into(), port_be: port.to_be(), pad: 0 }
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// `struct sluice_frontend_name`: a NUL-padded "namespace/name".
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FrontendName {
    pub name: [u8; 128],
}

impl FrontendName {
    pub fn new(text: &str) -> Self {
        let mut name = [0u8; 128];
        // Kubernetes caps namespace and name at 63 bytes each, so this never truncates them.
        let len = text.len().min(127);
        name[..len].copy_from_slice(&text.as_bytes()[..len]);
        FrontendName { name }
    }
    pub fn as_str(&self) -> &str {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        std::str::from_utf8(&self.name[..end]).unwrap_or("?")
    }
}

/// `struct sluice_sock_revnat_key`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SockRevNatKey {
    pub cookie: u64,
    pub addr: Addr,
    pub port_be: u16,
    pub pad1: u16,
    pub pad2: u32,
}

/// `struct sluice_sock_revnat_value`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SockRevNatValue {
    pub addr: Addr,
    pub port_be: u16,
    pub rev_nat_id: u16,
}

/// Field offsets and sizes of each mirror, in the names the C header uses, for the BTF check.
pub fn layouts() -> Vec<(&'static str, usize, Vec<(&'static str, usize)>)> {
    use std::mem::{offset_of, size_of};
    vec![
        ("sluice_addr", size_of::<Addr>(), vec![]),
        (
            "sluice_svc_key",
            size_of::<SvcKey>(),
            vec![
                ("addr", offset_of!(SvcKey, addr)),
                ("port", offset_of!(SvcKey, port_be)),
                ("proto", offset_of!(SvcKey, proto)),
                ("scope", offset_of!(SvcKey, scope)),
                ("slot", offset_of!(SvcKey, slot)),
                ("pad", offset_of!(SvcKey, pad)),
            ],
        ),
        (
            "sluice_svc_value",
            size_of::<SvcValue>(),
            vec![
                ("backend_id", offset_of!(SvcValue, backend_id)),
                ("affinity_timeout", offset_of!(SvcValue, affinity_timeout)),
                ("count", offset_of!(SvcValue, count)),
                ("rev_nat_id", offset_of!(SvcValue, rev_nat_id)),
                ("flags", offset_of!(SvcValue, flags)),
                ("lb_alg", offset_of!(SvcValue, lb_alg)),
                ("pad", offset_of!(SvcValue, pad)),
            ],
        ),
        (
            "sluice_backend",
            size_of::<Backend>(),
            vec![
                ("addr", offset_of!(Backend, addr)),
                ("port", offset_of!(Backend, port_be)),
                ("proto", offset_of!(Backend, proto)),
                ("flags", offset_of!(Backend, flags)),
                ("zone", offset_of!(Backend, zone)),
            ],
        ),
        ("sluice_revnat_key", size_of::<RevNatKey>(), vec![("id", offset_of!(RevNatKey, id))]),
        (
            "sluice_revnat_value",
            size_of::<RevNatValue>(),
            vec![
                ("addr", offset_of!(RevNatValue, addr)),
                ("port", offset_of!(RevNatValue, port_be)),
                ("pad", offset_of!(RevNatValue, pad)),
            ],
        ),
        ("sluice_frontend_name", size_of::<FrontendName>(), vec![("name", offset_of!(FrontendName, name))]),
        (
            "sluice_sock_revnat_key",
            size_of::<SockRevNatKey>(),
            vec![
                ("cookie", offset_of!(SockRevNatKey, cookie)),
                ("addr", offset_of!(SockRevNatKey, addr)),
                ("port", offset_of!(SockRevNatKey, port_be)),
                ("pad1", offset_of!(SockRevNatKey, pad1)),
                ("pad2", offset_of!(SockRevNatKey, pad2)),
            ],
        ),
        (
            "sluice_sock_revnat_value",
            size_of::<SockRevNatValue>(),
            vec![
                ("addr", offset_of!(SockRevNatValue, addr)),
                ("port", offset_of!(SockRevNatValue, port_be)),
                ("rev_nat_id", offset_of!(SockRevNatValue, rev_nat_id)),
            ],
        ),
    ]
}

#[cfg(feature = "aya")]
mod pod {
    // SAFETY: every type is repr(C), Copy, made of integers with explicit padding fields, so
    // any byte pattern is a valid value and no uninitialised padding is read.
    unsafe impl aya::Pod for super::Addr {}
    unsafe impl aya::Pod for super::SvcKey {}
    unsafe impl aya::Pod for super::SvcValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::RevNatKey {}
    unsafe impl aya::Pod for super::RevNatValue {}
    unsafe impl aya::Pod for super::FrontendName {}
    unsafe impl aya::Pod for super::SockRevNatKey {}
    unsafe impl aya::Pod for super::SockRevNatValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_addresses_round_trip_through_v4_mapped_form() {
        let ip: IpAddr = "10.96.0.10".parse().unwrap();
        let a = Addr::from(ip);
        assert_eq!(&a.0[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(a.ip(), ip);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(Addr::from(v6).ip(), v6);
    }

    #[test]
    fn sizes_match_the_c_static_asserts() {
        let sizes: Vec<(&str, usize)> = layouts().iter().map(|(n, s, _)| (*n, *s)).collect();
        assert_eq!(
            sizes,
            vec![
                ("sluice_addr", 16),
                ("sluice_svc_key", 24),
                ("sluice_svc_value", 16),
                ("sluice_backend", 24),
                ("sluice_revnat_key", 4),
                ("sluice_revnat_value", 20),
                ("sluice_frontend_name", 128),
                ("sluice_sock_revnat_key", 32),
                ("sluice_sock_revnat_value", 20),
            ]
        );
    }
}
