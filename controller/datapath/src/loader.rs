//! Loading and attaching. Maps are pinned by name under the bpf root and reused across agent
//! restarts; programs are attached through pinned links, and a restarted agent swaps its new
//! programs onto those links (BPF_LINK_UPDATE) instead of detaching anything.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData};
use aya::programs::links::FdLink;
use aya::programs::tc::{SchedClassifier, TcAttachOptions, TcAttachType};
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, LinkOrder, ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use sluice_abi as abi;

use crate::sys;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The socket-LB programs in bpf/sock_lb.c, by function name.
pub const SOCK_ADDR_PROGRAMS: [&str; 8] = [
    "sluice_connect4",
    "sluice_sendmsg4",
    "sluice_recvmsg4",
    "sluice_getpeername4",
    "sluice_connect6",
    "sluice_sendmsg6",
    "sluice_recvmsg6",
    "sluice_getpeername6",
];
/// Bind protection (bpf/sock_lb.c).
pub const SOCK_PROGRAMS: [&str; 2] = ["sluice_post_bind4", "sluice_post_bind6"];
pub const TC_INGRESS: &str = "sluice_nodeport_ingress";
pub const TC_EGRESS: &str = "sluice_nodeport_egress";
pub const XDP_PROGRAM: &str = "sluice_xdp";
/// Run by the acceleration proof on a device's ingress, never attached (see `xdp_proof`).
pub const XDP_PROBE_PROGRAM: &str = "sluice_xdp_probe";

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
        source: ProgramError,
    },
    #[error("program {name}: pinning its link at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("writing the datapath configuration: {0}")]
    Config(#[source] aya::maps::MapError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

/// How a program got onto its hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// First start on this hook: a new link, now pinned.
    Attached,
    /// The pinned link existed: the program behind it was swapped in place.
    Replaced,
}

#[derive(Debug, Clone)]
pub struct AttachReport {
    pub program: &'static str,
    pub hook: String,
    pub how: Attachment,
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// The capacities the agent was started with (ProxyConfig `mapSizes`), by map name: what every
/// object is loaded with and what pins are brought to (`pins`). Set once, before the first
/// load; maps not named keep their objects' sizes.
static CAPACITIES: std::sync::OnceLock<std::collections::BTreeMap<&'static str, u32>> = std::sync::OnceLock::new();

/// Sets the capacities for this process; false when they were set already.
pub fn set_capacities(capacities: std::collections::BTreeMap<&'static str, u32>) -> bool {
    CAPACITIES.set(capacities).is_ok()
}

/// The capacity this process loads `map` with, when it differs from the object's.
pub fn capacity(map: &str) -> Option<u32> {
    CAPACITIES.get().and_then(|c| c.get(map).copied())
}

/// Loads an object with every map pinned under `root` (reusing pins that exist), so every object
/// and every agent generation shares one instance of each map.
pub fn load_object(root: &Path, object: &[u8]) -> Result<Ebpf, LoadError> {
    fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
    if !is_bpffs(root) {
        return Err(LoadError::NotBpffs { path: root.to_path_buf() });
    }
    let pins: Vec<(&str, PathBuf)> = abi::ALL_MAPS.iter().map(|m| (*m, root.join(m))).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    for (name, size) in CAPACITIES.get().into_iter().flatten() {
        loader.map_max_entries(name, *size);
    }
    Ok(loader.load(object)?)
}

pub fn load_sock_lb(root: &Path) -> Result<Ebpf, LoadError> {
    load_object(root, crate::SOCK_LB_OBJECT)
}

/// Swaps `prog` onto the link pinned at `pin`, or attaches it with `attach` and pins the link.
/// A pinned link whose hook has gone (its device was deleted) is replaced by a fresh one.
fn attach_pinned(name: &'static str, prog_fd: BorrowedFd<'_>, pin: &Path, attach: impl FnOnce() -> Result<FdLink, LoadError>) -> Result<Attachment, LoadError> {
    if pin.exists() {
        let link = sys::obj_get(pin).map_err(io(format!("opening pinned link {}", pin.display())))?;
        match sys::link_update(link.as_fd(), prog_fd) {
            Ok(()) => return Ok(Attachment::Replaced),
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {
                fs::remove_file(pin).map_err(io(format!("removing defunct link {}", pin.display())))?;
            }
            Err(e) => {
                return Err(LoadError::Io { what: format!("BPF_LINK_UPDATE on {}", pin.display()), source: e });
            }
        }
    }
    attach()?.pin(pin).map_err(|source| LoadError::Pin { name, path: pin.to_path_buf(), source })?;
    Ok(Attachment::Attached)
}

/// Loads a program, retrying when the kernel says EAGAIN: the verifier gives up with EAGAIN
/// whenever a signal arrives while it works (libbpf retries the same way). The tc program takes
/// over 100 ms to verify, and a process that spawns children meanwhile (the packet tests run
/// `ip` from other threads) can see a burst of signals longer than a few immediate retries, most
/// likely SIGCHLD; so the retries back off, for about 2 s in all. Programs are loaded once
/// and attached to every device, so a second load is not an error.
pub fn load_once(name: &'static str, mut load: impl FnMut() -> Result<(), ProgramError>) -> Result<(), LoadError> {
    let mut attempts = 0;
    loop {
        match load() {
            Ok(()) | Err(ProgramError::AlreadyLoaded) => return Ok(()),
            Err(ProgramError::LoadError { io_error, .. }) if io_error.raw_os_error() == Some(libc::EAGAIN) && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * attempts));
            }
            Err(source) => return Err(LoadError::Program { name, source }),
        }
    }
}

