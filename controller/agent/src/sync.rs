//! One sync of the datapath with the cluster state: read the index, apply the ProxyConfig, plan,
//! write the maps, forget what the removed backends leave behind, and record the outcome for the
//! CLI. Its inputs are explicit (the index, the two map traits) and its output is a [`Report`],
//! so it is tested with in-memory maps; the agent's loop only waits for changes, and hands the
//! report to the metrics, probes, Events and status writers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_abi::{Addr, AgentStatus, BlockKey, SvcKey};
use sluice_core::blocklist::BlockOwner;
use sluice_core::ids::IdSpace;
use sluice_core::{Capacity, Cidr, HealthCheck, LbState, NodeContext, Planner, Touched, Warning, ids_from_state};
use sluice_crds::{DeviceStatus, LoadBalancingAlgorithm, ProxyConfig, XdpAcceleration};
use sluice_datapath::housekeeping::Cleanup;
use sluice_datapath::sockets::StaleUdp;
use sluice_datapath::reconcile::SyncError;
use sluice_datapath::{LbMaps, NodeMaps, Reconciler, SyncStats, loader};
use sluice_k8s::Index;

/// What the agent was started with, fixed for its life.
pub struct Settings {
    /// `--nodeport-acceleration`; a ProxyConfig overrides it.
    pub flag_acceleration: loader::Acceleration,
    /// The north-south devices and how XDP runs on each (empty without devices).
    pub devices: Vec<DeviceStatus>,
    /// Every address the agent may serve NodePorts on (`--node-ip`, else the devices'), first
    /// of each family first; a ProxyConfig's nodePortAddresses picks among them.
    pub node_ips: Vec<IpAddr>,
}

/// What a ProxyConfig changes in this agent right now, and what it reports back.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedConfig {
    /// What the flag or the ProxyConfig asks of XDP (each device still needs its proof).
    pub acceleration: loader::Acceleration,
    pub external_ip_cidrs: Option<Vec<Cidr>>,
    pub maglev: bool,
    /// The addresses NodePorts are served on.
    pub node_ips: Vec<IpAddr>,
    /// Where healthCheckNodePorts listen: the nodePortAddresses when given (as kube-proxy),
    /// else None, every address.
    pub health_check_addresses: Option<Vec<IpAddr>>,
    pub nodeport_bind_protection: bool,
    pub status: Option<crate::node_status::ProxyConfigReport>,
}

#[derive(Debug)]
pub enum Outcome {
    /// Not every source has delivered its first complete list: nothing was planned or written.
    Waiting,
    Synced(SyncStats),
    /// The maps hold what landed; the step is to be retried.
    Failed(String),
}

#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// The index's event counts (Services, EndpointSlices), for the change counters.
    pub events: (u64, u64),
    /// Whether the Node should get traffic, once it is known.
    pub node_eligible: Option<bool>,
    pub config: Option<AppliedConfig>,
    /// Warnings the previous step did not have: each is logged and made an Event once.
    pub new_warnings: Vec<Warning>,
    pub health_checks: Vec<HealthCheck>,
    /// name → generation of the SourceBlocklists planned.
    pub block_generations: BTreeMap<String, Option<i64>>,
    /// Blocklist entry id → what it stands for (after a successful sync).
    pub block_owners: Option<BTreeMap<u32, BlockOwner>>,
    pub generation: u64,
    pub frontends: usize,
    /// When the oldest change this step programmed arrived.
    pub pending_since: Option<Instant>,
    /// Whether the backends may have changed (a full plan, or one that touched backends).
    pub backends_changed: bool,
    /// Whether everything was laid out anew (a start, a new node context, a map near full).
    pub planned_in_full: bool,
    pub planned_in: Duration,
    pub took: Duration,
}

impl Report {
    fn waiting(events: (u64, u64), node_eligible: Option<bool>) -> Report {
        Report {
            outcome: Outcome::Waiting,
            events,
            node_eligible,
            config: None,
            new_warnings: Vec::new(),
            health_checks: Vec::new(),
            block_generations: BTreeMap::new(),
            block_owners: None,
            generation: 0,
            frontends: 0,
            pending_since: None,
            backends_changed: false,
            planned_in_full: false,
            planned_in: Duration::ZERO,
            took: Duration::ZERO,
        }
    }
}

