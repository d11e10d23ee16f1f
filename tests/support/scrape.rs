//! Serving a node's metrics registry on 127.0.0.1 and reading it back the
//! way a scraper does (a plain HTTP GET), plus a small reader of the
//! Prometheus text format. Included by `#[path]` from the test files that
//! need it.

#![allow(dead_code)] // Each test file uses a different part.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A running `/metrics` endpoint; `stop` ends it.
pub struct Endpoint {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), flotilla::metrics::MetricsError>>,
}

impl Endpoint {
    pub async fn serve(registry: prometheus::Registry) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds 127.0.0.1:0");
        let addr = listener.local_addr().expect("has an address");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(flotilla::metrics::run(listener, registry, stopped));
        Endpoint { addr, stop, task }
    }

    /// The exposition at `/metrics` (panics unless it answers 200 in time).
    pub async fn scrape(&self) -> String {
        let (status, body) = http_get(self.addr, "/metrics").await;
        assert!(status.contains(" 200 "), "GET /metrics on {}: {status}", self.addr);
        body
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let stopped = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "the metrics endpoint did not stop cleanly: {stopped:?}");
    }
}

/// One HTTP/1.0 GET (so the answer is never chunked), bounded to 10 s:
/// (status line, body).
pub async fn http_get(addr: SocketAddr, target: &str) -> (String, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return (format!("no answer: {error}"), String::new()),
        Err(_) => return ("no answer within 10 s".into(), String::new()),
    };
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response.as_str(), ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// Names of the families declared by `# TYPE` lines, with their type.
pub fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The sum of the samples named `name` whose labels include every
/// `key="value"` in `with`; `None` if there is no such sample.
pub fn sum(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name == name && with.iter().all(|l| labels.contains(l)) {
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// Like `sum`, but 0 when absent.
pub fn value(text: &str, name: &str, with: &[&str]) -> f64 {
    sum(text, name, with).unwrap_or(0.0)
}
