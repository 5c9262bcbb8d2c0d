//! The status of the objects every node shares: each SourceBlocklist's drops summed over the
//! nodes, and the ProxyConfig's `Applied` condition over the nodes. Each node reports its own
//! view in its SluiceNode; one elected agent (see `election`) watches the SluiceNodes and writes
//! the shared objects, and only when what they should say changed. No other agent lists the
//! nodes or writes a shared object.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use sluice_crds::{Condition, ConditionStatus, NodeProxyConfigStatus, ProxyConfigStatus, SluiceNode, SluiceNodeStatus, SourceBlocklistStatus};
use sluice_k8s::watch;

use crate::election::Election;
use crate::node_status::Facts;

/// How often the leader renews and looks again; a follower reads the lease once a lease
/// duration, so it takes over at most two durations after the leader stopped.
const LEADER_PERIOD: Duration = Duration::from_secs(5);
const FOLLOWER_PERIOD: Duration = Duration::from_secs(crate::election::LEASE_SECONDS as u64);
pub const LEASE_NAME: &str = "sluice-status-writer";

/// A SourceBlocklist's status from every node's report: drops summed per entry, and the oldest
/// generation any node has programmed (a node that has not programmed it yet is not counted:
/// it reports once it has).
pub fn blocklist_status(name: &str, nodes: &[SluiceNodeStatus]) -> SourceBlocklistStatus {
    let mut drops = BTreeMap::new();
    for n in nodes {
        for (key, count) in &n.blocklist_drops {
            if let Some((list, cidr)) = key.split_once('/')
                && list == name
            {
                *drops.entry(cidr.to_string()).or_default() += count;
            }
        }
    }
    SourceBlocklistStatus { observed_generation: nodes.iter().filter_map(|n| n.blocklist_generations.get(name).copied()).min(), drops }
}

/// The ProxyConfig's status for `generation` from every node's report (name, what it applied).
/// `Applied` is True when every node applied that generation in full; its transition time moves
/// only when its status does (`previous` is what was last written).
pub fn proxy_config_status(
    generation: Option<i64>,
    nodes: &[(String, Option<NodeProxyConfigStatus>)],
    previous: Option<&ProxyConfigStatus>,
    now: &str,
) -> ProxyConfigStatus {
    let mut behind = Vec::new();
    let mut problems = Vec::new();
    for (node, report) in nodes {
        match report {
            Some(r) if r.observed_generation == generation => {
                if !r.problems.is_empty() {
                    problems.push(format!("{node}: {}", r.problems.join("; ")));
                }
            }
            _ => behind.push(node.as_str()),
        }
    }
    let applied = behind.is_empty() && problems.is_empty();
    let message = if applied {
        format!("every field in effect on all {} nodes", nodes.len())
    } else {
        let mut parts = problems;
        if !behind.is_empty() {
            parts.push(format!("not yet applied on {}", behind.join(", ")));
        }
        parts.join("; ")
    };
    let status = if applied { ConditionStatus::True } else { ConditionStatus::False };
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.r#type == "Applied" && c.status == status))
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    ProxyConfigStatus {
        observed_generation: if behind.is_empty() { generation } else { None },
        conditions: vec![Condition {
            r#type: "Applied".into(),
            status,
            observed_generation: generation,
            last_transition_time,
            reason: if applied { "Applied" } else if behind.is_empty() { "PartlyApplied" } else { "Progressing" }.into(),
            message,
        }],
    }
}

/// Runs for the life of the agent: campaigns for the lease and, while it holds it, keeps the
/// shared objects' status in step with the SluiceNodes.
pub async fn run(client: kube::Client, identity: String, namespace: String, facts: Arc<Mutex<Facts>>) {
    let mut election = Election::new(client.clone(), &namespace, LEASE_NAME, &identity);
    let mut watch: Option<(reflector::Store<SluiceNode>, tokio::task::JoinHandle<()>)> = None;
    let mut written_lists: BTreeMap<String, SourceBlocklistStatus> = BTreeMap::new();
    let mut written_config: Option<ProxyConfigStatus> = None;
    let mut failing = false;
    loop {
        let leading = match election.lead().await {
            Ok(l) => l,
            Err(e) => {
                if !failing {
                    tracing::warn!(namespace, "cannot take or renew the status writer's Lease (RBAC for leases?): {e}");
                }
                failing = true;
                false
            }
        };
        if !leading {
            if let Some((_, task)) = watch.take() {
                tracing::info!("no longer the status writer");
                task.abort();
                written_lists.clear();
                written_config = None;
            }
            tokio::time::sleep(FOLLOWER_PERIOD).await;
            continue;
        }
        let store = match &watch {
            Some((store, _)) => store.clone(),
            None => {
                tracing::info!(identity, "elected to write the shared objects' status");
                let (store, writer) = reflector::store();
                let api = Api::<SluiceNode>::all(client.clone());
                // Retried as the agent's own watches are (kube-runtime's default backoff starts
                // over before every list, so a refused list would be retried every second).
                let events = watch::guarded("SluiceNode", watch::CatchUpBackoff::default(), move || watcher(api.clone(), watcher::Config::default()).boxed());
                let stream = reflector(writer, events).touched_objects().for_each(|_| futures::future::ready(()));
                watch = Some((store.clone(), tokio::spawn(stream)));
                store
            }
        };
        if tokio::time::timeout(LEADER_PERIOD, store.wait_until_ready()).await.is_ok() {
            match write_changed(&client, &store, &facts, &mut written_lists, &mut written_config).await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!("cannot write the SourceBlocklist/ProxyConfig status: {e}");
                    }
                    failing = true;
                }
            }
        }
        tokio::time::sleep(LEADER_PERIOD).await;
    }
}

