//! What a client call can fail with.

use std::time::Duration;

/// Why a client call failed. [`ClientError::is_retryable`] separates the
/// errors worth trying again later (the cluster was unavailable for the
/// whole call) from the fatal ones (the request itself is wrong, the
/// server failed it, or a write's fate is unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given; pass at least one node address (host:port)")]
    NoEndpoints,
    /// An endpoint (or a leader address a node sent) is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {detail}")]
    InvalidEndpoint { endpoint: String, detail: String },
    /// The request was refused as malformed, e.g. "key is 5000 bytes; the
    /// limit is 4096 bytes". Never retried: it would fail again.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Every attempt failed with a retryable error (no leader, node down,
    /// overloaded, deadline) until the call's total timeout ran out. Nothing
    /// was applied, or only writes that are idempotent by value (see
    /// [`crate::client::Client::put`]).
    #[error("unavailable: gave up after {attempts} attempts in {elapsed:.1?}; last error: {last}")]
    Unavailable { attempts: u32, elapsed: Duration, last: String },
    /// A write was sent and its fate is unknown: it may or may not have been
    /// applied, and may still be. Read the key to find out.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The server failed the request for a reason a retry will not fix
    /// (e.g. a shard's replica failed on storage, or an unexpected status).
    #[error("server error ({code:?}): {message}")]
    Server { code: tonic::Code, message: String },
}

impl ClientError {
    /// Whether the same call may succeed if made again later, with no risk:
    /// only when the cluster was unavailable throughout.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_wrong() {
        let error = ClientError::InvalidArgument("key is 5000 bytes; the limit is 4096 bytes".into());
        assert_eq!(error.to_string(), "invalid argument: key is 5000 bytes; the limit is 4096 bytes");
        let error = ClientError::Unavailable {
            attempts: 7,
            elapsed: Duration::from_millis(30_000),
            last: "shard 3 has no leader yet".into(),
        };
        let text = error.to_string();
        assert!(text.contains("7 attempts") && text.contains("30.0s") && text.contains("shard 3"), "{text}");
        assert!(error.is_retryable());
        assert!(!ClientError::OutcomeUnknown("x".into()).is_retryable());
        assert!(!ClientError::InvalidArgument("x".into()).is_retryable());
    }
}
