//! Arbitrary planner inputs and the invariants every planned state must keep, shared by the
//! property tests of sluice-core (tests/properties.rs) and sluice-datapath (included by path).
//!
//! The generators draw from small pools of names, addresses and ports on purpose: collisions
//! (two Services with one ClusterIP, an externalIP that is a node address, a slice moving between
//! Services, the same endpoint in two slices) are where planning gets hard, and random values
//! from a large space would almost never collide. Every field may also hold what the apiserver
//! would refuse (port 0 or 70000, "nope" as an address, unknown protocols), since standalone
//! manifests are not validated.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus, SessionAffinityConfig};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use sluice_abi as abi;
use sluice_core::incremental::{Changed, GroupKey, PlanInputs, service_group, slice_group};
use sluice_core::{Capacity, Cidr, LbState, NodeContext, ObjectKey, model};
use sluice_crds::{BlocklistEntry, BlocklistPort, Protocol, SourceBlocklist, SourceBlocklistSpec};

/// How many distinct values each pool holds, and how large objects grow.
#[derive(Debug, Clone, Copy)]
pub struct Universe {
    /// Service names per namespace (slices name these, or one that does not exist).
    pub names: usize,
    /// ClusterIPs of each family.
    pub cluster_ips: u32,
    /// Endpoint addresses of each family.
    pub endpoint_ips: u32,
    /// Port numbers in range are drawn from 1..=ports (Service ports, target ports, nodePorts).
    pub ports: i32,
    pub max_ports: usize,
    /// Ports per EndpointSlice (the API allows 100).
    pub max_slice_ports: usize,
    pub max_slices: usize,
    pub max_endpoints: usize,
}

/// Everything collides often.
pub const SMALL: Universe = Universe { names: 4, cluster_ips: 4, endpoint_ips: 6, ports: 3, max_ports: 3, max_slice_ports: 3, max_slices: 6, max_endpoints: 5 };

/// The scale issue #12 names: Services of up to 10,000 ports, about 100,000 endpoints in all
/// (up to 100 slices of up to 2,000), from pools large enough that most addresses differ.
pub const LARGE: Universe = Universe {
    names: 3,
    cluster_ips: 3,
    endpoint_ips: 100_000,
    ports: 10_000,
    max_ports: 10_000,
    max_slice_ports: 100,
    max_slices: 1_000,
    max_endpoints: 1_000,
};

pub const NAMESPACES: [&str; 2] = ["a", "b"];
pub const NODE: &str = "n1";
pub const ZONE: &str = "z1";
pub const NODE_IPS: [&str; 3] = ["172.30.0.11", "fd02::11", "10.96.0.1"];

fn cluster_ip(family: bool, i: u32) -> String {
    if family { format!("fd00::{:x}", i + 1) } else { format!("10.96.{}.{}", i / 250, i % 250 + 1) }
}

fn endpoint_ip(family: bool, i: u32) -> String {
    if family { format!("fd01::{:x}", i + 1) } else { format!("10.{}.{}.{}", 100 + i / 62500, i / 250 % 250, i % 250 + 1) }
}

/// An address a Service may name: mostly from the pool, sometimes the other family, sometimes
/// not an address at all.
fn address(of: fn(bool, u32) -> String, pool: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (any::<bool>(), 0..pool).prop_map(move |(v6, i)| of(v6, i)),
        1 => select(vec!["", "nope", "10.96.0.300", "::ffff:10.96.0.1"]).prop_map(String::from),
    ]
}

/// 1..=u.ports mostly; values the API refuses now and then.
fn port_number(u: Universe) -> impl Strategy<Value = i32> {
    prop_oneof![12 => 1..=u.ports, 1 => select(vec![0, -1, 65535, 65536, i32::MAX, i32::MIN])]
}

fn protocol() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(None),
        6 => select(vec!["TCP", "UDP", "SCTP"]).prop_map(|p| Some(p.to_string())),
        1 => select(vec!["ICMP", "tcp", ""]).prop_map(|p| Some(p.to_string())),
    ]
}

fn port_name() -> impl Strategy<Value = Option<String>> {
    option::of(select(vec!["", "http", "dns"]).prop_map(String::from))
}

