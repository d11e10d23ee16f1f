//! One turn of the node: every touched group's requests are proposed (one
//! batch per group) and its Ready is staged into ONE storage batch; the
//! shell writes that batch with at most one fsync; then the answers go out
//! and the groups advance.
//!
//! The order is the core's contract (src/raft/mod.rs), for all groups at
//! once: messages that may precede the write are handed out by
//! `prepare_turn` (the leader sends before its own fsync, thesis §10.2.1);
//! `finish_turn` runs only after the batch is durable, so no vote,
//! acknowledgement or client answer gets ahead of the disk (etcd #14370).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;

use super::api::{RequestError, ShardId};
use super::group::{Answer, Proposal};
use super::handle::ClusterView;
use super::node::{read_local, Node};
use crate::kv::{self, encode_command};
use crate::raft::{EntryPayload, GroupId, LogIndex, Message, MessageKind, NodeId, RaftError, Ready, Term};
use crate::storage::snapshot::SnapshotFile;
use crate::storage::StorageBatch;

/// Messages for one peer node, in the order their groups produced them.
pub type Outbox = BTreeMap<NodeId, Vec<(GroupId, Message)>>;

/// What a prepared turn hands the shell, and what `finish_turn` needs back.
pub struct Turn {
    /// Every group's entries, hard state, installs and applies.
    pub batch: StorageBatch,
    /// Whether the batch must be fsynced (entries, a snapshot, or a term
    /// or vote changed); an apply-only batch is written without.
    pub must_sync: bool,
    /// Messages that may leave before the batch is durable.
    pub early: Outbox,
    /// Snapshots to stream: (to, group, InstallSnapshot message, file).
    pub snapshots: Vec<(NodeId, GroupId, Message, SnapshotFile)>,
    /// Groups whose snapshot the shell must build (off the loop's thread)
    /// and report with `Node::on_snapshot_built`.
    pub snapshot_builds: Vec<GroupId>,
    readies: Vec<(GroupId, Ready)>,
    answers: Vec<Answer>,
    /// Installed snapshots: the sender's ack, the received file and the
    /// install's own link to it, both removed once the install is written.
    installed: Vec<(oneshot::Sender<Result<(), String>>, [std::path::PathBuf; 2])>,
    /// When the turn began: the proposal time of its proposals and the
    /// commit time of the entries its Readies hand over (for metrics).
    pub started: Instant,
    /// Committed entries whose apply is in `batch`.
    pub applied_entries: usize,
}

impl Node {
    /// Proposes the touched groups' new requests and stages their Readies.
    pub fn prepare_turn(&mut self) -> Turn {
        let mut turn = Turn {
            // Purges staged by the last log sweep ride on this turn's write.
            batch: self.staged.take().unwrap_or_default(),
            must_sync: false,
            early: Outbox::new(),
            snapshots: std::mem::take(&mut self.built_snapshots),
            snapshot_builds: Vec::new(),
            readies: Vec::new(),
            answers: Vec::new(),
            installed: Vec::new(),
            started: Instant::now(),
            applied_entries: 0,
        };
        for id in std::mem::take(&mut self.touched) {
            self.submit_requests(id, &mut turn);
            let Some(group) = self.groups.get_mut(&id) else { continue };
            if group.failure.is_some() {
                continue;
            }
            if !group.raw.has_ready() {
                // A request may have woken it without giving it work.
                self.after_input(id);
                continue;
            }
            let ready = group.raw.ready();
            if let Err(detail) = self.stage_ready(id, &ready, &mut turn) {
                self.fail_group(id, detail);
                continue;
            }
            turn.must_sync |= ready.must_sync();
            turn.readies.push((id, ready));
        }
        turn
    }

    /// One proposal batch and one ReadIndex round per group per turn.
    fn submit_requests(&mut self, id: GroupId, turn: &mut Turn) {
        let Some(group) = self.groups.get_mut(&id) else { return };
        let writes = std::mem::take(&mut group.new_writes);
        if !writes.is_empty() {
            let data = writes.iter().map(|(command, _)| encode_command(command)).collect();
            match group.raw.propose_batch(data) {
                Ok(ids) => {
                    self.stats.metrics.runtime.proposals.inc_by(ids.len() as u64);
                    for (id, (_, waiter)) in ids.into_iter().zip(writes) {
                        let proposal = Proposal { id, waiter, proposed_at: turn.started };
                        group.proposals.entry(id.index).or_default().push(proposal);
                    }
                }
                Err(error) => {
                    let error = refused(self.id, &self.view, group.shard, error);
                    turn.answers.extend(writes.into_iter().map(|(_, waiter)| (waiter, Err(error.clone()))));
                }
            }
        }
        let Some(group) = self.groups.get_mut(&id) else { return };
        let reads = std::mem::take(&mut group.new_reads);
        if !reads.is_empty() {
            let context = self.next_read_context;
            self.next_read_context += 1;
            match group.raw.read_index(encode_context(self.id, context)) {
                Ok(()) => {
                    group.read_rounds.insert(context, reads);
                }
                Err(error) => {
                    let error = refused(self.id, &self.view, group.shard, error);
                    turn.answers.extend(reads.into_iter().map(|read| (read.waiter, Err(error.clone()))));
                }
            }
        }
        if let Some(group) = self.groups.get(&id) {
            if let Some(error) = group.raw.failure() {
                self.fail_group(id, format!("storage error: {error}"));
            }
        }
    }

