//! The names scenarios speak in: verdicts, protocols, and the addresses of cluster.yaml and of
//! the clients sending to it.

use std::net::{Ipv4Addr, Ipv6Addr};

// The programs' return values, as the kernel defines them (not exported by aya for test runs).
pub const TC_ACT_UNSPEC: i32 = -1;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;
pub const XDP_REDIRECT: i32 = 4;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;
pub const ICMP: u8 = 1;
pub const ICMP6: u8 = 58;
/// IPv6's Fragment extension header, as a next header.
pub const IPV6_FRAGMENT: u8 = 44;

// SCTP chunk types.
pub const SCTP_DATA: u8 = 0;
pub const SCTP_INIT: u8 = 1;
pub const SCTP_INIT_ACK: u8 = 2;

// TCP flags.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// The node under test (node-a).
pub const NODE4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 11);
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x11);
/// The one backend on node-a (local-only, lb-local, mixed).
pub const LOCAL_BE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
/// On node-b (remote-only, lb, mixed; port 8080 TCP, 5353 UDP).
pub const REMOTE_BE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
pub const REMOTE_BE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 2);
/// On node-a (zzzz-udp6-local, 5353 UDP).
pub const LOCAL_BE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 2);
/// LoadBalancer `zzzz-udp6` (UDP, NodePort 30056; its backend REMOTE_BE6).
pub const LB6_REMOTE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x31, 0, 0, 0, 0, 0, 0x100);
/// LoadBalancer `lb` (remote backend, loadBalancerSourceRanges 192.0.2.0/24).
pub const LB_REMOTE: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 100);
/// LoadBalancer `lb-local` (local backend).
pub const LB_LOCAL: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 101);
/// The `sticky` Service's externalIP (sessionAffinity ClientIP, NodePort 30087).
pub const STICKY_EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 87);
/// LoadBalancer `etp-local` (externalTrafficPolicy Local, its backend on node-b).
pub const LB_ETP_LOCAL: Ipv4Addr = Ipv4Addr::new(172, 31, 1, 110);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
/// Inside the LoadBalancer's loadBalancerSourceRanges (192.0.2.0/24).
pub const CLIENT_IN_RANGE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
pub const CLIENT_OUT_OF_RANGE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

pub const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_NODE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
pub const MAC_BACKEND: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
/// The node's end of the veth that `routes_to_backends` builds (the next hop's source MAC).
pub const MAC_S0: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
