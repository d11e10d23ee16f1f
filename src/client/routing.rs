//! The client's routing cache: the shard ring (its size learned from
//! `flotilla-shards`, the mapping fixed by the placement crate) and the
//! last known leader of each shard (from `flotilla-leader`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_placement::ShardRing;
use tonic::metadata::MetadataMap;

use crate::server::{LEADER_HEADER, SHARDS_HEADER};

#[derive(Default)]
pub(super) struct Routing {
    ring: Option<Arc<ShardRing>>,
    /// Shard -> endpoint URI of its last known leader.
    leaders: HashMap<u32, String>,
    /// Leader addresses learned from hints that then did not answer at
    /// all, and since when. Hints naming one are ignored for
    /// `DISTRUST_PERIOD`: an address this client cannot reach (a node
    /// advertising an address valid only inside its own network) then
    /// costs one failed attempt per period, not one per call.
    unreachable: HashMap<String, Instant>,
}

/// How long a leader address that did not answer is not learned again.
pub(super) const DISTRUST_PERIOD: Duration = Duration::from_secs(10);

/// What one answer's metadata says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Hints {
    pub shard_count: Option<u32>,
    /// Endpoint URI (scheme added) of the leader of the request's shard.
    pub leader: Option<String>,
}

impl Hints {
    pub fn from_metadata(metadata: &MetadataMap) -> Hints {
        let text = |name: &str| metadata.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
        Hints {
            shard_count: text(SHARDS_HEADER).and_then(|count| count.parse().ok()),
            leader: text(LEADER_HEADER).filter(|address| !address.is_empty()).map(endpoint_uri),
        }
    }
}

impl Routing {
    /// The ring size currently used, if one was learned.
    pub fn shard_count(&self) -> Option<u32> {
        self.ring.as_ref().map(|ring| ring.shard_count())
    }

    pub fn install_ring(&mut self, ring: ShardRing) {
        if self.shard_count() != Some(ring.shard_count()) {
            // Leaders were cached per shard of the old ring: meaningless now.
            self.leaders.clear();
            self.ring = Some(Arc::new(ring));
        }
    }

    pub fn shard_for_key(&self, key: &[u8]) -> Option<u32> {
        self.ring.as_ref().map(|ring| ring.shard_for_key(key))
    }

    /// The cached leader of the shard `key` belongs to.
    pub fn leader_for_key(&self, key: &[u8]) -> Option<String> {
        self.shard_for_key(key).and_then(|shard| self.leaders.get(&shard).cloned())
    }

    pub fn learn_leader(&mut self, key: &[u8], leader: String, now: Instant) {
        let distrusted =
            self.unreachable.get(&leader).is_some_and(|since| now.duration_since(*since) < DISTRUST_PERIOD);
        if distrusted {
            return;
        }
        if let Some(shard) = self.shard_for_key(key) {
            self.leaders.insert(shard, leader);
        }
    }

    /// Drops the cached leader of `key`'s shard if it is still `endpoint`
    /// (an attempt there failed without naming another leader).
    pub fn forget_leader(&mut self, key: &[u8], endpoint: &str) {
        if let Some(shard) = self.shard_for_key(key) {
            if self.leaders.get(&shard).is_some_and(|cached| cached == endpoint) {
                self.leaders.remove(&shard);
            }
        }
    }

    /// A learned leader address did not answer: every shard forgets it,
    /// and hints naming it are ignored for a while.
    pub fn mark_unreachable(&mut self, endpoint: &str, now: Instant) {
        // Expired entries go first: the map holds at most the addresses
        // that failed within one period.
        self.unreachable.retain(|_, since| now.duration_since(*since) < DISTRUST_PERIOD);
        self.unreachable.insert(endpoint.to_owned(), now);
        self.leaders.retain(|_, cached| cached != endpoint);
    }

    /// `endpoint` answered: it is trusted again.
    pub fn mark_reachable(&mut self, endpoint: &str) {
        if !self.unreachable.is_empty() {
            self.unreachable.remove(endpoint);
        }
    }
}