fn fd_link<L>(name: &'static str, link: L) -> Result<FdLink, LoadError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|e| LoadError::Io { what: format!("{name}: link"), source: std::io::Error::other(e) })
}

/// Where the links for one cgroup are pinned. Keyed by the cgroup's inode so that pointing
/// the agent at another cgroup attaches there instead of updating links elsewhere.
pub fn links_dir(root: &Path, cgroup: &Path) -> Result<PathBuf, LoadError> {
    let ino = fs::metadata(cgroup).map_err(io(format!("cgroup {}", cgroup.display())))?.ino();
    Ok(root.join("links").join(format!("cgroup-{ino}")))
}

/// Attaches (or swaps in) every socket program, bind protection included, on `cgroup`.
pub fn attach_sock_lb(ebpf: &mut Ebpf, root: &Path, cgroup: &Path) -> Result<Vec<AttachReport>, LoadError> {
    let dir = links_dir(root, cgroup)?;
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let cgroup_file = fs::File::open(cgroup).map_err(io(format!("opening cgroup {}", cgroup.display())))?;
    let hook = format!("cgroup {}", cgroup.display());
    let mut reports = Vec::new();
    // The two cgroup program types share every step, but not a Rust type: one body for both.
    macro_rules! attach_each {
        ($names:expr, $kind:ty) => {
            for name in $names {
                let err = |source| LoadError::Program { name, source };
                let prog: &mut $kind = ebpf.program_mut(name).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
                load_once(name, || prog.load())?;
                let fd = prog.fd().map_err(err)?.try_clone().map_err(io(format!("{name}: program fd")))?;
                // With bpf_link the kernel always lets other programs run beside ours (and
                // rejects attach flags), so Single still coexists with other tools' hooks.
                let how = attach_pinned(name, fd.as_fd(), &dir.join(name), || {
                    let id = prog.attach(&cgroup_file, CgroupAttachMode::Single).map_err(err)?;
                    fd_link(name, prog.take_link(id).map_err(err)?)
                })?;
                reports.push(AttachReport { program: name, hook: hook.clone(), how });
            }
        };
    }
    attach_each!(SOCK_ADDR_PROGRAMS, CgroupSockAddr);
    attach_each!(SOCK_PROGRAMS, CgroupSock);
    Ok(reports)
}

