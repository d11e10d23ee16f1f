//! `flotilla bench storage`: how many 128-byte entries per second the
//! storage layer makes durable through group commit with 1, 100 and 10,000
//! groups, next to the disk's plain fsync rate.
//!
//! It drives the storage API the way the multi-raft runtime does: one event
//! loop whose every turn stages the new entries and hard state of each group
//! with proposals into ONE `StorageBatch` and commits it with ONE fsync
//! (`Engine::commit`). A fixed number of simulated clients each keep one
//! proposal in flight and propose again once it is durable (a closed loop),
//! so every turn carries `clients` entries: with 1 group one 256-entry
//! append, with 10,000 groups 256 one-entry appends to 256 groups. No Raft,
//! network or state machine runs; this is the storage share of a put only.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{BenchError, Result};
use crate::raft::{ConfState, Entry, GroupId, HardState, LogStore, NodeId, Term};
use crate::storage::{ApplyState, Engine, GroupStorage, StorageBatch, StorageConfig};

/// Payload size of every entry (the requirement's figure).
pub const ENTRY_BYTES: usize = 128;
const NODE_ID: u64 = 1;
/// Every group stays in the term it was bootstrapped in: one stable leader.
const TERM: Term = Term(1);
/// Groups bootstrapped per batch: one 10,000-group batch would be a single
/// multi-megabyte write for no benefit.
const BOOTSTRAP_BATCH: usize = 1000;

#[derive(Clone, Debug)]
pub struct StorageBenchConfig {
    /// Group counts: one run each, on a fresh engine.
    pub groups: Vec<u64>,
    /// Proposals in flight in total, spread evenly over the groups.
    pub clients: usize,
    pub warmup: Duration,
    /// Length of each measured window (also of the plain fsync measurement).
    pub duration: Duration,
    /// Repeats of the whole sequence, interleaved (1, 100, 10000, 1, 100,
    /// …), so a slow spell of a shared disk hits every group count alike;
    /// the summary takes the median of the rounds.
    pub rounds: usize,
    /// Where to create the scratch directory (removed afterwards); by
    /// default the system temp dir. It decides which disk is measured.
    pub dir: Option<PathBuf>,
    /// A group's applied entries are purged once this many have piled up,
    /// as a node's log compaction would (otherwise the 1-group log grows
    /// without bound). Multi-raft systems truncate early because logs of
    /// many groups add up: TiKV's `raft-log-gc-threshold` is 50 entries,
    /// CockroachDB truncates past about 100. With 10,000 groups this
    /// decides how much live log RocksDB must flush and compact.
    pub purge_after_entries: u64,
    /// Also stage each group's apply state in the turn after its append,
    /// as the KV layer will (without the applied data itself). Off by
    /// default: the benchmark measures appends, the runtime's end-to-end
    /// benchmark measures the rest.
    pub record_apply_state: bool,
}

impl Default for StorageBenchConfig {
    fn default() -> StorageBenchConfig {
        StorageBenchConfig {
            groups: vec![1, 100, 10_000],
            clients: 256,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            rounds: 1,
            dir: None,
            purge_after_entries: 64,
            record_apply_state: false,
        }
    }
}

/// `ENTRY_BYTES` appended to a file and `fdatasync`ed, in a loop.
#[derive(Clone, Debug)]
pub struct FsyncRate {
    pub fsyncs: u64,
    pub seconds: f64,
}

impl FsyncRate {
    pub fn per_second(&self) -> f64 {
        self.fsyncs as f64 / self.seconds
    }
}

/// One group count's run. The window figures exclude warm-up; the totals
/// cover everything after bootstrap and exist for consistency checks.
#[derive(Clone, Debug)]
pub struct GroupCommitRun {
    pub groups: u64,
    pub clients: usize,
    pub seconds: f64,
    /// Entries made durable (acknowledged) in the window.
    pub entries: u64,
    /// Batches committed in the window: one per event-loop turn.
    pub batches: u64,
    /// Durable writes the engine issued in the window (`Engine::sync_count`).
    pub fsyncs: u64,
    /// Per-batch `Engine::commit` latency.
    pub p50: Duration,
    pub p99: Duration,
    /// CPU of the whole process in the window (background threads
    /// included), where the platform reports it.
    pub cpu: Option<Duration>,
    pub total_entries: u64,
    pub total_batches: u64,
    pub total_fsyncs: u64,
}

