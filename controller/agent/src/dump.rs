//! `sluice bpf dump MAP`: every entry of one pinned map, decoded, as JSON lines (one entry a
//! line, so it pipes into jq or grep).

use aya::maps::{HashMap, MapData};
use serde_json::{Value, json};
use sluice_abi::{self as abi, Addr, CtKey, CtValue, SockRevNatKey, SockRevNatValue};
use sluice_datapath::{BpfMaps, LbMaps, counters, loader};

#[derive(clap::Args)]
pub struct DumpArgs {
    /// A map name as pinned (e.g. sluice_svc_v1, sluice_ct_v1); `list` shows them all.
    pub map: String,
    #[arg(long, default_value = crate::DEFAULT_BPF_ROOT)]
    pub bpf_root: std::path::PathBuf,
}

fn ip(a: &Addr) -> String {
    a.ip().to_string()
}

fn hash_entries<K: aya::Pod, V: aya::Pod>(args: &DumpArgs, decode: impl Fn(K, V) -> Value) -> anyhow::Result<Vec<Value>> {
    let data = MapData::from_pin(args.bpf_root.join(&args.map))?;
    let map = aya::maps::Map::from_map_data(data)?;
    let map = match map {
        aya::maps::Map::LruHashMap(d) | aya::maps::Map::HashMap(d) => d,
        _ => anyhow::bail!("{} is not a hash map", args.map),
    };
    let hash: HashMap<MapData, K, V> = HashMap::try_from(aya::maps::Map::HashMap(map))?;
    hash.iter().map(|r| r.map(|(k, v)| decode(k, v)).map_err(Into::into)).collect()
}

