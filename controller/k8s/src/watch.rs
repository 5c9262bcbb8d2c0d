//! Cluster mode: kube-runtime watchers on every kind the agent reads, through one loop. Each
//! watcher buffers its (re)list and swaps it into the index whole at InitDone, so a relist never
//! exposes a half list.

use futures::{StreamExt, TryStreamExt};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use sluice_core::ObjectKey;
use sluice_core::model::{ServiceObject, SliceObject};
use sluice_crds::{PROXY_CONFIG_NAME, ProxyConfig, SourceBlocklist};

use crate::{Index, Shared};

/// Objects of another proxy and of headless Services are never sent to us (kube-proxy's filter).
pub const LABEL_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// How one kind's watch events change the index.
trait Indexed: Sized {
    /// What the index keeps of an object.
    type Kept;
    fn keep(obj: Self) -> Self::Kept;
    fn apply(index: &mut Index, obj: Self::Kept);
    fn delete(index: &mut Index, obj: &Self);
    /// A complete (re)list: what it lacks is gone.
    fn reset(index: &mut Index, all: Vec<Self::Kept>);
}

/// Services and EndpointSlices arrive decoded into what planning reads ([`sluice_core::model`]);
/// a list is buffered in that form, never as the API's whole objects.
impl Indexed for ServiceObject {
    type Kept = sluice_core::model::Service;
    fn keep(obj: Self) -> Self::Kept {
        obj.into_model()
    }
    fn apply(index: &mut Index, obj: Self::Kept) {
        index.apply_service(obj)
    }
    fn delete(index: &mut Index, obj: &Self) {
        index.delete_service(&ObjectKey::of(&obj.metadata))
    }
    fn reset(index: &mut Index, all: Vec<Self::Kept>) {
        index.reset_services(all)
    }
}

impl Indexed for SliceObject {
    type Kept = sluice_core::model::Slice;
    fn keep(obj: Self) -> Self::Kept {
        obj.into_model()
    }
    fn apply(index: &mut Index, obj: Self::Kept) {
        index.apply_slice(obj)
    }
    fn delete(index: &mut Index, obj: &Self) {
        index.delete_slice(&ObjectKey::of(&obj.metadata))
    }
    fn reset(index: &mut Index, all: Vec<Self::Kept>) {
        index.reset_slices(all)
    }
}

impl Indexed for SourceBlocklist {
    type Kept = Self;
    fn keep(obj: Self) -> Self {
        obj
    }
    fn apply(index: &mut Index, obj: Self) {
        index.apply_blocklist(obj)
    }
    fn delete(index: &mut Index, obj: &Self) {
        index.delete_blocklist(obj.metadata.name.as_deref().unwrap_or_default())
    }
    fn reset(index: &mut Index, all: Vec<Self>) {
        index.reset_blocklists(all)
    }
}

/// Watched by name: a list holds it or not.
impl Indexed for ProxyConfig {
    type Kept = Self;
    fn keep(obj: Self) -> Self {
        obj
    }
    fn apply(index: &mut Index, obj: Self) {
        index.set_proxy_config(Some(obj))
    }
    fn delete(index: &mut Index, _: &Self) {
        index.set_proxy_config(None)
    }
    fn reset(index: &mut Index, all: Vec<Self>) {
        index.set_proxy_config(all.into_iter().next())
    }
}

/// The agent's own Node, watched by name.
impl Indexed for k8s_openapi::api::core::v1::Node {
    type Kept = Self;
    fn keep(obj: Self) -> Self {
        obj
    }
    fn apply(index: &mut Index, obj: Self) {
        let facts = crate::NodeFacts::of(&obj);
        let zone_before = index.node.as_ref().map(|n| n.zone.clone());
        if index.set_node(facts.clone()) && zone_before != Some(facts.zone.clone()) {
            tracing::info!(zone = facts.zone.as_deref().unwrap_or("(none)"), "node zone: topology hints are read for it");
        }
    }
    fn delete(index: &mut Index, _: &Self) {
        index.set_node(crate::NodeFacts::GONE);
    }
    fn reset(index: &mut Index, all: Vec<Self>) {
        match all.first() {
            Some(node) => Self::apply(index, node.clone()),
            None => {
                // Not found is not "being deleted": /healthz keeps what it knew (eligible when it
                // never saw the Node), as kube-proxy does; only the zone is unknown.
                tracing::warn!("no Node object by this agent's node name: no zone, so no topology hints apply");
                let eligible = index.node.as_ref().is_none_or(|n| n.eligible);
                index.set_node(crate::NodeFacts { zone: None, eligible });
            }
        }
    }
}

