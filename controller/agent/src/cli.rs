//! Read-only views of the pinned datapath; they work whether or not an agent is running.

use anyhow::Context;
use sluice_core::view;
use sluice_datapath::{BpfMaps, LbMaps, counters};

use crate::{Output, ReadArgs};

pub fn service_list(args: &ReadArgs) -> anyhow::Result<()> {
    let maps = BpfMaps::open(&args.bpf_root)?;
    let state = maps.dump().context("reading the service maps")?;
    let views = view::frontends(&state);
    // An older agent may not have written the report yet; the frontends are still worth showing.
    let problems = service_problems(&args.bpf_root).unwrap_or_default();
    match args.output {
        Output::Json => {
            let mut rows: Vec<serde_json::Value> = Vec::new();
            for v in &views {
                let mut row = serde_json::to_value(v)?;
                row["programmed"] = true.into();
                row["problems"] = problems.iter().filter(|(s, _)| *s == v.service).map(|(_, m)| m.clone()).collect();
                rows.push(row);
            }
            // Services with nothing programmed at all still get a row, so scripts see them.
            for (service, message) in problems.iter().filter(|(s, _)| !views.iter().any(|v| v.service == *s)) {
                rows.push(serde_json::json!({"service": service, "programmed": false, "problems": [message], "flags": [], "backends": []}));
            }
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Output::Table => {
            print!("{}", table(&views));
            if !problems.is_empty() {
                println!("\nNOT PROGRAMMED (or only in part), and why:");
                for (service, message) in &problems {
                    println!("  {service}: {message}");
                }
            }
        }
    }
    Ok(())
}

/// (namespace/name, reason) of every Service the agent reported it could not program in full.
fn service_problems(root: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sluice_datapath::report::read_problems(root)?
        .into_iter()
        .filter_map(|(object, message)| object.strip_prefix("Service ").map(|s| (s.to_string(), message)))
        .collect())
}

fn hostport(addr: &str, port: u16) -> String {
    if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") }
}

