//! healthCheckNodePort servers, answering as kube-proxy's do: 200 with the local endpoint count
//! while this node has local endpoints for the Service, 503 when it has none, so an external
//! load balancer only sends externalTrafficPolicy Local traffic to nodes that can serve it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sluice_core::HealthCheck;
use tokio::net::TcpListener;

use crate::http::Response;
use crate::probes::Probes;
use tokio::task::JoinHandle;

pub struct HealthServers {
    state: Arc<Mutex<BTreeMap<u16, HealthCheck>>>,
    /// One server per port and listening address (None: every address).
    servers: BTreeMap<(u16, Option<IpAddr>), JoinHandle<()>>,
    probes: Arc<Probes>,
}

/// Like kube-proxy: a node whose proxy is unhealthy (behind on updates, or its Node going away)
/// answers 503 even with local endpoints, so the load balancer moves the traffic elsewhere.
pub fn response(hc: &HealthCheck, proxy_healthy: bool) -> Response {
    let body = serde_json::json!({
        "service": {"namespace": hc.service.namespace.as_str(), "name": hc.service.name.as_str()},
        "localEndpoints": hc.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    })
    .to_string();
    let status = if hc.local_endpoints > 0 && proxy_healthy { "200 OK" } else { "503 Service Unavailable" };
    // kube-proxy's weight hint for load balancers that spread by it.
    Response::new(status, "application/json", body).with_header("X-Load-Balancing-Endpoint-Weight", hc.local_endpoints.to_string())
}

async fn serve_check(port: u16, address: Option<IpAddr>, state: Arc<Mutex<BTreeMap<u16, HealthCheck>>>, probes: Arc<Probes>) {
    let bound = match address {
        Some(ip) => TcpListener::bind((ip, port)).await,
        None => match TcpListener::bind(("::", port)).await {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).await,
        },
    };
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(port, address = ?address, "cannot serve healthCheckNodePort: {e}");
            return;
        }
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

    /// Serves exactly the given checks on `addresses` (the nodePortAddresses, as kube-proxy;
    /// None: every address): new ports and addresses get a server, gone ones lose theirs.
    pub fn update(&mut self, checks: &[HealthCheck], addresses: Option<&[IpAddr]>) {
        let wanted: BTreeMap<u16, HealthCheck> = checks.iter().map(|h| (h.port, h.clone())).collect();
        *self.state.lock().expect("health state") = wanted.clone();
        let binds: Vec<Option<IpAddr>> = match addresses {
            None => vec![None],
            Some(list) => list.iter().copied().map(Some).collect(),
        };
        let servers: BTreeSet<(u16, Option<IpAddr>)> = wanted.keys().flat_map(|port| binds.iter().map(|b| (*port, *b))).collect();
        self.servers.retain(|key, task| {
            let keep = servers.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, address) in servers {
            self.servers
                .entry((port, address))
                .or_insert_with(|| tokio::spawn(serve_check(port, address, self.state.clone(), self.probes.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::ObjectKey;

    async fn answers(address: &str, port: u16) -> bool {
        for _ in 0..50 {
            if tokio::net::TcpStream::connect((address, port)).await.is_ok() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn checks_listen_on_the_node_port_addresses_only_when_they_are_given() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let hc = HealthCheck { port, service: ObjectKey::new("ns", "lb"), local_endpoints: 1 };
        let mut servers = HealthServers::new(Arc::new(Probes::default()));
        servers.update(std::slice::from_ref(&hc), Some(&["127.0.0.1".parse().unwrap()]));
        assert!(answers("127.0.0.1", port).await, "served on the selected address");
        assert!(tokio::net::TcpStream::connect(("127.0.0.2", port)).await.is_err(), "not on another address");
        servers.update(std::slice::from_ref(&hc), None);
        assert!(answers("127.0.0.2", port).await, "every address once nodePortAddresses is unset");
        servers.update(&[], None);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "a check that is gone closes its port");
    }

    #[test]
    fn answers_like_kube_proxy() {
        let mut hc = HealthCheck { port: 32000, service: ObjectKey { namespace: "ns".into(), name: "lb".into() }, local_endpoints: 2 };
        let ok = response(&hc, true);
        assert_eq!(ok.status, "200 OK");
        assert_eq!(ok.header("X-Load-Balancing-Endpoint-Weight"), Some("2"));
        assert_eq!(ok.body, r#"{"localEndpoints":2,"service":{"name":"lb","namespace":"ns"},"serviceProxyHealthy":true}"#);
        let unhealthy = response(&hc, false);
        assert_eq!(unhealthy.status, "503 Service Unavailable");
        assert!(unhealthy.body.contains(r#""serviceProxyHealthy":false"#), "{}", unhealthy.body);
        hc.local_endpoints = 0;
        assert_eq!(response(&hc, true).status, "503 Service Unavailable");
    }
}
