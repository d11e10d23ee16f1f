//! One hosted group: its Raft replica and the client requests waiting on it.
//!
//! A request waits in exactly one place at a time: `new_writes` /
//! `new_reads` until the end of the turn it arrived in (so one turn's
//! requests become one proposal batch and one ReadIndex round), then
//! `proposals` (a write, until its entry is applied or overwritten),
//! `read_rounds` (a read, until the leader confirms its read index) or
//! `confirmed_reads` (until the state machine reaches that index).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use tokio::sync::oneshot;

use super::api::{Operation, Outcome, RequestError, ShardId};
use crate::kv::{Command, CommandResult};
use crate::raft::{GroupId, LogIndex, NodeId, ProposalId, RawNode, Role};
use crate::storage::GroupStorage;

/// Where to send one request's answer, and by when.
pub(super) struct Waiter {
    pub reply: oneshot::Sender<Result<Outcome, RequestError>>,
    pub deadline: Instant,
}

impl Waiter {
    pub fn answer(self, result: Result<Outcome, RequestError>) {
        // The client may have gone away; nobody is left to tell.
        let _ = self.reply.send(result);
    }
}

/// An answer held until the turn's batch is durable.
pub(super) type Answer = (Waiter, Result<Outcome, RequestError>);

/// A read as it waits: what to read, and for whom.
pub(super) struct PendingRead {
    pub operation: Operation,
    pub waiter: Waiter,
}

pub(super) struct Proposal {
    pub id: ProposalId,
    pub waiter: Waiter,
}

pub(super) struct Group {
    pub id: GroupId,
    pub shard: ShardId,
    pub raw: RawNode<GroupStorage>,
    /// As of the last Ready with a soft state.
    pub leader: Option<NodeId>,
    pub role: Role,
    pub new_writes: Vec<(Command, Waiter)>,
    pub new_reads: Vec<PendingRead>,
    /// Invariant: in increasing index order (proposals of later turns get
    /// later indexes; a new term's proposals come after a lost term's).
    pub proposals: VecDeque<Proposal>,
    /// ReadIndex rounds in flight, by their context.
    pub read_rounds: BTreeMap<u64, Vec<PendingRead>>,
    /// Reads whose read index is known, waiting for apply to reach it.
    pub confirmed_reads: Vec<(LogIndex, PendingRead)>,
    /// Ticks since the last proposal or read, for quiescence.
    pub idle_ticks: u32,
    /// Set when a storage error failed the group; it serves no more.
    pub failure: Option<String>,
}

impl Group {
    pub fn new(id: GroupId, shard: ShardId, raw: RawNode<GroupStorage>) -> Group {
        Group {
            id,
            shard,
            raw,
            leader: None,
            role: Role::Follower,
            new_writes: Vec::new(),
            new_reads: Vec::new(),
            proposals: VecDeque::new(),
            read_rounds: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            idle_ticks: 0,
            failure: None,
        }
    }

    pub fn has_waiters(&self) -> bool {
        !(self.new_writes.is_empty()
            && self.new_reads.is_empty()
            && self.proposals.is_empty()
            && self.read_rounds.is_empty()
            && self.confirmed_reads.is_empty())
    }

    /// Hands a finished entry's result to the proposal that created it, and
    /// fails the proposals the entry proves lost: an entry at their index
    /// with another term means theirs was overwritten and will never apply.
    /// The answers are queued in `answers`: they go out only once the
    /// batch holding the apply is written.
    pub fn resolve_applied(
        &mut self,
        index: LogIndex,
        term: crate::raft::Term,
        result: &CommandResult,
        answers: &mut Vec<Answer>,
    ) {
        while let Some(front) = self.proposals.front() {
            if front.id.index > index {
                return;
            }
            let proposal = self.proposals.pop_front().expect("front exists");
            if proposal.id.index == index && proposal.id.term == term {
                answers.push((proposal.waiter, command_outcome(result)));
            } else {
                // Definitely not applied: safe for the client to retry.
                answers.push((proposal.waiter, Err(RequestError::NoLeader { shard: self.shard })));
            }
        }
    }

    /// A snapshot replaced the state up to `index`: proposals at or below
    /// it may or may not be in it.
    pub fn resolve_snapshot(&mut self, index: LogIndex, answers: &mut Vec<Answer>) {
        while self.proposals.front().is_some_and(|p| p.id.index <= index) {
            let proposal = self.proposals.pop_front().expect("front exists");
            let detail = format!("index {} was replaced by a snapshot at {index}", proposal.id.index);
            answers.push((proposal.waiter, Err(RequestError::OutcomeUnknown(detail))));
        }
    }

    /// Answers every waiting request with `error` (the group failed or the
    /// node is stopping). Proposed writes get `OutcomeUnknown` instead: they
    /// may still commit.
    pub fn fail_all(&mut self, error: RequestError) {
        for (_, waiter) in self.new_writes.drain(..) {
            waiter.answer(Err(error.clone()));
        }
        for read in self.new_reads.drain(..) {
            read.waiter.answer(Err(error.clone()));
        }
        for proposal in self.proposals.drain(..) {
            let detail = format!("proposed at index {} but not yet applied: {error}", proposal.id.index);
            proposal.waiter.answer(Err(RequestError::OutcomeUnknown(detail)));
        }
        for read in std::mem::take(&mut self.read_rounds).into_values().flatten() {
            read.waiter.answer(Err(error.clone()));
        }
        for (_, read) in self.confirmed_reads.drain(..) {
            read.waiter.answer(Err(error.clone()));
        }
    }

    /// Answers the requests whose deadline passed: a proposed write with
    /// `OutcomeUnknown` (it may still commit), anything else with
    /// `DeadlineExceeded` (nothing was done).
    pub fn expire(&mut self, now: Instant) {
        let expired = |waiter: &Waiter| waiter.deadline <= now;
        let mut kept = VecDeque::with_capacity(self.proposals.len());
        for proposal in self.proposals.drain(..) {
            if expired(&proposal.waiter) {
                let detail = format!("timed out waiting for index {} to apply", proposal.id.index);
                proposal.waiter.answer(Err(RequestError::OutcomeUnknown(detail)));
            } else {
                kept.push_back(proposal);
            }
        }
        self.proposals = kept;
        for reads in self.read_rounds.values_mut() {
            expire_reads(reads, now);
        }
        self.read_rounds.retain(|_, reads| !reads.is_empty());
        let (late, kept): (Vec<_>, Vec<_>) = self.confirmed_reads.drain(..).partition(|(_, r)| expired(&r.waiter));
        self.confirmed_reads = kept;
        for (_, read) in late {
            read.waiter.answer(Err(RequestError::DeadlineExceeded));
        }
    }
}

fn expire_reads(reads: &mut Vec<PendingRead>, now: Instant) {
    let (late, kept): (Vec<_>, Vec<_>) = reads.drain(..).partition(|r| r.waiter.deadline <= now);
    *reads = kept;
    for read in late {
        read.waiter.answer(Err(RequestError::DeadlineExceeded));
    }
}

/// The client-facing outcome of an applied command.
pub(super) fn command_outcome(result: &CommandResult) -> Result<Outcome, RequestError> {
    match result {
        CommandResult::Rejected(detail) => Err(RequestError::InvalidArgument(detail.clone())),
        other => Ok(Outcome::Written(other.clone())),
    }
}
