//! The properties a multi-group run must keep, checked as it goes and
//! after healing.

use std::collections::BTreeMap;

use super::world::{World, TICK_UNITS};
use crate::kv;
use crate::raft::{GroupId, NodeId, Role, Status, Term};

impl World {
    /// Every live node's invariants, and at most one leader per group and
    /// term across the whole run (election safety).
    pub(super) fn check_nodes(&mut self) -> Result<(), String> {
        let mut leaders = Vec::new();
        // A node whose write is in progress is between `ready` and
        // `advance` for some groups; it is checked once the write is done.
        for slot in self.nodes.iter().filter(|s| !s.has_pending_turn()) {
            let Some(node) = &slot.node else { continue };
            node.check_invariants().map_err(|e| format!("node {}: invariant broken: {e}", slot.id))?;
            for (group, status) in node.group_statuses() {
                if status.soft_state.role == Role::Leader {
                    leaders.push((group, status.hard_state.term, slot.id));
                }
            }
        }
        for (group, term, node) in leaders {
            match self.leaders_by_term.insert((group, term), node) {
                Some(other) if other != node => {
                    return Err(format!("two leaders of group {group} in term {term}: nodes {other} and {node}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every group's status on every node hosting it, by group.
    fn statuses(&self) -> BTreeMap<GroupId, Vec<(NodeId, Status)>> {
        let mut by_group: BTreeMap<GroupId, Vec<(NodeId, Status)>> = BTreeMap::new();
        for slot in &self.nodes {
            let Some(node) = &slot.node else { continue };
            for (group, status) in node.group_statuses() {
                by_group.entry(group).or_default().push((slot.id, status));
            }
        }
        by_group
    }

    /// What keeps the cluster from being settled, if anything: a group
    /// without exactly one leader at its highest term, a leader that has
    /// not committed its whole log, or a replica that has not applied it.
    fn unsettled(&self) -> Option<String> {
        if self.has_pending_turns() {
            return Some("a write is still in progress".into());
        }
        for (group, replicas) in self.statuses() {
            let top = replicas.iter().map(|(_, s)| s.hard_state.term).max().unwrap_or(Term::ZERO);
            let leaders: Vec<&(NodeId, Status)> = replicas
                .iter()
                .filter(|(_, s)| s.soft_state.role == Role::Leader && s.hard_state.term == top)
                .collect();
            let [(leader, status)] = leaders.as_slice() else {
                return Some(format!("group {group} has {} leaders in term {top}", leaders.len()));
            };
            if status.hard_state.commit != status.last_index {
                return Some(format!(
                    "group {group}: leader {leader} committed {} of {}",
                    status.hard_state.commit, status.last_index
                ));
            }
            let commit = status.hard_state.commit;
            if let Some((node, lagging)) = replicas.iter().find(|(_, s)| s.applied != commit) {
                return Some(format!(
                    "group {group}: node {node} applied {} of {commit}; leader {leader}: {status:?}; node {node}: {lagging:?}",
                    lagging.applied
                ));
            }
        }
        None
    }

    /// Steps until the cluster settles; fails if it does not within the
    /// liveness bound.
    pub(super) fn settle_or_fail(&mut self, since: u64, what: &str) -> Result<u64, String> {
        loop {
            self.step()?;
            if self.now % (10 * TICK_UNITS) == 0 {
                match self.unsettled() {
                    None => return Ok(self.now - since),
                    Some(problem) if self.now - since > self.config.liveness_units => {
                        return Err(format!("{what}: not settled {} units after healing: {problem}", self.now - since));
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// After healing: every group gets a leader and every replica applies
    /// the whole log.
    pub(super) fn recover(&mut self, healed_at: u64) -> Result<(), String> {
        self.report.recovery_units = self.settle_or_fail(healed_at, "liveness")?;
        self.log(|| format!("settled {} units after healing", self.report.recovery_units));
        Ok(())
    }

    /// A new write to every shard commits after healing, and then every
    /// replica applies it.
    pub(super) fn check_final_writes(&mut self, healed_at: u64) -> Result<(), String> {
        let shards = self.shard_count() as usize;
        let before: std::collections::BTreeSet<Vec<u8>> = self.acked.keys().cloned().collect();
        let ring = &self.view(NodeId(1)).ring;
        let mut written = std::collections::BTreeSet::new();
        let deadline = self.now + self.config.liveness_units;
        while written.len() < shards {
            if self.now > deadline {
                return Err(format!(
                    "liveness: only {} of {shards} shards took a new write after healing",
                    written.len()
                ));
            }
            if self.clients_pending() < 64 {
                self.issue_write();
            }
            self.step()?;
            written.extend(self.acked.keys().filter(|k| !before.contains(*k)).map(|k| ring.shard_for_key(k)));
        }
        self.settle_or_fail(healed_at, "after the final writes")?;
        self.check_final_reads()
    }

    /// On the settled cluster, linearizable reads sent to random replicas
    /// are all answered, correctly, well before their deadline.
    fn check_final_reads(&mut self) -> Result<(), String> {
        // Earlier reads may still be out; they are not held to this.
        while self.clients_pending() > 0 {
            self.step()?;
        }
        self.strict_reads = true;
        for _ in 0..64 {
            self.issue_read();
        }
        let deadline = self.now + self.config.liveness_units / 4;
        while self.clients_pending() > 0 {
            if self.now > deadline {
                return Err(format!("{} reads unanswered on the settled cluster", self.clients_pending()));
            }
            self.step()?;
        }
        self.strict_reads = false;
        Ok(())
    }

    /// Replicas of each group hold the same data, and every acknowledged
    /// write is on every replica of its shard.
    pub(super) fn check_replicas_agree(&self) -> Result<(), String> {
        for shard in 0..self.shard_count() {
            let group = World::group_of_shard(shard);
            let replicas = self.view(NodeId(1)).replicas[shard as usize].clone();
            let mut first: Option<(NodeId, Vec<(Vec<u8>, Vec<u8>)>)> = None;
            for id in replicas {
                let slot = self.nodes.iter().find(|n| n.id == id).expect("known node");
                let node = slot.node.as_ref().ok_or_else(|| format!("node {id} is down at the end"))?;
                let data = kv::scan(node.engine(), group, b"", b"", usize::MAX).map_err(|e| e.to_string())?;
                match &first {
                    None => first = Some((id, data)),
                    Some((other, expected)) if *expected != data => {
                        return Err(format!(
                            "group {group}: nodes {other} and {id} hold different data ({} and {} keys)",
                            expected.len(),
                            data.len()
                        ));
                    }
                    Some(_) => {}
                }
            }
            let Some((_, data)) = first else { continue };
            let held: BTreeMap<&[u8], &[u8]> = data.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            if let Some(key) = self.refused.iter().find(|k| held.contains_key(k.as_slice())) {
                return Err(format!(
                    "write {} was answered with a retryable error (not done) but is in group {group}",
                    String::from_utf8_lossy(key)
                ));
            }
            let ring = &self.view(NodeId(1)).ring;
            for (key, value) in self.acked.iter().filter(|(k, _)| ring.shard_for_key(k) == shard) {
                if held.get(key.as_slice()) != Some(&value.as_slice()) {
                    return Err(format!(
                        "acknowledged write {} is missing from group {group}",
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
        Ok(())
    }
}
