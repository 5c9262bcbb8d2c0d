//! The watches against a mock apiserver (tower-test): what the index holds after the lists, and
//! the guard that replaces a watch left silent after an error with a fresh list (an apiserver
//! that restarted once answered a retried watch never; see `Guarded`). Time is paused, so the
//! guard's 10 s pass at once.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use sluice_k8s::{Shared, watch};

fn service(name: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"name": name, "namespace": "demo", "resourceVersion": "1"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}})
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    Response::builder().status(status).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()
}

fn list(kind: &str, version: &str, items: Vec<serde_json::Value>) -> Response<Body> {
    json(StatusCode::OK, serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": version}, "items": items}))
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    json(code, serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "message": reason, "code": code.as_u16()}))
}

/// The agent's watches against a mock apiserver: the handle answers their requests.
fn watching_a_mock_apiserver() -> (tower_test::mock::Handle<Request<Body>, Response<Body>>, Shared, Arc<watch::ClientErrors>, tokio::task::JoinHandle<()>) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let shared = Shared::default();
    let errors = Arc::new(watch::ClientErrors::default());
    let watches = tokio::spawn(watch::run(client, None, shared.clone(), errors.clone()));
    (handle, shared, errors, watches)
}

#[tokio::test(start_paused = true)]
async fn a_watch_silent_after_an_error_is_replaced_by_a_fresh_list() {
    let (handle, shared, errors, watches) = watching_a_mock_apiserver();

    let started = tokio::time::Instant::now();
    let apiserver = tokio::spawn(async move {
        let mut handle = pin!(handle);
        // Requests that are never answered: a watch that hangs.
        let mut held = Vec::new();
        let (mut service_lists, mut service_watches) = (0, 0);
        while let Some((request, reply)) = handle.next_request().await {
            let uri = request.uri().to_string();
            let watching = uri.contains("watch=true");
            if uri.starts_with("/api/v1/services") {
                match (watching, service_lists, service_watches) {
                    (false, 0, _) => reply.send_response(list("ServiceList", "10", vec![service("a")])),
                    (false, _, _) => reply.send_response(list("ServiceList", "20", vec![service("a"), service("b")])),
                    // The restarted apiserver's first answer, while its authorizer warms up.
                    (true, _, 0) => reply.send_response(status(StatusCode::FORBIDDEN, "Forbidden")),
                    (true, _, _) => held.push(reply),
                }
                if watching {
                    service_watches += 1;
                } else {
                    service_lists += 1;
                }
            } else if uri.starts_with("/apis/discovery.k8s.io/v1/endpointslices") {
                if watching { held.push(reply) } else { reply.send_response(list("EndpointSliceList", "10", vec![])) }
            } else {
                // The sluice.dev CRDs are not installed: those watches retry quietly.
                reply.send_response(status(StatusCode::NOT_FOUND, "NotFound"));
            }
            if service_lists == 2 {
                return (service_watches, held.len());
            }
        }
        panic!("the client went away");
    });

    let (watches_before_relist, _) = apiserver.await.unwrap();
    assert_eq!(watches_before_relist, 2, "the watch was retried once and that retry hung");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(10), "the guard waited out its 10 s: {waited:?}");
    // Without the guard, only kube-runtime's own watch timeout (290 s) would list again.
    assert!(waited < Duration::from_secs(30), "the guard, not a timeout, listed again: {waited:?}");
    // The fresh list lands in the index.
    for _ in 0..100 {
        if shared.index.lock().unwrap().services.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let index = shared.index.lock().unwrap();
    assert_eq!(index.services.len(), 2, "the second list replaced the first");
    assert!(index.complete(), "Services and EndpointSlices are listed");
    assert!(index.blocklists.is_empty() && index.proxy_config.is_none(), "the optional kinds stay empty without their CRDs");
    assert!(errors.0.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the 403 was counted");
    drop(index);
    watches.abort();
}

/// Right after an apiserver restart, a list can lack an object created a moment before and the
/// watch after it never bring it (seen in CI for 90 s). After an error, the list that succeeds
/// is checked by another 60 s later, whatever the watch brings.
#[tokio::test(start_paused = true)]
async fn after_an_error_the_list_is_checked_by_another_a_minute_later() {
    let (handle, shared, _errors, watches) = watching_a_mock_apiserver();

    let started = tokio::time::Instant::now();
    let apiserver = tokio::spawn(async move {
        let mut handle = pin!(handle);
        let mut held = Vec::new();
        let (mut service_lists, mut service_watches, mut slice_lists) = (Vec::new(), 0, 0);
        while let Some((request, reply)) = handle.next_request().await {
            let uri = request.uri().to_string();
            let watching = uri.contains("watch=true");
            if uri.starts_with("/api/v1/services") {
                if watching {
                    service_watches += 1;
                    // The first watch fails (the apiserver restarts); the next ones say nothing.
                    if service_watches == 1 { reply.send_response(status(StatusCode::GONE, "Expired")) } else { held.push(reply) }
                } else {
                    service_lists.push(started.elapsed());
                    let items = if service_lists.len() < 3 { vec![service("a")] } else { vec![service("a"), service("b")] };
                    reply.send_response(list("ServiceList", &format!("{}", 10 * service_lists.len()), items));
                }
            } else if uri.starts_with("/apis/discovery.k8s.io/v1/endpointslices") {
                // A watch that never failed is not checked.
                if watching {
                    held.push(reply)
                } else {
                    slice_lists += 1;
                    reply.send_response(list("EndpointSliceList", "10", vec![]))
                }
            } else {
                reply.send_response(status(StatusCode::NOT_FOUND, "NotFound"));
            }
            if service_lists.len() == 3 {
                return (service_lists, slice_lists);
            }
        }
        panic!("the client went away");
    });

    let (lists, slice_lists) = tokio::time::timeout(Duration::from_secs(600), apiserver).await.expect("no check list within 10 minutes").unwrap();
    let checked_after = lists[2] - lists[1];
    assert!(checked_after >= Duration::from_secs(60) && checked_after < Duration::from_secs(65), "the list after the error was checked a minute later: {lists:?}");
    assert_eq!(slice_lists, 1, "a watch that never failed is not checked");
    for _ in 0..100 {
        if shared.index.lock().unwrap().services.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shared.index.lock().unwrap().services.len(), 2, "the Service the first lists and the watch lacked came with the check");
    watches.abort();
}

/// An apiserver that refuses every request (403), as a restarted one does for a moment while its
/// authorizer warms up, and for as long as the agents' RBAC is missing. kube-runtime's watcher
/// yields `Event::Init` before each list, and its stream backoff resets on any `Ok`: a refused
/// list was retried every 0.8–1.6 s forever (about 50 lists a minute per watch, 250 per agent,
/// measured by e2e/bench/soak). client-go's reflector backs off from 0.8 s to 30 s.
#[tokio::test(start_paused = true)]
async fn a_refused_list_is_retried_with_a_backoff_growing_to_thirty_seconds() {
    let (handle, shared, _errors, watches) = watching_a_mock_apiserver();

    let started = tokio::time::Instant::now();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(Duration, String)>::new()));
    let apiserver = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut handle = pin!(handle);
            while let Some((request, reply)) = handle.next_request().await {
                seen.lock().unwrap().push((started.elapsed(), request.uri().to_string()));
                reply.send_response(status(StatusCode::FORBIDDEN, "Forbidden"));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(300)).await;
    let seen = seen.lock().unwrap().clone();
    let at = |prefix: &str| -> Vec<f64> { seen.iter().filter(|(_, u)| u.starts_with(prefix)).map(|(t, _)| t.as_secs_f64()).collect() };
    let services = at("/api/v1/services");
    // 0, then 0.8–1.6, 1.6–3.2, 3.2–6.4, 6.4–12.8, 12.8–25.6 s later, then every 30 s: 14 to 15
    // requests in five minutes, as a reflector makes them.
    assert!((10..=16).contains(&services.len()), "{} Service lists in 5 minutes, at {services:?}", services.len());
    let gaps: Vec<f64> = services.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().rev().take(4).all(|g| *g >= 29.0 && *g <= 31.0), "the retries end 30 s apart: {gaps:?}");
    let slices = at("/apis/discovery.k8s.io/v1/endpointslices");
    assert!((10..=16).contains(&slices.len()), "{} EndpointSlice lists in 5 minutes", slices.len());
    // The optional sluice.dev kinds back off further, to a minute.
    let blocklists = at("/apis/sluice.dev/v1alpha1/sourceblocklists");
    assert!((5..=12).contains(&blocklists.len()), "{} SourceBlocklist lists in 5 minutes, at {blocklists:?}", blocklists.len());
    assert!(!shared.index.lock().unwrap().complete(), "nothing was listed");
    watches.abort();
    apiserver.abort();
}