fn device_dir(root: &Path, device: &str) -> Result<PathBuf, LoadError> {
    let dir = root.join("links").join(format!("dev-{device}"));
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Attaches (or swaps in) the tc programs on `device`'s ingress and egress through tcx.
pub fn attach_tc(ebpf: &mut Ebpf, root: &Path, device: &str) -> Result<Vec<AttachReport>, LoadError> {
    let dir = device_dir(root, device)?;
    let mut reports = Vec::new();
    for (name, attach_type) in [(TC_INGRESS, TcAttachType::Ingress), (TC_EGRESS, TcAttachType::Egress)] {
        let err = |source| LoadError::Program { name, source };
        let prog: &mut SchedClassifier = ebpf.program_mut(name).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
        load_once(name, || prog.load())?;
        let fd = prog.fd().map_err(err)?.try_clone().map_err(io(format!("{name}: program fd")))?;
        let how = attach_pinned(name, fd.as_fd(), &dir.join(name), || {
            let id = prog.attach_with_options(device, attach_type, TcAttachOptions::TcxOrder(LinkOrder::default())).map_err(err)?;
            fd_link(name, prog.take_link(id).map_err(err)?)
        })?;
        reports.push(AttachReport { program: name, hook: format!("tcx {device} {attach_type:?}"), how });
    }
    Ok(reports)
}

/// Verifies the north-south programs (tc ingress and egress, XDP) without attaching them, so
/// the swaps that follow happen back to back. Verifying one takes up to a second or two, and
/// loaded one by one between the swaps, the old and new programs ran side by side that long: the
/// new tc ingress program on resized conntrack tables while the old egress and XDP programs still
/// used the old ones.
pub fn load_north_south(tc: &mut Ebpf, xdp: &mut Ebpf) -> Result<(), LoadError> {
    for name in [TC_INGRESS, TC_EGRESS] {
        let err = |source| LoadError::Program { name, source };
        let prog: &mut SchedClassifier = tc.program_mut(name).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
        load_once(name, || prog.load())?;
    }
    let name = XDP_PROGRAM;
    let err = |source| LoadError::Program { name, source };
    let prog: &mut Xdp = xdp.program_mut(name).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
    load_once(name, || prog.load())
}

/// `--nodeport-acceleration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceleration {
    Disabled,
    Native,
    BestEffort,
}

/// Attaches XDP on `device`: native (driver) mode when the device supports it; generic mode
/// otherwise unless `Native` was demanded. Returns the report and whether it runs natively.
pub fn attach_xdp(ebpf: &mut Ebpf, root: &Path, device: &str, accel: Acceleration) -> Result<(AttachReport, bool), LoadError> {
    let name = XDP_PROGRAM;
    let dir = device_dir(root, device)?;
    let err = |source| LoadError::Program { name, source };
    let prog: &mut Xdp = ebpf.program_mut(name).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
    load_once(name, || prog.load())?;
    let fd = prog.fd().map_err(err)?.try_clone().map_err(io(format!("{name}: program fd")))?;
    // bpffs refuses names with dots.
    let native_pin = dir.join(format!("{name}_native"));
    let generic_pin = dir.join(format!("{name}_generic"));
    // `native` was demanded where an earlier run settled for generic: start over natively.
    if accel == Acceleration::Native && generic_pin.exists() {
        fs::remove_file(&generic_pin).map_err(io(format!("removing {}", generic_pin.display())))?;
    }
    // A link keeps the mode it was created in; reuse whichever this device already has.
    if native_pin.exists() || generic_pin.exists() {
        let native = native_pin.exists();
        let pin = if native { &native_pin } else { &generic_pin };
        let how = attach_pinned(name, fd.as_fd(), pin, || {
            let id = prog.attach(device, if native { XdpMode::Driver } else { XdpMode::Skb }).map_err(err)?;
            fd_link(name, prog.take_link(id).map_err(err)?)
        })?;
        return Ok((AttachReport { program: name, hook: format!("xdp {device}"), how }, native));
    }
    let native = match prog.attach(device, XdpMode::Driver) {
        Ok(id) => {
            fd_link(name, prog.take_link(id).map_err(err)?)?.pin(&native_pin).map_err(|source| LoadError::Pin { name, path: native_pin.clone(), source })?;
            true
        }
        Err(e) if accel == Acceleration::Native => return Err(err(e)),
        Err(_) => {
            let id = prog.attach(device, XdpMode::Skb).map_err(err)?;
            fd_link(name, prog.take_link(id).map_err(err)?)?.pin(&generic_pin).map_err(|source| LoadError::Pin { name, path: generic_pin.clone(), source })?;
            false
        }
    };
    Ok((AttachReport { program: name, hook: format!("xdp {device}"), how: Attachment::Attached }, native))
}

