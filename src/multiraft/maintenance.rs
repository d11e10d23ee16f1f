//! Periodic log upkeep: trimming the in-memory tail caches to what some
//! follower may still need, keeping all caches under one node-wide budget,
//! and purging applied log prefixes.
//!
//! The sweep visits the awake groups and those that fell asleep since the
//! last sweep, never the sleeping rest: a quiesced group's cache was
//! trimmed and its log purged as it went to sleep.

use super::node::Node;
use crate::raft::{GroupId, LogIndex, LogStore, NodeId, Role};
use crate::storage::StorageBatch;

impl Node {
    /// Trims caches, enforces the cache budget and stages log purges.
    pub(super) fn maintain_logs(&mut self) {
        // Staged into the next turn's batch: one write path, whose failure
        // stops the node (the purge already moved the in-memory log).
        let mut batch = self.staged.take().unwrap_or_default();
        let due: Vec<GroupId> =
            self.awake.iter().chain(std::mem::take(&mut self.maintenance_due).iter()).copied().collect();
        let mut transfers_left = self.config.max_wakeups_per_tick;
        for id in due {
            self.maintain_group(id, &mut batch);
            match self.preferred_elsewhere(id) {
                Some(preferred) if transfers_left > 0 => {
                    self.hand_to(id, preferred);
                    transfers_left -= 1;
                }
                // Over this sweep's budget: the next sweep tries again.
                Some(_) => {
                    self.maintenance_due.insert(id);
                }
                None => {}
            }
        }
        self.enforce_cache_budget();
        if !batch.is_empty() {
            self.staged = Some(batch);
        }
    }

    /// The lowest index a live follower has not acknowledged (for a
    /// leader), or the applied index + 1 (a follower serves no appends).
    fn still_needed_from(&self, id: GroupId) -> Option<LogIndex> {
        let group = self.groups.get(&id)?;
        let applied = group.raw.store().applied().index;
        if group.role != Role::Leader {
            return Some(applied.next());
        }
        // A follower whose node is down does not hold the log back: it
        // catches up by snapshot when it returns.
        let live = |node: &NodeId| *node != self.id && self.peers_up.contains(node);
        let status = group.raw.status();
        let slowest = status.progress.iter().filter(|p| live(&p.0)).map(|p| p.1).min();
        Some(slowest.map_or(applied.next(), |matched| matched.next().min(applied.next())))
    }

    fn maintain_group(&mut self, id: GroupId, batch: &mut StorageBatch) {
        let Some(needed_from) = self.still_needed_from(id) else { return };
        let (threshold, keep) = (self.config.compact_log_entries, self.config.compact_keep_entries);
        let Some(group) = self.groups.get_mut(&id) else { return };
        if group.failure.is_some() {
            return;
        }
        group.raw.store_mut().compact_cache_to(needed_from);
        let storage = group.raw.store();
        let (applied, first) = (storage.applied().index.0, storage.truncated().index.0);
        if applied.saturating_sub(first) < threshold {
            return;
        }
        let mut target = applied.saturating_sub(keep);
        // Keep what a live follower still needs, unless it is so far
        // behind that a snapshot is cheaper than holding the log.
        let slowest = needed_from.0.saturating_sub(1);
        if applied.saturating_sub(slowest) < 4 * threshold {
            target = target.min(slowest);
        }
        if target > first {
            if let Err(error) = group.raw.store_mut().stage_purge(batch, LogIndex(target)) {
                tracing::warn!(group = %id, "log purge skipped: {error}");
            }
        }
    }

    /// The group's preferred replica (placement spreads those evenly over
    /// the nodes) when this node leads instead and that node is up, as
    /// after a failure or a start in which one node won most elections.
    pub(super) fn preferred_elsewhere(&self, id: GroupId) -> Option<NodeId> {
        let group = self.groups.get(&id)?;
        if group.role != Role::Leader || group.failure.is_some() {
            return None;
        }
        let replicas: Vec<u64> = self.view.replicas[group.shard.0 as usize].iter().map(|n| n.0).collect();
        let preferred = NodeId(flotilla_placement::preferred_leader(&replicas, group.shard.0));
        (preferred != self.id && self.peers_up.contains(&preferred)).then_some(preferred)
    }

    /// Starts moving the group's leadership to `to` (the core waits until
    /// `to` has the whole log, then tells it to campaign).
    fn hand_to(&mut self, id: GroupId, to: NodeId) {
        let Some(group) = self.groups.get_mut(&id) else { return };
        if let Err(error) = group.raw.transfer_leader(to) {
            tracing::debug!(group = %id, "no leadership transfer to node {to}: {error}");
        }
        self.after_input(id);
    }

    /// Drops the largest caches until all fit the budget (a burst to many
    /// groups at once must not hold its entries in memory for long).
    fn enforce_cache_budget(&mut self) {
        // Only awake groups hold cache: one going to sleep is trimmed to
        // nothing (see `finish_turn`).
        let mut sizes: Vec<(u64, GroupId)> = self
            .awake
            .iter()
            .filter_map(|id| Some((self.groups.get(id)?.raw.store().cache().size_bytes(), *id)))
            .filter(|(bytes, _)| *bytes > 0)
            .collect();
        let mut total: u64 = sizes.iter().map(|(bytes, _)| bytes).sum();
        self.stats.cache_bytes.store(total, std::sync::atomic::Ordering::Relaxed);
        if total <= self.config.cache_budget_bytes {
            return;
        }
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, id) in sizes {
            if total <= self.config.cache_budget_bytes {
                break;
            }
            if let Some(group) = self.groups.get_mut(&id) {
                let end = group.raw.store().last_index().next();
                group.raw.store_mut().compact_cache_to(end);
                total -= bytes;
            }
        }
        self.stats.cache_bytes.store(total, std::sync::atomic::Ordering::Relaxed);
    }
}
