//! Rust view of `bpf/include/sluice_abi.h`. The C header owns the layout; the datapath crate's
//! BTF test fails when these mirrors disagree with the compiled object.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const SCOPE_EXT: u8 = 0;
pub const SCOPE_INT: u8 = 1;
/// Affinity set bits (`sluice_affinity_key.set`): the local endpoint set of a Local policy,
/// and UDP (TCP and UDP ports of one number are two Service ports).
pub const AFFINITY_LOCAL: u8 = 1 << 0;
pub const AFFINITY_UDP: u8 = 1 << 1;
pub const AFFINITY_SCTP: u8 = 1 << 2;
/// Where a header's backend_id keeps the set, above the group.
pub const AFFINITY_SET_SHIFT: u32 = 16;

/// A header's affinity group word (its slot 0 `backend_id`): group | set << AFFINITY_SET_SHIFT.
pub fn affinity_group(group: u16, set: u8) -> u32 {
    u32::from(group) | u32::from(set) << AFFINITY_SET_SHIFT
}

pub const SVC_F_CLUSTER_IP: u16 = 1 << 0;
pub const SVC_F_NODE_PORT: u16 = 1 << 1;
pub const SVC_F_EXTERNAL_IP: u16 = 1 << 2;
pub const SVC_F_LOAD_BALANCER: u16 = 1 << 3;
pub const SVC_F_TWO_SCOPES: u16 = 1 << 4;
pub const SVC_F_AFFINITY: u16 = 1 << 5;
pub const SVC_F_EXT_LOCAL: u16 = 1 << 6;
pub const SVC_F_INT_LOCAL: u16 = 1 << 7;
pub const SVC_F_TERMINATING_FALLBACK: u16 = 1 << 8;
pub const SVC_F_SOURCE_RANGES: u16 = 1 << 9;
pub const SVC_F_TOPOLOGY_ZONE: u16 = 1 << 10;
pub const SVC_F_TOPOLOGY_NODE: u16 = 1 << 11;
pub const SVC_F_NO_ENDPOINTS: u16 = 1 << 12;

pub const CT_F_SNAT: u8 = 1 << 0;
pub const CT_F_LOCAL: u8 = 1 << 1;
pub const CT_F_FIN_FWD: u8 = 1 << 2;
pub const CT_F_FIN_REV: u8 = 1 << 3;
pub const CT_F_CLOSED: u8 = CT_F_FIN_FWD | CT_F_FIN_REV;
/// `SLUICE_CT_F_XDP_UNANSWERED`: a flow XDP created to a remote backend, no reply seen yet.
pub const CT_F_XDP_UNANSWERED: u8 = 1 << 4;
pub const CT_FORWARD: u8 = 0;
pub const CT_REVERSE: u8 = 1;
/// A conntrack epoch (`CtValue::epoch`) is `1 << CT_EPOCH_SHIFT` ns of CLOCK_MONOTONIC_COARSE.
pub const CT_EPOCH_SHIFT: u32 = 36;
/// A UDP flow idle for this many epochs is over.
pub const CT_UDP_TIMEOUT_EPOCHS: u8 = 2;
/// A handshake tick (`CtHandshake::syn_at`) is `1 << CT_HS_TICK_SHIFT` ns of CLOCK_MONOTONIC_COARSE.
pub const CT_HS_TICK_SHIFT: u32 = 26;
/// A SYN with the same sequence number this many ticks after the last is the client's SYN sent again.
pub const CT_HS_RESENT_TICKS: u16 = 8;
/// A handshake whose client sent no SYN for this many ticks may lose its SNAT port to a new flow.
pub const CT_HS_STALE_TICKS: u16 = 150;
/// The source ports SNAT chooses from, both included.
pub const SNAT_PORT_MIN: u16 = 32768;
pub const SNAT_PORT_MAX: u16 = 60999;

pub const CFG_F_XDP_ACCEL: u32 = 1 << 0;
pub const CFG_F_HOST_NS_ONLY: u32 = 1 << 1;

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
pub const MAP_SRC_RANGES: &str = "sluice_src_ranges_v1";
pub const MAP_LB_ADDRS: &str = "sluice_lb_addrs_v1";
pub const MAP_NODEPORTS: &str = "sluice_nodeports_v1";
/// Established TCP flows (the name from before the split into three tables, so they survive it).
pub const MAP_CT: &str = "sluice_ct_v1";
pub const MAP_CT_HANDSHAKE: &str = "sluice_ct_handshake_v1";
pub const MAP_CT_OTHER: &str = "sluice_ct_other_v1";
/// The conntrack tables an agent replaced (resized), in slots while its programs take over.
pub const MAP_CT_PREVIOUS: &str = "sluice_ct_previous_v1";
pub const MAP_CT_HANDSHAKE_PREVIOUS: &str = "sluice_ct_handshake_previous_v1";
pub const CT_PREVIOUS_TCP: u32 = 0;
pub const CT_PREVIOUS_OTHER: u32 = 1;
pub const CT_PREVIOUS_SLOTS: u32 = 2;
pub const MAP_CONFIG: &str = "sluice_config_v1";
pub const MAP_BLOCKLIST: &str = "sluice_blocklist_v1";
pub const MAP_BLOCK_HITS: &str = "sluice_block_hits_v1";
pub const MAP_HOST_NETNS: &str = "sluice_host_netns_v1";
pub const MAP_EVENTS: &str = "sluice_events_v2";
pub const MAP_MONITOR: &str = "sluice_monitor_v1";
pub const MAP_AFFINITY: &str = "sluice_affinity_v1";
pub const MAP_MAGLEV: &str = "sluice_maglev_v1";
pub const MAP_AGENT_STATUS: &str = "sluice_agent_status_v1";
pub const MAP_PROBLEMS: &str = "sluice_problems_v1";
pub const MAP_XDP_DEVICES: &str = "sluice_xdp_devices_v1";
pub const MAP_FRAG: &str = "sluice_frag_v2";
pub const MAP_NETNS_ADDRS: &str = "sluice_netns_addrs_v1";
pub const MAP_PORT_FILTER: &str = "sluice_port_filter_v1";
/// Every map the agent pins; the CLI opens them by these names.
pub const ALL_MAPS: [&str; 28] = [
    MAP_SERVICES,
    MAP_BACKENDS,
    MAP_REVNAT,
    MAP_SOCK_REVNAT,
    MAP_COUNTERS,
    MAP_NAMES,
    MAP_SRC_RANGES,
    MAP_LB_ADDRS,
    MAP_NODEPORTS,
    MAP_CT,
    MAP_CT_HANDSHAKE,
    MAP_CT_OTHER,
    MAP_CT_PREVIOUS,
    MAP_CT_HANDSHAKE_PREVIOUS,
    MAP_CONFIG,
    MAP_BLOCKLIST,
    MAP_BLOCK_HITS,
    MAP_HOST_NETNS,
    MAP_EVENTS,
    MAP_MONITOR,
    MAP_AFFINITY,
    MAP_MAGLEV,
    MAP_AGENT_STATUS,
    MAP_PROBLEMS,
    MAP_XDP_DEVICES,
    MAP_FRAG,
    MAP_NETNS_ADDRS,
    MAP_PORT_FILTER,
];

