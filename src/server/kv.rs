//! The `Kv` service: one key's requests go to its shard on this node, or
//! are forwarded once to the node that can serve them; `Scan` reads every
//! shard (see `scan`).

use std::future::Future;
use std::time::Instant;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::forward::{Forwarder, Kind};
use super::scan::{self, ScanRange};
use super::status::{check_key, check_length, check_value, response_metadata, CallContext, Failure};
use super::ServerConfig;
use crate::kv::{Command, CommandResult};
use crate::metrics::{Method, RequestMetrics};
use crate::multiraft::{NodeHandle, Operation, Outcome, RequestError, ShardId};
use crate::proto::kv_client::KvClient;
use crate::proto::kv_server::Kv;
use crate::proto::{
    CompareAndSwapRequest, CompareAndSwapResponse, DeleteRequest, DeleteResponse, GetRequest, GetResponse, PutRequest,
    PutResponse, ScanRequest, ScanResponse,
};

pub struct KvService {
    node: NodeHandle,
    config: ServerConfig,
    /// Shared with a scan's per-shard tasks.
    forwarder: std::sync::Arc<Forwarder>,
    metrics: RequestMetrics,
}

/// Where a single-key request ended up.
enum Routed {
    /// Served by this node.
    Here(Outcome),
    /// To be sent, once, to the node at this client address.
    Forward(String),
}

impl KvService {
    pub fn new(node: NodeHandle, config: ServerConfig) -> KvService {
        let metrics = node.stats().metrics.requests.clone();
        KvService { node, config, forwarder: std::sync::Arc::new(Forwarder::default()), metrics }
    }

    fn status(&self, failure: Failure) -> Status {
        failure.into_status(self.node.shard_count())
    }

    /// A successful answer. `served_by_leader`: only the shard's leader can
    /// have served it (a write), so this node's address is a leader hint
    /// worth caching. Not a read: a follower serves a linearizable read
    /// itself (ReadIndex through the leader), and naming it would send the
    /// client's next writes of the shard to a follower.
    fn reply<T>(&self, body: T, served_by_leader: bool) -> Response<T> {
        let own = if served_by_leader { self.node.address_of(self.node.node_id()) } else { None };
        let mut response = Response::new(body);
        *response.metadata_mut() = response_metadata(self.node.shard_count(), own);
        response
    }

    /// Runs `operation` on this node's replica of `shard`, or says where
    /// to forward it.
    async fn route(&self, shard: ShardId, operation: Operation, call: &CallContext) -> Result<Routed, Failure> {
        let kind = if matches!(operation, Operation::Write(_)) { Kind::Write } else { Kind::Read };
        if !self.node.hosts(shard) {
            return self.replica_elsewhere(shard, call);
        }
        let answer =
            tokio::time::timeout_at(call.hard_deadline.into(), self.node.call(shard, operation, call.deadline));
        match answer.await {
            Err(_elapsed) => Err(Failure::timed_out(kind == Kind::Write)),
            Ok(Ok(outcome)) => Ok(Routed::Here(outcome)),
            Ok(Err(RequestError::NotLeader { leader: Some((leader, address)), .. }))
                if !call.forwarded && leader != self.node.node_id() =>
            {
                Ok(Routed::Forward(address))
            }
            Ok(Err(error)) => Err(Failure::from_request_error(&error, call.deadline_passed(Instant::now()))),
        }
    }

    /// A shard this node holds no replica of: forward to a node that does.
    fn replica_elsewhere(&self, shard: ShardId, call: &CallContext) -> Result<Routed, Failure> {
        let unhosted = format!("node {} holds no replica of shard {}", self.node.node_id(), shard.0);
        if call.forwarded {
            return Err(Failure::unavailable(format!("{unhosted}; the request was already forwarded once")));
        }
        let candidates: Vec<&str> = self.node.replicas(shard).iter().filter_map(|&n| self.node.address_of(n)).collect();
        match self.forwarder.pick(&candidates) {
            Some(address) => Ok(Routed::Forward(address.to_owned())),
            None => Err(Failure::unavailable(format!("{unhosted}, and no node is known to hold one"))),
        }
    }

