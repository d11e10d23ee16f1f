//! Standard gRPC health checking (`grpc.health.v1`) and server reflection
//! on the client port, so stock tools (grpc_health_probe, grpcurl,
//! Kubernetes gRPC probes) work against a node unchanged.
//!
//! **Owns:** the node's serving status as health reports it, for the whole
//! server ("") and `flotilla.v1.Kv`: NOT_SERVING while starting, until the
//! event loop answers a query (every hosted group was opened before the
//! loop started); SERVING while the loop runs; NOT_SERVING again from the
//! moment shutdown begins, or when the loop stops on its own (a storage
//! failure), and never SERVING after that. Also the reflection services
//! (v1 and v1alpha, which older grpcurl releases use) over our descriptor
//! set and health's.
//! **Must not:** decide when the node stops (it only reports).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use super::KvService;
use crate::multiraft::{NodeHandle, RequestError};
use crate::proto::kv_server::KvServer;

/// How long to wait before asking a busy event loop again whether it runs.
const PROBE_RETRY: Duration = Duration::from_millis(20);

/// Where the node is in its life, as health reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    /// Final: a stopping node never reports SERVING again.
    Stopping,
}

/// The node's health status, shared by the health service and whoever
/// starts and stops the node. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    /// Held across the reporter's updates, so a late "serving" cannot
    /// overwrite "stopping".
    phase: Arc<Mutex<Phase>>,
}

impl Health {
    /// A status that reports NOT_SERVING until [`Health::follow`] sees the
    /// event loop run, and the service that serves it.
    pub async fn starting() -> (Health, HealthServer<HealthService>) {
        // The reporter starts with "" SERVING: it is set before any caller
        // can ask, since the server is not built yet.
        let reporter = HealthReporter::new();
        let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = Health { reporter, phase: Arc::new(Mutex::new(Phase::Starting)) };
        health.publish(ServingStatus::NotServing).await;
        (health, service)
    }

    /// Reports SERVING once `node`'s event loop answers, and NOT_SERVING
    /// once it stops taking requests. Runs until then.
    pub async fn follow(self, node: NodeHandle) {
        loop {
            match node.group_statuses().await {
                Ok(_) => break,
                Err(RequestError::Busy(_)) => tokio::time::sleep(PROBE_RETRY).await,
                // It stopped before it ever ran: NOT_SERVING stays.
                Err(_) => return,
            }
        }
        self.enter(Phase::Serving).await;
        node.closed().await;
        self.enter(Phase::Stopping).await;
    }

    /// Shutdown begins: NOT_SERVING from now on.
    pub async fn stopping(&self) {
        self.enter(Phase::Stopping).await;
    }

    /// Forgets every status, which ends open `Watch` streams: the server's
    /// graceful shutdown would otherwise wait for them until its grace ran
    /// out. Call once the server stops taking new calls.
    pub async fn close(&self) {
        let mut reporter = self.reporter.clone();
        for name in reported_services() {
            reporter.clear_service_status(name).await;
        }
    }

    async fn enter(&self, next: Phase) {
        let mut phase = self.phase.lock().await;
        if *phase == Phase::Stopping || *phase == next {
            return;
        }
        *phase = next;
        let status = if next == Phase::Serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.publish(status).await;
    }

    async fn publish(&self, status: ServingStatus) {
        for name in reported_services() {
            self.reporter.set_service_status(name, status).await;
        }
        tracing::debug!(%status, "health status");
    }
}

/// The whole server ("", as the health protocol names it) and the client
/// API. The peer service is left out: it is not for clients.
fn reported_services() -> [&'static str; 2] {
    ["", <KvServer<KvService> as NamedService>::NAME]
}

/// A descriptor set that does not decode: a build defect, reported at
/// start-up rather than as a panic.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the reflection service: {0}")]
pub struct ReflectionError(String);

/// Server reflection, grpc.reflection.v1 (current grpcurl).
pub fn reflection_v1() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    ReflectionError,
> {
    reflection_builder().build_v1().map_err(|error| ReflectionError(error.to_string()))
}

/// Server reflection, grpc.reflection.v1alpha (older clients).
pub fn reflection_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
    ReflectionError,
> {
    reflection_builder().build_v1alpha().map_err(|error| ReflectionError(error.to_string()))
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health as _;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::multiraft::{self, Input, NodeStats};
    use crate::raft::NodeId;

    async fn check(service: &HealthService, name: &str) -> Wire {
        let request = tonic::Request::new(HealthCheckRequest { service: name.into() });
        let answer = service.check(request).await.unwrap().into_inner();
        Wire::try_from(answer.status).unwrap()
    }

    async fn all(service: &HealthService) -> [Wire; 2] {
        [check(service, "").await, check(service, "flotilla.v1.Kv").await]
    }

    /// A node handle whose inbox the test reads in the event loop's place.
    fn handle() -> (NodeHandle, tokio::sync::mpsc::Receiver<Input>) {
        let config = ClusterConfig { shard_count: 4, nodes: BTreeMap::from([(NodeId(1), "127.0.0.1:1".into())]) };
        multiraft::channel(config.view(NodeId(1)).unwrap(), Arc::new(NodeStats::default()), 8)
    }

    #[tokio::test]
    async fn not_serving_until_the_loop_answers_and_again_once_it_stops() {
        let (health, _server) = Health::starting().await;
        let service = HealthService::from_health_reporter(health.reporter.clone());
        assert_eq!(all(&service).await, [Wire::NotServing; 2]);
        let (node, mut inbox) = handle();
        let follower = tokio::spawn(health.clone().follow(node));
        let Some(Input::Status(reply)) = inbox.recv().await else { panic!("no status query reached the loop") };
        assert_eq!(all(&service).await, [Wire::NotServing; 2], "asked, not yet answered");
        reply.send(Vec::new()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while all(&service).await != [Wire::Serving; 2] {
            assert!(tokio::time::Instant::now() < deadline, "never SERVING after the loop answered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The loop closes its inbox when it stops, for whatever reason.
        inbox.close();
        tokio::time::timeout(Duration::from_secs(5), follower).await.unwrap().unwrap();
        assert_eq!(all(&service).await, [Wire::NotServing; 2]);
    }

    #[tokio::test]
    async fn a_stopping_node_never_reports_serving_again() {
        let (health, _server) = Health::starting().await;
        let service = HealthService::from_health_reporter(health.reporter.clone());
        health.stopping().await;
        let (node, mut inbox) = handle();
        let follower = tokio::spawn(health.clone().follow(node));
        let Some(Input::Status(reply)) = inbox.recv().await else { panic!("no status query reached the loop") };
        reply.send(Vec::new()).unwrap();
        inbox.close();
        tokio::time::timeout(Duration::from_secs(5), follower).await.unwrap().unwrap();
        assert_eq!(all(&service).await, [Wire::NotServing; 2]);
        health.close().await;
        let request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        assert_eq!(service.check(request).await.unwrap_err().code(), tonic::Code::NotFound);
    }
}
