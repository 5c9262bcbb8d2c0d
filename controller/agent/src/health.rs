//! healthCheckNodePort servers, answering as kube-proxy's do: 200 with the local endpoint count
//! while this node has local endpoints for the Service, 503 when it has none, so an external
//! load balancer only sends externalTrafficPolicy Local traffic to nodes that can serve it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sluice_core::HealthCheck;
use tokio::net::TcpListener;

use crate::http::Response;
use crate::probes::Probes;
use tokio::task::JoinHandle;

pub struct HealthServers {
    state: Arc<Mutex<BTreeMap<u16, HealthCheck>>>,
    servers: BTreeMap<u16, JoinHandle<()>>,
    probes: Arc<Probes>,
}

/// Like kube-proxy: a node whose proxy is unhealthy (behind on updates, or its Node going away)
/// answers 503 even with local endpoints, so the load balancer moves the traffic elsewhere.
pub fn response(hc: &HealthCheck, proxy_healthy: bool) -> Response {
    let body = serde_json::json!({
        "service": {"namespace": hc.service.namespace, "name": hc.service.name},
        "localEndpoints": hc.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    })
    .to_string();
    let status = if hc.local_endpoints > 0 && proxy_healthy { "200 OK" } else { "503 Service Unavailable" };
    // kube-proxy's weight hint for load balancers that spread by it.
    Response::new(status, "application/json", body).with_header("X-Load-Balancing-Endpoint-Weight", hc.local_endpoints.to_string())
}

async fn serve_check(port: u16, state: Arc<Mutex<BTreeMap<u16, HealthCheck>>>, probes: Arc<Probes>) {
    let listener = match TcpListener::bind(("::", port)).await {
        Ok(l) => l,
        Err(_) => match TcpListener::bind(("0.0.0.0", port)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(port, "cannot serve healthCheckNodePort: {e}");
                return;
            }
        },
    };
    crate::http::serve(listener, move |_path| {
        let reply = state.lock().expect("health state").get(&port).map(|hc| response(hc, probes.proxy_healthy()));
        async move { reply.unwrap_or_else(|| Response::new("404 Not Found", "text/plain", String::new())) }
    })
    .await
}

impl HealthServers {
    pub fn new(probes: Arc<Probes>) -> HealthServers {
        HealthServers { state: Arc::default(), servers: BTreeMap::new(), probes }
    }

    /// Serves exactly the given checks: new ports get a server, gone ports lose theirs.
    pub fn update(&mut self, checks: &[HealthCheck]) {
        let wanted: BTreeMap<u16, HealthCheck> = checks.iter().map(|h| (h.port, h.clone())).collect();
        *self.state.lock().expect("health state") = wanted.clone();
        self.servers.retain(|port, task| {
            let keep = wanted.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in wanted.keys() {
            if !self.servers.contains_key(port) {
                self.servers.insert(*port, tokio::spawn(serve_check(*port, self.state.clone(), self.probes.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::ObjectKey;

    #[test]
    fn answers_like_kube_proxy() {
        let mut hc = HealthCheck { port: 32000, service: ObjectKey { namespace: "ns".into(), name: "lb".into() }, local_endpoints: 2 };
        let ok = response(&hc, true).render();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nX-Load-Balancing-Endpoint-Weight: 2\r\n"), "{ok}");
        assert!(ok.ends_with(r#"{"localEndpoints":2,"service":{"name":"lb","namespace":"ns"},"serviceProxyHealthy":true}"#), "{ok}");
        let unhealthy = response(&hc, false).render();
        assert!(unhealthy.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{unhealthy}");
        assert!(unhealthy.contains(r#""serviceProxyHealthy":false"#), "{unhealthy}");
        hc.local_endpoints = 0;
        assert!(response(&hc, true).render().starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    }
}
