//! The pinned maps the agent writes beside the load-balancing maps: the datapath settings, its
//! own report for the CLI, and conntrack/affinity forgetting. One trait, so the sync step is
//! tested without a kernel (`FakeNodeMaps`), as `LbMaps` does for the load-balancing maps.

use std::collections::BTreeSet;
use std::path::PathBuf;

use sluice_abi::{Addr, AgentStatus, Config, SockRevNatKey, SockRevNatValue};
use sluice_core::LbState;

use crate::MapError;
use crate::sockets::{StaleUdp, SweepReport};

pub trait NodeMaps {
    /// The datapath settings (`sluice_config`).
    fn config(&self) -> Result<Config, MapError>;
    fn set_config(&mut self, config: Config) -> Result<(), MapError>;
    /// What `sluice status` reads: the last sync and the last error.
    fn write_status(&mut self, status: &AgentStatus) -> Result<(), MapError>;
    /// What `sluice status` lists as not programmed: (object, why).
    fn write_problems(&mut self, problems: &[(String, String)]) -> Result<(), MapError>;
    /// See [`crate::conntrack::forget_udp_backends`].
    fn forget_udp_backends(&mut self, gone: &[(Addr, u16)]) -> Result<usize, MapError>;
    /// See [`crate::conntrack::forget_stale_affinity`].
    fn forget_stale_affinity(&mut self, desired: &LbState, frontends: Option<&BTreeSet<u32>>) -> Result<usize, MapError>;
    /// See [`crate::sockets::close_stale_udp`].
    fn close_stale_udp(&mut self, stale: &StaleUdp) -> Result<SweepReport, MapError>;
}

/// The kernel's: the maps pinned under the agent's bpffs root.
pub struct PinnedNodeMaps {
    pub root: PathBuf,
    /// Where socket-LB is attached: the processes whose UDP sockets it may have to close.
    pub cgroup: PathBuf,
}

impl NodeMaps for PinnedNodeMaps {
    fn config(&self) -> Result<Config, MapError> {
        crate::loader::read_config(&self.root)
    }
    fn set_config(&mut self, config: Config) -> Result<(), MapError> {
        crate::loader::write_config_pinned(&self.root, config)
    }
    fn write_status(&mut self, status: &AgentStatus) -> Result<(), MapError> {
        crate::report::write_status(&self.root, status)
    }
    fn write_problems(&mut self, problems: &[(String, String)]) -> Result<(), MapError> {
        crate::report::write_problems(&self.root, problems)
    }
    fn forget_udp_backends(&mut self, gone: &[(Addr, u16)]) -> Result<usize, MapError> {
        crate::conntrack::forget_udp_backends(&self.root, gone)
    }
    fn forget_stale_affinity(&mut self, desired: &LbState, frontends: Option<&BTreeSet<u32>>) -> Result<usize, MapError> {
        crate::conntrack::forget_stale_affinity(&self.root, desired, frontends)
    }
    fn close_stale_udp(&mut self, stale: &StaleUdp) -> Result<SweepReport, MapError> {
        if stale.is_empty() {
            return Ok(SweepReport::default());
        }
        let revnat: aya::maps::HashMap<aya::maps::MapData, SockRevNatKey, SockRevNatValue> = crate::maps::open_hash(&self.root, sluice_abi::MAP_SOCK_REVNAT)?;
        // With hostNamespaceOnly, socket-LB leaves pods' sockets alone, and so does this.
        let pods = self.config()?.flags & sluice_abi::CFG_F_HOST_NS_ONLY == 0;
        let revnat = std::sync::Mutex::new(revnat);
        let frontend_of = |k: &SockRevNatKey| revnat.lock().ok()?.get(k, 0).ok().map(|v| (v.addr, u16::from_be(v.port_be)));
        Ok(crate::sockets::close_stale_udp(stale, &self.cgroup, pods, &frontend_of))
    }
}

/// In memory, recording what was asked of it.
#[derive(Debug, Default)]
pub struct FakeNodeMaps {
    pub config: Config,
    pub status: Option<AgentStatus>,
    /// Every status written, in order.
    pub statuses_written: usize,
    pub problems: Vec<(String, String)>,
    pub problems_written: usize,
    /// Every UDP backend whose flows were forgotten.
    pub forgotten_udp: Vec<(Addr, u16)>,
    /// The frontends each affinity clean-up looked at (None: all).
    pub affinity_cleanups: Vec<Option<BTreeSet<u32>>>,
    /// Every non-empty UDP socket sweep asked for.
    pub udp_sweeps: Vec<StaleUdp>,
}

impl NodeMaps for FakeNodeMaps {
    fn config(&self) -> Result<Config, MapError> {
        Ok(self.config)
    }
    fn set_config(&mut self, config: Config) -> Result<(), MapError> {
        self.config = config;
        Ok(())
    }
    fn write_status(&mut self, status: &AgentStatus) -> Result<(), MapError> {
        self.status = Some(*status);
        self.statuses_written += 1;
        Ok(())
    }
    fn write_problems(&mut self, problems: &[(String, String)]) -> Result<(), MapError> {
        self.problems = problems.to_vec();
        self.problems_written += 1;
        Ok(())
    }
    fn forget_udp_backends(&mut self, gone: &[(Addr, u16)]) -> Result<usize, MapError> {
        self.forgotten_udp.extend_from_slice(gone);
        Ok(gone.len())
    }
    fn forget_stale_affinity(&mut self, _: &LbState, frontends: Option<&BTreeSet<u32>>) -> Result<usize, MapError> {
        self.affinity_cleanups.push(frontends.cloned());
        Ok(0)
    }
    fn close_stale_udp(&mut self, stale: &StaleUdp) -> Result<SweepReport, MapError> {
        if !stale.is_empty() {
            self.udp_sweeps.push(stale.clone());
        }
        Ok(SweepReport::default())
    }
}