async fn write_changed(
    client: &kube::Client,
    store: &reflector::Store<SluiceNode>,
    facts: &Mutex<Facts>,
    written_lists: &mut BTreeMap<String, SourceBlocklistStatus>,
    written_config: &mut Option<ProxyConfigStatus>,
) -> Result<(), kube::Error> {
    let nodes: Vec<(String, SluiceNodeStatus)> =
        store.state().iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), n.status.clone().unwrap_or_default())).collect();
    let statuses: Vec<SluiceNodeStatus> = nodes.iter().map(|(_, s)| s.clone()).collect();
    let (lists, config_generation) = {
        let f = facts.lock().expect("facts");
        (f.block_generations.keys().cloned().collect::<Vec<_>>(), f.proxy_config.as_ref().map(|p| p.generation))
    };
    let api: Api<sluice_crds::SourceBlocklist> = Api::all(client.clone());
    written_lists.retain(|name, _| lists.contains(name));
    for name in lists {
        let status = blocklist_status(&name, &statuses);
        if written_lists.get(&name) != Some(&status) {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&serde_json::json!({"status": status}))).await?;
            written_lists.insert(name, status);
        }
    }
    let Some(generation) = config_generation else {
        *written_config = None;
        return Ok(());
    };
    let reports: Vec<(String, Option<NodeProxyConfigStatus>)> = nodes.iter().map(|(n, s)| (n.clone(), s.proxy_config.clone())).collect();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = proxy_config_status(generation, &reports, written_config.as_ref(), &now);
    if written_config.as_ref() != Some(&status) {
        let api: Api<sluice_crds::ProxyConfig> = Api::all(client.clone());
        api.patch_status(sluice_crds::PROXY_CONFIG_NAME, &PatchParams::default(), &Patch::Merge(&serde_json::json!({"status": status}))).await?;
        *written_config = Some(status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(drops: &[(&str, i64)], generations: &[(&str, i64)]) -> SluiceNodeStatus {
        SluiceNodeStatus {
            blocklist_drops: drops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            blocklist_generations: generations.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn blocklist_drops_are_summed_over_the_nodes_and_the_oldest_generation_shown() {
        let nodes = [node(&[("block/10.0.0.0/8", 3), ("other/1.2.3.4/32", 9)], &[("block", 2)]), node(&[("block/10.0.0.0/8", 4)], &[("block", 1)]), node(&[], &[])];
        let s = blocklist_status("block", &nodes);
        assert_eq!(s.drops, [("10.0.0.0/8".to_string(), 7)].into());
        assert_eq!(s.observed_generation, Some(1));
    }

    fn report(generation: i64, problems: &[&str]) -> Option<NodeProxyConfigStatus> {
        Some(NodeProxyConfigStatus { observed_generation: Some(generation), problems: problems.iter().map(|p| p.to_string()).collect() })
    }

    #[test]
    fn the_proxy_config_is_applied_when_every_node_applied_it_and_its_time_moves_only_on_a_change() {
        let all = [("n1".to_string(), report(3, &[])), ("n2".to_string(), report(3, &[]))];
        let s = proxy_config_status(Some(3), &all, None, "t1");
        assert_eq!((s.conditions[0].status, s.observed_generation), (ConditionStatus::True, Some(3)));
        // The same again later: nothing to write.
        assert_eq!(proxy_config_status(Some(3), &all, Some(&s), "t2"), s);
        let behind = [("n1".to_string(), report(3, &[])), ("n2".to_string(), report(2, &[]))];
        let b = proxy_config_status(Some(3), &behind, Some(&s), "t3");
        assert_eq!((b.conditions[0].status, b.conditions[0].last_transition_time.as_str()), (ConditionStatus::False, "t3"));
        assert!(b.conditions[0].message.contains("not yet applied on n2"), "{b:?}");
        let partly = [("n1".to_string(), report(3, &["xdpAcceleration native: eth0: no driver support"])), ("n2".to_string(), report(3, &[]))];
        let p = proxy_config_status(Some(3), &partly, Some(&b), "t4");
        assert_eq!((p.conditions[0].reason.as_str(), p.conditions[0].last_transition_time.as_str()), ("PartlyApplied", "t3"));
        assert!(p.conditions[0].message.starts_with("n1: xdpAcceleration native"), "{p:?}");
    }
}