    /// Sends the request on to the node at `address` (see `Forwarder`).
    async fn forward<Req, Resp, F, Fut>(
        &self,
        address: &str,
        body: Req,
        call: &CallContext,
        kind: Kind,
        send: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(KvClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let shard_count = self.node.shard_count();
        self.forwarder.forward(address, body, call, kind, shard_count, send).await.map_err(|f| self.status(f))
    }

    fn call_context<T>(&self, request: &Request<T>) -> CallContext {
        CallContext::from_metadata(request.metadata(), &self.config, Instant::now())
    }
}

/// Every RPC a client sent is counted (by method and status code) and
/// timed here, whatever path answered it: served, forwarded or refused.
/// What another node forwarded here (a request, or one shard's page of a
/// scan) was counted by that node, where the client's call arrived.
#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let forwarded = forwarded(&request);
        self.measured(Method::Get, forwarded, self.serve_get(request)).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let forwarded = forwarded(&request);
        self.measured(Method::Put, forwarded, self.serve_put(request)).await
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let forwarded = forwarded(&request);
        self.measured(Method::Delete, forwarded, self.serve_delete(request)).await
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let forwarded = forwarded(&request);
        self.measured(Method::CompareAndSwap, forwarded, self.serve_compare_and_swap(request)).await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let forwarded = forwarded(&request);
        self.measured(Method::Scan, forwarded, self.serve_scan(request)).await
    }
}

impl KvService {
    /// Awaits `served` and records its status code and latency. A request
    /// whose client went away (the future is dropped) counts as CANCELLED.
    async fn measured<T>(
        &self,
        method: Method,
        forwarded: bool,
        served: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        if forwarded {
            return served.await;
        }
        let mut observed = Observed { metrics: &self.metrics, method, started: Instant::now(), code: None };
        let result = served.await;
        observed.code = Some(result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        result
    }

    async fn serve_get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let call = self.call_context(&request);
        let body = request.into_inner();
        check_key("key", &body.key, &self.config).map_err(|f| self.status(f))?;
        let shard = self.node.shard_for_key(&body.key);
        let linearizable = !body.stale_ok;
        let operation = Operation::Get { key: body.key.clone(), linearizable };
        let outcome = match self.route(shard, operation, &call).await.map_err(|f| self.status(f))? {
            Routed::Here(outcome) => outcome,
            Routed::Forward(to) => {
                return self.forward(&to, body, &call, Kind::Read, |mut c, r| async move { c.get(r).await }).await;
            }
        };
        let response = get_response(shard, outcome).map_err(|f| self.status(f))?;
        Ok(self.reply(response, false))
    }

