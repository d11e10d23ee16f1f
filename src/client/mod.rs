//! The Rust client of Flotilla's `Kv` service, used by `flotilla kv` and
//! `flotilla bench`; `admin_cli` is `flotilla admin` (the `Admin` service).
//!
//! **Owns:** connections to the given endpoints and to the leaders that
//! nodes name (one lazily connected channel per address), the routing cache (the
//! shard ring, its size learned from `flotilla-shards`; each shard's leader
//! from `flotilla-leader`), retries with exponential backoff and jitter
//! within a total timeout, and the rule for writes whose outcome is
//! unknown: puts and deletes are sent again (see [`Client::put`]), a
//! compare-and-swap never is ([`ClientError::OutcomeUnknown`]).
//! **Must not:** depend on the node's internals (it speaks only the wire
//! API and the placement crate's fixed key -> shard mapping), hide an
//! unknown outcome of a compare-and-swap, or retry an invalid argument.

pub mod admin_cli;
pub mod cli;
mod error;
mod retry;
mod routing;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flotilla_placement::ShardRing;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

pub use error::ClientError;
pub(crate) use retry::request_never_sent;
use retry::{classify, Backoff, CallKind, Verdict};
pub(crate) use routing::endpoint_uri;
use routing::{Hints, Routing};

use crate::proto::kv_client::KvClient;
use crate::proto::{CompareAndSwapRequest, DeleteRequest, GetRequest, PutRequest, ScanRequest};

/// Timeouts and retry pacing of a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The deadline of one attempt, sent as its gRPC deadline.
    pub request_timeout: Duration,
    /// How long one call may take with all its retries.
    pub total_timeout: Duration,
    /// How long connecting to a node may take.
    pub connect_timeout: Duration,
    /// The first wait between attempts; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// The result of [`Client::compare_and_swap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasResult {
    /// Whether the comparison matched and the swap was applied.
    pub succeeded: bool,
    /// The key's value when the comparison was made (before any swap);
    /// `None` when the key did not exist.
    pub current: Option<Vec<u8>>,
}

/// One page of a scan: see [`Client::scan_page`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    /// More matching keys may follow the last item.
    pub more: bool,
}

/// Responses as large as a scan page (4 MiB budget plus one item) must
/// decode; tonic's default limit is 4 MiB.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Waited past an attempt's deadline for the server's own answer (which it
/// sends just before the deadline) before giving up on the attempt here.
const ATTEMPT_GRACE: Duration = Duration::from_millis(200);
/// What a total timeout too large for `Instant` means.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Redirects to a named leader followed at once, before backing off: a
/// stale hint must not bounce a call between two nodes at full speed.
const IMMEDIATE_REDIRECTS: u32 = 3;

/// A client of a Flotilla cluster. Cheap to clone; clones share
/// connections and the routing cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// The endpoints given, as URIs.
    endpoints: Vec<String>,
    options: ClientOptions,
    channels: Mutex<HashMap<String, Channel>>,
    routing: Mutex<Routing>,
    next_endpoint: AtomicUsize,
}