fn namespace() -> impl Strategy<Value = Option<String>> {
    // Unset and "" both mean default: a third namespace with two spellings.
    select(vec![Some("a"), Some("b"), None, Some("")]).prop_map(|n| n.map(String::from))
}

fn labels(service: Option<String>) -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    let extra = select(vec![None, None, None, None, None, None, Some(sluice_core::translate::LABEL_HEADLESS), Some(sluice_core::translate::LABEL_SERVICE_PROXY_NAME)]);
    extra.prop_map(move |extra| {
        let mut l = BTreeMap::new();
        if let Some(s) = &service {
            l.insert(sluice_core::translate::LABEL_SERVICE_NAME.to_string(), s.clone());
        }
        if let Some(e) = extra {
            l.insert(e.to_string(), String::new());
        }
        (!l.is_empty()).then_some(l)
    })
}

fn service_name(u: Universe) -> impl Strategy<Value = String> {
    (0..u.names).prop_map(|i| format!("s{i}"))
}

fn service_port(u: Universe) -> impl Strategy<Value = ServicePort> {
    (port_name(), port_number(u), protocol(), option::of(prop_oneof![4 => (1..=u.ports).prop_map(|p| 30000 + p), 1 => port_number(u)])).prop_map(
        |(name, port, protocol, node_port)| ServicePort { name, port, protocol, node_port, ..Default::default() },
    )
}

fn policy() -> impl Strategy<Value = Option<String>> {
    select(vec![None, Some("Local"), Some("Cluster"), Some("local")]).prop_map(|p| p.map(String::from))
}

fn cidr_text() -> impl Strategy<Value = String> {
    select(vec!["198.51.100.0/24", "0.0.0.0/0", "192.0.2.7/32", "2001:db8::/48", " 203.0.113.0/24 ", "10.0.0.0/33", "nope"]).prop_map(String::from)
}

fn external_address(u: Universe) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec!["192.0.2.10", "192.0.2.11", "2001:db8::10"]).prop_map(String::from),
        // Another Service's ClusterIP, or a node address: the CVE-2020-8554 cases.
        1 => address(cluster_ip, u.cluster_ips),
        1 => select(NODE_IPS.to_vec()).prop_map(String::from),
    ]
}

fn ingress(u: Universe) -> impl Strategy<Value = LoadBalancerIngress> {
    (external_address(u), select(vec![None, Some("VIP"), Some("Proxy")])).prop_map(|(ip, mode)| LoadBalancerIngress {
        ip: Some(ip),
        ip_mode: mode.map(String::from),
        ..Default::default()
    })
}

pub fn service(u: Universe) -> impl Strategy<Value = Service> {
    let meta = (namespace(), service_name(u), labels(None)).prop_map(|(namespace, name, labels)| ObjectMeta { namespace, name: Some(name), labels, ..Default::default() });
    let kind = select(vec![None, Some("ClusterIP"), Some("NodePort"), Some("LoadBalancer"), Some("ExternalName")]).prop_map(|t| t.map(String::from));
    // clusterIP alone, clusterIPs (dual stack, maybe two of one family), "None" (headless).
    let ips = prop_oneof![
        4 => option::of(address(cluster_ip, u.cluster_ips)).prop_map(|ip| (ip, None)),
        2 => vec(address(cluster_ip, u.cluster_ips), 0..=3).prop_map(|ips| (ips.first().cloned(), Some(ips))),
        1 => Just((Some("None".to_string()), None)),
    ];
    let shape = (kind, ips, vec(service_port(u), 0..=u.max_ports), vec(external_address(u), 0..=2));
    let affinity = option::of(option::of(select(vec![0, 1, 10, 10800, -5, i32::MAX])));
    let traffic = (policy(), policy(), affinity, vec(cidr_text(), 0..=3), option::of(prop_oneof![(1..=u.ports).prop_map(|p| 32000 + p), port_number(u)]));
    let status = vec(ingress(u), 0..=2);
    (meta, shape, traffic, status, 0..20u8).prop_map(|(metadata, (type_, (cluster_ip, cluster_ips), ports, external_ips), (ext, int, affinity, ranges, hc), ingress, no_spec)| {
        let spec = ServiceSpec {
            type_,
            cluster_ip,
            cluster_ips,
            ports: Some(ports),
            external_ips: Some(external_ips),
            external_traffic_policy: ext,
            internal_traffic_policy: int,
            session_affinity: affinity.map(|_| "ClientIP".to_string()),
            session_affinity_config: affinity
                .flatten()
                .map(|t| SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(t) }) }),
            load_balancer_source_ranges: Some(ranges),
            health_check_node_port: hc,
            ..Default::default()
        };
        let status = ServiceStatus { load_balancer: Some(LoadBalancerStatus { ingress: Some(ingress) }), ..Default::default() };
        Service { metadata, spec: (no_spec != 0).then_some(spec), status: Some(status) }
    })
}