/// The state one sync hands to the next.
pub struct Syncer {
    settings: Settings,
    /// Keeps each Service's translation and map entries: a change lays out only its own Service
    /// again and the reconciler compares only the keys it touched.
    planner: Planner,
    reconciler: Reconciler,
    block_ids: IdSpace<BlockKey>,
    node: NodeContext,
    last_warnings: BTreeSet<String>,
    /// What the problems map holds; None until this agent has written it (an older agent's
    /// list may be there).
    problems_written: Option<BTreeSet<String>>,
    status: AgentStatus,
}

impl Syncer {
    /// Starts from what the maps hold, so a restarted agent rewrites nothing that did not change.
    pub fn new(settings: Settings, reconciler: Reconciler, node: NodeContext, pid: u32) -> Syncer {
        let empty = sluice_core::LbState::default();
        let current = reconciler.found().unwrap_or(&empty);
        Syncer {
            settings,
            planner: Planner::new(ids_from_state(current)),
            block_ids: sluice_core::blocklist::ids_from_state(current),
            reconciler,
            node,
            last_warnings: BTreeSet::new(),
            problems_written: None,
            status: AgentStatus { pid, ..Default::default() },
        }
    }

    pub fn desired(&self) -> &sluice_core::LbState {
        self.planner.desired()
    }

    /// One sync. The index is locked while planning only, never while maps are written.
    pub fn step(&mut self, index: &Mutex<Index>, maps: &mut dyn LbMaps, node_maps: &mut dyn NodeMaps) -> Report {
        let started = Instant::now();
        let (mut plan, blocks, mut report) = {
            let mut index = index.lock().expect("index lock");
            let events = (index.service_events, index.slice_events);
            let node_eligible = index.node.as_ref().map(|n| n.eligible);
            if let Some(facts) = &index.node {
                // A new zone changes the node context: the planner lays everything out again.
                self.node.zone = facts.zone.clone();
            }
            if !index.complete() {
                return Report::waiting(events, node_eligible);
            }
            let config = apply_proxy_config(index.proxy_config.as_ref(), &self.settings, node_maps);
            self.node.external_ip_cidrs = config.external_ip_cidrs.clone();
            // A change of any of these changes the node context: the planner lays everything out again.
            self.node.maglev = config.maglev;
            if self.node.node_ips != config.node_ips {
                tracing::info!(node_ips = ?config.node_ips, "NodePorts served on these addresses");
                self.node.node_ips = config.node_ips.clone();
            }
            self.node.nodeport_bind_protection = config.nodeport_bind_protection;
            let changed = index.take_changed();
            let plan = self.planner.plan(changed, &*index, &self.node, planning_capacity());
            let lists: Vec<_> = index.blocklists.values().cloned().collect();
            let blocks = sluice_core::blocklist::lay_out(&lists, &self.block_ids);
            let report = Report {
                config: Some(config),
                block_generations: lists.iter().map(|b| (b.metadata.name.clone().unwrap_or_default(), b.metadata.generation)).collect(),
                pending_since: index.take_pending(),
                generation: index.generation,
                frontends: plan.frontends,
                backends_changed: plan.touched.as_ref().is_none_or(|t| !t.backends.is_empty()),
                planned_in_full: plan.touched.is_none(),
                ..Report::waiting(events, node_eligible)
            };
            (plan, blocks, report)
        };
        self.planner.set_blocklist(blocks.entries.clone());
        let warnings: Vec<Warning> = plan.warnings.iter().chain(&blocks.warnings).cloned().collect();
        report.planned_in = started.elapsed();
        report.health_checks = plan.health_checks.clone();
        self.record_warnings(&warnings, &mut report, node_maps);

        // What the plan leaves to clean once it is written: computed now (it reads the plan),
        // done later by the housekeeping thread (it walks LRU maps and namespaces).
        let touched = plan.touched.as_ref();
        let synced = self.reconciler.before(maps, touched, plan.replaced.take()).map_err(SyncError::reading).and_then(|before| {
            let cleanup = cleanup_after(&before, self.planner.desired(), touched);
            self.reconciler.write(maps, self.planner.desired(), before, touched).map(|stats| (stats, cleanup))
        });
        match synced {
            Ok((stats, cleanup)) => {
                node_maps.clean_up(cleanup);
                self.block_ids = blocks.ids;
                report.block_owners = Some(blocks.owners);
                self.status.last_sync_unix_ns = unix_ns();
                self.status.last_sync_duration_ns = started.elapsed().as_nanos() as u64;
                self.status.generation = report.generation;
                self.status.failed_syncs = 0;
                self.status.last_error = [0; 224];
                record_status(node_maps, &self.status);
                report.outcome = Outcome::Synced(stats);
            }
            Err(e) => {
                // The maps hold what landed: the planner starts over from their ids.
                match self.reconciler.recover(maps) {
                    Ok(held) => {
                        self.planner.reset(ids_from_state(held));
                        self.block_ids = sluice_core::blocklist::ids_from_state(held);
                    }
                    Err(read) => {
                        tracing::warn!("reading the maps after a failed sync: {read}; the next sync reads them again");
                        self.planner.reset(self.planner.ids());
                    }
                }
                let error = format!("sync failed: {e}");
                self.status.failed_syncs += 1;
                sluice_abi::put_str(&mut self.status.last_error, &error);
                record_status(node_maps, &self.status);
                // What this step took is still to be programmed.
                index.lock().expect("index lock").pending_since.get_or_insert(report.pending_since.unwrap_or(started));
                report.outcome = Outcome::Failed(error);
            }
        }
        report.took = started.elapsed();
        report
    }

