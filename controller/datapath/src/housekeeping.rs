//! What a sync leaves behind for the agent to clean: north-south conntrack entries of UDP
//! backends that left, connected UDP sockets socket-LB can no longer serve, and sessionAffinity
//! entries naming a backend that left its group. Each is a walk (of an LRU map of up to 262,144
//! entries, or of every network namespace's sockets), so one worker thread does them, off the
//! sync loop: a sync only hands over a description of the work and goes on. Work handed over
//! while the worker is busy is merged into one job, so a burst of syncs costs one walk.

use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, Sender, channel};

use sluice_abi::Addr;

use crate::conntrack::AffinityMembers;
use crate::sockets::StaleUdp;

/// One round of cleaning.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// UDP backends (address, port) no Service has any more: their conntrack entries go, so the
    /// next datagram of such a flow is balanced again (kube-proxy's conntrack clean-up).
    pub gone_udp: BTreeSet<(Addr, u16)>,
    pub stale_sockets: StaleUdp,
    /// Affinity groups to check, with their members as of the sync that handed them over.
    pub affinity: AffinityMembers,
}

impl Cleanup {
    pub fn is_empty(&self) -> bool {
        self.gone_udp.is_empty() && self.stale_sockets.is_empty() && self.affinity.is_empty()
    }

    /// Adds a later round: sets add up; a group's members are the later sync's.
    pub fn merge(&mut self, later: Cleanup) {
        self.gone_udp.extend(later.gone_udp);
        self.stale_sockets.gone_backends.extend(later.stale_sockets.gone_backends);
        self.stale_sockets.woken_frontends.extend(later.stale_sockets.woken_frontends);
        self.affinity.extend(later.affinity);
    }
}

/// The worker. Dropping it lets the thread finish its job and end.
pub struct Housekeeper {
    jobs: Sender<Cleanup>,
}

impl Housekeeper {
    /// Starts the worker thread; `work` does one (merged) round.
    pub fn spawn(mut work: impl FnMut(&Cleanup) + Send + 'static) -> std::io::Result<Housekeeper> {
        let (jobs, rx): (Sender<Cleanup>, Receiver<Cleanup>) = channel();
        std::thread::Builder::new().name("housekeeping".into()).spawn(move || {
            while let Ok(mut job) = rx.recv() {
                while let Ok(more) = rx.try_recv() {
                    job.merge(more);
                }
                work(&job);
            }
        })?;
        Ok(Housekeeper { jobs })
    }

    /// Hands a round over; never waits for the worker.
    pub fn submit(&self, job: Cleanup) {
        if !job.is_empty() {
            // The worker only stops when this Housekeeper is dropped.
            let _ = self.jobs.send(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    fn gone(port: u16) -> Cleanup {
        Cleanup { gone_udp: [(Addr::default(), port)].into(), ..Default::default() }
    }

    #[test]
    fn a_slow_walk_never_holds_up_the_sync_and_what_queued_meanwhile_is_done_in_one_round() {
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let seen = rounds.clone();
        let keeper = Housekeeper::spawn(move |job| {
            std::thread::sleep(Duration::from_millis(300));
            seen.lock().unwrap().push(job.gone_udp.iter().map(|(_, p)| *p).collect::<Vec<_>>());
        })
        .unwrap();
        let t = Instant::now();
        keeper.submit(gone(1));
        std::thread::sleep(Duration::from_millis(50));
        for port in 2..=4 {
            keeper.submit(gone(port));
        }
        keeper.submit(Cleanup::default());
        assert!(t.elapsed() < Duration::from_millis(200), "submitting waited for the walk: {:?}", t.elapsed());
        let deadline = Instant::now() + Duration::from_secs(5);
        while rounds.lock().unwrap().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(*rounds.lock().unwrap(), vec![vec![1], vec![2, 3, 4]]);
    }

    #[test]
    fn a_later_round_s_members_replace_an_earlier_one_s() {
        let mut a = Cleanup { affinity: [((7, 0), [1, 2].into())].into(), ..Default::default() };
        a.merge(Cleanup { affinity: [((7, 0), [2].into()), ((8, 1), [5].into())].into(), ..Default::default() });
        assert_eq!(a.affinity, [((7, 0), [2].into()), ((8, 1), [5].into())].into());
    }
}
