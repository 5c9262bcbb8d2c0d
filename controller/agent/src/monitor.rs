//! `sluice monitor`: a live stream of what the datapath decides (translations, rejects, drops),
//! read from the events ring buffer.
//!
//! The datapath writes events only while a monitor holds the lease in `sluice_monitor_v1` (a
//! CLOCK_MONOTONIC deadline). The monitor renews it every second and clears it on exit; if it is
//! killed, the stream stops by itself when the lease runs out, so nobody pays for events that
//! nobody reads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{Array, Map, MapData, RingBuf};
use serde_json::json;
use sluice_abi::{self as abi, Counter, Event, FrontendName, RevNatKey};

use crate::Output;

/// How long the datapath keeps emitting after the last renewal.
const LEASE: Duration = Duration::from_secs(5);
const RENEW_EVERY: Duration = Duration::from_secs(1);
const POLL_EVERY: Duration = Duration::from_millis(20);

#[derive(clap::Args)]
pub struct MonitorArgs {
    #[arg(long, default_value = crate::DEFAULT_BPF_ROOT)]
    pub bpf_root: std::path::PathBuf,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Only drops and rejects (what went wrong), not translations.
    #[arg(long)]
    pub drops_only: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The lease array: key 0 holds the deadline until which the datapath emits.
struct Lease(Array<MapData, u64>);

impl Lease {
    fn open(root: &Path) -> anyhow::Result<Lease> {
        let data = MapData::from_pin(root.join(abi::MAP_MONITOR))
            .with_context(|| format!("opening {} (is an agent of this version running with --bpf-root {}?)", abi::MAP_MONITOR, root.display()))?;
        Ok(Lease(Array::try_from(Map::Array(data))?))
    }
    fn set(&mut self, until_ns: u64) -> anyhow::Result<()> {
        self.0.set(0, until_ns, 0).context("writing the monitor lease")
    }
}

/// Frontend names by rev-NAT id, re-read when an event names an id not seen yet.
struct Names {
    root: std::path::PathBuf,
    known: HashMap<u32, String>,
}

impl Names {
    fn get(&mut self, id: u32) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.known.contains_key(&id) {
            self.reload();
        }
        self.known.get(&id).cloned()
    }
    fn reload(&mut self) {
        let Ok(data) = MapData::from_pin(self.root.join(abi::MAP_NAMES)) else {
            return;
        };
        let Ok(map) = aya::maps::HashMap::<MapData, RevNatKey, FrontendName>::try_from(Map::HashMap(data)) else {
            return;
        };
        for (k, v) in map.iter().flatten() {
            let end = v.name.iter().position(|&b| b == 0).unwrap_or(v.name.len());
            self.known.insert(k.id, String::from_utf8_lossy(&v.name[..end]).into_owned());
        }
    }
}

fn counter(reason: u32) -> Option<Counter> {
    Counter::ALL.get(reason as usize).copied()
}

/// What happened, in one word: translated, rejected (the socket got ECONNREFUSED), dropped.
fn verdict(reason: u32) -> &'static str {
    match counter(reason) {
        Some(Counter::SockNoBackend | Counter::SockSourceRange | Counter::SockMissingSlot | Counter::NpRejectNoBackend) => "rejected",
        Some(Counter::BindDenied) => "bind-denied",
        Some(c) if c.is_drop() => "dropped",
        Some(_) => "translated",
        None => "unknown",
    }
}

fn proto_name(p: u8) -> String {
    match p {
        abi::IPPROTO_TCP => "TCP".into(),
        abi::IPPROTO_UDP => "UDP".into(),
        abi::IPPROTO_SCTP => "SCTP".into(),
        other => other.to_string(),
    }
}

