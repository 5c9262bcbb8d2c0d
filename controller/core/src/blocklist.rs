//! SourceBlocklist objects → the XDP blocklist map. Pure; the agent reads the objects (from the
//! API or a manifest directory) and turns the per-entry hit counters back into status.

use std::collections::BTreeMap;

use sluice_abi::{self as abi, BlockKey, BlockPort, BlockValue};
use sluice_crds::{Protocol, SourceBlocklist};

use crate::ids::{IdSpace, IdTable};
use crate::names::Cidr;
use crate::translate::{Subject, Warning};

/// Which objects and CIDR a datapath entry stands for (for hit counters → status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOwner {
    pub cidr: String,
    pub blocklists: Vec<String>,
}

#[derive(Debug)]
pub struct BlockPlan {
    pub entries: BTreeMap<BlockKey, BlockValue>,
    /// Entry id → what it stands for.
    pub owners: BTreeMap<u32, BlockOwner>,
    pub ids: IdSpace<BlockKey>,
    pub warnings: Vec<Warning>,
}

/// Lays out every entry of every blocklist. A CIDR listed by several objects is one entry: all
/// ports if any of them says so, else the union of their ports.
/// The ids the blocklist map already holds, so a restarted agent keeps its hit counters' slots.
pub fn ids_from_state(state: &crate::LbState) -> IdSpace<BlockKey> {
    IdSpace::restore(state.blocklist.iter().map(|(k, v)| (*k, v.id)), abi::BLOCKLIST_MAX - 1)
}

/// Ids for blocklist entries (they index the per-entry hit counters).
pub fn empty_ids() -> IdSpace<BlockKey> {
    IdSpace::with_max(abi::BLOCKLIST_MAX - 1)
}

pub fn lay_out(lists: &[SourceBlocklist], previous: &IdSpace<BlockKey>) -> BlockPlan {
    let mut plan = BlockPlan { entries: BTreeMap::new(), owners: BTreeMap::new(), ids: empty_ids(), warnings: Vec::new() };
    // key → (cidr text, owners, Some(ports) or None for every port)
    let mut merged: BTreeMap<BlockKey, (String, Vec<String>, Option<Vec<(u16, Protocol)>>)> = BTreeMap::new();
    for list in lists {
        let name = list.metadata.name.clone().unwrap_or_default();
        let subject = Subject::cluster_scoped("SourceBlocklist", &name);
        for e in &list.spec.entries {
            // The apiserver validates these; manifests in standalone mode are not validated.
            let Some(cidr) = Cidr::parse(&e.cidr) else {
                plan.warnings.push(Warning::new(subject.clone(), format!("{:?} is not a CIDR; skipped", e.cidr)));
                continue;
            };
            let mut ports = Vec::new();
            for p in &e.ports {
                match u16::try_from(p.port) {
                    Ok(port) if port != 0 => ports.push((port, p.protocol)),
                    _ => plan.warnings.push(Warning::new(subject.clone(), format!("{}: port {} out of range; skipped", e.cidr, p.port))),
                }
            }
            let entry = merged.entry(BlockKey::new(cidr.addr, cidr.bits)).or_insert_with(|| (e.cidr.clone(), Vec::new(), Some(Vec::new())));
            entry.1.push(name.clone());
            match (&mut entry.2, e.ports.is_empty()) {
                (slot, true) => *slot = None,
                (Some(have), false) => have.extend(ports),
                (None, false) => {}
            }
        }
    }
    let mut ids = IdTable::from_previous(previous);
    for (key, (cidr, owners, ports)) in merged {
        let Some(id) = ids.acquire(key) else {
            for owner in &owners {
                plan.warnings.push(Warning::map_full(Subject::cluster_scoped("SourceBlocklist", owner), format!("{cidr}: the blocklist map is full; not enforced")));
            }
            continue;
        };
        let mut value = BlockValue { id, ..BlockValue::default() };
        if let Some(mut ports) = ports {
            ports.sort();
            ports.dedup();
            if ports.len() > abi::BLOCK_PORTS {
                for owner in &owners {
                    let message = format!("{cidr}: {} ports listed, the datapath enforces the first {}", ports.len(), abi::BLOCK_PORTS);
                    plan.warnings.push(Warning::new(Subject::cluster_scoped("SourceBlocklist", owner), message));
                }
                ports.truncate(abi::BLOCK_PORTS);
            }
            value.nports = ports.len() as u16;
            for (slot, (port, proto)) in value.ports.iter_mut().zip(ports) {
                *slot = BlockPort { port_be: port.to_be(), proto: proto.number(), pad: 0 };
            }
        }
        plan.entries.insert(key, value);
        plan.owners.insert(id, BlockOwner { cidr, blocklists: owners });
    }
    ids.sweep();
    plan.ids = ids.space;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str, yaml_entries: &str) -> SourceBlocklist {
        serde_yaml::from_str(&format!("metadata: {{name: {name}}}\nspec:\n  entries: {yaml_entries}\n")).unwrap()
    }

    #[test]
    fn entries_merge_by_cidr_and_keep_their_ids() {
        let a = list("a", "[{cidr: 203.0.113.0/24}, {cidr: 198.51.100.7/32, ports: [{port: 22}]}, {cidr: nope}]");
        let b = list("b", "[{cidr: 198.51.100.7/32, ports: [{port: 53, protocol: UDP}]}, {cidr: '2001:db8::/48', ports: [{port: 443}]}]");
        let p = lay_out(&[a.clone(), b], &empty_ids());
        assert_eq!(p.entries.len(), 3);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        let host = p.entries[&BlockKey::new("198.51.100.7".parse().unwrap(), 32)];
        assert_eq!(host.nports, 2, "ports of both objects");
        assert_eq!(p.owners[&host.id].blocklists, vec!["a".to_string(), "b".to_string()]);
        let net = p.entries[&BlockKey::new("203.0.113.0".parse().unwrap(), 24)];
        assert_eq!(net.nports, 0, "every port");
        assert_eq!(BlockKey::new("203.0.113.0".parse().unwrap(), 24).prefixlen, 120);
        // Dropping b keeps a's ids.
        let p2 = lay_out(&[a], &p.ids);
        assert_eq!(p2.entries[&BlockKey::new("203.0.113.0".parse().unwrap(), 24)].id, net.id);
    }
}