/// Retry delays for a broken watch, as client-go's reflector (kube-proxy's) has them: 800 ms
/// doubling to 30 s, each stretched by a random factor of 1 to 2 so the watches of a thousand
/// nodes do not hit a recovering apiserver in step. A shorter ceiling (this was 2 s once) put
/// every node's re-list on an apiserver already struggling every 2 s.
///
/// That schedule is for errors the apiserver answered (403 while its authorizer warms up, 429,
/// 5xx): those retries are its load. A request that reached no apiserver (connection refused,
/// reset, timed out) cost it nothing, so [`Guarded`] retries those on [`Self::unreachable`]'s
/// schedule, capped at 4 s, without advancing this one: a node is back within seconds of an
/// apiserver restart instead of up to 30 s (60 s in client-go, whose jitter comes after its cap)
/// later, and the first refusals of a restarted apiserver are retried from 800 ms again.
pub struct CatchUpBackoff {
    next: std::time::Duration,
    max: std::time::Duration,
}

impl CatchUpBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(800);
    const MAX: std::time::Duration = std::time::Duration::from_secs(30);

    /// For the optional sluice.dev watches: a cluster without the CRDs (or without the RBAC
    /// for them) is retried once a minute, not hammered.
    pub fn optional() -> Self {
        CatchUpBackoff { next: Self::FIRST, max: std::time::Duration::from_secs(60) }
    }

    /// For requests that reached no apiserver.
    fn unreachable() -> Self {
        CatchUpBackoff { next: Self::FIRST, max: std::time::Duration::from_secs(4) }
    }
}

/// Whether the apiserver answered the request that failed (see [`CatchUpBackoff`]): an error
/// status, or a response it sent that could not be read as one. Transport errors (no connection,
/// a reset stream, a timeout) are the ones it did not answer.
fn answered_by_apiserver(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => true,
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            !matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_))
        }
    }
}

impl Default for CatchUpBackoff {
    fn default() -> Self {
        CatchUpBackoff { next: Self::FIRST, max: Self::MAX }
    }
}

impl Iterator for CatchUpBackoff {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<std::time::Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let jitter = 1.0 + f64::from(nanos % 1000) / 1000.0;
        Some(base.mul_f64(jitter).min(self.max))
    }
}

impl Backoff for CatchUpBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Counts of Kubernetes client errors, for logs now and metrics later.
#[derive(Debug, Default)]
pub struct ClientErrors(pub std::sync::atomic::AtomicU64);

/// One watch: which objects, and how hard to retry.
struct WatchSpec {
    kind: &'static str,
    config: watcher::Config,
    /// The sluice.dev kinds: a cluster without the CRDs (or their RBAC) still gets its Services
    /// programmed, so their errors are said once and retried slowly.
    optional: bool,
}

impl WatchSpec {
    /// Services and EndpointSlices, listed in pages of 5,000 instead of 500: ten times fewer
    /// round trips for a large cluster. A paged list is a consistent read (kube-rs sends no
    /// resourceVersion=0 with a page size, and the apiserver would ignore the limit with it): the
    /// apiserver serves it from its watch cache once that has caught up with etcd, else from etcd.
    /// (This asked for resourceVersion 0 once, as client-go's informers do, which never reached
    /// the apiserver.)
    fn proxied(kind: &'static str) -> WatchSpec {
        WatchSpec { kind, config: watcher::Config::default().labels(LABEL_SELECTOR).page_size(5_000), optional: false }
    }
    fn named(kind: &'static str, name: &str, optional: bool) -> WatchSpec {
        WatchSpec { kind, config: watcher::Config::default().fields(&format!("metadata.name={name}")), optional }
    }
}

