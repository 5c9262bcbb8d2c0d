//! Service + EndpointSlices → logical frontends, following kube-proxy's rules.
//!
//! Nothing here fails: input that cannot be used is skipped with a [`Warning`] naming the object,
//! and one bad Service never holds back another.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use sluice_abi as abi;
use sluice_crds::Protocol;

use crate::model::{AddressType, Parsed, Service, ServiceType, Slice};
use crate::names::{Cidr, Name, ObjectKey};

/// Services carrying this label belong to another proxy (kube-proxy skips them too).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Set on objects of headless Services; kube-proxy ignores them.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Links an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// What a warning is about: an API object, or a manifest file (standalone mode).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// Cluster-scoped kinds (SourceBlocklist) have an empty namespace.
    Object { kind: &'static str, key: ObjectKey },
    Manifest(String),
}

impl Subject {
    pub fn service(key: &ObjectKey) -> Subject {
        Subject::Object { kind: "Service", key: key.clone() }
    }
    pub fn cluster_scoped(kind: &'static str, name: &str) -> Subject {
        Subject::Object { kind, key: ObjectKey::new("", name) }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Object { kind, key } if key.namespace.is_empty() => write!(f, "{kind} {}", key.name),
            Subject::Object { kind, key } => write!(f, "{kind} {key}"),
            Subject::Manifest(what) => f.write_str(what),
        }
    }
}

/// Why something was not programmed as asked; a Service's warning becomes an Event with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WarningReason {
    /// The input cannot be used as it is (skipped, or used in part).
    NotProgrammed,
    /// A map (or an id space) has no room left for it.
    MapFull,
}

impl WarningReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningReason::NotProgrammed => "NotProgrammed",
            WarningReason::MapFull => "MapFull",
        }
    }
}

/// Something in the input that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    pub subject: Subject,
    pub reason: WarningReason,
    pub message: String,
}

impl Warning {
    pub fn new(subject: Subject, message: impl Into<String>) -> Warning {
        Warning { subject, reason: WarningReason::NotProgrammed, message: message.into() }
    }
    pub fn map_full(subject: Subject, message: impl Into<String>) -> Warning {
        Warning { subject, reason: WarningReason::MapFull, message: message.into() }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

impl FrontendKind {
    fn flag(self) -> u16 {
        match self {
            FrontendKind::ClusterIp => abi::SVC_F_CLUSTER_IP,
            FrontendKind::NodePort => abi::SVC_F_NODE_PORT,
            FrontendKind::ExternalIp => abi::SVC_F_EXTERNAL_IP,
            FrontendKind::LoadBalancer => abi::SVC_F_LOAD_BALANCER,
        }
    }
}

/// A backend as the planner sees it: the endpoint's address, the resolved target port and
/// what the datapath may want to know about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub ip: IpAddr,
    pub port: u16,
    pub terminating: bool,
    pub local: bool,
}

/// One address:port/proto a client can connect to, with the backends each scope selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub service: ObjectKey,
    pub port_name: String,
    pub kind: FrontendKind,
    pub ip: IpAddr,
    pub port: u16,
    pub proto: Protocol,
    /// `SVC_F_*` flags, without the two-scopes bit (layout adds it).
    pub flags: u16,
    pub affinity_timeout: u32,
    /// Scope EXT: what external traffic (and, for a ClusterIP, all traffic) may use.
    pub external: Vec<Target>,
    /// Scope INT, only when internal traffic selects a different set than external traffic.
    pub internal: Option<Vec<Target>>,
    /// loadBalancerSourceRanges (LoadBalancer frontends only).
    pub source_ranges: Vec<Cidr>,
    /// The ClusterIP and port of this frontend's Service port and family: its rev-NAT id names
    /// the session-affinity group every frontend of the port shares, as kube-proxy keeps one
    /// affinity list per Service port.
    pub affinity_group: (IpAddr, u16),
}

