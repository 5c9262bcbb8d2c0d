//! What planning reads of a Service and of an EndpointSlice, and nothing more.
//!
//! The agent keeps every Service and EndpointSlice of the cluster. As the apiserver lists them
//! (managedFields, annotations, targetRefs, status, ...) 100,000 Services with 10 endpoints each
//! take gigabytes; these types keep only the fields [`crate::translate`] uses, addresses
//! parsed, namespaces and node names shared. They are read straight from the API's own JSON (a
//! watch, a list page) or a manifest's YAML: [`ServiceObject`] and [`SliceObject`] are that
//! shape, decoded field by field without ever building the whole object, and `into_model` is
//! the one conversion. Anything that holds a `k8s_openapi` object goes through the same serde
//! path ([`Service::from_api`], [`Slice::from_api`]).
//!
//! Field semantics follow `k8s_openapi`'s decoding: every field may be missing or null, and
//! reads as its default then.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};
use sluice_crds::Protocol;

use crate::names::{Cidr, Name, ObjectKey};
use crate::translate::{LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME};

/// A value as written: parsed, or the text that did not parse (for the warning that names it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Parsed<T> {
    Ok(T),
    Bad(Box<str>),
}

impl<T> Parsed<T> {
    fn with(text: &str, parse: impl FnOnce(&str) -> Option<T>) -> Parsed<T> {
        match parse(text) {
            Some(v) => Parsed::Ok(v),
            None => Parsed::Bad(text.into()),
        }
    }
}

fn ip(text: &str) -> Parsed<IpAddr> {
    Parsed::with(text, |t| t.parse().ok())
}

