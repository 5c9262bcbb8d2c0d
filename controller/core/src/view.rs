//! Turns map contents back into something a person can read: one row per frontend and scope
//! with its backends. The CLI renders pinned maps with it; golden tests render plans with it.

use std::fmt::Write as _;

use serde::Serialize;
use sluice_abi::{self as abi, SvcKey};

use crate::state::LbState;
use sluice_crds::Protocol;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackendView {
    pub id: u32,
    pub address: String,
    pub port: u16,
    pub flags: Vec<&'static str>,
    /// False when a slot names a backend id the backend map lacks (a corrupt or half-written map).
    pub present: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FrontendView {
    pub service: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub scope: &'static str,
    pub rev_nat_id: u32,
    pub flags: Vec<&'static str>,
    pub affinity_timeout_seconds: Option<u32>,
    /// The session-affinity group this scope shares with its Service port's other frontends:
    /// the rev-NAT id of the port's ClusterIP, and `local` / `udp` when the set says so.
    pub affinity_group: Option<String>,
    /// loadBalancerSourceRanges, as CIDRs.
    pub source_ranges: Vec<String>,
    pub backends: Vec<BackendView>,
}

const SVC_FLAG_NAMES: [(u16, &str); 13] = [
    (abi::SVC_F_CLUSTER_IP, "ClusterIP"),
    (abi::SVC_F_NODE_PORT, "NodePort"),
    (abi::SVC_F_EXTERNAL_IP, "ExternalIP"),
    (abi::SVC_F_LOAD_BALANCER, "LoadBalancer"),
    (abi::SVC_F_TWO_SCOPES, "two-scopes"),
    (abi::SVC_F_AFFINITY, "affinity"),
    (abi::SVC_F_EXT_LOCAL, "ext-local"),
    (abi::SVC_F_INT_LOCAL, "int-local"),
    (abi::SVC_F_TERMINATING_FALLBACK, "terminating-fallback"),
    (abi::SVC_F_NO_ENDPOINTS, "no-endpoints"),
    (abi::SVC_F_SOURCE_RANGES, "source-ranges"),
    (abi::SVC_F_TOPOLOGY_ZONE, "same-zone"),
    (abi::SVC_F_TOPOLOGY_NODE, "same-node"),
];

pub fn frontends(state: &LbState) -> Vec<FrontendView> {
    let mut out = Vec::new();
    for (key, head) in state.services.iter().filter(|(k, _)| k.slot == 0) {
        let mut backends = Vec::new();
        for slot in 1..=head.count {
            let Some(entry) = state.services.get(&SvcKey { slot, ..*key }) else {
                backends.push(BackendView { id: 0, address: "?".into(), port: 0, flags: vec!["missing-slot"], present: false });
                continue;
            };
            match state.backends.get(&entry.backend_id) {
                Some(b) => {
                    let mut flags = Vec::new();
                    if b.flags & abi::BACKEND_F_TERMINATING != 0 {
                        flags.push("terminating");
                    }
                    if b.flags & abi::BACKEND_F_LOCAL != 0 {
                        flags.push("local");
                    }
                    backends.push(BackendView { id: entry.backend_id, address: b.addr.ip().to_string(), port: b.port(), flags, present: true })
                }
                None => backends.push(BackendView { id: entry.backend_id, address: "?".into(), port: 0, flags: vec!["missing-backend"], present: false }),
            }
        }
        let service = state.names.get(&head.rev_nat_id()).map(|n| n.as_str().to_string()).unwrap_or_else(|| "?".into());
        out.push(FrontendView {
            service,
            address: key.addr.ip().to_string(),
            port: key.port(),
            protocol: Protocol::from_number(key.proto).map_or_else(|| key.proto.to_string(), |p| p.to_string()),
            scope: if key.scope == abi::SCOPE_INT { "internal" } else { "external" },
            rev_nat_id: head.rev_nat_id(),
            flags: SVC_FLAG_NAMES
                .iter()
                .filter(|(bit, _)| head.flags & bit != 0)
                .map(|(_, n)| *n)
                .chain((head.lb_alg == abi::LB_ALG_MAGLEV).then_some("maglev"))
                .collect(),
            affinity_timeout_seconds: (head.flags & abi::SVC_F_AFFINITY != 0).then_some(head.affinity_timeout),
            affinity_group: (head.flags & abi::SVC_F_AFFINITY != 0 && head.backend_id != 0).then(|| {
                let set = (head.backend_id >> abi::AFFINITY_SET_SHIFT) as u8;
                let mut group = (head.backend_id as u16).to_string();
                for (bit, name) in [(abi::AFFINITY_LOCAL, "local"), (abi::AFFINITY_UDP, "udp"), (abi::AFFINITY_SCTP, "sctp")] {
                    if set & bit != 0 {
                        group.push(',');
                        group.push_str(name);
                    }
                }
                group
            }),
            source_ranges: state
                .src_ranges
                .keys()
                .filter(|r| r.rev_nat_id == head.rev_nat_id())
                .map(|r| format!("{}/{}", r.addr.ip(), r.prefix_bits()))
                .collect(),
            backends,
        });
    }
    out.sort_by_key(|v| (v.address.parse::<std::net::IpAddr>().ok(), v.port, v.protocol.clone(), v.scope));
    out
}

fn hostport(addr: &str, port: u16) -> String {
    if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") }
}

/// What the datapath does with a new connection to this frontend and scope.
pub fn verdict(v: &FrontendView) -> &'static str {
    if !v.backends.is_empty() {
        "->"
    } else if v.scope == "external" && v.flags.contains(&"ext-local") {
        // externalTrafficPolicy Local without a local endpoint: kube-proxy drops, not rejects.
        "DROP"
    } else {
        "REJECT"
    }
}

/// A stable text rendering, one frontend per block; what golden files and `service list` show.
pub fn render_text(views: &[FrontendView]) -> String {
    let mut s = String::new();
    for v in views {
        let _ = write!(
            s,
            "{} {}/{} {} scope={} rev_nat={} flags={}",
            v.service,
            hostport(&v.address, v.port),
            v.protocol,
            verdict(v),
            v.scope,
            v.rev_nat_id,
            v.flags.join(",")
        );
        if let Some(t) = v.affinity_timeout_seconds {
            let _ = write!(s, " affinity={t}s");
        }
        if let Some(g) = &v.affinity_group {
            let _ = write!(s, " affinity-group={g}");
        }
        if !v.source_ranges.is_empty() {
            let _ = write!(s, " source-ranges={}", v.source_ranges.join(","));
        }
        s.push('\n');
        for b in &v.backends {
            let _ = write!(s, "    backend {} {}", b.id, hostport(&b.address, b.port));
            if !b.flags.is_empty() {
                let _ = write!(s, " [{}]", b.flags.join(","));
            }
            s.push('\n');
        }
    }
    s
}