/// What the planner needs to know about the node it programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    pub node_name: Option<String>,
    /// Addresses NodePorts are served on (kube-proxy's nodePortAddresses, applied by the agent).
    pub node_ips: Vec<IpAddr>,
    /// ProxyConfig externalIPCIDRs: when set, externalIPs outside them are refused (the
    /// CVE-2020-8554 mitigation); None allows every externalIP, as kube-proxy does.
    pub external_ip_cidrs: Option<Vec<Cidr>>,
    /// ProxyConfig loadBalancingAlgorithm maglev: north-south frontends get Maglev tables.
    pub maglev: bool,
    /// The Node's `topology.kubernetes.io/zone` label: the zone whose topology hints apply here.
    pub zone: Option<String>,
    /// NodePorts are kept from the node's own processes (Cilium's bind protection; kube-proxy
    /// once held them open and no longer does): a host process cannot bind a port a NodePort uses.
    pub nodeport_bind_protection: bool,
    /// The frontend map's capacity (slots): a Service that alone needs more is refused before
    /// its backend lists are built, which for thousands of ports, endpoints or externalIPs would
    /// take the agent's memory on every node.
    pub service_slots: usize,
}

impl Default for NodeContext {
    fn default() -> Self {
        NodeContext {
            node_name: None,
            node_ips: Vec::new(),
            external_ip_cidrs: None,
            maglev: false,
            zone: None,
            nodeport_bind_protection: true,
            service_slots: abi::SERVICES_MAX as usize,
        }
    }
}

/// A healthCheckNodePort to answer (externalTrafficPolicy Local LoadBalancer services).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub port: u16,
    pub service: ObjectKey,
    pub local_endpoints: usize,
}

#[derive(Debug, Default)]
pub struct Translation {
    pub frontends: Vec<Frontend>,
    pub health_checks: Vec<HealthCheck>,
    pub warnings: Vec<Warning>,
}

struct ServicePort {
    name: String,
    port: u16,
    proto: Protocol,
    node_port: Option<u16>,
}

/// An endpoint of one slice, ready to be matched against service ports.
#[derive(Clone)]
struct SliceEndpoint {
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    /// Topology hints the EndpointSlice controller set (trafficDistribution): the zones and the
    /// nodes this endpoint is meant for.
    zone_hints: Vec<Name>,
    node_hints: Vec<Name>,
}

/// Which topology hints narrow a Service's cluster-wide endpoints on this node (kube-proxy's
/// topologyModeFromHints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Everywhere,
    SameZone,
    SameNode,
}

/// Endpoints grouped by (port name, protocol) → resolved port → endpoints.
#[derive(Default)]
struct ServiceEndpoints {
    by_port: BTreeMap<(String, Protocol), Vec<(u16, SliceEndpoint)>>,
}

pub fn translate<'a>(services: impl IntoIterator<Item = &'a Service>, slices: impl IntoIterator<Item = &'a Slice>, node: &NodeContext) -> Translation {
    translate_as(services, slices, node, Backends::Built)
}

/// The frontends [`translate`] gives, without their backends (every endpoint list empty): what
/// the Services ask for. The endpoints are still counted, as they decide whether a Service fits
/// the services map at all ([`NodeContext::service_slots`]): one refused for them asks for nothing.
pub fn frontends_only<'a>(services: impl IntoIterator<Item = &'a Service>, slices: impl IntoIterator<Item = &'a Slice>, node: &NodeContext) -> Translation {
    translate_as(services, slices, node, Backends::Counted)
}

/// Whether a translation builds the backend lists of its frontends or only counts endpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backends {
    Built,
    Counted,
}

fn translate_as<'a>(services: impl IntoIterator<Item = &'a Service>, slices: impl IntoIterator<Item = &'a Slice>, node: &NodeContext, backends: Backends) -> Translation {
    let mut out = Translation::default();
    let mut wanted: BTreeMap<ObjectKey, &Service> = BTreeMap::new();
    // Slices of Services we skip on purpose are not "unknown"; remember them to stay quiet.
    let mut deliberately_skipped: BTreeSet<ObjectKey> = BTreeSet::new();
    for svc in services {
        let name = svc.key.clone();
        match service_is_proxied(svc) {
            Ok(()) => {
                wanted.insert(name, svc);
            }
            Err(skip) => {
                if let Some(message) = skip {
                    out.warnings.push(Warning::new(Subject::service(&name), message));
                }
                deliberately_skipped.insert(name);
            }
        }
    }

    let mut endpoints: BTreeMap<ObjectKey, ServiceEndpoints> = BTreeMap::new();
    for slice in slices {
        collect_slice(slice, node, &wanted, &deliberately_skipped, &mut endpoints, &mut out.warnings);
    }

    for (name, svc) in &wanted {
        let eps = endpoints.remove(name).unwrap_or_default();
        translate_service(name, svc, &eps, node, backends, &mut out);
    }
    out.warnings.sort();
    out.warnings.dedup();
    out
}