fn conditions() -> impl Strategy<Value = Option<EndpointConditions>> {
    option::of((option::of(any::<bool>()), option::of(any::<bool>()), option::of(any::<bool>())).prop_map(|(ready, serving, terminating)| EndpointConditions {
        ready,
        serving,
        terminating,
    }))
}

fn hints() -> impl Strategy<Value = Option<EndpointHints>> {
    let zones = option::of(vec(select(vec![ZONE, "z2"]).prop_map(|z| ForZone { name: z.into() }), 0..=2));
    let nodes = option::of(vec(select(vec![NODE, "n2"]).prop_map(|n| ForNode { name: n.into() }), 0..=2));
    option::of((zones, nodes).prop_map(|(for_zones, for_nodes)| EndpointHints { for_zones, for_nodes }))
}

fn endpoint(u: Universe) -> impl Strategy<Value = Endpoint> {
    let node = option::of(select(vec![NODE, "n2"]).prop_map(String::from));
    let zone = option::of(select(vec![ZONE, "z2"]).prop_map(String::from));
    (vec(address(endpoint_ip, u.endpoint_ips), 0..=2), conditions(), node, zone, hints()).prop_map(|(addresses, conditions, node_name, zone, hints)| Endpoint {
        addresses,
        conditions,
        node_name,
        zone,
        hints,
        ..Default::default()
    })
}

fn endpoint_port(u: Universe) -> impl Strategy<Value = EndpointPort> {
    (port_name(), option::of(port_number(u)), protocol()).prop_map(|(name, port, protocol)| EndpointPort { name, port, protocol, ..Default::default() })
}

pub fn slice(u: Universe) -> impl Strategy<Value = EndpointSlice> {
    // The Service it belongs to: one of the pool, one that never exists, or no label at all.
    let owner = prop_oneof![8 => service_name(u).prop_map(Some), 1 => Just(Some("ghost".to_string())), 1 => Just(None)];
    let meta = (namespace(), 0..u.max_slices, owner).prop_flat_map(|(namespace, i, owner)| {
        labels(owner).prop_map(move |labels| ObjectMeta { namespace: namespace.clone(), name: Some(format!("e{i}")), labels, ..Default::default() })
    });
    let family = prop_oneof![6 => Just("IPv4"), 6 => Just("IPv6"), 1 => Just("FQDN"), 1 => Just("IPX")];
    (meta, family, vec(endpoint(u), 0..=u.max_endpoints), option::of(vec(endpoint_port(u), 0..=u.max_slice_ports))).prop_map(|(metadata, family, endpoints, ports)| {
        EndpointSlice { metadata, address_type: family.into(), endpoints, ports }
    })
}

