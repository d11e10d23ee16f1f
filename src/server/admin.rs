//! The `Admin` service (proto/admin.proto): the cluster as the answering
//! node sees it.
//!
//! **Owns:** turning the event loop's group statuses into `ShardStatus`es
//! (leader, term, commit, applied, quiesced, replicas with their roles in
//! the group's membership), each node's reachability as this node's
//! transport sees it, and asking other nodes for the shards this node holds
//! no replica of. Asking happens once: a forwarded `Status` answers with
//! its own shards only. A shard no replica answered for is reported from
//! placement, with no leader (0) and zero indexes.
//! **Must not:** block the event loop (it answers a status query between
//! two turns, from memory) or wait past the caller's deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::forward::Forwarder;
use super::status::{response_metadata, CallContext, Failure};
use super::{ServerConfig, FORWARDED_HEADER};
use crate::multiraft::{group_of, NodeHandle, ShardId};
use crate::proto::admin_client::AdminClient;
use crate::proto::admin_server::Admin;
use crate::proto::{NodeStatus, ReplicaRole, ReplicaStatus, ShardStatus, StatusRequest, StatusResponse};
use crate::raft::{ConfState, GroupId, NodeId};
use crate::transport::Transport;

/// The longest one node is asked for its shards, so that a replica that
/// does not answer leaves time to ask the next one.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// A status of many thousand shards exceeds tonic's 4 MiB default.
const MAX_STATUS_BYTES: usize = 64 << 20;

pub struct AdminService {
    node: NodeHandle,
    /// Whose peer streams say which nodes are reachable.
    transport: Transport,
    config: ServerConfig,
    /// Channels to the other nodes, for the shards this node does not host.
    forwarder: Forwarder,
}

impl AdminService {
    pub fn new(node: NodeHandle, transport: Transport, config: ServerConfig) -> AdminService {
        AdminService { node, transport, config, forwarder: Forwarder::default() }
    }

    fn status(&self, failure: Failure) -> Status {
        failure.into_status(self.node.shard_count())
    }

    /// The shards this node hosts, as its event loop sees them now.
    async fn local_shards(&self, call: &CallContext) -> Result<BTreeMap<u32, ShardStatus>, Failure> {
        let answer = tokio::time::timeout_at(call.hard_deadline.into(), self.node.group_statuses()).await;
        let statuses = match answer {
            Err(_elapsed) => {
                return Err(Failure::new(Code::DeadlineExceeded, "the node did not report its groups in time"))
            }
            Ok(Err(error)) => return Err(Failure::from_request_error(&error, call.deadline_passed(Instant::now()))),
            Ok(Ok(statuses)) => statuses,
        };
        let count = self.node.shard_count();
        Ok(statuses
            .iter()
            .filter_map(|(group, status)| {
                let shard = shard_of(*group, count)?;
                Some((shard, shard_status(shard, status)))
            })
            .collect())
    }

    /// Every member, and whether this node reaches it now (itself: yes).
    fn nodes(&self) -> Vec<NodeStatus> {
        let me = self.node.node_id();
        self.node
            .members()
            .iter()
            .map(|(&id, addr)| NodeStatus {
                id: id.0,
                addr: addr.clone(),
                up: id == me || self.transport.is_peer_up(id),
            })
            .collect()
    }

    /// The replicas of `shard` on other nodes, reachable ones first.
    fn candidates(&self, shard: u32) -> Vec<NodeId> {
        let me = self.node.node_id();
        let mut nodes: Vec<NodeId> = self.node.replicas(ShardId(shard)).iter().copied().filter(|&n| n != me).collect();
        // Stable: the placement order breaks ties, so a shard's replicas
        // are asked in the same order every time.
        nodes.sort_by_key(|&n| !self.transport.is_peer_up(n));
        nodes
    }

    /// Asks other nodes for the `missing` shards, in rounds: each round
    /// asks every shard's next replica, one request per node, all nodes at
    /// once. Shards no replica answered for stay missing.
    async fn ask_replicas(
        &self,
        shards: &mut BTreeMap<u32, ShardStatus>,
        mut missing: BTreeSet<u32>,
        call: &CallContext,
    ) {
        // Ordered once: a peer going up or down between rounds must not
        // reorder a shard's replicas (asking one twice, skipping another).
        let order: BTreeMap<u32, Vec<NodeId>> = missing.iter().map(|&s| (s, self.candidates(s))).collect();
        let rounds = order.values().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            let mut asked: BTreeSet<NodeId> = BTreeSet::new();
            for shard in &missing {
                asked.extend(order.get(shard).and_then(|nodes| nodes.get(round)));
            }
            let mut asks = JoinSet::new();
            for node in asked {
                let remaining = call.hard_deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return;
                }
                let Some(address) = self.node.address_of(node) else { continue };
                match self.forwarder.channel(address) {
                    Ok(channel) => {
                        asks.spawn(ask(node, channel, remaining.min(ASK_TIMEOUT)));
                    }
                    Err(failure) => tracing::debug!(%node, address, "cannot ask for shard status: {}", failure.message),
                }
            }
            while let Some(joined) = asks.join_next().await {
                match joined {
                    Ok((_, Ok(response))) => {
                        for shard in response.shards {
                            if let Ok(id) = u32::try_from(shard.id) {
                                if missing.contains(&id) {
                                    shards.insert(id, shard);
                                }
                            }
                        }
                    }
                    Ok((node, Err(status))) => tracing::debug!(%node, "no shard status from the node: {status}"),
                    Err(error) => tracing::warn!("a shard status query panicked: {error}"),
                }
            }
            missing.retain(|shard| !shards.contains_key(shard));
            if missing.is_empty() {
                return;
            }
        }
    }

    /// A shard no replica answered for: its replicas from placement, which
    /// made every one a voter, and no leader.
    fn placed(&self, shard: u32) -> ShardStatus {
        let replicas = self.node.replicas(ShardId(shard)).iter().map(|n| replica(*n, ReplicaRole::Voter)).collect();
        ShardStatus { id: u64::from(shard), replicas, ..ShardStatus::default() }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let call = CallContext::from_metadata(request.metadata(), &self.config, Instant::now());
        let mut shards = self.local_shards(&call).await.map_err(|f| self.status(f))?;
        // A forwarded query wants this node's own shards only: asking on
        // from there could go round in circles.
        if !call.forwarded {
            let count = self.node.shard_count();
            let missing: BTreeSet<u32> = (0..count).filter(|s| !shards.contains_key(s)).collect();
            if !missing.is_empty() {
                self.ask_replicas(&mut shards, missing, &call).await;
            }
            for shard in 0..count {
                shards.entry(shard).or_insert_with(|| self.placed(shard));
            }
        }
        let body = StatusResponse { nodes: self.nodes(), shards: shards.into_values().collect() };
        let mut response = Response::new(body);
        *response.metadata_mut() = response_metadata(self.node.shard_count(), None);
        Ok(response)
    }
}

