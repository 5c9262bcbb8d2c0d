//! The contents of the load-balancing maps as plain data: what the planner wants, what the
//! reconciler believes is in the kernel, and what the CLI reads back are all an [`LbState`].

use std::collections::BTreeMap;

use sluice_abi::{Backend, FrontendName, RevNatValue, SvcKey, SvcValue};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbState {
    pub services: BTreeMap<SvcKey, SvcValue>,
    pub backends: BTreeMap<u32, Backend>,
    pub revnat: BTreeMap<u32, RevNatValue>,
    pub names: BTreeMap<u32, FrontendName>,
}

impl LbState {
    pub fn entry_count(&self) -> usize {
        self.services.len() + self.backends.len() + self.revnat.len() + self.names.len()
    }
}