async fn run_one<K>(api: Api<K>, spec: WatchSpec, shared: Shared, errors: std::sync::Arc<ClientErrors>)
where
    K: Indexed + kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let WatchSpec { kind, config, optional } = spec;
    let backoff = if optional { CatchUpBackoff::optional() } else { CatchUpBackoff::default() };
    let mut stream = Guarded::new(kind, backoff, move || watcher::watcher(api.clone(), config.clone()).boxed());
    let mut buffer: Vec<K::Kept> = Vec::new();
    let mut warned = false;
    loop {
        match stream.next().await {
            Ok(Some(Event::Init)) => buffer.clear(),
            Ok(Some(Event::InitApply(obj))) => buffer.push(K::keep(obj)),
            Ok(Some(Event::InitDone)) => {
                let all = std::mem::take(&mut buffer);
                tracing::info!(kind, count = all.len(), "initial list complete");
                shared.update(|i| K::reset(i, all));
            }
            Ok(Some(Event::Apply(obj))) => {
                let kept = K::keep(obj);
                shared.update(|i| K::apply(i, kept))
            }
            Ok(Some(Event::Delete(obj))) => shared.update(|i| K::delete(i, &obj)),
            Ok(None) => {
                tracing::error!(kind, "watch stream ended");
                return;
            }
            Err(e) if optional => {
                if !warned {
                    tracing::warn!(kind, "watch failed (is the CRD installed?), retrying: {e}");
                    warned = true;
                }
            }
            Err(e) => {
                errors.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The backoff wrapper retries; the index keeps serving the last known state.
                tracing::warn!(kind, "watch error (retrying): {e}");
            }
        }
    }
}

/// How long a watch may stay silent after an error before it is replaced by a fresh list.
const SILENT_AFTER_ERROR: std::time::Duration = std::time::Duration::from_secs(10);
/// After an error, the lists that check the first list that succeeds: this long after it, then
/// this long after the one before.
const CHECK_LISTS: [std::time::Duration; 2] = [std::time::Duration::from_secs(60), std::time::Duration::from_secs(120)];

/// A watcher's events.
pub type EventStream<K> = futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// A watcher's events with [`Guarded`]'s retries (spaced out as client-go's reflector spaces
/// them; a watch silent after an error listed again), for a reflector. `start` makes a watcher
/// without a backoff of its own.
pub fn guarded<K: Send + 'static>(kind: &'static str, backoff: CatchUpBackoff, start: impl Fn() -> EventStream<K> + Send + 'static) -> EventStream<K> {
    futures::stream::unfold(Guarded::new(kind, backoff, start), |mut guarded| async move {
        match guarded.next().await {
            Ok(None) => None,
            Ok(Some(event)) => Some((Ok(event), guarded)),
            Err(e) => Some((Err(e), guarded)),
        }
    })
    .boxed()
}

/// A kube-runtime watcher with its retries spaced out, that must answer soon after an error.
///
/// Retries: after each error the next request waits for `backoff` (0.8 s doubling to 30 s, as
/// client-go's reflector), and only an answer from the apiserver (an object, the end of a list, a
/// watch event) starts the backoff over. kube-runtime's own stream backoff cannot be used: it
/// starts over on any `Ok`, and the watcher yields `Event::Init` before each list, before asking
/// anything; so a list refused again and again (403 while a restarted apiserver's authorizer
/// warms up, or for as long as the RBAC is missing) was retried every 0.8–1.6 s forever.
///
/// Silence: after an error the watcher retries the watch it had; right after an apiserver
/// restart such a retry (after a 403 while the restarted apiserver's authorizer warmed up) has
/// never answered, and kube-runtime only gives up on a silent watch after its 290 s timeout. So a
/// watch that yields nothing within `SILENT_AFTER_ERROR` of its retry is dropped and started
/// again, with a fresh list (the backoff goes on where it was).
///
/// Checks: in CI, an agent's list made 2 s after a Service was created, right after an apiserver
/// restart, came back without it (two nodes, two such runs; the restarted apiserver's watch
/// cache catching up, as kubernetes/kubernetes#97294 describes). Whether the watch that followed
/// would have brought it was not seen (the suite's wait was broken then). An event the cache
/// skips stays lost until the next list, which a client-go informer makes only after an error.
/// So after an error, the list that succeeds is checked by two more, 60 s and 180 s after it,
/// whatever the watch brings: two lists per watch per outage bound such a gap to about a minute.
struct Guarded<K> {
    kind: &'static str,
    start: Box<dyn Fn() -> EventStream<K> + Send>,
    stream: EventStream<K>,
    backoff: CatchUpBackoff,
    unreachable: CatchUpBackoff,
    /// When the retry after the last error may be made.
    retry_at: Option<tokio::time::Instant>,
    deadline: Option<tokio::time::Instant>,
    /// The check lists still to make after the last error, and when the next one is due.
    checks: &'static [std::time::Duration],
    check_at: Option<tokio::time::Instant>,
}