/// What a ProxyConfig (and the node) tells the planner: nodePortAddresses, externalIPCIDRs,
/// the algorithm, bind protection, and the Node's name and zone.
pub fn node() -> impl Strategy<Value = NodeContext> {
    let cidrs = option::of(vec(select(vec!["192.0.2.0/24", "10.96.0.0/16", "2001:db8::/32", "0.0.0.0/0"]).prop_map(|c| Cidr::parse(c).unwrap()), 0..=2));
    // The frontend map's capacity: the built-in one mostly, sometimes so small a Service alone
    // overflows it.
    let slots = prop_oneof![3 => Just(sluice_abi::SERVICES_MAX as usize), 1 => 1..40usize];
    (option::of(select(vec![NODE, "n2"])), proptest::sample::subsequence(NODE_IPS.to_vec(), 0..=3), cidrs, any::<bool>(), option::of(select(vec![ZONE, "z2"])), any::<bool>(), slots)
        .prop_map(|(name, ips, external_ip_cidrs, maglev, zone, bind, service_slots)| NodeContext {
            node_name: name.map(String::from),
            node_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            external_ip_cidrs,
            maglev,
            zone: zone.map(String::from),
            nodeport_bind_protection: bind,
            service_slots,
        })
}

pub fn blocklist() -> impl Strategy<Value = SourceBlocklist> {
    let ports = vec((select(vec![22, 53, 80, 443, 0, -1, 70000, 1, 2, 3, 4, 5, 6, 7, 8, 9]), select(vec![Protocol::TCP, Protocol::UDP, Protocol::SCTP])), 0..=10);
    let entry = (cidr_text(), ports).prop_map(|(cidr, ports)| BlocklistEntry {
        cidr: cidr.trim().to_string(),
        ports: ports.into_iter().map(|(port, protocol)| BlocklistPort { port, protocol }).collect(),
    });
    (select(vec!["b0", "b1", "b2"]), vec(entry, 0..=4)).prop_map(|(name, entries)| SourceBlocklist::new(name, SourceBlocklistSpec { entries }))
}

/// One event the agent's index may see.
#[derive(Debug, Clone)]
pub enum Change {
    Service(model::Service),
    DeleteService(ObjectKey),
    Slice(model::Slice),
    DeleteSlice(ObjectKey),
    /// A new ProxyConfig or Node: a new node context.
    Node(NodeContext),
    Blocklist(SourceBlocklist),
    DeleteBlocklist(String),
}

fn key(prefix: &'static str, n: usize) -> impl Strategy<Value = ObjectKey> {
    (select(vec!["a", "b", "default"]), 0..n).prop_map(move |(ns, i)| ObjectKey::new(ns, format!("{prefix}{i}")))
}

pub fn change(u: Universe) -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => service(u).prop_map(|s| Change::Service(model::Service::from_api(&s))),
        2 => key("s", u.names).prop_map(Change::DeleteService),
        8 => slice(u).prop_map(|s| Change::Slice(model::Slice::from_api(&s))),
        2 => key("e", u.max_slices).prop_map(Change::DeleteSlice),
        1 => node().prop_map(Change::Node),
        1 => blocklist().prop_map(Change::Blocklist),
        1 => select(vec!["b0", "b1", "b2"]).prop_map(|n| Change::DeleteBlocklist(n.into())),
    ]
}

/// The objects the agent knows, indexed as `sluice_k8s::Index` does (slices by the Service their
/// label names), with the groups a change concerns marked the way the index marks them.
#[derive(Debug, Clone)]
pub struct World {
    pub services: BTreeMap<ObjectKey, model::Service>,
    pub slices: BTreeMap<ObjectKey, model::Slice>,
    by_group: BTreeMap<GroupKey, BTreeSet<ObjectKey>>,
    pub blocklists: BTreeMap<String, SourceBlocklist>,
    pub node: NodeContext,
}

impl World {
    pub fn new(node: NodeContext) -> World {
        World { services: BTreeMap::new(), slices: BTreeMap::new(), by_group: BTreeMap::new(), blocklists: BTreeMap::new(), node }
    }

    pub fn apply(&mut self, change: &Change, changed: &mut Changed) {
        match change {
            Change::Service(s) => {
                changed.mark(service_group(s));
                self.services.insert(s.key.clone(), s.clone());
            }
            Change::DeleteService(k) => {
                changed.mark(k.clone());
                self.services.remove(k);
            }
            Change::Slice(s) => {
                let k = s.key.clone();
                self.forget_slice(&k, changed);
                let group = slice_group(s);
                changed.mark(group.clone());
                self.by_group.entry(group).or_default().insert(k.clone());
                self.slices.insert(k, s.clone());
            }
            Change::DeleteSlice(k) => self.forget_slice(k, changed),
            Change::Node(n) => self.node = n.clone(),
            Change::Blocklist(b) => {
                self.blocklists.insert(b.metadata.name.clone().unwrap_or_default(), b.clone());
            }
            Change::DeleteBlocklist(name) => {
                self.blocklists.remove(name);
            }
        }
    }