pub const SERVICES_MAX: u32 = 65536;
pub const BACKENDS_MAX: u32 = 65536;
pub const REVNAT_MAX: u32 = 65536;
pub const SRC_RANGES_MAX: u32 = 16384;
pub const LB_ADDRS_MAX: u32 = 16384;
pub const NODEPORTS_MAX: u32 = 32768;
pub const CT_MAX: u32 = 262144;
pub const CT_HANDSHAKE_MAX: u32 = 65536;
pub const CT_OTHER_MAX: u32 = 131072;
pub const SOCK_REVNAT_MAX: u32 = 262144;
pub const BLOCKLIST_MAX: u32 = 16384;
pub const PROBLEMS_MAX: u32 = 4096;
pub const AFFINITY_MAX: u32 = 65536;
pub const MAGLEV_MAX: u32 = 16384;
pub const XDP_DEVICES_MAX: u32 = 256;
pub const FRAG_MAX: u32 = 8192;
pub const NETNS_ADDRS_MAX: u32 = 65536;
/// Entries of one Maglev table (a prime).
pub const MAGLEV_M: usize = 1021;
/// Frontend (rev-NAT) ids are 24 bits; connection state (conntrack, Maglev tables, affinity
/// groups) keeps them in 16, so the frontends it records take ids up to the narrow maximum.
pub const REV_NAT_ID_MAX: u32 = 0xff_ffff;
pub const REV_NAT_ID_NARROW_MAX: u32 = 0xffff;
/// Destination ports one blocklist entry can be limited to.
pub const BLOCK_PORTS: usize = 8;

/// Per-CPU counter indices (`enum sluice_counter`), in the header's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    SockXlate = 0,
    SockNoBackend,
    SockMissingSlot,
    SockRevnat,
    SockRevnatStale,
    NpNewFlow,
    NpForward,
    NpReverse,
    NpIcmpError,
    NpRejectNoBackend,
    NpDropLocalNone,
    NpDropSnatPort,
    NpFibFail,
    XdpDropSourceRange,
    XdpDropUnknownPort,
    XdpForward,
    XdpReverse,
    XdpPassLocal,
    BindDenied,
    XdpDropBlocklist,
    MonitorLost,
    NpDropError,
    XdpLostTx,
    XdpLostRedirect,
    XdpLostOther,
    XdpFlowAnswered,
    XdpSynUnanswered,
    NpDropFragUnknown,
    NpFragUntracked,
    SockSourceRange,
    NpDropNotSyn,
    XdpDropNotSyn,
    NpEstablished,
    NpAckUnproven,
    CtTcpInserted,
    CtHandshakeInserted,
    CtHandshakeDeleted,
    CtOtherInserted,
    CtOtherDeleted,
    CtTakenOver,
}

