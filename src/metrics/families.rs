//! The metrics each layer records where its event happens, as typed
//! handles: the event loop's ([`RuntimeMetrics`], through its thread-local
//! [`LoopRecorder`]), the peer transport's ([`PeerMetrics`]) and the client
//! services' ([`RequestMetrics`]). Names, help texts, buckets and labels are
//! defined here and nowhere else.
//!
//! Every handle is a plain prometheus metric: cheap to clone (an `Arc`),
//! lock-free to record. They are created unregistered (a node's
//! [`NodeStats`](crate::multiraft::NodeStats) always has them, even in the
//! simulator, where nothing gathers them) and registered into the node's
//! registry by [`super::node_registry`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::local::LocalHistogram;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::raft::NodeId;

/// Latency buckets: 50 us doubling to 1.6 s. A synced write on an SSD
/// takes 0.1-2 ms, on a cloud disk 1-10 ms; a request waits for one or two
/// of them plus a network round trip. Above 1.6 s lands in `+Inf`.
fn latency_buckets() -> Vec<f64> {
    (0..16).map(|i| 50e-6 * f64::from(1u32 << i)).collect()
}

/// Log entries per synced write: 1 to 4096 (a turn drains at most 4096
/// client requests).
fn entry_buckets() -> Vec<f64> {
    (0..13).map(|i| f64::from(1u32 << i)).collect()
}

/// Bytes per synced write: 256 B to 16 MiB, by 4x.
fn byte_buckets() -> Vec<f64> {
    (0..9).map(|i| 256.0 * f64::from(1u32 << (2 * i))).collect()
}

// The options below are constants of this file; the unit tests register
// every family, so a bad name or bucket list cannot reach a release.
const VALID: &str = "metric options defined in metrics/families.rs are valid";

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect(VALID)
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect(VALID)
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect(VALID)
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect(VALID)
}

/// What the event loop records: Raft and storage events of all its groups
/// together (never per group: a node hosts thousands).
#[derive(Clone, Debug)]
pub struct RuntimeMetrics {
    pub proposals: IntCounter,
    pub propose_to_commit: Histogram,
    pub commit_to_apply: Histogram,
    pub fsync_latency: Histogram,
    pub fsync_entries: Histogram,
    pub fsync_bytes: Histogram,
    pub elections_started: IntCounter,
    pub elections_won: IntCounter,
    pub pending_proposals: IntGauge,
}

impl Default for RuntimeMetrics {
    fn default() -> RuntimeMetrics {
        RuntimeMetrics {
            proposals: counter(
                "flotilla_raft_proposals_total",
                "Client writes proposed to a Raft group this node leads (one per write, whatever the batching).",
            ),
            propose_to_commit: histogram(
                "flotilla_raft_propose_to_commit_latency_seconds",
                "From the turn that proposed a client write to the turn that saw its entry committed.",
                latency_buckets(),
            ),
            commit_to_apply: histogram(
                "flotilla_raft_commit_to_apply_latency_seconds",
                "Per applied entry: from the turn that saw it committed to the end of the write that applied it.",
                latency_buckets(),
            ),
            fsync_latency: histogram(
                "flotilla_storage_fsync_latency_seconds",
                "Duration of each synced group-commit write (the batch write and its fsync).",
                latency_buckets(),
            ),
            fsync_entries: histogram(
                "flotilla_storage_fsync_entries",
                "Raft log entries (of all groups) made durable by each synced write.",
                entry_buckets(),
            ),
            fsync_bytes: histogram(
                "flotilla_storage_fsync_bytes",
                "Bytes of each synced group-commit write batch.",
                byte_buckets(),
            ),
            elections_started: counter(
                "flotilla_raft_elections_started_total",
                "Elections this node started as a candidate (a new term; pre-votes are not counted).",
            ),
            elections_won: counter("flotilla_raft_elections_won_total", "Times a group on this node became leader."),
            pending_proposals: gauge(
                "flotilla_raft_pending_proposals",
                "Client writes proposed and not yet applied or failed, as of the last tick.",
            ),
        }
    }
}