fn endpoint(addr: &abi::Addr, port_be: u16) -> String {
    let ip = addr.ip();
    let port = u16::from_be(port_be);
    if ip.is_ipv6() { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

fn is_zero(addr: &abi::Addr) -> bool {
    addr.0.iter().all(|&b| b == 0) || addr.ip().is_unspecified()
}

/// One event as a JSON object; the table view is built from the same fields.
fn describe(ev: &Event, names: &mut Names, mono_to_unix_ns: i128) -> serde_json::Value {
    let unix_ns = ev.ts_ns as i128 + mono_to_unix_ns;
    let time = k8s_openapi::jiff::Timestamp::from_nanosecond(unix_ns).map(|t| t.to_string()).unwrap_or_default();
    let socket = matches!(ev.hook, abi::HOOK_CONNECT4 | abi::HOOK_CONNECT6 | abi::HOOK_SENDMSG4 | abi::HOOK_SENDMSG6 | abi::HOOK_POST_BIND);
    let end = ev.comm.iter().position(|&b| b == 0).unwrap_or(ev.comm.len());
    json!({
        "time": time,
        "hook": abi::hook_name(ev.hook),
        "verdict": verdict(ev.reason),
        "reason": counter(ev.reason).map_or("unknown", |c| c.name()),
        "proto": proto_name(ev.proto),
        "src": (!is_zero(&ev.saddr)).then(|| endpoint(&ev.saddr, ev.sport_be)),
        "dst": if ev.hook == abi::HOOK_POST_BIND { format!("port {}", u16::from_be(ev.sport_be)) } else { endpoint(&ev.daddr, ev.dport_be) },
        "to": (!is_zero(&ev.to_addr)).then(|| endpoint(&ev.to_addr, ev.to_port_be)),
        "service": names.get(ev.rev_nat_id),
        "pid": socket.then_some(ev.pid),
        "comm": socket.then(|| String::from_utf8_lossy(&ev.comm[..end]).into_owned()),
    })
}

fn table_line(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let mut line = format!("{} {:<9} {:<11} {:<4} ", s("time"), s("hook"), s("verdict"), s("proto"));
    if let Some(src) = v["src"].as_str() {
        line.push_str(&format!("{src} -> "));
    }
    line.push_str(&s("dst"));
    if let Some(to) = v["to"].as_str() {
        line.push_str(&format!(" => {to}"));
    }
    if let Some(svc) = v["service"].as_str() {
        line.push_str(&format!("  service {svc}"));
    }
    if let (Some(comm), Some(pid)) = (v["comm"].as_str(), v["pid"].as_u64()) {
        line.push_str(&format!("  by {comm}[{pid}]"));
    }
    line.push_str(&format!("  ({})", s("reason")));
    line
}

pub fn run(args: &MonitorArgs) -> anyhow::Result<()> {
    let mut lease = Lease::open(&args.bpf_root)?;
    let data = MapData::from_pin(args.bpf_root.join(abi::MAP_EVENTS)).with_context(|| format!("opening {}", abi::MAP_EVENTS))?;
    let mut ring = RingBuf::try_from(Map::RingBuf(data))?;
    // Whatever an earlier monitor left unread is old news.
    while ring.next().is_some() {}

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, request_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, request_stop as *const () as libc::sighandler_t);
    }
    let mono_to_unix_ns = clock_ns(libc::CLOCK_REALTIME) as i128 - clock_ns(libc::CLOCK_MONOTONIC) as i128;
    let mut names = Names { root: args.bpf_root.clone(), known: HashMap::new() };
    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mut renewed: Option<Instant> = None;
    let mut seen = 0u64;
    if args.output == Output::Table {
        eprintln!("listening for datapath events (Ctrl-C to stop)");
    }
    let result = (|| -> anyhow::Result<()> {
        loop {
            if renewed.is_none_or(|t| t.elapsed() >= RENEW_EVERY) {
                lease.set(clock_ns(libc::CLOCK_MONOTONIC) + LEASE.as_nanos() as u64)?;
                renewed = Some(Instant::now());
            }
            while let Some(item) = ring.next() {
                let Some(ev) = Event::from_bytes(&item) else {
                    continue;
                };
                drop(item);
                if args.drops_only && verdict(ev.reason) == "translated" {
                    continue;
                }
                let v = describe(&ev, &mut names, mono_to_unix_ns);
                match args.output {
                    Output::Json => println!("{v}"),
                    Output::Table => println!("{}", table_line(&v)),
                }
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    return Ok(());
                }
            }
            if STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            std::thread::sleep(POLL_EVERY);
        }
    })();
    // Another monitor may have taken the lease meanwhile; clearing it only costs that one a
    // second until its next renewal.
    let cleared = lease.set(0);
    result.and(cleared)
}
