//! The pinned maps the agent writes beside the load-balancing maps: the datapath settings, its
//! own report for the CLI, and the clean-up a sync leaves behind (see `housekeeping`). One trait, so the sync step is
//! tested without a kernel (`FakeNodeMaps`), as `LbMaps` does for the load-balancing maps.

use std::path::{Path, PathBuf};

use sluice_abi::{AgentStatus, Config, SockRevNatKey, SockRevNatValue};

use crate::MapError;
use crate::housekeeping::{Cleanup, Housekeeper};
use crate::sockets::{StaleUdp, SweepReport};

pub trait NodeMaps {
    /// The datapath settings (`sluice_config`).
    fn config(&self) -> Result<Config, MapError>;
    fn set_config(&mut self, config: Config) -> Result<(), MapError>;
    /// What `sluice status` reads: the last sync and the last error.
    fn write_status(&mut self, status: &AgentStatus) -> Result<(), MapError>;
    /// What `sluice status` lists as not programmed: (object, why).
    fn write_problems(&mut self, problems: &[(String, String)]) -> Result<(), MapError>;
    /// Hands over what a sync left to clean; it is done later, off the sync loop.
    fn clean_up(&mut self, job: Cleanup);
}

/// The kernel's: the maps pinned under the agent's bpffs root.
pub struct PinnedNodeMaps {
    root: PathBuf,
    housekeeper: Housekeeper,
}

impl PinnedNodeMaps {
    /// `cgroup` is where socket-LB is attached: the processes whose UDP sockets it may close.
    pub fn new(root: PathBuf, cgroup: PathBuf) -> std::io::Result<Self> {
        let (r, c) = (root.clone(), cgroup);
        let housekeeper = Housekeeper::spawn(move |job| clean(&r, &c, job))?;
        Ok(PinnedNodeMaps { root, housekeeper })
    }
}

/// One round of housekeeping against the pinned maps, on the housekeeping thread.
fn clean(root: &Path, cgroup: &Path, job: &Cleanup) {
    let gone: Vec<_> = job.gone_udp.iter().copied().collect();
    match crate::conntrack::forget_udp_backends(root, &gone) {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "forgot the UDP flows of removed backends"),
        Err(e) => tracing::warn!("cannot clean conntrack of removed UDP backends: {e}"),
    }
    match close_stale_sockets(root, cgroup, &job.stale_sockets) {
        Ok(r) if r.closed > 0 || r.failed > 0 => {
            tracing::info!(closed = r.closed, namespaces = r.namespaces, failed = r.failed, "closed the connected UDP sockets socket-LB can no longer serve")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot close the UDP sockets of removed backends: {e}"),
    }
    match crate::conntrack::forget_stale_affinity(root, &job.affinity) {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "forgot the session affinity of backends that left their Service"),
        Err(e) => tracing::warn!("cannot clean session affinity of removed backends: {e}"),
    }
}

fn close_stale_sockets(root: &Path, cgroup: &Path, stale: &StaleUdp) -> Result<SweepReport, MapError> {
    if stale.is_empty() {
        return Ok(SweepReport::default());
    }
    let revnat: aya::maps::HashMap<aya::maps::MapData, SockRevNatKey, SockRevNatValue> = crate::maps::open_hash(root, sluice_abi::MAP_SOCK_REVNAT)?;
    // With hostNamespaceOnly, socket-LB leaves pods' sockets alone, and so does this.
    let pods = crate::loader::read_config(root)?.flags & sluice_abi::CFG_F_HOST_NS_ONLY == 0;
    let revnat = std::sync::Mutex::new(revnat);
    let frontend_of = |k: &SockRevNatKey| revnat.lock().ok()?.get(k, 0).ok().map(|v| (v.addr, u16::from_be(v.port_be)));
    Ok(crate::sockets::close_stale_udp(stale, cgroup, pods, &frontend_of))
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
    fn clean_up(&mut self, job: Cleanup) {
        self.housekeeper.submit(job);
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
    /// Every clean-up handed over, one per sync.
    pub cleanups: Vec<Cleanup>,
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
    fn clean_up(&mut self, job: Cleanup) {
        self.cleanups.push(job);
    }
}
