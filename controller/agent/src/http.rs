//! The agent's small HTTP endpoints (metrics, health, healthCheckNodePorts): plain HTTP/1.1,
//! one response per connection, which is all Prometheus, kubelet probes and load balancers need.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn new(status: &'static str, content_type: &'static str, body: String) -> Self {
        Response { status, content_type, body }
    }

    pub fn render(&self) -> String {
        format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.content_type,
            self.body.len(),
            self.body
        )
    }
}

/// The request path of an HTTP request head ("GET /metrics HTTP/1.1" → "/metrics").
fn path_of(head: &str) -> &str {
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    target.split('?').next().unwrap_or("/")
}

/// Serves `handler(path)` on `listener` until the task is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response> + Send,
{
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(2), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let response = handler(path_of(&head).to_string()).await;
            let _ = conn.write_all(response.render().as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("{what} cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_ignore_the_query() {
        assert_eq!(super::path_of("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n"), "/metrics");
        assert_eq!(super::path_of(""), "/");
    }
}