/// The tracepoints `bpf/xdp_watch.c` counts XDP's lost frames on, and its program for each.
pub const XDP_WATCH_PROGRAMS: [(&str, &str); 4] = [
    ("sluice_watch_bulk_tx", "xdp_bulk_tx"),
    ("sluice_watch_devmap_xmit", "xdp_devmap_xmit"),
    ("sluice_watch_redirect_err", "xdp_redirect_err"),
    ("sluice_watch_exception", "xdp_exception"),
];

/// Where the xdp_watch links are pinned (for [`prune_links`]).
pub fn xdp_watch_links(root: &Path) -> PathBuf {
    root.join("links").join("xdp-watch")
}

/// Attaches the counters of frames the kernel lost after XDP sent them (`bpf/xdp_watch.c`) on
/// the kernel's xdp tracepoints. Tracing links cannot swap their program, so a restarted agent
/// attaches anew and then drops its predecessor's links.
pub fn attach_xdp_watch(root: &Path) -> Result<(Ebpf, Vec<AttachReport>), LoadError> {
    let mut ebpf = load_object(root, crate::XDP_WATCH_OBJECT)?;
    let btf = aya::Btf::from_sys_fs().map_err(|e| LoadError::Io { what: "reading the kernel's BTF".into(), source: std::io::Error::other(e) })?;
    let dir = xdp_watch_links(root);
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut reports = Vec::new();
    for (name, tracepoint) in XDP_WATCH_PROGRAMS {
        let err = |source| LoadError::Program { name, source };
        let prog: &mut aya::programs::BtfTracePoint = ebpf.program_mut(name).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
        load_once(name, || prog.load(tracepoint, &btf))?;
        let id = prog.attach().map_err(err)?;
        let link: FdLink = prog.take_link(id).map_err(err)?.into();
        let pin = dir.join(name);
        let how = if pin.exists() {
            fs::remove_file(&pin).map_err(io(format!("removing {}", pin.display())))?;
            Attachment::Replaced
        } else {
            Attachment::Attached
        };
        link.pin(&pin).map_err(|source| LoadError::Pin { name, path: pin.clone(), source })?;
        reports.push(AttachReport { program: name, hook: format!("tp_btf {tracepoint}"), how });
    }
    Ok((ebpf, reports))
}

/// Loads the program the acceleration proof runs; its fd, for `xdp_proof::prove`.
pub fn load_xdp_probe(ebpf: &mut Ebpf) -> Result<aya::programs::ProgramFd, LoadError> {
    let name = XDP_PROBE_PROGRAM;
    let err = |source| LoadError::Program { name, source };
    let prog: &mut Xdp = ebpf.program_mut(name).ok_or(err(ProgramError::NotLoaded))?.try_into().map_err(err)?;
    load_once(name, || prog.load())?;
    prog.fd().map_err(err)?.try_clone().map_err(io(format!("{name}: program fd")))
}