    /// Stages one group's Ready: messages out, snapshot, entries, hard
    /// state, then the committed entries' effects, all into `turn.batch`.
    fn stage_ready(&mut self, id: GroupId, ready: &Ready, turn: &mut Turn) -> Result<(), String> {
        let group = self.groups.get_mut(&id).expect("staged groups exist");
        if let Some(soft) = &ready.soft_state {
            let led = |role| u64::from(role == crate::raft::Role::Leader);
            let (was, is) = (led(group.role), led(soft.role));
            if was != is {
                if is == 1 {
                    self.stats.groups_led.fetch_add(1, Ordering::Relaxed);
                    self.stats.metrics.runtime.elections_won.inc();
                } else {
                    self.stats.groups_led.fetch_sub(1, Ordering::Relaxed);
                }
            }
            group.leader = soft.leader;
            group.role = soft.role;
        }
        for message in &ready.messages {
            if message.kind == MessageKind::InstallSnapshot {
                // One build per group at a time serves every follower that
                // needs it meanwhile; a follower asking again replaces its
                // older message.
                let waiting = self.building_snapshots.entry(id).or_default();
                if waiting.is_empty() {
                    turn.snapshot_builds.push(id);
                }
                waiting.retain(|(to, _)| *to != message.to);
                waiting.push((message.to, message.clone()));
            } else {
                turn.early.entry(message.to).or_default().push((id, message.clone()));
            }
        }
        if let Some(snapshot) = &ready.snapshot {
            let Some(incoming) = self.incoming_snapshots.remove(&id) else {
                return Err(format!("Ready installs a snapshot at {} but no file arrived", snapshot.metadata.index));
            };
            if incoming.file.metadata != snapshot.metadata {
                let _ = incoming.done.send(Err("the snapshot file does not match its message".into()));
                return Err("snapshot file and message disagree".into());
            }
            // On an error the group fails: its in-memory state may be ahead
            // of its data, and a restart finishes the install.
            let storage = group.raw.store_mut();
            let link = incoming.file.install(storage, ready.hard_state, &mut turn.batch).map_err(|e| e.to_string())?;
            turn.installed.push((incoming.done, [incoming.file.path.clone(), link]));
            group.resolve_snapshot(snapshot.metadata.index, &mut turn.answers);
        }
        let storage = group.raw.store_mut();
        storage.stage_entries(&mut turn.batch, &ready.entries).map_err(|e| e.to_string())?;
        if let Some(hard_state) = ready.hard_state {
            // A campaign is a new term with a vote for itself; a vote for
            // another candidate is not.
            if hard_state.term > storage.hard_state().term && hard_state.vote == Some(self.id) {
                self.stats.metrics.runtime.elections_started.inc();
            }
            storage.stage_hard_state(&mut turn.batch, hard_state);
        }
        self.apply_committed(id, ready, turn)
    }

    /// Applies committed entries in order; a membership change is applied
    /// to the core first, and its resulting configuration is stored with
    /// the applied index.
    fn apply_committed(&mut self, id: GroupId, ready: &Ready, turn: &mut Turn) -> Result<(), String> {
        let group = self.groups.get_mut(&id).expect("applied groups exist");
        let entries = &ready.committed_entries;
        let terms: BTreeMap<LogIndex, Term> = entries.iter().map(|e| (e.index, e.term)).collect();
        let mut start = 0;
        for end in 0..=entries.len() {
            let conf_state = match entries.get(end).map(|e| &e.payload) {
                None => None,
                Some(EntryPayload::ConfChange(change)) => match group.raw.apply_conf_change(change) {
                    Ok(conf_state) => Some(conf_state),
                    Err(error) => {
                        // Every replica meets the same configuration and
                        // refuses alike: a no-op (the core's contract).
                        tracing::warn!(group = %id, "membership change refused: {error}");
                        None
                    }
                },
                Some(EntryPayload::Normal(_)) => continue,
            };
            let chunk = &entries[start..(end + 1).min(entries.len())];
            start = end + 1;
            let applied = kv::apply_entries(group.raw.store_mut(), &mut turn.batch, chunk, conf_state.as_ref())
                .map_err(|e| e.to_string())?;
            for result in applied {
                let term = terms.get(&result.index).copied().unwrap_or_default();
                if let Some(proposed) = group.resolve_applied(result.index, term, &result.result, &mut turn.answers) {
                    self.recorder.proposal_committed(turn.started.saturating_duration_since(proposed));
                }
            }
        }
        turn.applied_entries += entries.len();
        Ok(())
    }

