//! How full each datapath map is, for metrics and the SluiceNode status, without reading the
//! maps on every scrape: the planned maps' sizes come from the reconciler's mirror after each
//! sync, and the LRU maps (which only a key walk can count) are counted at most once a minute.
//! A periodic full dump of tens of thousands of entries would steal CPU from the very traffic
//! the node serves.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// (map name, entries, capacity)
pub type Usage = (&'static str, usize, u32);

const LRU_REFRESH: Duration = Duration::from_secs(60);

pub struct MapUsage {
    root: PathBuf,
    planned: Mutex<Vec<Usage>>,
    lru: Mutex<Option<(Instant, Vec<Usage>)>>,
}

impl MapUsage {
    pub fn new(root: PathBuf) -> MapUsage {
        MapUsage { root, planned: Mutex::default(), lru: Mutex::default() }
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn set_planned(&self, usage: Vec<Usage>) {
        *self.planned.lock().expect("usage") = usage;
    }

    pub fn snapshot(&self) -> Vec<Usage> {
        let mut out = self.planned.lock().expect("usage").clone();
        let mut lru = self.lru.lock().expect("usage");
        if lru.as_ref().is_none_or(|(at, _)| at.elapsed() >= LRU_REFRESH) {
            *lru = Some((Instant::now(), sluice_datapath::report::lru_usage(&self.root)));
        }
        out.extend(lru.as_ref().map(|(_, v)| v.clone()).unwrap_or_default());
        out
    }
}
