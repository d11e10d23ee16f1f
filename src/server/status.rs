//! The one place where the node's errors become gRPC statuses, plus the
//! pure checks every request goes through first: size limits and deadlines.

use std::time::{Duration, Instant};

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Code;

use super::{ServerConfig, FORWARDED_HEADER, LEADER_HEADER, SHARDS_HEADER};
use crate::multiraft::RequestError;

/// Why a request failed, before it is dressed as a `tonic::Status` (which
/// adds `flotilla-shards`). Kept apart from `Status` so the mapping is pure
/// and testable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Failure {
    pub code: Code,
    pub message: String,
    /// Client address of the shard's leader, sent as `flotilla-leader`.
    pub leader: Option<String>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), leader: None }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(Code::InvalidArgument, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Failure {
        Failure::new(Code::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(Code::Internal, message)
    }

    pub fn with_leader(mut self, leader: Option<String>) -> Failure {
        self.leader = leader;
        self
    }

    /// Maps a node error. `deadline_passed`: the request's deadline had
    /// passed when the answer came, which tells a write that timed out
    /// (DEADLINE_EXCEEDED) from one cut short otherwise (UNAVAILABLE);
    /// either way its message says "outcome unknown", never "failed",
    /// because the write may still be applied (Redis-Raft #23).
    pub fn from_request_error(error: &RequestError, deadline_passed: bool) -> Failure {
        match error {
            RequestError::InvalidArgument(detail) => Failure::invalid(detail.clone()),
            RequestError::NotLeader { leader, .. } => Failure::unavailable(format!("{error}; retry at the leader"))
                .with_leader(leader.as_ref().map(|(_, address)| address.clone())),
            RequestError::NoLeader { .. } => Failure::unavailable(format!("{error}; retry shortly")),
            RequestError::ShuttingDown | RequestError::Busy(_) => {
                Failure::unavailable(format!("{error}; retry here later or at another node"))
            }
            RequestError::DeadlineExceeded => Failure::new(Code::DeadlineExceeded, error.to_string()),
            RequestError::OutcomeUnknown(_) if deadline_passed => {
                Failure::new(Code::DeadlineExceeded, format!("{error} (the deadline passed)"))
            }
            RequestError::OutcomeUnknown(_) => Failure::unavailable(error.to_string()),
            RequestError::Failed { .. } => Failure::internal(error.to_string()),
        }
    }

    /// The request's own deadline fired before the node answered. A write
    /// handed to the node may have been proposed, so its fate is unknown.
    pub fn timed_out(is_write: bool) -> Failure {
        if is_write {
            Failure::new(
                Code::DeadlineExceeded,
                "outcome unknown: the deadline passed before the write was answered; it may still be applied",
            )
        } else {
            Failure::new(Code::DeadlineExceeded, "the deadline passed before the read was answered")
        }
    }

    /// The status sent to the client: code, message and metadata.
    pub fn into_status(self, shard_count: u32) -> tonic::Status {
        let metadata = response_metadata(shard_count, self.leader.as_deref());
        tonic::Status::with_metadata(self.code, self.message, metadata)
    }
}

/// `flotilla-shards` always, `flotilla-leader` when known. An address that
/// is not valid metadata is left out (logged): the hint is only a hint.
pub(super) fn response_metadata(shard_count: u32, leader: Option<&str>) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(SHARDS_HEADER, MetadataValue::from(shard_count));
    if let Some(leader) = leader {
        match leader.parse::<MetadataValue<_>>() {
            Ok(value) => {
                metadata.insert(LEADER_HEADER, value);
            }
            Err(_) => tracing::warn!(leader, "leader address is not valid gRPC metadata; hint left out"),
        }
    }
    metadata
}

/// A size-checked key: empty or too long keys are refused before anything
/// else happens, naming what was wrong and the limit.
pub(super) fn check_key(what: &str, key: &[u8], config: &ServerConfig) -> Result<(), Failure> {
    if key.is_empty() {
        return Err(Failure::invalid(format!("{what} is empty")));
    }
    check_length(what, key, config.max_key_bytes)
}

pub(super) fn check_value(what: &str, value: &[u8], config: &ServerConfig) -> Result<(), Failure> {
    check_length(what, value, config.max_value_bytes)
}

pub(super) fn check_length(what: &str, bytes: &[u8], limit: usize) -> Result<(), Failure> {
    if bytes.len() > limit {
        return Err(Failure::invalid(format!("{what} is {} bytes; the limit is {limit} bytes", bytes.len())));
    }
    Ok(())
}