    fn forget_slice(&mut self, k: &ObjectKey, changed: &mut Changed) {
        if let Some(old) = self.slices.remove(k) {
            let group = slice_group(&old);
            if let Some(set) = self.by_group.get_mut(&group) {
                set.remove(k);
                if set.is_empty() {
                    self.by_group.remove(&group);
                }
            }
            changed.mark(group);
        }
    }

    pub fn blocklists(&self) -> Vec<SourceBlocklist> {
        self.blocklists.values().cloned().collect()
    }
}

impl PlanInputs for World {
    fn service(&self, group: &GroupKey) -> Option<&model::Service> {
        self.services.get(group)
    }
    fn slices(&self, group: &GroupKey) -> Vec<&model::Slice> {
        self.by_group.get(group).into_iter().flatten().filter_map(|k| self.slices.get(k)).collect()
    }
    fn groups(&self) -> BTreeSet<GroupKey> {
        self.services.keys().chain(self.by_group.keys()).cloned().collect()
    }
}

/// Capacities small enough for the generated worlds to reach them.
pub fn small_capacity() -> impl Strategy<Value = Capacity> {
    (1..40usize, 1..12usize, 0..4usize, 0..3usize, 0..3usize, 0..4usize, 1..20usize).prop_map(
        |(services, backends, src_ranges, lb_addrs, nodeports, maglev, revnat)| Capacity {
            services,
            backends,
            src_ranges,
            lb_addrs,
            nodeports,
            maglev,
            revnat,
        },
    )
}

