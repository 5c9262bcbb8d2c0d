//! Prometheus metrics on --metrics-bind-address (/metrics). Datapath counters are read from the
//! pinned maps at scrape time, so they cost nothing between scrapes; map sizes come from
//! [`crate::usage::MapUsage`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use sluice_datapath::counters;

use crate::usage::MapUsage;
use sluice_k8s::watch::ClientErrors;

pub struct Metrics {
    registry: Registry,
    pub sync_duration: Histogram,
    pub programming_latency: Histogram,
    pub sync_errors: IntCounter,
    service_changes: IntCounter,
    endpoint_changes: IntCounter,
    client_errors: IntCounter,
    datapath: IntCounterVec,
    drops: IntCounterVec,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    conntrack_evicted: IntCounterVec,
    xdp_acceleration: IntGaugeVec,
    usage: Arc<MapUsage>,
    kube_errors: Arc<ClientErrors>,
}

/// Latency buckets from 1 ms to ~16 s, as kube-proxy's (exponential, factor 2).
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 15).expect("static buckets")
}

impl Metrics {
    pub fn new(usage: Arc<MapUsage>, kube_errors: Arc<ClientErrors>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let sync_duration =
            Histogram::with_opts(HistogramOpts::new("sluice_sync_duration_seconds", "Time to plan and write one datapath sync.").buckets(latency_buckets()))?;
        let programming_latency = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_network_programming_duration_seconds",
                "Time from a Service or EndpointSlice change reaching the agent to the datapath maps holding it.",
            )
            .buckets(latency_buckets()),
        )?;
        let sync_errors = IntCounter::new("sluice_sync_errors_total", "Datapath syncs that failed and were retried.")?;
        let service_changes = IntCounter::new("sluice_service_changes_total", "Service add, update and delete events received.")?;
        let endpoint_changes = IntCounter::new("sluice_endpoint_changes_total", "EndpointSlice add, update and delete events received.")?;
        let client_errors = IntCounter::new("sluice_kubernetes_client_errors_total", "Errors of the Kubernetes watches (each is retried).")?;
        let datapath = IntCounterVec::new(
            Opts::new("sluice_datapath_packets_total", "Datapath events by counter: translations, reverse translations, forwards."),
            &["counter"],
        )?;
        let drops =
            IntCounterVec::new(Opts::new("sluice_datapath_drops_total", "Packets dropped or connections refused by the datapath, by reason."), &["reason"])?;
        let map_entries = IntGaugeVec::new(Opts::new("sluice_map_entries", "Entries in a datapath map."), &["map"])?;
        let map_capacity = IntGaugeVec::new(Opts::new("sluice_map_capacity", "Capacity (max entries) of a datapath map."), &["map"])?;
        let conntrack_evicted = IntCounterVec::new(
            Opts::new(
                "sluice_conntrack_evicted_total",
                "Conntrack entries the LRU dropped to make room, by table (what the datapath added, less what Sluice removed and what is there).",
            ),
            &["map"],
        )?;
        let xdp_acceleration = IntGaugeVec::new(
            Opts::new(
                "sluice_xdp_acceleration",
                "1 for the XDP acceleration state each device is in (off, unproven, accelerated, fallback, failed), 0 for the others.",
            ),
            &["device", "state"],
        )?;
        let build_info = IntGaugeVec::new(Opts::new("sluice_build_info", "Always 1; labels say which build runs."), &["version"])?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for c in [
            Box::new(sync_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(programming_latency.clone()),
            Box::new(sync_errors.clone()),
            Box::new(service_changes.clone()),
            Box::new(endpoint_changes.clone()),
            Box::new(client_errors.clone()),
            Box::new(datapath.clone()),
            Box::new(drops.clone()),
            Box::new(map_entries.clone()),
            Box::new(map_capacity.clone()),
            Box::new(conntrack_evicted.clone()),
            Box::new(xdp_acceleration.clone()),
            Box::new(build_info),
        ] {
            registry.register(c)?;
        }
        Ok(Metrics {
            registry,
            sync_duration,
            programming_latency,
            sync_errors,
            service_changes,
            endpoint_changes,
            client_errors,
            datapath,
            drops,
            map_entries,
            map_capacity,
            conntrack_evicted,
            xdp_acceleration,
            usage,
            kube_errors,
        })
    }

    /// Brings a counter up to a total kept elsewhere (counters only move forward).
    fn catch_up(counter: &IntCounter, total: u64) {
        let have = counter.get();
        if total > have {
            counter.inc_by(total - have);
        }
    }

    pub fn set_changes(&self, services: u64, endpoints: u64) {
        Self::catch_up(&self.service_changes, services);
        Self::catch_up(&self.endpoint_changes, endpoints);
    }

    fn refresh_datapath(&self) {
        Self::catch_up(&self.client_errors, self.kube_errors.0.load(Ordering::Relaxed));
        if let Ok(values) = counters::read(self.usage.root()) {
            for (c, v) in values {
                let counter = if c.is_drop() { self.drops.with_label_values(&[c.name()]) } else { self.datapath.with_label_values(&[c.name()]) };
                Self::catch_up(&counter, v);
            }
        }
        if let Ok(devices) = sluice_datapath::xdp_proof::read_devices(self.usage.root()) {
            for (_, d) in devices {
                let (device, state) = (sluice_abi::get_str(&d.name), d.state);
                for s in sluice_abi::XdpState::ALL {
                    self.xdp_acceleration.with_label_values(&[device.as_str(), s.name()]).set(i64::from(s as u32 == state));
                }
            }
        }
        let usage = self.usage.snapshot();
        for (name, entries, capacity) in &usage {
            self.map_entries.with_label_values(&[name]).set(*entries as i64);
            self.map_capacity.with_label_values(&[name]).set(i64::from(*capacity));
        }
        for (table, evicted) in sluice_datapath::conntrack::evictions(self.usage.root(), &usage) {
            Self::catch_up(&self.conntrack_evicted.with_label_values(&[table]), evicted);
        }
    }

    pub fn render(&self) -> String {
        self.refresh_datapath();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
