//! `sluice explain`: what the datapath will do with a connection to ADDR:PORT, read from the
//! pinned maps alone, with the reason for every decision.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use serde::Serialize;
use sluice_abi::{self as abi, Addr, SvcKey};
use sluice_core::{Cidr, LbState, Protocol, view};
use sluice_datapath::{BpfMaps, LbMaps};

use crate::Output;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// ADDR:PORT[/PROTO], e.g. 10.96.0.10:80, [fd00:96::a]:53/udp
    pub target: String,
    /// Explain a packet from this client arriving on the node's devices (north-south) instead
    /// of a connect() by a process on this node (socket load-balancing).
    #[arg(long)]
    pub from: Option<IpAddr>,
    #[arg(long, default_value = crate::DEFAULT_BPF_ROOT)]
    pub bpf_root: std::path::PathBuf,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Explanation {
    pub target: String,
    pub path: &'static str,
    pub service: Option<String>,
    pub frontend_kinds: Vec<&'static str>,
    pub scope: Option<&'static str>,
    /// translate | reject | drop | pass
    pub verdict: &'static str,
    pub reason: String,
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Candidate {
    pub address: String,
    pub port: u16,
    pub why: Vec<&'static str>,
}

pub fn parse_target(text: &str) -> anyhow::Result<(SocketAddr, Protocol)> {
    let (addr, proto) = match text.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (text, "tcp"),
    };
    let Some(proto) = Protocol::parse(&proto.to_ascii_uppercase()) else {
        bail!("protocol {proto:?}: use tcp, udp or sctp");
    };
    let addr: SocketAddr = addr.parse().with_context(|| format!("{addr:?} is not ADDR:PORT (IPv6: [ADDR]:PORT)"))?;
    Ok((addr, proto))
}

fn in_range(state: &LbState, rev_nat_id: u32, client: IpAddr) -> bool {
    state
        .src_ranges
        .keys()
        .filter(|r| r.rev_nat_id == rev_nat_id)
        .any(|r| Cidr { addr: r.addr.ip(), bits: r.prefix_bits() as u8 }.contains(client))
}