impl Counter {
    pub const ALL: [Counter; 40] = [
        Counter::SockXlate,
        Counter::SockNoBackend,
        Counter::SockMissingSlot,
        Counter::SockRevnat,
        Counter::SockRevnatStale,
        Counter::NpNewFlow,
        Counter::NpForward,
        Counter::NpReverse,
        Counter::NpIcmpError,
        Counter::NpRejectNoBackend,
        Counter::NpDropLocalNone,
        Counter::NpDropSnatPort,
        Counter::NpFibFail,
        Counter::XdpDropSourceRange,
        Counter::XdpDropUnknownPort,
        Counter::XdpForward,
        Counter::XdpReverse,
        Counter::XdpPassLocal,
        Counter::BindDenied,
        Counter::XdpDropBlocklist,
        Counter::MonitorLost,
        Counter::NpDropError,
        Counter::XdpLostTx,
        Counter::XdpLostRedirect,
        Counter::XdpLostOther,
        Counter::XdpFlowAnswered,
        Counter::XdpSynUnanswered,
        Counter::NpDropFragUnknown,
        Counter::NpFragUntracked,
        Counter::SockSourceRange,
        Counter::NpDropNotSyn,
        Counter::XdpDropNotSyn,
        Counter::NpEstablished,
        Counter::NpAckUnproven,
        Counter::CtTcpInserted,
        Counter::CtHandshakeInserted,
        Counter::CtHandshakeDeleted,
        Counter::CtOtherInserted,
        Counter::CtOtherDeleted,
        Counter::CtTakenOver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::SockXlate => "sock_translated",
            Counter::SockNoBackend => "sock_rejected_no_backend",
            Counter::SockMissingSlot => "missing_slot",
            Counter::SockRevnat => "sock_reverse_translated",
            Counter::SockRevnatStale => "sock_reverse_stale",
            Counter::NpNewFlow => "nodeport_new_flow",
            Counter::NpForward => "nodeport_forward",
            Counter::NpReverse => "nodeport_reverse",
            Counter::NpIcmpError => "nodeport_icmp_error_translated",
            Counter::NpRejectNoBackend => "nodeport_rejected_no_backend",
            Counter::NpDropLocalNone => "nodeport_drop_no_local_backend",
            Counter::NpDropSnatPort => "nodeport_drop_no_snat_port",
            Counter::NpFibFail => "nodeport_fib_miss",
            Counter::XdpDropSourceRange => "xdp_drop_source_range",
            Counter::XdpDropUnknownPort => "xdp_drop_unknown_port",
            Counter::XdpForward => "xdp_forward",
            Counter::XdpReverse => "xdp_reverse",
            Counter::XdpPassLocal => "xdp_pass_local_backend",
            Counter::BindDenied => "bind_denied",
            Counter::XdpDropBlocklist => "xdp_drop_blocklist",
            Counter::MonitorLost => "monitor_events_lost",
            Counter::NpDropError => "nodeport_drop_internal_error",
            Counter::XdpLostTx => "xdp_lost_tx",
            Counter::XdpLostRedirect => "xdp_lost_redirect",
            Counter::XdpLostOther => "xdp_lost_other",
            Counter::XdpFlowAnswered => "xdp_flow_answered",
            Counter::XdpSynUnanswered => "xdp_syn_unanswered",
            Counter::NpDropFragUnknown => "nodeport_drop_fragment_unknown",
            Counter::NpFragUntracked => "nodeport_fragment_untracked",
            Counter::SockSourceRange => "sock_rejected_source_range",
            Counter::NpDropNotSyn => "nodeport_drop_untracked_not_syn",
            Counter::XdpDropNotSyn => "xdp_drop_untracked_not_syn",
            Counter::NpEstablished => "nodeport_flow_established",
            Counter::NpAckUnproven => "nodeport_ack_unproven",
            Counter::CtTcpInserted => "conntrack_tcp_inserted",
            Counter::CtHandshakeInserted => "conntrack_handshake_inserted",
            Counter::CtHandshakeDeleted => "conntrack_handshake_deleted",
            Counter::CtOtherInserted => "conntrack_other_inserted",
            Counter::CtOtherDeleted => "conntrack_other_deleted",
            Counter::CtTakenOver => "conntrack_taken_over",
        }
    }

    /// Its enumerator in `enum sluice_counter`.
    pub fn c_name(self) -> &'static str {
        match self {
            Counter::SockXlate => "SLUICE_CNT_SOCK_XLATE",
            Counter::SockNoBackend => "SLUICE_CNT_SOCK_NO_BACKEND",
            Counter::SockMissingSlot => "SLUICE_CNT_SOCK_MISSING_SLOT",
            Counter::SockRevnat => "SLUICE_CNT_SOCK_REVNAT",
            Counter::SockRevnatStale => "SLUICE_CNT_SOCK_REVNAT_STALE",
            Counter::NpNewFlow => "SLUICE_CNT_NP_NEW_FLOW",
            Counter::NpForward => "SLUICE_CNT_NP_FORWARD",
            Counter::NpReverse => "SLUICE_CNT_NP_REVERSE",
            Counter::NpIcmpError => "SLUICE_CNT_NP_ICMP_ERROR",
            Counter::NpRejectNoBackend => "SLUICE_CNT_NP_REJECT_NO_BACKEND",
            Counter::NpDropLocalNone => "SLUICE_CNT_NP_DROP_LOCAL_NONE",
            Counter::NpDropSnatPort => "SLUICE_CNT_NP_DROP_SNAT_PORT",
            Counter::NpFibFail => "SLUICE_CNT_NP_FIB_FAIL",
            Counter::XdpDropSourceRange => "SLUICE_CNT_XDP_DROP_SOURCE_RANGE",
            Counter::XdpDropUnknownPort => "SLUICE_CNT_XDP_DROP_UNKNOWN_PORT",
            Counter::XdpForward => "SLUICE_CNT_XDP_FORWARD",
            Counter::XdpReverse => "SLUICE_CNT_XDP_REVERSE",
            Counter::XdpPassLocal => "SLUICE_CNT_XDP_PASS_LOCAL",
            Counter::BindDenied => "SLUICE_CNT_BIND_DENIED",
            Counter::XdpDropBlocklist => "SLUICE_CNT_XDP_DROP_BLOCKLIST",
            Counter::MonitorLost => "SLUICE_CNT_MONITOR_LOST",
            Counter::NpDropError => "SLUICE_CNT_NP_DROP_ERROR",
            Counter::XdpLostTx => "SLUICE_CNT_XDP_LOST_TX",
            Counter::XdpLostRedirect => "SLUICE_CNT_XDP_LOST_REDIRECT",
            Counter::XdpLostOther => "SLUICE_CNT_XDP_LOST_OTHER",
            Counter::XdpFlowAnswered => "SLUICE_CNT_XDP_FLOW_ANSWERED",
            Counter::XdpSynUnanswered => "SLUICE_CNT_XDP_SYN_UNANSWERED",
            Counter::NpDropFragUnknown => "SLUICE_CNT_NP_DROP_FRAG_UNKNOWN",
            Counter::NpFragUntracked => "SLUICE_CNT_NP_FRAG_UNTRACKED",
            Counter::SockSourceRange => "SLUICE_CNT_SOCK_SOURCE_RANGE",
            Counter::NpDropNotSyn => "SLUICE_CNT_NP_DROP_NOT_SYN",
            Counter::XdpDropNotSyn => "SLUICE_CNT_XDP_DROP_NOT_SYN",
            Counter::NpEstablished => "SLUICE_CNT_NP_ESTABLISHED",
            Counter::NpAckUnproven => "SLUICE_CNT_NP_ACK_UNPROVEN",
            Counter::CtTcpInserted => "SLUICE_CNT_CT_TCP_INSERTED",
            Counter::CtHandshakeInserted => "SLUICE_CNT_CT_HANDSHAKE_INSERTED",
            Counter::CtHandshakeDeleted => "SLUICE_CNT_CT_HANDSHAKE_DELETED",
            Counter::CtOtherInserted => "SLUICE_CNT_CT_OTHER_INSERTED",
            Counter::CtOtherDeleted => "SLUICE_CNT_CT_OTHER_DELETED",
            Counter::CtTakenOver => "SLUICE_CNT_CT_TAKEN_OVER",
        }
    }

    /// Whether the counter counts packets or connections the datapath dropped or refused.
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::SockNoBackend
                | Counter::SockSourceRange
                | Counter::SockMissingSlot
                | Counter::NpRejectNoBackend
                | Counter::NpDropLocalNone
                | Counter::NpDropSnatPort
                | Counter::XdpDropSourceRange
                | Counter::XdpDropUnknownPort
                | Counter::BindDenied
                | Counter::XdpDropBlocklist
                | Counter::NpDropError
                | Counter::XdpLostTx
                | Counter::XdpLostRedirect
                | Counter::XdpLostOther
                | Counter::NpDropFragUnknown
                | Counter::NpDropNotSyn
                | Counter::XdpDropNotSyn
        )
    }
}

/// 16-byte address; IPv4 is stored v4-mapped so one map holds both families.
#[repr(C, align(4))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// The address's bit in the port filter's `lb_addr` (`addr_hash16` in bpf/lib/nodeport.h,
    /// which reads the four words as the datapath stores them: in the host's byte order).
    pub fn hash16(&self) -> u16 {
        let h = self.0.chunks_exact(4).map(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes"))).fold(0, |h, w| h ^ w);
        (h.wrapping_mul(0x9e37_79b1) >> 16) as u16
    }

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
    /// Bits 0..15 of the frontend's id; `rev_nat_id()` has all of it.
    pub rev_nat_id_lo: u16,
    pub flags: u16,
    pub lb_alg: u8,
    pub rev_nat_id_hi: u8,
}

impl SvcValue {
    /// The frontend's id (24 bits, over two fields: see `sluice_svc_value`).
    pub fn rev_nat_id(&self) -> u32 {
        u32::from(self.rev_nat_id_lo) | u32::from(self.rev_nat_id_hi) << 16
    }

