//! `Scan`: keys are hashed to shards, so the keys under any prefix are
//! spread over every shard. A page asks every shard for up to `limit` keys
//! and the byte budget of the range at once, merges them in key order and
//! cuts the merge at `limit` items or the byte budget.
//!
//! Why that is enough, whatever cut each shard's page (its own limit, the
//! byte budget, or another node's configuration): a shard whose page was
//! cut after key K sent every key it holds up to K, but maybe not the keys
//! after. So the merge keeps only keys up to the smallest such K (the
//! `bound`); every shard sent all of its keys below it. `more` is then
//! set, and the next page starts after the last key sent.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::forward::{Forwarder, Kind};
use super::status::{CallContext, Failure};
use super::SHARD_HEADER;
use crate::multiraft::{NodeHandle, Operation, Outcome, RequestError, ShardId};
use crate::proto::kv_client::KvClient;
use crate::proto::{KeyValue, ScanRequest};

/// The key range of one page: `start <= key < end` (`end` empty: no end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ScanRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl ScanRange {
    /// The range of keys with `prefix` that sort after `start_after`, or
    /// `None` when no key can be both.
    pub fn new(prefix: &[u8], start_after: &[u8]) -> Option<ScanRange> {
        let end = prefix_successor(prefix);
        let start = if start_after.is_empty() {
            prefix.to_vec()
        } else {
            let after = key_successor(start_after);
            if after.as_slice() > prefix {
                after
            } else {
                prefix.to_vec()
            }
        };
        if !end.is_empty() && start >= end {
            return None;
        }
        Some(ScanRange { start, end })
    }
}

/// The smallest key strictly greater than `key`: `key` followed by a zero.
pub(super) fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The smallest key greater than every key starting with `prefix`: drop
/// trailing 0xff bytes and increment the last remaining one. Empty (no
/// upper bound) when there is none: an empty prefix, or one of only 0xff.
pub(super) fn prefix_successor(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// The page size for a requested `limit`: 0 means the default, and no
/// request gets more than the maximum (nor less than one item).
pub(super) fn effective_limit(requested: u32, default: u32, max: u32) -> usize {
    let limit = if requested == 0 { default } else { requested };
    limit.min(max).max(1) as usize
}

/// One shard's answer to a page request.
#[derive(Debug, Default)]
pub(super) struct ShardPage {
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The shard's page was cut: it may hold keys after the last one sent.
    pub full: bool,
}

/// A merged page.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Page {
    pub items: Vec<KeyValue>,
    pub more: bool,
}

/// Merges the shards' pages in key order and cuts at `limit` items or
/// `max_bytes` of keys and values (a page holds at least one item, so a
/// scan always makes progress, even past one huge value).
pub(super) fn merge(pages: Vec<ShardPage>, limit: usize, max_bytes: usize) -> Page {
    // The smallest last key of a cut page: beyond it a shard may hold keys
    // it did not send.
    let bound: Option<Vec<u8>> =
        pages.iter().filter(|page| page.full).filter_map(|page| page.pairs.last()).map(|(key, _)| key.clone()).min();
    // Every key lives in exactly one shard, so there are no duplicates to
    // drop; sorting the concatenation is cheap next to the reads behind it.
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = pages.into_iter().flat_map(|page| page.pairs).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut items = Vec::with_capacity(pairs.len().min(limit));
    let mut bytes = 0usize;
    let mut cut = bound.is_some();
    for (key, value) in pairs {
        if bound.as_ref().is_some_and(|bound| key > *bound) {
            break;
        }
        let size = key.len().saturating_add(value.len());
        if items.len() >= limit || (!items.is_empty() && bytes.saturating_add(size) > max_bytes) {
            cut = true;
            break;
        }
        bytes = bytes.saturating_add(size);
        items.push(KeyValue { key, value });
    }
    Page { items, more: cut }
}

/// One page request, as the client sent it and as this node reads it.
pub(super) struct Request<'a> {
    pub prefix: &'a [u8],
    pub start_after: &'a [u8],
    pub range: &'a ScanRange,
    pub limit: usize,
    /// The byte budget of a page (this node's; a node asked for one
    /// shard's page applies its own).
    pub max_bytes: usize,
}