/// A protocol field: TCP when unset.
fn protocol(text: Option<String>) -> Parsed<Protocol> {
    Parsed::with(text.as_deref().unwrap_or("TCP"), Protocol::parse)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// Also any type the API does not define: it gets a ClusterIP only, as kube-proxy does.
    #[default]
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// A Service as planning reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ObjectKey,
    /// Labelled for another proxy (`service-proxy-name`) or as headless: skipped without a word.
    pub ignored: bool,
    /// None: the object has no spec.
    pub spec: Option<ServiceSpec>,
    /// `status.loadBalancer.ingress`.
    pub ingress: Vec<Ingress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSpec {
    pub type_: ServiceType,
    /// `clusterIP: None`.
    pub headless: bool,
    /// `clusterIPs`, or `clusterIP` when that list is empty; empty entries left out.
    pub cluster_ips: Vec<Parsed<IpAddr>>,
    pub ports: Vec<ServicePort>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `sessionAffinity: ClientIP`.
    pub client_ip_affinity: bool,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`.
    pub affinity_timeout: Option<i32>,
    pub external_ips: Vec<Parsed<IpAddr>>,
    pub source_ranges: Vec<Parsed<Cidr>>,
    pub health_check_node_port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// "" when unnamed.
    pub name: Box<str>,
    pub protocol: Parsed<Protocol>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// A load balancer ingress point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    pub ip: Option<Parsed<IpAddr>>,
    /// `ipMode` unset or `VIP`: traffic to the address is the proxy's to handle.
    pub vip: bool,
}

/// An EndpointSlice as planning reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub key: ObjectKey,
    pub ignored: bool,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<Name>,
    pub address_type: AddressType,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<SlicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressType {
    IPv4,
    IPv6,
    Fqdn,
    Other(Box<str>),
}

impl fmt::Display for AddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
            AddressType::Fqdn => "FQDN",
            AddressType::Other(text) => text,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Box<str>,
    pub protocol: Parsed<Protocol>,
    pub port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "EndpointWire")]
pub struct Endpoint {
    /// The first address, the only one kube-proxy uses; None when there is none.
    pub address: Option<Parsed<IpAddr>>,
    pub node_name: Option<Name>,
    /// Topology hints, when the EndpointSlice controller set any.
    pub hints: Option<Box<Hints>>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    pub zones: Vec<Name>,
    pub nodes: Vec<Name>,
}

/// A null list or map reads as empty, as `k8s_openapi` reads it.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    labels: BTreeMap<String, String>,
}

/// The metadata planning and the watcher read (name, namespace, labels, resourceVersion);
/// managedFields, annotations and the rest are skipped unread.
fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Option::<MetaWire>::deserialize(d)?;
    Ok(m.map(|m| ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        labels: (!m.labels.is_empty()).then_some(m.labels),
        ..ObjectMeta::default()
    })
    .unwrap_or_default())
}

fn ignored_by_label(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME) || l.contains_key(LABEL_HEADLESS))
}

/// A Service as the API lists and watches it, read into [`Service`]'s fields as it is decoded.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceObject {
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<ServiceSpec>,
    #[serde(default)]
    status: Option<StatusWire>,
}

impl ServiceObject {
    pub fn into_model(self) -> Service {
        Service {
            key: ObjectKey::of(&self.metadata),
            ignored: ignored_by_label(&self.metadata),
            spec: self.spec,
            ingress: self.status.map(|s| s.load_balancer).unwrap_or_default(),
        }
    }
}

/// An EndpointSlice as the API lists and watches it, read into [`Slice`]'s fields as it is
/// decoded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceObject {
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "or_default")]
    address_type: String,
    #[serde(default, deserialize_with = "or_default")]
    endpoints: Vec<Endpoint>,
    #[serde(default, deserialize_with = "or_default")]
    ports: Vec<SlicePortWire>,
}

impl SliceObject {
    pub fn into_model(mut self) -> Slice {
        // Decoding grows the list by doubling: 10 endpoints would hold room for 16.
        self.endpoints.shrink_to_fit();
        let address_type = match self.address_type.as_str() {
            "IPv4" => AddressType::IPv4,
            "IPv6" => AddressType::IPv6,
            "FQDN" => AddressType::Fqdn,
            other => AddressType::Other(other.into()),
        };
        let service = self.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE_NAME)).map(|s| Name::from(s.as_str()));
        Slice {
            key: ObjectKey::of(&self.metadata),
            ignored: ignored_by_label(&self.metadata),
            service,
            address_type,
            endpoints: self.endpoints,
            ports: self
                .ports
                .into_iter()
                .map(|p| SlicePort { name: p.name.unwrap_or_default().into(), protocol: protocol(p.protocol), port: p.port })
                .collect(),
        }
    }
}

impl Service {
    /// A `k8s_openapi` Service (tests, tools), through the same decoding as the API's JSON.
    pub fn from_api(svc: &k8s_openapi::api::core::v1::Service) -> Service {
        serde_json::to_value(svc).and_then(serde_json::from_value::<ServiceObject>).expect("a Service reads back").into_model()
    }
}

impl Slice {
    /// A `k8s_openapi` EndpointSlice (tests, tools), through the same decoding as the API's JSON.
    pub fn from_api(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> Slice {
        serde_json::to_value(slice).and_then(serde_json::from_value::<SliceObject>).expect("an EndpointSlice reads back").into_model()
    }
}

/// The watcher asks kube for these kinds as it would for `k8s_openapi`'s own.
macro_rules! api_resource {
    ($object:ty, $api:ty) => {
        impl k8s_openapi::Resource for $object {
            const API_VERSION: &'static str = <$api as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$api as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$api as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$api as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <$api as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$api as k8s_openapi::Resource>::Scope;
        }
        impl k8s_openapi::Metadata for $object {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

api_resource!(ServiceObject, k8s_openapi::api::core::v1::Service);
api_resource!(SliceObject, k8s_openapi::api::discovery::v1::EndpointSlice);

// ---------------------------------------------------------------- the API's shapes, transient

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecWire {
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs", default, deserialize_with = "or_default")]
    cluster_ips: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    ports: Vec<ServicePortWire>,
    internal_traffic_policy: Option<String>,
    external_traffic_policy: Option<String>,
    session_affinity: Option<String>,
    session_affinity_config: Option<AffinityConfigWire>,
    #[serde(rename = "externalIPs", default, deserialize_with = "or_default")]
    external_ips: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    load_balancer_source_ranges: Vec<String>,
    health_check_node_port: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePortWire {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i32>,
    node_port: Option<i32>,
}

#[derive(Deserialize)]
struct AffinityConfigWire {
    #[serde(rename = "clientIP")]
    client_ip: Option<ClientIpWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientIpWire {
    timeout_seconds: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusWire {
    #[serde(default, deserialize_with = "lb_ingress")]
    load_balancer: Vec<Ingress>,
}

#[derive(Deserialize)]
struct LoadBalancerWire {
    #[serde(default, deserialize_with = "or_default")]
    ingress: Vec<IngressWire>,
}

fn lb_ingress<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ingress>, D::Error> {
    let lb = Option::<LoadBalancerWire>::deserialize(d)?;
    Ok(lb
        .map(|lb| lb.ingress.into_iter().map(|i| Ingress { ip: i.ip.as_deref().map(ip), vip: i.ip_mode.as_deref().is_none_or(|m| m == "VIP") }).collect())
        .unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngressWire {
    ip: Option<String>,
    ip_mode: Option<String>,
}

#[derive(Deserialize)]
struct EndpointWire {
    #[serde(default, deserialize_with = "or_default")]
    addresses: Vec<String>,
    conditions: Option<ConditionsWire>,
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
    hints: Option<HintsWire>,
}

#[derive(Deserialize)]
struct ConditionsWire {
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HintsWire {
    #[serde(default, deserialize_with = "or_default")]
    for_zones: Vec<NamedWire>,
    #[serde(default, deserialize_with = "or_default")]
    for_nodes: Vec<NamedWire>,
}

#[derive(Deserialize)]
struct NamedWire {
    #[serde(default, deserialize_with = "or_default")]
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct SlicePortWire {
    name: Option<String>,
    protocol: Option<String>,
    port: Option<i32>,
}

impl<'de> Deserialize<'de> for ServiceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = SpecWire::deserialize(d)?;
        let type_ = match s.type_.as_deref() {
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            _ => ServiceType::ClusterIp,
        };
        let listed: Vec<&str> =
            if s.cluster_ips.is_empty() { s.cluster_ip.iter().map(String::as_str).collect() } else { s.cluster_ips.iter().map(String::as_str).collect() };
        Ok(ServiceSpec {
            type_,
            headless: s.cluster_ip.as_deref() == Some("None"),
            cluster_ips: listed.into_iter().filter(|t| !t.is_empty()).map(ip).collect(),
            ports: s
                .ports
                .into_iter()
                .map(|p| ServicePort {
                    name: p.name.unwrap_or_default().into(),
                    protocol: protocol(p.protocol),
                    port: p.port.unwrap_or_default(),
                    node_port: p.node_port,
                })
                .collect(),
            internal_local: s.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: s.external_traffic_policy.as_deref() == Some("Local"),
            client_ip_affinity: s.session_affinity.as_deref() == Some("ClientIP"),
            affinity_timeout: s.session_affinity_config.and_then(|c| c.client_ip).and_then(|c| c.timeout_seconds),
            external_ips: s.external_ips.iter().map(|t| ip(t)).collect(),
            source_ranges: s.load_balancer_source_ranges.iter().map(|t| Parsed::with(t, Cidr::parse)).collect(),
            health_check_node_port: s.health_check_node_port,
        })
    }
}

impl From<EndpointWire> for Endpoint {
    fn from(e: EndpointWire) -> Self {
        let hints = e.hints.map(|h| Hints {
            zones: h.for_zones.into_iter().map(|z| Name::shared(&z.name)).collect(),
            nodes: h.for_nodes.into_iter().map(|n| Name::shared(&n.name)).collect(),
        });
        let c = e.conditions;
        Endpoint {
            address: e.addresses.first().map(|a| ip(a)),
            node_name: e.node_name.as_deref().map(Name::shared),
            hints: hints.filter(|h| !h.zones.is_empty() || !h.nodes.is_empty()).map(Box::new),
            ready: c.as_ref().and_then(|c| c.ready),
            serving: c.as_ref().and_then(|c| c.serving),
            terminating: c.as_ref().and_then(|c| c.terminating),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_json_reads_into_what_planning_needs_and_nulls_read_as_empty() {
        let svc: ServiceObject = serde_json::from_str(
            r#"{"metadata": {"name": "web", "resourceVersion": "7", "labels": {"app": "web"}, "annotations": {"a": "b"},
                 "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": null, "ports": [{"name": "http", "port": 80, "protocol": "SCTPX"}],
                         "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP", "externalIPs": ["nope"], "loadBalancerSourceRanges": ["10.0.0.0/8"]},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2", "ipMode": "Proxy"}]}}}"#,
        )
        .unwrap();
        assert_eq!(svc.metadata.resource_version.as_deref(), Some("7"), "the watcher resumes from it");
        assert!(svc.metadata.managed_fields.is_none() && svc.metadata.annotations.is_none(), "skipped unread");
        let svc = svc.into_model();
        assert_eq!(svc.key, ObjectKey::new("default", "web"));
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.type_, ServiceType::LoadBalancer);
        assert_eq!(spec.cluster_ips, [Parsed::Ok("10.96.0.10".parse().unwrap())], "clusterIP when clusterIPs is null");
        assert_eq!(spec.ports[0].protocol, Parsed::Bad("SCTPX".into()));
        assert!(spec.external_local && spec.client_ip_affinity && !spec.internal_local);
        assert_eq!(spec.external_ips, [Parsed::Bad("nope".into())]);
        assert_eq!(svc.ingress.iter().map(|i| i.vip).collect::<Vec<_>>(), [true, false]);

        let slice: SliceObject = serde_json::from_str(
            r#"{"metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": null,
                "endpoints": [{"addresses": ["10.244.1.2", "10.244.1.3"], "conditions": {"ready": false}, "nodeName": "n1",
                               "targetRef": {"kind": "Pod", "name": "web-abc", "uid": "x"}, "zone": "z1", "hints": {"forZones": [{"name": "z1"}]}},
                              {"addresses": null}]}"#,
        )
        .unwrap();
        let slice = slice.into_model();
        assert_eq!((slice.key.to_string(), slice.service.as_deref()), ("shop/web-1".to_string(), Some("web")));
        assert!(slice.ports.is_empty());
        let ep = &slice.endpoints[0];
        assert_eq!(ep.address, Some(Parsed::Ok("10.244.1.2".parse().unwrap())), "the first address only");
        assert_eq!((ep.ready, ep.serving, ep.node_name.as_deref()), (Some(false), None, Some("n1")));
        assert_eq!(ep.hints.as_ref().unwrap().zones, [Name::from("z1")]);
        assert_eq!(slice.endpoints[1].address, None);
        assert!(std::ptr::eq(Name::shared("n1").as_str(), ep.node_name.as_ref().unwrap().as_str()), "one copy of a node name");
    }

    #[test]
    fn a_k8s_openapi_object_reads_the_same_as_its_json() {
        let json = r#"{"metadata": {"name": "a", "namespace": "x"}, "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}}"#;
        let api: k8s_openapi::api::core::v1::Service = serde_json::from_str(json).unwrap();
        assert_eq!(Service::from_api(&api), serde_json::from_str::<ServiceObject>(json).unwrap().into_model());
    }
}