/// Ok when Sluice programs this Service; Err(Some(reason)) to warn, Err(None) to skip quietly.
fn service_is_proxied(svc: &Service) -> Result<(), Option<String>> {
    if svc.ignored {
        return Err(None);
    }
    let Some(spec) = &svc.spec else {
        return Err(Some("no spec".into()));
    };
    if spec.type_ == ServiceType::ExternalName || spec.headless {
        return Err(None);
    }
    Ok(())
}

fn collect_slice(
    slice: &Slice,
    node: &NodeContext,
    wanted: &BTreeMap<ObjectKey, &Service>,
    skipped: &BTreeSet<ObjectKey>,
    endpoints: &mut BTreeMap<ObjectKey, ServiceEndpoints>,
    warnings: &mut Vec<Warning>,
) {
    let slice_name = &slice.key;
    let subject = Subject::Object { kind: "EndpointSlice", key: slice_name.clone() };
    let mut warn = |message: String| warnings.push(Warning::new(subject.clone(), message));
    if slice.ignored {
        return;
    }
    let Some(service) = &slice.service else {
        warn(format!("no {LABEL_SERVICE_NAME} label; ignored"));
        return;
    };
    let svc_name = ObjectKey::new(&slice_name.namespace, service);
    if !wanted.contains_key(&svc_name) {
        if !skipped.contains(&svc_name) {
            warn(format!("its Service {svc_name} is unknown; ignored"));
        }
        return;
    }
    let v6 = match &slice.address_type {
        AddressType::IPv4 => false,
        AddressType::IPv6 => true,
        AddressType::Fqdn => return,
        AddressType::Other(other) => {
            warn(format!("addressType {other:?} is not IPv4 or IPv6; ignored"));
            return;
        }
    };
    let mut slice_eps = Vec::new();
    for ep in &slice.endpoints {
        // kube-proxy uses the first address only; the others are for future use by the API.
        let Some(addr) = &ep.address else {
            continue;
        };
        let ip: IpAddr = match addr {
            Parsed::Ok(ip) => *ip,
            Parsed::Bad(addr) => {
                warn(format!("endpoint address {addr:?} is not an IP address; skipped"));
                continue;
            }
        };
        if ip.is_ipv6() != v6 {
            warn(format!("endpoint address {ip} does not match addressType {}; skipped", slice.address_type));
            continue;
        }
        // As kube-proxy reads them (endpointslicecache.go): ready and serving unset mean true,
        // terminating unset means false. (An unset serving is not "same as ready": a terminating
        // endpoint that does not say is still a fallback.)
        let ready = ep.ready.unwrap_or(true);
        let serving = ep.serving.unwrap_or(true);
        let terminating = ep.terminating.unwrap_or(false);
        let local = match (&node.node_name, &ep.node_name) {
            (Some(me), Some(theirs)) => theirs == me.as_str(),
            _ => false,
        };
        let (zone_hints, node_hints) = ep.hints.as_deref().map(|h| (h.zones.clone(), h.nodes.clone())).unwrap_or_default();
        slice_eps.push(SliceEndpoint { ip, ready, serving, terminating, local, zone_hints, node_hints });
    }
    let entry = endpoints.entry(svc_name).or_default();
    for p in &slice.ports {
        let proto = match &p.protocol {
            Parsed::Ok(proto) => *proto,
            Parsed::Bad(other) => {
                warn(format!("port protocol {other:?} is unknown; port skipped"));
                continue;
            }
        };
        let port = match p.port {
            Some(n) if (1..=65535).contains(&n) => n as u16,
            other => {
                let number = other.map_or_else(|| "none".to_string(), |n| n.to_string());
                warn(format!("port {:?} has number {number}, not 1-65535; port skipped", p.name));
                continue;
            }
        };
        let key = (p.name.to_string(), proto);
        let list = entry.by_port.entry(key).or_default();
        for ep in &slice_eps {
            list.push((port, ep.clone()));
        }
    }
}

