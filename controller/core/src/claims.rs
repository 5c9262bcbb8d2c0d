//! Which Service owns a frontend address that several Services ask for.
//!
//! Anyone who may edit a Service may set its `externalIPs`, and a load balancer controller sets
//! its ingress IPs; either can name another Service's ClusterIP and port, or a node address and a
//! port a NodePort uses (CVE-2020-8554). One of them must win, and the same one on every node,
//! after every restart, whatever order the objects arrived in: so the owner is decided by a
//! fixed precedence over everyone who asks, never by who came first.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sluice_crds::Protocol;

use crate::incremental::GroupKey;
use crate::translate::{Frontend, FrontendKind};

/// A frontend address as clients see it.
pub type Address = (IpAddr, u16, Protocol);

/// Lower wins: addresses the apiserver allocates (ClusterIPs, NodePorts) before the ones a load
/// balancer controller sets, before the ones any Service author may write; then by Service.
pub type Precedence = (u8, GroupKey);

/// Frontend kinds by precedence, with how a warning names them.
const RANKED: [(FrontendKind, &str); 4] = [
    (FrontendKind::ClusterIp, "ClusterIP"),
    (FrontendKind::NodePort, "NodePort"),
    (FrontendKind::LoadBalancer, "LoadBalancer IP"),
    (FrontendKind::ExternalIp, "externalIP"),
];

pub fn precedence(kind: FrontendKind, group: &GroupKey) -> Precedence {
    let rank = RANKED.iter().position(|(k, _)| *k == kind).expect("every kind is ranked");
    (rank as u8, group.clone())
}

/// What owns an address, for the warning its loser gets: "the ClusterIP of Service ns/name".
pub fn describe(owner: &Precedence) -> String {
    format!("the {} of Service {}", RANKED[usize::from(owner.0)].1, owner.1)
}

/// As the maps key it: an IPv4-mapped IPv6 address is its IPv4 address, so both spellings ask
/// for one frontend.
pub fn address(fe: &Frontend) -> Address {
    (fe.ip.to_canonical(), fe.port, fe.proto)
}

/// What a frontend asks for: its address, and its kind for the precedence.
pub type Ask = (Address, FrontendKind);

pub fn ask(fe: &Frontend) -> Ask {
    (address(fe), fe.kind)
}

/// Everyone asking for each address, in precedence order (a sorted list: nearly every address
/// has one).
#[derive(Debug, Clone, Default)]
pub struct Claims {
    by_address: BTreeMap<Address, Vec<Precedence>>,
}

impl Claims {
    pub fn winner(&self, address: &Address) -> Option<&Precedence> {
        self.by_address.get(address).and_then(|claims| claims.first())
    }

    /// Everyone asking for `address`, the winner first.
    pub fn claimants(&self, address: &Address) -> impl Iterator<Item = &Precedence> {
        self.by_address.get(address).into_iter().flatten()
    }

    /// Whether `fe` of `group` is the one programmed at its address.
    pub fn wins(&self, group: &GroupKey, fe: &Frontend) -> bool {
        self.winner(&address(fe)) == Some(&precedence(fe.kind, group))
    }

    pub fn claim<'a>(&mut self, group: &GroupKey, asks: impl IntoIterator<Item = &'a Ask>) {
        for (address, kind) in asks {
            let claims = self.by_address.entry(*address).or_default();
            let p = precedence(*kind, group);
            if let Err(at) = claims.binary_search(&p) {
                claims.reserve_exact(1);
                claims.insert(at, p);
            }
        }
    }

    pub fn withdraw<'a>(&mut self, group: &GroupKey, asks: impl IntoIterator<Item = &'a Ask>) {
        for (address, kind) in asks {
            if let Some(claims) = self.by_address.get_mut(address) {
                let p = precedence(*kind, group);
                claims.retain(|c| *c != p);
                if claims.is_empty() {
                    self.by_address.remove(address);
                }
            }
        }
    }

    pub fn clear(&mut self) {
        self.by_address.clear();
    }
}