    async fn serve_put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let call = self.call_context(&request);
        let body = request.into_inner();
        check_key("key", &body.key, &self.config)
            .and_then(|()| check_value("value", &body.value, &self.config))
            .map_err(|f| self.status(f))?;
        let command = Command::Put { key: body.key.clone(), value: body.value.clone() };
        let result = match self.write(command, &call).await.map_err(|f| self.status(f))? {
            Routed::Here(outcome) => written(outcome),
            Routed::Forward(to) => {
                return self.forward(&to, body, &call, Kind::Write, |mut c, r| async move { c.put(r).await }).await;
            }
        };
        let response = result.and_then(put_response).map_err(|f| self.status(f))?;
        Ok(self.reply(response, true))
    }

    async fn serve_delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let call = self.call_context(&request);
        let body = request.into_inner();
        check_key("key", &body.key, &self.config).map_err(|f| self.status(f))?;
        let command = Command::Delete { key: body.key.clone() };
        let result = match self.write(command, &call).await.map_err(|f| self.status(f))? {
            Routed::Here(outcome) => written(outcome),
            Routed::Forward(to) => {
                return self.forward(&to, body, &call, Kind::Write, |mut c, r| async move { c.delete(r).await }).await;
            }
        };
        let response = result.and_then(delete_response).map_err(|f| self.status(f))?;
        Ok(self.reply(response, true))
    }

    async fn serve_compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        let call = self.call_context(&request);
        let body = request.into_inner();
        check_key("key", &body.key, &self.config)
            .and_then(|()| body.expected.as_deref().map_or(Ok(()), |v| check_value("expected value", v, &self.config)))
            .and_then(|()| body.new_value.as_deref().map_or(Ok(()), |v| check_value("new value", v, &self.config)))
            .map_err(|f| self.status(f))?;
        let command = Command::CompareAndSwap {
            key: body.key.clone(),
            expected: body.expected.clone(),
            new: body.new_value.clone(),
        };
        let result = match self.write(command, &call).await.map_err(|f| self.status(f))? {
            Routed::Here(outcome) => written(outcome),
            Routed::Forward(to) => {
                return self
                    .forward(&to, body, &call, Kind::Write, |mut c, r| async move { c.compare_and_swap(r).await })
                    .await;
            }
        };
        let response = result.and_then(compare_and_swap_response).map_err(|f| self.status(f))?;
        Ok(self.reply(response, true))
    }

    async fn serve_scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let call = self.call_context(&request);
        let request_shard = request.metadata().get(super::SHARD_HEADER).cloned();
        let body = request.into_inner();
        check_length("prefix", &body.prefix, self.config.max_key_bytes)
            .and_then(|()| check_length("start_after", &body.start_after, self.config.max_key_bytes))
            .map_err(|f| self.status(f))?;
        let limit = scan::effective_limit(body.limit, self.config.scan_default_limit, self.config.scan_max_limit);
        let Some(range) = ScanRange::new(&body.prefix, &body.start_after) else {
            return Ok(self.reply(ScanResponse { items: Vec::new(), more: false }, false));
        };
        if let Some(shard) = scan::shard_scope(request_shard.as_ref(), self.node.shard_count()) {
            let shard = shard.map_err(|f| self.status(f))?;
            let max_bytes = self.config.scan_max_bytes;
            let page = scan::local_page(&self.node, shard, &range, limit, max_bytes, &call)
                .await
                .map_err(|f| self.status(f))?;
            let items = page.pairs.into_iter().map(|(key, value)| crate::proto::KeyValue { key, value }).collect();
            return Ok(self.reply(ScanResponse { items, more: page.full }, false));
        }
        let max_bytes = self.config.scan_max_bytes;
        let request =
            scan::Request { prefix: &body.prefix, start_after: &body.start_after, range: &range, limit, max_bytes };
        let pages = scan::gather(&self.node, &self.forwarder, &request, &call).await.map_err(|f| self.status(f))?;
        let page = scan::merge(pages, limit, self.config.scan_max_bytes);
        Ok(self.reply(ScanResponse { items: page.items, more: page.more }, false))
    }

    async fn write(&self, command: Command, call: &CallContext) -> Result<Routed, Failure> {
        let shard = self.node.shard_for_key(command.key());
        self.route(shard, Operation::Write(command), call).await
    }
}

/// Whether another node sent this request (see `Forwarder`).
fn forwarded<T>(request: &Request<T>) -> bool {
    let metadata = request.metadata();
    metadata.contains_key(super::FORWARDED_HEADER) || metadata.contains_key(super::SHARD_HEADER)
}

/// Records one request when dropped: after its answer, or when the client
/// went away mid-request (then as CANCELLED).
struct Observed<'a> {
    metrics: &'a RequestMetrics,
    method: Method,
    started: Instant,
    code: Option<tonic::Code>,
}

impl Drop for Observed<'_> {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        self.metrics.observe(self.method, code, self.started.elapsed());
    }
}

/// The command result of a write's outcome. Any other outcome means the
/// node answered a different question: a bug, reported, never a panic.
fn written(outcome: Outcome) -> Result<CommandResult, Failure> {
    match outcome {
        Outcome::Written(CommandResult::Rejected(reason)) => {
            Err(Failure::invalid(format!("the command was rejected: {reason}")))
        }
        Outcome::Written(result) => Ok(result),
        other => Err(mismatch("a write", &other)),
    }
}

