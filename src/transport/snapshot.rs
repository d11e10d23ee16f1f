//! Snapshot files on the InstallSnapshot RPC, both directions.
//!
//! Sending reads the file one checksummed chunk at a time (on the blocking
//! pool) into a small channel that feeds the RPC, so at most a few chunks
//! are in memory. Receiving verifies each chunk into a
//! [`SnapshotReceiver`](crate::storage::snapshot::SnapshotReceiver), whose
//! temp file is removed on every failure (dropping it removes the file), and
//! hands the finished file to the event loop, answering the sender with the
//! loop's verdict.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::service::describe;
use super::{codec, lock, peer, stopped, Shared, TransportError, TransportEvent, MAX_MESSAGE_BYTES};
use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::{SnapshotAck, SnapshotChunk};
use crate::raft::{GroupId, Message, MessageKind, NodeId, SnapshotMetadata};
use crate::storage::snapshot::{ChunkReader, SnapshotFile, SnapshotReceiver};
use crate::storage::StorageError;

/// Chunks read ahead of the RPC (each at most 1 MiB).
const READ_AHEAD_CHUNKS: usize = 2;
/// After the last chunk, the answer may take this many chunk timeouts: the
/// receiver fsyncs the file and its event loop installs it first.
const ANSWER_TIMEOUT_FACTOR: u32 = 4;

/// Sends one snapshot and reports `SnapshotSent` (unless shutting down).
pub(super) async fn send(shared: Arc<Shared>, to: NodeId, group: GroupId, message: Message, file: SnapshotFile) {
    let mut shutdown = shared.shutdown.clone();
    let outcome = tokio::select! {
        _ = stopped(&mut shutdown) => return,
        outcome = transfer(&shared, to, group, message, &file) => outcome,
    };
    let delivered = match outcome {
        Ok(()) => {
            tracing::info!(peer = %to, group = %group, index = %file.metadata.index, "snapshot delivered");
            true
        }
        Err(error) => {
            tracing::warn!(peer = %to, group = %group, %error, "snapshot not delivered");
            false
        }
    };
    let event = TransportEvent::SnapshotSent { to, group, delivered };
    tokio::select! {
        _ = stopped(&mut shutdown) => {}
        _ = shared.events.send(event) => {}
    }
}

async fn transfer(
    shared: &Shared,
    to: NodeId,
    group: GroupId,
    message: Message,
    file: &SnapshotFile,
) -> Result<(), TransportError> {
    let fail = |detail: String| TransportError::Snapshot { peer: to, group, detail };
    let config = &shared.config;
    let address = shared.peer_address(to).ok_or(TransportError::UnknownPeer { peer: to })?;
    check_outgoing(&message, to, group, file).map_err(fail)?;
    let size = std::fs::metadata(&file.path).map_err(|e| StorageError::io(&file.path, e))?.len();
    if size > config.max_snapshot_bytes {
        return Err(fail(format!("{size} bytes exceed max_snapshot_bytes ({})", config.max_snapshot_bytes)));
    }
    // Opened before waiting for a slot: a newer build of the group may
    // replace the file meanwhile, and an open file keeps its contents.
    let reader = file.chunks()?;
    let _slot = shared.sending.acquire().await.map_err(|_| TransportError::Closed)?;
    let connect_error = |detail: String| TransportError::Connect { peer: to, address: address.clone(), detail };
    let endpoint = peer::endpoint(&address).map_err(connect_error)?;
    let channel = endpoint.connect().await.map_err(|e| connect_error(peer::source_chain(&e)))?;
    let mut client = RaftTransportClient::new(channel).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (chunks, requests) = mpsc::channel(READ_AHEAD_CHUNKS);
    let call = client.install_snapshot(ReceiverStream::new(requests));
    tokio::pin!(call);
    tokio::select! {
        produced = produce(file, reader, message, chunks, config.snapshot_chunk_timeout) => produced.map_err(fail)?,
        answer = &mut call => return Err(early_answer(to, group, answer)),
    }
    let wait = config.snapshot_chunk_timeout.saturating_mul(ANSWER_TIMEOUT_FACTOR);
    let answer = tokio::time::timeout(wait, call).await.map_err(|_| fail(format!("no answer within {wait:?}")))?;
    let ack = answer.map_err(|status| TransportError::Rpc { peer: to, status: Box::new(status) })?.into_inner();
    if ack.accepted {
        Ok(())
    } else {
        Err(fail(format!("refused by the receiver: {}", ack.error)))
    }
}

fn check_outgoing(message: &Message, to: NodeId, group: GroupId, file: &SnapshotFile) -> Result<(), String> {
    if message.kind != MessageKind::InstallSnapshot || message.to != to {
        return Err(format!(
            "the message is a {:?} to node {}, not an InstallSnapshot to node {to}",
            message.kind, message.to
        ));
    }
    if file.group != group {
        return Err(format!("the file holds group {}", file.group));
    }
    match &message.snapshot {
        Some(snapshot) if snapshot.metadata == file.metadata => Ok(()),
        _ => Err("the message's snapshot metadata differs from the file's".into()),
    }
}

