//! Loading and attaching. Maps are pinned by name under the bpf root and reused across agent
//! restarts; programs are attached through pinned links, and a restarted agent swaps its new
//! programs onto those links (BPF_LINK_UPDATE) instead of detaching anything.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink};
use aya::{Ebpf, EbpfLoader};
use sluice_abi as abi;

use crate::sys;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The socket-LB programs in bpf/sock_lb.c, by function name.
pub const SOCK_LB_PROGRAMS: [&str; 8] = [
    "sluice_connect4",
    "sluice_sendmsg4",
    "sluice_recvmsg4",
    "sluice_getpeername4",
    "sluice_connect6",
    "sluice_sendmsg6",
    "sluice_recvmsg6",
    "sluice_getpeername6",
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path} is not on a BPF filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs { path: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the BPF object: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("program {name}: pinning its link at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

/// How a program got onto its hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// First start on this cgroup: a new link, now pinned.
    Attached,
    /// The pinned link existed: the program behind it was swapped in place.
    Replaced,
}

#[derive(Debug, Clone)]
pub struct AttachReport {
    pub program: &'static str,
    pub how: Attachment,
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Loads the socket-LB object with every map pinned under `root` (reusing pins that exist).
pub fn load_sock_lb(root: &Path) -> Result<Ebpf, LoadError> {
    fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
    if !is_bpffs(root) {
        return Err(LoadError::NotBpffs { path: root.to_path_buf() });
    }
    let pins: Vec<(&str, PathBuf)> = abi::ALL_MAPS.iter().map(|m| (*m, root.join(m))).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    Ok(loader.load(crate::SOCK_LB_OBJECT)?)
}

/// Where the links for one cgroup are pinned. Keyed by the cgroup's inode so that pointing
/// the agent at another cgroup attaches there instead of updating links elsewhere.
pub fn links_dir(root: &Path, cgroup: &Path) -> Result<PathBuf, LoadError> {
    let ino = fs::metadata(cgroup).map_err(io(format!("cgroup {}", cgroup.display())))?.ino();
    Ok(root.join("links").join(format!("cgroup-{ino}")))
}

/// Attaches (or swaps in) every socket-LB program on `cgroup`.
pub fn attach_sock_lb(ebpf: &mut Ebpf, root: &Path, cgroup: &Path) -> Result<Vec<AttachReport>, LoadError> {
    let dir = links_dir(root, cgroup)?;
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let cgroup_file = fs::File::open(cgroup).map_err(io(format!("opening cgroup {}", cgroup.display())))?;
    let mut reports = Vec::new();
    for name in SOCK_LB_PROGRAMS {
        let err = |source| LoadError::Program { name, source };
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(LoadError::Program { name, source: aya::programs::ProgramError::NotLoaded })?
            .try_into()
            .map_err(err)?;
        prog.load().map_err(err)?;
        let pin = dir.join(name);
        let how = if pin.exists() {
            let link = sys::obj_get(&pin).map_err(io(format!("opening pinned link {}", pin.display())))?;
            let prog_fd = prog.fd().map_err(err)?;
            sys::link_update(link.as_fd(), prog_fd.as_fd()).map_err(io(format!("BPF_LINK_UPDATE on {}", pin.display())))?;
            Attachment::Replaced
        } else {
            // With bpf_link the kernel always allows other programs beside ours (and rejects
            // attach flags), so Single here still coexists with other tools' hooks.
            let id = prog.attach(&cgroup_file, CgroupAttachMode::Single).map_err(err)?;
            let link: FdLink = prog
                .take_link(id)
                .map_err(err)?
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| LoadError::Io { what: format!("{name}: link"), source: std::io::Error::other(e) })?;
            link.pin(&pin).map_err(|source| LoadError::Pin { name, path: pin.clone(), source })?;
            Attachment::Attached
        };
        reports.push(AttachReport { program: name, how });
    }
    Ok(reports)
}

/// Removes the links this agent pinned for cgroups other than `keep` (the agent was moved to
/// another cgroup), which detaches those programs.
pub fn prune_other_cgroup_links(root: &Path, keep: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let keep = links_dir(root, keep)?;
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(root.join("links")) else { return Ok(removed) };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep {
            fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Detaches everything and unpins every map: what `sluice uninstall` (and test cleanup) does.
pub fn remove_all(root: &Path) -> Result<(), LoadError> {
    if root.exists() {
        fs::remove_dir_all(root).map_err(io(format!("removing {}", root.display())))?;
    }
    Ok(())
}
