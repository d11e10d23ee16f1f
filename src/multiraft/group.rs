//! One hosted group: its Raft replica and the client requests waiting on it.
//!
//! A request waits in exactly one place at a time: `new_writes` /
//! `new_reads` until the end of the turn it arrived in (so one turn's
//! requests become one proposal batch and one ReadIndex round), then
//! `proposals` (a write, until its entry is applied or overwritten),
//! `read_rounds` (a read, until the leader confirms its read index) or
//! `confirmed_reads` (until the state machine reaches that index).

use std::collections::BTreeMap;
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
    /// The start of the turn that proposed it (propose-to-commit latency).
    pub proposed_at: Instant,
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
    /// Proposed writes awaiting their entry's apply, by log index. Several
    /// may share an index: a proposal of a lost term whose entry was
    /// overwritten, and a later term's at the same index. Which one (if
    /// any) happened is known only when that index applies.
    pub proposals: BTreeMap<LogIndex, Vec<Proposal>>,
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
            proposals: BTreeMap::new(),
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
    /// batch holding the apply is written. Returns when the entry was
    /// proposed, if this node proposed it.
    pub fn resolve_applied(
        &mut self,
        index: LogIndex,
        term: crate::raft::Term,
        result: &CommandResult,
        answers: &mut Vec<Answer>,
    ) -> Option<Instant> {
        resolve_applied(&mut self.proposals, self.shard, ProposalId { index, term }, result, answers)
    }

    /// A snapshot replaced the state up to `index`: proposals at or below
    /// it may or may not be in it.
    pub fn resolve_snapshot(&mut self, index: LogIndex, answers: &mut Vec<Answer>) {
        while let Some(entry) = self.proposals.first_entry() {
            if *entry.key() > index {
                return;
            }
            for proposal in entry.remove() {
                let detail = format!("index {} was replaced by a snapshot at {index}", proposal.id.index);
                answers.push((proposal.waiter, Err(RequestError::OutcomeUnknown(detail))));
            }
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
        for proposal in std::mem::take(&mut self.proposals).into_values().flatten() {
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
        for proposals in self.proposals.values_mut() {
            let (late, kept): (Vec<_>, Vec<_>) = proposals.drain(..).partition(|p| expired(&p.waiter));
            *proposals = kept;
            for proposal in late {
                let detail = format!("timed out waiting for index {} to apply", proposal.id.index);
                proposal.waiter.answer(Err(RequestError::OutcomeUnknown(detail)));
            }
        }
        self.proposals.retain(|_, proposals| !proposals.is_empty());
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

/// Answers the proposals an applied entry (`applied`: its index and term)
/// settles: every proposal at or below its index. Returns when the
/// applied entry's own proposal was made, if it is among them.
fn resolve_applied(
    proposals: &mut BTreeMap<LogIndex, Vec<Proposal>>,
    shard: ShardId,
    applied: ProposalId,
    result: &CommandResult,
    answers: &mut Vec<Answer>,
) -> Option<Instant> {
    let mut proposed_at = None;
    while let Some(entry) = proposals.first_entry() {
        if *entry.key() > applied.index {
            break;
        }
        let at = *entry.key();
        for proposal in entry.remove() {
            let answer = if proposal.id == applied {
                proposed_at = Some(proposal.proposed_at);
                command_outcome(result)
            } else if at == applied.index {
                // Another term's entry committed at this index: this
                // proposal never will. Safe for the client to retry.
                Err(RequestError::NoLeader { shard })
            } else {
                // Below what applies now yet never matched: cannot happen
                // while apply is in order; never claim "not done" then.
                let detail = format!("index {at} applied without a matching entry");
                Err(RequestError::OutcomeUnknown(detail))
            };
            answers.push((proposal.waiter, answer));
        }
    }
    proposed_at
}

/// The client-facing outcome of an applied command.
pub(super) fn command_outcome(result: &CommandResult) -> Result<Outcome, RequestError> {
    match result {
        CommandResult::Rejected(detail) => Err(RequestError::InvalidArgument(detail.clone())),
        other => Ok(Outcome::Written(other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Term;

    fn proposal(index: u64, term: u64) -> (Proposal, oneshot::Receiver<Result<Outcome, RequestError>>) {
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter { reply, deadline: Instant::now() + std::time::Duration::from_secs(60) };
        let id = ProposalId { index: LogIndex(index), term: Term(term) };
        (Proposal { id, waiter, proposed_at: Instant::now() }, answer)
    }

    /// A leader of term 3 proposed at 7, 8 and 9, lost them, and leads
    /// again in term 5 with a proposal at 8: when 8 applies in term 5 that
    /// proposal succeeds, the lost ones at 7 and 8 are told "not done"
    /// (their indexes committed other entries), and 9 waits for index 9.
    #[test]
    fn each_proposal_is_settled_by_the_entry_applied_at_its_own_index() {
        let mut proposals: BTreeMap<LogIndex, Vec<Proposal>> = BTreeMap::new();
        let mut receivers = Vec::new();
        for (index, term) in [(7, 3), (8, 3), (9, 3), (8, 5)] {
            let (p, r) = proposal(index, term);
            proposals.entry(p.id.index).or_default().push(p);
            receivers.push(r);
        }
        let shard = ShardId(4);
        let mut answers = Vec::new();
        let noop = ProposalId { index: LogIndex(7), term: Term(5) };
        let proposed = resolve_applied(&mut proposals, shard, noop, &CommandResult::NoOp, &mut answers);
        assert_eq!(proposed, None, "the new leader's no-op was proposed by no client");
        let put = ProposalId { index: LogIndex(8), term: Term(5) };
        let proposed = resolve_applied(&mut proposals, shard, put, &CommandResult::Put, &mut answers);
        assert!(proposed.is_some(), "8/t5's own proposal applied: its proposal time is reported");
        for (waiter, result) in answers.drain(..) {
            waiter.answer(result);
        }
        let mut take = |i: usize| receivers[i].try_recv().ok();
        assert_eq!(take(0), Some(Err(RequestError::NoLeader { shard })), "7/t3: index 7 holds another entry");
        assert_eq!(take(1), Some(Err(RequestError::NoLeader { shard })), "8/t3: index 8 holds another entry");
        assert_eq!(take(3), Some(Ok(Outcome::Written(CommandResult::Put))), "8/t5 applied");
        assert_eq!(take(2), None, "9/t3 waits for index 9");
        assert_eq!(proposals.len(), 1);
        let nine = ProposalId { index: LogIndex(9), term: Term(3) };
        resolve_applied(&mut proposals, shard, nine, &CommandResult::Put, &mut answers);
        let (waiter, result) = answers.pop().unwrap();
        waiter.answer(result);
        assert_eq!(take(2), Some(Ok(Outcome::Written(CommandResult::Put))), "9/t3 did commit after all");
    }
}
