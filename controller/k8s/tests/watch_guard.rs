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

#[tokio::test(start_paused = true)]
async fn a_watch_silent_after_an_error_is_replaced_by_a_fresh_list() {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let shared = Shared::default();
    let errors = Arc::new(watch::ClientErrors::default());
    let watches = tokio::spawn(watch::run(client, None, shared.clone(), errors.clone()));

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
