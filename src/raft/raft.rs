//! The Raft state machine of one group: its persistent and volatile state,
//! role transitions, the logical clock, and the checks every message goes
//! through before its role-specific handler (in `step.rs`).

use super::error::{RaftError, Result};
use super::log::RaftLog;
use super::log_store::LogStore;
use super::read_only::ReadOnly;
use super::tracker::{Configuration, ProgressTracker};
use super::types::{ConfState, Entry, EntryPayload, GroupId, HardState, LogIndex, Message, MessageKind, NodeId, Term};

/// The role a node plays in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Pre-vote phase (thesis §9.6): asking whether an election could win
    /// without disturbing anyone's term.
    PreCandidate,
    Candidate,
    Leader,
}

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Every read index is confirmed by a heartbeat round (thesis §6.4).
    Safe,
    /// The leader answers at once while it holds a lease: a majority heard
    /// from it within the last `election_timeout - clock_drift_bound_ticks`
    /// ticks, so none of them will vote for anyone else yet (thesis §6.4.1).
    /// Requires check-quorum.
    Lease { clock_drift_bound_ticks: u32 },
}

/// Settings of one group's Raft state machine.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Followers wait between this and twice this many ticks without hearing
    /// from a leader before campaigning.
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    pub pre_vote: bool,
    /// The leader steps down when it has not heard from a quorum for an
    /// election timeout, and followers ignore votes while they hear from one.
    pub check_quorum: bool,
    pub read_mode: ReadMode,
    /// Upper bound on the entries of one AppendEntries message.
    pub max_size_per_message_bytes: u64,
    /// Appends in flight to one follower in Replicate state.
    pub max_inflight_messages: usize,
    /// Upper bound on committed entries handed out in one Ready.
    pub max_committed_size_per_ready_bytes: u64,
    /// The source of this replica's election-timeout jitter. The caller
    /// draws it; the core never does (so every run replays from its seeds).
    /// Replicas of many groups on one node need different seeds, or they all
    /// time out on the same tick: see [`Config::for_group`].
    pub random_seed: u64,
    /// The index the state machine has applied (on restart).
    pub applied: LogIndex,
}

impl Config {
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            max_size_per_message_bytes: 1 << 20,
            max_inflight_messages: 256,
            max_committed_size_per_ready_bytes: 16 << 20,
            random_seed: id.0,
            applied: LogIndex::ZERO,
        }
    }

    /// The configuration of node `id`'s replica of `group`. The election
    /// jitter is seeded from both, so when a node dies the groups it led
    /// spread their elections over the randomized window instead of all
    /// campaigning on the same tick. Callers may still set `random_seed`.
    pub fn for_group(id: NodeId, group: GroupId) -> Config {
        let mut config = Config::new(id);
        config.random_seed = group_seed(id, group);
        config
    }

    /// Under [`ReadMode::Lease`], the ticks a leader's lease lasts after a
    /// quorum acknowledged it: an election timeout less the drift bound.
    pub(super) fn lease_ticks(&self) -> Option<u64> {
        match self.read_mode {
            ReadMode::Lease { clock_drift_bound_ticks } => {
                Some(u64::from(self.election_timeout_ticks.saturating_sub(clock_drift_bound_ticks)))
            }
            ReadMode::Safe => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let invalid = |why: &str| Err(RaftError::InvalidConfig(why.to_string()));
        if self.id == NodeId(0) {
            return invalid("node id 0 is reserved");
        }
        if self.heartbeat_interval_ticks == 0 {
            return invalid("heartbeat_interval_ticks must be at least 1");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return invalid("election_timeout_ticks must exceed heartbeat_interval_ticks");
        }
        if self.max_inflight_messages == 0 {
            return invalid("max_inflight_messages must be at least 1");
        }
        if let ReadMode::Lease { clock_drift_bound_ticks } = self.read_mode {
            if !self.check_quorum {
                return invalid("lease reads require check_quorum");
            }
            if clock_drift_bound_ticks >= self.election_timeout_ticks {
                return invalid("clock_drift_bound_ticks must be below election_timeout_ticks");
            }
        }
        Ok(())
    }
}

