//! Logical frontends + IDs → map entries (the slot scheme of DESIGN.md §3).

use sluice_abi::{self as abi, Backend, FrontendAddrValue, FrontendName, NodePortKey, RevNatValue, SrcRangeKey, SvcKey, SvcValue};

use crate::translate::FrontendKind;

use crate::ids::{Allocator, BackendIdent, FrontendIdent, Ids};
use crate::state::LbState;
use crate::translate::{Frontend, Target, Warning};

/// Map capacities the layout must respect (the agent may size maps differently).
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub services: usize,
    pub backends: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity { services: abi::SERVICES_MAX as usize, backends: abi::BACKENDS_MAX as usize }
    }
}

pub(crate) fn lay_out(frontends: &[Frontend], node_ips: &[std::net::IpAddr], previous: &Ids, cap: Capacity, warnings: &mut Vec<Warning>) -> (LbState, Ids) {
    let mut state = LbState::default();
    let mut backend_ids = Allocator::new(&previous.backends);
    let mut frontend_ids = Allocator::new(&previous.frontends);
    for fe in frontends {
        let object = format!("Service {}", fe.service);
        let slots_needed = 1 + fe.external.len() + fe.internal.as_ref().map_or(0, |i| 1 + i.len());
        let new_backends = fe
            .external
            .iter()
            .chain(fe.internal.iter().flatten())
            .filter(|t| !backend_ids.holds(&BackendIdent { ip: t.ip, port: t.port, proto: fe.proto }))
            .count();
        if state.services.len() + slots_needed > cap.services || state.backends.len() + new_backends > cap.backends {
            warnings.push(Warning { object, message: format!("{}:{}/{}: the service map is full; not programmed", fe.ip, fe.port, fe.proto) });
            continue;
        }
        let Some(rev_nat_id) = frontend_ids.id(FrontendIdent { ip: fe.ip, port: fe.port }) else {
            warnings.push(Warning { object, message: "no free frontend id; not programmed".into() });
            continue;
        };
        let rev_nat_id = rev_nat_id as u16;
        state.revnat.insert(u32::from(rev_nat_id), RevNatValue::new(fe.ip, fe.port));
        state.names.insert(u32::from(rev_nat_id), FrontendName::new(&fe.service.to_string()));

        for (net, bits) in &fe.source_ranges {
            state.src_ranges.insert(SrcRangeKey::new(u32::from(rev_nat_id), *net, *bits));
        }
        // A node address used as an externalIP still serves ssh, kubelet and replies to the
        // node's own connections: it must never drop "unknown ports".
        if matches!(fe.kind, FrontendKind::LoadBalancer | FrontendKind::ExternalIp) && !node_ips.contains(&fe.ip) {
            state.lb_addrs.entry(fe.ip.into()).or_insert(FrontendAddrValue { flags: 0 }).flags |= u32::from(fe.flags);
        }
        if fe.kind == FrontendKind::NodePort {
            state.nodeports.insert(NodePortKey { port: fe.port, proto: fe.proto.number(), pad: 0 });
        }
        let mut flags = fe.flags;
        if fe.internal.is_some() {
            flags |= abi::SVC_F_TWO_SCOPES;
        }
        let mut scopes = vec![(abi::SCOPE_EXT, &fe.external)];
        if let Some(internal) = &fe.internal {
            scopes.push((abi::SCOPE_INT, internal));
        }
        for (scope, targets) in scopes {
            let mut count: u16 = 0;
            for t in targets.iter() {
                let Some(id) = backend_ids.id(BackendIdent { ip: t.ip, port: t.port, proto: fe.proto }) else {
                    warnings.push(Warning { object: object.clone(), message: format!("no free backend id for {}:{}", t.ip, t.port) });
                    continue;
                };
                state.backends.insert(id, backend_entry(t, fe));
                count += 1;
                state
                    .services
                    .insert(SvcKey::new(fe.ip, fe.port, fe.proto.number(), scope, count), SvcValue { backend_id: id, rev_nat_id, ..SvcValue::default() });
            }
            state.services.insert(
                SvcKey::new(fe.ip, fe.port, fe.proto.number(), scope, 0),
                SvcValue { backend_id: 0, affinity_timeout: fe.affinity_timeout, count, rev_nat_id, flags, lb_alg: abi::LB_ALG_RANDOM, pad: 0 },
            );
        }
    }
    let ids = Ids { backends: backend_ids.finish(), frontends: frontend_ids.finish() };
    (state, ids)
}

fn backend_entry(t: &Target, fe: &Frontend) -> Backend {
    let mut flags = 0;
    if t.terminating {
        flags |= abi::BACKEND_F_TERMINATING;
    }
    if t.local {
        flags |= abi::BACKEND_F_LOCAL;
    }
    Backend::new(t.ip, t.port, fe.proto.number(), flags)
}
