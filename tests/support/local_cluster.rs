//! In-process clusters for integration tests: real nodes (storage, event
//! loop, transport, gRPC) on 127.0.0.1 port 0, started, stopped and
//! restarted on the same address. Included by `#[path]` from the test
//! files that need it; every node started is stopped by `stop_all`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla::multiraft::RuntimeConfig;
use flotilla::node::{start, NodeOptions, RunningNode};
use flotilla::proto::kv_client::KvClient;
use flotilla::raft::NodeId;
use flotilla::server::ServerConfig;
use tonic::transport::Channel;

pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub addresses: BTreeMap<NodeId, String>,
    pub nodes: BTreeMap<NodeId, RunningNode>,
    pub shards: u32,
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
}

impl LocalCluster {
    /// Binds every node's port first, so each knows the whole membership.
    pub async fn start(size: u64, shards: u32, server: ServerConfig, runtime: RuntimeConfig) -> LocalCluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=size {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(NodeId(id), listener);
        }
        let addresses = listeners.iter().map(|(id, l)| (*id, l.local_addr().unwrap().to_string())).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = LocalCluster { dir, addresses, nodes: BTreeMap::new(), shards, server, runtime };
        for (id, listener) in listeners {
            cluster.start_node_on(id, listener).await;
        }
        cluster
    }

    /// 20 ms ticks keep elections quick in tests.
    pub fn options(&self, id: NodeId) -> NodeOptions {
        let mut options = NodeOptions::new(id, self.dir.path().join(format!("n{id}")));
        options.initial_cluster = Some(self.addresses.clone());
        options.shards = Some(self.shards);
        options.tick_interval = Duration::from_millis(20);
        options.server = self.server.clone();
        options.runtime = self.runtime.clone();
        options
    }

    pub async fn start_node_on(&mut self, id: NodeId, listener: tokio::net::TcpListener) {
        let node = start(self.options(id), listener).await.unwrap();
        self.nodes.insert(id, node);
    }

    pub async fn restart_node(&mut self, id: NodeId) {
        let listener = bind_again(&self.addresses[&id]).await;
        self.start_node_on(id, listener).await;
    }

    pub async fn stop_node(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.stop(Duration::from_secs(2)).await;
        }
    }

    pub async fn stop_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await;
        }
    }

    /// The generated gRPC client, talking to `id` only.
    pub fn raw(&self, id: NodeId) -> KvClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addresses[&id])).unwrap().connect_lazy();
        KvClient::new(channel)
    }
}

/// Binds the address a stopped node used, retrying while the OS lets go.
async fn bind_again(address: &str) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) if Instant::now() > deadline => panic!("cannot bind {address} again: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