fn table(views: &[view::FrontendView]) -> String {
    let mut rows: Vec<[String; 5]> = vec![["SERVICE".into(), "FRONTEND".into(), "SCOPE".into(), "FLAGS".into(), "BACKENDS".into()]];
    for v in views {
        let backends = if v.backends.is_empty() {
            match view::verdict(v) {
                "DROP" => "(none here: dropped, externalTrafficPolicy Local)".to_string(),
                _ => "(none: connections are refused)".to_string(),
            }
        } else {
            v.backends
                .iter()
                .map(|b| {
                    let mut s = hostport(&b.address, b.port);
                    if !b.flags.is_empty() {
                        s.push_str(&format!(" ({})", b.flags.join(",")));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        // One scope serves every client unless the traffic policies split them.
        let scope = if v.flags.contains(&"two-scopes") { v.scope } else { "all" };
        rows.push([v.service.clone(), format!("{}/{}", hostport(&v.address, v.port), v.protocol), scope.to_string(), v.flags.join(","), backends]);
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        for c in 0..4 {
            out.push_str(&format!("{:<w$}  ", r[c], w = widths[c]));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    out
}

pub fn status(args: &ReadArgs) -> anyhow::Result<()> {
    let maps = BpfMaps::open(&args.bpf_root)?;
    let state = maps.dump()?;
    let counters = counters::read(&args.bpf_root)?;
    let mut links = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(args.bpf_root.join("links")) {
        for dir in dirs.flatten() {
            for link in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                links.push(format!("{}/{}", dir.file_name().to_string_lossy(), link.file_name().to_string_lossy()));
            }
        }
    }
    links.sort();
    let map_sizes: Vec<_> = sluice_datapath::report::with_pinned_capacities(&args.bpf_root, state.map_usage().to_vec())
        .into_iter()
        .chain(sluice_datapath::report::lru_usage(&args.bpf_root))
        .collect();
    // Conntrack tables: what the LRU evicted from each (a SYN flood should only ever show in the
    // handshake table's).
    let evicted = sluice_datapath::conntrack::evictions(&args.bpf_root, &map_sizes);
    let evicted_from = |name: &str| evicted.iter().find(|(t, _)| *t == name).map(|(_, n)| *n);
    let config = sluice_datapath::loader::read_config(&args.bpf_root).ok();
    let agent = sluice_datapath::report::read_status(&args.bpf_root).ok().filter(|a| a.pid != 0);
    let problems = sluice_datapath::report::read_problems(&args.bpf_root).unwrap_or_default();
    let devices: Vec<serde_json::Value> = sluice_datapath::xdp_proof::read_devices(&args.bpf_root)
        .unwrap_or_default()
        .into_iter()
        .map(|(ifindex, d)| {
            let since = k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(d.since_ns)).map(|t| t.to_string()).unwrap_or_default();
            serde_json::json!({
                "name": sluice_abi::get_str(&d.name),
                "ifindex": ifindex,
                "xdp_acceleration": sluice_abi::XdpState::from_raw(d.state).map_or("unknown", |s| s.name()),
                "reason": sluice_abi::get_str(&d.reason),
                "since": since,
            })
        })
        .collect();
    let agent_json = agent.map(|a| {
        let last_sync = (a.last_sync_unix_ns != 0).then(|| {
            let time = k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(a.last_sync_unix_ns)).map(|t| t.to_string()).unwrap_or_default();
            let age = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()) - a.last_sync_unix_ns as f64 / 1e9;
            serde_json::json!({"time": time, "age_seconds": age, "duration_seconds": a.last_sync_duration_ns as f64 / 1e9, "generation": a.generation})
        });
        let error = sluice_abi::get_str(&a.last_error);
        serde_json::json!({
            "pid": a.pid,
            // Only meaningful in the agent's PID namespace (kubectl exec into its container).
            "running": std::path::Path::new(&format!("/proc/{}", a.pid)).exists(),
            "last_sync": last_sync,
            "failed_syncs": a.failed_syncs,
            "last_error": (!error.is_empty()).then_some(error),
        })
    });
    match args.output {
        Output::Json => {
            let v = serde_json::json!({
                "bpf_root": args.bpf_root,
                "links": links,
                "maps": map_sizes
                    .iter()
                    .map(|(n, c, cap)| {
                        let mut m = serde_json::json!({"name": n, "entries": c, "capacity": cap, "pressure": *c as f64 / f64::from(*cap)});
                        if let Some(e) = evicted_from(n) {
                            m["evicted"] = e.into();
                        }
                        m
                    })
                    .collect::<Vec<_>>(),
                "xdp_acceleration": config.map(|c| c.flags & sluice_abi::CFG_F_XDP_ACCEL != 0),
                "host_namespace_only": config.map(|c| c.flags & sluice_abi::CFG_F_HOST_NS_ONLY != 0),
                "devices": devices,
                "counters": counters.iter().map(|(c, v)| (c.name(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                "agent": agent_json,
                "problems": problems.iter().map(|(o, m)| serde_json::json!({"object": o, "message": m})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            println!("bpf root: {}", args.bpf_root.display());
            match &agent_json {
                None => println!("agent: no report in this bpf root (no agent of this version has run here)"),
                Some(a) => {
                    println!("agent: pid {}{}", a["pid"], if a["running"] == true { "" } else { " (not running in this PID namespace)" });
                    match a["last_sync"].as_object() {
                        Some(l) => println!(
                            "  last sync: {} ({:.1} s ago), took {:.1} ms, generation {}",
                            l["time"].as_str().unwrap_or_default(),
                            l["age_seconds"].as_f64().unwrap_or_default(),
                            l["duration_seconds"].as_f64().unwrap_or_default() * 1e3,
                            l["generation"]
                        ),
                        None => println!("  last sync: none yet"),
                    }
                    if let Some(e) = a["last_error"].as_str() {
                        println!("  failing: {} syncs in a row, latest: {e}", a["failed_syncs"]);
                    }
                }
            }
            if !problems.is_empty() {
                println!("not programmed (or only in part): {}", problems.len());
                for (o, m) in &problems {
                    println!("  {o}: {m}");
                }
            }
            println!("attached programs (pinned links): {}", links.len());
            for l in &links {
                println!("  {l}");
            }
            if let Some(c) = config {
                println!(
                    "settings: xdp acceleration {}, socket-LB {}",
                    if c.flags & sluice_abi::CFG_F_XDP_ACCEL != 0 { "on" } else { "off" },
                    if c.flags & sluice_abi::CFG_F_HOST_NS_ONLY != 0 { "host namespace only" } else { "every process in the cgroup" }
                );
            }
            if !devices.is_empty() {
                println!("devices (XDP acceleration, since, why):");
                for d in &devices {
                    println!(
                        "  {:<12} {:<12} {} {}",
                        d["name"].as_str().unwrap_or_default(),
                        d["xdp_acceleration"].as_str().unwrap_or_default(),
                        d["since"].as_str().unwrap_or_default(),
                        d["reason"].as_str().unwrap_or_default()
                    );
                }
            }
            println!("maps (entries / capacity, pressure):");
            for (n, c, cap) in &map_sizes {
                let evicted = evicted_from(n).map(|e| format!("  {e} evicted")).unwrap_or_default();
                println!("  {n:<34} {c:>7} / {cap:<8} {:5.1}%{evicted}", *c as f64 * 100.0 / f64::from(*cap));
            }
            println!("counters:");
            for (c, v) in counters {
                println!("  {:<34} {v}", c.name());
            }
        }
    }
    Ok(())
}

/// `sluice cleanup`: the datapath off this node. Refuses while the agent that recorded its pid
/// in the pins still runs (it would attach everything again), unless --force. The pid is the
/// agent's in its own pid namespace (a container's), so a process counts only if it is a
/// `sluice` too.
pub fn cleanup(args: &crate::CleanupArgs) -> anyhow::Result<()> {
    let root = &args.bpf_root;
    if !root.exists() {
        println!("nothing pinned at {}: no Sluice datapath on this node", root.display());
        return Ok(());
    }
    if let Ok(status) = sluice_datapath::report::read_status(root) {
        let pid = status.pid;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid != 0 && comm.trim() == "sluice" && !args.force {
            anyhow::bail!("the agent that pinned {} still runs (pid {pid}): stop it first, or pass --force", root.display());
        }
    }
    let removed = sluice_datapath::loader::remove_pins(root)?;
    for path in &removed {
        println!("removed {}", path.display());
    }
    println!("{} pins removed: programs detached, maps freed, {} gone", removed.len(), root.display());
    Ok(())
}
