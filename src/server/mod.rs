//! The client-facing gRPC services of a node: `Kv` (proto/kv.proto),
//! `Admin` (proto/admin.proto, see `admin`), and the standard health and
//! reflection services (see `health`).
//!
//! **Owns:** decoding and validating client requests (key and value size
//! limits, with errors naming the limit), each request's deadline (the
//! caller's `grpc-timeout`, else a default; nothing here waits forever),
//! routing a key to its shard, forwarding a request to the shard's leader
//! when this node does not lead it (once: a forwarded request is never
//! forwarded again), the scatter-gather of `Scan` over every shard, and the
//! ONE mapping from the node's errors (`RequestError`) to `tonic::Status`.
//! Every response and every error carries `flotilla-shards` (the ring size,
//! so clients route like the server) and, when known, `flotilla-leader`
//! (the shard leader's client address).
//! **Must not:** touch storage or Raft state (everything goes through
//! `NodeHandle::call`), block the event loop, retry a write whose outcome is
//! unknown (that is reported as unknown, never as "not done": Redis-Raft #23),
//! or let bad input panic.

mod admin;
mod forward;
mod health;
mod kv;
mod scan;
mod status;

use std::time::Duration;

pub use admin::AdminService;
pub use health::{reflection_v1, reflection_v1alpha, Health, ReflectionError};
pub use kv::KvService;

use crate::multiraft::NodeHandle;
use crate::proto::admin_server::AdminServer;
use crate::proto::kv_server::KvServer;
use crate::transport::Transport;

/// Request metadata marking a request one node forwarded to another; a node
/// never forwards such a request again, so forwarding cannot loop.
pub const FORWARDED_HEADER: &str = "flotilla-forwarded";
/// Response (and error) metadata: the client address of the shard's leader,
/// when this node knows it.
pub const LEADER_HEADER: &str = "flotilla-leader";
/// Response (and error) metadata: the number of shards in the ring, so a
/// client can map keys to shards exactly as the nodes do.
pub const SHARDS_HEADER: &str = "flotilla-shards";
/// On a forwarded `Scan`: read only this shard here (a node asks another
/// for the shards it holds no replica of).
pub const SHARD_HEADER: &str = "flotilla-shard";

/// Limits and defaults of the client-facing services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Longest key accepted (keys are copied into every index and message).
    pub max_key_bytes: usize,
    /// Longest value accepted (values travel whole in replicated entries).
    pub max_value_bytes: usize,
    /// Deadline of a request that carries no `grpc-timeout`.
    pub default_deadline: Duration,
    /// Items per `Scan` page when the request says 0.
    pub scan_default_limit: u32,
    /// Most items per `Scan` page, whatever the request says.
    pub scan_max_limit: u32,
    /// Key and value bytes per `Scan` page; a page stops before the item
    /// that would exceed it (but always holds at least one item).
    pub scan_max_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_key_bytes: crate::kv::MAX_KEY_BYTES,
            max_value_bytes: crate::kv::MAX_VALUE_BYTES,
            default_deadline: Duration::from_secs(10),
            scan_default_limit: 1000,
            scan_max_limit: 10_000,
            scan_max_bytes: 4 << 20,
        }
    }
}

/// The `Kv` gRPC service of `node`, ready to be added to a tonic server.
pub fn kv_service(node: NodeHandle, config: ServerConfig) -> KvServer<KvService> {
    // A compare-and-swap carries a key and two values: raise tonic's 4 MiB
    // default when the limits are configured above what it admits, so a
    // request within the limits is never refused by the decoder instead.
    let largest_request = config.max_key_bytes.saturating_add(config.max_value_bytes.saturating_mul(2));
    let max_message = largest_request.saturating_add(64 << 10).max(4 << 20);
    KvServer::new(KvService::new(node, config)).max_decoding_message_size(max_message)
}

/// The `Admin` gRPC service of `node`; `transport` tells which peers are
/// reachable.
pub fn admin_service(node: NodeHandle, transport: Transport, config: ServerConfig) -> AdminServer<AdminService> {
    AdminServer::new(AdminService::new(node, transport, config))
}