/// Asks `node` for the shards it hosts (a forwarded `Status`).
async fn ask(node: NodeId, channel: Channel, timeout: Duration) -> (NodeId, Result<StatusResponse, Status>) {
    let mut request = Request::new(StatusRequest {});
    request.set_timeout(timeout);
    request.metadata_mut().insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    let mut client = AdminClient::new(channel).max_decoding_message_size(MAX_STATUS_BYTES);
    let answer = match tokio::time::timeout(timeout, client.status(request)).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_elapsed) => Err(Status::deadline_exceeded(format!("node {node} did not answer within {timeout:?}"))),
    };
    (node, answer)
}

/// The shard of `group` (shard `s` is group `s + 1`); `None` for a group
/// that is no shard of a `count`-shard ring.
fn shard_of(group: GroupId, count: u32) -> Option<u32> {
    let shard = u32::try_from(group.0.checked_sub(1)?).ok()?;
    (shard < count && group_of(ShardId(shard)) == group).then_some(shard)
}

/// One shard as the core's status of its group on this node describes it.
fn shard_status(shard: u32, status: &crate::raft::Status) -> ShardStatus {
    ShardStatus {
        id: u64::from(shard),
        leader: status.soft_state.leader.map_or(0, |leader| leader.0),
        term: status.hard_state.term.0,
        commit: status.hard_state.commit.0,
        applied: status.applied.0,
        quiesced: status.quiesced,
        replicas: replicas(&status.conf_state),
    }
}

/// Every member of the group's membership, by node id. While a change is
/// joint, a member that votes in either configuration is a voter (a voter
/// being demoted is still one until the joint configuration is left).
fn replicas(conf: &ConfState) -> Vec<ReplicaStatus> {
    let voters: BTreeSet<NodeId> = conf.voters.union(&conf.voters_outgoing).copied().collect();
    let learners = conf.learners.iter().filter(|n| !voters.contains(n));
    let mut replicas: Vec<ReplicaStatus> = voters
        .iter()
        .map(|&n| replica(n, ReplicaRole::Voter))
        .chain(learners.map(|&n| replica(n, ReplicaRole::Learner)))
        .collect();
    replicas.sort_by_key(|r| r.node_id);
    replicas
}

fn replica(node: NodeId, role: ReplicaRole) -> ReplicaStatus {
    ReplicaStatus { node_id: node.0, role: role as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_shards_and_others_are_left_out() {
        assert_eq!(shard_of(GroupId(1), 64), Some(0));
        assert_eq!(shard_of(GroupId(64), 64), Some(63));
        assert_eq!(shard_of(GroupId(65), 64), None);
        assert_eq!(shard_of(GroupId(0), 64), None, "group 0 is the meta group, not a shard");
        assert_eq!(shard_of(GroupId(u64::MAX), 64), None);
    }

    #[test]
    fn roles_come_from_the_membership() {
        let mut conf = ConfState::with_voters([3, 1]);
        conf.learners.insert(NodeId(4));
        let roles: Vec<(u64, i32)> = replicas(&conf).iter().map(|r| (r.node_id, r.role)).collect();
        let (voter, learner) = (ReplicaRole::Voter as i32, ReplicaRole::Learner as i32);
        assert_eq!(roles, [(1, voter), (3, voter), (4, learner)]);
        // Joint: node 2 leaves (outgoing voter), node 3 is being demoted.
        let mut joint = ConfState::with_voters([1, 4]);
        joint.voters_outgoing = [1, 2, 3].into_iter().map(NodeId).collect();
        joint.learners_next.insert(NodeId(3));
        let roles: Vec<(u64, i32)> = replicas(&joint).iter().map(|r| (r.node_id, r.role)).collect();
        assert_eq!(roles, [(1, voter), (2, voter), (3, voter), (4, voter)]);
    }
}