    /// The id as connection state keeps it, as `narrow_rev_nat_id` in lb.h: itself when
    /// narrow, else 0.
    pub fn narrow_rev_nat_id(&self) -> u16 {
        u16::try_from(self.rev_nat_id()).unwrap_or(0)
    }

    pub fn with_rev_nat_id(self, id: u32) -> Self {
        debug_assert!(id <= REV_NAT_ID_MAX, "rev-NAT id {id} over 24 bits");
        SvcValue { rev_nat_id_lo: id as u16, rev_nat_id_hi: (id >> 16) as u8, ..self }
    }
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

/// `struct sluice_netns_addrs`: the source each family's unbound sockets of a network namespace get.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct NetnsAddrs {
    pub v4: Addr,
    pub v6: Addr,
}

pub const PORT_FILTER_WORDS: usize = 1024;
/// `SLUICE_PORT_FILTER_F_COMPLETE`: the programs may filter by the ports below.
pub const PORT_FILTER_F_COMPLETE: u32 = 1 << 0;

/// A set of 16-bit numbers, one bit each, as `struct sluice_port_filter` keeps ports (host byte
/// order) and address hashes ([`Addr::hash16`]).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct U16Set(pub [u64; PORT_FILTER_WORDS]);

impl Default for U16Set {
    fn default() -> Self {
        U16Set([0; PORT_FILTER_WORDS])
    }
}

impl U16Set {
    /// Adds `port`; whether it was new.
    pub fn insert(&mut self, port: u16) -> bool {
        let (word, bit) = (usize::from(port >> 6), 1u64 << (port & 63));
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1u64 << (port & 63)) != 0
    }
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.contains(*p))
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

impl std::fmt::Debug for U16Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// `struct sluice_port_filter`: the ports north-south flows can use on this node.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PortFilter {
    pub frontend: U16Set,
    pub local_backend: U16Set,
    pub lb_addr: U16Set,
    pub flags: u32,
    pub pad: u32,
}

/// `struct sluice_src_range_key` (LPM trie key).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct SrcRangeKey {
    pub prefixlen: u32,
    pub rev_nat_id: u32,
    pub addr: Addr,
}

impl SrcRangeKey {
    /// `bits` of `ip` (counted in its own family) for frontend `rev_nat_id`.
    pub fn new(rev_nat_id: u32, ip: IpAddr, bits: u8) -> Self {
        let bits = u32::from(bits) + if ip.is_ipv4() { 96 } else { 0 };
        SrcRangeKey { prefixlen: 32 + bits, rev_nat_id, addr: ip.into() }
    }
    /// The part after the prefix length, as aya's LPM `Key` wants it.
    pub fn data(&self) -> SrcRangeData {
        SrcRangeData { rev_nat_id: self.rev_nat_id, addr: self.addr }
    }
    pub fn from_parts(prefixlen: u32, data: SrcRangeData) -> Self {
        SrcRangeKey { prefixlen, rev_nat_id: data.rev_nat_id, addr: data.addr }
    }
    pub fn prefix_bits(&self) -> u32 {
        let bits = self.prefixlen.saturating_sub(32);
        if self.addr.ip().is_ipv4() { bits.saturating_sub(96) } else { bits }
    }
}

/// The data part of a [`SrcRangeKey`] (everything after `prefixlen`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SrcRangeData {
    pub rev_nat_id: u32,
    pub addr: Addr,
}

/// `struct sluice_frontend_addr_value`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FrontendAddrValue {
    pub flags: u32,
}

