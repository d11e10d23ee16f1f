//! From layered settings to what a node starts with: every unset tunable
//! keeps the default of the struct it belongs to (NodeOptions,
//! RuntimeConfig, StorageConfig, ServerConfig, TransportConfig), and every
//! value, given or default, is checked here, because several of them would
//! otherwise panic deep inside (a zero-capacity channel) or stall a node
//! quietly (no wake-ups, no snapshots) long after start-up.

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use super::{env_var, key, ConfigError, Layered};
use crate::cluster::ClusterConfig;
use crate::node::NodeOptions;
use crate::raft::NodeId;

/// Where a node listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";

/// RocksDB silently raises a smaller memtable to this; refuse it instead.
const MIN_WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Everything `flotilla server` needs to start a node.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: String,
    pub metrics_listen: Option<String>,
    pub node: NodeOptions,
}

/// Builds errors that name the setting, its value and its origin.
struct Check<'a> {
    layered: &'a Layered,
}

impl Check<'_> {
    fn fail(&self, field: &str, value: impl Display, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key(field),
            value: value.to_string(),
            origin: self.layered.origin(field).describe(field),
            reason: reason.into(),
        }
    }

    fn require(&self, ok: bool, field: &str, value: impl Display, reason: &str) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(self.fail(field, value, reason))
        }
    }

    fn positive<T: Display + Default + PartialOrd>(&self, field: &str, value: T) -> Result<(), ConfigError> {
        let ok = value > T::default();
        self.require(ok, field, value, "must be at least 1")
    }

    /// `min <= value <= max`: for settings whose extremes would panic
    /// (channel and semaphore sizes) or silently stall the node.
    fn between<T: Display + PartialOrd>(&self, field: &str, value: T, min: T, max: T) -> Result<(), ConfigError> {
        let reason = format!("must be between {min} and {max}");
        self.require(min <= value && value <= max, field, value, &reason)
    }
}

/// Queue and slot counts beyond these would only hold memory (tokio's
/// semaphores also panic above about 2^61).
const MAX_QUEUE_SLOTS: usize = 1 << 20;
const MAX_CONCURRENT_SNAPSHOTS: usize = 64;
/// A tick longer than a minute makes elections take many minutes.
const MAX_TICK_INTERVAL_MS: u64 = 60_000;
/// Elections and heartbeats are counted in ticks: beyond this a failed
/// leader is replaced only after an unreasonable wait.
const MAX_TIMER_TICKS: u64 = 100_000;

fn missing(field: &str) -> ConfigError {
    ConfigError::Missing { key: key(field), env: env_var(field) }
}

