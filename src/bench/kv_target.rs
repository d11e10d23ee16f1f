//! Where `flotilla bench` sends its calls: a Flotilla cluster through the
//! client library (what a user of `flotilla::client` gets: routing to the
//! shard leader, retries within the client's timeouts), or an etcd v3
//! cluster through etcd's own gRPC KV API, for a side-by-side comparison.
//!
//! etcd is driven the way its own benchmark tool drives it: one attempt per
//! call with the same per-request deadline as the Flotilla client, puts as
//! `Put` (a member that is not the leader forwards it), gets as a `Range`
//! of one key with `serializable = false`, which etcd serves linearizably
//! (ReadIndex through the leader), as Flotilla serves [`Client::get`].
//! Each [`Target`] is one HTTP/2 connection to one member; the load tool
//! hands them to its tasks round-robin, so the load spreads evenly over the
//! members.
//!
//! A failed call is counted under its gRPC status code name
//! (`UNAVAILABLE`, ...). The Flotilla client folds retried attempts into
//! one [`ClientError`]; its kinds map to the code that describes them.

use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::kv::TargetKind;
use super::{BenchError, Result};
use crate::client::{endpoint_uri, Client, ClientError, ClientOptions};

/// etcd's v3 wire types and KV client stub, from `proto/etcd/rpc.proto`.
mod etcd_wire {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

use etcd_wire::kv_client::KvClient as EtcdKvClient;
use etcd_wire::{PutRequest as EtcdPut, RangeRequest as EtcdRange};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Get,
    Put,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
        }
    }
}

/// How a call that returned ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A put was applied, or a get found its key.
    Ok,
    /// A get found no value.
    NotFound,
    /// The call failed; the gRPC status code name.
    Failed(&'static str),
}

/// One connection (Flotilla: one client, with its own connection to each
/// node; etcd: one channel to one member).
#[derive(Clone)]
pub enum Target {
    Flotilla(Client),
    Etcd(EtcdKvClient<Channel>),
}

impl Target {
    /// The targets the tasks share, in the order they are handed out:
    /// Flotilla, `connections` clients; etcd, `connections` channels to
    /// each endpoint, interleaved (member 1, 2, 3, 1, 2, 3, ...). Nothing is
    /// connected yet: the first call connects.
    pub fn connect(kind: TargetKind, endpoints: &[String], connections: usize) -> Result<Vec<Target>> {
        let invalid = |detail: String| BenchError::Config(format!("--endpoints: {detail}"));
        match kind {
            TargetKind::Flotilla => (0..connections)
                .map(|_| {
                    Client::connect(endpoints.to_vec(), ClientOptions::default())
                        .map(Target::Flotilla)
                        .map_err(|error| invalid(error.to_string()))
                })
                .collect(),
            TargetKind::Etcd => {
                let options = ClientOptions::default();
                let mut targets = Vec::new();
                for _ in 0..connections {
                    for address in endpoints {
                        let endpoint = Endpoint::from_shared(endpoint_uri(address))
                            .map_err(|error| invalid(format!("{address:?}: {error}")))?;
                        let channel =
                            endpoint.connect_timeout(options.connect_timeout).tcp_nodelay(true).connect_lazy();
                        targets.push(Target::Etcd(EtcdKvClient::new(channel)));
                    }
                }
                Ok(targets)
            }
        }
    }

    /// One call: a put of `value` or a get of `key`.
    pub async fn call(&self, op: Op, key: String, value: &[u8]) -> Answer {
        match (self, op) {
            (Target::Flotilla(client), Op::Put) => {
                flotilla_answer(client.put(key, value.to_vec()).await.map(|()| true))
            }
            (Target::Flotilla(client), Op::Get) => flotilla_answer(client.get(key).await.map(|v| v.is_some())),
            (Target::Etcd(client), Op::Put) => {
                let request = EtcdPut { key: key.into_bytes(), value: value.to_vec(), ..EtcdPut::default() };
                etcd_answer(client.clone().put(with_deadline(request)).await.map(|_| true))
            }
            (Target::Etcd(client), Op::Get) => {
                // serializable = false (the default): a linearizable read.
                let request = EtcdRange { key: key.into_bytes(), serializable: false, ..EtcdRange::default() };
                etcd_answer(client.clone().range(with_deadline(request)).await.map(|r| !r.into_inner().kvs.is_empty()))
            }
        }
    }
}

