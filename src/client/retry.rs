//! Which failures may be retried, and how long to wait between attempts.

use std::error::Error;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tonic::{Code, Status};

use super::ClientError;
use crate::server::SHARDS_HEADER;

/// What a call does, which decides what an unknown outcome allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Changes nothing: always safe to repeat.
    Read,
    /// Put and delete: applying one twice leaves the same final state as
    /// applying it once (the value, or its absence, is given whole), so a
    /// write whose outcome is unknown may be sent again.
    IdempotentWrite,
    /// Compare-and-swap: a second application can see the first one's
    /// result and answer differently, so an unknown outcome is never
    /// retried silently.
    CompareAndSwap,
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing was done: try again (elsewhere, after a backoff).
    Retry(String),
    /// The request may have been applied.
    OutcomeUnknown(String),
    /// Retrying cannot help.
    Fatal(ClientError),
}

/// Classifies a failed attempt's status.
///
/// Every status a Flotilla node sends carries `flotilla-shards`; one
/// without it was made by the transport on the way, and says nothing about
/// whether the server got the request, unless the connection was never
/// made.
pub(crate) fn classify(status: &Status) -> Verdict {
    let message = status.message().to_owned();
    let unknown = message.contains("outcome unknown");
    if status.metadata().contains_key(SHARDS_HEADER) {
        return match status.code() {
            Code::InvalidArgument => Verdict::Fatal(ClientError::InvalidArgument(message)),
            Code::Unavailable | Code::DeadlineExceeded if unknown => Verdict::OutcomeUnknown(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => Verdict::Retry(message),
            code => Verdict::Fatal(ClientError::Server { code, message }),
        };
    }
    if request_never_sent(status) {
        return Verdict::Retry(format!("could not connect: {message}"));
    }
    match status.code() {
        Code::InvalidArgument => Verdict::Fatal(ClientError::InvalidArgument(message)),
        // Not a Flotilla node, or not one that speaks this API.
        code @ (Code::Unimplemented | Code::Unauthenticated | Code::PermissionDenied) => {
            Verdict::Fatal(ClientError::Server { code, message })
        }
        // Load shedding refuses before the service sees the request.
        Code::ResourceExhausted => Verdict::Retry(message),
        code => Verdict::OutcomeUnknown(format!("the request may have reached the server: {message} ({code:?})")),
    }
}

/// Whether a transport failure happened before the request left: the
/// connection to the server could not be made, so nothing was sent.
pub(crate) fn request_never_sent(status: &Status) -> bool {
    let mut cause: Option<&(dyn Error + 'static)> = status.source();
    while let Some(error) = cause {
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Exponential backoff with jitter: each wait is drawn from the upper half
/// of the current step, and the step doubles up to `max`, so clients that
/// failed together do not retry together.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { step: initial.min(max), max }
    }

    pub fn next_wait(&mut self) -> Duration {
        let half = self.step / 2;
        let wait = half + jitter(self.step - half);
        self.step = (self.step * 2).min(self.max);
        wait
    }
}

/// A random duration in `[0, max]`. std's per-instance random hasher keys
/// are enough here: this only spreads retries out, and needs no `rand`.
fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(nanos);
    Duration::from_nanos(hasher.finish() % nanos.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};

    fn from_server(code: Code, message: &str) -> Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(SHARDS_HEADER, MetadataValue::from(16u32));
        Status::with_metadata(code, message, metadata)
    }

    #[test]
    fn server_answers_are_classified_by_code_and_message() {
        assert_eq!(
            classify(&from_server(Code::InvalidArgument, "key is empty")),
            Verdict::Fatal(ClientError::InvalidArgument("key is empty".into()))
        );
        assert!(matches!(classify(&from_server(Code::Unavailable, "shard 1 has no leader yet")), Verdict::Retry(_)));
        assert!(matches!(classify(&from_server(Code::Unavailable, "node 1 does not lead")), Verdict::Retry(_)));
        assert!(matches!(classify(&from_server(Code::DeadlineExceeded, "before proposed")), Verdict::Retry(_)));
        assert!(matches!(classify(&from_server(Code::ResourceExhausted, "busy")), Verdict::Retry(_)));
        assert!(matches!(
            classify(&from_server(Code::Unavailable, "outcome unknown: leader changed")),
            Verdict::OutcomeUnknown(_)
        ));
        assert!(matches!(
            classify(&from_server(Code::DeadlineExceeded, "outcome unknown: the deadline passed")),
            Verdict::OutcomeUnknown(_)
        ));
        assert_eq!(
            classify(&from_server(Code::Internal, "shard 3 failed on node 1: disk")),
            Verdict::Fatal(ClientError::Server {
                code: Code::Internal,
                message: "shard 3 failed on node 1: disk".into()
            })
        );
    }

    #[test]
    fn transport_failures_may_have_reached_the_server() {
        // Made by the transport (no flotilla-shards): maybe sent.
        assert!(matches!(classify(&Status::unavailable("connection reset")), Verdict::OutcomeUnknown(_)));
        assert!(matches!(classify(&Status::cancelled("Timeout expired")), Verdict::OutcomeUnknown(_)));
        assert!(matches!(classify(&Status::unknown("h2 protocol error")), Verdict::OutcomeUnknown(_)));
        assert!(matches!(classify(&Status::resource_exhausted("too many requests")), Verdict::Retry(_)));
        assert!(matches!(
            classify(&Status::unimplemented("no such service")),
            Verdict::Fatal(ClientError::Server { code: Code::Unimplemented, .. })
        ));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
        let steps = [20u64, 40, 80, 100, 100];
        for step in steps {
            let wait = backoff.next_wait();
            let step = Duration::from_millis(step);
            assert!(wait >= step / 2 && wait <= step, "{wait:?} for step {step:?}");
        }
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_wait(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_refused_connection_is_known_not_to_have_sent_anything() {
        // Bind then drop a listener: nothing listens on that port now.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
        let mut client = crate::proto::kv_client::KvClient::new(channel);
        let status = client.get(crate::proto::GetRequest { key: b"k".to_vec(), stale_ok: false }).await.unwrap_err();
        assert!(request_never_sent(&status), "{status:?}");
        assert!(matches!(classify(&status), Verdict::Retry(_)), "{status:?}");
    }
}
