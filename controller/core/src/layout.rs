//! Logical frontends + IDs → map entries (the slot scheme of DESIGN.md §3), kept up to date one
//! Service at a time.
//!
//! [`Layout`] holds the desired map contents and remembers which entries each Service put there,
//! so replacing one Service's frontends touches only its own entries (and the shared ones it
//! references), and the reconciler diffs only the keys in [`Touched`]. A full plan is the same
//! machinery started from nothing, so both paths lay out identically.

use std::collections::{BTreeMap, BTreeSet};

use sluice_abi::{
    self as abi, Addr, Backend, FrontendAddrValue, FrontendName, MaglevKey, MaglevTable, NodePortKey, RevNatValue, SrcRangeKey, SvcKey, SvcValue,
};

use crate::claims::Claims;
use crate::ids::{BackendIdent, FrontendIdent, IdTable, Ids, Tier};
use crate::incremental::GroupKey;
use crate::state::{LbState, PRESENT, Touched};
use crate::translate::{Frontend, FrontendKind, NodeContext, Subject, Target, Warning, WarningReason};

/// Map capacities the layout must respect (the agent may size maps differently).
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub services: usize,
    pub backends: usize,
    pub src_ranges: usize,
    pub lb_addrs: usize,
    pub nodeports: usize,
    pub maglev: usize,
    /// Frontend ids in use (the rev-NAT and names maps, one entry per id).
    pub revnat: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            services: abi::SERVICES_MAX as usize,
            backends: abi::BACKENDS_MAX as usize,
            src_ranges: abi::SRC_RANGES_MAX as usize,
            lb_addrs: abi::LB_ADDRS_MAX as usize,
            nodeports: abi::NODEPORTS_MAX as usize,
            maglev: abi::MAGLEV_MAX as usize,
            revnat: abi::REVNAT_MAX as usize,
        }
    }
}

/// What one Service put into the maps: per frontend, its header and slot counts (the slots'
/// keys follow from them, and the backends from the slots), so a Service costs tens of bytes
/// here whatever its number of endpoints.
#[derive(Debug, Clone, Default)]
struct Contribution {
    placed: Vec<Placed>,
    /// What only north-south frontends add; most Services have none.
    extra: Option<Box<Extra>>,
    warnings: Vec<Warning>,
}

/// One frontend laid out.
#[derive(Debug, Clone)]
struct Placed {
    /// Slot 0 of scope EXT.
    head: SvcKey,
    ident: FrontendIdent,
    /// Backend slots of scope EXT, and of scope INT when the frontend has it.
    external: u16,
    internal: Option<u16>,
}

impl Placed {
    /// Every key of the services map this frontend holds, slot 0 of each scope first.
    fn keys(&self) -> impl Iterator<Item = SvcKey> + '_ {
        let scopes = [(abi::SCOPE_EXT, Some(self.external)), (abi::SCOPE_INT, self.internal)];
        scopes.into_iter().filter_map(|(scope, count)| Some((scope, count?))).flat_map(move |(scope, count)| {
            (0..=count).map(move |slot| SvcKey { scope, slot, ..self.head })
        })
    }
}

#[derive(Debug, Clone, Default)]
struct Extra {
    src_ranges: Vec<SrcRangeKey>,
    nodeports: Vec<NodePortKey>,
    lb_addrs: Vec<Addr>,
    maglev: Vec<MaglevKey>,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) state: LbState,
    backend_ids: IdTable<BackendIdent>,
    frontend_ids: IdTable<FrontendIdent>,
    groups: BTreeMap<GroupKey, Contribution>,
    /// The groups with warnings: what a plan reports without walking every group.
    warned: BTreeSet<GroupKey>,
    /// Frontend kinds using each LoadBalancer/ExternalIP address, per Service.
    lb_addr_users: BTreeMap<Addr, BTreeMap<GroupKey, u32>>,
    src_range_refs: BTreeMap<SrcRangeKey, u32>,
    nodeport_refs: BTreeMap<NodePortKey, u32>,
    /// The Services using each rev-NAT id, by frontend count: TCP and UDP frontends of one
    /// address and port share an id, also across Services, and its name must not depend on
    /// which of them was laid out last.
    name_users: BTreeMap<u32, Users>,
    /// The keys this plan changed; None in a full plan, which compares everything.
    pub(crate) touched: Option<Touched>,
}

