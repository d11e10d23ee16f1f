//! `flotilla demo`: a local 3-node cluster in this one process, to try
//! Flotilla with no set-up.
//!
//! **Owns:** the demo folder (`./flotilla-demo`: `n1`..`n3` hold the nodes'
//! data, `ports.toml` their ports, so a restart listens where the stored
//! cluster record says its members are), waiting until every shard has a
//! leader, printing the endpoints, metrics URLs and example commands, and
//! stopping every node cleanly on Ctrl-C or SIGTERM.
//! **Must not:** run a node differently from `flotilla server`: each node is
//! started by `node::start` and its metrics served by `metrics::run`, so what
//! the demo shows is what a server does.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::node::{self, NodeError, NodeOptions, RunningNode, Signals};
use crate::raft::{NodeId, Role};

/// Nodes of the demo cluster.
pub const NODES: usize = 3;
/// With `--base-port P`, node i's metrics port is P + i + this.
pub const METRICS_PORT_OFFSET: u16 = 10;
/// What each node gets to close its peer streams on stop (all stop at once).
const STOP_GRACE: Duration = Duration::from_secs(5);
const PORTS_FILE: &str = "ports.toml";

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Client ports P, P+1, P+2 and metrics ports P+10, P+11, P+12. Only on
    /// the first start in a folder (it remembers its ports); default: free
    /// ports.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Shards of the new cluster, on the first start [default: 64].
    #[arg(long)]
    pub shards: Option<u32>,
    /// The demo's folder: the nodes' data (n1..n3) and their ports.
    #[arg(long, default_value = "flotilla-demo")]
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("{}: {detail}", path.display())]
    Folder { path: PathBuf, detail: String },
    #[error("cannot listen on 127.0.0.1:{port}: {error} (is another demo running in this folder?)")]
    Bind { port: u16, error: io::Error },
    #[error("node {id}: {error}")]
    Node { id: u64, error: NodeError },
    #[error("cannot watch for Ctrl-C and SIGTERM: {0}")]
    Signal(io::Error),
}

/// `ports.toml`: the ports chosen on the first start.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Ports {
    client: Vec<u16>,
    metrics: Vec<u16>,
}

/// Runs the demo until Ctrl-C or SIGTERM, then stops every node.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    // Handlers first: a Ctrl-C right after the banner must stop the nodes,
    // not kill the process with its default action.
    let mut signals = Signals::new().map_err(DemoError::Signal)?;
    let (ports, client, metrics) = bind_ports(&args).await?;
    let nodes = start_nodes(&args, &ports, client).await?;
    let (stop_metrics, metrics_stop) = watch::channel(false);
    for (node, listener) in nodes.iter().zip(metrics) {
        tokio::spawn(serve_metrics(listener, node.metrics_registry().clone(), metrics_stop.clone()));
    }
    let led = tokio::select! {
        _ = wait_for_leaders(&nodes) => true,
        _ = signals.recv() => false,
    };
    if led {
        print_banner(&args, &ports, nodes[0].handle.shard_count());
        signals.recv().await;
    }
    eprintln!("stopping the demo cluster ... (Ctrl-C again exits at once; acknowledged writes are on disk)");
    tokio::spawn(signals.exit_on_next());
    let _ = stop_metrics.send(true);
    stop_all(nodes).await;
    eprintln!("stopped; the data stays in {} (start again to reuse it, remove it to start over)", args.dir.display());
    Ok(())
}

/// Serves one node's registry exactly as `flotilla server --metrics-listen`
/// does; a failure is logged and the node keeps serving clients.
async fn serve_metrics(listener: TcpListener, registry: prometheus::Registry, stop: watch::Receiver<bool>) {
    if let Err(error) = crate::metrics::run(listener, registry, stop).await {
        tracing::error!("the metrics endpoint stopped: {error}");
    }
}

/// The stored ports, or new ones (`--base-port` or free), all bound.
async fn bind_ports(args: &DemoArgs) -> Result<(Ports, Vec<TcpListener>, Vec<TcpListener>), DemoError> {
    let dir = &args.dir;
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DemoError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let file = dir.join(PORTS_FILE);
    let stored = match std::fs::read_to_string(&file) {
        Ok(text) => Some(parse_ports(&text, &file)?),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(&file)(error)),
    };
    let wanted = args.base_port.map(ports_from_base).transpose().map_err(|detail| folder(dir, detail))?;
    let ports = match (stored, wanted) {
        (Some(stored), Some(wanted)) if stored != wanted => {
            let detail = format!(
                "this demo cluster uses client ports {:?}; drop --base-port or use another --dir",
                stored.client
            );
            return Err(folder(dir, detail));
        }
        (Some(stored), _) => stored,
        (None, _) if dir.join("n1").exists() => {
            let detail = format!("holds node data but no {PORTS_FILE}; remove the folder to start over");
            return Err(folder(dir, detail));
        }
        (None, Some(wanted)) => wanted,
        (None, None) => Ports { client: vec![0; NODES], metrics: vec![0; NODES] },
    };
    let client = bind_all(&ports.client).await?;
    let metrics = bind_all(&ports.metrics).await?;
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(io_error(dir));
    let bound = Ports {
        client: client.iter().map(port).collect::<Result<_, _>>()?,
        metrics: metrics.iter().map(port).collect::<Result<_, _>>()?,
    };
    if bound != ports || !file.exists() {
        let text = format!(
            "# Written by `flotilla demo` on its first start here. The nodes' data\n\
             # remembers their addresses, so later starts listen on these ports again.\n\
             client = {:?}\nmetrics = {:?}\n",
            bound.client, bound.metrics
        );
        std::fs::write(&file, text).map_err(io_error(&file))?;
    }
    Ok((bound, client, metrics))
}

