//! Sluice's custom resources (API group `sluice.dev`, version `v1alpha1`).
//!
//! - [`ProxyConfig`]: the cluster's one proxy configuration, named `default`.
//! - [`SluiceNode`]: what each node's agent reports about its datapath (status only).
//! - [`SourceBlocklist`]: CIDRs (optionally per port and protocol) dropped in XDP.
//!
//! The CRD YAML in `manifests/crds/` and `charts/sluice/crds/` is generated from these types by
//! [`crd_files`]; the `drift` test fails when the committed files differ
//! (`UPDATE_CRDS=1 cargo test -p sluice-crds` rewrites them). Validation lives in the schema
//! (OpenAPI bounds and enums, and CEL rules) so that the apiserver refuses a bad object with a clear
//! message before any agent sees it.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "sluice.dev";
pub const VERSION: &str = "v1alpha1";
/// The name of the one [`ProxyConfig`] object.
pub const PROXY_CONFIG_NAME: &str = "default";

// ---------------------------------------------------------------------------------------------
// Shared status pieces
// ---------------------------------------------------------------------------------------------

/// A condition in the shape of `metav1.Condition` (kept local so the schema does not depend on
/// k8s-openapi's optional schemars support).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. `Ready` or `Applied`.
    #[schemars(length(min = 1, max = 316))]
    pub r#type: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// The `.metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When the condition last changed status (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// A CamelCase reason for the last transition.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// A human-readable message about the transition.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// ProxyConfig
// ---------------------------------------------------------------------------------------------

/// The cluster-wide Sluice configuration. There is exactly one, named `default`. Every agent
/// applies a change at once, without a restart, and reports what it could not apply in its
/// SluiceNode's errors and in this object's `Applied` condition.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ProxyConfig",
    plural = "proxyconfigs",
    shortname = "spc",
    category = "sluice",
    status = "ProxyConfigStatus",
    derive = "PartialEq",
    doc = "The cluster-wide Sluice configuration; the one object is named `default`.",
    validation = Rule::new("self.metadata.name == 'default'")
        .message("there is one ProxyConfig and it must be named 'default'")
        .reason(Reason::FieldValueInvalid),
    printcolumn(name = "XDP", type_ = "string", json_path = ".spec.xdpAcceleration", description = "XDP acceleration of NodePort traffic"),
    printcolumn(name = "Algorithm", type_ = "string", json_path = ".spec.loadBalancingAlgorithm", description = "backend selection"),
    printcolumn(name = "HostNSOnly", type_ = "boolean", json_path = ".spec.hostNamespaceOnly", description = "socket-LB only for host-namespace processes"),
    printcolumn(name = "Applied", type_ = "string", json_path = ".status.conditions[?(@.type==\"Applied\")].status", description = "whether every agent applied the current generation"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfigSpec {
    /// Translate NodePort, ExternalIP and LoadBalancer traffic for remote backends in XDP on the
    /// node's devices, each device only once the agent has seen what XDP sends from it arrive
    /// (tc carries its flows until then, and whenever that check fails): `disabled`, `native`
    /// (XDP in the driver; a device that cannot is reported in the `Applied` condition) or
    /// `best-effort` (native where the driver can, generic XDP elsewhere).
    #[serde(default)]
    pub xdp_acceleration: XdpAcceleration,
    /// Socket load-balancing only for processes in the node's network namespace: pods' connects
    /// keep the ClusterIP, for sidecar meshes (Istio, Linkerd) that must see it and route it
    /// themselves. Sluice has no per-packet ClusterIP path for pods, so without such a mesh
    /// pods' ClusterIP traffic is not load-balanced.
    #[serde(default)]
    pub host_namespace_only: bool,
    /// How NodePort, ExternalIP and LoadBalancer frontends choose a backend: `random` (uniform
    /// per connection) or `maglev` (a Maglev table per frontend: every node sends a flow to the
    /// same backend, and a backend coming or going moves only about its share of flows).
    /// ClusterIP connects through socket load-balancing stay random.
    #[serde(default)]
    pub load_balancing_algorithm: LoadBalancingAlgorithm,
    /// Capacities of the BPF maps, taken by each agent as it starts: it resizes its pinned maps
    /// (moving their entries, so no flow or Service is lost) before swapping its programs in. A
    /// change made while an agent runs is reported in `status` until the agent restarts.
    /// `backends` above 262,144 (the backend id space) is held to it.
    #[serde(default)]
    pub map_sizes: MapSizes,
    /// The CIDRs that Services' `spec.externalIPs` may use (CVE-2020-8554 mitigation). Unset:
    /// every externalIP is accepted, as kube-proxy does. Set: an externalIP outside every listed
    /// CIDR is not programmed and is reported in an Event on its Service; `[]` refuses all.
    #[serde(rename = "externalIPCIDRs", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))")
        .message("every entry must be a CIDR such as 192.0.2.0/24 or 2001:db8::/64")
        .reason(Reason::FieldValueInvalid))]
    pub external_ip_cidrs: Option<Vec<String>>,
    /// The node addresses NodePorts are served on, as kube-proxy's `nodePortAddresses`: CIDRs (a
    /// node address inside one of them serves NodePorts) and `primary` (the node's first address
    /// of each family: its first `--node-ip` of that family, else its devices' first). Unset:
    /// every address the agent serves on. Pods and node processes reach a NodePort through
    /// socket load-balancing at these addresses only, as at the node from outside.
    #[serde(rename = "nodePortAddresses", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, c == 'primary' || isCIDR(c))")
        .message("every entry must be a CIDR such as 192.0.2.0/24, or primary")
        .reason(Reason::FieldValueInvalid))]
    pub node_port_addresses: Option<Vec<String>>,
    /// Keep NodePorts from the node's own processes, as Cilium does (kube-proxy once held them
    /// open and no longer does): a process in the node's network namespace cannot bind a port a
    /// NodePort uses. `false` lets it bind; traffic from outside still reaches the NodePort
    /// through tc and XDP, and a node process connecting to it still gets a backend.
    #[serde(default = "default_true")]
    pub nodeport_bind_protection: bool,
}

