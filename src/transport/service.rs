//! The server side of the peer transport: the `RaftTransport` gRPC service.
//! Each inbound `Stream` is read by its own task that validates batches and
//! hands them to the event loop; a malformed batch closes only that stream.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{codec, snapshot, stopped, Shared, TransportEvent};
use crate::metrics::PeerCounters;
use crate::proto::raft_transport_server::RaftTransport;
use crate::proto::{MessageBatch, SnapshotAck, SnapshotChunk};
use crate::raft::{GroupId, Message, MessageKind, NodeId};

/// The `RaftTransport` service of one node; see [`super::Transport::service`].
pub struct TransportService {
    shared: Arc<Shared>,
}

impl TransportService {
    pub(super) fn new(shared: Arc<Shared>) -> TransportService {
        TransportService { shared }
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    /// The response half carries nothing today; it stays open while the
    /// peer sends, and ends with an error status when its batch was refused.
    type StreamStream = ReceiverStream<Result<MessageBatch, Status>>;

    async fn stream(&self, request: Request<Streaming<MessageBatch>>) -> Result<Response<Self::StreamStream>, Status> {
        let address = describe(request.remote_addr());
        let inbound = request.into_inner();
        let (replies, responses) = mpsc::channel(1);
        self.shared.runtime.spawn(receive_batches(self.shared.clone(), inbound, replies, address));
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        snapshot::receive(self.shared.clone(), request).await.map(Response::new)
    }
}

/// A peer's socket address for logs.
pub(super) fn describe(address: Option<SocketAddr>) -> String {
    address.map_or_else(|| "an unknown address".to_string(), |a| a.to_string())
}

/// Reads one peer's stream until it ends, fails, is refused or the node
/// shuts down. `replies` is the response half: dropping it ends the RPC.
async fn receive_batches(
    shared: Arc<Shared>,
    mut inbound: Streaming<MessageBatch>,
    replies: mpsc::Sender<Result<MessageBatch, Status>>,
    address: String,
) {
    let local = shared.config.node_id;
    let mut shutdown = shared.shutdown.clone();
    // The node this stream comes from, fixed by its first batch.
    let mut sender: Option<NodeId> = None;
    let mut counters: Option<PeerCounters> = None;
    loop {
        let next = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            _ = replies.closed() => break,
            next = inbound.message() => next,
        };
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                tracing::debug!(peer.address = %address, peer.node = ?sender, "peer ended its stream");
                break;
            }
            Err(status) => {
                tracing::info!(peer.address = %address, peer.node = ?sender, %status, "inbound stream failed");
                break;
            }
        };
        let claimed = NodeId(batch.from_node);
        let (from, messages) = match check_batch(batch, local, sender) {
            Ok(checked) => checked,
            Err(error) => {
                tracing::error!(peer.address = %address, peer.node = %claimed, stream.node = ?sender, %error,
                    "malformed batch from peer; closing its stream");
                let _ = replies.try_send(Err(Status::invalid_argument(error)));
                break;
            }
        };
        sender = Some(from);
        if messages.is_empty() {
            continue;
        }
        // Only configured peers get a `peer` label: the id on the wire is
        // the sender's word, and series must stay bounded.
        if counters.is_none() && shared.peer_address(from).is_some() {
            counters = Some(shared.metrics.peer(from));
        }
        if let Some(counters) = &counters {
            counters.messages_received.inc_by(messages.len() as u64);
            counters.batches_received.inc();
        }
        // Backpressure: while the event loop's channel is full this stream
        // is not read, and HTTP/2 flow control stops the peer.
        let event = TransportEvent::Batch { from, messages };
        let delivered = tokio::select! {
            _ = stopped(&mut shutdown) => false,
            sent = shared.events.send(event) => sent.is_ok(),
        };
        if !delivered {
            break;
        }
    }
}

/// Decodes a batch and checks it belongs on this stream.
fn check_batch(
    batch: MessageBatch,
    local: NodeId,
    sender: Option<NodeId>,
) -> Result<(NodeId, Vec<(GroupId, Message)>), String> {
    let (from, messages) = codec::from_proto(batch, local).map_err(|e| e.to_string())?;
    if let Some(first) = sender {
        if first != from {
            return Err(format!("the stream of node {first} now claims to come from node {from}"));
        }
    }
    if let Some((group, _)) = messages.iter().find(|(_, m)| m.kind == MessageKind::InstallSnapshot) {
        return Err(format!(
            "group {group}: an InstallSnapshot message on the replication stream (snapshots use their own RPC)"
        ));
    }
    Ok((from, messages))
}
