//! One simulated node: a `RawNode` over a `MemoryLogStore` plus what the node
//! persisted (its "disk"). A crash drops the `RawNode` and everything not on
//! the disk; a restart rebuilds the node from the disk alone.

use std::collections::BTreeMap;

use crate::raft::{
    ConfState, Config, EntryPayload, GroupId, HardState, LogIndex, LogStore, MemoryLogStore, Message, NodeId, RawNode,
    ReadMode, ReadState, Ready, Snapshot, SnapshotMetadata, StorageError, Term,
};

/// The replicated state machine: user values by the index that applied them.
pub type StateMachine = BTreeMap<LogIndex, u64>;

/// What survives a crash: written by [`SimNode::handle_ready`] in the
/// contract's order (store, hard state, applied state), and completed from
/// the live node's durable parts at the crash.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub store: MemoryLogStore,
    pub hard_state: HardState,
    /// Written together with `applied` and `state_machine` (one batch).
    pub conf_state: ConfState,
    pub applied: LogIndex,
    pub state_machine: StateMachine,
}

/// Something a node applied, reported to the cluster's checker.
#[derive(Clone, Debug)]
pub enum Applied {
    Entry { index: LogIndex, term: Term, value: Option<u64> },
    Snapshot { index: LogIndex, state_machine: StateMachine },
}

/// What one Ready produced, for the cluster to route and check.
#[derive(Default)]
pub struct ReadyOutput {
    pub messages: Vec<Message>,
    pub applied: Vec<Applied>,
    pub read_states: Vec<ReadState>,
    pub dropped_reads: Vec<Vec<u8>>,
    /// The node crashed after sending the leader's messages but before its
    /// write was durable.
    pub crashed_mid_ready: bool,
}

pub struct SimNode {
    pub id: NodeId,
    pub raw: Option<RawNode<MemoryLogStore>>,
    pub disk: Disk,
    pub incarnation: u64,
    settings: NodeSettings,
    /// In-memory copy of the applied state (equals the disk's after each Ready).
    pub state_machine: StateMachine,
    pub conf_state: ConfState,
}

pub fn encode_value(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub fn decode_value(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.try_into().ok()?))
}

