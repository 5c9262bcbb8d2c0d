//! How full each datapath map is, for metrics and the SluiceNode status, without reading the
//! maps on every scrape: the planned maps' sizes come from the planned state after each successful
//! sync, and the LRU maps (which only a key walk can count) are counted once a minute, by a
//! thread of their own. A periodic full dump of tens of thousands of entries would steal CPU
//! from the very traffic the node serves, and the walk of conntrack tables of millions of
//! entries takes seconds, which no scrape or status write waits for.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (map name, entries, capacity)
pub type Usage = (&'static str, usize, u32);

const LRU_REFRESH: Duration = Duration::from_secs(60);

pub struct MapUsage {
    root: PathBuf,
    planned: Mutex<Vec<Usage>>,
    lru: Mutex<Vec<Usage>>,
}

impl MapUsage {
    /// The usage of the maps under `root`, with the thread that counts the LRU maps (it ends
    /// when the last handle is dropped).
    pub fn new(root: PathBuf) -> std::io::Result<Arc<MapUsage>> {
        let usage = Arc::new(MapUsage { root, planned: Mutex::default(), lru: Mutex::default() });
        let weak = Arc::downgrade(&usage);
        std::thread::Builder::new().name("lru-usage".into()).spawn(move || {
            while let Some(usage) = weak.upgrade() {
                let counted = sluice_datapath::report::lru_usage(&usage.root);
                *usage.lru.lock().expect("usage") = counted;
                drop(usage);
                std::thread::sleep(LRU_REFRESH);
            }
        })?;
        Ok(usage)
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn set_planned(&self, usage: Vec<Usage>) {
        *self.planned.lock().expect("usage") = usage;
    }

    /// The planned maps as of the last sync, the LRU maps as of their last count.
    pub fn snapshot(&self) -> Vec<Usage> {
        let mut out = self.planned.lock().expect("usage").clone();
        out.extend(self.lru.lock().expect("usage").iter().copied());
        out
    }
}
