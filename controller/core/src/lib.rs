//! Sluice's pure core: Kubernetes objects in, the desired contents of the datapath maps out.
//! No I/O, no clock, no kube client: IDs come in as data, so every plan is reproducible.

/// The ABI types, for the paths `for_each_lb_map!` expands to in other crates.
pub use sluice_abi as abi;

pub mod blocklist;
pub mod claims;
pub mod ids;
pub mod incremental;
mod layout;
pub mod maglev;
pub mod manifest;
pub mod model;
pub mod names;
pub mod state;
pub mod translate;
pub mod view;

use model::{Service, Slice};

pub use ids::{BackendIdent, FrontendIdent, Ids};
pub use incremental::{Changed, Listed, PlanInputs, PlanReport, Planner};
pub use layout::Capacity;
pub use names::{Cidr, Name, ObjectKey};
pub use sluice_crds::Protocol;
pub use state::{LbState, MapEntry, MapKey, Op, PRESENT, Touched};
pub use translate::{Frontend, FrontendKind, HealthCheck, NodeContext, Subject, Warning, WarningReason};

#[derive(Debug)]
pub struct Plan {
    pub desired: LbState,
    pub ids: Ids,
    /// How many frontends were planned.
    pub frontends: usize,
    pub health_checks: Vec<HealthCheck>,
    pub warnings: Vec<Warning>,
}

pub fn plan<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a Slice>,
    node: &NodeContext,
    previous: &Ids,
    capacity: Capacity,
) -> Plan {
    let mut planner = Planner::new(previous.clone());
    let report = planner.plan(Changed::All, &incremental::Listed::new(services, slices), node, capacity);
    let ids = planner.ids();
    Plan { desired: planner.into_desired(), ids, frontends: report.frontends, health_checks: report.health_checks, warnings: report.warnings }
}

/// The IDs the maps already hold, so a restarted agent keeps every unchanged entry as it is.
pub fn ids_from_state(state: &LbState) -> Ids {
    let backends =
        state.backends.iter().filter_map(|(id, b)| Some((BackendIdent { ip: b.addr.ip(), port: b.port(), proto: Protocol::from_number(b.proto)? }, *id)));
    let frontends = state.revnat.iter().map(|(id, r)| (FrontendIdent { ip: r.addr.ip(), port: r.port() }, *id));
    Ids::restore(backends, frontends)
}