impl<K: 'static> Guarded<K> {
    /// `start` makes a watcher without a backoff of its own.
    fn new(kind: &'static str, backoff: CatchUpBackoff, start: impl Fn() -> EventStream<K> + Send + 'static) -> Self {
        let stream = start();
        Guarded {
            kind,
            start: Box::new(start),
            stream,
            backoff,
            unreachable: CatchUpBackoff::unreachable(),
            retry_at: None,
            deadline: None,
            checks: &[],
            check_at: None,
        }
    }

    async fn next(&mut self) -> Result<Option<Event<K>>, watcher::Error> {
        if let Some(at) = self.retry_at.take() {
            tokio::time::sleep_until(at).await;
        }
        loop {
            let next = tokio::select! {
                next = self.stream.try_next() => next,
                _ = sleep_until_some(self.check_at) => {
                    self.check_at = None;
                    tracing::info!(kind = self.kind, "listing again to check the list made after the last error (a restarted apiserver has lost events)");
                    self.stream = (self.start)();
                    continue;
                }
                _ = sleep_until_some(self.deadline) => {
                    self.deadline = None;
                    tracing::warn!(kind = self.kind, "the watch gave nothing within {SILENT_AFTER_ERROR:?} of its retry after an error: listing again");
                    self.stream = (self.start)();
                    continue;
                }
            };
            match &next {
                // A (re)list begins: nothing has been asked of the apiserver yet.
                Ok(Some(Event::Init)) => {}
                Ok(Some(Event::InitDone)) => {
                    self.backoff.reset();
                    self.unreachable.reset();
                    self.deadline = None;
                    if let Some((next, rest)) = self.checks.split_first() {
                        self.check_at = Some(tokio::time::Instant::now() + *next);
                        self.checks = rest;
                    }
                }
                Ok(_) => {
                    self.backoff.reset();
                    self.unreachable.reset();
                    self.deadline = None;
                }
                Err(e) => {
                    let delay = self.delay_after(e);
                    let now = tokio::time::Instant::now();
                    self.retry_at = Some(now + delay);
                    self.deadline = Some(now + delay + SILENT_AFTER_ERROR);
                    self.checks = &CHECK_LISTS;
                    self.check_at = None;
                }
            }
            return next;
        }
    }
}

