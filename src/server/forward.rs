//! Proxying a request to the node that can serve it: the shard's leader
//! (from the node's hint) or, when this node holds no replica of the shard,
//! one that does. One lazily connected channel per address, kept for the
//! life of the service.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::status::{response_metadata, CallContext, Failure};
use super::{FORWARDED_HEADER, LEADER_HEADER, SHARDS_HEADER};
use crate::client::{endpoint_uri, request_never_sent};
use crate::proto::kv_client::KvClient;

/// How long connecting to another node may take before the forward fails
/// as "not sent" (and the client retries elsewhere).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Responses relayed from another node: a scan page may exceed the 4 MiB
/// budget by one item, above tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// What a forwarded request does, which decides what a transport failure
/// after it was sent means: a read can simply be tried again, a write may
/// have been applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Read,
    Write,
}

#[derive(Default)]
pub(super) struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
    /// Spreads forwards for shards this node does not host over their
    /// replicas.
    next_replica: AtomicUsize,
}

impl Forwarder {
    /// Picks one of `candidates` (client addresses), round-robin.
    pub fn pick<'a>(&self, candidates: &[&'a str]) -> Option<&'a str> {
        if candidates.is_empty() {
            return None;
        }
        let turn = self.next_replica.fetch_add(1, Ordering::Relaxed);
        Some(candidates[turn % candidates.len()])
    }

    /// Sends `body` to the node at `address` with `send` (one `KvClient`
    /// method), marked as forwarded and with what is left of the deadline,
    /// and relays the answer with this node's metadata.
    pub async fn forward<Req, Resp, F, Fut>(
        &self,
        address: &str,
        body: Req,
        call: &CallContext,
        kind: Kind,
        shard_count: u32,
        send: F,
    ) -> Result<tonic::Response<Resp>, Failure>
    where
        F: FnOnce(KvClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let client = self.client(address)?;
        let remaining = call.hard_deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::new(Code::DeadlineExceeded, "the deadline passed before the request was forwarded"));
        }
        let mut request = tonic::Request::new(body);
        request.set_timeout(remaining);
        request.metadata_mut().insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
        tracing::debug!(address, ?remaining, "forwarding a request");
        match tokio::time::timeout_at(call.hard_deadline.into(), send(client, request)).await {
            Err(_elapsed) => Err(Failure::timed_out(kind == Kind::Write)),
            Ok(Ok(response)) => {
                let leader = response.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let mut relayed = tonic::Response::new(response.into_inner());
                *relayed.metadata_mut() = response_metadata(shard_count, leader.as_deref());
                Ok(relayed)
            }
            Ok(Err(status)) => Err(relay_failure(&status, kind, address)),
        }
    }

    fn client(&self, address: &str) -> Result<KvClient<Channel>, Failure> {
        Ok(KvClient::new(self.channel(address)?).max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// The lazily connected channel to the node at `address`, shared by
    /// every service that asks that node something.
    pub fn channel(&self, address: &str) -> Result<Channel, Failure> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(endpoint_uri(address)).map_err(|error| {
                    Failure::unavailable(format!("cannot forward to {address:?}: not a valid address ({error})"))
                })?;
                let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy();
                channels.insert(address.to_owned(), channel.clone());
                channel
            }
        };
        Ok(channel)
    }
}

/// What the client is told when a forwarded request failed.
fn relay_failure(status: &Status, kind: Kind, address: &str) -> Failure {
    let leader = status.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Every answer of a Flotilla node carries the ring size; a status
    // without it was made by the transport on the way.
    if status.metadata().contains_key(SHARDS_HEADER) {
        return Failure { code: status.code(), message: status.message().to_owned(), leader };
    }
    if request_never_sent(status) {
        return Failure::unavailable(format!("could not reach {address} to forward the request: {}", status.message()));
    }
    let code = match status.code() {
        Code::Cancelled | Code::DeadlineExceeded => Code::DeadlineExceeded,
        _ => Code::Unavailable,
    };
    let detail = format!("{} ({:?})", status.message(), status.code());
    match kind {
        Kind::Read => Failure::new(code, format!("the read forwarded to {address} failed: {detail}")),
        Kind::Write => Failure::new(
            code,
            format!("outcome unknown: the write forwarded to {address} was not answered: {detail}; it may be applied"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    #[test]
    fn replicas_are_picked_in_turn() {
        let forwarder = Forwarder::default();
        assert_eq!(forwarder.pick(&[]), None);
        let picks: Vec<_> = (0..4).filter_map(|_| forwarder.pick(&["a", "b"])).collect();
        assert_eq!(picks.iter().filter(|&&p| p == "a").count(), 2);
        assert_eq!(picks.iter().filter(|&&p| p == "b").count(), 2);
    }

    #[test]
    fn a_remote_nodes_answer_is_relayed_as_it_is() {
        let status = Failure::unavailable("node 2 does not lead shard 1").with_leader(Some("n3:7001".into()));
        let failure = relay_failure(&status.into_status(16), Kind::Write, "n2:7001");
        assert_eq!(failure.code, Code::Unavailable);
        assert_eq!(failure.message, "node 2 does not lead shard 1");
        assert_eq!(failure.leader.as_deref(), Some("n3:7001"));
        let invalid = Failure::invalid("key is empty").into_status(16);
        assert_eq!(relay_failure(&invalid, Kind::Read, "n2:7001"), Failure::invalid("key is empty"));
    }

    #[test]
    fn a_transport_failure_after_sending_a_write_is_an_unknown_outcome() {
        let broken = Status::with_metadata(Code::Unknown, "connection reset", MetadataMap::new());
        let failure = relay_failure(&broken, Kind::Write, "n2:7001");
        assert_eq!(failure.code, Code::Unavailable);
        assert!(failure.message.contains("outcome unknown") && failure.message.contains("n2:7001"));
        let failure = relay_failure(&broken, Kind::Read, "n2:7001");
        assert!(failure.code == Code::Unavailable && !failure.message.contains("outcome unknown"));
        let cancelled = Status::cancelled("Timeout expired");
        let failure = relay_failure(&cancelled, Kind::Write, "n2:7001");
        assert_eq!(failure.code, Code::DeadlineExceeded);
        assert!(failure.message.contains("outcome unknown"));
    }
}