/// The Services using one rev-NAT id, by frontend count, in key order: a sorted list, since
/// nearly every id has one.
#[derive(Debug, Clone, Default)]
struct Users(Vec<(GroupKey, u32)>);

impl Users {
    fn add_ref(&mut self, group: &GroupKey) {
        match self.0.binary_search_by(|(g, _)| g.cmp(group)) {
            Ok(i) => self.0[i].1 += 1,
            Err(i) => {
                // Room for exactly one more: a Vec's first growth would make room for four.
                self.0.reserve_exact(1);
                self.0.insert(i, (group.clone(), 1))
            }
        }
    }

    fn drop_ref(&mut self, group: &GroupKey) {
        if let Ok(i) = self.0.binary_search_by(|(g, _)| g.cmp(group)) {
            if self.0[i].1 > 1 {
                self.0[i].1 -= 1;
            } else {
                self.0.remove(i);
            }
        }
    }

    fn first(&self) -> Option<&GroupKey> {
        self.0.first().map(|(g, _)| g)
    }
}

fn add_ref<K: Ord>(refs: &mut BTreeMap<K, u32>, key: K) -> bool {
    let n = refs.entry(key).or_insert(0);
    *n += 1;
    *n == 1
}

fn drop_ref<K: Ord>(refs: &mut BTreeMap<K, u32>, key: K) -> bool {
    match refs.get_mut(&key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            refs.remove(&key);
            true
        }
        None => false,
    }
}

impl Layout {
    pub(crate) fn new(previous: &Ids) -> Layout {
        Layout {
            state: LbState::default(),
            backend_ids: IdTable::from_previous(&previous.backends),
            frontend_ids: IdTable::from_previous(&previous.frontends),
            groups: BTreeMap::new(),
            warned: BTreeSet::new(),
            lb_addr_users: BTreeMap::new(),
            src_range_refs: BTreeMap::new(),
            nodeport_refs: BTreeMap::new(),
            name_users: BTreeMap::new(),
            touched: None,
        }
    }

    pub(crate) fn ids(&self) -> Ids {
        Ids { backends: self.backend_ids.space.clone(), frontends: self.frontend_ids.space.clone() }
    }

    pub(crate) fn warnings(&self) -> impl Iterator<Item = &Warning> {
        self.warned.iter().filter_map(|g| self.groups.get(g)).flat_map(|c| c.warnings.iter())
    }

    /// Whether a map (or an id space) refused a frontend.
    pub(crate) fn refused(&self) -> bool {
        self.warnings().any(|w| w.reason == WarningReason::MapFull)
    }

