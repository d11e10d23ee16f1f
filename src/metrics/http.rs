//! The `/metrics` endpoint: a minimal HTTP/1.1 server on tokio. It answers
//! `GET /metrics` with the registry in Prometheus text format,
//! other paths with 404 and other methods with 405, one request per
//! connection (`connection: close`). Scrapers send one small GET every few
//! seconds; a full HTTP stack would be dependency weight for nothing.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::MetricsError;

/// Longest request head read; Prometheus sends a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 << 10;
/// Bound on reading the request and writing the answer, so a client that
/// stalls does not hold a connection slot for long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;

/// Serves `registry` on `listener` until `shutdown` turns true (or its
/// sender is dropped). Connections in progress finish on their own (each
/// is bounded by a timeout). Errors on one connection are logged and do
/// not stop the server.
pub async fn run(
    listener: TcpListener,
    registry: Registry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), MetricsError> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            permit = slots.clone().acquire_owned() => permit.map_err(|_| MetricsError::Closed)?,
        };
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of
                // spinning, and keep serving once it passes.
                tracing::warn!("metrics endpoint: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let served = tokio::time::timeout(CONNECTION_TIMEOUT, serve(stream, &registry)).await;
            match served {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, "metrics endpoint: {error}"),
                Err(_) => tracing::debug!(%peer, "metrics endpoint: connection timed out"),
            }
            drop(permit);
        });
    }
}

/// Reads one request head and writes the answer.
async fn serve(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return Ok(()); // Closed before a whole head arrived: nothing to answer.
    };
    let response = respond(&head, registry);
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The bytes up to the blank line ending the request head (CRLF or, as
/// hand-typed requests end, bare LF); `None` if the client closed before
/// sending a whole request line. A client that half-closes after its
/// request line is answered. A head over `MAX_HEAD_BYTES` is cut there
/// (the request line is all that is used).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(head.contains(&b'\n').then_some(head));
        }
        head.extend_from_slice(&chunk[..read]);
        let ended = head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
        if ended || head.len() >= MAX_HEAD_BYTES {
            return Ok(Some(head));
        }
    }
}

/// The whole HTTP response to a request head.
pub(super) fn respond(head: &[u8], registry: &Registry) -> Vec<u8> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => match encode(registry) {
            Ok(body) => response("200 OK", prometheus::TEXT_FORMAT, body),
            Err(error) => {
                tracing::warn!("metrics endpoint: cannot encode the metrics: {error}");
                response("500 Internal Server Error", "text/plain", format!("{error}\n").into_bytes())
            }
        },
        ("GET", _) => response("404 Not Found", "text/plain", b"not found: try /metrics\n".to_vec()),
        _ => response("405 Method Not Allowed", "text/plain", b"only GET /metrics\n".to_vec()),
    }
}

/// The registry in Prometheus text format (version 0.0.4).
pub fn encode(registry: &Registry) -> Result<Vec<u8>, MetricsError> {
    let mut body = Vec::with_capacity(16 << 10);
    TextEncoder::new().encode(&registry.gather(), &mut body)?;
    Ok(body)
}

fn response(status: &str, content_type: &str, body: Vec<u8>) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}
