//! The operator's view of in-process clusters (real nodes on 127.0.0.1
//! port 0) through tonic's generated clients: `Admin.Status`, the standard
//! gRPC health service and server reflection. Every wait is bounded; every
//! node started is stopped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla::multiraft::{RuntimeConfig, ShardId};
use flotilla::proto::admin_client::AdminClient;
use flotilla::proto::{ReplicaRole, StatusRequest, StatusResponse};
use flotilla::raft::NodeId;
use flotilla::server::ServerConfig;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

// The shared harness; this file uses only part of it.
#[allow(dead_code)]
#[path = "support/local_cluster.rs"]
mod local_cluster;

use local_cluster::LocalCluster;

fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}")).unwrap().connect_lazy()
}

async fn status(address: &str) -> Result<StatusResponse, tonic::Status> {
    let mut client = AdminClient::new(channel(address));
    client.status(StatusRequest {}).await.map(tonic::Response::into_inner)
}

/// Asks the node at `address` until its status passes `ready` or `within`
/// passes (then the last answer is shown).
async fn status_when(address: &str, within: Duration, ready: impl Fn(&StatusResponse) -> bool) -> StatusResponse {
    let deadline = Instant::now() + within;
    loop {
        let answer = status(address).await;
        match &answer {
            Ok(status) if ready(status) => return status.clone(),
            _ if Instant::now() > deadline => panic!("{address}: status not as wanted after {within:?}: {answer:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn every_shard_led(status: &StatusResponse, shards: u32) -> bool {
    status.shards.len() == shards as usize && status.shards.iter().all(|s| s.leader != 0)
}

fn up(status: &StatusResponse) -> BTreeMap<u64, bool> {
    status.nodes.iter().map(|n| (n.id, n.up)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_node_and_shard_and_a_stopped_node_as_down() {
    let mut cluster = LocalCluster::start(3, 64, ServerConfig::default(), RuntimeConfig::default()).await;
    let everyone_up = BTreeMap::from([(1, true), (2, true), (3, true)]);
    let mut views = Vec::new();
    for (id, address) in cluster.addresses.clone() {
        let ready = |s: &StatusResponse| every_shard_led(s, 64) && up(s) == everyone_up;
        let status = status_when(&address, Duration::from_secs(30), ready).await;
        let addresses: BTreeMap<u64, String> = status.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        let expected: BTreeMap<u64, String> = cluster.addresses.iter().map(|(id, a)| (id.0, a.clone())).collect();
        assert_eq!(addresses, expected, "node {id} lists every member at its address");
        let ids: Vec<u64> = status.shards.iter().map(|s| s.id).collect();
        assert_eq!(ids, (0..64).collect::<Vec<u64>>(), "node {id}: every shard once, in order");
        for shard in &status.shards {
            assert!(shard.applied <= shard.commit, "node {id}, shard {}: applied > commit: {shard:?}", shard.id);
            assert!(shard.term >= 1 && shard.commit >= 1, "an elected leader commits an entry: {shard:?}");
            let replicas: Vec<(u64, i32)> = shard.replicas.iter().map(|r| (r.node_id, r.role)).collect();
            let voter = ReplicaRole::Voter as i32;
            assert_eq!(replicas, [(1, voter), (2, voter), (3, voter)], "shard {}", shard.id);
            assert!((1..=3).contains(&shard.leader), "shard {} is led by a member: {shard:?}", shard.id);
        }
        views.push(status);
    }
    // Election safety, seen from outside: in one term a shard has one leader.
    for shard in 0..64 {
        let mut leaders: BTreeMap<u64, u64> = BTreeMap::new();
        for view in &views {
            let s = &view.shards[shard];
            let leader = *leaders.entry(s.term).or_insert(s.leader);
            assert_eq!(leader, s.leader, "shard {shard}: two leaders in term {}", s.term);
        }
    }

    cluster.stop_node(NodeId(3)).await;
    for id in [NodeId(1), NodeId(2)] {
        let address = cluster.addresses[&id].clone();
        let wanted = BTreeMap::from([(1, true), (2, true), (3, false)]);
        let status = status_when(&address, Duration::from_secs(15), |s| up(s) == wanted).await;
        assert_eq!(status.shards.len(), 64, "every shard still has replicas on nodes 1 and 2");
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hosted_elsewhere_are_asked_of_their_replicas_or_taken_from_placement() {
    let mut cluster = LocalCluster::start(4, 8, ServerConfig::default(), RuntimeConfig::default()).await;
    let first = cluster.nodes[&NodeId(1)].handle.clone();
    let elsewhere: Vec<u64> = (0..8).filter(|&s| !first.hosts(ShardId(s))).map(u64::from).collect();
    assert!(!elsewhere.is_empty(), "with 4 nodes and 3 replicas node 1 lacks some shards");
    let address = cluster.addresses[&NodeId(1)].clone();
    // Only the replicas know the leaders of the shards node 1 lacks.
    let status = status_when(&address, Duration::from_secs(30), |s| every_shard_led(s, 8)).await;
    for shard in status.shards.iter().filter(|s| elsewhere.contains(&s.id)) {
        let replicas: Vec<u64> = shard.replicas.iter().map(|r| r.node_id).collect();
        assert_eq!(replicas.len(), 3, "{shard:?}");
        assert!(!replicas.contains(&1), "node 1 holds no replica of shard {}: {shard:?}", shard.id);
        assert!(replicas.contains(&shard.leader) && shard.term >= 1, "{shard:?}");
    }

    // With every other node gone, those shards come from placement.
    for id in [NodeId(2), NodeId(3), NodeId(4)] {
        cluster.stop_node(id).await;
    }
    let started = Instant::now();
    let status = status_when(&address, Duration::from_secs(15), |s| up(s).values().filter(|u| **u).count() == 1).await;
    assert_eq!(status.shards.len(), 8);
    for shard in status.shards.iter().filter(|s| elsewhere.contains(&s.id)) {
        assert_eq!((shard.leader, shard.term, shard.commit), (0, 0, 0), "{shard:?}");
        let replicas: Vec<u64> = shard.replicas.iter().map(|r| r.node_id).collect();
        let placed: Vec<u64> = first.replicas(ShardId(shard.id as u32)).iter().map(|n| n.0).collect();
        assert_eq!(replicas, placed, "shard {}", shard.id);
    }
    assert!(started.elapsed() < Duration::from_secs(15), "status stays prompt with replicas down");
    cluster.stop_all().await;
}

async fn health(client: &mut HealthClient<Channel>, service: &str) -> Result<ServingStatus, tonic::Status> {
    let answer = client.check(HealthCheckRequest { service: service.into() }).await?.into_inner();
    Ok(ServingStatus::try_from(answer.status).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_while_running_and_not_serving_once_shutdown_begins() {
    let mut cluster = LocalCluster::start(1, 4, ServerConfig::default(), RuntimeConfig::default()).await;
    let mut client = HealthClient::new(channel(&cluster.addresses[&NodeId(1)]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&mut client, "").await.ok() != Some(ServingStatus::Serving) {
        assert!(Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health(&mut client, "flotilla.v1.Kv").await.unwrap(), ServingStatus::Serving);
    let unknown = health(&mut client, "no.such.Service").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    // A watcher sees the change too, and must not hold up the stop.
    let mut watch = client.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let node = cluster.nodes.remove(&NodeId(1)).unwrap();
    node.begin_stop().await;
    assert_eq!(health(&mut client, "").await.unwrap(), ServingStatus::NotServing);
    assert_eq!(health(&mut client, "flotilla.v1.Kv").await.unwrap(), ServingStatus::NotServing);
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let started = Instant::now();
    node.stop(Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(4), "an open Watch held the stop for {:?}", started.elapsed());
    match health(&mut client, "").await {
        Ok(status) => assert_eq!(status, ServingStatus::NotServing),
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_services() {
    let mut cluster = LocalCluster::start(1, 4, ServerConfig::default(), RuntimeConfig::default()).await;
    let mut client = ServerReflectionClient::new(channel(&cluster.addresses[&NodeId(1)]));
    let ask = |request: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("flotilla.v1.Admin".into())),
    ];
    let mut answers = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let listed = answers.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = listed else { panic!("not a service list: {listed:?}") };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for wanted in ["flotilla.v1.Kv", "flotilla.v1.Admin", "grpc.health.v1.Health"] {
        assert!(names.contains(&wanted), "{wanted} is not listed: {names:?}");
    }
    let described = answers.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = described else { panic!("no file: {described:?}") };
    assert!(!files.file_descriptor_proto.is_empty(), "grpcurl describe needs the file defining Admin");
    cluster.stop_all().await;
}
