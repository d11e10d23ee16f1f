//! The multi-group mode of the simulator: whole nodes (`multiraft::Node`,
//! the runtime's real logic: routing batches to groups, one storage batch
//! per turn, quiescence, staggered wake-ups, apply and answering) with many
//! groups each, on a simulated network and clock, under one seed.
//!
//! **Owns:** 3-5 nodes hosting 10-200 shards, clients writing unique keys
//! and reading them linearizably, and faults: node crashes (also between a
//! turn's early messages and its write), restarts, partitions of whole
//! nodes, idle spells long enough for groups to quiesce followed by the
//! crash of a node that led quiesced groups, a slow disk (a turn's write
//! completes many time units after its messages left, so a follower's
//! acknowledgement reaches the leader before its own write is done), and
//! snapshot transfers. Checks: every node's invariants and at most one
//! leader per group and term after every turn; reads never miss a write
//! acknowledged before they started; after healing, every group has a
//! leader, replicas of a group hold identical data, and every acknowledged
//! write is on every replica.
//!
//! **Differs from the single-group simulator on purpose:** the disk is a
//! real RocksDB engine per node in a temporary directory (written unsynced),
//! because the runtime stages its writes into RocksDB batches. What reads
//! return is still fully determined by the seed: RocksDB's background
//! threads change how data is laid out, never what a read returns. A crash
//! drops the node and everything it had not committed to its engine.
//!
//! **Must not:** use wall-clock time (time is a counter; deadlines are a
//! fixed base instant plus simulated milliseconds), threads of its own, or
//! any randomness but the seed.

mod check;
mod world;

pub use world::World;

/// The knobs of one multi-group run. Rates are chances per time unit
/// (one simulated millisecond) per million.
#[derive(Clone, Debug)]
pub struct MultiConfig {
    pub seed: u64,
    pub nodes: usize,
    pub shards: u32,
    /// Time units of faults and load; then healing and the liveness phase.
    pub chaos_units: u64,
    pub liveness_units: u64,
    pub max_delay_units: u64,
    pub loss_per_million: u32,
    pub crash_per_million: u32,
    pub restart_per_million: u32,
    pub partition_per_million: u32,
    pub heal_per_million: u32,
    /// Client writes and reads issued per time unit, per million.
    pub write_per_million: u32,
    pub read_per_million: u32,
    /// Chance per time unit that the clients go quiet long enough for the
    /// groups to quiesce; at its end a node that leads groups may crash.
    pub idle_per_million: u32,
    /// Chance that a turn's write is slow (completes 1-30 units later).
    pub slow_disk_per_million: u32,
    pub verbose: bool,
}

impl MultiConfig {
    /// The configuration seed `seed` runs with: sizes and rates drawn from it.
    pub fn for_seed(seed: u64) -> MultiConfig {
        let mut rng = super::Rng::new(seed ^ 0x6D75_6C74_6967_7270);
        let nodes = rng.range(3, 6) as usize;
        // Mostly small runs; some with 200 shards.
        let shards = if rng.chance(200_000) { 200 } else { rng.range(10, 61) as u32 };
        MultiConfig {
            seed,
            nodes,
            shards,
            chaos_units: 6_000,
            liveness_units: 20_000,
            max_delay_units: rng.range(1, 6),
            loss_per_million: rng.range(0, 30_000) as u32,
            crash_per_million: rng.range(50, 400) as u32,
            restart_per_million: rng.range(300, 3_000) as u32,
            partition_per_million: rng.range(50, 400) as u32,
            heal_per_million: 1_500,
            write_per_million: rng.range(50_000, 400_000) as u32,
            read_per_million: rng.range(20_000, 200_000) as u32,
            idle_per_million: 300,
            slow_disk_per_million: rng.range(0, 300_000) as u32,
            verbose: false,
        }
    }
}

/// What a passing run did.
#[derive(Clone, Debug, Default)]
pub struct MultiReport {
    pub acknowledged_writes: u64,
    pub unknown_writes: u64,
    pub reads_checked: u64,
    pub crashes: u64,
    pub crashes_after_idle: u64,
    pub partitions: u64,
    pub slow_writes: u64,
    pub snapshots_installed: u64,
    pub wakeups: u64,
    /// Time units from healing until every group had a leader and every
    /// replica had applied everything.
    pub recovery_units: u64,
}

/// Runs one seed; `Err` names the violated property, with the seed.
pub fn run_multi(config: MultiConfig) -> Result<MultiReport, String> {
    let seed = config.seed;
    let mut world = World::new(config).map_err(|e| format!("seed {seed}: setting up: {e}"))?;
    world.run().map_err(|e| format!("multi-group seed {seed}: {e} (replay: FLOTILLA_SIM_MULTI_SEED={seed})"))
}