impl RuntimeMetrics {
    /// Thread-local histograms for the event loop's thread.
    pub fn recorder(&self) -> LoopRecorder {
        LoopRecorder {
            propose_to_commit: self.propose_to_commit.local(),
            commit_to_apply: self.commit_to_apply.local(),
            fsync_latency: self.fsync_latency.local(),
            fsync_entries: self.fsync_entries.local(),
            fsync_bytes: self.fsync_bytes.local(),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.proposals.clone()),
            Box::new(self.propose_to_commit.clone()),
            Box::new(self.commit_to_apply.clone()),
            Box::new(self.fsync_latency.clone()),
            Box::new(self.fsync_entries.clone()),
            Box::new(self.fsync_bytes.clone()),
            Box::new(self.elections_started.clone()),
            Box::new(self.elections_won.clone()),
            Box::new(self.pending_proposals.clone()),
        ]
    }
}

/// The event loop's histograms, observed without atomics and added to the
/// shared ones once per turn by [`LoopRecorder::flush`] (a busy turn
/// observes thousands of entries). Owned by the loop's thread (`!Sync`).
pub struct LoopRecorder {
    propose_to_commit: LocalHistogram,
    commit_to_apply: LocalHistogram,
    fsync_latency: LocalHistogram,
    fsync_entries: LocalHistogram,
    fsync_bytes: LocalHistogram,
}

impl LoopRecorder {
    pub fn proposal_committed(&self, waited: Duration) {
        self.propose_to_commit.observe(waited.as_secs_f64());
    }

    /// `entries` entries applied by a write that ended `waited` after the
    /// turn that saw them committed began.
    pub fn entries_applied(&self, entries: usize, waited: Duration) {
        let seconds = waited.as_secs_f64();
        for _ in 0..entries {
            self.commit_to_apply.observe(seconds);
        }
    }

    pub fn synced(&self, took: Duration, entries: usize, bytes: usize) {
        self.fsync_latency.observe(took.as_secs_f64());
        self.fsync_entries.observe(entries as f64);
        self.fsync_bytes.observe(bytes as f64);
    }

    /// Publishes what this turn observed (a few atomic adds per histogram
    /// that has samples; nothing for the others).
    pub fn flush(&self) {
        self.propose_to_commit.flush();
        self.commit_to_apply.flush();
        self.fsync_latency.flush();
        self.fsync_entries.flush();
        self.fsync_bytes.flush();
    }
}

/// Peer traffic, per peer node (a cluster has a handful of nodes, so the
/// label stays small).
#[derive(Clone, Debug)]
pub struct PeerMetrics {
    messages_sent: IntCounterVec,
    messages_received: IntCounterVec,
    batches_sent: IntCounterVec,
    batches_received: IntCounterVec,
    pub heartbeats_coalesced: IntCounter,
}

/// One peer's counters, resolved once (a label lookup takes a lock; a
/// counter's `inc` does not).
#[derive(Clone, Debug)]
pub struct PeerCounters {
    pub messages_sent: IntCounter,
    pub messages_received: IntCounter,
    pub batches_sent: IntCounter,
    pub batches_received: IntCounter,
}

impl Default for PeerMetrics {
    fn default() -> PeerMetrics {
        PeerMetrics {
            messages_sent: counter_vec(
                "flotilla_transport_messages_sent_total",
                "Raft messages handed to a peer's stream (coalesced heartbeats count one each).",
                &["peer"],
            ),
            messages_received: counter_vec(
                "flotilla_transport_messages_received_total",
                "Raft messages received from a peer and handed to the event loop.",
                &["peer"],
            ),
            batches_sent: counter_vec(
                "flotilla_transport_batches_sent_total",
                "Message batches (stream frames) handed to a peer's stream.",
                &["peer"],
            ),
            batches_received: counter_vec(
                "flotilla_transport_batches_received_total",
                "Non-empty message batches received from a peer.",
                &["peer"],
            ),
            heartbeats_coalesced: counter(
                "flotilla_transport_heartbeats_coalesced_total",
                "Heartbeats and heartbeat responses sent in a batch's compact lists instead of as full messages.",
            ),
        }
    }
}

