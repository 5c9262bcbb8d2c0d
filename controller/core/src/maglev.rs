//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of M entries per
//! frontend scope, each naming a backend, filled so every backend gets an almost equal share and
//! a backend coming or going moves only about its own share of the entries. The datapath hashes
//! a flow's addresses and ports into the table, so every node picks the same backend for the
//! same flow (a load balancer may spread one client's packets over several nodes) and a flow
//! whose node forgot it (an agent restart with a fresh conntrack, a failover) lands where it was.

/// Table size: a prime, as the algorithm needs; about 100 entries per backend up to 10 backends.
pub const M: usize = sluice_abi::MAGLEV_M;

/// FNV-1a, 64 bits: stable across Rust releases and machines (std's hasher is neither), so
/// every agent computes the same table for the same backends.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The table for backends named by `names` (stable identities, e.g. "10.244.1.5:8080/TCP"),
/// each entry an index into `names`. Empty when there are no backends.
pub fn table(names: &[String]) -> Vec<u32> {
    let n = names.len();
    if n == 0 {
        return Vec::new();
    }
    // Sorted by name, so the table does not depend on the order endpoints were listed in.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| names[*a].cmp(&names[*b]));
    let perm: Vec<(usize, usize)> = order
        .iter()
        .map(|&i| {
            let offset = (fnv1a(names[i].as_bytes(), 0x5eed_0001) % M as u64) as usize;
            let skip = (fnv1a(names[i].as_bytes(), 0x5eed_0002) % (M as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; n];
    let mut entry = vec![u32::MAX; M];
    let mut filled = 0;
    'fill: loop {
        for (slot, &i) in order.iter().enumerate() {
            let (offset, skip) = perm[slot];
            let mut c = (offset + next[slot] * skip) % M;
            while entry[c] != u32::MAX {
                next[slot] += 1;
                c = (offset + next[slot] * skip) % M;
            }
            entry[c] = i as u32;
            next[slot] += 1;
            filled += 1;
            if filled == M {
                break 'fill;
            }
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("10.244.{}.{}:8080/TCP", i / 250, i % 250)).collect()
    }

    #[test]
    fn every_backend_gets_an_almost_equal_share() {
        for n in [1, 2, 3, 7, 10, 50] {
            let t = table(&names(0..n));
            assert_eq!(t.len(), M);
            let mut counts = vec![0usize; n as usize];
            for e in &t {
                counts[*e as usize] += 1;
            }
            let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            assert!(min > 0, "n={n}: a backend got no entry");
            // Maglev's guarantee: shares differ by at most one "round" of the fill.
            assert!(max - min <= M / n as usize / 2 + 2, "n={n}: shares {min}..{max}");
        }
    }

    #[test]
    fn a_backend_leaving_moves_little_more_than_its_own_share() {
        let all = names(0..10);
        let before = table(&all);
        let without: Vec<String> = all.iter().filter(|n| *n != &all[3]).cloned().collect();
        let after = table(&without);
        let name_before = |e: u32| &all[e as usize];
        let name_after = |e: u32| &without[e as usize];
        let moved = (0..M).filter(|&i| name_before(before[i]) != name_after(after[i])).count();
        let own = before.iter().filter(|e| **e == 3).count();
        assert!(moved >= own, "the leaver's entries must move");
        // The paper reports a few percent beyond the leaver's own share.
        assert!(moved <= own + M / 10, "moved {moved} entries, the leaver held {own}");
    }

    /// The first entries of the table for backends 10.244.0.0-4:8080/TCP, as computed when the
    /// algorithm was written.
    const PINNED: [u32; 12] = [4, 0, 0, 4, 1, 0, 3, 4, 3, 1, 3, 4];

    #[test]
    fn the_order_of_endpoints_does_not_matter_and_the_table_is_stable() {
        let a = names(0..5);
        let mut b = a.clone();
        b.reverse();
        let (ta, tb) = (table(&a), table(&b));
        assert!((0..M).all(|i| a[ta[i] as usize] == b[tb[i] as usize]));
        // Pinned, so every agent version computes the same table (a change here moves flows).
        let first: Vec<u32> = ta[..12].to_vec();
        assert_eq!(first, PINNED);
    }
}
