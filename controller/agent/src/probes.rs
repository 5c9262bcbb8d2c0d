//! /healthz, /livez and /readyz with kube-proxy's meaning: healthy unless a change has been
//! waiting longer than the timeout without being applied; ready once the first full sync is done.
//! /livez differs in one way: a sync that keeps failing (a kernel refusing a write, say) fails
//! /healthz but not /livez while the agent keeps trying, since a restart would not fix it and
//! the kubelet would restart the agent on every node in a loop; /livez fails when the sync
//! loop itself stops.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// kube-proxy uses twice its sync period (2 × 30 s).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Inner {
    /// The oldest change not yet applied.
    queued: Option<Instant>,
    last_updated: Option<SystemTime>,
    /// When the loop last tried to apply what was queued, whether it worked or not.
    last_attempt: Option<Instant>,
    synced_once: bool,
    /// False while this node's Node object is being deleted (or is marked for deletion by the
    /// cluster autoscaler); None until it has been seen.
    node_eligible: Option<bool>,
}

#[derive(Default)]
pub struct Probes {
    inner: Mutex<Inner>,
}

impl Probes {
    pub fn queued(&self) {
        self.inner.lock().expect("probes").queued.get_or_insert_with(Instant::now);
    }

    /// A sync was tried and failed; it will be tried again.
    pub fn attempted(&self) {
        self.inner.lock().expect("probes").last_attempt = Some(Instant::now());
    }

    pub fn updated(&self) {
        let mut i = self.inner.lock().expect("probes");
        i.last_attempt = Some(Instant::now());
        i.queued = None;
        i.last_updated = Some(SystemTime::now());
        i.synced_once = true;
    }

    pub fn healthy(&self, timeout: Duration) -> bool {
        self.inner.lock().expect("probes").queued.is_none_or(|q| q.elapsed() <= timeout)
    }

    /// What /livez says: changes are applied in time, or the loop at least keeps trying.
    pub fn alive(&self, timeout: Duration) -> bool {
        let i = self.inner.lock().expect("probes");
        i.queued.is_none_or(|q| q.elapsed() <= timeout) || i.last_attempt.is_some_and(|a| a.elapsed() <= timeout)
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        let before = self.inner.lock().expect("probes").node_eligible.replace(eligible);
        if before.is_some_and(|b| b != eligible) || (before.is_none() && !eligible) {
            tracing::info!(eligible, "node eligibility for traffic changed (/healthz follows it)");
        }
    }

    /// What /healthz says: keeping up with changes, and the Node not going away.
    pub fn proxy_healthy(&self) -> bool {
        self.healthy(HEALTH_TIMEOUT) && self.inner.lock().expect("probes").node_eligible != Some(false)
    }

    pub fn ready(&self) -> bool {
        self.inner.lock().expect("probes").synced_once
    }

    pub fn respond(&self, path: &str) -> crate::http::Response {
        use crate::http::Response;
        let (ok, body) = match path {
            "/healthz" | "/livez" => {
                let i = self.inner.lock().expect("probes");
                // /healthz also fails while the node is going away, so load balancers drain it
                // first (kube-proxy, KEP-3836); /livez only says whether the agent keeps up.
                let eligible = i.node_eligible.unwrap_or(true);
                // RFC 3339, as kube-proxy writes them.
                let stamp = |t: Option<SystemTime>| t.and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok()).map(|t| t.to_string()).unwrap_or_default();
                let mut body = serde_json::json!({
                    "lastUpdated": stamp(i.last_updated),
                    "currentTime": stamp(Some(SystemTime::now())),
                });
                let node_ok = path == "/livez" || eligible;
                if path == "/healthz" {
                    body["nodeEligible"] = eligible.into();
                }
                drop(i);
                let ok = if path == "/livez" { self.alive(HEALTH_TIMEOUT) } else { self.healthy(HEALTH_TIMEOUT) && node_ok };
                (ok, body.to_string())
            }
            "/readyz" => {
                let ready = self.ready();
                let body = if ready { "ok\n" } else { "waiting for the first full sync\n" };
                let status = if ready { "200 OK" } else { "503 Service Unavailable" };
                return Response::new(status, "text/plain", body.into());
            }
            _ => return Response::new("404 Not Found", "text/plain", "not found\n".into()),
        };
        Response::new(if ok { "200 OK" } else { "503 Service Unavailable" }, "application/json", body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_only_while_a_change_waits_too_long() {
        let p = Probes::default();
        assert!(p.healthy(Duration::ZERO), "nothing queued");
        assert!(!p.ready());
        p.queued();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!p.healthy(Duration::from_millis(1)));
        assert!(p.healthy(Duration::from_secs(1)));
        p.updated();
        assert!(p.healthy(Duration::ZERO));
        assert!(p.ready());
        assert!(p.respond("/readyz").status.starts_with("200"));
        assert!(p.respond("/nope").status.starts_with("404"));
    }

    #[test]
    fn a_sync_that_keeps_failing_fails_healthz_but_not_livez_while_the_loop_retries() {
        let p = Probes::default();
        p.queued();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!p.alive(Duration::from_millis(10)), "queued long ago, nothing tried: the loop is stuck");
        p.attempted();
        assert!(!p.healthy(Duration::from_millis(10)), "the change is still not applied");
        assert!(p.alive(Duration::from_millis(10)), "but the loop keeps trying: a restart would not help");
        std::thread::sleep(Duration::from_millis(20));
        assert!(!p.alive(Duration::from_millis(10)), "no attempt for a while: stuck after all");
        p.updated();
        assert!(p.alive(Duration::ZERO) && p.healthy(Duration::ZERO));
    }

    #[test]
    fn healthz_fails_while_the_node_goes_away_and_livez_does_not() {
        let p = Probes::default();
        p.updated();
        assert!(p.respond("/healthz").status.starts_with("200"), "unknown node: eligible");
        p.set_node_eligible(false);
        let r = p.respond("/healthz");
        assert!(r.status.starts_with("503"));
        assert!(r.body.contains("\"nodeEligible\":false"), "{}", r.body);
        assert!(p.respond("/livez").status.starts_with("200"));
        p.set_node_eligible(true);
        assert!(p.respond("/healthz").status.starts_with("200"));
    }
}