/// The shard a forwarded scan is scoped to (`flotilla-shard`), if any:
/// `Some(Err)` for a value that is not a shard of this cluster.
pub(super) fn shard_scope(value: Option<&MetadataValue<Ascii>>, shard_count: u32) -> Option<Result<ShardId, Failure>> {
    let value = value?;
    let parsed = value.to_str().ok().and_then(|text| text.parse::<u32>().ok()).filter(|&shard| shard < shard_count);
    Some(parsed.map(ShardId).ok_or_else(|| {
        Failure::invalid(format!("{SHARD_HEADER} {value:?} is not a shard of this cluster (0..{shard_count})"))
    }))
}

/// One shard's page, read from this node's replica (linearizably: a
/// follower asks the leader for a read index).
pub(super) async fn local_page(
    node: &NodeHandle,
    shard: ShardId,
    range: &ScanRange,
    limit: usize,
    max_bytes: usize,
    call: &CallContext,
) -> Result<ShardPage, Failure> {
    if !node.hosts(shard) {
        let message = format!("node {} does not host shard {}", node.node_id(), shard.0);
        return Err(Failure::unavailable(message));
    }
    let (start, end) = (range.start.clone(), range.end.clone());
    let operation = Operation::Scan { start, end, limit, max_bytes, linearizable: true };
    let answer = tokio::time::timeout_at(call.hard_deadline.into(), node.call(shard, operation, call.deadline)).await;
    let answer = answer.map_err(|_elapsed| Failure::timed_out(false))?;
    shard_page(shard, answer, call)
}

