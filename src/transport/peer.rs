//! One sender task per peer node: opens the node's outgoing stream, turns
//! queued turns into `MessageBatch`es, notices when the stream breaks, and
//! reconnects with backoff. It reports liveness as `PeerUp`/`PeerDown`,
//! each once per transition.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use super::backoff::Backoff;
use super::{codec, stopped, Shared, TransportEvent, Turn, MAX_MESSAGE_BYTES, STATE_DOWN, STATE_UP};
use crate::metrics::PeerCounters;
use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::MessageBatch;
use crate::raft::NodeId;

/// TCP connect bound; a peer that does not answer is as good as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on connect plus the stream's response headers (a port that
/// accepts but does not speak gRPC).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on the stream's connection: a silent network partition
/// breaks the stream (and marks the peer down) within about
/// interval + timeout, without waiting for TCP to give up.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Batches encoded but not yet taken by the HTTP/2 stream. Small: the
/// peer's queue is where turns wait (and overflow is reported).
const OUTBOUND_BUFFER: usize = 4;
/// Most turns merged into one batch when several are queued (a stream that
/// fell behind catches up with fewer, larger batches).
const MAX_TURNS_PER_BATCH: usize = 64;

/// Why the stream loop ended.
enum Exit {
    /// Shutdown or the peer was removed: stop the task.
    Stop,
    /// The stream broke: mark the peer down and reconnect.
    Broken(String),
}

pub(super) struct PeerTask {
    shared: Arc<Shared>,
    peer: NodeId,
    /// Turns from `Transport::send`; bounded (`peer_queue_batches`).
    turns: mpsc::Receiver<Turn>,
    /// The peer's address; closed when the peer is removed.
    address: watch::Receiver<String>,
    /// `STATE_*`, shared with `Transport::send` and `is_peer_up`.
    state: Arc<AtomicU8>,
    shutdown: watch::Receiver<bool>,
    backoff: Backoff,
    /// This peer's traffic counters, resolved once.
    counters: PeerCounters,
}

/// An open outgoing stream.
struct Open {
    /// Keeps the connection's client alive for as long as the stream is used.
    _client: RaftTransportClient<Channel>,
    /// Batches for the request half; bounded (`OUTBOUND_BUFFER`), so HTTP/2
    /// flow control pushes back on the peer's queue.
    outbound: mpsc::Sender<MessageBatch>,
    /// The response half: nothing is expected on it, but its end or error
    /// is how a broken stream shows.
    inbound: Streaming<MessageBatch>,
}

impl PeerTask {
    pub(super) fn new(
        shared: Arc<Shared>,
        peer: NodeId,
        turns: mpsc::Receiver<Turn>,
        address: watch::Receiver<String>,
        state: Arc<AtomicU8>,
    ) -> PeerTask {
        let config = &shared.config;
        let backoff = Backoff::new(config.reconnect_min, config.reconnect_max, config.node_id, peer);
        let shutdown = shared.shutdown.clone();
        let counters = shared.metrics.peer(peer);
        PeerTask { shared, peer, turns, address, state, shutdown, backoff, counters }
    }