/// When a request must be answered, worked out once on arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CallContext {
    /// Handed to the node: it answers by then (a write already proposed
    /// with "outcome unknown").
    pub deadline: Instant,
    /// Where this service stops waiting and answers DEADLINE_EXCEEDED
    /// itself. A little after `deadline`, so the node's precise answer
    /// usually wins, and before the caller's `grpc-timeout`, at which tonic
    /// would cut the call with a bare CANCELLED that says nothing.
    pub hard_deadline: Instant,
    /// The request was forwarded by another node: never forward it again.
    pub forwarded: bool,
}

/// Most of the caller's timeout kept back for the reply's trip home.
const REPLY_MARGIN_MAX: Duration = Duration::from_millis(100);

impl CallContext {
    pub fn from_metadata(metadata: &MetadataMap, config: &ServerConfig, now: Instant) -> CallContext {
        let timeout = metadata.get("grpc-timeout").and_then(|value| value.to_str().ok()).and_then(parse_grpc_timeout);
        let forwarded = metadata.contains_key(FORWARDED_HEADER);
        CallContext::new(now, timeout, config.default_deadline, forwarded)
    }

    pub fn new(now: Instant, timeout: Option<Duration>, default: Duration, forwarded: bool) -> CallContext {
        let Some(timeout) = timeout else {
            let deadline = add_or_far(now, default);
            return CallContext { deadline, hard_deadline: add_or_far(deadline, REPLY_MARGIN_MAX), forwarded };
        };
        // Keep back a tenth of the timeout (at most REPLY_MARGIN_MAX): the
        // node gets all but the margin, this service half of it more.
        let margin = (timeout / 10).min(REPLY_MARGIN_MAX);
        let hard_deadline = add_or_far(now, timeout - margin / 2);
        let deadline = add_or_far(now, timeout - margin);
        CallContext { deadline, hard_deadline, forwarded }
    }