/// The receiver answered before the last chunk was sent: always a refusal.
fn early_answer(to: NodeId, group: GroupId, answer: Result<Response<SnapshotAck>, Status>) -> TransportError {
    match answer {
        Err(status) => TransportError::Rpc { peer: to, status: Box::new(status) },
        Ok(ack) => {
            let detail = format!("answered before the last chunk: {}", ack.into_inner().error);
            TransportError::Snapshot { peer: to, group, detail }
        }
    }
}

/// Feeds the file's chunks to the RPC; the first carries the message.
async fn produce(
    file: &SnapshotFile,
    mut reader: ChunkReader,
    message: Message,
    chunks: mpsc::Sender<SnapshotChunk>,
    chunk_timeout: Duration,
) -> Result<(), String> {
    let count = file.chunk_count;
    if count == 0 {
        return Err("the snapshot file has no chunks".into());
    }
    let metadata = codec::metadata_to_proto(&file.metadata);
    let mut first = Some(codec::message_to_proto(message));
    for seq in 0..count {
        let read = tokio::task::spawn_blocking(move || {
            let next = reader.next_chunk();
            (reader, next)
        });
        let (back, next) = read.await.map_err(|e| format!("reading chunk {seq}: {e}"))?;
        reader = back;
        let data =
            next.map_err(|e| e.to_string())?.ok_or_else(|| format!("the file ends after {seq} of {count} chunks"))?;
        let message = first.take();
        let metadata = message.as_ref().map(|_| metadata.clone());
        let chunk = SnapshotChunk { group_id: file.group.0, metadata, data, last: seq + 1 == count, message };
        match tokio::time::timeout(chunk_timeout, chunks.send(chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("the RPC ended before the last chunk".into()),
            Err(_) => return Err(format!("the receiver took no chunk for {chunk_timeout:?}")),
        }
    }
    Ok(())
}

/// What the first chunk says about a transfer.
struct Incoming {
    from: NodeId,
    group: GroupId,
    message: Message,
    metadata: SnapshotMetadata,
}

/// Keeps a group marked as being received until dropped.
struct GroupClaim<'a> {
    shared: &'a Shared,
    group: GroupId,
}

impl<'a> GroupClaim<'a> {
    fn take(shared: &'a Shared, group: GroupId) -> Option<GroupClaim<'a>> {
        lock(&shared.receiving_groups).insert(group).then_some(GroupClaim { shared, group })
    }
}

impl Drop for GroupClaim<'_> {
    fn drop(&mut self) {
        lock(&self.shared.receiving_groups).remove(&self.group);
    }
}

/// The server side of InstallSnapshot: receive, verify, hand over, answer.
pub(super) async fn receive(
    shared: Arc<Shared>,
    request: Request<Streaming<SnapshotChunk>>,
) -> Result<SnapshotAck, Status> {
    let address = describe(request.remote_addr());
    let mut stream = request.into_inner();
    let limit = shared.config.max_concurrent_snapshots.max(1);
    let Ok(_slot) = shared.receiving.clone().try_acquire_owned() else {
        tracing::warn!(peer.address = %address, "refusing a snapshot: {limit} already in flight");
        return Err(Status::resource_exhausted(format!("already receiving {limit} snapshots")));
    };
    let mut shutdown = shared.shutdown.clone();
    let mut from = None;
    let received = tokio::select! {
        _ = stopped(&mut shutdown) => Err(Status::unavailable("the node is shutting down")),
        received = receive_file(&shared, &mut stream, &mut from) => received,
    };
    let (incoming, file, _claim) = match received {
        Ok(received) => received,
        Err(status) => {
            tracing::error!(peer.address = %address, peer.node = ?from, %status, "snapshot transfer failed");
            return Err(status);
        }
    };
    let Incoming { from, group, message, .. } = incoming;
    let (done, verdict) = oneshot::channel();
    let event = TransportEvent::SnapshotReceived { from, group, message, file: file.clone(), done };
    let verdict = tokio::select! {
        _ = stopped(&mut shutdown) => return Err(Status::unavailable("the node is shutting down")),
        sent = shared.events.send(event) => match sent {
            Ok(()) => tokio::select! {
                _ = stopped(&mut shutdown) => return Err(Status::unavailable("the node is shutting down")),
                verdict = verdict => verdict.unwrap_or_else(|_| Err("the node dropped the snapshot".into())),
            },
            Err(_) => Err("the node is not taking events".into()),
        },
    };
    match verdict {
        Ok(()) => Ok(SnapshotAck { accepted: true, error: String::new() }),
        Err(reason) => {
            tracing::warn!(peer.address = %address, peer.node = %from, group = %group, %reason, "snapshot refused");
            if let Err(error) = std::fs::remove_file(&file.path) {
                tracing::warn!(path = %file.path.display(), %error, "cannot remove a refused snapshot");
            }
            Ok(SnapshotAck { accepted: false, error: reason })
        }
    }
}