fn mismatch(what: &str, answer: &dyn std::fmt::Debug) -> Failure {
    tracing::error!(?answer, "the node answered {what} with the wrong kind of outcome");
    Failure::internal(format!("the node answered {what} with an unexpected outcome: {answer:?}"))
}

fn get_response(shard: ShardId, outcome: Outcome) -> Result<GetResponse, Failure> {
    match outcome {
        Outcome::Value(value) => Ok(GetResponse { found: value.is_some(), value: value.unwrap_or_default() }),
        other => Err(mismatch(&format!("a read of shard {}", shard.0), &other)),
    }
}

fn put_response(result: CommandResult) -> Result<PutResponse, Failure> {
    match result {
        CommandResult::Put => Ok(PutResponse {}),
        other => Err(mismatch("a put", &other)),
    }
}

fn delete_response(result: CommandResult) -> Result<DeleteResponse, Failure> {
    match result {
        CommandResult::Delete { existed } => Ok(DeleteResponse { existed }),
        other => Err(mismatch("a delete", &other)),
    }
}

fn compare_and_swap_response(result: CommandResult) -> Result<CompareAndSwapResponse, Failure> {
    match result {
        CommandResult::CompareAndSwap { succeeded, previous } => {
            Ok(CompareAndSwapResponse { succeeded, found: previous.is_some(), current: previous.unwrap_or_default() })
        }
        other => Err(mismatch("a compare-and-swap", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn compare_and_swap_results_map_to_found_and_current() {
        let swapped = CommandResult::CompareAndSwap { succeeded: true, previous: Some(b"old".to_vec()) };
        assert_eq!(
            compare_and_swap_response(swapped).unwrap(),
            CompareAndSwapResponse { succeeded: true, found: true, current: b"old".to_vec() }
        );
        let absent = CommandResult::CompareAndSwap { succeeded: false, previous: None };
        assert_eq!(
            compare_and_swap_response(absent).unwrap(),
            CompareAndSwapResponse { succeeded: false, found: false, current: vec![] }
        );
        // An empty value is a value: found, with empty bytes.
        let empty = CommandResult::CompareAndSwap { succeeded: false, previous: Some(vec![]) };
        assert!(compare_and_swap_response(empty).unwrap().found);
    }

    #[test]
    fn results_map_to_their_responses() {
        assert_eq!(put_response(CommandResult::Put).unwrap(), PutResponse {});
        assert_eq!(delete_response(CommandResult::Delete { existed: true }).unwrap(), DeleteResponse { existed: true });
        let found = get_response(ShardId(0), Outcome::Value(Some(b"v".to_vec()))).unwrap();
        assert_eq!(found, GetResponse { found: true, value: b"v".to_vec() });
        let missing = get_response(ShardId(0), Outcome::Value(None)).unwrap();
        assert_eq!(missing, GetResponse { found: false, value: vec![] });
    }

    #[test]
    fn mismatched_outcomes_are_internal_errors_not_panics() {
        let failure = put_response(CommandResult::Delete { existed: false }).unwrap_err();
        assert_eq!(failure.code, Code::Internal);
        assert!(failure.message.contains("a put"), "{}", failure.message);
        assert_eq!(delete_response(CommandResult::NoOp).unwrap_err().code, Code::Internal);
        assert_eq!(compare_and_swap_response(CommandResult::Put).unwrap_err().code, Code::Internal);
        let failure = get_response(ShardId(3), Outcome::Pairs(crate::kv::ScanPage::default())).unwrap_err();
        assert!(failure.code == Code::Internal && failure.message.contains("shard 3"), "{}", failure.message);
        assert_eq!(written(Outcome::Value(None)).unwrap_err().code, Code::Internal);
    }

    #[test]
    fn a_rejected_command_is_an_invalid_argument() {
        let failure = written(Outcome::Written(CommandResult::Rejected("bad tag".into()))).unwrap_err();
        assert_eq!(failure.code, Code::InvalidArgument);
        assert!(failure.message.contains("bad tag"));
        assert_eq!(written(Outcome::Written(CommandResult::Put)).unwrap(), CommandResult::Put);
    }
}