/// `struct sluice_nodeport_key`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct NodePortKey {
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct sluice_ct_key`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CtKey {
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: u16,
}

/// `struct sluice_ct_value`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CtValue {
    pub addr1: Addr,
    pub addr2: Addr,
    pub port1_be: u16,
    pub port2_be: u16,
    pub rev_nat_id: u16,
    pub flags: u8,
    /// Last packet of a UDP flow, in epochs of `1 << CT_EPOCH_SHIFT` ns; 0: written before epochs, fresh.
    pub epoch: u8,
}

/// `struct sluice_ct_handshake`: a TCP flow's entry in the handshake table: the client's SYN's
/// sequence number on its forward entry, the backend's SYN-ACK's on its reverse entry, and when
/// the client last sent its SYN (in ticks of `1 << CT_HS_TICK_SHIFT` ns) on both.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CtHandshake {
    pub ct: CtValue,
    pub seq_be: u32,
    pub answered: u8,
    pub pad: u8,
    pub syn_at: u16,
}

/// `struct sluice_frag_key`: a datagram whose fragments are being translated, by what each of
/// its fragments carries (as they arrived); the identification in network byte order (IPv4's
/// 16 bits as a 32-bit number).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FragKey {
    pub saddr: Addr,
    pub daddr: Addr,
    pub id_be: u32,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `struct sluice_frag_ports`: the ports its first fragment carried, network byte order.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FragPorts {
    pub sport_be: u16,
    pub dport_be: u16,
}

/// `struct sluice_block_key` (LPM trie key over the source address).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct BlockKey {
    pub prefixlen: u32,
    pub addr: Addr,
}

impl BlockKey {
    /// `bits` of `ip`, counted in its own family.
    pub fn new(ip: IpAddr, bits: u8) -> Self {
        BlockKey { prefixlen: u32::from(bits) + if ip.is_ipv4() { 96 } else { 0 }, addr: ip.into() }
    }
    pub fn prefix_bits(&self) -> u32 {
        if self.addr.ip().is_ipv4() { self.prefixlen.saturating_sub(96) } else { self.prefixlen }
    }
}

/// `struct sluice_block_port`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct BlockPort {
    pub port_be: u16,
    pub proto: u8,
    pub pad: u8,
}

/// `struct sluice_block_value`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct BlockValue {
    pub id: u32,
    pub nports: u16,
    pub pad: u16,
    pub ports: [BlockPort; BLOCK_PORTS],
}

pub const HOOK_CONNECT4: u8 = 1;
pub const HOOK_CONNECT6: u8 = 2;
pub const HOOK_SENDMSG4: u8 = 3;
pub const HOOK_SENDMSG6: u8 = 4;
pub const HOOK_POST_BIND: u8 = 5;
pub const HOOK_TC: u8 = 6;
pub const HOOK_XDP: u8 = 7;

/// Name of a `SLUICE_HOOK_*`.
pub fn hook_name(hook: u8) -> &'static str {
    match hook {
        HOOK_CONNECT4 => "connect4",
        HOOK_CONNECT6 => "connect6",
        HOOK_SENDMSG4 => "sendmsg4",
        HOOK_SENDMSG6 => "sendmsg6",
        HOOK_POST_BIND => "post_bind",
        HOOK_TC => "tc",
        HOOK_XDP => "xdp",
        _ => "unknown",
    }
}

/// `struct sluice_event`: one datapath decision, as `sluice monitor` receives it.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Event {
    pub ts_ns: u64,
    pub reason: u32,
    pub pid: u32,
    pub hook: u8,
    pub proto: u8,
    pub sport_be: u16,
    pub dport_be: u16,
    pub to_port_be: u16,
    pub rev_nat_id: u32,
    pub saddr: Addr,
    pub daddr: Addr,
    pub to_addr: Addr,
    pub comm: [u8; 16],
}

impl Event {
    /// Reads an event from the bytes of one ring buffer record.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        if bytes.len() < std::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: Event is repr(C) plain integers (any bit pattern valid) and the length is
        // checked; read_unaligned copes with any alignment of the record.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
    }
}

/// `struct sluice_affinity_key`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct AffinityKey {
    pub client: Addr,
    /// The rev-NAT id of the Service port's ClusterIP (see the header).
    pub group: u16,
    /// `AFFINITY_LOCAL | AFFINITY_UDP | AFFINITY_SCTP` bits.
    pub set: u8,
    pub by_cookie: u8,
}

/// `struct sluice_affinity_value`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct AffinityValue {
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub pad: u32,
}

/// `struct sluice_maglev_key`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct MaglevKey {
    pub rev_nat_id: u16,
    pub scope: u8,
    pub proto: u8,
}

/// `struct sluice_maglev_table`: backend ids, indexed by a flow's hash modulo MAGLEV_M.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevTable {
    pub backend_ids: [u32; MAGLEV_M],
}

impl std::fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let distinct: std::collections::BTreeSet<u32> = self.backend_ids.iter().copied().collect();
        write!(f, "MaglevTable({MAGLEV_M} entries over backends {distinct:?})")
    }
}

/// `struct sluice_agent_status`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AgentStatus {
    pub last_sync_unix_ns: u64,
    pub last_sync_duration_ns: u64,
    pub generation: u64,
    pub pid: u32,
    pub failed_syncs: u32,
    pub last_error: [u8; 224],
}

impl Default for AgentStatus {
    fn default() -> Self {
        AgentStatus { last_sync_unix_ns: 0, last_sync_duration_ns: 0, generation: 0, pid: 0, failed_syncs: 0, last_error: [0; 224] }
    }
}

/// `struct sluice_problem`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Problem {
    pub object: [u8; 128],
    pub message: [u8; 256],
}

/// `SLUICE_XDP_DEV_F_ACCEL`: XDP translates and sends flows itself on this device.
pub const XDP_DEV_F_ACCEL: u32 = 1 << 0;

/// `enum sluice_xdp_state`: whether XDP acceleration runs on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum XdpState {
    Off = 0,
    Unproven,
    Accelerated,
    Fallback,
    Failed,
}

impl XdpState {
    pub const ALL: [XdpState; 5] = [XdpState::Off, XdpState::Unproven, XdpState::Accelerated, XdpState::Fallback, XdpState::Failed];

    pub fn from_raw(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u32 == v)
    }

    /// Its enumerator in `enum sluice_xdp_state`.
    pub fn c_name(self) -> &'static str {
        match self {
            XdpState::Off => "SLUICE_XDP_STATE_OFF",
            XdpState::Unproven => "SLUICE_XDP_STATE_UNPROVEN",
            XdpState::Accelerated => "SLUICE_XDP_STATE_ACCELERATED",
            XdpState::Fallback => "SLUICE_XDP_STATE_FALLBACK",
            XdpState::Failed => "SLUICE_XDP_STATE_FAILED",
        }
    }

    /// The word the CLI, SluiceNode status and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            XdpState::Off => "off",
            XdpState::Unproven => "unproven",
            XdpState::Accelerated => "accelerated",
            XdpState::Fallback => "fallback",
            XdpState::Failed => "failed",
        }
    }
}

/// `struct sluice_xdp_device`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct XdpDevice {
    pub flags: u32,
    pub state: u32,
    pub since_ns: u64,
    pub name: [u8; 16],
    pub reason: [u8; 96],
}

impl Default for XdpDevice {
    fn default() -> Self {
        XdpDevice { flags: 0, state: 0, since_ns: 0, name: [0; 16], reason: [0; 96] }
    }
}

/// Copies `s` into a fixed C string field, cut at a character boundary so it stays valid UTF-8
/// and NUL-terminated.
pub fn put_str(field: &mut [u8], s: &str) {
    field.fill(0);
    let mut n = s.len().min(field.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// The string in a fixed C string field, up to its NUL.
pub fn get_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// `struct sluice_config`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Config {
    pub node_ip4: Addr,
    pub node_ip6: Addr,
    pub flags: u32,
    pub pad: u32,
}

/// Every constant mirrored here, by its name in `sluice_abi.h`, for the test that reads the
/// header (`tests/header.rs`): a value that differs, a header constant missing here or a name
/// here the header lacks fails it.
pub fn c_constants() -> Vec<(&'static str, u64)> {
    let mut v: Vec<(&'static str, u64)> = vec![
        ("SLUICE_SCOPE_EXT", SCOPE_EXT.into()),
        ("SLUICE_SCOPE_INT", SCOPE_INT.into()),
        ("SLUICE_AFFINITY_LOCAL", AFFINITY_LOCAL.into()),
        ("SLUICE_AFFINITY_UDP", AFFINITY_UDP.into()),
        ("SLUICE_AFFINITY_SCTP", AFFINITY_SCTP.into()),
        ("SLUICE_AFFINITY_SET_SHIFT", AFFINITY_SET_SHIFT.into()),
        ("SLUICE_SVC_F_CLUSTER_IP", SVC_F_CLUSTER_IP.into()),
        ("SLUICE_SVC_F_NODE_PORT", SVC_F_NODE_PORT.into()),
        ("SLUICE_SVC_F_EXTERNAL_IP", SVC_F_EXTERNAL_IP.into()),
        ("SLUICE_SVC_F_LOAD_BALANCER", SVC_F_LOAD_BALANCER.into()),
        ("SLUICE_SVC_F_TWO_SCOPES", SVC_F_TWO_SCOPES.into()),
        ("SLUICE_SVC_F_AFFINITY", SVC_F_AFFINITY.into()),
        ("SLUICE_SVC_F_EXT_LOCAL", SVC_F_EXT_LOCAL.into()),
        ("SLUICE_SVC_F_INT_LOCAL", SVC_F_INT_LOCAL.into()),
        ("SLUICE_SVC_F_TERMINATING_FALLBACK", SVC_F_TERMINATING_FALLBACK.into()),
        ("SLUICE_SVC_F_SOURCE_RANGES", SVC_F_SOURCE_RANGES.into()),
        ("SLUICE_SVC_F_TOPOLOGY_ZONE", SVC_F_TOPOLOGY_ZONE.into()),
        ("SLUICE_SVC_F_TOPOLOGY_NODE", SVC_F_TOPOLOGY_NODE.into()),
        ("SLUICE_SVC_F_NO_ENDPOINTS", SVC_F_NO_ENDPOINTS.into()),
        ("SLUICE_LB_ALG_RANDOM", LB_ALG_RANDOM.into()),
        ("SLUICE_LB_ALG_MAGLEV", LB_ALG_MAGLEV.into()),
        ("SLUICE_BACKEND_F_TERMINATING", BACKEND_F_TERMINATING.into()),
        ("SLUICE_BACKEND_F_LOCAL", BACKEND_F_LOCAL.into()),
        ("SLUICE_PORT_FILTER_WORDS", PORT_FILTER_WORDS as u64),
        ("SLUICE_PORT_FILTER_F_COMPLETE", PORT_FILTER_F_COMPLETE.into()),
        ("SLUICE_MAGLEV_M", MAGLEV_M as u64),
        ("SLUICE_REV_NAT_ID_MAX", REV_NAT_ID_MAX.into()),
        ("SLUICE_REV_NAT_ID_NARROW_MAX", REV_NAT_ID_NARROW_MAX.into()),
        ("SLUICE_CT_FORWARD", CT_FORWARD.into()),
        ("SLUICE_CT_REVERSE", CT_REVERSE.into()),
        ("SLUICE_CT_PREVIOUS_TCP", CT_PREVIOUS_TCP.into()),
        ("SLUICE_CT_PREVIOUS_OTHER", CT_PREVIOUS_OTHER.into()),
        ("SLUICE_CT_PREVIOUS_SLOTS", CT_PREVIOUS_SLOTS.into()),
        ("SLUICE_CT_F_SNAT", CT_F_SNAT.into()),
        ("SLUICE_CT_F_LOCAL", CT_F_LOCAL.into()),
        ("SLUICE_CT_F_FIN_FWD", CT_F_FIN_FWD.into()),
        ("SLUICE_CT_F_FIN_REV", CT_F_FIN_REV.into()),
        ("SLUICE_CT_F_CLOSED", CT_F_CLOSED.into()),
        ("SLUICE_CT_F_XDP_UNANSWERED", CT_F_XDP_UNANSWERED.into()),
        ("SLUICE_CT_EPOCH_SHIFT", CT_EPOCH_SHIFT.into()),
        ("SLUICE_CT_UDP_TIMEOUT_EPOCHS", CT_UDP_TIMEOUT_EPOCHS.into()),
        ("SLUICE_CT_HS_TICK_SHIFT", CT_HS_TICK_SHIFT.into()),
        ("SLUICE_CT_HS_RESENT_TICKS", CT_HS_RESENT_TICKS.into()),
        ("SLUICE_CT_HS_STALE_TICKS", CT_HS_STALE_TICKS.into()),
        ("SLUICE_SNAT_PORT_MIN", SNAT_PORT_MIN.into()),
        ("SLUICE_SNAT_PORT_MAX", SNAT_PORT_MAX.into()),
        ("SLUICE_BLOCK_PORTS", BLOCK_PORTS as u64),
        ("SLUICE_CFG_F_XDP_ACCEL", CFG_F_XDP_ACCEL.into()),
        ("SLUICE_CFG_F_HOST_NS_ONLY", CFG_F_HOST_NS_ONLY.into()),
        ("SLUICE_XDP_DEV_F_ACCEL", XDP_DEV_F_ACCEL.into()),
        ("SLUICE_HOOK_CONNECT4", HOOK_CONNECT4.into()),
        ("SLUICE_HOOK_CONNECT6", HOOK_CONNECT6.into()),
        ("SLUICE_HOOK_SENDMSG4", HOOK_SENDMSG4.into()),
        ("SLUICE_HOOK_SENDMSG6", HOOK_SENDMSG6.into()),
        ("SLUICE_HOOK_POST_BIND", HOOK_POST_BIND.into()),
        ("SLUICE_HOOK_TC", HOOK_TC.into()),
        ("SLUICE_HOOK_XDP", HOOK_XDP.into()),
        ("SLUICE_SERVICES_MAX", SERVICES_MAX.into()),
        ("SLUICE_BACKENDS_MAX", BACKENDS_MAX.into()),
        ("SLUICE_REVNAT_MAX", REVNAT_MAX.into()),
        ("SLUICE_SOCK_REVNAT_MAX", SOCK_REVNAT_MAX.into()),
        ("SLUICE_NETNS_ADDRS_MAX", NETNS_ADDRS_MAX.into()),
        ("SLUICE_SRC_RANGES_MAX", SRC_RANGES_MAX.into()),
        ("SLUICE_LB_ADDRS_MAX", LB_ADDRS_MAX.into()),
        ("SLUICE_NODEPORTS_MAX", NODEPORTS_MAX.into()),
        ("SLUICE_CT_MAX", CT_MAX.into()),
        ("SLUICE_CT_HANDSHAKE_MAX", CT_HANDSHAKE_MAX.into()),
        ("SLUICE_CT_OTHER_MAX", CT_OTHER_MAX.into()),
        ("SLUICE_BLOCKLIST_MAX", BLOCKLIST_MAX.into()),
        ("SLUICE_PROBLEMS_MAX", PROBLEMS_MAX.into()),
        ("SLUICE_AFFINITY_MAX", AFFINITY_MAX.into()),
        ("SLUICE_MAGLEV_MAX", MAGLEV_MAX.into()),
        ("SLUICE_XDP_DEVICES_MAX", XDP_DEVICES_MAX.into()),
        ("SLUICE_FRAG_MAX", FRAG_MAX.into()),
    ];
    v.extend(Counter::ALL.iter().map(|c| (c.c_name(), *c as u64)));
    v.push(("SLUICE_CNT_MAX", Counter::ALL.len() as u64));
    v.extend(XdpState::ALL.iter().map(|s| (s.c_name(), *s as u64)));
    v
}

/// Every map name, by its `SLUICE_MAP_*` name in the header (checked like [`c_constants`]).
pub fn c_map_names() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SLUICE_MAP_SERVICES", MAP_SERVICES),
        ("SLUICE_MAP_BACKENDS", MAP_BACKENDS),
        ("SLUICE_MAP_REVNAT", MAP_REVNAT),
        ("SLUICE_MAP_SOCK_REVNAT", MAP_SOCK_REVNAT),
        ("SLUICE_MAP_COUNTERS", MAP_COUNTERS),
        ("SLUICE_MAP_NAMES", MAP_NAMES),
        ("SLUICE_MAP_SRC_RANGES", MAP_SRC_RANGES),
        ("SLUICE_MAP_LB_ADDRS", MAP_LB_ADDRS),
        ("SLUICE_MAP_NODEPORTS", MAP_NODEPORTS),
        ("SLUICE_MAP_CT", MAP_CT),
        ("SLUICE_MAP_CT_HANDSHAKE", MAP_CT_HANDSHAKE),
        ("SLUICE_MAP_CT_OTHER", MAP_CT_OTHER),
        ("SLUICE_MAP_CT_PREVIOUS", MAP_CT_PREVIOUS),
        ("SLUICE_MAP_CT_HANDSHAKE_PREVIOUS", MAP_CT_HANDSHAKE_PREVIOUS),
        ("SLUICE_MAP_CONFIG", MAP_CONFIG),
        ("SLUICE_MAP_BLOCKLIST", MAP_BLOCKLIST),
        ("SLUICE_MAP_BLOCK_HITS", MAP_BLOCK_HITS),
        ("SLUICE_MAP_HOST_NETNS", MAP_HOST_NETNS),
        ("SLUICE_MAP_NETNS_ADDRS", MAP_NETNS_ADDRS),
        ("SLUICE_MAP_EVENTS", MAP_EVENTS),
        ("SLUICE_MAP_MONITOR", MAP_MONITOR),
        ("SLUICE_MAP_AFFINITY", MAP_AFFINITY),
        ("SLUICE_MAP_MAGLEV", MAP_MAGLEV),
        ("SLUICE_MAP_AGENT_STATUS", MAP_AGENT_STATUS),
        ("SLUICE_MAP_PROBLEMS", MAP_PROBLEMS),
        ("SLUICE_MAP_XDP_DEVICES", MAP_XDP_DEVICES),
        ("SLUICE_MAP_FRAG", MAP_FRAG),
        ("SLUICE_MAP_PORT_FILTER", MAP_PORT_FILTER),
    ]
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
                ("rev_nat_id", offset_of!(SvcValue, rev_nat_id_lo)),
                ("flags", offset_of!(SvcValue, flags)),
                ("lb_alg", offset_of!(SvcValue, lb_alg)),
                ("rev_nat_id_hi", offset_of!(SvcValue, rev_nat_id_hi)),
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
            vec![("addr", offset_of!(RevNatValue, addr)), ("port", offset_of!(RevNatValue, port_be)), ("pad", offset_of!(RevNatValue, pad))],
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
        ("sluice_netns_addrs", size_of::<NetnsAddrs>(), vec![("v4", offset_of!(NetnsAddrs, v4)), ("v6", offset_of!(NetnsAddrs, v6))]),
        (
            "sluice_port_filter",
            size_of::<PortFilter>(),
            vec![
                ("frontend", offset_of!(PortFilter, frontend)),
                ("local_backend", offset_of!(PortFilter, local_backend)),
                ("lb_addr", offset_of!(PortFilter, lb_addr)),
                ("flags", offset_of!(PortFilter, flags)),
                ("pad", offset_of!(PortFilter, pad)),
            ],
        ),
        (
            "sluice_src_range_key",
            size_of::<SrcRangeKey>(),
            vec![
                ("prefixlen", offset_of!(SrcRangeKey, prefixlen)),
                ("rev_nat_id", offset_of!(SrcRangeKey, rev_nat_id)),
                ("addr", offset_of!(SrcRangeKey, addr)),
            ],
        ),
        ("sluice_frontend_addr_value", size_of::<FrontendAddrValue>(), vec![("flags", offset_of!(FrontendAddrValue, flags))]),
        (
            "sluice_nodeport_key",
            size_of::<NodePortKey>(),
            vec![("port", offset_of!(NodePortKey, port)), ("proto", offset_of!(NodePortKey, proto)), ("pad", offset_of!(NodePortKey, pad))],
        ),
        (
            "sluice_ct_key",
            size_of::<CtKey>(),
            vec![
                ("saddr", offset_of!(CtKey, saddr)),
                ("daddr", offset_of!(CtKey, daddr)),
                ("sport", offset_of!(CtKey, sport_be)),
                ("dport", offset_of!(CtKey, dport_be)),
                ("proto", offset_of!(CtKey, proto)),
                ("dir", offset_of!(CtKey, dir)),
                ("pad", offset_of!(CtKey, pad)),
            ],
        ),
        (
            "sluice_ct_value",
            size_of::<CtValue>(),
            vec![
                ("addr1", offset_of!(CtValue, addr1)),
                ("addr2", offset_of!(CtValue, addr2)),
                ("port1", offset_of!(CtValue, port1_be)),
                ("port2", offset_of!(CtValue, port2_be)),
                ("rev_nat_id", offset_of!(CtValue, rev_nat_id)),
                ("flags", offset_of!(CtValue, flags)),
                ("epoch", offset_of!(CtValue, epoch)),
            ],
        ),
        (
            "sluice_ct_handshake",
            size_of::<CtHandshake>(),
            vec![
                ("ct", offset_of!(CtHandshake, ct)),
                ("seq", offset_of!(CtHandshake, seq_be)),
                ("answered", offset_of!(CtHandshake, answered)),
                ("pad", offset_of!(CtHandshake, pad)),
                ("syn_at", offset_of!(CtHandshake, syn_at)),
            ],
        ),
        ("sluice_block_key", size_of::<BlockKey>(), vec![("prefixlen", offset_of!(BlockKey, prefixlen)), ("addr", offset_of!(BlockKey, addr))]),
        (
            "sluice_block_value",
            size_of::<BlockValue>(),
            vec![
                ("id", offset_of!(BlockValue, id)),
                ("nports", offset_of!(BlockValue, nports)),
                ("pad", offset_of!(BlockValue, pad)),
                ("ports", offset_of!(BlockValue, ports)),
            ],
        ),
        (
            "sluice_event",
            size_of::<Event>(),
            vec![
                ("ts_ns", offset_of!(Event, ts_ns)),
                ("reason", offset_of!(Event, reason)),
                ("pid", offset_of!(Event, pid)),
                ("hook", offset_of!(Event, hook)),
                ("proto", offset_of!(Event, proto)),
                ("sport", offset_of!(Event, sport_be)),
                ("dport", offset_of!(Event, dport_be)),
                ("to_port", offset_of!(Event, to_port_be)),
                ("rev_nat_id", offset_of!(Event, rev_nat_id)),
                ("saddr", offset_of!(Event, saddr)),
                ("daddr", offset_of!(Event, daddr)),
                ("to_addr", offset_of!(Event, to_addr)),
                ("comm", offset_of!(Event, comm)),
            ],
        ),
        (
            "sluice_maglev_key",
            size_of::<MaglevKey>(),
            vec![("rev_nat_id", offset_of!(MaglevKey, rev_nat_id)), ("scope", offset_of!(MaglevKey, scope)), ("proto", offset_of!(MaglevKey, proto))],
        ),
        ("sluice_maglev_table", size_of::<MaglevTable>(), vec![("backend_ids", offset_of!(MaglevTable, backend_ids))]),
        (
            "sluice_affinity_key",
            size_of::<AffinityKey>(),
            vec![
                ("client", offset_of!(AffinityKey, client)),
                ("group", offset_of!(AffinityKey, group)),
                ("set", offset_of!(AffinityKey, set)),
                ("by_cookie", offset_of!(AffinityKey, by_cookie)),
            ],
        ),
        (
            "sluice_affinity_value",
            size_of::<AffinityValue>(),
            vec![
                ("last_used_ns", offset_of!(AffinityValue, last_used_ns)),
                ("backend_id", offset_of!(AffinityValue, backend_id)),
                ("pad", offset_of!(AffinityValue, pad)),
            ],
        ),
        (
            "sluice_agent_status",
            size_of::<AgentStatus>(),
            vec![
                ("last_sync_unix_ns", offset_of!(AgentStatus, last_sync_unix_ns)),
                ("last_sync_duration_ns", offset_of!(AgentStatus, last_sync_duration_ns)),
                ("generation", offset_of!(AgentStatus, generation)),
                ("pid", offset_of!(AgentStatus, pid)),
                ("failed_syncs", offset_of!(AgentStatus, failed_syncs)),
                ("last_error", offset_of!(AgentStatus, last_error)),
            ],
        ),
        ("sluice_problem", size_of::<Problem>(), vec![("object", offset_of!(Problem, object)), ("message", offset_of!(Problem, message))]),
        (
            "sluice_config",
            size_of::<Config>(),
            vec![
                ("node_ip4", offset_of!(Config, node_ip4)),
                ("node_ip6", offset_of!(Config, node_ip6)),
                ("flags", offset_of!(Config, flags)),
                ("pad", offset_of!(Config, pad)),
            ],
        ),
        (
            "sluice_block_port",
            size_of::<BlockPort>(),
            vec![("port", offset_of!(BlockPort, port_be)), ("proto", offset_of!(BlockPort, proto)), ("pad", offset_of!(BlockPort, pad))],
        ),
        (
            "sluice_xdp_device",
            size_of::<XdpDevice>(),
            vec![
                ("flags", offset_of!(XdpDevice, flags)),
                ("state", offset_of!(XdpDevice, state)),
                ("since_ns", offset_of!(XdpDevice, since_ns)),
                ("name", offset_of!(XdpDevice, name)),
                ("reason", offset_of!(XdpDevice, reason)),
            ],
        ),
        (
            "sluice_frag_key",
            size_of::<FragKey>(),
            vec![
                ("saddr", offset_of!(FragKey, saddr)),
                ("daddr", offset_of!(FragKey, daddr)),
                ("id", offset_of!(FragKey, id_be)),
                ("proto", offset_of!(FragKey, proto)),
                ("pad", offset_of!(FragKey, pad)),
            ],
        ),
        ("sluice_frag_ports", size_of::<FragPorts>(), vec![("sport", offset_of!(FragPorts, sport_be)), ("dport", offset_of!(FragPorts, dport_be))]),
    ]
}

#[cfg(feature = "aya")]
mod pod {
    // SAFETY: every type is repr(C), Copy, made of integers with explicit padding fields, so
    // any byte pattern is a valid value and no uninitialised padding is read.
    unsafe impl aya::Pod for super::Addr {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragPorts {}
    unsafe impl aya::Pod for super::NetnsAddrs {}
    unsafe impl aya::Pod for super::PortFilter {}
    unsafe impl aya::Pod for super::SvcKey {}
    unsafe impl aya::Pod for super::SvcValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::RevNatKey {}
    unsafe impl aya::Pod for super::RevNatValue {}
    unsafe impl aya::Pod for super::FrontendName {}
    unsafe impl aya::Pod for super::SockRevNatKey {}
    unsafe impl aya::Pod for super::SockRevNatValue {}
    unsafe impl aya::Pod for super::SrcRangeKey {}
    unsafe impl aya::Pod for super::SrcRangeData {}
    unsafe impl aya::Pod for super::FrontendAddrValue {}
    unsafe impl aya::Pod for super::NodePortKey {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
    unsafe impl aya::Pod for super::CtHandshake {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::AgentStatus {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::MaglevKey {}
    unsafe impl aya::Pod for super::MaglevTable {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::Problem {}
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::BlockPort {}
    unsafe impl aya::Pod for super::BlockValue {}
    unsafe impl aya::Pod for super::XdpDevice {}
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
    fn fixed_strings_are_cut_on_a_character_boundary_and_read_back() {
        let mut field = [0xffu8; 8];
        put_str(&mut field, "héllo wörld");
        assert_eq!(get_str(&field), "héllo ");
        put_str(&mut field, "aaaaaaö");
        assert_eq!(get_str(&field), "aaaaaa", "ö is two bytes; a cut inside it would leave invalid UTF-8");
        assert_eq!(field[7], 0, "always NUL-terminated");
        put_str(&mut field, "ab");
        assert_eq!(get_str(&field), "ab");
    }

    #[test]
    fn port_bits_hold_each_port_in_its_own_bit() {
        let mut bits = U16Set::default();
        assert!(bits.is_empty());
        for port in [0, 63, 64, 8080, 30081, u16::MAX] {
            assert!(bits.insert(port), "{port} is new");
            assert!(!bits.insert(port), "{port} again");
        }
        assert_eq!(bits.iter().collect::<Vec<_>>(), vec![0, 63, 64, 8080, 30081, u16::MAX]);
        assert_eq!(bits.len(), 6);
        assert!(!bits.contains(65) && !bits.contains(8081));
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
                ("sluice_netns_addrs", 32),
                ("sluice_port_filter", 24584),
                ("sluice_src_range_key", 24),
                ("sluice_frontend_addr_value", 4),
                ("sluice_nodeport_key", 4),
                ("sluice_ct_key", 40),
                ("sluice_ct_value", 40),
                ("sluice_ct_handshake", 48),
                ("sluice_block_key", 20),
                ("sluice_block_value", 40),
                ("sluice_event", 96),
                ("sluice_maglev_key", 4),
                ("sluice_maglev_table", 4084),
                ("sluice_affinity_key", 20),
                ("sluice_affinity_value", 16),
                ("sluice_agent_status", 256),
                ("sluice_problem", 384),
                ("sluice_config", 40),
                ("sluice_block_port", 4),
                ("sluice_xdp_device", 128),
                ("sluice_frag_key", 40),
                ("sluice_frag_ports", 4),
            ]
        );
    }
}
