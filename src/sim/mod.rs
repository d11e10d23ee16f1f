//! A seeded, deterministic simulator of Raft groups built from the real
//! core (`crate::raft`), for tests and `flotilla sim`.
//!
//! **Owns:** an in-memory network (loss, duplication, reordering, delay,
//! symmetric and one-way partitions, an isolated leader, a flapping link),
//! crashes that keep only what a node persisted (including a crash after a
//! leader sent its appends but before its own write), restarts, membership
//! changes, leadership transfers, snapshots and compaction, clients that
//! propose unique values and issue linearizable reads; and the checker of
//! Raft's safety properties, run after every step.
//!
//! **Must not:** use real time, threads, I/O or any randomness but the run's
//! seed: the same seed replays the same run exactly. (The multi-group mode,
//! `multi`, drives whole nodes and uses a RocksDB engine per node in a temp
//! dir as their disk; see there why that keeps runs replayable.)

mod checker;
mod cluster;
pub mod multi;
mod node;
mod quiesce;
mod rng;

pub use cluster::{Cluster, Stats, TIME_UNITS_PER_TICK};
pub use rng::Rng;

use crate::raft::{GroupId, NodeId, ReadMode};

/// The knobs of one run. Rates are chances per time unit (per million).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// The group the run simulates: with the node id it seeds each
    /// replica's election jitter (`Config::for_group`), as on a real node.
    pub group: GroupId,
    pub nodes: usize,
    pub chaos_ticks: u64,
    /// After healing: the bound within which a leader must be elected and
    /// every acknowledged write applied on every member.
    pub liveness_ticks: u64,
    pub max_delay: u64,
    /// Messages held back for up to 8 x `max_delay` (two election timeouts):
    /// stale votes and appends from older terms arrive in newer ones.
    pub long_delay_per_million: u32,
    pub loss_per_million: u32,
    pub duplicate_per_million: u32,
    pub crash_per_million: u32,
    pub crash_mid_ready_per_million: u32,
    /// Chance that a newly elected leader crashes within a few ticks:
    /// short reigns leave partly replicated tails of many terms, which is
    /// what Figure 8 of the Raft paper needs (a random crash rarely hits the
    /// leader at the right moment).
    pub short_lived_leader_per_million: u32,
    pub restart_per_million: u32,
    pub partition_per_million: u32,
    pub heal_per_million: u32,
    pub conf_change_per_million: u32,
    pub transfer_per_million: u32,
    pub compact_per_million: u32,
    pub propose_per_million: u32,
    pub read_per_million: u32,
    /// Chance per time unit that the clients go quiet for a while, so the
    /// group can quiesce; load wakes it again.
    pub idle_per_million: u32,
    /// Chance per leader tick that an idle leader that can quiesce does.
    pub quiesce_per_million: u32,
    /// Chance per time unit that a quiesced leader crashes: its followers
    /// sleep until their broken peer streams make them forget it.
    pub crash_quiesced_leader_per_million: u32,
    /// A follower forgets a leader whose stream broke after a random delay
    /// of up to this many ticks (the runtime staggers these wake-ups).
    pub forget_delay_ticks: u64,
    /// Readies handled per flush. One in some runs: committed entries then
    /// wait for the node's next turn, as with a separate apply, so inputs
    /// arrive while conf changes are committed but not applied.
    pub readies_per_flush: usize,
    /// Chance that a leader's rejected append is followed by one a Raft
    /// paper leader would send (§5.3: resume at the first index the follower
    /// holds of the conflicting term, which may be below the conflict). Our
    /// leader resumes exactly at the conflict, so without this no follower
    /// ever holds a stale suffix past an append it accepts.
    pub paper_backtrack_per_million: u32,
    pub read_mode: ReadMode,
    /// Entries per AppendEntries are bounded by this many bytes (an entry
    /// is about 32): small values force partial replication.
    pub max_message_bytes: u64,
    pub max_inflight_messages: usize,
    /// Elections without pre-vote in some runs: simultaneous candidates
    /// and stale votes are far more common there.
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub verbose: bool,
}

