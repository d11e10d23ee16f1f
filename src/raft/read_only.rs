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

#[cfg(test)]
mod tests {
    use super::*;

    const SELF: NodeId = NodeId(1);

    fn acks(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    /// Reads "a" (index 5, from self), "b" (index 6, from 2) and "c" (index 7, from 3), in that order.
    fn three_reads() -> ReadOnly {
        let mut ro = ReadOnly::default();
        ro.add_request(LogIndex(5), SELF, b"a".to_vec(), SELF);
        ro.add_request(LogIndex(6), NodeId(2), b"b".to_vec(), SELF);
        ro.add_request(LogIndex(7), NodeId(3), b"c".to_vec(), SELF);
        ro
    }

    fn summary(reads: &[PendingRead]) -> Vec<(Vec<u8>, LogIndex, NodeId)> {
        reads.iter().map(|r| (r.context.clone(), r.index, r.from)).collect()
    }

    // A new read is acked by the leader itself and becomes the newest pending context.
    #[test]
    fn add_request_queues_with_the_leaders_own_ack() {
        let mut ro = ReadOnly::default();
        assert!(ro.is_empty());
        assert_eq!(ro.last_pending_context(), None);
        ro.add_request(LogIndex(5), NodeId(2), b"a".to_vec(), SELF);
        assert!(!ro.is_empty());
        assert_eq!(ro.last_pending_context(), Some(&b"a"[..]));
        assert_eq!(ro.receive_ack(SELF, b"a"), Some(&acks(&[1])));
        ro.add_request(LogIndex(6), NodeId(3), b"b".to_vec(), SELF);
        assert_eq!(ro.last_pending_context(), Some(&b"b"[..]));
    }

    // A duplicate context is ignored: the first request's index and origin stand, the queue does not grow.
    #[test]
    fn add_request_ignores_a_duplicate_context() {
        let mut ro = ReadOnly::default();
        ro.add_request(LogIndex(5), NodeId(2), b"a".to_vec(), SELF);
        ro.add_request(LogIndex(6), NodeId(3), b"b".to_vec(), SELF);
        ro.add_request(LogIndex(9), NodeId(4), b"a".to_vec(), NodeId(7));
        assert_eq!(ro.last_pending_context(), Some(&b"b"[..]), "the duplicate is not re-queued at the back");
        assert_eq!(ro.receive_ack(NodeId(3), b"a"), Some(&acks(&[1, 3])), "the duplicate's self id is not added");
        let drained = ro.advance(b"b");
        assert_eq!(
            summary(&drained),
            vec![(b"a".to_vec(), LogIndex(5), NodeId(2)), (b"b".to_vec(), LogIndex(6), NodeId(3))]
        );
        assert!(ro.is_empty());
    }

    // An ack for a context confirms that read and every read queued before it, none after.
    #[test]
    fn receive_ack_propagates_to_earlier_reads_only() {
        let mut ro = three_reads();
        assert_eq!(ro.receive_ack(NodeId(2), b"b"), Some(&acks(&[1, 2])));
        assert_eq!(ro.receive_ack(NodeId(3), b"a"), Some(&acks(&[1, 2, 3])));
        let reads = ro.advance(b"c");
        let got: Vec<BTreeSet<NodeId>> = reads.into_iter().map(|r| r.acks).collect();
        assert_eq!(got, vec![acks(&[1, 2, 3]), acks(&[1, 2]), acks(&[1])]);
    }

    // An ack for the newest context reaches every queued read.
    #[test]
    fn receive_ack_for_the_newest_context_confirms_all() {
        let mut ro = three_reads();
        assert_eq!(ro.receive_ack(NodeId(4), b"c"), Some(&acks(&[1, 4])));
        let got: Vec<BTreeSet<NodeId>> = ro.into_pending().map(|r| r.acks).collect();
        assert_eq!(got, vec![acks(&[1, 4]); 3]);
    }

    // An ack for an unknown context returns None and records nothing.
    #[test]
    fn receive_ack_for_an_unknown_context_is_none() {
        let mut ro = three_reads();
        assert_eq!(ro.receive_ack(NodeId(2), b"zz"), None);
        assert_eq!(ro.receive_ack(NodeId(2), b""), None);
        let got: Vec<BTreeSet<NodeId>> = ro.into_pending().map(|r| r.acks).collect();
        assert_eq!(got, vec![acks(&[1]); 3]);
        assert_eq!(ReadOnly::default().receive_ack(NodeId(2), b"a"), None);
    }

    // advance removes every read up to and including the context, oldest first, and keeps the rest.
    #[test]
    fn advance_removes_up_to_and_including_the_context() {
        let mut ro = three_reads();
        let first = ro.advance(b"a");
        assert_eq!(summary(&first), vec![(b"a".to_vec(), LogIndex(5), SELF)]);
        assert_eq!(ro.last_pending_context(), Some(&b"c"[..]));
        let mut ro = three_reads();
        let two = ro.advance(b"b");
        assert_eq!(summary(&two), vec![(b"a".to_vec(), LogIndex(5), SELF), (b"b".to_vec(), LogIndex(6), NodeId(2))]);
        assert!(!ro.is_empty());
        assert_eq!(ro.receive_ack(NodeId(2), b"a"), None, "advanced reads are gone");
        assert_eq!(ro.receive_ack(NodeId(2), b"c"), Some(&acks(&[1, 2])));
        let rest = ro.advance(b"c");
        assert_eq!(summary(&rest), vec![(b"c".to_vec(), LogIndex(7), NodeId(3))]);
        assert!(ro.is_empty());
        assert_eq!(ro.last_pending_context(), None);
    }

    // advance with an unknown context returns nothing and removes nothing.
    #[test]
    fn advance_with_an_unknown_context_is_a_no_op() {
        let mut ro = three_reads();
        assert!(ro.advance(b"zz").is_empty());
        assert_eq!(ro.last_pending_context(), Some(&b"c"[..]));
        let all: Vec<Vec<u8>> = ro.into_pending().map(|r| r.context).collect();
        assert_eq!(all, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(ReadOnly::default().advance(b"a").is_empty());
    }

    // into_pending yields every read in arrival order with its fields intact.
    #[test]
    fn into_pending_yields_arrival_order() {
        let ro = three_reads();
        let all: Vec<PendingRead> = ro.into_pending().collect();
        assert_eq!(
            summary(&all),
            vec![
                (b"a".to_vec(), LogIndex(5), SELF),
                (b"b".to_vec(), LogIndex(6), NodeId(2)),
                (b"c".to_vec(), LogIndex(7), NodeId(3)),
            ]
        );
        assert_eq!(ReadOnly::default().into_pending().count(), 0);
    }
}