impl Client {
    /// A client of the nodes at `endpoints` (`host:port`, or URIs). Nothing
    /// is connected here: connections are made on first use, so this needs
    /// no runtime, and a node that is down only costs a retry.
    pub fn connect(endpoints: Vec<String>, options: ClientOptions) -> Result<Client, ClientError> {
        let endpoints: Vec<String> =
            endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).map(endpoint_uri).collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for endpoint in &endpoints {
            Endpoint::from_shared(endpoint.clone()).map_err(|error| ClientError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                detail: error.to_string(),
            })?;
        }
        let inner = Inner {
            endpoints,
            options,
            channels: Mutex::new(HashMap::new()),
            routing: Mutex::new(Routing::default()),
            next_endpoint: AtomicUsize::new(0),
        };
        Ok(Client { inner: Arc::new(inner) })
    }

    /// A linearizable read: `None` when the key does not exist.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>, ClientError> {
        self.read(key.into(), false).await
    }

    /// A read that any replica may answer from its own state, which may lag
    /// behind the latest writes.
    pub async fn get_stale(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>, ClientError> {
        self.read(key.into(), true).await
    }

    async fn read(&self, key: Vec<u8>, stale_ok: bool) -> Result<Option<Vec<u8>>, ClientError> {
        let request = GetRequest { key, stale_ok };
        let response = self.run(Some(&request.key), CallKind::Read, &request, |mut client, request| async move {
            client.get(request).await
        });
        let response = response.await?;
        Ok(response.found.then_some(response.value))
    }

    /// Sets `key` to `value`.
    ///
    /// An attempt whose outcome is unknown (the connection broke, the leader
    /// changed, the deadline passed after it was sent) is sent again: a put
    /// applied twice leaves the same final state as one. The one caveat is
    /// a concurrent writer of the same key: a delayed first attempt could
    /// land after that writer's put. Use [`Client::compare_and_swap`] where
    /// that matters. If the call gives up after such an attempt, it returns
    /// [`ClientError::OutcomeUnknown`].
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<(), ClientError> {
        let request = PutRequest { key: key.into(), value: value.into() };
        self.run(Some(&request.key), CallKind::IdempotentWrite, &request, |mut client, request| async move {
            client.put(request).await
        })
        .await?;
        Ok(())
    }

    /// Removes `key`; returns whether it existed. Retried like
    /// [`Client::put`]; after a retry, `existed` describes the last attempt
    /// (so it can be `false` when an earlier attempt deleted the key).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool, ClientError> {
        let request = DeleteRequest { key: key.into() };
        let response =
            self.run(Some(&request.key), CallKind::IdempotentWrite, &request, |mut client, request| async move {
                client.delete(request).await
            });
        Ok(response.await?.existed)
    }

    /// Sets `key` to `new` (deletes it when `None`) if its current value is
    /// `expected` (`None`: the key must not exist). Never retried once its
    /// outcome is unknown: that is [`ClientError::OutcomeUnknown`].
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<CasResult, ClientError> {
        let request = CompareAndSwapRequest { key: key.into(), expected, new_value: new };
        let response =
            self.run(Some(&request.key), CallKind::CompareAndSwap, &request, |mut client, request| async move {
                client.compare_and_swap(request).await
            });
        let response = response.await?;
        Ok(CasResult { succeeded: response.succeeded, current: response.found.then_some(response.current) })
    }

    /// Up to `limit` keys starting with `prefix` and their values, in key
    /// order, read page by page.
    pub async fn scan(&self, prefix: impl Into<Vec<u8>>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        let prefix = prefix.into();
        let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut start_after = Vec::new();
        while items.len() < limit {
            let want = u32::try_from(limit - items.len()).unwrap_or(u32::MAX);
            let page = self.scan_page(prefix.clone(), start_after.clone(), want).await?;
            let next = page.items.last().map(|(key, _)| key.clone());
            items.extend(page.items);
            match next {
                // Keys must advance, or a confused server would loop us.
                Some(last) if page.more && last > start_after => start_after = last,
                _ => break,
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// One page: keys starting with `prefix` and strictly after
    /// `start_after` (empty: from the first), at most `limit` (0: the
    /// server's default) and at most the server's byte budget.
    pub async fn scan_page(&self, prefix: Vec<u8>, start_after: Vec<u8>, limit: u32) -> Result<ScanPage, ClientError> {
        let request = ScanRequest { prefix, limit, start_after };
        let response =
            self.run(None, CallKind::Read, &request, |mut client, request| async move { client.scan(request).await });
        let response = response.await?;
        let items = response.items.into_iter().map(|item| (item.key, item.value)).collect();
        Ok(ScanPage { items, more: response.more })
    }

    /// Sends `body` with `send` until it succeeds, fails for good, or the
    /// total timeout runs out. `key` routes it to its shard's leader.
    async fn run<Req, Resp, F, Fut>(
        &self,
        key: Option<&[u8]>,
        kind: CallKind,
        body: &Req,
        send: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let options = &self.inner.options;
        let started = Instant::now();
        // Even a "forever" timeout must not overflow `Instant`.
        let give_up = started.checked_add(options.total_timeout).unwrap_or(started + FOREVER);
        let mut backoff = Backoff::new(options.initial_backoff, options.max_backoff);
        let mut attempts = 0u32;
        let mut redirects = 0u32;
        let mut maybe_applied: Option<String> = None;
        let mut last = String::from("no attempt was made within the total timeout");
        loop {
            let remaining = give_up.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            attempts += 1;
            let target = self.target(key);
            let timeout = options.request_timeout.min(remaining);
            let (outcome, hints) = self.attempt(&target, timeout, kind, body, &send).await;
            let redirected = self.learn_leader(key, &target, &hints, outcome.is_ok());
            let verdict = match outcome {
                Ok(response) => return Ok(response),
                Err(verdict) => verdict,
            };
            match verdict {
                // An earlier attempt may have been applied: that, not this
                // attempt's failure, is what the caller must hear.
                Verdict::Fatal(error) => {
                    return Err(match maybe_applied {
                        Some(unknown) => ClientError::OutcomeUnknown(format!(
                            "an attempt may have been applied ({unknown}); a retry then failed: {error}"
                        )),
                        None => error,
                    });
                }
                Verdict::OutcomeUnknown(message) if kind == CallKind::CompareAndSwap => {
                    return Err(ClientError::OutcomeUnknown(message));
                }
                Verdict::OutcomeUnknown(message) => {
                    if kind == CallKind::IdempotentWrite {
                        maybe_applied = Some(message.clone());
                    }
                    last = message;
                }
                Verdict::Retry(message) => last = message,
            }
            tracing::debug!(attempt = attempts, target, error = %last, "retrying a request");
            if redirected && redirects < IMMEDIATE_REDIRECTS {
                redirects += 1;
                continue;
            }
            let wait = backoff.next_wait().min(give_up.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
        }
        let elapsed = started.elapsed();
        Err(match maybe_applied {
            Some(unknown) => ClientError::OutcomeUnknown(format!(
                "gave up after {attempts} attempts in {elapsed:.1?}; an attempt may have been applied ({unknown}); \
                 last error: {last}"
            )),
            None => ClientError::Unavailable { attempts, elapsed, last },
        })
    }

    /// One attempt at `target`: the response, or the verdict on its failure
    /// and the hints its metadata carried.
    async fn attempt<Req, Resp, F, Fut>(
        &self,
        target: &str,
        timeout: Duration,
        kind: CallKind,
        body: &Req,
        send: &F,
    ) -> (Result<Resp, Verdict>, Hints)
    where
        Req: Clone,
        F: Fn(KvClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let client = match self.client_for(target) {
            Ok(client) => client,
            Err(error) => return (Err(Verdict::Retry(error.to_string())), Hints::default()),
        };
        let mut request = tonic::Request::new(body.clone());
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout.saturating_add(ATTEMPT_GRACE), send(client, request)).await {
            Ok(Ok(response)) => {
                let hints = Hints::from_metadata(response.metadata());
                self.learn_ring(&hints);
                (Ok(response.into_inner()), hints)
            }
            Ok(Err(status)) => {
                let hints = Hints::from_metadata(status.metadata());
                self.learn_ring(&hints);
                (Err(classify(&status)), hints)
            }
            Err(_elapsed) => {
                let message = format!("{target} did not answer within {timeout:.1?}");
                let verdict = match kind {
                    CallKind::Read => Verdict::Retry(message),
                    _ => Verdict::OutcomeUnknown(message),
                };
                (Err(verdict), Hints::default())
            }
        }
    }
}

impl Client {
    /// Where the next attempt goes: the cached leader of the key's shard,
    /// else the next endpoint in turn.
    fn target(&self, key: Option<&[u8]>) -> String {
        if let Some(leader) = key.and_then(|key| self.routing().leader_for_key(key)) {
            return leader;
        }
        let endpoints = &self.inner.endpoints;
        let turn = self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed);
        endpoints[turn % endpoints.len()].clone()
    }

    fn routing(&self) -> std::sync::MutexGuard<'_, Routing> {
        self.inner.routing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channel to `target`, made (lazily connected) on first use.
    fn client_for(&self, target: &str) -> Result<KvClient<Channel>, ClientError> {
        let mut channels = self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(target) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(target.to_owned()).map_err(|error| {
                    ClientError::InvalidEndpoint { endpoint: target.to_owned(), detail: error.to_string() }
                })?;
                let channel =
                    endpoint.connect_timeout(self.inner.options.connect_timeout).tcp_nodelay(true).connect_lazy();
                channels.insert(target.to_owned(), channel.clone());
                channel
            }
        };
        Ok(KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// Adopts the ring size a node sent, if it is new. The ring is built
    /// outside the lock (it takes about a millisecond per 1000 shards).
    fn learn_ring(&self, hints: &Hints) {
        let Some(count) = hints.shard_count else { return };
        if self.routing().shard_count() == Some(count) {
            return;
        }
        match ShardRing::new(count) {
            Ok(ring) => self.routing().install_ring(ring),
            Err(error) => tracing::warn!(count, %error, "a node sent an unusable shard count; keeping the old ring"),
        }
    }

    /// Caches the leader an answer named for `key`'s shard, or forgets
    /// `target` as its leader when it failed without naming one; a learned
    /// address that did not answer at all is distrusted for a while (see
    /// `Routing::mark_unreachable`). Returns
    /// whether a failed attempt named a different leader to go to now.
    fn learn_leader(&self, key: Option<&[u8]>, target: &str, hints: &Hints, succeeded: bool) -> bool {
        let (mut routing, now) = (self.routing(), Instant::now());
        // Every answer carries the shard count: none means no answer came.
        let answered = succeeded || hints.shard_count.is_some();
        if answered {
            routing.mark_reachable(target);
        } else if !self.inner.endpoints.iter().any(|endpoint| endpoint == target) {
            // An address learned from a hint; the given endpoints stay in
            // the rotation whatever happens.
            routing.mark_unreachable(target, now);
        }
        let Some(key) = key else { return false };
        match &hints.leader {
            Some(leader) => {
                routing.learn_leader(key, leader.clone(), now);
                !succeeded && leader != target
            }
            None => {
                if !succeeded {
                    routing.forget_leader(key, target);
                }
                false
            }
        }
    }
}