impl SimConfig {
    /// The standard mix for a seed: 3 or 5 nodes, every fault enabled, and
    /// lease reads in a quarter of the runs.
    pub fn for_seed(seed: u64) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0xC0FF_EE00);
        let read_mode =
            if rng.chance(250_000) { ReadMode::Lease { clock_drift_bound_ticks: 2 } } else { ReadMode::Safe };
        // 1 byte: one entry per message, so acknowledgements cover every
        // prefix of a long tail (Figure 8 needs that).
        let max_message_bytes = *rng.pick(&[1, 64, 256, 4096]).expect("non-empty");
        let quiet = rng.chance(600_000);
        SimConfig {
            seed,
            group: GroupId(rng.next_u64() >> 16),
            nodes: if rng.chance(500_000) { 3 } else { 5 },
            chaos_ticks: 400,
            liveness_ticks: 300,
            max_delay: rng.range(2, 25),
            long_delay_per_million: if rng.chance(300_000) { rng.range(50_000, 300_000) as u32 } else { 20_000 },
            loss_per_million: rng.range(0, 100_000) as u32,
            duplicate_per_million: rng.range(0, 50_000) as u32,
            crash_per_million: rng.range(0, 1_500) as u32,
            crash_mid_ready_per_million: rng.range(0, 2_000) as u32,
            short_lived_leader_per_million: if rng.chance(300_000) { rng.range(200_000, 800_000) as u32 } else { 0 },
            restart_per_million: 4_000,
            partition_per_million: rng.range(0, 2_000) as u32,
            heal_per_million: 3_000,
            conf_change_per_million: rng.range(0, 3_000) as u32,
            transfer_per_million: rng.range(0, 1_000) as u32,
            compact_per_million: rng.range(500, 5_000) as u32,
            propose_per_million: rng.range(20_000, 150_000) as u32,
            read_per_million: rng.range(0, 30_000) as u32,
            idle_per_million: if quiet { rng.range(500, 4_000) as u32 } else { 0 },
            quiesce_per_million: if quiet { rng.range(100_000, 1_000_000) as u32 } else { 0 },
            crash_quiesced_leader_per_million: if quiet { rng.range(0, 3_000) as u32 } else { 0 },
            forget_delay_ticks: rng.range(1, 30),
            readies_per_flush: if rng.chance(250_000) { 1 } else { 64 },
            paper_backtrack_per_million: if rng.chance(300_000) { rng.range(100_000, 1_000_000) as u32 } else { 0 },
            read_mode,
            max_message_bytes,
            // One entry per round trip cannot keep up with the clients.
            max_inflight_messages: *rng
                .pick(if max_message_bytes == 1 { &[4, 64] } else { &[1, 4, 64] })
                .expect("non-empty"),
            pre_vote: rng.chance(700_000),
            // Always on: without it (and without pre-vote) a node removed
            // before it learned so campaigns forever and starves liveness,
            // which the thesis (4.2.3) solves exactly this way.
            check_quorum: true,
            verbose: false,
        }
    }
}

impl SimConfig {
    pub fn node_settings(&self) -> node::NodeSettings {
        node::NodeSettings {
            group: self.group,
            read_mode: self.read_mode,
            max_message_bytes: self.max_message_bytes,
            max_inflight_messages: self.max_inflight_messages,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
        }
    }
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub seed: u64,
    pub time: u64,
    pub stats: Stats,
    /// Ticks from healing until a leader committed a new proposal.
    pub recovery_ticks: u64,
}

/// A violated property, with the seed that replays it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub time: u64,
    pub violation: String,
    pub trace: Vec<String>,
    /// Each node's state when the run stopped.
    pub nodes: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} failed at t={}: {}", self.seed, self.time, self.violation)?;
        writeln!(f, "replay: FLOTILLA_SIM_SEED={} cargo test --test simulation -- --nocapture", self.seed)?;
        writeln!(f, "nodes:")?;
        for line in &self.nodes {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "last events:")?;
        for line in self.trace.iter().rev().take(40).rev() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Runs one seed: chaos, then healing, then the liveness and durability checks.