    /// Keeps the warnings that are new for the report, and the problems map in step with them.
    fn record_warnings(&mut self, warnings: &[Warning], report: &mut Report, node_maps: &mut dyn NodeMaps) {
        let texts: BTreeSet<String> = warnings.iter().map(|w| w.to_string()).collect();
        let mut seen = BTreeSet::new();
        report.new_warnings = warnings.iter().filter(|w| !self.last_warnings.contains(&w.to_string()) && seen.insert(w.to_string())).cloned().collect();
        if self.problems_written.as_ref() != Some(&texts) {
            let mut rows: Vec<(String, String)> = warnings.iter().map(|w| (w.subject.to_string(), w.message.clone())).collect();
            rows.sort();
            rows.dedup();
            match node_maps.write_problems(&rows) {
                Ok(()) => self.problems_written = Some(texts.clone()),
                Err(e) => tracing::warn!("cannot record the unprogrammable objects for the CLI: {e}"),
            }
        }
        self.last_warnings = texts;
    }
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Keeps `sluice status` told; a failure here must not hold back the datapath.
fn record_status(node_maps: &mut dyn NodeMaps, status: &AgentStatus) {
    if let Err(e) = node_maps.write_status(status) {
        tracing::warn!("cannot record the sync status for the CLI: {e}");
    }
}

/// Applies the ProxyConfig `default` where the datapath allows it without a restart (XDP
/// acceleration, socket-LB scope, externalIPCIDRs, the algorithm) and says what it could not.
fn apply_proxy_config(config: Option<&ProxyConfig>, settings: &Settings, node_maps: &mut dyn NodeMaps) -> AppliedConfig {
    let has_devices = !settings.devices.is_empty();
    let mut problems = Vec::new();
    // Without a ProxyConfig, the agent's own flag decides.
    let acceleration = match config.map(|c| c.spec.xdp_acceleration) {
        None => settings.flag_acceleration,
        Some(XdpAcceleration::Disabled) => loader::Acceleration::Disabled,
        Some(XdpAcceleration::Native) => loader::Acceleration::Native,
        Some(XdpAcceleration::BestEffort) => loader::Acceleration::BestEffort,
    };
    let host_ns_only = config.is_some_and(|c| c.spec.host_namespace_only);
    let mut want = if has_devices && acceleration != loader::Acceleration::Disabled { sluice_abi::CFG_F_XDP_ACCEL } else { 0 };
    if host_ns_only {
        want |= sluice_abi::CFG_F_HOST_NS_ONLY;
    }
    let mask = sluice_abi::CFG_F_XDP_ACCEL | sluice_abi::CFG_F_HOST_NS_ONLY;
    match node_maps.config() {
        Ok(mut current) if current.flags & mask != want => {
            current.flags = (current.flags & !mask) | want;
            match node_maps.set_config(current) {
                Ok(()) => tracing::info!(?acceleration, host_ns_only, "datapath settings changed"),
                Err(e) => problems.push(format!("cannot change the datapath settings: {e}")),
            }
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("cannot read the datapath config: {e}")),
    }
    if acceleration == loader::Acceleration::Native {
        for d in settings.devices.iter().filter(|d| d.xdp_mode != "native") {
            problems.push(format!("xdpAcceleration native: {} runs XDP in {} mode", d.name, d.xdp_mode));
        }
    }
    let Some(config) = config else {
        return AppliedConfig {
            acceleration,
            external_ip_cidrs: None,
            maglev: false,
            node_ips: settings.node_ips.clone(),
            health_check_addresses: None,
            nodeport_bind_protection: true,
            status: None,
        };
    };
    let spec = &config.spec;
    if !has_devices && acceleration != loader::Acceleration::Disabled {
        problems.push("xdpAcceleration: this node has no north-south devices".into());
    }
    let external_ip_cidrs = spec.external_ip_cidrs.as_ref().map(|list| {
        list.iter()
            .filter_map(|c| {
                let parsed = Cidr::parse(c);
                if parsed.is_none() {
                    problems.push(format!("externalIPCIDRs entry {c:?} is not a CIDR"));
                }
                parsed
            })
            .collect::<Vec<_>>()
    });
    let node_ips = match &spec.node_port_addresses {
        None => settings.node_ips.clone(),
        Some(list) => {
            let mut wanted: Vec<NodePortAddresses> = Vec::new();
            for entry in list {
                match NodePortAddresses::parse(entry) {
                    Some(w) => wanted.push(w),
                    None => problems.push(format!("nodePortAddresses entry {entry:?} is neither a CIDR nor primary")),
                }
            }
            let picked = node_port_addresses(&settings.node_ips, &wanted);
            if picked.is_empty() {
                problems.push(format!("nodePortAddresses {list:?}: none of this node's addresses {:?} matches; no NodePort is served here", settings.node_ips));
            }
            picked
        }
    };
    // Map sizes are taken as the agent starts (its maps are then resized, entries kept, before
    // its programs are swapped in): a change asks for a restart.
    let in_effect = map_sizes_in_effect();
    if capacities_of(&spec.map_sizes) != capacities_of(&in_effect) {
        problems.push(format!(
            "mapSizes ({}) differ from the sizes in effect ({}): restart the agent to apply them; its maps keep their entries",
            describe_sizes(&spec.map_sizes),
            describe_sizes(&in_effect)
        ));
    }
    AppliedConfig {
        acceleration,
        external_ip_cidrs,
        maglev: spec.load_balancing_algorithm == LoadBalancingAlgorithm::Maglev,
        health_check_addresses: spec.node_port_addresses.as_ref().map(|_| node_ips.clone()),
        node_ips,
        nodeport_bind_protection: spec.nodeport_bind_protection,
        status: Some(crate::node_status::ProxyConfigReport { generation: config.metadata.generation, problems }),
    }
}

/// One entry of nodePortAddresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodePortAddresses {
    Cidr(Cidr),
    /// The node's first address of each family.
    Primary,
}

