//! The command line the scale benches share: `[SCALE ...] [--endpoints E] [--pool P]`, and
//! maps that keep nothing (the reconciler's own cost, without a kernel).

use sluice_core::{LbState, Op, Touched};
use sluice_datapath::{LbMaps, MapError};

pub struct ScaleArgs {
    pub scales: Vec<usize>,
    pub endpoints: usize,
    pub pool: usize,
}

/// Scales given as plain numbers (`_` and `,` allowed), 10,000 and 100,000 by default; cargo's
/// own `--bench` flag is skipped.
pub fn parse() -> ScaleArgs {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: usize| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut scales: Vec<usize> = Vec::new();
    let mut skip = false;
    for a in &args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a.starts_with("--") {
            skip = a != "--bench";
            continue;
        }
        if let Ok(n) = a.replace(['_', ','], "").parse() {
            scales.push(n);
        }
    }
    if scales.is_empty() {
        scales = vec![10_000, 100_000];
    }
    ScaleArgs { scales, endpoints: opt("--endpoints", 10), pool: opt("--pool", 150_000) }
}

pub struct NullMaps;

impl LbMaps for NullMaps {
    fn apply(&mut self, _: &Op) -> Result<(), MapError> {
        Ok(())
    }
    fn dump(&self) -> Result<LbState, MapError> {
        Ok(LbState::default())
    }
    fn read(&self, _: &Touched) -> Result<LbState, MapError> {
        Ok(LbState::default())
    }
}