impl PeerMetrics {
    /// The counters of `peer`; its series exist (at zero) from now on.
    pub fn peer(&self, peer: NodeId) -> PeerCounters {
        let label = peer.0.to_string();
        let label = [label.as_str()];
        PeerCounters {
            messages_sent: self.messages_sent.with_label_values(&label),
            messages_received: self.messages_received.with_label_values(&label),
            batches_sent: self.batches_sent.with_label_values(&label),
            batches_received: self.batches_received.with_label_values(&label),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.messages_sent.clone()),
            Box::new(self.messages_received.clone()),
            Box::new(self.batches_sent.clone()),
            Box::new(self.batches_received.clone()),
            Box::new(self.heartbeats_coalesced.clone()),
        ]
    }
}

/// A client-facing RPC, the `method` label of the request metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Delete,
    CompareAndSwap,
    Scan,
}

impl Method {
    pub const ALL: [Method; 5] = [Method::Get, Method::Put, Method::Delete, Method::CompareAndSwap, Method::Scan];

    /// The gRPC method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "Get",
            Method::Put => "Put",
            Method::Delete => "Delete",
            Method::CompareAndSwap => "CompareAndSwap",
            Method::Scan => "Scan",
        }
    }
}

/// gRPC status codes 0..=16 by their canonical names.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The canonical name of a gRPC status code ("UNAVAILABLE").
pub fn code_name(code: tonic::Code) -> &'static str {
    CODES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// Client requests by method and status code, and their latency by method.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Each method's histogram, resolved up front.
    latency_by_method: Arc<[Histogram; Method::ALL.len()]>,
    /// Each (method, code) counter, resolved on first use (a code a method
    /// never returns gets no series) and lock-free after.
    counters: Arc<[OnceLock<IntCounter>]>,
}

impl Default for RequestMetrics {
    fn default() -> RequestMetrics {
        let requests = counter_vec(
            "flotilla_server_requests_total",
            "Client requests answered by this node (not those another node forwarded to it), by gRPC method and status code.",
            &["method", "code"],
        );
        let opts = HistogramOpts::new(
            "flotilla_server_request_latency_seconds",
            "Client request latency as served by this node (forwarding included), by gRPC method.",
        )
        .buckets(latency_buckets());
        let latency = HistogramVec::new(opts, &["method"]).expect(VALID);
        let latency_by_method = Arc::new(Method::ALL.map(|method| latency.with_label_values(&[method.as_str()])));
        let counters = (0..Method::ALL.len() * CODES.len()).map(|_| OnceLock::new()).collect();
        RequestMetrics { requests, latency, latency_by_method, counters }
    }
}

impl RequestMetrics {
    /// One answered request.
    pub fn observe(&self, method: Method, code: tonic::Code, took: Duration) {
        let index = method as usize;
        self.latency_by_method[index].observe(took.as_secs_f64());
        let code_index = (code as usize).min(CODES.len() - 1);
        let slot = &self.counters[index * CODES.len() + code_index];
        slot.get_or_init(|| self.requests.with_label_values(&[method.as_str(), CODES[code_index]])).inc();
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.requests.clone()), Box::new(self.latency.clone())]
    }
}

/// Every recorded metric of one node. Lives in the node's `NodeStats`, so
/// each layer reaches its part through what it already holds.
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    pub runtime: RuntimeMetrics,
    pub peers: PeerMetrics,
    pub requests: RequestMetrics,
}

impl NodeMetrics {
    /// Everything to register in the node's registry.
    pub(super) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let mut all = self.runtime.collectors();
        all.extend(self.peers.collectors());
        all.extend(self.requests.collectors());
        all
    }
}
