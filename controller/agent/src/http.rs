//! The agent's small HTTP endpoints (metrics, health, healthCheckNodePorts): plain HTTP/1.1,
//! one response per connection, which is all Prometheus, kubelet probes and load balancers need.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    /// Headers beyond the ones every response has.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    pub fn new(status: &'static str, content_type: &'static str, body: String) -> Self {
        Response { status, content_type, headers: Vec::new(), body }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn render(&self) -> String {
        let extra: String = self.headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nX-Content-Type-Options: nosniff\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
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

/// Connections served at once per listener; more are closed at once. Scrapes, probes and load
/// balancer checks need a handful; a flood must not grow the agent's tasks and memory.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves `handler(path)` on `listener` until the task is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response> + Send,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                // Out of file descriptors, say: retrying at once would spin on one core.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(conn);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
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
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_at_once_and_the_others_still_answer() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, |_| async { Response::new("200 OK", "text/plain", "ok\n".into()) }));
        // Connections that never send a request hold their slot until the read times out.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(1), extra.read_to_end(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "the connection past the limit is closed, unanswered: {n:?}");
        // Slots come back when those connections close; then requests are answered again.
        drop(idle);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /x HTTP/1.1\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    }

    #[test]
    fn paths_ignore_the_query() {
        assert_eq!(super::path_of("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n"), "/metrics");
        assert_eq!(super::path_of(""), "/");
    }
}