impl GroupCommitRun {
    pub fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.seconds
    }

    pub fn fsyncs_per_second(&self) -> f64 {
        self.fsyncs as f64 / self.seconds
    }

    pub fn entries_per_fsync(&self) -> f64 {
        self.entries as f64 / self.fsyncs.max(1) as f64
    }

    pub fn cpu_micros_per_entry(&self) -> Option<f64> {
        self.cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / self.entries.max(1) as f64)
    }
}

#[derive(Clone, Debug)]
pub struct StorageBenchReport {
    pub config: StorageBenchConfig,
    /// Filesystem type and device of the scratch directory.
    pub disk: String,
    pub rounds: Vec<Round>,
}

/// One pass: the plain fsync rate, then one run per group count.
#[derive(Clone, Debug)]
pub struct Round {
    pub fsync: FsyncRate,
    pub runs: Vec<GroupCommitRun>,
}

/// Runs `rounds` rounds of: the plain fsync measurement, then one
/// group-commit run per group count, each in its own fresh engine.
/// `progress` gets a line per phase.
pub fn run(config: &StorageBenchConfig, mut progress: impl FnMut(&str)) -> Result<StorageBenchReport> {
    validate(config)?;
    let scratch = Scratch::create(config.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let disk = describe_filesystem(scratch.path());
    let mut rounds = Vec::new();
    for round in 1..=config.rounds {
        progress(&format!("round {round}: plain fsync rate of {} ({disk}) ...", scratch.path().display()));
        let fsync = measure_fsync_rate(scratch.path(), config.duration)?;
        let mut runs = Vec::new();
        for &groups in &config.groups {
            progress(&format!("round {round}: group commit with {groups} groups ..."));
            let path = scratch.path().join(format!("groups-{groups}"));
            runs.push(run_group_commit(&path, groups, config)?);
            // Give the disk space back before the next run, not at the end.
            fs::remove_dir_all(&path).map_err(BenchError::io(&path))?;
        }
        rounds.push(Round { fsync, runs });
    }
    Ok(StorageBenchReport { config: config.clone(), disk, rounds })
}

fn validate(config: &StorageBenchConfig) -> Result<()> {
    if config.groups.is_empty() || config.groups.contains(&0) {
        return Err(BenchError::Config("--groups needs one or more counts, each at least 1".into()));
    }
    if config.clients == 0 {
        return Err(BenchError::Config("--clients must be at least 1".into()));
    }
    if config.rounds == 0 {
        return Err(BenchError::Config("--rounds must be at least 1".into()));
    }
    if config.duration.is_zero() {
        return Err(BenchError::Config("--seconds must be positive".into()));
    }
    if config.purge_after_entries == 0 {
        return Err(BenchError::Config("--purge-after must be at least 1".into()));
    }
    Ok(())
}

/// Opens a fresh engine at `path` (which must not hold one), bootstraps
/// `groups` groups and drives `config.clients` closed-loop clients through
/// group commit for `config.warmup` and then `config.duration`. The engine
/// is closed on return and `path` is left in place.
pub fn run_group_commit(path: &Path, groups: u64, config: &StorageBenchConfig) -> Result<GroupCommitRun> {
    let (clients, duration) = (config.clients, config.duration);
    let engine = Arc::new(Engine::open(path, NODE_ID, &StorageConfig::default())?);
    let mut stores = bootstrap(&engine, groups)?;
    let syncs_at_start = engine.sync_count();
    let mut load = Load::new(stores.len(), clients, config.purge_after_entries, config.record_apply_state);
    let warm_until = Instant::now() + config.warmup;
    while Instant::now() < warm_until {
        load.turn(&engine, &mut stores)?;
    }
    let (entries_before, batches_before, syncs_before) = (load.entries, load.batches, engine.sync_count());
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let mut latencies = Vec::new();
    // At least one turn, so a tiny duration still measures something.
    loop {
        latencies.push(load.turn(&engine, &mut stores)?);
        if started.elapsed() >= duration {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_time().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    latencies.sort_unstable();
    Ok(GroupCommitRun {
        groups,
        clients,
        seconds,
        entries: load.entries - entries_before,
        batches: load.batches - batches_before,
        fsyncs: engine.sync_count() - syncs_before,
        p50: percentile(&latencies, 50),
        p99: percentile(&latencies, 99),
        cpu,
        total_entries: load.entries,
        total_batches: load.batches,
        total_fsyncs: engine.sync_count() - syncs_at_start,
    })
}

/// Creates groups 1..=`groups`, each with this node as its only voter.
fn bootstrap(engine: &Arc<Engine>, groups: u64) -> Result<Vec<GroupStorage>> {
    let conf_state = ConfState { voters: [NodeId(NODE_ID)].into(), ..ConfState::default() };
    let ids: Vec<u64> = (1..=groups).collect();
    let mut stores = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(BOOTSTRAP_BATCH) {
        let mut batch = StorageBatch::new();
        for &id in chunk {
            stores.push(GroupStorage::bootstrap(engine.clone(), GroupId(id), conf_state.clone(), &mut batch)?);
        }
        engine.commit(batch)?;
    }
    Ok(stores)
}

/// The simulated clients and the event loop's per-turn bookkeeping.
struct Load {
    /// The group (index into the stores) of each client's proposal in flight.
    targets: Vec<usize>,
    /// Proposals per group in the current turn; non-zero only for `touched`.
    pending: Vec<u32>,
    touched: Vec<usize>,
    /// The groups that appended in the previous turn: their entries are
    /// committed now and get applied in this turn's batch.
    to_apply: Vec<usize>,
    record_apply_state: bool,
    /// Numbers the payloads, so no two entries are byte-identical.
    sequence: u64,
    purge_after_entries: u64,
    entries: u64,
    batches: u64,
}

impl Load {
    fn new(groups: usize, clients: usize, purge_after_entries: u64, record_apply_state: bool) -> Load {
        Load {
            purge_after_entries,
            record_apply_state,
            targets: (0..clients).map(|client| client % groups).collect(),
            pending: vec![0; groups],
            touched: Vec::new(),
            to_apply: Vec::new(),
            sequence: 0,
            entries: 0,
            batches: 0,
        }
    }

    /// One event-loop turn: every group with proposals stages its entries
    /// and hard state (and, with `record_apply_state`, the groups that
    /// appended last turn stage what they applied), all in one batch
    /// committed with one fsync. Returns the commit's latency.
    fn turn(&mut self, engine: &Engine, stores: &mut [GroupStorage]) -> Result<Duration> {
        for &group in &self.targets {
            if self.pending[group] == 0 {
                self.touched.push(group);
            }
            self.pending[group] += 1;
        }
        let mut batch = StorageBatch::new();
        for group in self.to_apply.drain(..) {
            stage_apply(&mut stores[group], &mut batch, self.purge_after_entries, true)?;
        }
        for &group in &self.touched {
            if !self.record_apply_state {
                // Still purge: everything before this turn is applied.
                stage_apply(&mut stores[group], &mut batch, self.purge_after_entries, false)?;
            }
            let count = std::mem::take(&mut self.pending[group]);
            stage_append(&mut stores[group], &mut batch, count, &mut self.sequence)?;
        }
        let entries = batch.entry_count() as u64;
        let started = Instant::now();
        engine.commit(batch)?;
        let latency = started.elapsed();
        // The runtime trims a group's tail cache once every follower has the
        // entries; a one-voter group has no followers, so once they are
        // durable. Without this, 10,000 full caches (up to 64 KiB each)
        // would be measured instead of the storage layer.
        for &group in &self.touched {
            let store = &mut stores[group];
            store.compact_cache_to(store.last_index().next());
        }
        if self.record_apply_state {
            std::mem::swap(&mut self.to_apply, &mut self.touched);
        }
        self.touched.clear();
        // Durable, so acknowledged: each client proposes again, to the next
        // group of its rotation. Stepping by the client count keeps clients
        // on distinct groups when there are more groups than clients, and
        // over time every group gets writes.
        let (groups, step) = (stores.len(), self.targets.len());
        for target in &mut self.targets {
            *target = (*target + step) % groups;
        }
        self.entries += entries;
        self.batches += 1;
        Ok(latency)
    }
}

/// Stages what applying a group's committed log costs the storage layer:
/// its apply state if `record` (the KV layer writes it with the applied
/// data, which is not modelled) and, once enough applied entries piled up,
/// the purge a node would do (which needs the apply state written).
fn stage_apply(
    store: &mut GroupStorage,
    batch: &mut StorageBatch,
    purge_after_entries: u64,
    record: bool,
) -> Result<()> {
    // With one voter, everything durable is committed and can be applied.
    let last = store.last_index();
    let purge = last.0 - store.truncated().index.0 >= purge_after_entries;
    if record || purge {
        store.stage_apply_state(batch, ApplyState { index: last, term: TERM }, None);
    }
    if purge {
        store.stage_purge(batch, last)?;
    }
    Ok(())
}

/// Stages `count` new entries of one group and its hard state.
fn stage_append(store: &mut GroupStorage, batch: &mut StorageBatch, count: u32, sequence: &mut u64) -> Result<()> {
    let previous_last = store.last_index();
    let entries: Vec<Entry> = (1..=u64::from(count))
        .map(|offset| {
            *sequence += 1;
            Entry::new_normal(TERM, previous_last + offset, payload(*sequence))
        })
        .collect();
    store.stage_entries(batch, &entries)?;
    // A one-voter group commits what is durable. The runtime hands every
    // Ready's hard state to storage; one whose only change is commit is
    // not written (see `GroupStorage::stage_hard_state`), so this costs no
    // write in a stable term.
    let commit = store.last_index();
    store.stage_hard_state(batch, HardState { term: TERM, vote: None, commit });
    Ok(())
}

fn payload(sequence: u64) -> Vec<u8> {
    let mut data = vec![0x5a; ENTRY_BYTES];
    data[..8].copy_from_slice(&sequence.to_le_bytes());
    data
}

/// Appends `ENTRY_BYTES` to a file in `dir` and `fdatasync`s it, in a loop
/// for `duration`: what one fsync per entry would cost on this disk.
pub fn measure_fsync_rate(dir: &Path, duration: Duration) -> Result<FsyncRate> {
    let path = dir.join("fsync-probe");
    let mut file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(BenchError::io(&path))?;
    let record = [0x5a; ENTRY_BYTES];
    let mut append_and_sync = || -> std::io::Result<()> {
        file.write_all(&record)?;
        file.sync_data()
    };
    // The first syncs also create the file's metadata; keep them out.
    for _ in 0..10 {
        append_and_sync().map_err(BenchError::io(&path))?;
    }
    let started = Instant::now();
    let mut fsyncs = 0;
    while fsyncs == 0 || started.elapsed() < duration {
        append_and_sync().map_err(BenchError::io(&path))?;
        fsyncs += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    fs::remove_file(&path).map_err(BenchError::io(&path))?;
    Ok(FsyncRate { fsyncs, seconds })
}

/// The table printed by `flotilla bench storage`: one row per run, and
/// with several rounds the median of each group count.
pub fn format_report(report: &StorageBenchReport) -> String {
    let config = &report.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "group commit of {ENTRY_BYTES}-byte entries: {} clients in flight, {:.1} s per run after {:.1} s warm-up, \
         logs purged past {} applied entries{}, disk: {}\n",
        config.clients,
        config.duration.as_secs_f64(),
        config.warmup.as_secs_f64(),
        config.purge_after_entries,
        if config.record_apply_state { ", apply state recorded every turn" } else { "" },
        report.disk
    );
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>10} {:>9} {:>13} {:>10} {:>10} {:>13}",
        "round", "groups", "entries/s", "fsyncs/s", "entries/fsync", "batch p50", "batch p99", "cpu µs/entry"
    );
    for (number, round) in report.rounds.iter().enumerate() {
        for run in &round.runs {
            let _ = writeln!(out, "{:>5} {}", number + 1, format_run(run));
        }
        let rate = round.fsync.per_second();
        let _ = writeln!(
            out,
            "{:>5} {:>7} {rate:>10.0} {rate:>9.0} {:>13.1}   (plain fsync: {ENTRY_BYTES}-byte append + fdatasync)",
            number + 1,
            "-",
            1.0
        );
    }
    if report.rounds.len() > 1 {
        format_medians(report, &mut out);
    }
    let rate = median(report.rounds.iter().map(|round| round.fsync.per_second()).collect());
    let _ = writeln!(
        out,
        "\nplain fsync ({ENTRY_BYTES}-byte append + fdatasync): {rate:.0} fsyncs/s, \
         so {rate:.0} entries/s if every entry had its own fsync"
    );
    out
}

fn format_run(run: &GroupCommitRun) -> String {
    let cpu = run.cpu_micros_per_entry().map_or("n/a".to_string(), |micros| format!("{micros:.1}"));
    format!(
        "{:>7} {:>10.0} {:>9.0} {:>13.1} {:>10} {:>10} {:>13}",
        run.groups,
        run.entries_per_second(),
        run.fsyncs_per_second(),
        run.entries_per_fsync(),
        millis(run.p50),
        millis(run.p99),
        cpu
    )
}

/// Per group count, the median over the rounds of each figure.
fn format_medians(report: &StorageBenchReport, out: &mut String) {
    let _ = writeln!(out, "\nmedian of {} rounds:", report.rounds.len());
    let _ = writeln!(out, "{:>7} {:>10} {:>9} {:>13}", "groups", "entries/s", "fsyncs/s", "cpu µs/entry");
    for &groups in &report.config.groups {
        let runs: Vec<&GroupCommitRun> =
            report.rounds.iter().flat_map(|round| &round.runs).filter(|run| run.groups == groups).collect();
        let of = |figure: fn(&GroupCommitRun) -> f64| median(runs.iter().map(|run| figure(run)).collect());
        let cpu = of(|run| run.cpu_micros_per_entry().unwrap_or(f64::NAN));
        let _ = writeln!(
            out,
            "{groups:>7} {:>10.0} {:>9.0} {cpu:>13.1}",
            of(GroupCommitRun::entries_per_second),
            of(GroupCommitRun::fsyncs_per_second)
        );
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// The `percent`th percentile of sorted samples (nearest rank).
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// User plus system CPU of the whole process, from /proc/self/stat (Linux
/// only; `None` elsewhere). Whole process, because RocksDB's flushes and
/// compactions run on its own threads and are part of a write's cost.
fn process_cpu_time() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // utime and stime are in USER_HZ ticks, 100 per second on Linux's
    // mainstream ABIs (reading it properly would need libc's sysconf).
    Some(Duration::from_millis(ticks * 10))
}

/// "ext4 on /dev/vda": the mount holding `path`, from /proc/mounts.
fn describe_filesystem(path: &Path) -> String {
    let (Ok(path), Ok(mounts)) = (path.canonicalize(), fs::read_to_string("/proc/mounts")) else {
        return "unknown filesystem".to_string();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .filter(|(_, mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(_, mount_point, _)| mount_point.len())
        .map_or("unknown filesystem".to_string(), |(device, _, kind)| format!("{kind} on {device}"))
}

/// A fresh directory for one benchmark, removed when dropped (also when a
/// run fails half-way), so repeated runs do not fill the disk.
struct Scratch(PathBuf);

impl Scratch {
    fn create(parent: PathBuf) -> Result<Scratch> {
        fs::create_dir_all(&parent).map_err(BenchError::io(&parent))?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("flotilla-bench-storage-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(BenchError::io(&path))?;
        Ok(Scratch(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::LogIndex;

    /// Counts only, never timings: what was acknowledged is what the store
    /// holds after reopening, and each batch was exactly one fsync.
    #[test]
    fn every_acknowledged_entry_is_stored_and_each_batch_is_one_fsync() {
        // 10 groups with fewer clients than groups; 1 group with enough
        // entries per turn to reach the purge threshold in a few turns.
        for (groups, clients, record_apply_state) in
            [(10u64, 4usize, false), (10, 16, true), (1, 128, false), (1, 128, true)]
        {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("engine");
            let config = StorageBenchConfig {
                clients,
                warmup: Duration::from_millis(50),
                duration: Duration::from_millis(200),
                purge_after_entries: 1024,
                record_apply_state,
                ..StorageBenchConfig::default()
            };
            let run = run_group_commit(&path, groups, &config).unwrap();
            assert!(run.batches > 0 && run.total_batches >= run.batches);
            assert_eq!(run.entries, run.batches * clients as u64, "each turn carries one entry per client");
            assert_eq!(run.total_entries, run.total_batches * clients as u64);
            assert_eq!(run.fsyncs, run.batches, "one fsync per batch in the window");
            assert_eq!(run.total_fsyncs, run.total_batches, "one fsync per batch overall");

            let engine = Arc::new(Engine::open(&path, NODE_ID, &StorageConfig::default()).unwrap());
            let mut stored = 0;
            for group in 1..=groups {
                let store = GroupStorage::open(engine.clone(), GroupId(group)).unwrap().expect("bootstrapped");
                store.check_invariants().unwrap();
                // Commit-only changes are not written; a restart starts from
                // the applied index.
                assert_eq!(store.hard_state().commit, store.applied().index, "group {group}");
                assert!(store.applied().index <= store.last_index());
                // Bootstrap leaves the log at index 1; every later index is an entry.
                stored += store.last_index().0 - 1;
            }
            assert_eq!(stored, run.total_entries, "{groups} groups, {clients} clients");
        }
    }

    /// Turn by turn rather than by time, so the purge is certain to run.
    #[test]
    fn a_busy_group_purges_its_applied_log_and_keeps_the_rest() {
        // Each turn the previous turn's 100 entries are applied: turn 25
        // applies up to 1 + 2400. Purged in turns 12 and 23, each time once
        // 1,100 applied entries (the first multiple of 100 >= 1,024) piled
        // up. Without `record_apply_state` only a purge writes the apply state.
        for (record_apply_state, applied) in [(true, 1 + 2400), (false, 1 + 2200)] {
            let dir = tempfile::tempdir().unwrap();
            let engine = Arc::new(Engine::open(dir.path(), NODE_ID, &StorageConfig::default()).unwrap());
            let mut stores = bootstrap(&engine, 1).unwrap();
            let mut load = Load::new(1, 100, 1024, record_apply_state);
            for _ in 0..25 {
                load.turn(&engine, &mut stores).unwrap();
            }
            assert_eq!(stores[0].hard_state().commit, LogIndex(1 + 2500), "one voter commits what is durable");
            drop(stores);
            let store = GroupStorage::open(engine, GroupId(1)).unwrap().unwrap();
            store.check_invariants().unwrap();
            assert_eq!(store.last_index(), LogIndex(1 + 2500));
            assert_eq!(store.applied().index, LogIndex(applied), "record_apply_state {record_apply_state}");
            assert_eq!(store.truncated().index, LogIndex(1 + 2200));
            assert_eq!(store.hard_state().commit, LogIndex(applied), "restart: commit from the applied index");
            assert_eq!(store.entries(LogIndex(2202), LogIndex(2502), u64::MAX).unwrap().len(), 300);
        }
    }

    #[test]
    fn the_full_benchmark_reports_every_group_count_and_cleans_up() {
        let parent = tempfile::tempdir().unwrap();
        let config = StorageBenchConfig {
            groups: vec![1, 10],
            clients: 8,
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(100),
            rounds: 2,
            dir: Some(parent.path().to_path_buf()),
            purge_after_entries: 64,
            record_apply_state: true,
        };
        let report = run(&config, |_| {}).unwrap();
        assert_eq!(report.rounds.len(), 2);
        for round in &report.rounds {
            assert_eq!(round.runs.iter().map(|run| run.groups).collect::<Vec<_>>(), [1, 10]);
            assert!(round.fsync.fsyncs > 0);
        }
        let table = format_report(&report);
        assert!(table.contains("entries/s") && table.contains("median of 2 rounds"), "{table}");
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0, "the scratch directory is removed");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let bad = [
            StorageBenchConfig { groups: vec![], ..StorageBenchConfig::default() },
            StorageBenchConfig { groups: vec![1, 0], ..StorageBenchConfig::default() },
            StorageBenchConfig { clients: 0, ..StorageBenchConfig::default() },
            StorageBenchConfig { rounds: 0, ..StorageBenchConfig::default() },
            StorageBenchConfig { duration: Duration::ZERO, ..StorageBenchConfig::default() },
            StorageBenchConfig { purge_after_entries: 0, ..StorageBenchConfig::default() },
        ];
        for config in bad {
            assert!(matches!(run(&config, |_| {}), Err(BenchError::Config(_))), "{config:?}");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank_and_medians_the_middle() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