/// Receives and verifies every chunk into a snapshot file. `from` is set as
/// soon as the first chunk names the sender (for the caller's logs).
async fn receive_file<'a>(
    shared: &'a Shared,
    stream: &mut Streaming<SnapshotChunk>,
    from: &mut Option<NodeId>,
) -> Result<(Incoming, SnapshotFile, GroupClaim<'a>), Status> {
    let config = &shared.config;
    let first = next_chunk(stream, config.snapshot_chunk_timeout)
        .await?
        .ok_or_else(|| Status::invalid_argument("the stream ended before its first chunk"))?;
    let (incoming, first) = check_first(first, config.node_id).map_err(Status::invalid_argument)?;
    *from = Some(incoming.from);
    let group = incoming.group;
    let claim = GroupClaim::take(shared, group)
        .ok_or_else(|| Status::already_exists(format!("a snapshot of group {group} is already being received")))?;
    let mut receiver = shared.snapshots.receive(group).map_err(storage_status)?;
    let mut chunk = first;
    let mut total = 0u64;
    loop {
        total = total.saturating_add(chunk.data.len() as u64);
        if total > config.max_snapshot_bytes {
            let detail = format!("the snapshot exceeds max_snapshot_bytes ({})", config.max_snapshot_bytes);
            return Err(Status::resource_exhausted(detail));
        }
        receiver = accept(receiver, chunk.data).await?;
        if chunk.last {
            break;
        }
        chunk = next_chunk(stream, config.snapshot_chunk_timeout)
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before its last chunk"))?;
        if chunk.group_id != group.0 || chunk.message.is_some() || chunk.metadata.is_some() {
            let detail = format!("a later chunk names group {} or repeats the first chunk's message", chunk.group_id);
            return Err(Status::invalid_argument(detail));
        }
    }
    let file = tokio::task::spawn_blocking(move || receiver.finish())
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(storage_status)?;
    if file.metadata != incoming.metadata {
        let _ = std::fs::remove_file(&file.path);
        return Err(Status::invalid_argument("the file's snapshot metadata differs from the message's"));
    }
    Ok((incoming, file, claim))
}

/// The next chunk, `None` at the end of the stream; a silent sender times out.
async fn next_chunk(stream: &mut Streaming<SnapshotChunk>, timeout: Duration) -> Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(next) => next,
        Err(_) => Err(Status::deadline_exceeded(format!("no snapshot chunk for {timeout:?}"))),
    }
}

/// Validates the first chunk: it carries an InstallSnapshot message from a
/// peer to this node, for the chunk's group, with matching metadata.
fn check_first(mut chunk: SnapshotChunk, local: NodeId) -> Result<(Incoming, SnapshotChunk), String> {
    let group = GroupId(chunk.group_id);
    let message = chunk.message.take().ok_or("the first chunk carries no InstallSnapshot message")?;
    let message = codec::message_from_proto(message).map_err(|e| format!("group {group}: {e}"))?;
    if message.kind != MessageKind::InstallSnapshot {
        return Err(format!("group {group}: the first chunk carries a {:?} message", message.kind));
    }
    if message.from == local || message.to != local {
        return Err(format!(
            "group {group}: a snapshot from node {} to node {}, but this is node {local}",
            message.from, message.to
        ));
    }
    let metadata = message.snapshot.as_ref().map(|s| s.metadata.clone()).unwrap_or_default();
    if let Some(sent) = chunk.metadata.take() {
        if codec::metadata_from_proto(sent).map_err(|e| format!("group {group}: {e}"))? != metadata {
            return Err(format!("group {group}: the chunk's metadata differs from the message's"));
        }
    }
    Ok((Incoming { from: message.from, group, message, metadata }, chunk))
}

/// Verifies and writes one chunk on the blocking pool. On failure the
/// receiver is dropped here, which removes its temp file.
async fn accept(mut receiver: SnapshotReceiver, data: Vec<u8>) -> Result<SnapshotReceiver, Status> {
    let (receiver, accepted) = tokio::task::spawn_blocking(move || {
        let accepted = receiver.accept(&data);
        (receiver, accepted)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?;
    accepted.map_err(storage_status)?;
    Ok(receiver)
}

fn storage_status(error: StorageError) -> Status {
    match error {
        StorageError::BadSnapshotChunk { .. } => Status::invalid_argument(error.to_string()),
        other => Status::internal(other.to_string()),
    }
}
