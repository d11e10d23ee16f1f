//! The safety properties the simulator checks after every step (Raft paper
//! Figure 3), against a global history no single node could see.

use std::collections::{BTreeMap, HashMap};

use super::node::{Applied, StateMachine};
use crate::raft::{Entry, EntryPayload, LogIndex, MemoryLogStore, NodeId, RawNode, Role, Term};

/// The first applied (term, value, term of the applier) for each index.
#[derive(Clone, Copy, Debug)]
struct AppliedRecord {
    term: Term,
    value: Option<u64>,
    /// The applier's current term when it applied: at least the term in
    /// which the entry was committed.
    known_committed_by: Term,
}

#[derive(Default)]
pub struct Checker {
    leaders_by_term: BTreeMap<Term, NodeId>,
    history: BTreeMap<LogIndex, AppliedRecord>,
    /// (index, term) -> digest of the entry first seen there.
    entries: HashMap<(LogIndex, Term), u64>,
    /// Per node: (incarnation, commit) last seen, and applied last seen.
    commits: HashMap<NodeId, (u64, LogIndex)>,
    applied: HashMap<NodeId, LogIndex>,
}

pub type Violation = String;

fn digest(entry: &Entry) -> u64 {
    match &entry.payload {
        EntryPayload::Normal(data) => {
            data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
        }
        EntryPayload::ConfChange(change) => {
            format!("{change:?}").bytes().fold(7u64, |h, b| h.wrapping_mul(31) ^ b as u64)
        }
    }
}

impl Checker {
    /// Election safety: at most one leader per term.
    pub fn observe_role(&mut self, node: NodeId, role: Role, term: Term) -> Result<(), Violation> {
        if role != Role::Leader {
            return Ok(());
        }
        match self.leaders_by_term.insert(term, node) {
            Some(other) if other != node => Err(format!("two leaders in term {term}: {other} and {node}")),
            _ => Ok(()),
        }
    }

    /// Log matching, the part a node's write shows: two entries with the same
    /// index and term are the same entry.
    pub fn observe_entries(&mut self, node: NodeId, entries: &[Entry]) -> Result<(), Violation> {
        for entry in entries {
            let d = digest(entry);
            if let Some(&seen) = self.entries.get(&(entry.index, entry.term)) {
                if seen != d {
                    return Err(format!(
                        "node {node} holds a different entry at index {} term {} than another node",
                        entry.index, entry.term
                    ));
                }
            } else {
                self.entries.insert((entry.index, entry.term), d);
            }
        }
        Ok(())
    }

    /// State machine safety: no two nodes apply different entries at an index.
    pub fn observe_applied(&mut self, node: NodeId, current_term: Term, applied: &Applied) -> Result<(), Violation> {
        match applied {
            Applied::Entry { index, term, value } => {
                let record = AppliedRecord { term: *term, value: *value, known_committed_by: current_term };
                match self.history.get(index) {
                    Some(seen) if seen.term != *term || seen.value != *value => Err(format!(
                        "node {node} applied ({term}, {value:?}) at {index}, another applied ({}, {:?})",
                        seen.term, seen.value
                    )),
                    Some(_) => Ok(()),
                    None => {
                        self.history.insert(*index, record);
                        Ok(())
                    }
                }
            }
            Applied::Snapshot { index, state_machine } => self.check_snapshot(node, *index, state_machine),
        }
    }

    fn check_snapshot(&self, node: NodeId, index: LogIndex, state_machine: &StateMachine) -> Result<(), Violation> {
        for (at, record) in self.history.range(..=index) {
            if record.value.is_some() && state_machine.get(at).copied() != record.value {
                return Err(format!("node {node} installed a snapshot at {index} that disagrees at {at}"));
            }
        }
        for (at, value) in state_machine {
            match self.history.get(at) {
                Some(record) if record.value == Some(*value) => {}
                _ => return Err(format!("node {node} installed a snapshot with value {value} at {at} never applied")),
            }
        }
        Ok(())
    }

    /// Leader completeness: a new leader of `term` holds every entry known
    /// committed in an earlier term.
    pub fn check_new_leader(&self, node: NodeId, raw: &RawNode<MemoryLogStore>, term: Term) -> Result<(), Violation> {
        let status = raw.status();
        for (&index, record) in &self.history {
            if record.known_committed_by >= term || index < status.first_index {
                continue;
            }
            if raw.term_at(index) != Some(record.term) {
                return Err(format!(
                    "leader {node} of term {term} lacks committed entry {index} (term {})",
                    record.term
                ));
            }
        }
        Ok(())
    }

    /// Commit never goes backwards within an incarnation; applied never
    /// goes backwards at all (it is persisted with the state machine).
    pub fn check_progress(
        &mut self,
        node: NodeId,
        incarnation: u64,
        raw: &RawNode<MemoryLogStore>,
    ) -> Result<(), Violation> {
        let status = raw.status();
        let commit = status.hard_state.commit;
        if let Some(&(seen_incarnation, seen)) = self.commits.get(&node) {
            if seen_incarnation == incarnation && commit < seen {
                return Err(format!("node {node} commit went back from {seen} to {commit}"));
            }
        }
        self.commits.insert(node, (incarnation, commit));
        let applied = status.applied;
        if let Some(&seen) = self.applied.get(&node) {
            if applied < seen {
                return Err(format!("node {node} applied went back from {seen} to {applied}"));
            }
        }
        self.applied.insert(node, applied);
        raw.check_invariants()
    }

    /// The value applied at `index`, if any node applied one.
    pub fn applied_value(&self, index: LogIndex) -> Option<u64> {
        self.history.get(&index).and_then(|r| r.value)
    }
}

/// Log matching across whole logs: where two logs hold the same term at an
/// index, they agree on every entry before it.
pub fn check_log_matching(logs: &[(NodeId, Vec<Entry>)]) -> Result<(), Violation> {
    for (i, (a, log_a)) in logs.iter().enumerate() {
        for (b, log_b) in &logs[i + 1..] {
            let by_index: HashMap<LogIndex, &Entry> = log_b.iter().map(|e| (e.index, e)).collect();
            // The highest index both hold with the same term.
            let Some(last_match) =
                log_a.iter().rev().find(|e| by_index.get(&e.index).is_some_and(|o| o.term == e.term))
            else {
                continue;
            };
            for entry in log_a.iter().take_while(|e| e.index <= last_match.index) {
                if let Some(other) = by_index.get(&entry.index) {
                    if *other != entry {
                        return Err(format!(
                            "logs of {a} and {b} match at {} but differ at {}",
                            last_match.index, entry.index
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