/// `http://` added to a bare `host:port`; an address with a scheme is kept.
pub(crate) fn endpoint_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn hints_come_from_the_metadata() {
        let mut metadata = MetadataMap::new();
        assert_eq!(Hints::from_metadata(&metadata), Hints::default());
        metadata.insert(SHARDS_HEADER, MetadataValue::from_static("64"));
        metadata.insert(LEADER_HEADER, MetadataValue::from_static("10.0.0.2:7001"));
        let hints = Hints::from_metadata(&metadata);
        assert_eq!(hints.shard_count, Some(64));
        assert_eq!(hints.leader.as_deref(), Some("http://10.0.0.2:7001"));
        metadata.insert(SHARDS_HEADER, MetadataValue::from_static("lots"));
        metadata.insert(LEADER_HEADER, MetadataValue::from_static(""));
        assert_eq!(Hints::from_metadata(&metadata), Hints::default());
    }

    #[test]
    fn addresses_get_a_scheme_once() {
        assert_eq!(endpoint_uri("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(endpoint_uri("https://node:7001"), "https://node:7001");
    }

    #[test]
    fn leaders_are_cached_per_shard_and_dropped_with_the_ring() {
        let now = Instant::now();
        let mut routing = Routing::default();
        routing.learn_leader(b"k", "http://a".into(), now);
        assert_eq!(routing.leader_for_key(b"k"), None, "no ring yet: no shard to cache for");
        routing.install_ring(ShardRing::new(8).unwrap());
        assert_eq!(routing.shard_for_key(b"k"), Some(ShardRing::new(8).unwrap().shard_for_key(b"k")));
        routing.learn_leader(b"k", "http://a".into(), now);
        assert_eq!(routing.leader_for_key(b"k").as_deref(), Some("http://a"));
        routing.forget_leader(b"k", "http://b");
        assert_eq!(routing.leader_for_key(b"k").as_deref(), Some("http://a"), "only the failed one is dropped");
        routing.install_ring(ShardRing::new(8).unwrap());
        assert_eq!(routing.leader_for_key(b"k").as_deref(), Some("http://a"), "same ring: cache kept");
        routing.forget_leader(b"k", "http://a");
        assert_eq!(routing.leader_for_key(b"k"), None);
        routing.learn_leader(b"k", "http://a".into(), now);
        routing.install_ring(ShardRing::new(16).unwrap());
        assert_eq!(routing.shard_count(), Some(16));
        assert_eq!(routing.leader_for_key(b"k"), None, "a new ring drops the cache");
    }

    /// A leader address that never answers is dropped from every shard and
    /// not learned again from hints until the distrust period has passed,
    /// or until it answers.
    #[test]
    fn an_unreachable_leader_address_is_distrusted_for_a_while() {
        let start = Instant::now();
        let ring = ShardRing::new(8).unwrap();
        let k1 = b"a".as_slice();
        let k2 = (0..100u32).map(u32::to_be_bytes).find(|k| ring.shard_for_key(k) != ring.shard_for_key(k1)).unwrap();
        let mut routing = Routing::default();
        routing.install_ring(ring);
        routing.learn_leader(k1, "http://far".into(), start);
        routing.learn_leader(&k2, "http://far".into(), start);
        routing.mark_unreachable("http://far", start);
        assert_eq!((routing.leader_for_key(k1), routing.leader_for_key(&k2)), (None, None), "every shard forgets it");
        let later = start + DISTRUST_PERIOD / 2;
        routing.learn_leader(k1, "http://far".into(), later);
        assert_eq!(routing.leader_for_key(k1), None, "a hint naming it is ignored within the period");
        routing.learn_leader(k1, "http://near".into(), later);
        assert_eq!(routing.leader_for_key(k1).as_deref(), Some("http://near"), "other addresses are learned");
        routing.learn_leader(k1, "http://far".into(), start + DISTRUST_PERIOD);
        assert_eq!(routing.leader_for_key(k1).as_deref(), Some("http://far"), "learned again after the period");
        routing.mark_unreachable("http://far", later);
        routing.mark_reachable("http://far");
        routing.learn_leader(k1, "http://far".into(), later);
        assert_eq!(routing.leader_for_key(k1).as_deref(), Some("http://far"), "an answer restores trust");
    }
}
