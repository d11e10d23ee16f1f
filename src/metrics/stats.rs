//! The counters and gauges the event loop already keeps as atomics
//! ([`NodeStats`]), exported by reading them at scrape time: the loop pays
//! nothing extra for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

use super::MetricsError;
use crate::multiraft::NodeStats;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One exported atomic.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    read: fn(&NodeStats) -> &AtomicU64,
}

const SPECS: [Spec; 10] = [
    Spec {
        name: "flotilla_runtime_ticks_total",
        help: "Clock ticks of the node's event loop.",
        kind: Kind::Counter,
        read: |s| &s.ticks,
    },
    Spec {
        name: "flotilla_runtime_turns_total",
        help: "Event-loop turns (each: one storage batch, at most one fsync, one message batch per peer).",
        kind: Kind::Counter,
        read: |s| &s.turns,
    },
    Spec {
        name: "flotilla_runtime_wakeups_total",
        help: "Quiesced groups woken because their leader's node went down or they had to act.",
        kind: Kind::Counter,
        read: |s| &s.wakeups,
    },
    Spec {
        name: "flotilla_raft_snapshots_sent_total",
        help: "Snapshots handed to the transport for a follower that was too far behind.",
        kind: Kind::Counter,
        read: |s| &s.snapshots_sent,
    },
    Spec {
        name: "flotilla_raft_snapshots_received_total",
        help: "Snapshots received whole from a peer (installed or refused).",
        kind: Kind::Counter,
        read: |s| &s.snapshots_received,
    },
    Spec {
        name: "flotilla_raft_snapshots_installed_total",
        help: "Received snapshots installed and made durable.",
        kind: Kind::Counter,
        read: |s| &s.snapshots_installed,
    },
    Spec {
        name: "flotilla_raft_groups_hosted",
        help: "Raft groups (shard replicas) this node hosts.",
        kind: Kind::Gauge,
        read: |s| &s.groups,
    },
    Spec {
        name: "flotilla_raft_groups_led",
        help: "Raft groups this node leads.",
        kind: Kind::Gauge,
        read: |s| &s.groups_led,
    },
    Spec {
        name: "flotilla_raft_groups_quiesced",
        help: "Raft groups whose clock is stopped (idle: no ticks, no heartbeats).",
        kind: Kind::Gauge,
        read: |s| &s.groups_quiesced,
    },
    Spec {
        name: "flotilla_storage_tail_cache_bytes",
        help: "Bytes held by all groups' in-memory log tail caches, as of the last log sweep.",
        kind: Kind::Gauge,
        read: |s| &s.cache_bytes,
    },
];

/// Reads a node's [`NodeStats`] when the registry is gathered.
pub(super) struct StatsCollector {
    stats: Arc<NodeStats>,
    descs: Vec<Desc>,
}

impl StatsCollector {
    pub(super) fn new(stats: Arc<NodeStats>) -> Result<StatsCollector, MetricsError> {
        let descs = SPECS
            .iter()
            .map(|spec| Desc::new(spec.name.into(), spec.help.into(), Vec::new(), HashMap::new()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StatsCollector { stats, descs })
    }
}

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        SPECS
            .iter()
            .map(|spec| {
                // Relaxed: each atomic is a statistic on its own.
                let value = (spec.read)(&self.stats).load(Ordering::Relaxed) as f64;
                let mut metric = proto::Metric::default();
                let mut family = proto::MetricFamily::default();
                match spec.kind {
                    Kind::Counter => {
                        let mut counter = proto::Counter::default();
                        counter.set_value(value);
                        metric.set_counter(counter);
                        family.set_field_type(proto::MetricType::COUNTER);
                    }
                    Kind::Gauge => {
                        let mut gauge = proto::Gauge::default();
                        gauge.set_value(value);
                        metric.set_gauge(gauge);
                        family.set_field_type(proto::MetricType::GAUGE);
                    }
                }
                family.set_name(spec.name.into());
                family.set_help(spec.help.into());
                family.set_metric(vec![metric]);
                family
            })
            .collect()
    }
}
