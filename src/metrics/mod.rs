//! Prometheus metrics of a node and the `/metrics` HTTP endpoint.
//!
//! **Owns:** every metric's name, help, type, buckets and labels (names are
//! `flotilla_<subsystem>_<name>_<unit>`; labels are per node, peer, method
//! and status code only); the typed handles each layer records into
//! ([`NodeMetrics`], kept in the node's `NodeStats`); the per-node
//! [`prometheus::Registry`] ([`node_registry`]: those handles, a collector
//! reading the `NodeStats` atomics at scrape time, and the process
//! collector), each series labelled with the node's id; and the HTTP
//! server that serves a registry ([`run`]).
//!
//! **Must not:** use the process-global default registry (tests and
//! `flotilla demo` run several nodes in one process); label anything by
//! group, shard or key (a node hosts thousands: unbounded series); take a
//! lock or allocate per event on the event loop's hot path (counters are
//! atomics; its histograms are thread-local and flushed once per turn);
//! or measure on its own: each layer records where its event happens, so a
//! number means what its help text says.

mod families;
mod http;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::Registry;

pub use families::{
    code_name, LoopRecorder, Method, NodeMetrics, PeerCounters, PeerMetrics, RequestMetrics, RuntimeMetrics,
};
pub use http::{encode, run};

use crate::multiraft::NodeStats;
use crate::raft::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    #[error("the metrics server's connection limiter is closed")]
    Closed,
}

/// The registry of node `node`: what its layers record in `stats.metrics`,
/// its `stats` atomics (read when gathered) and the process's CPU, memory,
/// threads and file descriptors. Every series carries `node="<id>"`.
pub fn node_registry(node: NodeId, stats: Arc<NodeStats>) -> Result<Registry, MetricsError> {
    let labels = HashMap::from([("node".to_string(), node.0.to_string())]);
    let registry = Registry::new_custom(None, Some(labels))?;
    for collector in stats.metrics.collectors() {
        registry.register(collector)?;
    }
    registry.register(Box::new(stats::StatsCollector::new(stats)?))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(registry)
}

#[cfg(test)]
mod tests;