/// A request with the Flotilla client's per-attempt deadline, so a stuck
/// etcd call ends the way a stuck Flotilla attempt does.
fn with_deadline<T>(body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.set_timeout(ClientOptions::default().request_timeout);
    request
}

fn flotilla_answer(result: std::result::Result<bool, ClientError>) -> Answer {
    match result {
        Ok(true) => Answer::Ok,
        Ok(false) => Answer::NotFound,
        Err(error) => Answer::Failed(client_error_code(&error)),
    }
}

fn etcd_answer(result: std::result::Result<bool, tonic::Status>) -> Answer {
    match result {
        Ok(true) => Answer::Ok,
        Ok(false) => Answer::NotFound,
        Err(status) => Answer::Failed(code_name(status.code())),
    }
}

/// The gRPC status code a Flotilla client error stands for.
pub fn client_error_code(error: &ClientError) -> &'static str {
    match error {
        ClientError::NoEndpoints | ClientError::InvalidEndpoint { .. } | ClientError::InvalidArgument(_) => {
            code_name(Code::InvalidArgument)
        }
        // Every attempt failed with a retryable status until the call's
        // total timeout ran out.
        ClientError::Unavailable { .. } => code_name(Code::Unavailable),
        // A write was sent and its fate is unknown (gRPC's UNKNOWN: the
        // client cannot tell what the server did).
        ClientError::OutcomeUnknown(_) => code_name(Code::Unknown),
        ClientError::Server { code, .. } => code_name(*code),
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message;

    use super::*;

    #[test]
    fn client_errors_count_under_their_grpc_code() {
        let unavailable =
            ClientError::Unavailable { attempts: 3, elapsed: Duration::from_secs(30), last: "no leader".into() };
        assert_eq!(client_error_code(&unavailable), "UNAVAILABLE");
        assert_eq!(client_error_code(&ClientError::OutcomeUnknown("x".into())), "UNKNOWN");
        assert_eq!(client_error_code(&ClientError::InvalidArgument("key too long".into())), "INVALID_ARGUMENT");
        let server = ClientError::Server { code: Code::DataLoss, message: "storage".into() };
        assert_eq!(client_error_code(&server), "DATA_LOSS");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn etcd_messages_use_etcds_field_numbers() {
        // RangeRequest: key = 1 (bytes), serializable = 7 (bool).
        let range = EtcdRange { key: b"k".to_vec(), serializable: true, ..EtcdRange::default() };
        assert_eq!(range.encode_to_vec(), [0x0a, 1, b'k', 7 << 3, 1]);
        // PutRequest: key = 1, value = 2.
        let put = EtcdPut { key: b"k".to_vec(), value: b"v".to_vec(), ..EtcdPut::default() };
        assert_eq!(put.encode_to_vec(), [0x0a, 1, b'k', 0x12, 1, b'v']);
        // RangeResponse: kvs = 2, each a KeyValue with key = 1, value = 5;
        // more = 3; a field this subset does not know (15) is skipped.
        let wire = [0x12, 6, 0x0a, 1, b'k', 0x2a, 1, b'v', 3 << 3, 1, 15 << 3, 1];
        let response = etcd_wire::RangeResponse::decode(&wire[..]).unwrap();
        assert_eq!(response.kvs.len(), 1);
        assert_eq!((response.kvs[0].key.as_slice(), response.kvs[0].value.as_slice()), (&b"k"[..], &b"v"[..]));
        assert!(response.more);
    }

    /// A lazily connected channel starts its worker on the runtime.
    #[tokio::test]
    async fn etcd_has_one_target_per_member_and_connection() {
        let endpoints = vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        assert_eq!(Target::connect(TargetKind::Etcd, &endpoints, 2).unwrap().len(), 4);
        assert_eq!(Target::connect(TargetKind::Flotilla, &endpoints, 3).unwrap().len(), 3);
        let bad = Target::connect(TargetKind::Etcd, &["not a uri".to_owned()], 1).err().unwrap().to_string();
        assert!(bad.contains("--endpoints"), "{bad}");
    }
}