pub fn run(config: SimConfig) -> Result<SimReport, SimFailure> {
    let mut cluster = Cluster::new(config);
    let outcome = drive(&mut cluster);
    match outcome {
        Ok(recovery_ticks) => Ok(SimReport {
            seed: cluster.config.seed,
            time: cluster.time,
            stats: cluster.stats.clone(),
            recovery_ticks,
        }),
        Err(violation) => Err(SimFailure {
            nodes: cluster.describe_nodes(),
            seed: cluster.config.seed,
            time: cluster.time,
            violation,
            trace: std::mem::take(&mut cluster.trace),
        }),
    }
}

fn drive(cluster: &mut Cluster) -> Result<u64, String> {
    let chaos_units = cluster.config.chaos_ticks * TIME_UNITS_PER_TICK;
    for unit in 0..chaos_units {
        cluster.step()?;
        if unit % 500 == 0 {
            cluster.check_all_logs()?;
        }
    }
    cluster.heal()?;
    let healed_at = cluster.time;
    let deadline = healed_at + cluster.config.liveness_ticks * TIME_UNITS_PER_TICK;
    let final_value = commit_final_value(cluster, deadline)?;
    let recovery_ticks = (cluster.time - healed_at) / TIME_UNITS_PER_TICK;
    // Catching up is bounded by bandwidth, not by the protocol: with one
    // entry per message and one in flight, a follower hundreds of entries
    // behind needs hundreds of round trips. "Eventually" gets a wide bound.
    let catch_up_deadline = cluster.time + 20 * cluster.config.liveness_ticks * TIME_UNITS_PER_TICK;
    wait_until_all_applied(cluster, catch_up_deadline, final_value)?;
    cluster.check_all_logs()?;
    Ok(recovery_ticks)
}

/// Liveness: once healed, a leader is elected and a new proposal commits
/// within the bound.
fn commit_final_value(cluster: &mut Cluster, deadline: u64) -> Result<u64, String> {
    let mut pending: Option<u64> = None;
    let mut proposed_to = None;
    while cluster.time < deadline {
        cluster.step()?;
        if let Some(value) = pending {
            if cluster.acknowledged.contains_key(&value) {
                return Ok(value);
            }
        }
        let Some(leader) = cluster.leader() else { continue };
        if cluster.is_joint_explicit(leader) {
            cluster.leave_joint(leader)?;
        }
        // One proposal per leadership: re-proposing to the same leader
        // would only lengthen the log it must replicate.
        let leadership = Some((leader, cluster.nodes[&leader].incarnation, cluster.term_of(leader)));
        if proposed_to != leadership {
            if let Some(value) = cluster.propose_on_leader() {
                pending = Some(value);
                proposed_to = leadership;
            }
        }
    }
    Err(format!("no proposal committed within {} ticks of healing", cluster.config.liveness_ticks))
}

/// Durability: every acknowledged write is applied on every member.
fn wait_until_all_applied(cluster: &mut Cluster, deadline: u64, final_value: u64) -> Result<(), String> {
    let final_index = cluster.acknowledged[&final_value];
    loop {
        let leader = cluster.leader();
        let lagging = leader.map(|l| {
            cluster.members(l).into_iter().filter(|id| cluster.nodes[id].disk.applied < final_index).collect::<Vec<_>>()
        });
        if let (Some(leader), Some(lagging)) = (leader, lagging) {
            if lagging.is_empty() {
                return check_acknowledged(cluster, leader);
            }
        }
        if cluster.time >= deadline {
            return Err(format!(
                "members did not apply index {final_index} within {} ticks of committing it (leader {leader:?})",
                20 * cluster.config.liveness_ticks
            ));
        }
        cluster.step()?;
    }
}

fn check_acknowledged(cluster: &Cluster, leader: NodeId) -> Result<(), String> {
    for id in cluster.members(leader) {
        let state_machine = &cluster.nodes[&id].state_machine;
        for (&value, &index) in &cluster.acknowledged {
            if state_machine.get(&index) != Some(&value) {
                return Err(format!("acknowledged write {value} at {index} is missing on node {id}"));
            }
        }
    }
    Ok(())
}
