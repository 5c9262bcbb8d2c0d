//! The agent's small HTTP endpoints (metrics, health, healthCheckNodePorts), served by hyper
//! (already in the tree through kube's client): HTTP/1.1, one request per connection, which is
//! all Prometheus, kubelet probes and load balancers need, with bounds on connections, request
//! heads and time, so a flood cannot grow the agent.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub struct Response {
    /// As in a status line: `200 OK`.
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

    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let code = self.status.split_whitespace().next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
        let mut builder = hyper::Response::builder()
            .status(code)
            .header("Content-Type", self.content_type)
            .header("X-Content-Type-Options", "nosniff")
            .header("Connection", "close");
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(Bytes::from(self.body))).expect("a response of known headers")
    }
}

/// Connections served at once per listener; more are closed at once. Scrapes, probes and load
/// balancer checks need a handful; a flood must not grow the agent's tasks and memory.
pub const MAX_CONNECTIONS: usize = 64;
/// The most a request head may take (hyper's smallest read buffer), and how long it may take
/// to arrive; a whole exchange is cut after `EXCHANGE_LIMIT`.
const MAX_HEAD_BYTES: usize = 8192;
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// Serves `handler(path)` on `listener` until the task is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                // Out of file descriptors, say: retrying at once would spin on one core.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
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
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let reply = handler(request.uri().path().to_string());
                async move { Ok::<_, std::convert::Infallible>(reply.await.into_hyper()) }
            });
            let exchange = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(conn), service);
            let _ = tokio::time::timeout(EXCHANGE_LIMIT, exchange).await;
        });
    }
}

pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("{what} cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(request).await.unwrap();
        let mut reply = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut reply)).await;
        reply
    }

    async fn server() -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, |path| async move {
            Response::new("200 OK", "text/plain", format!("{path}\n")).with_header("X-Test", "1".into())
        }));
        addr
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_at_once_and_the_others_still_answer() {
        let addr = server().await;
        // Connections that never send a request hold their slot until the head times out.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(1), extra.read_to_end(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "the connection past the limit is closed, unanswered: {n:?}");
        // Slots come back when those connections close; then requests are answered again.
        drop(idle);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reply = exchange(addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    }

    #[tokio::test]
    async fn paths_ignore_the_query_and_headers_are_sent() {
        let addr = server().await;
        let reply = exchange(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(reply.to_ascii_lowercase().contains("\r\nx-test: 1\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\n/metrics\n"), "{reply}");
    }

    #[tokio::test]
    async fn an_oversized_or_slow_request_head_is_refused() {
        let addr = server().await;
        let huge = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(2 * MAX_HEAD_BYTES));
        let reply = exchange(addr, huge.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 431") || reply.is_empty(), "{reply}");
        // A head that never ends is dropped after HEAD_TIMEOUT.
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = Vec::new();
        let started = std::time::Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        assert!(n.is_ok(), "the slow client is cut off");
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    }
}