fn translate_service(name: &ObjectKey, svc: &Service, eps: &ServiceEndpoints, node: &NodeContext, backends: Backends, out: &mut Translation) {
    let subject = Subject::service(name);
    let spec = svc.spec.as_ref().expect("checked by service_is_proxied");
    let mut warn = |message: String| out.warnings.push(Warning::new(subject.clone(), message));

    let mut ips: Vec<IpAddr> = Vec::new();
    for listed in &spec.cluster_ips {
        match listed {
            Parsed::Ok(ip) if ips.iter().any(|known| known.is_ipv6() == ip.is_ipv6()) => warn(format!("second clusterIP {ip} of the same family; skipped")),
            Parsed::Ok(ip) => ips.push(*ip),
            Parsed::Bad(text) => warn(format!("clusterIP {text:?} is not an IP address; skipped")),
        }
    }

    let mut ports: Vec<ServicePort> = Vec::new();
    for p in &spec.ports {
        let pname = p.name.to_string();
        let proto = match &p.protocol {
            Parsed::Ok(proto) => *proto,
            Parsed::Bad(other) => {
                warn(format!("port {pname:?}: protocol {other:?} is unknown; skipped"));
                continue;
            }
        };
        if !(1..=65535).contains(&p.port) {
            warn(format!("port {pname:?}: number {} is not 1-65535; skipped", p.port));
            continue;
        }
        let port = p.port as u16;
        if ports.iter().any(|known| known.port == port && known.proto == proto) {
            warn(format!("port {pname:?}: {port}/{proto} is listed twice; the duplicate is skipped"));
            continue;
        }
        if proto == Protocol::SCTP {
            // The kernel runs no cgroup socket hook for SCTP sockets, so only packets reaching
            // a node's devices are translated (docs/semantics.md, SCTP).
            warn(format!(
                "port {pname:?}: SCTP is translated only where it arrives at a node's devices (NodePort, externalIP, LoadBalancer); pods and processes on the nodes reaching the Service's addresses (its ClusterIP above all) are not translated, as the kernel has no socket hook for SCTP"
            ));
        }
        let node_port = p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0);
        ports.push(ServicePort { name: pname, port, proto, node_port });
    }

    let int_local = spec.internal_local;
    let ext_local = spec.external_local;
    let is_lb = spec.type_ == ServiceType::LoadBalancer;
    let has_node_ports = spec.type_ == ServiceType::NodePort || is_lb;
    let affinity = spec.client_ip_affinity;
    let affinity_timeout = if affinity { spec.affinity_timeout.and_then(|t| u32::try_from(t).ok()).unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS) } else { 0 };

    // Addresses of the external kinds, checked against the Service's families.
    let same_family = |ip: &IpAddr| ips.iter().any(|c| c.is_ipv6() == ip.is_ipv6());
    let mut externals: Vec<(FrontendKind, IpAddr)> = Vec::new();
    for listed in &spec.external_ips {
        match *listed {
            Parsed::Ok(ip) if node.external_ip_cidrs.as_ref().is_some_and(|allowed| !allowed.iter().any(|c| c.contains(ip))) => {
                warn(format!("externalIP {ip} is outside the ProxyConfig's externalIPCIDRs; refused (CVE-2020-8554 mitigation)"))
            }
            Parsed::Ok(ip) if same_family(&ip) => externals.push((FrontendKind::ExternalIp, ip)),
            Parsed::Ok(ip) => warn(format!("externalIP {ip} is not of the Service's IP families; skipped")),
            Parsed::Bad(ref text) => warn(format!("externalIP {text:?} is not an IP address; skipped")),
        }
    }
    if is_lb {
        for ing in &svc.ingress {
            // ipMode Proxy means the load balancer terminates traffic itself: kube-proxy leaves it alone.
            if !ing.vip {
                continue;
            }
            let Some(listed) = &ing.ip else { continue };
            match *listed {
                Parsed::Ok(ip) if same_family(&ip) => externals.push((FrontendKind::LoadBalancer, ip)),
                Parsed::Ok(ip) => warn(format!("load balancer ingress {ip} is not of the Service's IP families; skipped")),
                Parsed::Bad(ref text) => warn(format!("load balancer ingress {text:?} is not an IP address; skipped")),
            }
        }
    }
    let mut source_ranges: Vec<Cidr> = Vec::new();
    if is_lb {
        for listed in &spec.source_ranges {
            match listed {
                Parsed::Ok(r) => source_ranges.push(*r),
                Parsed::Bad(text) => warn(format!("loadBalancerSourceRanges entry {text:?} is not a CIDR; skipped")),
            }
        }
    }
    let node_ips: Vec<IpAddr> = node.node_ips.iter().copied().filter(|ip| same_family(ip)).collect();

    // The slots the Service needs at least (a header and a slot per endpoint, per frontend),
    // counted from the endpoint lists as they are, before anything is built from them.
    let slots: usize = ips
        .iter()
        .map(|family_ip| {
            let of_family = |ip: &IpAddr| ip.is_ipv6() == family_ip.is_ipv6();
            let per_port = 1 + externals.iter().filter(|(_, ip)| of_family(ip)).count() + if has_node_ports { node_ips.iter().filter(|ip| of_family(ip)).count() } else { 0 };
            ports
                .iter()
                .map(|sp| {
                    let endpoints = eps.by_port.get(&(sp.name.clone(), sp.proto)).map_or(0, |v| v.iter().filter(|(_, ep)| of_family(&ep.ip)).count());
                    per_port.saturating_mul(1 + endpoints)
                })
                .fold(0usize, usize::saturating_add)
        })
        .fold(0usize, usize::saturating_add);
    if slots > node.service_slots {
        out.warnings.push(Warning::map_full(
            subject,
            format!("needs at least {slots} frontend slots (ports × addresses × endpoints), more than the services map holds ({}); not programmed", node.service_slots),
        ));
        return;
    }
    let counted_only = ServiceEndpoints::default();
    let eps = if backends == Backends::Built { eps } else { &counted_only };

    // kube-proxy's count: distinct ready local endpoints of the Service, over all its ports and
    // families.
    let mut health_local: BTreeSet<IpAddr> = BTreeSet::new();
    for family_ip in &ips {
        for sp in &ports {
            let candidates: Vec<&(u16, SliceEndpoint)> = eps
                .by_port
                .get(&(sp.name.clone(), sp.proto))
                .map(|v| v.iter().filter(|(_, ep)| ep.ip.is_ipv6() == family_ip.is_ipv6()).collect())
                .unwrap_or_default();
            let topology = topology_from_hints(&candidates, node);
            let cluster = usable(&candidates, |ep| available_for(ep, topology, node));
            let local = usable(&candidates, |ep| ep.local);
            // Ready ones only, as kube-proxy counts them: a node whose local endpoints are all
            // terminating answers 503, so load balancers drain it (the datapath still uses them
            // as the fallback).
            if !local.1 {
                health_local.extend(local.0.iter().map(|t| t.ip));
            }
            let internal = if int_local { &local } else { &cluster };
            let external = if ext_local { &local } else { &cluster };
            let mut common = 0;
            if affinity {
                common |= abi::SVC_F_AFFINITY;
            }
            // Marks that the cluster-wide set was narrowed, so `explain` can say why an endpoint is missing.
            let topology_flag = match topology {
                Topology::Everywhere => 0,
                Topology::SameZone => abi::SVC_F_TOPOLOGY_ZONE,
                Topology::SameNode => abi::SVC_F_TOPOLOGY_NODE,
            };
            let frontend = |kind: FrontendKind, ip: IpAddr, port: u16, ext: &(Vec<Target>, bool), int: Option<&(Vec<Target>, bool)>| {
                let mut flags = common | kind.flag();
                if kind == FrontendKind::ClusterIp && int_local {
                    flags |= abi::SVC_F_INT_LOCAL;
                }
                if kind != FrontendKind::ClusterIp && ext_local {
                    flags |= abi::SVC_F_EXT_LOCAL;
                }
                if ext.1 {
                    flags |= abi::SVC_F_TERMINATING_FALLBACK;
                }
                if cluster.0.is_empty() && local.0.is_empty() {
                    flags |= abi::SVC_F_NO_ENDPOINTS;
                }
                // In-cluster clients of an external address always get the cluster-wide set.
                let uses_cluster_set = !int_local || kind != FrontendKind::ClusterIp;
                if uses_cluster_set {
                    flags |= topology_flag;
                }
                let ranges = if kind == FrontendKind::LoadBalancer { source_ranges.clone() } else { Vec::new() };
                if !ranges.is_empty() {
                    flags |= abi::SVC_F_SOURCE_RANGES;
                }
                Frontend {
                    service: name.clone(),
                    port_name: sp.name.clone(),
                    kind,
                    ip,
                    port,
                    proto: sp.proto,
                    flags,
                    affinity_timeout,
                    external: ext.0.clone(),
                    internal: int.filter(|i| i.0 != ext.0).map(|i| i.0.clone()),
                    source_ranges: ranges,
                    affinity_group: (*family_ip, sp.port),
                }
            };
            // A ClusterIP is only ever reached from inside the cluster: one scope, the internal policy's.
            out.frontends.push(frontend(FrontendKind::ClusterIp, *family_ip, sp.port, internal, None));
            for (kind, ip) in externals.iter().filter(|(_, ip)| ip.is_ipv6() == family_ip.is_ipv6()) {
                // In-cluster clients (pods, node processes) of an external address are subject to
                // neither traffic policy, as kube-proxy short-circuits them to its cluster chain:
                // the cluster-wide set, whatever internalTrafficPolicy says.
                out.frontends.push(frontend(*kind, *ip, sp.port, external, Some(&cluster)));
            }
            if has_node_ports {
                match sp.node_port {
                    Some(np) => {
                        for ip in node_ips.iter().filter(|ip| ip.is_ipv6() == family_ip.is_ipv6()) {
                            out.frontends.push(frontend(FrontendKind::NodePort, *ip, np, external, Some(&cluster)));
                        }
                    }
                    None if spec.type_ == ServiceType::NodePort => warn(format!("port {:?}: type NodePort without a nodePort; no NodePort frontend", sp.name)),
                    None => {}
                }
            }
        }
    }
    if is_lb && ext_local {
        if let Some(port) = spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) {
            out.health_checks.push(HealthCheck { port, service: name.clone(), local_endpoints: health_local.len() });
        }
    }
}

