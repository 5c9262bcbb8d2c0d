//! XDP acceleration, device by device, only where it is proven to deliver. Asking for it (the
//! `--nodeport-acceleration` flag or the ProxyConfig) is not enough: a device whose driver or
//! peer drops what XDP transmits would lose every flow XDP sends. A device's entry in the
//! pinned `sluice_xdp_devices_v1` map lets XDP take flows only after an echo request sent by
//! XDP from that device to a remote backend was answered (`sluice_datapath::xdp_proof`); until
//! then, and whenever a later check fails, tc carries them. The proof is repeated, so a path
//! that stops delivering falls back within a minute.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_abi::{self as abi, XdpDevice, XdpState};
use sluice_datapath::loader::Acceleration;
use sluice_datapath::xdp_proof::{self, Proof};

/// How often a proven device is checked again, and how often a failed one is retried.
const RECHECK: Duration = Duration::from_secs(30);
/// How often a device with nothing to prove it with looks again (new backends also wake it).
const RETRY_UNPROVEN: Duration = Duration::from_secs(5);
/// The soonest a device is checked again because frames were lost.
const FORCED_RECHECK: Duration = Duration::from_secs(5);
/// Clients sending their SYN again, unanswered, on flows XDP created: counted over this window ...
const FLOW_WINDOW: Duration = Duration::from_secs(5);
/// ... against the flows answered in this shorter one, the most recent: on a path that stops
/// delivering, answers stop at once, while the SYNs sent again come 1 and 3 s after the first.
const ANSWERED_WINDOW: Duration = Duration::from_secs(2);
/// SYNs sent again within FLOW_WINDOW, and more of them than flows answered within
/// ANSWERED_WINDOW, that make a device fall back.
const UNANSWERED_SYNS: u64 = 2;
/// How long such a fallback holds before the device is proven again: the echo proof cannot see
/// what the flows saw (a checksum the sender left to offload), so it must not undo it at once.
const FLOW_FALLBACK_HOLD: Duration = Duration::from_secs(600);
/// Remote backends tried per proof; the first that answers the stack decides.
const MAX_TARGETS: usize = 8;

/// What the agent asks for, updated after each sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub acceleration: Acceleration,
    /// Addresses of backends on other nodes, sorted.
    pub targets: Vec<IpAddr>,
}

pub type SharedWanted = Arc<Mutex<Wanted>>;

struct Device {
    name: String,
    ifindex: u32,
    state: XdpState,
    checked: Option<Instant>,
    targets_checked: Vec<IpAddr>,
    /// What was asked for at the last check: a change (best-effort to native) checks again.
    mode_checked: Acceleration,
    /// No new proof before then (the flows said XDP's frames do not arrive).
    hold_until: Option<Instant>,
}

