//! ReadIndex bookkeeping (thesis §6.4): pending read requests waiting for a
//! heartbeat round to confirm this node is still the leader.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::types::{LogIndex, NodeId};

/// One read waiting for leadership confirmation.
#[derive(Clone, Debug)]
pub struct PendingRead {
    /// The commit index when the request arrived: the read index.
    pub index: LogIndex,
    /// Who asked: this node, or a follower that forwarded the request.
    pub from: NodeId,
    pub context: Vec<u8>,
    /// Voters that acknowledged a heartbeat carrying this context (or a later one).
    pub acks: BTreeSet<NodeId>,
}

/// Pending reads in arrival order.
///
/// Invariant: `queue` and `pending` hold the same contexts.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    pending: HashMap<Vec<u8>, PendingRead>,
    queue: VecDeque<Vec<u8>>,
}

impl ReadOnly {
    /// Queues a read; a duplicate context is ignored (the first one stands).
    pub fn add_request(&mut self, index: LogIndex, from: NodeId, context: Vec<u8>, self_id: NodeId) {
        if self.pending.contains_key(&context) {
            return;
        }
        let acks = BTreeSet::from([self_id]);
        self.pending.insert(context.clone(), PendingRead { index, from, context: context.clone(), acks });
        self.queue.push_back(context);
    }

    /// Records that `from` acknowledged the heartbeat that carried `context`.
    /// A heartbeat answered after a read was queued confirms every read
    /// queued before it too. Returns the acks of `context`, if pending.
    pub fn receive_ack(&mut self, from: NodeId, context: &[u8]) -> Option<&BTreeSet<NodeId>> {
        self.pending.get(context)?;
        for queued in &self.queue {
            let read = self.pending.get_mut(queued).expect("queue and pending agree");
            read.acks.insert(from);
            if queued.as_slice() == context {
                break;
            }
        }
        self.pending.get(context).map(|read| &read.acks)
    }

    /// Removes and returns every read queued up to and including `context`.
    pub fn advance(&mut self, context: &[u8]) -> Vec<PendingRead> {
        let Some(position) = self.queue.iter().position(|c| c.as_slice() == context) else {
            return Vec::new();
        };
        self.queue.drain(..=position).map(|c| self.pending.remove(&c).expect("queue and pending agree")).collect()
    }

    /// The context of the newest pending read, sent with each heartbeat.
    pub fn last_pending_context(&self) -> Option<&[u8]> {
        self.queue.back().map(|c| c.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Every pending read, in arrival order (leadership was lost).
    pub fn into_pending(mut self) -> impl Iterator<Item = PendingRead> {
        let queue = std::mem::take(&mut self.queue);
        queue.into_iter().map(move |c| self.pending.remove(&c).expect("queue and pending agree"))
    }
}
