//! Warning Events on the objects the datapath cannot program, where `kubectl describe` shows them.

use std::sync::Arc;

use kube::runtime::events::{Event, EventType, Recorder};

/// A Service the datapath cannot program (or programs only in part) gets a Warning Event saying
/// why, where `kubectl describe service` shows it.
pub fn publish(recorder: Arc<Recorder>, w: sluice_core::Warning) {
    let sluice_core::Subject::Object { kind: "Service", key } = &w.subject else {
        return;
    };
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some(key.namespace.to_string()),
        name: Some(key.name.to_string()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: w.reason.as_str().into(),
        note: Some(w.message.clone()),
        action: "Program".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!("cannot publish Event for {}: {e}", w.subject);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use http::{Request, Response};
    use kube::client::Body;
    use sluice_core::{ObjectKey, Subject, Warning};

    use super::*;

    #[tokio::test]
    async fn a_services_warning_becomes_an_event_with_its_reason_and_other_subjects_do_not() {
        let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let recorder = Arc::new(Recorder::new(
            kube::Client::new(mock, "default"),
            kube::runtime::events::Reporter { controller: "sluice".into(), instance: Some("n1".into()) },
        ));
        publish(recorder.clone(), Warning::new(Subject::cluster_scoped("SourceBlocklist", "edge"), "not an Event"));
        publish(recorder, Warning::map_full(Subject::service(&ObjectKey::new("demo", "big")), "the sluice_backends_v1 map is full"));
        let mut handle = pin!(handle);
        let (request, reply) = handle.next_request().await.expect("an Event is posted");
        assert_eq!(request.uri().path(), "/apis/events.k8s.io/v1/namespaces/demo/events");
        let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["reason"], "MapFull");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["note"], "the sluice_backends_v1 map is full");
        assert_eq!((event["regarding"]["kind"].as_str(), event["regarding"]["name"].as_str()), (Some("Service"), Some("big")));
        reply.send_response(Response::builder().status(201).body(Body::from(body.to_vec())).unwrap());
    }
}
