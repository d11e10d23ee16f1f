//! Quiescence in the simulator: idle leaders quiesce their group, quiesced
//! nodes are not ticked, load wakes them, and a follower forgets a leader
//! whose peer stream broke (a crash, a partition, a flapping link) after a
//! random, staggered delay, as the node runtime will. Also the appends a
//! Raft-paper leader would send after a rejection (see `SimConfig`).

use super::checker::Violation;
use super::cluster::{Cluster, TIME_UNITS_PER_TICK};
use crate::raft::{LogIndex, Message, MessageKind, NodeId, Role};

impl Cluster {
    /// Whether `a` sees `b` as up: what a peer stream tells a node.
    pub(super) fn stream_up(&self, a: NodeId, b: NodeId) -> bool {
        let up = |id: NodeId| self.nodes.get(&id).is_some_and(|n| n.is_up());
        up(a) && up(b) && !self.blocked.contains(&(a, b)) && !self.blocked.contains(&(b, a))
    }

    /// An idle leader quiesces its group, now and then, if it can.
    pub(super) fn maybe_quiesce(&mut self, id: NodeId) {
        let Some(raw) = self.nodes.get(&id).and_then(|n| n.raw.as_ref()) else { return };
        if raw.is_quiesced() || raw.status().soft_state.role != Role::Leader {
            return;
        }
        if !self.rng.chance(self.config.quiesce_per_million) {
            return;
        }
        let live: Vec<NodeId> = self.nodes.keys().copied().filter(|&peer| self.stream_up(id, peer)).collect();
        let raw = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()).expect("checked");
        if raw.quiesce(|peer| live.contains(&peer)) {
            self.stats.quiesced += 1;
            self.log(format!("leader {id} quiesces"));
        }
    }

    /// Counts wake-ups, and checks that a quiesced node has nothing left to
    /// do once its Readies are handled.
    pub(super) fn note_quiescence(&mut self, id: NodeId) {
        let quiesced = self.nodes.get(&id).and_then(|n| n.raw.as_ref()).is_some_and(|r| r.is_quiesced());
        let was = self.was_quiesced.insert(id, quiesced).unwrap_or(false);
        if was && !quiesced && self.nodes[&id].is_up() {
            self.stats.woken += 1;
        }
    }

    /// Schedules a forget for every follower whose leader's stream is down,
    /// once per (follower incarnation, leader).
    pub(super) fn watch_streams(&mut self) {
        let mut due = Vec::new();
        for (&id, node) in &self.nodes {
            let Some(raw) = node.raw.as_ref() else { continue };
            let status = raw.status();
            let Some(leader) = status.soft_state.leader else { continue };
            if leader == id || status.soft_state.role != Role::Follower || self.stream_up(id, leader) {
                continue;
            }
            let scheduled = self.forgets.iter().any(|&(_, f, inc, l)| (f, inc, l) == (id, node.incarnation, leader));
            if !scheduled {
                due.push((id, node.incarnation, leader));
            }
        }
        for (id, incarnation, leader) in due {
            let delay = self.rng.range(0, self.config.forget_delay_ticks * TIME_UNITS_PER_TICK);
            self.forgets.push((self.time + delay, id, incarnation, leader));
        }
    }

    /// Carries out the forgets that are due: the follower still follows
    /// that leader in the same incarnation.
    pub(super) fn forget_due(&mut self) -> Result<(), Violation> {
        let now = self.time;
        let (due, later): (Vec<_>, Vec<_>) = self.forgets.drain(..).partition(|&(at, ..)| at <= now);
        self.forgets = later;
        for (_, id, incarnation, leader) in due {
            let Some(node) = self.nodes.get_mut(&id) else { continue };
            if node.incarnation != incarnation {
                continue;
            }
            let Some(raw) = node.raw.as_mut() else { continue };
            if raw.status().soft_state.leader != Some(leader) {
                continue;
            }
            raw.forget_leader();
            self.stats.leaders_forgotten += 1;
            self.log(format!("node {id} forgets leader {leader}"));
            self.flush(id)?;
        }
        Ok(())
    }

    pub(super) fn maybe_crash_quiesced_leader(&mut self) {
        if !self.rng.chance(self.config.crash_quiesced_leader_per_million) {
            return;
        }
        let quiesced_leader = self.nodes.iter().find_map(|(&id, n)| {
            let raw = n.raw.as_ref()?;
            (raw.is_quiesced() && raw.status().soft_state.role == Role::Leader).then_some(id)
        });
        if let Some(id) = quiesced_leader {
            self.log(format!("crash quiesced leader {id}"));
            self.stats.crashes += 1;
            self.stats.quiesced_leader_crashes += 1;
            self.nodes.get_mut(&id).expect("up").crash();
        }
    }

    /// After `leader` handled a rejected append, sends the follower what a
    /// Raft-paper leader would (§5.3): entries from the first index the
    /// follower holds of the conflicting term (`reject_hint`), with the
    /// leader's commit. That may start below the conflict, so a follower can
    /// hold a stale suffix past the last entry it accepts: it must commit no
    /// further than that entry.
    pub(super) fn paper_backtrack(&mut self, leader: NodeId, rejection: &Message) {
        let Some(raw) = self.nodes.get(&leader).and_then(|n| n.raw.as_ref()) else { return };
        let status = raw.status();
        if status.soft_state.role != Role::Leader || status.hard_state.term != rejection.term {
            return;
        }
        let next = rejection.reject_hint.max(LogIndex(1));
        let Some(prev_term) = raw.term_at(next.prev()) else { return };
        let high = (next + self.rng.range(0, 3)).min(status.last_index.next());
        let Ok(entries) = raw.entries(next, high) else { return };
        let mut message = Message::new(MessageKind::AppendEntries, leader, rejection.from, status.hard_state.term);
        message.index = next.prev();
        message.log_term = prev_term;
        message.commit = status.hard_state.commit;
        message.entries = entries;
        self.stats.paper_backtracks += 1;
        self.send(message);
    }
}