impl NodePortAddresses {
    fn parse(text: &str) -> Option<NodePortAddresses> {
        match text.trim() {
            "primary" => Some(NodePortAddresses::Primary),
            cidr => Cidr::parse(cidr).map(NodePortAddresses::Cidr),
        }
    }
}

/// The node addresses that nodePortAddresses selects, in the node's order.
fn node_port_addresses(node_ips: &[IpAddr], wanted: &[NodePortAddresses]) -> Vec<IpAddr> {
    let primary = |ip: &IpAddr| node_ips.iter().find(|other| other.is_ipv4() == ip.is_ipv4()) == Some(ip);
    node_ips
        .iter()
        .copied()
        .filter(|ip| {
            wanted.iter().any(|w| match w {
                NodePortAddresses::Cidr(c) => c.contains(*ip),
                NodePortAddresses::Primary => primary(ip),
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;

/// What a plan from `current` to `desired` leaves to clean (`touched`: the keys it changed, and
/// `current` what the maps held under them; None: a full plan, everything).
pub fn cleanup_after(current: &LbState, desired: &LbState, touched: Option<&Touched>) -> Cleanup {
    // UDP flows to backends that are gone must not stick to them (conntrack forgets them).
    let candidates: Vec<(&u32, &sluice_abi::Backend)> = match touched {
        Some(t) => t.backends.iter().filter_map(|id| current.backends.get_key_value(id)).collect(),
        None => current.backends.iter().collect(),
    };
    Cleanup {
        gone_udp: candidates
            .into_iter()
            .filter(|(id, b)| b.proto == sluice_abi::IPPROTO_UDP && !desired.backends.contains_key(id))
            .map(|(_, b)| (b.addr, b.port()))
            .collect(),
        stale_sockets: stale_udp_sockets(current, desired, touched),
        affinity: sluice_datapath::conntrack::affinity_members(desired, touched.map(|t| &t.revnat)),
    }
}

/// The UDP frontends a plan changes (every one for a full plan): what their connected sockets
/// can no longer rely on. A backend that left a frontend's Service takes the sockets socket-LB
/// connected to it through that frontend; a frontend that gets its first backend takes the
/// sockets connected to its own address (never translated: connected before it could be).
pub fn stale_udp_sockets(current: &LbState, desired: &LbState, touched: Option<&Touched>) -> StaleUdp {
    let udp_frontend = |k: &SvcKey| (k.proto == sluice_abi::IPPROTO_UDP).then_some((k.addr, k.port_be));
    let frontends: BTreeSet<(Addr, u16)> = match touched {
        Some(t) => t.services.iter().filter_map(udp_frontend).collect(),
        None => current.services.keys().chain(desired.services.keys()).filter_map(udp_frontend).collect(),
    };
    let mut stale = StaleUdp::default();
    for (addr, port_be) in frontends {
        let (before, after) = (udp_backends_of(current, desired, addr, port_be), udp_backends_of(desired, desired, addr, port_be));
        let frontend = (addr, u16::from_be(port_be));
        if before.is_empty() && !after.is_empty() {
            stale.woken_frontends.insert(frontend);
        }
        stale.gone_backends.extend(before.difference(&after).map(|b| (frontend, *b)));
    }
    stale
}

/// The backends (address, port) of a UDP frontend, in either scope. A state read back for the
/// keys a change touched lacks the backends it did not touch: those are `untouched`'s.
fn udp_backends_of(state: &LbState, untouched: &LbState, addr: Addr, port_be: u16) -> BTreeSet<(Addr, u16)> {
    let first = SvcKey { addr, port_be, proto: sluice_abi::IPPROTO_UDP, scope: 0, slot: 0, pad: 0 };
    let last = SvcKey { scope: u8::MAX, slot: u16::MAX, pad: u16::MAX, ..first };
    state
        .services
        .range(first..=last)
        .filter(|(k, _)| k.slot > 0)
        .filter_map(|(_, v)| state.backends.get(&v.backend_id).or_else(|| untouched.backends.get(&v.backend_id)))
        .map(|b| (b.addr, b.port()))
        .collect()
}

/// The capacities a ProxyConfig's `mapSizes` ask for, by map (backends no more than backend ids
/// can number).
pub fn capacities_of(sizes: &sluice_crds::MapSizes) -> BTreeMap<&'static str, u32> {
    let backends = (sizes.backends.max(0) as u32).min(sluice_core::ids::MAX_BACKEND_ID);
    // Every frontend id has a header in the services map, so no more ids than its slots.
    let frontends = (sizes.services.max(0) as u32).min(sluice_abi::REV_NAT_ID_MAX);
    [
        (sluice_abi::MAP_SERVICES, sizes.services.max(0) as u32),
        (sluice_abi::MAP_REVNAT, frontends),
        (sluice_abi::MAP_NAMES, frontends),
        (sluice_abi::MAP_BACKENDS, backends),
        (sluice_abi::MAP_CT, sizes.conntrack.max(0) as u32),
        (sluice_abi::MAP_CT_HANDSHAKE, sizes.conntrack_handshake.max(0) as u32),
        (sluice_abi::MAP_CT_OTHER, sizes.conntrack_non_tcp.max(0) as u32),
    ]
    .into_iter()
    .collect()
}

fn describe_sizes(s: &sluice_crds::MapSizes) -> String {
    format!(
        "services {}, backends {}, conntrack {}, conntrackHandshake {}, conntrackNonTcp {}",
        s.services, s.backends, s.conntrack, s.conntrack_handshake, s.conntrack_non_tcp
    )
}

/// The sizes this process loaded its maps with.
fn map_sizes_in_effect() -> sluice_crds::MapSizes {
    let size = |map, built_in: u32| loader::capacity(map).unwrap_or(built_in) as i32;
    sluice_crds::MapSizes {
        services: size(sluice_abi::MAP_SERVICES, sluice_abi::SERVICES_MAX),
        backends: size(sluice_abi::MAP_BACKENDS, sluice_abi::BACKENDS_MAX),
        conntrack: size(sluice_abi::MAP_CT, sluice_abi::CT_MAX),
        conntrack_handshake: size(sluice_abi::MAP_CT_HANDSHAKE, sluice_abi::CT_HANDSHAKE_MAX),
        conntrack_non_tcp: size(sluice_abi::MAP_CT_OTHER, sluice_abi::CT_OTHER_MAX),
    }
}

/// What planning may fill: the maps as loaded.
fn planning_capacity() -> Capacity {
    let sizes = map_sizes_in_effect();
    let revnat = loader::capacity(sluice_abi::MAP_REVNAT).unwrap_or(sluice_abi::REVNAT_MAX) as usize;
    Capacity { services: sizes.services as usize, backends: sizes.backends as usize, revnat, ..Capacity::default() }
}