/// Mixes a node id and a group id into one seed. Both go through an odd
/// multiplier before they meet, so (node 1, group 2) and (node 2, group 1)
/// differ, and neighbouring group ids land far apart.
fn group_seed(id: NodeId, group: GroupId) -> u64 {
    id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ group.0.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(29)
}

/// Why a campaign starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CampaignKind {
    PreElection,
    Election,
    /// Asked by the old leader (TimeoutNow): skip pre-vote, override leases.
    Transfer,
}

/// One group's Raft state machine.
pub struct Raft<S: LogStore> {
    pub(super) id: NodeId,
    // Persistent state (Figure 2), written out through Ready.hard_state.
    pub(super) term: Term,
    pub(super) vote: Option<NodeId>,
    pub(super) log: RaftLog<S>,
    // Volatile state.
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) tracker: ProgressTracker,
    /// Invariant: Some only on a leader.
    pub(super) lead_transferee: Option<NodeId>,
    /// The index of the newest conf change this leader appended; no other
    /// may be proposed until it is applied.
    pub(super) pending_conf_index: LogIndex,
    /// Once the leader's log holds the entry that leaves the current joint
    /// configuration: that entry's index, or this term's first entry if the
    /// leave came from an earlier term (ZERO otherwise). Voters of the
    /// outgoing half only get entries up to it; see `send_limit`.
    pub(super) leave_joint_index: LogIndex,
    pub(super) read_only: ReadOnly,
    /// Read requests that arrived before this leader committed an entry of
    /// its own term (its commit index may be stale until then).
    pub(super) reads_awaiting_commit: Vec<(NodeId, Vec<u8>)>,
    pub(super) read_states: Vec<super::types::ReadState>,
    /// Follower: contexts of this node's reads forwarded to the leader and
    /// not answered yet. Dropped (and reported) when the leader changes.
    pub(super) forwarded_reads: Vec<Vec<u8>>,
    /// Contexts of this node's reads that will never be answered because
    /// leadership changed; handed to the caller in the next Ready so the
    /// client gets an error instead of waiting.
    pub(super) dropped_reads: Vec<Vec<u8>>,
    /// The group's clock is stopped: the runtime does not tick it, the
    /// leader sends no heartbeats, followers do not count towards an
    /// election. Any input wakes it (see `quiesce.rs`).
    /// Invariant: only a leader or a follower is quiesced.
    pub(super) quiesced: bool,
    /// Lease reads are not served before this tick. A quiesced leader's
    /// clock stood still while real time went on, so the acknowledgements
    /// it holds say nothing about now: after waking it serves reads through
    /// ReadIndex until it has ticked a full lease again.
    pub(super) lease_resumes_at_tick: u64,
    /// This leader sent TimeoutNow in its term. A late or duplicated one can
    /// make the target win with votes that ignore leases, so the lease is
    /// void for the rest of the term, even if the transfer seems to fail.
    pub(super) timeout_now_sent: bool,
    /// Leader: entries were appended since the last Ready. They go out in
    /// `ready()` as one append per follower, however many proposals came.
    pub(super) entries_to_send: bool,
    /// Leader: the commit index advanced since the last Ready; followers
    /// learn it from the next append or heartbeat (see `flush_sends`).
    pub(super) commit_to_send: bool,
    /// Leader: read requests wait for a heartbeat round; every request that
    /// arrives before the next Ready shares one round.
    pub(super) read_round_pending: bool,
    /// Ticks since the last heartbeat from a valid leader (follower), since
    /// the campaign started (candidate), or since the last check-quorum round.
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    /// Invariant: election_timeout <= randomized < 2 * election_timeout.
    pub(super) randomized_election_timeout: u32,
    /// Ticks since this Raft was created; the leader's lease clock.
    pub(super) ticks: u64,
    random_state: u64,
    pub(super) config: Config,
    /// Outgoing messages not yet collected into a Ready.
    pub(super) messages: Vec<Message>,
}