    /// After the turn's batch is durable: answers, snapshot acks, the
    /// messages that had to wait for the write, reads, and `advance`.
    /// Returns the messages to send now.
    pub fn finish_turn(&mut self, turn: Turn) -> Outbox {
        for (waiter, result) in turn.answers {
            waiter.answer(result);
        }
        self.stats.snapshots_installed.fetch_add(turn.installed.len() as u64, Ordering::Relaxed);
        for (done, paths) in turn.installed {
            let _ = done.send(Ok(()));
            // Installed and durable: the file has done its job.
            for path in paths {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!("cannot remove installed snapshot {}: {error}", path.display());
                }
            }
        }
        let mut late = Outbox::new();
        for (id, ready) in turn.readies {
            let Some(group) = self.groups.get_mut(&id) else { continue };
            if group.failure.is_some() {
                continue;
            }
            for message in ready.persisted_messages {
                late.entry(message.to).or_default().push((id, message));
            }
            for state in ready.read_states {
                let Some(context) = context_of(self.id, &state.context) else { continue };
                if let Some(reads) = group.read_rounds.remove(&context) {
                    group.confirmed_reads.extend(reads.into_iter().map(|read| (state.index, read)));
                }
            }
            for context in ready.dropped_reads {
                let Some(reads) = context_of(self.id, &context).and_then(|c| group.read_rounds.remove(&c)) else {
                    continue;
                };
                for read in reads {
                    read.waiter.answer(Err(RequestError::NoLeader { shard: group.shard }));
                }
            }
            self.serve_confirmed_reads(id);
            if let Some(group) = self.groups.get_mut(&id) {
                group.raw.advance();
                if group.raw.is_quiesced() || group.role != crate::raft::Role::Leader {
                    let applied = group.raw.store().applied().index;
                    group.raw.store_mut().compact_cache_to(applied.next());
                }
            }
            self.after_input(id);
        }
        self.stats.groups_quiesced.store(self.quiesced_count() as u64, Ordering::Relaxed);
        // Inputs come only between turns, so a snapshot that arrived before
        // this turn and was not installed by it was refused by the core
        // (stale, or a configuration without this node).
        for (_, incoming) in std::mem::take(&mut self.incoming_snapshots) {
            let _ = incoming.done.send(Err("the replica did not accept the snapshot".into()));
        }
        late
    }

    /// Answers the reads whose read index the state machine has reached.
    fn serve_confirmed_reads(&mut self, id: GroupId) {
        let Some(group) = self.groups.get_mut(&id) else { return };
        if group.confirmed_reads.is_empty() {
            return;
        }
        let applied = group.raw.store().applied().index;
        let (now, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut group.confirmed_reads).into_iter().partition(|(index, _)| *index <= applied);
        group.confirmed_reads = later;
        let group = &self.groups[&id];
        for (_, read) in now {
            let result = read_local(&self.engine, self.id, group, &read.operation);
            read.waiter.answer(result);
        }
    }
}

/// The client error for a request the core refused before proposing it.
fn refused(node: NodeId, view: &ClusterView, shard: ShardId, error: RaftError) -> RequestError {
    match error {
        RaftError::NotLeader { hint: Some(leader) } => RequestError::NotLeader {
            node,
            shard,
            leader: view.addresses.get(&leader).map(|addr| (leader, addr.clone())),
        },
        RaftError::NotLeader { hint: None } | RaftError::ProposalDropped(_) => RequestError::NoLeader { shard },
        other => RequestError::Failed { node, shard, detail: other.to_string() },
    }
}

/// A read context: this node's id, then its counter. A leader holds the
/// read rounds of every replica of the group under their contexts, so a
/// counter alone would collide with another node's, and one of the two
/// reads would never be answered (found by `flotilla bench kv`: gets
/// waiting out their deadline under load).
fn encode_context(node: NodeId, counter: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&node.0.to_be_bytes());
    context.extend_from_slice(&counter.to_be_bytes());
    context
}

/// This node's counter in `bytes`, if it is one of this node's contexts.
fn context_of(node: NodeId, bytes: &[u8]) -> Option<u64> {
    let (owner, counter) = bytes.split_at_checked(8)?;
    if owner != node.0.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(counter.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_contexts_of_different_nodes_never_collide() {
        let (one, two) = (encode_context(NodeId(1), 5), encode_context(NodeId(2), 5));
        assert_ne!(one, two);
        assert_eq!(context_of(NodeId(1), &one), Some(5));
        assert_eq!(context_of(NodeId(1), &two), None, "another node's read");
        assert_eq!(context_of(NodeId(1), &one[..12]), None, "malformed");
    }
}
