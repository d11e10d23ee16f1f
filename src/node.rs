//! One `flotilla server` process, assembled: storage, the cluster record,
//! the event loop, the peer transport and the gRPC services on one port,
//! and an orderly stop.
//!
//! **Owns:** start-up order (open storage, load or create the cluster,
//! open every group, then listen) and shutdown order (stop accepting,
//! let the event loop finish its turn and answer what waits, close).
//! **Must not:** contain Raft, storage or protocol logic of its own.
//! Tests start nodes through here on `127.0.0.1:0` listeners.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::cluster::{ClusterConfig, ClusterError};
use crate::multiraft::{self, EventLoop, NodeHandle, RuntimeConfig};
use crate::raft::NodeId;
use crate::server::{self, ServerConfig};
use crate::storage::snapshot::SnapshotDir;
use crate::storage::{Engine, StorageConfig, StorageError};
use crate::transport::{Transport, TransportConfig};

/// Shards in a cluster created without `--shards`.
pub const DEFAULT_SHARDS: u32 = 64;

#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Every member with its address; `None`: a one-node cluster (or the
    /// stored cluster on a restart).
    pub initial_cluster: Option<BTreeMap<NodeId, String>>,
    /// `None`: the stored count, or `DEFAULT_SHARDS` for a new cluster.
    pub shards: Option<u32>,
    pub tick_interval: Duration,
    pub runtime: RuntimeConfig,
    pub storage: StorageConfig,
    pub server: ServerConfig,
    pub transport: TransportConfig,
    /// Client requests queued for the event loop at most.
    pub inbox_capacity: usize,
}