    pub(super) async fn run(mut self) {
        loop {
            let address = self.address.borrow_and_update().clone();
            let (local, peer) = (self.local(), self.peer);
            let opened = tokio::select! {
                _ = stopped(&mut self.shutdown) => break,
                changed = self.address.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => break,
                },
                opened = open(local, peer, &address) => opened,
            };
            let reason = match opened {
                Ok(stream) => {
                    self.backoff.reset();
                    tracing::info!(peer = %self.peer, %address, "stream to peer established");
                    self.mark(STATE_UP).await;
                    match self.pump(stream).await {
                        Exit::Stop => break,
                        Exit::Broken(reason) => reason,
                    }
                }
                Err(reason) => reason,
            };
            // Warn once per outage; the retries of an outage log at debug.
            if self.state.load(Ordering::Acquire) == STATE_DOWN {
                tracing::debug!(peer = %self.peer, %address, %reason, "peer still unreachable");
            } else {
                tracing::warn!(peer = %self.peer, %address, %reason, "stream to peer is down");
            }
            self.mark(STATE_DOWN).await;
            if !self.wait_to_reconnect().await {
                break;
            }
        }
        self.state.store(STATE_DOWN, Ordering::Release);
        tracing::debug!(peer = %self.peer, "sender task stopped");
    }

    fn local(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// Records the new state and tells the runtime if it changed.
    async fn mark(&mut self, state: u8) {
        let before = self.state.swap(state, Ordering::AcqRel);
        if before == state {
            return;
        }
        let event =
            if state == STATE_UP { TransportEvent::PeerUp(self.peer) } else { TransportEvent::PeerDown(self.peer) };
        tokio::select! {
            _ = stopped(&mut self.shutdown) => {}
            _ = self.shared.events.send(event) => {}
        }
    }

    /// Sleeps the backoff delay, dropping queued turns meanwhile (they are
    /// stale by the time the peer is back). False if the task must stop.
    async fn wait_to_reconnect(&mut self) -> bool {
        let sleep = tokio::time::sleep(self.backoff.next_delay());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                _ = stopped(&mut self.shutdown) => return false,
                changed = self.address.changed() => match changed {
                    Ok(()) => return true,
                    Err(_) => return false,
                },
                turn = self.turns.recv() => if turn.is_none() { return false },
            }
        }
    }

    /// Moves turns from the queue onto the stream until it breaks.
    async fn pump(&mut self, mut stream: Open) -> Exit {
        let mut pending: Option<MessageBatch> = None;
        loop {
            tokio::select! {
                _ = stopped(&mut self.shutdown) => return Exit::Stop,
                changed = self.address.changed() => return match changed {
                    Ok(()) => Exit::Broken("the peer's address changed".into()),
                    Err(_) => Exit::Stop,
                },
                incoming = stream.inbound.message() => match incoming {
                    Ok(Some(_)) => {} // Nothing is expected back; ignore it.
                    Ok(None) => return Exit::Broken("the peer ended the stream".into()),
                    Err(status) => return Exit::Broken(format!("the stream failed: {status}")),
                },
                permit = stream.outbound.reserve(), if pending.is_some() => match (permit, pending.take()) {
                    (Ok(permit), Some(batch)) => {
                        self.count_sent(&batch);
                        permit.send(batch);
                    }
                    (Ok(_), None) => {}
                    (Err(_), _) => return Exit::Broken("the stream's request half closed".into()),
                },
                turn = self.turns.recv(), if pending.is_none() => match turn {
                    Some(turn) => pending = Some(encode(self.local(), self.peer, turn, &mut self.turns)),
                    None => return Exit::Stop,
                },
            }
        }
    }
}

impl PeerTask {
    fn count_sent(&self, batch: &MessageBatch) {
        let coalesced = (batch.heartbeats.len() + batch.heartbeat_responses.len()) as u64;
        self.shared.metrics.heartbeats_coalesced.inc_by(coalesced);
        self.counters.messages_sent.inc_by(batch.messages.len() as u64 + coalesced);
        self.counters.batches_sent.inc();
    }
}

/// One batch from `first` and whatever else is already queued (bounded).
fn encode(local: NodeId, peer: NodeId, first: Turn, turns: &mut mpsc::Receiver<Turn>) -> MessageBatch {
    let mut messages = first;
    for _ in 1..MAX_TURNS_PER_BATCH {
        match turns.try_recv() {
            Ok(mut more) => messages.append(&mut more),
            Err(_) => break,
        }
    }
    codec::to_proto(local, peer, messages)
}

/// Connects to `address` and opens the stream (bounded by `OPEN_TIMEOUT`).
async fn open(local: NodeId, peer: NodeId, address: &str) -> Result<Open, String> {
    let attempt = async {
        let channel =
            endpoint(address)?.connect().await.map_err(|e| format!("cannot connect: {}", source_chain(&e)))?;
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (outbound, requests) = mpsc::channel(OUTBOUND_BUFFER);
        // An empty first batch names this node at once, so a receiver can
        // refuse a misconfigured peer before any traffic flows.
        let hello = MessageBatch { from_node: local.0, ..Default::default() };
        outbound.try_send(hello).map_err(|_| "the stream buffer is unusable".to_string())?;
        let response = client
            .stream(ReceiverStream::new(requests))
            .await
            .map_err(|status| format!("the peer refused the stream: {status}"))?;
        Ok(Open { _client: client, outbound, inbound: response.into_inner() })
    };
    match tokio::time::timeout(OPEN_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no gRPC answer from node {peer} within {OPEN_TIMEOUT:?}")),
    }
}

/// The endpoint for a peer address ("host:port"), with the stream's
/// connection settings.
pub(super) fn endpoint(address: &str) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("invalid peer address {address:?}: {e}"))?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// An error with its causes ("transport error: connection refused").
pub(super) fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