/// Snapshot data: the state machine as (index, value) pairs.
pub fn encode_state_machine(state_machine: &StateMachine) -> Vec<u8> {
    let mut out = Vec::with_capacity(state_machine.len() * 16);
    for (index, value) in state_machine {
        out.extend_from_slice(&index.0.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

pub fn decode_state_machine(data: &[u8]) -> StateMachine {
    data.chunks_exact(16)
        .map(|pair| {
            let index = u64::from_be_bytes(pair[..8].try_into().expect("8 bytes"));
            let value = u64::from_be_bytes(pair[8..].try_into().expect("8 bytes"));
            (LogIndex(index), value)
        })
        .collect()
}

/// The core settings the run varies.
#[derive(Clone, Copy, Debug)]
pub struct NodeSettings {
    pub group: GroupId,
    pub read_mode: ReadMode,
    pub max_message_bytes: u64,
    pub max_inflight_messages: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
}

/// The index and term every initial member's log starts at: the initial
/// configuration is a snapshot, so a node added later gets it (and all
/// later history) from the leader as a snapshot.
pub const BOOTSTRAP_INDEX: LogIndex = LogIndex(1);

impl SimNode {
    /// A member of the initial configuration.
    pub fn bootstrap(id: NodeId, voters: &ConfState, settings: NodeSettings) -> SimNode {
        let mut disk = Disk::default();
        let metadata = SnapshotMetadata { index: BOOTSTRAP_INDEX, term: Term(1), conf_state: voters.clone() };
        let snapshot = Snapshot { metadata, data: encode_state_machine(&StateMachine::new()) };
        disk.store.apply_snapshot(snapshot).expect("empty store");
        disk.hard_state = HardState { term: Term(1), vote: None, commit: BOOTSTRAP_INDEX };
        disk.conf_state = voters.clone();
        disk.applied = BOOTSTRAP_INDEX;
        SimNode::from_disk(id, disk, settings)
    }

    /// A node added later: empty, waiting for the leader to contact it.
    pub fn empty(id: NodeId, settings: NodeSettings) -> SimNode {
        SimNode::from_disk(id, Disk::default(), settings)
    }

    fn from_disk(id: NodeId, disk: Disk, settings: NodeSettings) -> SimNode {
        let mut node = SimNode {
            id,
            raw: None,
            disk,
            incarnation: 0,
            settings,
            state_machine: StateMachine::new(),
            conf_state: ConfState::default(),
        };
        node.restart();
        node
    }

    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }

    /// Loses everything that was not persisted. While the node is up its
    /// disk is the store inside the `RawNode` (written only in `persist`) and
    /// the state machine (written only in `apply`, one entry at a time), so
    /// they are copied out here rather than after every write.
    pub fn crash(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.disk.store = raw.store().clone();
            self.disk.state_machine = self.state_machine.clone();
            self.disk.conf_state = self.conf_state.clone();
        }
    }

    /// Rebuilds the node from its disk only.
    pub fn restart(&mut self) {
        self.incarnation += 1;
        // Seeded from node and group only, as a real node does (the run's
        // group id differs per seed), and varied per incarnation so a
        // restart does not replay the same timeouts. If `for_group` gave
        // every node the same jitter, split votes would starve liveness.
        let mut config = Config::for_group(self.id, self.settings.group);
        config.random_seed = config.random_seed.wrapping_add(self.incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        config.applied = self.disk.applied;
        config.read_mode = self.settings.read_mode;
        config.max_inflight_messages = self.settings.max_inflight_messages;
        config.max_size_per_message_bytes = self.settings.max_message_bytes;
        config.max_committed_size_per_ready_bytes = 512;
        config.pre_vote = self.settings.pre_vote;
        config.check_quorum = self.settings.check_quorum;
        // The stored commit may lag the applied index; the core lifts it.
        let raw = RawNode::new(config, self.disk.store.clone(), self.disk.hard_state, &self.disk.conf_state)
            .expect("a node restarts from what it persisted");
        self.state_machine = self.disk.state_machine.clone();
        self.conf_state = self.disk.conf_state.clone();
        self.raw = Some(raw);
    }

    pub fn raw(&mut self) -> &mut RawNode<MemoryLogStore> {
        self.raw.as_mut().expect("node is up")
    }

    /// Handles one Ready following the ordering contract in `raft/mod.rs`.
    /// With `crash_mid_ready`, the node dies after sending the leader's
    /// early messages and before persisting anything.
    pub fn handle_ready(&mut self, crash_mid_ready: bool) -> ReadyOutput {
        let mut output = ReadyOutput::default();
        let Some(raw) = self.raw.as_mut() else { return output };
        if !raw.has_ready() {
            return output;
        }
        let ready = raw.ready();
        // Step 1: a leader's appends may leave before its own write.
        output.messages.extend(ready.messages.iter().cloned());
        if crash_mid_ready {
            self.crash();
            output.crashed_mid_ready = true;
            return output;
        }
        self.persist(&ready).expect("the simulated disk accepts every write");
        // Step 3: votes and acknowledgements only after the write.
        output.messages.extend(ready.persisted_messages.iter().cloned());
        self.apply(&ready, &mut output);
        output.read_states = ready.read_states;
        output.dropped_reads = ready.dropped_reads;
        self.raw().advance();
        output
    }

    /// Step 2: snapshot, entries, hard state, durably.
    fn persist(&mut self, ready: &Ready) -> Result<(), StorageError> {
        let raw = self.raw.as_mut().expect("node is up");
        if let Some(snapshot) = &ready.snapshot {
            raw.store_mut().apply_snapshot(snapshot.clone())?;
            // Installing a snapshot replaces the state machine, with the
            // applied index and configuration in the same write.
            self.state_machine = decode_state_machine(&snapshot.data);
            self.conf_state = snapshot.metadata.conf_state.clone();
            self.disk.applied = snapshot.metadata.index;
        }
        raw.store_mut().append(&ready.entries)?;
        if let Some(hard_state) = ready.hard_state {
            // As `storage::GroupStorage` does: only term and vote must be
            // durable, so a change of commit alone is not written; on
            // restart the core lifts the stored commit to the applied index.
            if hard_state.durable_part_differs(&self.disk.hard_state) {
                self.disk.hard_state = hard_state;
            }
        }
        Ok(())
    }

    /// Step 4: apply committed entries; each with its applied index.
    fn apply(&mut self, ready: &Ready, output: &mut ReadyOutput) {
        if let Some(snapshot) = &ready.snapshot {
            output
                .applied
                .push(Applied::Snapshot { index: snapshot.metadata.index, state_machine: self.state_machine.clone() });
        }
        for entry in &ready.committed_entries {
            let mut value = None;
            match &entry.payload {
                EntryPayload::Normal(data) if !data.is_empty() => {
                    value = decode_value(data);
                    if let Some(v) = value {
                        self.state_machine.insert(entry.index, v);
                    }
                }
                EntryPayload::Normal(_) => {}
                EntryPayload::ConfChange(change) => {
                    let raw = self.raw.as_mut().expect("node is up");
                    self.conf_state = raw.apply_conf_change(change).expect("committed conf changes are valid");
                    self.disk.applied = entry.index;
                    self.snapshot_at_applied(entry.term);
                }
            }
            self.disk.applied = entry.index;
            output.applied.push(Applied::Entry { index: entry.index, term: entry.term, value });
        }
    }

    /// Records a snapshot of the state at the applied index (`term` is the
    /// applied entry's), keeping the log. Done after every conf change, as a
    /// real node builds the snapshot it sends from its current state: a
    /// snapshot from before a member was added is refused by that member
    /// (it would not be in its own configuration).
    fn snapshot_at_applied(&mut self, term: Term) {
        let metadata = SnapshotMetadata { index: self.disk.applied, term, conf_state: self.conf_state.clone() };
        let snapshot = Snapshot { metadata, data: encode_state_machine(&self.state_machine) };
        let raw = self.raw.as_mut().expect("node is up");
        raw.store_mut().create_snapshot(snapshot).expect("the applied entry is in the log");
    }

    /// Takes a snapshot at the applied index and discards log entries up to
    /// `applied - keep` (the caller's compaction request).
    pub fn compact(&mut self, keep: u64) {
        let applied = self.disk.applied;
        let Some(raw) = self.raw.as_mut() else { return };
        let Some(term) = raw.term_at(applied) else { return };
        if applied <= raw.store().first_index() {
            return;
        }
        let metadata = SnapshotMetadata { index: applied, term, conf_state: self.conf_state.clone() };
        let snapshot = Snapshot { metadata, data: encode_state_machine(&self.state_machine) };
        let store = raw.store_mut();
        if store.create_snapshot(snapshot).is_ok() {
            let upto = LogIndex(applied.0.saturating_sub(keep)).max(store.first_index().prev());
            store.compact(upto).expect("compaction within the snapshot");
        }
    }
}