pub fn run(args: &DumpArgs) -> anyhow::Result<()> {
    if args.map == "list" {
        for m in abi::ALL_MAPS {
            println!("{m}");
        }
        return Ok(());
    }
    let rows: Vec<Value> = match args.map.as_str() {
        abi::MAP_CT | abi::MAP_CT_OTHER => hash_entries::<CtKey, CtValue>(args, ct_entry)?,
        abi::MAP_CT_HANDSHAKE => hash_entries::<CtKey, abi::CtHandshake>(args, |k, v| {
            let mut row = ct_entry(k, v.ct);
            if k.dir == abi::CT_REVERSE {
                // Whether the backend's SYN-ACK was seen, and its sequence number (the client's
                // ACK must answer it with this + 1 to complete the handshake).
                row["syn_ack_seen"] = json!(v.answered != 0);
                row["syn_ack_seq"] = json!(u32::from_be(v.seq_be));
            } else {
                row["syn_seq"] = json!(u32::from_be(v.seq_be));
            }
            // How long ago the client last sent its SYN (a handshake silent for
            // CT_HS_STALE_TICKS may lose its SNAT port).
            let ticks = sluice_datapath::conntrack::handshake_tick().wrapping_sub(v.syn_at);
            row["syn_sent_ms_ago"] = json!((u64::from(ticks) << abi::CT_HS_TICK_SHIFT) / 1_000_000);
            row
        })?,
        abi::MAP_AFFINITY => hash_entries::<abi::AffinityKey, abi::AffinityValue>(args, |k, v| {
            let client =
                if k.by_cookie == 1 { format!("netns cookie {}", u64::from_ne_bytes(k.client.0[..8].try_into().expect("8 bytes"))) } else { ip(&k.client) };
            json!({
                "client": client,
                // The rev-NAT id of the Service port's ClusterIP, and which endpoint set.
                "group": k.group,
                "local": k.set & abi::AFFINITY_LOCAL != 0,
                "udp": k.set & abi::AFFINITY_UDP != 0,
                "backend_id": v.backend_id,
                "last_used_monotonic_ns": v.last_used_ns,
            })
        })?,
        abi::MAP_FRAG => hash_entries::<abi::FragKey, abi::FragPorts>(args, |k, v| {
            json!({
                "src": format!("{}:{}", ip(&k.saddr), u16::from_be(v.sport_be)),
                "dst": format!("{}:{}", ip(&k.daddr), u16::from_be(v.dport_be)),
                "id": u32::from_be(k.id_be),
                "proto": k.proto,
            })
        })?,
        abi::MAP_SOCK_REVNAT => hash_entries::<SockRevNatKey, SockRevNatValue>(args, |k, v| {
            json!({
                "cookie": k.cookie,
                "backend": format!("{}:{}", ip(&k.addr), u16::from_be(k.port_be)),
                "frontend": format!("{}:{}", ip(&v.addr), u16::from_be(v.port_be)),
                "rev_nat_id": v.rev_nat_id,
            })
        })?,
        abi::MAP_COUNTERS => counters::read(&args.bpf_root)?.into_iter().map(|(c, n)| json!({"counter": c.name(), "value": n})).collect(),
        abi::MAP_CONFIG => {
            let c = loader::read_config(&args.bpf_root)?;
            vec![json!({"node_ip4": ip(&c.node_ip4), "node_ip6": ip(&c.node_ip6), "xdp_acceleration": c.flags & abi::CFG_F_XDP_ACCEL != 0})]
        }
        abi::MAP_XDP_DEVICES => sluice_datapath::xdp_proof::read_devices(&args.bpf_root)?
            .into_iter()
            .map(|(ifindex, d)| {
                json!({
                    "ifindex": ifindex,
                    "name": abi::get_str(&d.name),
                    "flags": d.flags,
                    "state": abi::XdpState::from_raw(d.state).map_or("unknown", |s| s.name()),
                    "since_ns": d.since_ns,
                    "reason": abi::get_str(&d.reason),
                })
            })
            .collect(),
        abi::MAP_PORT_FILTER => {
            let Some(filter) = sluice_datapath::port_filter::PortFilterMap::open(&args.bpf_root)? else {
                anyhow::bail!("{} is not pinned under {}", args.map, args.bpf_root.display());
            };
            let f = filter.value();
            vec![json!({
                // Before it is complete the programs look every packet up.
                "complete": f.flags & abi::PORT_FILTER_F_COMPLETE != 0,
                "frontend_ports": port_ranges(&f.frontend),
                "local_backend_ports": port_ranges(&f.local_backend),
                // Hashes (Addr::hash16) of the addresses whose unknown ports XDP drops.
                "lb_addr_hashes": f.lb_addr.len(),
            })]
        }
        abi::MAP_BLOCK_HITS => anyhow::bail!("{} is indexed by blocklist entry id: see sluice_blocklist_v1 and `kubectl get sourceblocklists`", args.map),
        name => {
            let s = BpfMaps::open(&args.bpf_root)?.dump()?;
            match name {
                abi::MAP_SERVICES => s.services.iter().map(|(k, v)| json!({
                    "frontend": format!("{}:{}", ip(&k.addr), k.port()), "proto": k.proto, "scope": k.scope, "slot": k.slot,
                    "backend_id": v.backend_id, "count": v.count, "rev_nat_id": v.rev_nat_id(), "flags": v.flags,
                    "affinity_timeout": v.affinity_timeout, "lb_alg": v.lb_alg,
                })).collect(),
                abi::MAP_BACKENDS => s.backends.iter().map(|(id, b)| json!({
                    "id": id, "backend": format!("{}:{}", ip(&b.addr), b.port()), "proto": b.proto, "flags": b.flags,
                })).collect(),
                abi::MAP_REVNAT => s.revnat.iter().map(|(id, r)| json!({"id": id, "frontend": format!("{}:{}", ip(&r.addr), r.port())})).collect(),
                abi::MAP_NAMES => s.names.iter().map(|(id, n)| json!({"id": id, "service": n.as_str()})).collect(),
                abi::MAP_SRC_RANGES => s.src_ranges.keys().map(|r| json!({"rev_nat_id": r.rev_nat_id, "cidr": format!("{}/{}", ip(&r.addr), r.prefix_bits())})).collect(),
                abi::MAP_LB_ADDRS => s.lb_addrs.iter().map(|(a, v)| json!({"address": ip(a), "flags": v.flags})).collect(),
                abi::MAP_NODEPORTS => s.nodeports.keys().map(|k| json!({"port": k.port, "proto": k.proto})).collect(),
                abi::MAP_BLOCKLIST => s.blocklist.iter().map(|(k, v)| json!({
                    "cidr": format!("{}/{}", ip(&k.addr), k.prefix_bits()), "id": v.id,
                    "ports": v.ports.iter().take(usize::from(v.nports)).map(|p| json!({"port": u16::from_be(p.port_be), "proto": p.proto})).collect::<Vec<_>>(),
                })).collect(),
                other => anyhow::bail!("unknown map {other:?}; `sluice bpf dump list` shows the maps"),
            }
        }
    };
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// "80,443,30000-30002": the ports of a set, runs joined.
fn port_ranges(bits: &abi::U16Set) -> String {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for port in bits.iter() {
        match runs.last_mut() {
            Some((_, last)) if u32::from(*last) + 1 == u32::from(port) => *last = port,
            _ => runs.push((port, port)),
        }
    }
    runs.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>().join(",")
}

/// A conntrack entry as `sluice dump` shows it (every table's entry starts with this).
fn ct_entry(k: CtKey, v: CtValue) -> Value {
    json!({
        "dir": if k.dir == abi::CT_REVERSE { "reverse" } else { "forward" },
        "src": format!("{}:{}", ip(&k.saddr), u16::from_be(k.sport_be)),
        "dst": format!("{}:{}", ip(&k.daddr), u16::from_be(k.dport_be)),
        "proto": k.proto,
        "addr1": format!("{}:{}", ip(&v.addr1), u16::from_be(v.port1_be)),
        "addr2": format!("{}:{}", ip(&v.addr2), u16::from_be(v.port2_be)),
        "rev_nat_id": v.rev_nat_id,
        "snat": v.flags & abi::CT_F_SNAT != 0,
        "local": v.flags & abi::CT_F_LOCAL != 0,
        // TCP FIN seen from the client / from the backend (an RST sets both): closed.
        "fin_client": v.flags & abi::CT_F_FIN_FWD != 0,
        "fin_backend": v.flags & abi::CT_F_FIN_REV != 0,
        // UDP: when the flow last carried a packet, in epochs of 2^36 ns (0: not yet stamped).
        "epoch": v.epoch,
    })
}


#[cfg(test)]
mod tests {
    #[test]
    fn port_ranges_join_runs_of_ports() {
        let mut bits = sluice_abi::U16Set::default();
        for p in [80, 443, 30000, 30001, 30002, 65535] {
            bits.insert(p);
        }
        assert_eq!(super::port_ranges(&bits), "80,443,30000-30002,65535");
        assert_eq!(super::port_ranges(&sluice_abi::U16Set::default()), "");
    }
}
