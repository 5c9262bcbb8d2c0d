//! What the agent needs from its own Node object: the zone its topology hints are read for, and
//! whether the node should still get traffic (for /healthz).

use k8s_openapi::api::core::v1::Node;

pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub zone: Option<String>,
    /// False while the Node is being deleted or the cluster autoscaler has marked it for
    /// deletion: load balancers should drain it first (kube-proxy, KEP-3836).
    pub eligible: bool,
}

impl NodeFacts {
    /// A deleted Node gets no traffic and has no zone.
    pub const GONE: NodeFacts = NodeFacts { zone: None, eligible: false };

    pub fn of(node: &Node) -> NodeFacts {
        let zone = node.metadata.labels.as_ref().and_then(|l| l.get(LABEL_TOPOLOGY_ZONE)).filter(|z| !z.is_empty()).cloned();
        let tainted = node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == "ToBeDeletedByClusterAutoscaler"));
        NodeFacts { zone, eligible: node.metadata.deletion_timestamp.is_none() && !tainted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};

    #[test]
    fn a_node_being_deleted_or_marked_by_the_autoscaler_is_not_eligible() {
        let mut n = Node::default();
        assert!(NodeFacts::of(&n).eligible);
        n.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(!NodeFacts::of(&n).eligible);
        let n = Node {
            spec: Some(NodeSpec {
                taints: Some(vec![Taint { key: "ToBeDeletedByClusterAutoscaler".into(), effect: "NoSchedule".into(), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!NodeFacts::of(&n).eligible);
    }

    #[test]
    fn the_zone_comes_from_the_well_known_label() {
        let mut n = Node::default();
        assert_eq!(NodeFacts::of(&n).zone, None);
        n.metadata.labels = Some([(LABEL_TOPOLOGY_ZONE.to_string(), "zone-a".to_string())].into());
        assert_eq!(NodeFacts::of(&n).zone.as_deref(), Some("zone-a"));
        n.metadata.labels = Some([(LABEL_TOPOLOGY_ZONE.to_string(), String::new())].into());
        assert_eq!(NodeFacts::of(&n).zone, None, "an empty label is no zone");
    }
}