fn millis(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// Checks every setting and assembles the node's options.
pub(super) fn resolve(layered: &Layered) -> Result<Config, ConfigError> {
    let check = Check { layered };
    let s = &layered.values;
    let id = s.id.ok_or_else(|| missing("id"))?;
    check.positive("id", id)?;
    let data_dir: PathBuf = s.data_dir.clone().ok_or_else(|| missing("data_dir"))?;
    check.require(!data_dir.as_os_str().is_empty(), "data_dir", "\"\"", "must not be empty")?;
    let listen = s.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    check.require(listen.contains(':'), "listen", &listen, "must be HOST:PORT")?;
    if let Some(metrics) = &s.metrics_listen {
        check.require(metrics.contains(':'), "metrics_listen", metrics, "must be HOST:PORT")?;
    }
    let mut node = NodeOptions::new(NodeId(id), data_dir);
    if let Some(text) = &s.initial_cluster {
        let members =
            ClusterConfig::parse_members(text).map_err(|e| check.fail("initial_cluster", text, e.to_string()))?;
        if !members.contains_key(&NodeId(id)) {
            return Err(check.fail("initial_cluster", text, format!("it does not list this node's id {id}")));
        }
        node.initial_cluster = Some(members);
    }
    if let Some(shards) = s.shards {
        let max = flotilla_placement::MAX_SHARDS;
        check.require((1..=max).contains(&shards), "shards", shards, &format!("must be between 1 and {max}"))?;
        node.shards = Some(shards);
    }
    runtime(&check, &mut node)?;
    storage(&check, &mut node)?;
    limits(&check, &mut node)?;
    transport(&check, &mut node)?;
    Ok(Config { listen, metrics_listen: s.metrics_listen.clone(), node })
}

/// Raft timing, quiescence, log compaction, caches and the inbox.
fn runtime(check: &Check, node: &mut NodeOptions) -> Result<(), ConfigError> {
    let s = &check.layered.values;
    let r = &mut node.runtime;
    let tick_ms = s.tick_interval_ms.unwrap_or(node.tick_interval.as_millis() as u64);
    check.between("tick_interval_ms", tick_ms, 1, MAX_TICK_INTERVAL_MS)?;
    node.tick_interval = millis(tick_ms);
    r.election_timeout_ticks = s.election_ticks.unwrap_or(r.election_timeout_ticks);
    r.heartbeat_interval_ticks = s.heartbeat_ticks.unwrap_or(r.heartbeat_interval_ticks);
    r.quiesce_after_idle_ticks = s.quiesce_after_idle_ticks.unwrap_or(r.quiesce_after_idle_ticks);
    r.max_wakeups_per_tick = s.max_wakeups_per_tick.unwrap_or(r.max_wakeups_per_tick);
    r.compact_log_entries = s.compact_log_entries.unwrap_or(r.compact_log_entries);
    r.compact_keep_entries = s.compact_keep_entries.unwrap_or(r.compact_keep_entries);
    r.compact_every_ticks = s.compact_every_ticks.unwrap_or(r.compact_every_ticks);
    r.cache_budget_bytes = s.tail_cache_bytes.unwrap_or(r.cache_budget_bytes);
    node.inbox_capacity = s.inbox_capacity.unwrap_or(node.inbox_capacity);
    check.between("heartbeat_ticks", r.heartbeat_interval_ticks as u64, 1, MAX_TIMER_TICKS)?;
    check.between("election_ticks", r.election_timeout_ticks as u64, 2, MAX_TIMER_TICKS)?;
    let (election, heartbeat) = (r.election_timeout_ticks, r.heartbeat_interval_ticks);
    if election <= heartbeat {
        return Err(check.fail("election_ticks", election, format!("must exceed heartbeat-ticks ({heartbeat})")));
    }
    check.positive("quiesce_after_idle_ticks", r.quiesce_after_idle_ticks)?;
    // Zero would never wake the groups of a node that went down.
    check.positive("max_wakeups_per_tick", r.max_wakeups_per_tick)?;
    check.positive("compact_log_entries", r.compact_log_entries)?;
    let keep = r.compact_keep_entries;
    if keep > r.compact_log_entries {
        let reason = format!("must not exceed compact-log-entries ({})", r.compact_log_entries);
        return Err(check.fail("compact_keep_entries", keep, reason));
    }
    check.positive("compact_every_ticks", r.compact_every_ticks)?;
    // A bounded channel of capacity zero panics.
    check.between("inbox_capacity", node.inbox_capacity, 1, MAX_QUEUE_SLOTS)
}

/// RocksDB's memory budget and threads.
fn storage(check: &Check, node: &mut NodeOptions) -> Result<(), ConfigError> {
    let s = &check.layered.values;
    let st = &mut node.storage;
    st.block_cache_bytes = s.block_cache_bytes.unwrap_or(st.block_cache_bytes);
    st.write_buffer_total_bytes = s.write_buffer_total_bytes.unwrap_or(st.write_buffer_total_bytes);
    st.write_buffer_bytes = s.write_buffer_bytes.unwrap_or(st.write_buffer_bytes);
    st.log_write_buffer_bytes = s.log_write_buffer_bytes.unwrap_or(st.log_write_buffer_bytes);
    st.compress_data = s.compress_data.unwrap_or(st.compress_data);
    check.positive("block_cache_bytes", st.block_cache_bytes)?;
    check.positive("write_buffer_total_bytes", st.write_buffer_total_bytes)?;
    let floor = format!("must be at least {MIN_WRITE_BUFFER_BYTES} (RocksDB's smallest memtable)");
    for (field, value) in
        [("write_buffer_bytes", st.write_buffer_bytes), ("log_write_buffer_bytes", st.log_write_buffer_bytes)]
    {
        check.require(value >= MIN_WRITE_BUFFER_BYTES, field, value, &floor)?;
    }
    if let Some(jobs) = s.background_jobs {
        check.require((1..=256).contains(&jobs), "background_jobs", jobs, "must be between 1 and 256")?;
        st.background_jobs = jobs as i32;
    }
    Ok(())
}

/// The client-facing services' limits and deadline.
fn limits(check: &Check, node: &mut NodeOptions) -> Result<(), ConfigError> {
    let s = &check.layered.values;
    let sv = &mut node.server;
    sv.max_key_bytes = s.max_key_bytes.unwrap_or(sv.max_key_bytes);
    sv.max_value_bytes = s.max_value_bytes.unwrap_or(sv.max_value_bytes);
    sv.default_deadline = s.default_deadline_ms.map(millis).unwrap_or(sv.default_deadline);
    sv.scan_default_limit = s.scan_default_limit.unwrap_or(sv.scan_default_limit);
    sv.scan_max_limit = s.scan_max_limit.unwrap_or(sv.scan_max_limit);
    sv.scan_max_bytes = s.scan_max_bytes.unwrap_or(sv.scan_max_bytes);
    // The replicated state machine refuses anything larger whatever the
    // service admits, so a higher limit would only move the error.
    let (max_key, max_value) = (crate::kv::MAX_KEY_BYTES, crate::kv::MAX_VALUE_BYTES);
    let key_reason = format!("must be between 1 and {max_key} (the state machine's limit)");
    check.require((1..=max_key).contains(&sv.max_key_bytes), "max_key_bytes", sv.max_key_bytes, &key_reason)?;
    let value_reason = format!("must be between 1 and {max_value} (the state machine's limit)");
    check.require(
        (1..=max_value).contains(&sv.max_value_bytes),
        "max_value_bytes",
        sv.max_value_bytes,
        &value_reason,
    )?;
    check.positive("default_deadline_ms", sv.default_deadline.as_millis())?;
    check.positive("scan_default_limit", sv.scan_default_limit)?;
    let default_limit = sv.scan_default_limit;
    if sv.scan_max_limit < default_limit {
        let reason = format!("must be at least scan-default-limit ({default_limit})");
        return Err(check.fail("scan_max_limit", sv.scan_max_limit, reason));
    }
    check.positive("scan_max_bytes", sv.scan_max_bytes)
}

/// Peer queues, reconnect backoff and snapshot transfers.
fn transport(check: &Check, node: &mut NodeOptions) -> Result<(), ConfigError> {
    let s = &check.layered.values;
    let t = &mut node.transport;
    t.peer_queue_batches = s.peer_queue_batches.unwrap_or(t.peer_queue_batches);
    t.reconnect_min = s.reconnect_min_ms.map(millis).unwrap_or(t.reconnect_min);
    t.reconnect_max = s.reconnect_max_ms.map(millis).unwrap_or(t.reconnect_max);
    t.max_snapshot_bytes = s.max_snapshot_bytes.unwrap_or(t.max_snapshot_bytes);
    t.max_concurrent_snapshots = s.max_concurrent_snapshots.unwrap_or(t.max_concurrent_snapshots);
    t.snapshot_chunk_timeout = s.snapshot_chunk_timeout_ms.map(millis).unwrap_or(t.snapshot_chunk_timeout);
    check.between("peer_queue_batches", t.peer_queue_batches, 1, MAX_QUEUE_SLOTS)?;
    check.positive("reconnect_min_ms", t.reconnect_min.as_millis())?;
    let (min, max) = (t.reconnect_min.as_millis(), t.reconnect_max.as_millis());
    if max < min {
        return Err(check.fail("reconnect_max_ms", max, format!("must be at least reconnect-min-ms ({min})")));
    }
    check.positive("max_snapshot_bytes", t.max_snapshot_bytes)?;
    // Zero slots would leave every lagging follower waiting forever.
    check.between("max_concurrent_snapshots", t.max_concurrent_snapshots, 1, MAX_CONCURRENT_SNAPSHOTS)?;
    check.positive("snapshot_chunk_timeout_ms", t.snapshot_chunk_timeout.as_millis())
}