/// Writes the node-wide datapath settings (SNAT addresses, XDP acceleration).
pub fn write_config(ebpf: &mut Ebpf, config: abi::Config) -> Result<(), LoadError> {
    let map = ebpf.map_mut(abi::MAP_CONFIG).ok_or(LoadError::Config(aya::maps::MapError::InvalidName { name: abi::MAP_CONFIG.into() }))?;
    let mut array: Array<&mut MapData, abi::Config> = Array::try_from(map).map_err(LoadError::Config)?;
    array.set(0, config, 0).map_err(LoadError::Config)
}

/// Removes the links this agent pinned for hooks it no longer serves (another cgroup, a device
/// no longer in --devices), which detaches those programs.
pub fn prune_links(root: &Path, keep: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(root.join("links")) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !keep.contains(&path) {
            fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Removes everything pinned under `root` and `root` itself: the links first, which detaches
/// the programs from the cgroup and the devices (no other process holds them), then the maps.
/// Returns what was removed, links first; nothing pinned is not an error.
pub fn remove_pins(root: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    if !root.exists() {
        return Ok(removed);
    }
    let links = root.join("links");
    if let Ok(entries) = fs::read_dir(&links) {
        for entry in entries.flatten() {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
            removed.push(path);
        }
    }
    for entry in fs::read_dir(root).map_err(io(format!("reading {}", root.display())))?.flatten() {
        let path = entry.path();
        if path == links {
            continue;
        }
        let gone = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        gone.map_err(io(format!("removing {}", path.display())))?;
        removed.push(path);
    }
    fs::remove_dir_all(root).map_err(io(format!("removing {}", root.display())))?;
    Ok(removed)
}

/// The links directory a device's programs are pinned under (for [`prune_links`]).
pub fn device_links(root: &Path, device: &str) -> PathBuf {
    root.join("links").join(format!("dev-{device}"))
}

/// The datapath settings as the pinned config map holds them now.
pub fn read_config(root: &Path) -> Result<abi::Config, crate::MapError> {
    let map = crate::maps::open_pinned(root, abi::MAP_CONFIG)?;
    let array: Array<MapData, abi::Config> = Array::try_from(map).map_err(|source| crate::MapError::Open { path: root.join(abi::MAP_CONFIG), source })?;
    array.get(&0, 0).map_err(|source| crate::MapError::Kernel { map: abi::MAP_CONFIG, op: "read".into(), source })
}

/// Rewrites the pinned config map: what a live ProxyConfig change does.
pub fn write_config_pinned(root: &Path, config: abi::Config) -> Result<(), crate::MapError> {
    let map = crate::maps::open_pinned(root, abi::MAP_CONFIG)?;
    let mut array: Array<MapData, abi::Config> = Array::try_from(map).map_err(|source| crate::MapError::Open { path: root.join(abi::MAP_CONFIG), source })?;
    array.set(0, config, 0).map_err(|source| crate::MapError::Kernel { map: abi::MAP_CONFIG, op: "write".into(), source })
}

/// Records the agent's network namespace (the node's) for bind protection, which then leaves
/// processes in other namespaces (pods) alone.
pub fn write_host_netns(root: &Path) -> Result<u64, LoadError> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(io("socket for SO_NETNS_COOKIE"))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the u64 we own.
    let r = unsafe {
        libc::getsockopt(std::os::fd::AsRawFd::as_raw_fd(&sock), libc::SOL_SOCKET, SO_NETNS_COOKIE, &mut cookie as *mut u64 as *mut libc::c_void, &mut len)
    };
    if r != 0 {
        return Err(LoadError::Io { what: "getsockopt(SO_NETNS_COOKIE)".into(), source: std::io::Error::last_os_error() });
    }
    let map =
        crate::maps::open_pinned(root, abi::MAP_HOST_NETNS).map_err(|e| LoadError::Io { what: "host netns map".into(), source: std::io::Error::other(e) })?;
    let mut array: Array<MapData, u64> = Array::try_from(map).map_err(LoadError::Config)?;
    array.set(0, cookie, 0).map_err(LoadError::Config)?;
    Ok(cookie)
}