impl<K> Guarded<K> {
    fn delay_after(&mut self, error: &watcher::Error) -> std::time::Duration {
        let schedule = if answered_by_apiserver(error) { &mut self.backoff } else { &mut self.unreachable };
        schedule.next().unwrap_or(CatchUpBackoff::MAX)
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches the DaemonSet that runs this agent and sets `removed` once it is gone or being
/// deleted (helm uninstall deletes it before its pods; the chart's RBAC goes at the same time,
/// so the answer must already be known when the agent is told to stop). A DaemonSet never seen
/// is not "removed": an agent started some other way keeps its datapath.
pub async fn run_owner_daemonset(client: Client, namespace: String, name: String, removed: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    let api: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = Guarded::new("DaemonSet", CatchUpBackoff::default(), move || watcher::watcher(api.clone(), config.clone()).boxed());
    let (mut seen, mut seen_in_list) = (false, false);
    loop {
        match stream.next().await {
            Ok(Some(Event::Init)) => seen_in_list = false,
            Ok(Some(Event::InitApply(ds) | Event::Apply(ds))) => {
                seen = true;
                seen_in_list = true;
                if ds.metadata.deletion_timestamp.is_some() {
                    removed.store(true, Ordering::SeqCst);
                }
            }
            Ok(Some(Event::InitDone)) => {
                if seen && !seen_in_list {
                    removed.store(true, Ordering::SeqCst);
                }
            }
            Ok(Some(Event::Delete(_))) => removed.store(true, Ordering::SeqCst),
            Ok(None) => return,
            // Not debug: while this watch is down, an uninstall would leave the datapath behind,
            // and this line is what tells that apart from a late event.
            Err(e) => tracing::warn!(daemonset = %name, "watching the agent's DaemonSet (retrying): {e}"),
        }
        if removed.load(Ordering::SeqCst) {
            tracing::info!(daemonset = %format!("{namespace}/{name}"), "the agent's DaemonSet is being removed: the datapath goes when the agent stops");
            return;
        }
    }
}

/// Asked once as the agent stops, when the watch above has not seen the agent's DaemonSet go
/// (it may have been between two requests, or started after the delete): `Some(true)` when the
/// DaemonSet is gone or being deleted, `Some(false)` when it stays, `None` when the apiserver
/// did not say (helm may already have deleted the Role that lets the agent ask: a 403).
pub async fn owner_daemonset_gone(client: Client, namespace: &str, name: &str) -> Option<bool> {
    let api: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client, namespace);
    match api.get_opt(name).await {
        Ok(None) => Some(true),
        Ok(Some(ds)) => Some(ds.metadata.deletion_timestamp.is_some()),
        Err(e) => {
            tracing::warn!(daemonset = %format!("{namespace}/{name}"), "asking whether the agent's DaemonSet is being removed: {e}");
            None
        }
    }
}

/// Runs the watchers until the process ends. With a node name, the first plan also waits for
/// that Node (its zone).
///
/// The sluice.dev kinds are read as their typed CRDs: the apiserver validates every object
/// against the schema generated from the same types, so an object that does not deserialize
/// means the CRDs and the agent come from different releases, which the chart does not do.
pub async fn run(client: Client, node_name: Option<String>, shared: Shared, errors: std::sync::Arc<ClientErrors>) {
    if node_name.is_some() {
        shared.index.lock().expect("index lock").expect_node();
    }
    let node = {
        let (api, shared, errors) = (Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()), shared.clone(), errors.clone());
        async move {
            if let Some(name) = node_name {
                run_one(api, WatchSpec::named("Node", &name, false), shared, errors).await
            }
        }
    };
    let services = run_one(Api::<ServiceObject>::all(client.clone()), WatchSpec::proxied("Service"), shared.clone(), errors.clone());
    let slices = run_one(Api::<SliceObject>::all(client.clone()), WatchSpec::proxied("EndpointSlice"), shared.clone(), errors.clone());
    let blocklists = run_one(
        Api::<SourceBlocklist>::all(client.clone()),
        WatchSpec { kind: "SourceBlocklist", config: watcher::Config::default(), optional: true },
        shared.clone(),
        errors.clone(),
    );
    let proxy_config =
        run_one(Api::<ProxyConfig>::all(client.clone()), WatchSpec::named("ProxyConfig", PROXY_CONFIG_NAME, true), shared.clone(), errors);
    futures::join!(node, services, slices, blocklists, proxy_config);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_thirty_seconds_as_client_go_and_resets() {
        let mut b = CatchUpBackoff::default();
        let delays: Vec<_> = (&mut b).take(10).collect();
        assert!(delays[0] >= std::time::Duration::from_millis(800) && delays[0] < std::time::Duration::from_millis(1600), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= std::time::Duration::from_secs(30)), "{delays:?}");
        assert_eq!(delays[9], std::time::Duration::from_secs(30), "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() < std::time::Duration::from_millis(1600));
    }

    /// The catch-up after an apiserver restart: a minute of refused connections, then refusals
    /// the restarted apiserver answers.
    #[tokio::test]
    async fn an_unreachable_apiserver_is_retried_within_seconds_and_its_first_answers_from_the_start() {
        let mut guarded: Guarded<()> = Guarded::new("test", CatchUpBackoff::default(), || futures::stream::empty().boxed());
        let refused = || {
            let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            watcher::Error::InitialListFailed(kube::Error::Service(Box::new(io)))
        };
        let forbidden = || watcher::Error::InitialListFailed(kube::Error::Api(kube::core::Status::failure("forbidden", "Forbidden").with_code(403).boxed()));
        let unreachable: Vec<_> = (0..20).map(|_| guarded.delay_after(&refused())).collect();
        assert!(unreachable.iter().all(|d| *d <= std::time::Duration::from_secs(4)), "{unreachable:?}");
        let answered: Vec<_> = (0..10).map(|_| guarded.delay_after(&forbidden())).collect();
        assert!(answered[0] < std::time::Duration::from_millis(1600), "{answered:?}");
        assert_eq!(answered[9], std::time::Duration::from_secs(30), "{answered:?}");
        // A request that reaches no apiserver does not wait for the answered schedule.
        assert!(guarded.delay_after(&refused()) <= std::time::Duration::from_secs(4));
    }
}