    pub fn deadline_passed(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

/// `now + duration`, or a day from now when that does not fit in an
/// `Instant` (a caller can send a timeout of 99,999,999 hours).
fn add_or_far(now: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(24 * 60 * 60);
    now.checked_add(duration.min(FAR)).unwrap_or(now)
}

/// Parses a `grpc-timeout` value ("<1 to 8 digits><H|M|S|m|u|n>", gRPC over
/// HTTP/2). Anything else is `None`: the default deadline applies, as tonic
/// itself ignores a malformed header.
pub(super) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    if !value.is_char_boundary(unit_at) {
        return None;
    }
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    match unit {
        "H" => Some(Duration::from_secs(amount * 60 * 60)),
        "M" => Some(Duration::from_secs(amount * 60)),
        "S" => Some(Duration::from_secs(amount)),
        "m" => Some(Duration::from_millis(amount)),
        "u" => Some(Duration::from_micros(amount)),
        "n" => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multiraft::ShardId;
    use crate::raft::NodeId;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_junk_is_ignored() {
        assert_eq!(parse_grpc_timeout("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("30000000u"), Some(Duration::from_secs(30)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for junk in ["", "S", "10", "10s", "123456789S", "-1S", "+1S", "1.5S", "1 S", "éS", "1é", "10SS"] {
            assert_eq!(parse_grpc_timeout(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn deadlines_leave_a_margin_before_the_callers_timeout() {
        let now = Instant::now();
        let context = CallContext::new(now, Some(Duration::from_secs(2)), Duration::from_secs(10), false);
        assert_eq!(context.deadline, now + Duration::from_millis(1900));
        assert_eq!(context.hard_deadline, now + Duration::from_millis(1950));
        let short = CallContext::new(now, Some(Duration::from_millis(100)), Duration::from_secs(10), true);
        assert_eq!(short.deadline, now + Duration::from_millis(90));
        assert_eq!(short.hard_deadline, now + Duration::from_millis(95));
        assert!(short.forwarded);
        let default = CallContext::new(now, None, Duration::from_secs(10), false);
        assert_eq!(default.deadline, now + Duration::from_secs(10));
        assert!(default.hard_deadline > default.deadline);
        let zero = CallContext::new(now, Some(Duration::ZERO), Duration::from_secs(10), false);
        assert!(zero.deadline_passed(now));
        // 99,999,999 hours must neither panic nor wait forever.
        let huge = CallContext::new(now, parse_grpc_timeout("99999999H"), Duration::from_secs(10), false);
        assert!(huge.hard_deadline <= now + Duration::from_secs(24 * 3600));
    }

    #[test]
    fn deadline_and_forwarding_come_from_the_metadata() {
        let config = ServerConfig::default();
        let now = Instant::now();
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", MetadataValue::from_static("500m"));
        metadata.insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
        let context = CallContext::from_metadata(&metadata, &config, now);
        assert_eq!(context.deadline, now + Duration::from_millis(450));
        assert!(context.forwarded);
        let mut bad = MetadataMap::new();
        bad.insert("grpc-timeout", MetadataValue::from_static("soon"));
        let context = CallContext::from_metadata(&bad, &config, now);
        assert_eq!(context.deadline, now + config.default_deadline);
        assert!(!context.forwarded);
    }

    #[test]
    fn size_checks_name_the_problem_and_the_limit() {
        let config = ServerConfig::default();
        assert_eq!(check_key("key", b"", &config).unwrap_err().message, "key is empty");
        let error = check_key("key", &[7; 5000], &config).unwrap_err();
        assert_eq!(error.code, Code::InvalidArgument);
        assert_eq!(error.message, "key is 5000 bytes; the limit is 4096 bytes");
        assert!(check_key("key", &[7; 4096], &config).is_ok());
        let error = check_value("new value", &vec![0; (1 << 20) + 1], &config).unwrap_err();
        assert_eq!(error.message, "new value is 1048577 bytes; the limit is 1048576 bytes");
        assert!(check_value("value", b"", &config).is_ok());
    }

    fn mapped(error: RequestError, deadline_passed: bool) -> Failure {
        Failure::from_request_error(&error, deadline_passed)
    }

    #[test]
    fn node_errors_map_to_codes_with_reasons() {
        let hint = Some((NodeId(2), "10.0.0.2:7001".to_string()));
        let failure = mapped(RequestError::NotLeader { node: NodeId(1), shard: ShardId(3), leader: hint }, false);
        assert_eq!(failure.code, Code::Unavailable);
        assert!(failure.message.contains("does not lead shard 3"), "{}", failure.message);
        assert_eq!(failure.leader.as_deref(), Some("10.0.0.2:7001"));
        let failure = mapped(RequestError::NotLeader { node: NodeId(1), shard: ShardId(3), leader: None }, false);
        assert_eq!((failure.code, failure.leader), (Code::Unavailable, None));
        let failure = mapped(RequestError::NoLeader { shard: ShardId(4) }, false);
        assert!(failure.code == Code::Unavailable && failure.message.contains("shard 4 has no leader"));
        let failure = mapped(RequestError::ShuttingDown, false);
        assert!(failure.code == Code::Unavailable && failure.message.contains("shutting down"));
        let failure = mapped(RequestError::Busy("queue full".into()), false);
        assert!(failure.code == Code::Unavailable && failure.message.contains("queue full"));
        let failure = mapped(RequestError::DeadlineExceeded, true);
        assert!(failure.code == Code::DeadlineExceeded && !failure.message.contains("outcome unknown"));
        let failure = mapped(RequestError::InvalidArgument("key is empty".into()), false);
        assert_eq!((failure.code, failure.message.as_str()), (Code::InvalidArgument, "key is empty"));
        let failure =
            mapped(RequestError::Failed { node: NodeId(1), shard: ShardId(9), detail: "disk gone".into() }, false);
        assert!(failure.code == Code::Internal && failure.message.contains("shard 9"), "{}", failure.message);
    }

    #[test]
    fn an_unknown_outcome_is_never_reported_as_a_plain_failure() {
        let failure = mapped(RequestError::OutcomeUnknown("leader changed".into()), false);
        assert_eq!(failure.code, Code::Unavailable);
        assert!(failure.message.contains("outcome unknown") && failure.message.contains("leader changed"));
        let failure = mapped(RequestError::OutcomeUnknown("no answer".into()), true);
        assert_eq!(failure.code, Code::DeadlineExceeded);
        assert!(failure.message.contains("outcome unknown"));
        let failure = Failure::timed_out(true);
        assert!(failure.code == Code::DeadlineExceeded && failure.message.contains("outcome unknown"));
        let failure = Failure::timed_out(false);
        assert!(failure.code == Code::DeadlineExceeded && !failure.message.contains("outcome unknown"));
    }

    #[test]
    fn statuses_carry_the_ring_size_and_the_leader_hint() {
        let status = Failure::unavailable("not the leader").with_leader(Some("10.0.0.2:7001".into())).into_status(64);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "not the leader");
        assert_eq!(status.metadata().get(SHARDS_HEADER).unwrap(), "64");
        assert_eq!(status.metadata().get(LEADER_HEADER).unwrap(), "10.0.0.2:7001");
        let status = Failure::invalid("bad").with_leader(Some("bad\naddress".into())).into_status(8);
        assert_eq!(status.metadata().get(SHARDS_HEADER).unwrap(), "8");
        assert!(status.metadata().get(LEADER_HEADER).is_none());
    }
}
