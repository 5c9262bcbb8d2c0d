//! Read-only views of the pinned datapath; they work whether or not an agent is running.

use anyhow::Context;
use sluice_core::view;
use sluice_datapath::{BpfMaps, LbMaps, counters};

use crate::{Output, ReadArgs};

pub fn service_list(args: &ReadArgs) -> anyhow::Result<()> {
    let maps = BpfMaps::open(&args.bpf_root)?;
    let state = maps.dump().context("reading the service maps")?;
    let views = view::frontends(&state);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&views)?),
        Output::Table => print!("{}", table(&views)),
    }
    Ok(())
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
        rows.push([v.service.clone(), format!("{}/{}", hostport(&v.address, v.port), v.protocol), v.scope.to_string(), v.flags.join(","), backends]);
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
    let map_sizes = state.map_usage();
    let config = sluice_datapath::loader::read_config(&args.bpf_root).ok();
    match args.output {
        Output::Json => {
            let v = serde_json::json!({
                "bpf_root": args.bpf_root,
                "links": links,
                "maps": map_sizes.iter().map(|(n, c, cap)| serde_json::json!({"name": n, "entries": c, "capacity": cap, "pressure": *c as f64 / f64::from(*cap)})).collect::<Vec<_>>(),
                "xdp_acceleration": config.map(|c| c.flags & sluice_abi::CFG_F_XDP_ACCEL != 0),
                "host_namespace_only": config.map(|c| c.flags & sluice_abi::CFG_F_HOST_NS_ONLY != 0),
                "counters": counters.iter().map(|(c, v)| (c.name(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table => {
            println!("bpf root: {}", args.bpf_root.display());
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
            println!("maps (entries / capacity, pressure):");
            for (n, c, cap) in map_sizes {
                println!("  {n:<34} {c:>7} / {cap:<8} {:5.1}%", c as f64 * 100.0 / f64::from(cap));
            }
            println!("counters:");
            for (c, v) in counters {
                println!("  {:<34} {v}", c.name());
            }
        }
    }
    Ok(())
}