fn default_true() -> bool {
    true
}

impl Default for ProxyConfigSpec {
    fn default() -> Self {
        ProxyConfigSpec {
            xdp_acceleration: XdpAcceleration::Disabled,
            host_namespace_only: false,
            load_balancing_algorithm: LoadBalancingAlgorithm::Random,
            map_sizes: MapSizes::default(),
            external_ip_cidrs: None,
            node_port_addresses: None,
            nodeport_bind_protection: true,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum XdpAcceleration {
    #[default]
    Disabled,
    Native,
    BestEffort,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancingAlgorithm {
    #[default]
    Random,
    Maglev,
}

/// BPF map capacities (entries).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct MapSizes {
    /// Frontend slots (one per service frontend, plus one per backend of it).
    #[schemars(range(min = 1024, max = 16777216))]
    pub services: i32,
    /// Backends (distinct address:port:protocol across all Services).
    #[schemars(range(min = 1024, max = 16777216))]
    pub backends: i32,
    /// Connection-tracking entries for established NodePort/ExternalIP/LoadBalancer TCP
    /// connections (LRU; two per connection). Only connections whose handshake completed enter it.
    #[schemars(range(min = 16384, max = 16777216))]
    pub conntrack: i32,
    /// Connection-tracking entries for TCP handshakes in progress (LRU; two per connection): what
    /// a SYN flood fills, without touching established connections.
    #[schemars(range(min = 4096, max = 16777216))]
    pub conntrack_handshake: i32,
    /// Connection-tracking entries for UDP and SCTP flows (LRU; two per flow).
    #[schemars(range(min = 16384, max = 16777216))]
    pub conntrack_non_tcp: i32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes { services: 65536, backends: 65536, conntrack: 262144, conntrack_handshake: 65536, conntrack_non_tcp: 131072 }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfigStatus {
    /// The `.metadata.generation` the agents last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// `Applied`, written by one elected agent from every node's SluiceNode: `True` when every
    /// node applied every field of `observedGeneration`, `False` naming the nodes that did not
    /// (or have not yet) and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

// ---------------------------------------------------------------------------------------------
// SluiceNode
// ---------------------------------------------------------------------------------------------

/// What one node's agent reports about its datapath. Named after the Node; written only by that
/// node's agent (the spec is empty, everything is in the status).
// clippy reads the repeated `type_ = ...` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "SluiceNode",
    plural = "sluicenodes",
    shortname = "snode",
    category = "sluice",
    status = "SluiceNodeStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Datapath state of one node, reported by its Sluice agent; named after the Node.",
    printcolumn(name = "Kernel", type_ = "string", json_path = ".status.kernelVersion"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSync.time"),
    printcolumn(name = "Sync Seconds", type_ = "number", json_path = ".status.lastSync.durationSeconds"),
    printcolumn(name = "Errors", type_ = "string", json_path = ".status.errors", description = "current errors", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct SluiceNodeSpec {}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SluiceNodeStatus {
    /// `uname -r` of the node.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub kernel_version: String,
    /// BPF features the agent detected and uses, e.g. `tcx`, `bpf_link_cgroup`, `xdp_native:eth0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 256)))]
    pub bpf_features: Vec<String>,
    /// Datapath programs and whether each is attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub programs: Vec<ProgramStatus>,
    /// The devices carrying north-south traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub devices: Vec<DeviceStatus>,
    /// Map usage: entries against capacity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub maps: Vec<MapStatus>,
    /// The last completed sync of the datapath with the cluster state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<SyncStatus>,
    /// Current errors (empty when healthy), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub errors: Vec<String>,
    /// Packets this node dropped per SourceBlocklist entry, keyed `<blocklist>/<cidr>`; one
    /// elected agent sums these over all nodes into each SourceBlocklist's status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocklist_drops: BTreeMap<String, i64>,
    /// The `.metadata.generation` of each SourceBlocklist this node has programmed, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocklist_generations: BTreeMap<String, i64>,
    /// How this node applied the ProxyConfig `default`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_config: Option<NodeProxyConfigStatus>,
}

/// One node's view of the ProxyConfig; the ProxyConfig's own status sums these over the nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeProxyConfigStatus {
    /// The `.metadata.generation` this node applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// Fields it could not apply as asked, and why (empty: every field in effect).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 1024)))]
    pub problems: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgramStatus {
    /// Program name, e.g. `sluice_connect4`.
    #[schemars(length(max = 256))]
    pub name: String,
    /// Where it hooks, e.g. `cgroup/connect4`, `tcx/ingress:eth0`, `xdp:eth0`.
    #[schemars(length(max = 256))]
    pub hook: String,
    pub attached: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    #[schemars(length(max = 64))]
    pub name: String,
    /// How XDP runs on the device: `none`, `native` or `generic`.
    #[schemars(length(max = 32))]
    pub xdp_mode: String,
    /// Whether XDP translates north-south flows on the device: `off` (not asked for),
    /// `unproven` (asked for, not proven yet), `accelerated` (what XDP sends from the device was
    /// seen to arrive), `fallback` or `failed` (it was not: tc carries the flows; `failed` when
    /// `native` was demanded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 32))]
    pub acceleration: String,
    /// Why the device is in that state.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub acceleration_reason: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MapStatus {
    #[schemars(length(max = 256))]
    pub name: String,
    #[schemars(range(min = 0))]
    pub entries: i64,
    #[schemars(range(min = 0))]
    pub capacity: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the sync completed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// How long the sync took, from reading the cluster state to the last map write.
    #[schemars(range(min = 0.0))]
    pub duration_seconds: f64,
}

// ---------------------------------------------------------------------------------------------
// SourceBlocklist
// ---------------------------------------------------------------------------------------------

/// Source CIDRs whose packets are dropped in XDP on every node's devices before anything else
/// (optionally only to given ports). Each entry's drops are counted in `status.drops`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "SourceBlocklist",
    plural = "sourceblocklists",
    shortname = "sbl",
    category = "sluice",
    status = "SourceBlocklistStatus",
    derive = "PartialEq",
    doc = "Source CIDRs dropped in XDP on every node, optionally per destination port and protocol.",
    printcolumn(name = "Drops", type_ = "string", json_path = ".status.drops", description = "packets dropped per CIDR"),
    printcolumn(
        name = "Observed",
        type_ = "integer",
        json_path = ".status.observedGeneration",
        description = "generation the agents programmed",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SourceBlocklistSpec {
    /// The blocked sources; each CIDR at most once.
    #[schemars(
        length(min = 1, max = 1024),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["cidr"])
    )]
    pub entries: Vec<BlocklistEntry>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlocklistEntry {
    /// Source CIDR in canonical form (host bits zero), e.g. `203.0.113.0/24`, `2001:db8::/48`;
    /// a single address is `/32` or `/128`.
    #[schemars(length(min = 1, max = 49))]
    #[x_kube(
        validation = Rule::new("isCIDR(self)")
            .message("cidr must be a CIDR such as 203.0.113.0/24 or 2001:db8::/48")
            .reason(Reason::FieldValueInvalid),
        validation = Rule::new("!isCIDR(self) || string(cidr(self).masked()) == self")
            .message("cidr must have its host bits zero, e.g. 203.0.113.0/24 rather than 203.0.113.7/24")
            .reason(Reason::FieldValueInvalid)
    )]
    pub cidr: String,
    /// Drop only packets to these destination ports; unset or empty: every packet from the CIDR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// At most 8: the datapath matches them in XDP (`SLUICE_BLOCK_PORTS`).
    #[schemars(
        length(max = sluice_abi::BLOCK_PORTS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port", "protocol"])
    )]
    pub ports: Vec<BlocklistPort>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlocklistPort {
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default)]
    pub protocol: Protocol,
}

// The one protocol type of Sluice, from the API's spelling to the datapath's protocol numbers.
/// `TCP`, `UDP` or `SCTP`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, JsonSchema)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

impl Protocol {
    /// The IP protocol number the datapath keys on.
    pub fn number(self) -> u8 {
        match self {
            Protocol::TCP => sluice_abi::IPPROTO_TCP,
            Protocol::UDP => sluice_abi::IPPROTO_UDP,
            Protocol::SCTP => sluice_abi::IPPROTO_SCTP,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            sluice_abi::IPPROTO_TCP => Some(Protocol::TCP),
            sluice_abi::IPPROTO_UDP => Some(Protocol::UDP),
            sluice_abi::IPPROTO_SCTP => Some(Protocol::SCTP),
            _ => None,
        }
    }

    /// The Kubernetes spelling (`TCP`); `None` for a protocol Kubernetes does not know.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "TCP" => Some(Protocol::TCP),
            "UDP" => Some(Protocol::UDP),
            "SCTP" => Some(Protocol::SCTP),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
            Protocol::SCTP => "SCTP",
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceBlocklistStatus {
    /// The oldest `.metadata.generation` any node reports programmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// Packets dropped per entry, summed over all nodes: CIDR → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<String, i64>,
}

// ---------------------------------------------------------------------------------------------
// YAML generation
// ---------------------------------------------------------------------------------------------

/// Every CRD of the group.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ProxyConfig::crd(), SluiceNode::crd(), SourceBlocklist::crd()]
}

const HEADER: &str = "# Generated from controller/crds (sluice-crds) by `UPDATE_CRDS=1 cargo test -p sluice-crds`.\n# Do not edit.\n";

/// `(file name, YAML)` for every CRD: `<plural>.sluice.dev.yaml`.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().expect("CRDs are named");
            let yaml = serde_yaml::to_string(&crd).expect("a CRD serializes to YAML");
            (format!("{name}.yaml"), format!("{HEADER}{yaml}"))
        })
        .collect()
}