/// Reads one page from every shard concurrently: from this node's replica
/// where it holds one, else from a node that does (a scan forwarded once,
/// scoped to that shard by `flotilla-shard`).
pub(super) async fn gather(
    node: &NodeHandle,
    forwarder: &Arc<Forwarder>,
    request: &Request<'_>,
    call: &CallContext,
) -> Result<Vec<ShardPage>, Failure> {
    let shard_count = node.shard_count();
    let mut reads = JoinSet::new();
    for shard in (0..shard_count).map(ShardId) {
        let (node, call, range, limit) = (node.clone(), call.clone(), request.range.clone(), request.limit);
        if node.hosts(shard) {
            let max_bytes = request.max_bytes;
            reads.spawn(async move { local_page(&node, shard, &range, limit, max_bytes, &call).await });
            continue;
        }
        if call.forwarded {
            let message =
                format!("node {} does not host shard {}; the scan was already forwarded once", node.node_id(), shard.0);
            return Err(Failure::unavailable(message));
        }
        let candidates: Vec<&str> = node.replicas(shard).iter().filter_map(|&n| node.address_of(n)).collect();
        let Some(address) = forwarder.pick(&candidates).map(str::to_owned) else {
            return Err(Failure::unavailable(format!("no node is known to hold shard {}", shard.0)));
        };
        let body = ScanRequest {
            prefix: request.prefix.to_vec(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            start_after: request.start_after.to_vec(),
        };
        let forwarder = forwarder.clone();
        reads.spawn(async move { remote_page(&forwarder, &address, shard, body, &call, shard_count).await });
    }
    let mut pages = Vec::with_capacity(shard_count as usize);
    loop {
        let joined = match tokio::time::timeout_at(call.hard_deadline.into(), reads.join_next()).await {
            Err(_elapsed) => return Err(Failure::timed_out(false)),
            Ok(None) => return Ok(pages),
            Ok(Some(joined)) => joined,
        };
        pages.push(joined.map_err(|error| Failure::internal(format!("a shard read task failed: {error}")))??);
    }
}

/// One shard's page from the node at `address`.
async fn remote_page(
    forwarder: &Forwarder,
    address: &str,
    shard: ShardId,
    body: ScanRequest,
    call: &CallContext,
    shard_count: u32,
) -> Result<ShardPage, Failure> {
    let scope = MetadataValue::try_from(shard.0.to_string()).map_err(|e| Failure::internal(e.to_string()))?;
    let send = |mut client: KvClient<Channel>, mut request: tonic::Request<ScanRequest>| async move {
        request.metadata_mut().insert(SHARD_HEADER, scope);
        client.scan(request).await
    };
    let response = forwarder.forward(address, body, call, Kind::Read, shard_count, send).await;
    let response =
        response.map_err(|f| Failure { message: format!("scan of shard {}: {}", shard.0, f.message), ..f })?;
    let page = response.into_inner();
    Ok(ShardPage { pairs: page.items.into_iter().map(|item| (item.key, item.value)).collect(), full: page.more })
}

fn shard_page(shard: ShardId, answer: Result<Outcome, RequestError>, call: &CallContext) -> Result<ShardPage, Failure> {
    match answer {
        Ok(Outcome::Pairs(page)) => Ok(ShardPage { pairs: page.pairs, full: page.more }),
        Ok(other) => Err(Failure::internal(format!("shard {} answered a scan with {other:?}", shard.0))),
        Err(error) => {
            let failure = Failure::from_request_error(&error, call.deadline_passed(Instant::now()));
            Err(Failure { message: format!("scan of shard {}: {}", shard.0, failure.message), ..failure })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(keys: &[&str]) -> Vec<(Vec<u8>, Vec<u8>)> {
        keys.iter().map(|k| (k.as_bytes().to_vec(), format!("v-{k}").into_bytes())).collect()
    }

    fn keys(page: &Page) -> Vec<String> {
        page.items.iter().map(|item| String::from_utf8_lossy(&item.key).into_owned()).collect()
    }

    #[test]
    fn prefix_successor_handles_trailing_ff_and_unbounded_prefixes() {
        assert_eq!(prefix_successor(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_successor(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_successor(&[1, 0xfe, 0xff, 0xff]), vec![1, 0xff]);
        assert_eq!(prefix_successor(&[0xff]), Vec::<u8>::new());
        assert_eq!(prefix_successor(&[0xff, 0xff]), Vec::<u8>::new());
        assert_eq!(prefix_successor(b""), Vec::<u8>::new());
        assert_eq!(prefix_successor(&[0]), vec![1]);
    }

    #[test]
    fn key_successor_is_the_next_key_in_byte_order() {
        assert_eq!(key_successor(b"a"), b"a\0".to_vec());
        assert_eq!(key_successor(b""), vec![0]);
        assert!(key_successor(b"a").as_slice() > b"a".as_slice());
        assert!(key_successor(b"a").as_slice() < b"a\x00\x00".as_slice());
    }

    #[test]
    fn scan_ranges_combine_prefix_and_start_after() {
        let range = |prefix: &[u8], after: &[u8]| ScanRange::new(prefix, after);
        assert_eq!(range(b"user/", b""), Some(ScanRange { start: b"user/".to_vec(), end: b"user0".to_vec() }));
        assert_eq!(range(b"", b""), Some(ScanRange { start: vec![], end: vec![] }));
        // Paging inside the prefix: strictly after the last key.
        assert_eq!(range(b"user/", b"user/7").unwrap().start, b"user/7\0".to_vec());
        // A start_after before the prefix starts at the prefix.
        assert_eq!(range(b"user/", b"a").unwrap().start, b"user/".to_vec());
        // A start_after equal to the prefix skips only the prefix itself.
        assert_eq!(range(b"user/", b"user/").unwrap().start, b"user/\0".to_vec());
        // A start_after past every key of the prefix: nothing to read.
        assert_eq!(range(b"user/", b"user0"), None);
        assert_eq!(range(b"user/", b"zzz"), None);
        // All-0xff prefixes have no end, so any later start is a range.
        let range_ff = range(&[0xff], &[0xff, 7]).unwrap();
        assert_eq!(range_ff, ScanRange { start: vec![0xff, 7, 0], end: vec![] });
        assert_eq!(range(b"", b"k").unwrap(), ScanRange { start: b"k\0".to_vec(), end: vec![] });
    }

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(effective_limit(0, 1000, 10_000), 1000);
        assert_eq!(effective_limit(5, 1000, 10_000), 5);
        assert_eq!(effective_limit(50_000, 1000, 10_000), 10_000);
        assert_eq!(effective_limit(0, 0, 10), 1);
    }

    #[test]
    fn merge_orders_across_shards_and_cuts_at_the_limit() {
        let pages = vec![
            ShardPage { pairs: pairs(&["b", "e"]), full: false },
            ShardPage { pairs: pairs(&["a", "d", "f"]), full: false },
            ShardPage { pairs: vec![], full: false },
            ShardPage { pairs: pairs(&["c"]), full: false },
        ];
        let page = merge(pages, 4, usize::MAX);
        assert_eq!(keys(&page), ["a", "b", "c", "d"]);
        assert_eq!(page.items[0].value, b"v-a".to_vec());
        assert!(page.more, "cut by the limit");
    }

    #[test]
    fn merge_without_cuts_or_full_shards_is_complete() {
        let pages =
            vec![ShardPage { pairs: pairs(&["b"]), full: false }, ShardPage { pairs: pairs(&["a"]), full: false }];
        let page = merge(pages, 10, usize::MAX);
        assert_eq!(keys(&page), ["a", "b"]);
        assert!(!page.more);
        assert_eq!(merge(vec![], 10, 100), Page { items: vec![], more: false });
    }

    #[test]
    fn a_full_shard_page_means_more_even_without_a_cut() {
        let pages = vec![ShardPage { pairs: pairs(&["a", "c"]), full: true }, ShardPage { pairs: vec![], full: false }];
        let page = merge(pages, 5, usize::MAX);
        assert_eq!(keys(&page), ["a", "c"]);
        assert!(page.more);
    }

    #[test]
    fn merge_stops_at_the_byte_budget_but_returns_at_least_one_item() {
        // Each item is 1 key byte + 4 value bytes ("v-a") = 4 bytes.
        let pages = vec![ShardPage { pairs: pairs(&["a", "b", "c"]), full: false }];
        let page = merge(pages, 10, 8);
        assert_eq!(keys(&page), ["a", "b"]);
        assert!(page.more, "cut by the budget");
        let page = merge(vec![ShardPage { pairs: pairs(&["a", "b"]), full: false }], 10, 8);
        assert_eq!(keys(&page), ["a", "b"]);
        assert!(!page.more, "exactly at the budget is not a cut");
        let huge = vec![ShardPage { pairs: vec![(b"k".to_vec(), vec![0; 100]), (b"l".to_vec(), vec![])], full: false }];
        let page = merge(huge, 10, 8);
        assert_eq!(page.items.len(), 1, "one item over budget still makes progress");
        assert!(page.more);
    }

    /// Shards cut their pages at different points (their own byte budget,
    /// or another node's limit): the merge keeps only keys up to the
    /// smallest last key of a cut page, so the next page (after the last
    /// key sent) misses nothing.
    #[test]
    fn shard_pages_cut_at_different_points_lose_no_key_across_pages() {
        let page = |keys: &[&str], full| ShardPage { pairs: pairs(keys), full };
        // Shard 1 holds a..f but was cut after "b"; shard 2 holds c, d, g.
        let first = merge(vec![page(&["a", "b"], true), page(&["c", "d", "g"], false)], 10, usize::MAX);
        assert_eq!(keys(&first), ["a", "b"], "nothing past the cut page's last key");
        assert!(first.more);
        // The next page, after "b": shard 1 now sends c..f (cut after "f").
        let second = merge(vec![page(&["c2", "e", "f"], true), page(&["c", "d", "g"], false)], 10, usize::MAX);
        assert_eq!(keys(&second), ["c", "c2", "d", "e", "f"]);
        assert!(second.more, "shard 1 may hold keys after f");
        // Two cut pages: the smaller last key bounds the merge.
        let both = merge(vec![page(&["a", "m"], true), page(&["b", "k"], true)], 10, usize::MAX);
        assert_eq!(keys(&both), ["a", "b", "k"]);
        assert!(both.more);
    }

    #[test]
    fn shard_answers_become_pages_or_named_failures() {
        let call = CallContext::new(Instant::now(), None, std::time::Duration::from_secs(10), false);
        let answer = |keys: &[&str], more| Ok(Outcome::Pairs(crate::kv::ScanPage { pairs: pairs(keys), more }));
        let page = shard_page(ShardId(1), answer(&["a", "b"], true), &call).unwrap();
        assert!(page.full);
        let page = shard_page(ShardId(1), answer(&["a"], false), &call).unwrap();
        assert!(!page.full);
        let failure = shard_page(ShardId(7), Ok(Outcome::Value(None)), &call).unwrap_err();
        assert_eq!(failure.code, tonic::Code::Internal);
        assert!(failure.message.contains("shard 7"), "{}", failure.message);
        let failure = shard_page(ShardId(5), Err(RequestError::NoLeader { shard: ShardId(5) }), &call).unwrap_err();
        assert_eq!(failure.code, tonic::Code::Unavailable);
        assert!(failure.message.starts_with("scan of shard 5: "), "{}", failure.message);
    }
}