/// Topology hints apply only when every ready endpoint carries one (else the controller has not
/// finished, or gave up) and at least one is meant for this node or its zone; node hints win over
/// zone hints. Otherwise the cluster-wide set is used as it is.
fn topology_from_hints(candidates: &[&(u16, SliceEndpoint)], node: &NodeContext) -> Topology {
    let ready: Vec<&SliceEndpoint> = candidates.iter().map(|(_, ep)| ep).filter(|ep| ep.ready).collect();
    if ready.is_empty() {
        return Topology::Everywhere;
    }
    let has = |hints: &[Name], want: Option<&String>| want.is_some_and(|w| hints.iter().any(|h| h == w.as_str()));
    if ready.iter().all(|ep| !ep.node_hints.is_empty()) && ready.iter().any(|ep| has(&ep.node_hints, node.node_name.as_ref())) {
        return Topology::SameNode;
    }
    if ready.iter().all(|ep| !ep.zone_hints.is_empty()) && ready.iter().any(|ep| has(&ep.zone_hints, node.zone.as_ref())) {
        return Topology::SameZone;
    }
    Topology::Everywhere
}

fn available_for(ep: &SliceEndpoint, topology: Topology, node: &NodeContext) -> bool {
    match topology {
        Topology::Everywhere => true,
        Topology::SameZone => node.zone.as_ref().is_some_and(|z| ep.zone_hints.iter().any(|h| h == z.as_str())),
        Topology::SameNode => node.node_name.as_ref().is_some_and(|n| ep.node_hints.iter().any(|h| h == n.as_str())),
    }
}

/// kube-proxy's categorisation: ready endpoints; only when none is ready, the serving
/// terminating ones. Returns the set and whether it is that fallback.
fn usable(candidates: &[&(u16, SliceEndpoint)], filter: impl Fn(&SliceEndpoint) -> bool) -> (Vec<Target>, bool) {
    let pick = |want: &dyn Fn(&SliceEndpoint) -> bool| -> Vec<Target> {
        let mut set: Vec<Target> = candidates
            .iter()
            .filter(|(_, ep)| filter(ep) && want(ep))
            .map(|(port, ep)| Target { ip: ep.ip, port: *port, terminating: ep.terminating, local: ep.local })
            .collect();
        set.sort();
        // The same address can appear in two slices while the controller moves it.
        set.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
        set
    };
    let ready = pick(&|ep| ep.ready);
    if !ready.is_empty() {
        return (ready, false);
    }
    let terminating = pick(&|ep| ep.serving && ep.terminating);
    let fallback = !terminating.is_empty();
    (terminating, fallback)
}