impl<S: LogStore> Raft<S> {
    /// A group member restarting from `hard_state` and `conf_state` as
    /// persisted, with its log in `store`.
    pub fn new(config: Config, store: S, hard_state: HardState, conf_state: &ConfState) -> Result<Raft<S>> {
        config.validate()?;
        let log = RaftLog::new(store, hard_state.commit, config.applied);
        // The one read every later step relies on; a broken store fails here.
        log.term(log.last_index())?;
        let mut tracker = ProgressTracker::new(config.max_inflight_messages);
        let configuration = Configuration::from_conf_state(conf_state);
        configuration.check().map_err(RaftError::InvalidConfig)?;
        tracker.set_config(configuration, log.last_index().next());
        let mut raft = Raft {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            role: Role::Follower,
            leader: None,
            tracker,
            lead_transferee: None,
            pending_conf_index: LogIndex::ZERO,
            leave_joint_index: LogIndex::ZERO,
            read_only: ReadOnly::default(),
            reads_awaiting_commit: Vec::new(),
            read_states: Vec::new(),
            forwarded_reads: Vec::new(),
            dropped_reads: Vec::new(),
            quiesced: false,
            lease_resumes_at_tick: 0,
            timeout_now_sent: false,
            entries_to_send: false,
            commit_to_send: false,
            read_round_pending: false,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            ticks: 0,
            random_state: config.random_seed,
            config,
            messages: Vec::new(),
        };
        raft.become_follower(hard_state.term, None);
        Ok(raft)
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    /// A node that may become leader: a voter of the current configuration.
    pub(super) fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id)
    }

    // ---- randomness and clock ----

    /// splitmix64 over the caller's seed: deterministic jitter.
    fn next_random(&mut self) -> u64 {
        self.random_state = self.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn reset_randomized_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks;
        self.randomized_election_timeout = base + (self.next_random() % base as u64) as u32;
    }

    /// Advances the logical clock by one tick (waking a quiesced group).
    pub fn tick(&mut self) {
        self.wake();
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.tracker.quorum_active(self.id) {
                self.become_follower(self.term, None);
                return;
            }
            for (&id, progress) in self.tracker.progress.iter_mut() {
                progress.recent_active = id == self.id;
            }
            // A transfer that did not finish within an election timeout failed.
            self.lead_transferee = None;
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat_with_reads();
        }
    }

    /// Whether this node believes a leader is alive and should refuse to
    /// help unseat it (check-quorum's lease on votes, thesis §4.2.3). Under
    /// lease reads a freshly started node also waits out one election timeout,
    /// since it may have promised not to vote before it restarted.
    pub(super) fn in_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        let heard_recently = self.election_elapsed < self.config.election_timeout_ticks;
        let restart_guard = matches!(self.config.read_mode, ReadMode::Lease { .. })
            && self.ticks < self.config.election_timeout_ticks as u64;
        (self.leader.is_some() && heard_recently) || restart_guard
    }

    // ---- role transitions ----

    pub(super) fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.drop_local_reads();
        self.quiesced = false;
        self.timeout_now_sent = false;
        self.entries_to_send = false;
        self.commit_to_send = false;
        self.read_round_pending = false;
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = None;
        self.tracker.votes.clear();
        self.pending_conf_index = LogIndex::ZERO;
        self.leave_joint_index = LogIndex::ZERO;
        let next_index = self.log.last_index().next();
        let persisted = self.log.persisted;
        let id = self.id;
        let max_inflight = self.config.max_inflight_messages;
        for (&peer, progress) in self.tracker.progress.iter_mut() {
            let is_learner = progress.is_learner;
            *progress = super::progress::Progress::new(next_index, max_inflight, is_learner);
            if peer == id {
                progress.matched = persisted;
                progress.recent_active = true;
            }
        }
    }

    /// Leadership changed: no read this node started will be answered by
    /// the leader it asked. Their contexts go to the caller (Ready's
    /// `dropped_reads`); reads forwarded to us by followers are dropped too,
    /// and those followers drop them when they see the new leader.
    fn drop_local_reads(&mut self) {
        let id = self.id;
        let pending = std::mem::take(&mut self.read_only).into_pending();
        let awaiting = std::mem::take(&mut self.reads_awaiting_commit);
        let local = pending.filter(|r| r.from == id).map(|r| r.context);
        self.dropped_reads.extend(local);
        self.dropped_reads.extend(awaiting.into_iter().filter(|(from, _)| *from == id).map(|(_, context)| context));
        self.dropped_reads.append(&mut self.forwarded_reads);
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a pre-candidate");
        // Pre-vote changes neither term nor vote: a failed pre-election
        // disturbs nobody.
        self.tracker.votes.clear();
        self.role = Role::PreCandidate;
        self.leader = None;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader cannot become a candidate");
        self.reset(self.term.next());
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    pub(super) fn become_leader(&mut self) {
        assert_ne!(self.role, Role::Follower, "a follower must campaign before leading");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        if let Some(progress) = self.tracker.progress.get_mut(&self.id) {
            progress.become_replicate();
        }
        // Conf changes of earlier terms may be in the uncommitted tail; allow
        // no new one until everything up to here is applied.
        self.pending_conf_index = self.log.last_index();
        let inherited_leave = self.find_leave_joint_entry();
        // §5.4.2: commit earlier terms' entries by committing one of ours.
        let index = self.log.last_index().next();
        self.log.append(&[Entry { term: self.term, index, payload: EntryPayload::Normal(Vec::new()) }]);
        // An inherited leave entry commits only with this term's first entry,
        // so outgoing voters must get that far (the limit must be an entry
        // of the current term, or nothing past it could ever commit).
        if inherited_leave != LogIndex::ZERO {
            self.leave_joint_index = index;
        }
    }

    /// A leave-joint entry in the unapplied tail (a new leader inherits it).
    fn find_leave_joint_entry(&self) -> LogIndex {
        if !self.tracker.config.voters.is_joint() || self.log.applied >= self.log.last_index() {
            return LogIndex::ZERO;
        }
        let low = self.log.applied.next().max(self.log.first_index());
        let Ok(entries) = self.log.slice(low, self.log.last_index().next(), u64::MAX) else { return LogIndex::ZERO };
        let is_leave = |e: &&Entry| matches!(&e.payload, EntryPayload::ConfChange(c) if c.is_leave_joint());
        entries.iter().rev().find(is_leave).map_or(LogIndex::ZERO, |e| e.index)
    }

    /// How far a peer may be sent entries. Voters that only the outgoing
    /// half of a joint configuration has get nothing past the entry that
    /// leaves it. Otherwise they could hold a longer log than every member
    /// of the new configuration; after the leave commits they apply their
    /// removal and never campaign, yet until the members apply the leave
    /// too an election needs their votes, which go only to a candidate at
    /// least as up to date: no one could be elected.
    pub(super) fn send_limit(&self, to: NodeId) -> Option<LogIndex> {
        let voters = &self.tracker.config.voters;
        let outgoing_only = voters.is_joint() && !voters.incoming.contains(&to);
        (outgoing_only && self.leave_joint_index != LogIndex::ZERO).then_some(self.leave_joint_index)
    }

    // ---- elections ----

    /// Starts an election if this node may. `transfer` marks an election
    /// requested by the leader (TimeoutNow).
    pub(super) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_change() {
            // Campaigning under a configuration about to change could elect a
            // leader the new configuration would not.
            return;
        }
        let kind = match (transfer, self.config.pre_vote) {
            (true, _) => CampaignKind::Transfer,
            (false, true) => CampaignKind::PreElection,
            (false, false) => CampaignKind::Election,
        };
        self.campaign(kind);
    }

    fn has_unapplied_conf_change(&self) -> bool {
        if self.log.committed <= self.log.applied {
            return false;
        }
        let low = self.log.applied.next().max(self.log.first_index());
        match self.log.slice(low, self.log.committed.next(), u64::MAX) {
            Ok(entries) => entries.iter().any(Entry::is_conf_change),
            Err(_) => true,
        }
    }

    pub(super) fn campaign(&mut self, kind: CampaignKind) {
        let (vote_kind, vote_term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            (MessageKind::RequestPreVote, self.term.next())
        } else {
            self.become_candidate();
            (MessageKind::RequestVote, self.term)
        };
        self.tracker.record_vote(self.id, true);
        if self.tracker.vote_result() == super::quorum::VoteResult::Won {
            // A single voter wins at once.
            match kind {
                CampaignKind::PreElection => self.campaign(CampaignKind::Election),
                _ => self.become_leader(),
            }
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.tracker.config.voters.ids() {
            if peer == self.id {
                continue;
            }
            let mut message = Message::new(vote_kind, self.id, peer, vote_term);
            message.index = last_index;
            message.log_term = last_term;
            message.leader_transfer = kind == CampaignKind::Transfer;
            self.messages.push(message);
        }
    }

    // ---- the common entry point ----

    /// Processes one message from a peer of this group.
    pub fn step(&mut self, message: Message) -> Result<()> {
        if message.to != self.id {
            return Ok(()); // Misrouted; ignore rather than fail the group.
        }
        // Any message wakes a quiesced group, even a stale one: whoever sent
        // it is not quiet. A quiesce heartbeat puts a follower back to sleep.
        self.wake();
        if message.term > self.term {
            if !self.step_higher_term(&message) {
                return Ok(());
            }
        } else if message.term < self.term {
            self.step_lower_term(&message);
            return Ok(());
        }
        match message.kind {
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                self.handle_vote_request(&message);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(message),
                Role::Candidate | Role::PreCandidate => self.step_candidate(message),
                Role::Follower => self.step_follower(message),
            },
        }
    }

    /// A message from a newer term. Returns false when it must be ignored.
    fn step_higher_term(&mut self, message: &Message) -> bool {
        match message.kind {
            MessageKind::RequestVote | MessageKind::RequestPreVote => {
                if !message.leader_transfer && self.in_lease() {
                    // We hear from a live leader: a partitioned node's
                    // election must not disrupt the group (thesis §4.2.3).
                    return false;
                }
                if message.kind == MessageKind::RequestPreVote {
                    return true; // Answer without adopting the term.
                }
                self.become_follower(message.term, None);
            }
            // A granted pre-vote is for a term we will adopt when we win.
            MessageKind::RequestPreVoteResponse if !message.reject => {}
            // A new leader's append, heartbeat or snapshot: `step_follower`
            // accepts its sender as the leader right after.
            _ => self.become_follower(message.term, None),
        }
        true
    }

    /// A message from an older term: ignore it, but tell a stale leader or
    /// pre-candidate about the newer term so it stops (etcd does the same;
    /// without it, a node rejoining after a partition under check-quorum or
    /// pre-vote could stay stuck).
    fn step_lower_term(&mut self, message: &Message) {
        let (check_quorum, pre_vote) = (self.config.check_quorum, self.config.pre_vote);
        match message.kind {
            MessageKind::AppendEntries | MessageKind::Heartbeat if check_quorum || pre_vote => {
                self.send(Message::new(MessageKind::AppendEntriesResponse, self.id, message.from, self.term));
            }
            // Unlike etcd, answer a stale vote request too: a candidate that
            // never hears a newer term can trail forever behind voters whose
            // terms a removed-but-unaware node keeps raising (the simulator
            // found such a group that could not elect a leader).
            MessageKind::RequestPreVote | MessageKind::RequestVote => {
                let kind = if message.kind == MessageKind::RequestPreVote {
                    MessageKind::RequestPreVoteResponse
                } else {
                    MessageKind::RequestVoteResponse
                };
                let mut response = Message::new(kind, self.id, message.from, self.term);
                response.reject = true;
                self.send(response);
            }
            _ => {}
        }
    }

    /// §5.2, §5.4.1: grant at most one vote per term, only to an
    /// up-to-date candidate. Pre-votes are granted for a future term without
    /// recording anything.
    fn handle_vote_request(&mut self, message: &Message) {
        let pre_vote = message.kind == MessageKind::RequestPreVote;
        let can_vote = self.vote == Some(message.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && message.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(message.index, message.log_term);
        let kind = if pre_vote { MessageKind::RequestPreVoteResponse } else { MessageKind::RequestVoteResponse };
        // A granted response carries the requested term so the candidate
        // counts it; a rejection carries ours.
        let term = if granted { message.term } else { self.term };
        let mut response = Message::new(kind, self.id, message.from, term);
        response.reject = !granted;
        if granted && !pre_vote {
            self.election_elapsed = 0;
            self.vote = Some(message.from);
        }
        self.send(response);
    }

    pub(super) fn send(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// The common checks of every public input: a failed group refuses work.
    pub(super) fn check_failure(&self) -> Result<()> {
        match self.log.failure() {
            Some(error) => Err(RaftError::Storage(error.clone())),
            None => Ok(()),
        }
    }
}
