//! The contents of the load-balancing maps as plain data: what the planner wants, what the
//! reconciler believes is in the kernel, and what the CLI reads back are all an [`LbState`].

use std::collections::{BTreeMap, BTreeSet};

use sluice_abi::{
    Addr, Backend, BlockKey, BlockValue, FrontendAddrValue, FrontendName, MaglevKey, MaglevTable, NodePortKey, RevNatValue, SrcRangeKey, SvcKey, SvcValue,
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbState {
    pub services: BTreeMap<SvcKey, SvcValue>,
    pub backends: BTreeMap<u32, Backend>,
    pub revnat: BTreeMap<u32, RevNatValue>,
    pub names: BTreeMap<u32, FrontendName>,
    /// loadBalancerSourceRanges per rev-NAT id (LPM keys; the value is always 1).
    pub src_ranges: BTreeSet<SrcRangeKey>,
    /// LoadBalancer and ExternalIP addresses, for dropping unknown ports early.
    pub lb_addrs: BTreeMap<Addr, FrontendAddrValue>,
    /// NodePorts, for bind protection.
    pub nodeports: BTreeSet<NodePortKey>,
    /// SourceBlocklist entries, dropped in XDP.
    pub blocklist: BTreeMap<BlockKey, BlockValue>,
    /// Maglev tables of north-south frontends, when the ProxyConfig asks for Maglev.
    pub maglev: BTreeMap<MaglevKey, MaglevTable>,
}

impl LbState {
    /// Each map the agent plans with its entries and capacity, for status, metrics and the CLI.
    pub fn map_usage(&self) -> [(&'static str, usize, u32); 9] {
        use sluice_abi as abi;
        [
            (abi::MAP_SERVICES, self.services.len(), abi::SERVICES_MAX),
            (abi::MAP_BACKENDS, self.backends.len(), abi::BACKENDS_MAX),
            (abi::MAP_REVNAT, self.revnat.len(), abi::REVNAT_MAX),
            (abi::MAP_NAMES, self.names.len(), abi::REVNAT_MAX),
            (abi::MAP_SRC_RANGES, self.src_ranges.len(), abi::SRC_RANGES_MAX),
            (abi::MAP_LB_ADDRS, self.lb_addrs.len(), abi::LB_ADDRS_MAX),
            (abi::MAP_NODEPORTS, self.nodeports.len(), abi::NODEPORTS_MAX),
            (abi::MAP_BLOCKLIST, self.blocklist.len(), abi::BLOCKLIST_MAX),
            (abi::MAP_MAGLEV, self.maglev.len(), abi::MAGLEV_MAX),
        ]
    }

    pub fn entry_count(&self) -> usize {
        self.services.len()
            + self.backends.len()
            + self.revnat.len()
            + self.names.len()
            + self.src_ranges.len()
            + self.lb_addrs.len()
            + self.nodeports.len()
            + self.blocklist.len()
            + self.maglev.len()
    }
}