impl NodeOptions {
    pub fn new(id: NodeId, data_dir: PathBuf) -> NodeOptions {
        NodeOptions {
            id,
            data_dir,
            initial_cluster: None,
            shards: None,
            tick_interval: Duration::from_millis(100),
            runtime: RuntimeConfig::default(),
            storage: StorageConfig::default(),
            server: ServerConfig::default(),
            transport: TransportConfig::default(),
            inbox_capacity: 65_536,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot start the event loop: {0}")]
    Thread(std::io::Error),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Reflection(#[from] server::ReflectionError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// A started node. Dropping it without `stop` leaves the threads running
/// until the process exits.
pub struct RunningNode {
    pub handle: NodeHandle,
    /// Where the gRPC services (client and peer) listen.
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// What the gRPC health service reports (NOT_SERVING once stopping).
    health: server::Health,
    /// This node's metrics (series labelled with its id), for a `/metrics`
    /// endpoint: see `metrics_registry`.
    metrics: prometheus::Registry,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    event_loop: std::thread::JoinHandle<multiraft::Node>,
}

/// The cluster to run: the stored one, or a new one from the options.
fn cluster_config(engine: &Engine, options: &NodeOptions, listen: SocketAddr) -> Result<ClusterConfig, ClusterError> {
    if let Some(mut stored) = ClusterConfig::load(engine)? {
        let given_nodes = options.initial_cluster.clone().unwrap_or_else(|| stored.nodes.clone());
        let given = ClusterConfig { shard_count: options.shards.unwrap_or(stored.shard_count), nodes: given_nodes };
        // Same check as a first start: contradicting flags are an error.
        stored = ClusterConfig::load_or_create(engine, Some(given))?;
        return Ok(stored);
    }
    let nodes = match &options.initial_cluster {
        Some(nodes) => nodes.clone(),
        None => BTreeMap::from([(options.id, listen.to_string())]),
    };
    ClusterConfig::load_or_create(
        engine,
        Some(ClusterConfig { shard_count: options.shards.unwrap_or(DEFAULT_SHARDS), nodes }),
    )
}

/// Opens the node's storage and serves on `listener` until `stop`.
pub async fn start(options: NodeOptions, listener: TcpListener) -> Result<RunningNode, NodeError> {
    let addr = listener.local_addr().map_err(NodeError::Listener)?;
    // Built before anything starts, so an error leaves nothing running.
    let (reflection_v1, reflection_v1alpha) = (server::reflection_v1()?, server::reflection_v1alpha()?);
    let (health, health_service) = server::Health::starting().await;
    let engine = Arc::new(Engine::open(&options.data_dir.join("db"), options.id.0, &options.storage)?);
    let snapshots = Arc::new(SnapshotDir::open(&options.data_dir.join("snapshots"))?);
    let cluster = cluster_config(&engine, &options, addr)?;
    let view = cluster.view(options.id)?;
    let stats = Arc::new(multiraft::NodeStats::default());
    let metrics = crate::metrics::node_registry(options.id, stats.clone())?;
    let (handle, inbox) = multiraft::channel(view.clone(), stats.clone(), options.inbox_capacity);
    let (shutdown, shutdown_signal) = watch::channel(false);
    let (events_sender, events) = mpsc::channel(1024);
    let peers = view.addresses.iter().filter(|(id, _)| **id != options.id).map(|(id, a)| (*id, a.clone())).collect();
    let mut transport_config = options.transport.clone();
    transport_config.node_id = options.id;
    let peer_metrics = stats.metrics.peers.clone();
    let transport = Transport::with_metrics(
        transport_config,
        peers,
        snapshots.clone(),
        events_sender,
        shutdown_signal.clone(),
        peer_metrics,
    );
    let node = multiraft::Node::open(engine, snapshots, view.clone(), stats, options.runtime.clone())?;
    tracing::info!(
        node = %options.id, %addr, shards = cluster.shard_count, groups = node.group_count(),
        members = cluster.nodes.len(), "node started"
    );
    let event_loop =
        EventLoop { node, inbox, events, transport: transport.clone(), tick_interval: options.tick_interval };
    let event_loop = event_loop.spawn(shutdown_signal.clone()).map_err(NodeError::Thread)?;
    let mut stop_signal = shutdown_signal;
    let services = tonic::transport::Server::builder()
        .add_service(transport.service())
        .add_service(server::kv_service(handle.clone(), options.server.clone()))
        .add_service(server::admin_service(handle.clone(), transport.clone(), options.server.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    tokio::spawn(health.clone().follow(handle.clone()));
    // Accepted sockets need TCP_NODELAY as much as the ones we dial: the
    // answers and peer batches sent on them are small, and Nagle holding
    // one back until the peer's delayed ACK cost 40 ms now and then.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(services.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop_signal.wait_for(|stop| *stop).await;
    }));
    Ok(RunningNode { handle, addr, shutdown, health, metrics, server, event_loop })
}

impl RunningNode {
    /// The node's Prometheus registry; serve it with `metrics::run`
    /// (several nodes in one process each have their own).
    pub fn metrics_registry(&self) -> &prometheus::Registry {
        &self.metrics
    }

    /// The health service reports NOT_SERVING from now on, so probes and
    /// load balancers turn away before the node stops; `stop` begins so.
    pub async fn begin_stop(&self) {
        self.health.stopping().await;
    }

    /// Stops accepting, lets the event loop finish its turn (it answers
    /// every waiting request), and closes storage. Bounded: open peer
    /// streams get `grace` to close before the server is dropped.
    pub async fn stop(self, grace: Duration) {
        self.begin_stop().await;
        let _ = self.shutdown.send(true);
        // Ends health `Watch` streams, which would hold the server open.
        self.health.close().await;
        let mut server = self.server;
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!("gRPC server did not stop within {grace:?}; dropping its connections");
            server.abort();
        }
        let event_loop = self.event_loop;
        match tokio::task::spawn_blocking(move || event_loop.join()).await {
            Ok(Ok(node)) => drop(node),
            _ => tracing::error!("the event loop panicked"),
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, watched from creation on: create it before
/// starting anything, so a signal during start-up stops the process in
/// order instead of killing it with the default action.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// The next Ctrl-C or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    /// Exits the process at the next signal. For the orderly stop that
    /// follows the first one: an operator who signals again does not want
    /// to wait for it (a long snapshot build, a stuck disk). Safe: every
    /// acknowledged write is already on disk, exactly as after a kill -9.
    pub async fn exit_on_next(mut self) {
        self.recv().await;
        eprintln!("second signal: exiting before the orderly stop finished");
        std::process::exit(130);
    }
}