/// The invariants of a planned state (what the planner hands the reconciler), beyond what a
/// lookup racing the writer needs (`sluice_datapath::reconcile::check_consistent`):
///
/// 1. every header (slot 0) has exactly the slots 1..=count, and every slot has its header;
/// 2. every slot names a backend that exists, of the frontend's protocol;
/// 3. a frontend's header and slots carry one rev-NAT id, which exists with the frontend's
///    address and port, and has a name;
/// 4. no rev-NAT id, name or backend is left that no entry uses;
/// 5. a scope-INT header exists exactly when its scope-EXT header says there are two scopes;
/// 6. a header uses Maglev exactly when its table exists, the table names only the backends of
///    that header's slots, and no table is without such a header;
/// 7. source ranges belong to a header that enforces them, and a header that enforces them has
///    at least one;
/// 8. a LoadBalancer/ExternalIP address drops unknown ports only while one of its frontends is
///    there; a bind-protected NodePort belongs to a NodePort frontend;
/// 9. a header with session affinity names as its affinity group its own rev-NAT id or that of
///    a ClusterIP header of its protocol (its Service port's); one without affinity names none
///    (that the ClusterIP is of the same Service is not visible in the maps: an explicit test
///    holds duplicate ClusterIPs to it);
/// 10. rev-NAT ids fit the datapath's 16 bits and backend ids its id space;
/// 11. every map holds at most its capacity;
/// 12. blocklist entries have distinct ids and at most BLOCK_PORTS ports, none of them 0.
pub fn check_planned(s: &LbState, cap: &Capacity) -> Result<(), String> {
    let header_of = |k: &abi::SvcKey| abi::SvcKey { slot: 0, ..*k };
    let (mut used_revnat, mut used_backends) = (BTreeSet::new(), BTreeSet::new());
    for (k, v) in &s.services {
        let head = s.services.get(&header_of(k)).ok_or_else(|| format!("slot {k:?} has no header"))?;
        if k.slot > head.count {
            return Err(format!("slot {k:?} beyond its header's count {}", head.count));
        }
        if v.rev_nat_id() != head.rev_nat_id() {
            return Err(format!("slot {k:?} has rev-NAT {} but its header {}", v.rev_nat_id(), head.rev_nat_id()));
        }
        let id = v.rev_nat_id();
        let revnat = s.revnat.get(&id).ok_or_else(|| format!("{k:?} names missing rev-NAT {id}"))?;
        if revnat.addr != k.addr || revnat.port() != k.port() {
            return Err(format!("{k:?} has rev-NAT {id} for {:?}:{}", revnat.addr.ip(), revnat.port()));
        }
        if !s.names.contains_key(&id) {
            return Err(format!("rev-NAT {id} has no name"));
        }
        used_revnat.insert(id);
        if k.slot == 0 {
            for slot in 1..=v.count {
                if !s.services.contains_key(&abi::SvcKey { slot, ..*k }) {
                    return Err(format!("{k:?} counts {} slots, slot {slot} is missing", v.count));
                }
            }
            continue;
        }
        let b = s.backends.get(&v.backend_id).ok_or_else(|| format!("slot {k:?} names missing backend {}", v.backend_id))?;
        if b.proto != k.proto {
            return Err(format!("slot {k:?} names backend {} of protocol {}", v.backend_id, b.proto));
        }
        used_backends.insert(v.backend_id);
    }
    fn keys<V>(m: &BTreeMap<u32, V>) -> BTreeSet<u32> {
        m.keys().copied().collect()
    }
    if keys(&s.revnat) != used_revnat || keys(&s.names) != used_revnat {
        return Err(format!("rev-NAT ids {:?} / names {:?}, used {used_revnat:?}", s.revnat.keys(), s.names.keys()));
    }
    if keys(&s.backends) != used_backends {
        return Err(format!("backends {:?}, used {used_backends:?}", s.backends.keys()));
    }
    for (k, v) in s.services.iter().filter(|(k, _)| k.slot == 0) {
        let ext = abi::SvcKey { scope: abi::SCOPE_EXT, ..*k };
        let int = abi::SvcKey { scope: abi::SCOPE_INT, ..*k };
        let two = s.services.get(&ext).is_some_and(|e| e.flags & abi::SVC_F_TWO_SCOPES != 0);
        if two != s.services.contains_key(&int) {
            return Err(format!("{k:?}: two-scopes flag {two} but scope INT present {}", s.services.contains_key(&int)));
        }
        // Connection state keeps ids in 16 bits: every frontend it records must have a narrow one.
        let narrow = v.flags & (abi::SVC_F_NODE_PORT | abi::SVC_F_EXTERNAL_IP | abi::SVC_F_LOAD_BALANCER | abi::SVC_F_AFFINITY) != 0;
        if narrow && v.rev_nat_id() > abi::REV_NAT_ID_NARROW_MAX {
            return Err(format!("{k:?} (flags {:#x}) has the wide rev-NAT id {}", v.flags, v.rev_nat_id()));
        }
        let table = abi::MaglevKey { rev_nat_id: v.narrow_rev_nat_id(), scope: k.scope, proto: k.proto };
        if (v.lb_alg == abi::LB_ALG_MAGLEV) != s.maglev.contains_key(&table) {
            return Err(format!("{k:?}: algorithm {} but Maglev table present {}", v.lb_alg, s.maglev.contains_key(&table)));
        }
        if let Some(t) = s.maglev.get(&table) {
            let slots: BTreeSet<u32> = (1..=v.count).filter_map(|slot| s.services.get(&abi::SvcKey { slot, ..*k })).map(|e| e.backend_id).collect();
            if let Some(id) = t.backend_ids.iter().find(|id| !slots.contains(id)) {
                return Err(format!("{k:?}: Maglev table names backend {id}, not one of its slots {slots:?}"));
            }
        }
        let ranges = s.src_ranges.keys().any(|r| r.rev_nat_id == v.rev_nat_id());
        if v.flags & abi::SVC_F_SOURCE_RANGES != 0 && !ranges {
            return Err(format!("{k:?} enforces source ranges but has none"));
        }
        if v.flags & abi::SVC_F_AFFINITY != 0 {
            // Its own id, or that of its Service port's ClusterIP header (which is its own group).
            let group = v.backend_id & 0xffff;
            let cluster_ip = |(h, c): &(&abi::SvcKey, &abi::SvcValue)| {
                c.rev_nat_id() == group && h.slot == 0 && h.proto == k.proto && c.flags & abi::SVC_F_CLUSTER_IP != 0 && c.backend_id & 0xffff == group
            };
            if group != v.rev_nat_id() && !s.services.iter().any(|e| cluster_ip(&e)) {
                return Err(format!("{k:?}: affinity group {group} is neither its own rev-NAT id nor a ClusterIP's"));
            }
        } else if v.backend_id != 0 {
            return Err(format!("{k:?} without affinity names group word {:#x}", v.backend_id));
        }
    }
    let heads: Vec<(&abi::SvcKey, &abi::SvcValue)> = s.services.iter().filter(|(k, _)| k.slot == 0).collect();
    for k in s.maglev.keys() {
        if !heads.iter().any(|(h, v)| v.narrow_rev_nat_id() == k.rev_nat_id && h.scope == k.scope && h.proto == k.proto && v.lb_alg == abi::LB_ALG_MAGLEV) {
            return Err(format!("Maglev table {k:?} has no header using it"));
        }
    }
    for r in s.src_ranges.keys() {
        if !heads.iter().any(|(_, v)| v.rev_nat_id() == r.rev_nat_id && v.flags & abi::SVC_F_SOURCE_RANGES != 0) {
            return Err(format!("source range {r:?} belongs to no header enforcing ranges"));
        }
    }
    for (addr, v) in &s.lb_addrs {
        if v.flags == 0 || !heads.iter().any(|(h, _)| h.addr == *addr) {
            return Err(format!("frontend address {:?} (flags {:#x}) has no frontend", addr.ip(), v.flags));
        }
    }
    for np in s.nodeports.keys() {
        if !heads.iter().any(|(h, v)| h.port() == np.port && h.proto == np.proto && v.flags & abi::SVC_F_NODE_PORT != 0) {
            return Err(format!("bind-protected NodePort {}/{} has no NodePort frontend", np.port, np.proto));
        }
    }
    if let Some(id) = s.revnat.keys().find(|id| !(1..=abi::REV_NAT_ID_MAX).contains(*id)) {
        return Err(format!("rev-NAT id {id} does not fit 24 bits"));
    }
    if let Some(id) = s.backends.keys().find(|id| !(1..=sluice_core::ids::MAX_BACKEND_ID).contains(*id)) {
        return Err(format!("backend id {id} outside the id space"));
    }
    let within = [
        (abi::MAP_SERVICES, s.services.len(), cap.services),
        (abi::MAP_BACKENDS, s.backends.len(), cap.backends),
        (abi::MAP_SRC_RANGES, s.src_ranges.len(), cap.src_ranges),
        (abi::MAP_LB_ADDRS, s.lb_addrs.len(), cap.lb_addrs),
        (abi::MAP_NODEPORTS, s.nodeports.len(), cap.nodeports),
        (abi::MAP_MAGLEV, s.maglev.len(), cap.maglev),
        (abi::MAP_REVNAT, s.revnat.len(), cap.revnat),
        (abi::MAP_BLOCKLIST, s.blocklist.len(), abi::BLOCKLIST_MAX as usize),
    ];
    if let Some((map, have, max)) = within.iter().find(|(_, have, max)| have > max) {
        return Err(format!("{map} holds {have} entries, capacity {max}"));
    }
    let mut ids = BTreeSet::new();
    for (k, v) in &s.blocklist {
        if !ids.insert(v.id) || usize::from(v.nports) > abi::BLOCK_PORTS || v.ports[..usize::from(v.nports)].iter().any(|p| p.port_be == 0) {
            return Err(format!("blocklist entry {k:?}: {v:?}"));
        }
    }
    Ok(())
}

/// The addresses a state's frontends use, for messages.
pub fn frontends(s: &LbState) -> Vec<(IpAddr, u16, u8, u8)> {
    s.services.keys().filter(|k| k.slot == 0).map(|k| (k.addr.ip(), k.port(), k.proto, k.scope)).collect()
}