    /// Whether `frontends` fit beside everything laid out now in any order, counting every entry
    /// they could add as new (so no frontend of theirs can be refused for room).
    pub(crate) fn surely_fits<'a>(&self, frontends: impl IntoIterator<Item = &'a Frontend>, cap: Capacity) -> bool {
        let mut need = Capacity { services: 0, backends: 0, src_ranges: 0, lb_addrs: 0, nodeports: 0, maglev: 0, revnat: 0 };
        let mut count = 0;
        for fe in frontends {
            let targets = fe.external.len() + fe.internal.as_ref().map_or(0, Vec::len);
            need.services += 2 + targets;
            need.backends += targets;
            need.src_ranges += fe.source_ranges.len();
            need.lb_addrs += 1;
            need.nodeports += 1;
            need.maglev += 2;
            count += 1;
        }
        let s = &self.state;
        s.services.len() + need.services <= cap.services
            && s.backends.len() + need.backends <= cap.backends
            && s.src_ranges.len() + need.src_ranges <= cap.src_ranges
            && s.lb_addrs.len() + need.lb_addrs <= cap.lb_addrs
            && s.nodeports.len() + need.nodeports <= cap.nodeports
            && s.maglev.len() + need.maglev <= cap.maglev
            && s.revnat.len() + count <= cap.revnat
            && self.frontend_ids.space.held.len() + count <= self.frontend_ids.space.max as usize
            && self.backend_ids.space.held.len() + need.backends <= self.backend_ids.space.max as usize
    }

    /// Starts an incremental plan: nothing touched yet, last plan's freed ids reusable.
    pub(crate) fn begin(&mut self) {
        self.backend_ids.begin();
        self.frontend_ids.begin();
        self.touched = Some(Touched::default());
    }

    fn touch(&mut self, record: impl FnOnce(&mut Touched) -> bool) {
        if let Some(t) = &mut self.touched {
            record(t);
        }
    }

    /// Takes out everything `group` put in. Its ids stay reserved until [`Layout::finish`], so
    /// a Service replaced in place keeps them.
    pub(crate) fn remove(&mut self, group: &GroupKey) {
        let Some(c) = self.groups.remove(group) else { return };
        self.warned.remove(group);
        let mut backends = Vec::new();
        for k in c.placed.iter().flat_map(Placed::keys) {
            if let Some(v) = self.state.services.remove(&k) {
                if k.slot != 0 {
                    backends.extend(self.backend_ids.ident_of(v.backend_id));
                }
            }
            self.touch(|t| t.services.insert(k));
        }
        for ident in backends {
            self.backend_ids.release(ident);
        }
        let Extra { src_ranges, nodeports, lb_addrs, maglev } = c.extra.map(|e| *e).unwrap_or_default();
        for ident in c.placed.iter().map(|p| p.ident) {
            if let Some(id) = self.frontend_ids.space.get(&ident) {
                if let Some(users) = self.name_users.get_mut(&id) {
                    users.drop_ref(group);
                }
                self.refresh_name(id);
            }
            self.frontend_ids.release(ident);
        }
        for k in src_ranges {
            if drop_ref(&mut self.src_range_refs, k) {
                self.state.src_ranges.remove(&k);
                self.touch(|t| t.src_ranges.insert(k));
            }
        }
        for k in nodeports {
            if drop_ref(&mut self.nodeport_refs, k) {
                self.state.nodeports.remove(&k);
                self.touch(|t| t.nodeports.insert(k));
            }
        }
        for k in maglev {
            self.state.maglev.remove(&k);
            self.touch(|t| t.maglev.insert(k));
        }
        for addr in lb_addrs {
            if let Some(users) = self.lb_addr_users.get_mut(&addr) {
                users.remove(group);
            }
            self.refresh_lb_addr(addr);
        }
    }

    /// Names a rev-NAT id after the first Service using it (by namespace and name).
    fn refresh_name(&mut self, id: u32) {
        match self.name_users.get(&id).and_then(Users::first) {
            Some(first) => {
                self.state.names.insert(id, FrontendName::new(&first.to_string()));
                self.touch(|t| t.names.insert(id));
            }
            // Unused: the id is freed, and its name removed, when the plan ends.
            None => {
                self.name_users.remove(&id);
            }
        }
    }

    fn refresh_lb_addr(&mut self, addr: Addr) {
        let flags = self.lb_addr_users.get(&addr).map_or(0, |u| u.values().fold(0, |a, f| a | f));
        if flags == 0 {
            self.lb_addr_users.remove(&addr);
            self.state.lb_addrs.remove(&addr);
        } else {
            self.state.lb_addrs.insert(addr, FrontendAddrValue { flags });
        }
        self.touch(|t| t.lb_addrs.insert(addr));
    }

    /// Lays out the frontends of `group` (which must have been removed first, if present). With
    /// `node.maglev`, north-south frontends also get Maglev tables.
    /// A frontend whose address another Service (or another of its own frontends) wins in
    /// `claims` is not laid out.
    pub(crate) fn add<'a>(&mut self, group: &GroupKey, frontends: impl IntoIterator<Item = &'a Frontend>, node: &NodeContext, cap: Capacity, claims: &Claims) {
        let (node_ips, maglev) = (&node.node_ips, node.maglev);
        // The kernel's SCTP bind runs no cgroup bind hook, so an SCTP NodePort has nothing to
        // protect it with.
        let bind_protected =
            |fe: &Frontend| fe.kind == FrontendKind::NodePort && node.nodeport_bind_protection && fe.proto != sluice_crds::Protocol::SCTP;
        let mut c = Contribution::default();
        let mut extra = Extra::default();
        // This Service's ClusterIP frontends laid out so far: their ids name the affinity groups
        // of the Service ports. Only its own: another Service's ClusterIP (a duplicate) would
        // share its affinity entries, and an id held over from the last plan may be freed.
        let mut cluster_ips: BTreeMap<(std::net::IpAddr, u16, sluice_crds::Protocol), u32> = BTreeMap::new();
        for fe in frontends {
            let subject = Subject::service(&fe.service);
            if !claims.wins(group, fe) {
                if let Some(owner) = claims.winner(&crate::claims::address(fe)) {
                    let message = format!("{}:{}/{}: {} has this address; not programmed", fe.ip, fe.port, fe.proto, crate::claims::describe(owner));
                    c.warnings.push(Warning::new(subject, message));
                }
                continue;
            }
            let head = SvcKey::new(fe.ip, fe.port, fe.proto.number(), abi::SCOPE_EXT, 0);
            if self.state.services.contains_key(&head) {
                c.warnings.push(Warning::new(subject, format!("{}:{}/{}: another Service already uses this frontend; not programmed", fe.ip, fe.port, fe.proto)));
                continue;
            }
            let slots_needed = 1 + fe.external.len() + fe.internal.as_ref().map_or(0, |i| 1 + i.len());
            let new_backends = fe
                .external
                .iter()
                .chain(fe.internal.iter().flatten())
                .filter(|t| !self.backend_ids.holds(&BackendIdent { ip: t.ip, port: t.port, proto: fe.proto }))
                .collect::<BTreeSet<_>>()
                .len();
            // Every map this frontend would add to must have room for all of it, checked here: a
            // map write that fails would stop the sync for every Service, on every node alike.
            let lb_addr = matches!(fe.kind, FrontendKind::LoadBalancer | FrontendKind::ExternalIp) && !node_ips.contains(&fe.ip);
            let nodeport = NodePortKey { port: fe.port, proto: fe.proto.number(), pad: 0 };
            let needs = [
                (abi::MAP_SERVICES, self.state.services.len(), slots_needed, cap.services),
                (
                    abi::MAP_REVNAT,
                    self.state.revnat.len(),
                    usize::from(
                        !self.frontend_ids.space.get(&FrontendIdent { ip: fe.ip, port: fe.port }).is_some_and(|id| self.state.revnat.contains_key(&id)),
                    ),
                    cap.revnat,
                ),
                (abi::MAP_BACKENDS, self.state.backends.len(), new_backends, cap.backends),
                // A new frontend id makes every one of its ranges a new key.
                (abi::MAP_SRC_RANGES, self.state.src_ranges.len(), fe.source_ranges.len(), cap.src_ranges),
                (abi::MAP_LB_ADDRS, self.state.lb_addrs.len(), usize::from(lb_addr && !self.state.lb_addrs.contains_key(&Addr::from(fe.ip))), cap.lb_addrs),
                (
                    abi::MAP_NODEPORTS,
                    self.state.nodeports.len(),
                    usize::from(bind_protected(fe) && !self.state.nodeports.contains_key(&nodeport)),
                    cap.nodeports,
                ),
                (
                    abi::MAP_MAGLEV,
                    self.state.maglev.len(),
                    if maglev && fe.kind != FrontendKind::ClusterIp { 1 + usize::from(fe.internal.is_some()) } else { 0 },
                    cap.maglev,
                ),
            ];
            if let Some((map, _, need, capacity)) = needs.iter().find(|(_, have, need, capacity)| have + need > *capacity) {
                c.warnings.push(Warning::map_full(
                    subject,
                    format!("{}:{}/{}: the {map} map is full ({need} more entries, {capacity} at most); not programmed", fe.ip, fe.port, fe.proto),
                ));
                continue;
            }
            let ident = FrontendIdent { ip: fe.ip, port: fe.port };
            // Conntrack, Maglev tables and affinity groups keep ids in 16 bits (sluice_abi.h).
            let tier = if fe.kind != FrontendKind::ClusterIp || fe.flags & abi::SVC_F_AFFINITY != 0 { Tier::Narrow } else { Tier::Any };
            let Some(rev_nat_id) = self.frontend_ids.acquire_in(ident, tier) else {
                let why = match tier {
                    Tier::Narrow => "no free frontend id up to 65,535 (north-south and sessionAffinity frontends take those)",
                    Tier::Any => "no free frontend id",
                };
                c.warnings.push(Warning::map_full(subject, format!("{why}; not programmed")));
                continue;
            };
            if fe.kind == FrontendKind::ClusterIp {
                cluster_ips.insert((fe.ip, fe.port, fe.proto), rev_nat_id);
            }
            // The Service port's ClusterIP names the group (its own id when that frontend is
            // not laid out); the external scope of a Local policy has the local set.
            let affinity = |scope: u8| -> u32 {
                if fe.flags & abi::SVC_F_AFFINITY == 0 {
                    return 0;
                }
                let (ip, port) = fe.affinity_group;
                let group = cluster_ips.get(&(ip, port, fe.proto)).copied().unwrap_or(rev_nat_id);
                // Every frontend with affinity took a narrow id above.
                let Ok(group) = u16::try_from(group) else { return 0 };
                let mut set = match fe.proto {
                    sluice_crds::Protocol::TCP => 0,
                    sluice_crds::Protocol::UDP => abi::AFFINITY_UDP,
                    sluice_crds::Protocol::SCTP => abi::AFFINITY_SCTP,
                };
                if scope == abi::SCOPE_EXT && fe.flags & (abi::SVC_F_EXT_LOCAL | abi::SVC_F_INT_LOCAL) != 0 {
                    set |= abi::AFFINITY_LOCAL;
                }
                abi::affinity_group(group, set)
            };
            let affinity_words = [affinity(abi::SCOPE_EXT), affinity(abi::SCOPE_INT)];
            let id32 = rev_nat_id;
            self.state.revnat.insert(id32, RevNatValue::new(fe.ip, fe.port));
            self.name_users.entry(id32).or_default().add_ref(group);
            self.refresh_name(id32);
            self.touch(|t| t.revnat.insert(id32));

            for range in &fe.source_ranges {
                let k = SrcRangeKey::new(id32, range.addr, range.bits);
                if add_ref(&mut self.src_range_refs, k) {
                    self.state.src_ranges.insert(k, PRESENT);
                    self.touch(|t| t.src_ranges.insert(k));
                }
                extra.src_ranges.push(k);
            }
            // A node address used as an externalIP still serves ssh, kubelet and replies to the
            // node's own connections: it must never drop "unknown ports".
            if lb_addr {
                let addr = Addr::from(fe.ip);
                *self.lb_addr_users.entry(addr).or_default().entry(group.clone()).or_insert(0) |= u32::from(fe.flags);
                self.refresh_lb_addr(addr);
                extra.lb_addrs.push(addr);
            }
            if bind_protected(fe) {
                let k = nodeport;
                if add_ref(&mut self.nodeport_refs, k) {
                    self.state.nodeports.insert(k, PRESENT);
                    self.touch(|t| t.nodeports.insert(k));
                }
                extra.nodeports.push(k);
            }
            let mut flags = fe.flags;
            if fe.internal.is_some() {
                flags |= abi::SVC_F_TWO_SCOPES;
            }
            let mut counts: Vec<u16> = Vec::with_capacity(2);
            let mut scopes = vec![(abi::SCOPE_EXT, &fe.external)];
            if let Some(internal) = &fe.internal {
                scopes.push((abi::SCOPE_INT, internal));
            }
            // Traffic from outside is what several nodes may see for one flow; socket-LB stays random.
            let maglev = maglev && fe.kind != FrontendKind::ClusterIp;
            for (scope, targets) in scopes {
                let mut count: u16 = 0;
                let mut picked: Vec<(String, u32)> = Vec::new();
                for t in targets.iter() {
                    let bident = BackendIdent { ip: t.ip, port: t.port, proto: fe.proto };
                    let Some(id) = self.backend_ids.acquire(bident) else {
                        c.warnings.push(Warning::map_full(subject.clone(), format!("no free backend id for {}:{}", t.ip, t.port)));
                        continue;
                    };
                    picked.push((format!("{}:{}/{}", t.ip, t.port, fe.proto), id));
                    self.state.backends.insert(id, backend_entry(t, fe));
                    self.touch(|t| t.backends.insert(id));
                    count += 1;
                    let k = SvcKey::new(fe.ip, fe.port, fe.proto.number(), scope, count);
                    self.state.services.insert(k, SvcValue { backend_id: id, ..SvcValue::default() }.with_rev_nat_id(rev_nat_id));
                    self.touch(|t| t.services.insert(k));
                }
                let lb_alg = if maglev && !picked.is_empty() {
                    let names: Vec<String> = picked.iter().map(|(n, _)| n.clone()).collect();
                    let mut table = MaglevTable { backend_ids: [0; abi::MAGLEV_M] };
                    for (entry, i) in table.backend_ids.iter_mut().zip(crate::maglev::table(&names)) {
                        *entry = picked[i as usize].1;
                    }
                    let k =
                        MaglevKey { rev_nat_id: u16::try_from(rev_nat_id).expect("north-south frontends have narrow ids"), scope, proto: fe.proto.number() };
                    self.state.maglev.insert(k, table);
                    self.touch(|t| t.maglev.insert(k));
                    extra.maglev.push(k);
                    abi::LB_ALG_MAGLEV
                } else {
                    abi::LB_ALG_RANDOM
                };
                let k = SvcKey::new(fe.ip, fe.port, fe.proto.number(), scope, 0);
                let backend_id = affinity_words[usize::from(scope == abi::SCOPE_INT)];
                self.state.services.insert(
                    k,
                    SvcValue { backend_id, affinity_timeout: fe.affinity_timeout, count, flags, lb_alg, ..SvcValue::default() }.with_rev_nat_id(rev_nat_id),
                );
                self.touch(|t| t.services.insert(k));
                counts.push(count);
            }
            c.placed.push(Placed { head, ident, external: counts[0], internal: counts.get(1).copied() });
        }
        c.placed.shrink_to_fit();
        if !(extra.src_ranges.is_empty() && extra.nodeports.is_empty() && extra.lb_addrs.is_empty() && extra.maglev.is_empty()) {
            c.extra = Some(Box::new(extra));
        }
        if !c.warnings.is_empty() {
            self.warned.insert(group.clone());
        }
        self.groups.insert(group.clone(), c);
    }

    /// Ends a plan: ids nobody uses any more are freed and their entries leave the state.
    pub(crate) fn finish(&mut self) {
        for id in self.backend_ids.sweep() {
            self.state.backends.remove(&id);
            self.touch(|t| t.backends.insert(id));
        }
        for id in self.frontend_ids.sweep() {
            self.state.revnat.remove(&id);
            self.state.names.remove(&id);
            self.touch(|t| t.revnat.insert(id));
            self.touch(|t| t.names.insert(id));
        }
    }
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