fn folder(dir: &Path, detail: String) -> DemoError {
    DemoError::Folder { path: dir.to_path_buf(), detail }
}

fn parse_ports(text: &str, file: &Path) -> Result<Ports, DemoError> {
    let ports: Ports = toml::from_str(text).map_err(|e| folder(file, e.message().to_string()))?;
    if ports.client.len() != NODES || ports.metrics.len() != NODES {
        return Err(folder(file, format!("expected {NODES} client and {NODES} metrics ports")));
    }
    Ok(ports)
}

fn ports_from_base(base: u16) -> Result<Ports, String> {
    let last = base.checked_add(METRICS_PORT_OFFSET + NODES as u16 - 1).filter(|_| base > 0);
    if last.is_none() {
        return Err(format!(
            "--base-port {base}: needs ports {base}..{base}+{METRICS_PORT_OFFSET}+{NODES} within 1..65535"
        ));
    }
    let client: Vec<u16> = (0..NODES as u16).map(|i| base + i).collect();
    let metrics = client.iter().map(|p| p + METRICS_PORT_OFFSET).collect();
    Ok(Ports { client, metrics })
}

async fn bind_all(ports: &[u16]) -> Result<Vec<TcpListener>, DemoError> {
    let mut listeners = Vec::with_capacity(ports.len());
    for &port in ports {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|error| DemoError::Bind { port, error })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Starts the three nodes; if one fails, those already started are stopped.
async fn start_nodes(args: &DemoArgs, ports: &Ports, client: Vec<TcpListener>) -> Result<Vec<RunningNode>, DemoError> {
    let members: BTreeMap<NodeId, String> =
        ports.client.iter().enumerate().map(|(i, port)| (NodeId(i as u64 + 1), format!("127.0.0.1:{port}"))).collect();
    let mut nodes = Vec::with_capacity(NODES);
    for (i, listener) in client.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut options = NodeOptions::new(NodeId(id), args.dir.join(format!("n{id}")));
        options.initial_cluster = Some(members.clone());
        // None on a restart: the stored shard count stands.
        options.shards = args.shards;
        match node::start(options, listener).await {
            Ok(node) => nodes.push(node),
            Err(error) => {
                stop_all(nodes).await;
                return Err(DemoError::Node { id, error });
            }
        }
    }
    Ok(nodes)
}

/// Waits until every group hosted anywhere has a leader, saying every 10 s
/// how far it got (a restart may take a few election timeouts).
async fn wait_for_leaders(nodes: &[RunningNode]) {
    let mut last_report = Instant::now();
    loop {
        let (mut groups, mut led) = (BTreeSet::new(), BTreeSet::new());
        for node in nodes {
            // A full inbox only delays the answer to the next round.
            for (group, status) in node.handle.group_statuses().await.unwrap_or_default() {
                groups.insert(group);
                if status.soft_state.role == Role::Leader {
                    led.insert(group);
                }
            }
        }
        if !groups.is_empty() && led.len() == groups.len() {
            return;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!("waiting for leaders: {} of {} shards have one", led.len(), groups.len());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops every node at once: each closes its peer streams, so none waits
/// out its grace for streams from nodes still running.
async fn stop_all(nodes: Vec<RunningNode>) {
    let stops: Vec<_> = nodes.into_iter().map(|node| tokio::spawn(node.stop(STOP_GRACE))).collect();
    for stop in stops {
        let _ = stop.await;
    }
}

fn print_banner(args: &DemoArgs, ports: &Ports, shards: u32) {
    let endpoints: Vec<String> = ports.client.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let endpoints = endpoints.join(",");
    let bin = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "flotilla".into());
    println!("Flotilla demo: {NODES} nodes, {shards} shards, every shard has a leader.");
    let dir = std::fs::canonicalize(&args.dir).unwrap_or_else(|_| args.dir.clone());
    println!("Data in {} (a second start reuses it).", dir.display());
    println!();
    for (i, (client, metrics)) in ports.client.iter().zip(&ports.metrics).enumerate() {
        println!("  node {}  client 127.0.0.1:{client}  metrics http://127.0.0.1:{metrics}/metrics", i + 1);
    }
    println!();
    println!("endpoints: {endpoints}");
    println!();
    println!("Try:");
    println!("  {bin} kv --endpoints {endpoints} put greeting hello");
    println!("  {bin} kv --endpoints {endpoints} get greeting");
    println!("  {bin} kv --endpoints {endpoints} scan");
    println!("  {bin} admin --endpoints {endpoints} status");
    println!("  {bin} bench --endpoints {endpoints} --workload mixed --duration 10s");
    println!("  curl -s http://127.0.0.1:{}/metrics | grep ^flotilla_ | head", ports.metrics[0]);
    println!();
    println!("Ctrl-C stops the cluster.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_ports_and_the_ports_file() {
        let ports = ports_from_base(7001).unwrap();
        assert_eq!(ports.client, [7001, 7002, 7003]);
        assert_eq!(ports.metrics, [7011, 7012, 7013]);
        assert!(ports_from_base(65530).unwrap_err().contains("65530"));
        assert!(ports_from_base(0).is_err());
        let file = Path::new("ports.toml");
        assert_eq!(parse_ports("client = [1, 2, 3]\nmetrics = [4, 5, 6]\n", file).unwrap().metrics, [4, 5, 6]);
        assert!(parse_ports("client = [1, 2]\nmetrics = [4, 5, 6]\n", file).is_err());
        let unknown = parse_ports("client = [1, 2, 3]\nmetrics = [4, 5, 6]\nextra = 1\n", file).unwrap_err();
        assert!(unknown.to_string().contains("extra"), "{unknown}");
    }
}