/// The decision, from map contents alone (pure, so it is tested without a kernel).
pub fn explain(state: &LbState, target: SocketAddr, proto: Protocol, from: Option<IpAddr>) -> Explanation {
    let path = if from.is_some() { "north-south (XDP, then tc on the node's devices)" } else { "socket load-balancing (connect/sendmsg on this node)" };
    let mut e = Explanation {
        target: format!("{target}/{proto}"),
        path,
        service: None,
        frontend_kinds: Vec::new(),
        scope: None,
        verdict: "pass",
        reason: String::new(),
        candidates: Vec::new(),
    };
    if let Some(client) = from {
        let hit = state.blocklist.iter().find(|(k, v)| {
            let bits = k.prefixlen as usize;
            let (a, b) = (Addr::from(client).0, k.addr.0);
            let covers = (0..bits).all(|i| (a[i / 8] >> (7 - i % 8)) & 1 == (b[i / 8] >> (7 - i % 8)) & 1);
            let port_ok =
                v.nports == 0 || v.ports.iter().take(usize::from(v.nports)).any(|p| u16::from_be(p.port_be) == target.port() && p.proto == proto.number());
            covers && port_ok
        });
        if let Some((k, _)) = hit {
            e.verdict = "drop";
            e.reason =
                format!("{client} is in a SourceBlocklist entry ({}/{}): XDP drops it before anything else (xdp_drop_blocklist)", k.addr.ip(), k.prefix_bits());
            return e;
        }
    }
    let key = SvcKey::new(target.ip(), target.port(), proto.number(), abi::SCOPE_EXT, 0);
    let Some(head) = state.services.get(&key) else {
        if from.is_some() && state.lb_addrs.contains_key(&Addr::from(target.ip())) {
            e.verdict = "drop";
            e.reason = "the address belongs to a LoadBalancer or ExternalIP frontend, but no Service uses this port and protocol: XDP drops it (xdp_drop_unknown_port)".into();
        } else {
            e.reason = "no Service frontend has this address, port and protocol: the datapath leaves the connection alone".into();
        }
        return e;
    };
    let views = view::frontends(state);
    let internal = from.is_none() && head.flags & abi::SVC_F_TWO_SCOPES != 0;
    let scope = if internal { "internal" } else { "external" };
    let Some(v) = views.iter().find(|v| v.address == target.ip().to_string() && v.port == target.port() && v.protocol == proto.to_string() && v.scope == scope)
    else {
        e.verdict = if from.is_some() { "drop" } else { "reject" };
        e.reason = format!("the {scope} scope the header announces is missing (half-written service)");
        return e;
    };
    e.service = Some(v.service.clone());
    e.frontend_kinds = v.flags.iter().copied().filter(|f| matches!(*f, "ClusterIP" | "NodePort" | "ExternalIP" | "LoadBalancer")).collect();
    // Scopes only mean something to a reader when the Service has two (different backends for
    // cluster-internal and external clients); with one, every client uses it.
    e.scope = (head.flags & abi::SVC_F_TWO_SCOPES != 0).then_some(scope);
    if let Some(client) = from
        && head.flags & abi::SVC_F_SOURCE_RANGES != 0
        && !in_range(state, head.rev_nat_id(), client)
    {
        e.verdict = "drop";
        e.reason = format!("{client} is outside the Service's loadBalancerSourceRanges ({}): XDP drops it (xdp_drop_source_range)", v.source_ranges.join(", "));
        return e;
    }
    let fallback = v.flags.contains(&"terminating-fallback");
    // Hints narrow only the cluster-wide set, which this scope uses unless a Local policy applies.
    let policy_local =
        (scope == "external" && v.flags.contains(&"ext-local")) || (v.flags.contains(&"int-local") && (scope == "internal" || v.flags.contains(&"ClusterIP")));
    let topology = match () {
        _ if policy_local => None,
        _ if v.flags.contains(&"same-node") => Some("topology hint for this node (trafficDistribution PreferSameNode)"),
        _ if v.flags.contains(&"same-zone") => Some("topology hint for this node's zone (trafficDistribution)"),
        _ => None,
    };
    for b in &v.backends {
        let mut why = vec![if fallback { "serving but terminating (no endpoint is ready)" } else { "ready" }];
        if b.flags.contains(&"local") {
            why.push("on this node");
        }
        if scope == "external" && v.flags.contains(&"ext-local") {
            why.push("externalTrafficPolicy Local: local endpoints only");
        } else if v.flags.contains(&"int-local") && (scope == "internal" || v.flags.contains(&"ClusterIP")) {
            why.push("internalTrafficPolicy Local: local endpoints only");
        } else if let Some(hint) = topology {
            why.push(hint);
        }
        e.candidates.push(Candidate { address: b.address.clone(), port: b.port, why });
    }
    if v.backends.is_empty() {
        if from.is_some() && v.flags.contains(&"ext-local") && !v.flags.contains(&"no-endpoints") {
            e.verdict = "drop";
            e.reason = "externalTrafficPolicy Local and no endpoint on this node: dropped, not rejected (nodeport_drop_no_local_backend)".into();
        } else if from.is_some() {
            e.verdict = "reject";
            e.reason = "no usable endpoint anywhere: tc answers with an ICMP port unreachable, as kube-proxy's REJECT (nodeport_rejected_no_backend)".into();
        } else {
            e.verdict = "reject";
            e.reason = "no usable endpoint: connect() fails at once with ECONNREFUSED (sock_rejected_no_backend)".into();
        }
        return e;
    }
    e.verdict = "translate";
    let affinity = v.affinity_timeout_seconds.map(|t| {
        let who = if from.is_some() { "a client address" } else { "a client (its network namespace: a pod, or the node's own processes)" };
        format!(
            "; sessionAffinity ClientIP: {who} stays on the backend it got first from any frontend of this Service port (affinity group {}) while it comes back within {t} s",
            v.affinity_group.as_deref().unwrap_or("of this frontend")
        )
    });
    let remote = v.backends.iter().filter(|b| !b.flags.contains(&"local")).count();
    e.reason = match from {
        None => format!("connect() is rewritten once to one of {} backends, chosen at random; the socket then talks to it directly", v.backends.len()),
        Some(_) => format!(
            "a new flow{} goes to one of {} backends at random and keeps it (conntrack); {} remote ones are reached with SNAT to the node address, local ones with DNAT only",
            if v.protocol == "TCP" { " (a SYN: other segments of a connection conntrack does not know are dropped)" } else { "" },
            v.backends.len(),
            remote
        ),
    } + affinity.as_deref().unwrap_or_default()
        + match topology {
            Some(_) if v.flags.contains(&"same-node") => "; topology hints: only the endpoints meant for this node, the others serve other nodes",
            Some(_) => "; topology hints: only the endpoints meant for this node's zone, the others serve other zones",
            None => "",
        }
        + if from.is_some() && v.flags.contains(&"maglev") {
            "; Maglev: the flow's addresses and ports pick the backend, the same one on every node"
        } else {
            ""
        };
    if from.is_none() && head.flags & abi::SVC_F_SOURCE_RANGES != 0 {
        e.reason += &format!(
            "; loadBalancerSourceRanges ({}): only a socket whose source is inside them (its bound address, else its network namespace's: the pod's, or the node's address) is translated, others fail with ECONNREFUSED (sock_rejected_source_range)",
            v.source_ranges.join(", ")
        );
    }
    e
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<()> {
    let (target, proto) = parse_target(&args.target)?;
    let state = BpfMaps::open(&args.bpf_root)?.dump()?;
    let e = explain(&state, target, proto, args.from);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&e)?),
        Output::Table => {
            println!("target:   {}", e.target);
            println!("path:     {}", e.path);
            if let Some(s) = &e.service {
                match e.scope {
                    Some(scope) => println!(
                        "service:  {s} ({}), {scope} scope (its traffic policies give internal and external clients different backends)",
                        e.frontend_kinds.join(", ")
                    ),
                    None => println!("service:  {s} ({})", e.frontend_kinds.join(", ")),
                }
            }
            println!("verdict:  {}", e.verdict.to_uppercase());
            println!("why:      {}", e.reason);
            if !e.candidates.is_empty() {
                println!("candidates:");
                for c in &e.candidates {
                    let hp = if c.address.contains(':') { format!("[{}]:{}", c.address, c.port) } else { format!("{}:{}", c.address, c.port) };
                    println!("  {hp:<28} {}", c.why.join("; "));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{Capacity, Ids, NodeContext, manifest, plan};

    fn state(yaml: &str) -> LbState {
        let mut o = manifest::Objects::default();
        let mut w = Vec::new();
        manifest::parse("t", yaml, &mut o, &mut w);
        let node = NodeContext {
            node_name: Some("a".into()),
            node_ips: vec!["172.30.0.11".parse().unwrap()],
            external_ip_cidrs: None,
            maglev: false,
            zone: Some("z1".into()),
            nodeport_bind_protection: true,
            ..Default::default()
        };
        plan(&o.services, &o.slices, &node, &Ids::default(), Capacity::default()).desired
    }

    const LB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: d}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.5, externalTrafficPolicy: Local, loadBalancerSourceRanges: [192.0.2.0/24], ports: [{port: 80, nodePort: 30080}]}\nstatus: {loadBalancer: {ingress: [{ip: 172.31.1.1}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: lb-1, namespace: d, labels: {kubernetes.io/service-name: lb}}\naddressType: IPv4\nports: [{port: 80}]\nendpoints: [{addresses: [10.244.2.2], nodeName: b}]\n";

    #[test]
    fn explains_every_verdict() {
        let s = state(LB);
        let t = |a: &str| parse_target(a).unwrap();
        let (a, p) = t("10.96.0.5:80");
        let e = explain(&s, a, p, None);
        assert_eq!((e.verdict, e.candidates.len()), ("translate", 1), "{e:?}");
        // Pods reach the LB IP through the internal scope even without a local endpoint.
        let (a, p) = t("172.31.1.1:80");
        let e = explain(&s, a, p, None);
        assert_eq!(e.verdict, "translate");
        // ... when their source is in the ranges.
        assert!(e.reason.contains("sock_rejected_source_range") && e.reason.contains("192.0.2.0/24"), "{e:?}");
        // From outside, in range: Local policy and no local endpoint here -> drop.
        let e = explain(&s, a, p, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(e.verdict, "drop");
        assert!(e.reason.contains("externalTrafficPolicy Local"), "{e:?}");
        // Out of range: dropped at XDP first.
        let e = explain(&s, a, p, Some("203.0.113.1".parse().unwrap()));
        assert!(e.reason.contains("loadBalancerSourceRanges"), "{e:?}");
        // Unknown port on the LB address.
        let (a, p) = t("172.31.1.1:81");
        assert!(explain(&s, a, p, Some("192.0.2.9".parse().unwrap())).reason.contains("xdp_drop_unknown_port"));
        // Not a service at all.
        let (a, p) = t("10.1.2.3:80/udp");
        assert_eq!(explain(&s, a, p, None).verdict, "pass");
    }

    #[test]
    fn a_frontend_without_endpoints_rejects_whatever_the_traffic_policy() {
        let none = LB.replace("endpoints: [{addresses: [10.244.2.2], nodeName: b}]", "endpoints: []");
        let s = state(&none);
        let (a, p) = parse_target("172.30.0.11:30080").unwrap();
        let e = explain(&s, a, p, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(e.verdict, "reject", "{e:?}");
        assert!(e.reason.contains("nodeport_rejected_no_backend"), "{e:?}");
        let (a, p) = parse_target("10.96.0.5:80").unwrap();
        assert!(explain(&s, a, p, None).reason.contains("ECONNREFUSED"));
    }

    const ZONED: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: zoned, namespace: d}\nspec: {type: NodePort, clusterIP: 10.96.0.6, externalTrafficPolicy: Local, ports: [{port: 80, nodePort: 30081}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: zoned-1, namespace: d, labels: {kubernetes.io/service-name: zoned}}\naddressType: IPv4\nports: [{port: 80}]\nendpoints: [{addresses: [10.244.1.2], nodeName: a, hints: {forZones: [{name: z2}]}}, {addresses: [10.244.3.2], nodeName: c, hints: {forZones: [{name: z1}]}}]\n";

    #[test]
    fn says_when_topology_hints_narrow_the_candidates() {
        let s = state(ZONED);
        let (a, p) = parse_target("10.96.0.6:80").unwrap();
        let e = explain(&s, a, p, None);
        assert_eq!(e.candidates.iter().map(|c| c.address.as_str()).collect::<Vec<_>>(), ["10.244.3.2"], "{e:?}");
        assert!(e.candidates[0].why.iter().any(|w| w.contains("zone")), "{e:?}");
        assert!(e.reason.contains("topology hints"), "{e:?}");
        // From outside, externalTrafficPolicy Local keeps the local endpoint: hints play no part.
        let (a, p) = parse_target("172.30.0.11:30081").unwrap();
        let e = explain(&s, a, p, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(e.candidates.iter().map(|c| c.address.as_str()).collect::<Vec<_>>(), ["10.244.1.2"], "{e:?}");
        assert!(!e.reason.contains("topology") && e.candidates[0].why.iter().all(|w| !w.contains("zone")), "{e:?}");
    }

    #[test]
    fn parses_targets() {
        assert_eq!(parse_target("[fd00::1]:53/UDP").unwrap(), ("[fd00::1]:53".parse().unwrap(), Protocol::UDP));
        assert!(parse_target("10.0.0.1").is_err());
        assert_eq!(parse_target("10.0.0.1:3868/sctp").unwrap(), ("10.0.0.1:3868".parse().unwrap(), Protocol::SCTP));
        assert!(parse_target("10.0.0.1:80/icmp").is_err());
    }
}