/// Starts the prover thread for `devices`; returns what the agent updates.
pub fn start(root: PathBuf, probe: aya::programs::ProgramFd, devices: &[String], node_ips: &[IpAddr], initial: Acceleration) -> anyhow::Result<SharedWanted> {
    let wanted = Arc::new(Mutex::new(Wanted { acceleration: initial, targets: Vec::new() }));
    let mut devs = Vec::new();
    let existing = xdp_proof::read_devices(&root)?;
    for name in devices {
        let c = std::ffi::CString::new(name.as_str())?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "device {name} has no ifindex");
        // A restarted agent keeps what its predecessor proved until its own first check.
        let state = existing
            .iter()
            .find(|(i, d)| *i == ifindex && abi::get_str(&d.name) == *name)
            .and_then(|(_, d)| XdpState::from_raw(d.state))
            .unwrap_or(XdpState::Off);
        devs.push(Device { name: name.clone(), ifindex, state, checked: None, targets_checked: Vec::new(), mode_checked: initial, hold_until: None });
    }
    xdp_proof::prune_devices(&root, &devs.iter().map(|d| d.ifindex).collect::<Vec<_>>())?;
    let ip4 = node_ips.iter().copied().find(IpAddr::is_ipv4);
    let ip6 = node_ips.iter().copied().find(IpAddr::is_ipv6);
    let shared = wanted.clone();
    std::thread::Builder::new().name("xdp-proof".into()).spawn(move || {
        // Echo identifiers of this agent, apart from any other pinger on the node.
        let ident = (std::process::id() as u16) ^ 0x5c00;
        let mut seq = 0u16;
        let mut lost_seen = xdp_counts(&root).lost;
        let mut window: Vec<(Instant, u64, u64)> = Vec::new();
        loop {
            // Frames the kernel lost after XDP sent them: check the accelerated devices now,
            // not at their next turn (at most every FORCED_RECHECK, as a full ring under load
            // loses frames too).
            let counts = xdp_counts(&root);
            let lost = counts.lost;
            if lost > lost_seen {
                for d in devs.iter_mut().filter(|d| d.state == XdpState::Accelerated) {
                    if d.checked.is_none_or(|at| at.elapsed() >= FORCED_RECHECK) {
                        tracing::warn!(device = d.name, lost = lost - lost_seen, "the kernel lost frames XDP sent: checking the device again");
                        d.checked = None;
                    }
                }
            }
            lost_seen = lost;
            // Clients of XDP's flows sending their SYN again, unanswered: what XDP sends does
            // not arrive (or its replies do not come back), whatever the proof said.
            let now = Instant::now();
            let (syns, answered) = (counts.syns_unanswered, counts.answered);
            window.push((now, syns, answered));
            window.retain(|(at, _, _)| now.duration_since(*at) <= FLOW_WINDOW);
            let (_, syns0, _) = window[0];
            let answered0 = window.iter().find(|(at, _, _)| now.duration_since(*at) <= ANSWERED_WINDOW).map_or(answered, |(_, _, a)| *a);
            let (dsyns, danswered) = (syns.saturating_sub(syns0), answered.saturating_sub(answered0));
            if dsyns >= UNANSWERED_SYNS && dsyns > danswered {
                let w = shared.lock().expect("wanted").clone();
                let failed = if w.acceleration == Acceleration::Native { XdpState::Failed } else { XdpState::Fallback };
                for d in devs.iter_mut().filter(|d| d.state == XdpState::Accelerated) {
                    let reason = format!(
                        "clients sent {dsyns} SYNs again on flows XDP created, unanswered, in {} s ({danswered} flows answered in the last {} s): tc carries the flows; proven again in {} min",
                        FLOW_WINDOW.as_secs(),
                        ANSWERED_WINDOW.as_secs(),
                        FLOW_FALLBACK_HOLD.as_secs() / 60
                    );
                    set(&root, d, failed, reason);
                    d.checked = Some(now);
                    d.hold_until = Some(now + FLOW_FALLBACK_HOLD);
                }
            }
            let w = shared.lock().expect("wanted").clone();
            for d in devs.iter_mut() {
                step(&root, &probe, d, &w, ip4, ip6, ident, &mut seq);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })?;
    Ok(wanted)
}

/// What the datapath's counters say about XDP's frames, read once a tick.
struct XdpCounts {
    /// Frames the kernel lost after XDP sent them, every reason (`bpf/xdp_watch.c`).
    lost: u64,
    /// SYNs sent again on XDP's unanswered flows.
    syns_unanswered: u64,
    /// XDP's flows answered.
    answered: u64,
}

fn xdp_counts(root: &std::path::Path) -> XdpCounts {
    let all = sluice_datapath::counters::read(root).unwrap_or_default();
    let get = |c: abi::Counter| all.iter().find(|(k, _)| *k == c).map_or(0, |(_, n)| *n);
    XdpCounts {
        lost: get(abi::Counter::XdpLostTx) + get(abi::Counter::XdpLostRedirect) + get(abi::Counter::XdpLostOther),
        syns_unanswered: get(abi::Counter::XdpSynUnanswered),
        answered: get(abi::Counter::XdpFlowAnswered),
    }
}

fn due(d: &Device, w: &Wanted) -> bool {
    let Some(at) = d.checked else { return true };
    if d.mode_checked != w.acceleration {
        return true;
    }
    if d.hold_until.is_some_and(|until| Instant::now() < until) {
        return false;
    }
    match d.state {
        XdpState::Off => true,
        XdpState::Unproven => at.elapsed() >= RETRY_UNPROVEN || d.targets_checked != w.targets,
        XdpState::Accelerated | XdpState::Fallback | XdpState::Failed => at.elapsed() >= RECHECK,
    }
}

#[allow(clippy::too_many_arguments)]
fn step(
    root: &std::path::Path,
    probe: &aya::programs::ProgramFd,
    d: &mut Device,
    w: &Wanted,
    ip4: Option<IpAddr>,
    ip6: Option<IpAddr>,
    ident: u16,
    seq: &mut u16,
) {
    use std::os::fd::AsFd;
    if w.acceleration == Acceleration::Disabled {
        if d.state != XdpState::Off || d.checked.is_none() {
            set(root, d, XdpState::Off, "acceleration is not asked for: tc translates north-south flows".into());
        }
        d.checked = Some(Instant::now());
        d.mode_checked = w.acceleration;
        return;
    }
    if !due(d, w) {
        return;
    }
    d.checked = Some(Instant::now());
    d.targets_checked = w.targets.clone();
    d.mode_checked = w.acceleration;
    let targets = &w.targets;
    // IPv4 first where the node has an IPv4 address and there are IPv4 backends.
    let src = [ip4, ip6].into_iter().flatten().find(|ip| targets.iter().any(|t| t.is_ipv6() == ip.is_ipv6()));
    let proof = match src {
        None => Ok(Proof::NoTarget("no remote backend to send a proof to yet".into())),
        Some(src) => {
            let family: Vec<IpAddr> = targets.iter().copied().filter(|t| t.is_ipv6() == src.is_ipv6()).take(MAX_TARGETS).collect();
            xdp_proof::prove(probe.as_fd(), d.ifindex, src, &family, ident, seq)
        }
    };
    let failed_state = if w.acceleration == Acceleration::Native { XdpState::Failed } else { XdpState::Fallback };
    match proof {
        Ok(Proof::Delivered { target, rtt }) => {
            if d.state != XdpState::Accelerated {
                set(root, d, XdpState::Accelerated, format!("XDP's echo request to {target} was answered in {:.2} ms", rtt.as_secs_f64() * 1e3));
            }
        }
        Ok(Proof::NotDelivered { target, tries }) => {
            let reason = format!("{tries} echo requests XDP sent to {target} got no answer, one through the stack did: tc carries the flows");
            if d.state != failed_state {
                set(root, d, failed_state, reason);
            }
        }
        // The last proof stands while there is nothing to check it with.
        Ok(Proof::NoTarget(_)) if d.state == XdpState::Accelerated => {}
        Ok(Proof::NoTarget(why)) => {
            if d.state != XdpState::Unproven {
                set(root, d, XdpState::Unproven, format!("not proven yet, tc carries the flows: {why}"));
            }
        }
        Err(e) => {
            let reason = format!("cannot run the proof ({e}): tc carries the flows");
            if d.state != failed_state {
                set(root, d, failed_state, reason);
            }
        }
    }
}

fn set(root: &std::path::Path, d: &mut Device, state: XdpState, reason: String) {
    let mut entry = XdpDevice {
        flags: if state == XdpState::Accelerated { abi::XDP_DEV_F_ACCEL } else { 0 },
        state: state as u32,
        since_ns: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos() as u64),
        ..Default::default()
    };
    abi::put_str(&mut entry.name, &d.name);
    abi::put_str(&mut entry.reason, &reason);
    if let Err(e) = xdp_proof::write_device(root, d.ifindex, &entry) {
        tracing::error!(device = d.name, "cannot record the XDP acceleration state: {e}");
        return;
    }
    let device = d.name.as_str();
    match state {
        XdpState::Failed => tracing::error!(device, state = state.name(), "XDP acceleration demanded (native) but not delivering: {reason}"),
        XdpState::Fallback => tracing::warn!(device, state = state.name(), "XDP acceleration falls back to tc: {reason}"),
        _ => tracing::info!(device, state = state.name(), "XDP acceleration: {reason}"),
    }
    d.state = state;
}

/// The remote backends a proof can be sent to, from the desired backends map.
pub fn remote_targets(backends: &std::collections::BTreeMap<u32, abi::Backend>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = backends.values().filter(|b| b.flags & abi::BACKEND_F_LOCAL == 0).map(|b| b.addr.ip()).collect();
    out.sort();
    out.dedup();
    out
}
