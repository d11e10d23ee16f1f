//! `flotilla admin`: operator commands against a running cluster.
//!
//! ```text
//! flotilla admin --endpoints 127.0.0.1:7001[,...] status [--json]
//! ```
//!
//! `status` asks the endpoints in the order given, moving on to the next
//! while one is unavailable, for the cluster as the first node that answers
//! sees it: every node (id, address, whether that node reaches it now) and
//! every shard (leader, term, commit and applied index, whether it is
//! quiesced, its replicas with their roles). A leader of 0 (`-` in the
//! table) means none is known.
//!
//! Without `--json` it prints two tables (nodes, then shards) and a
//! summary line. With `--json` it prints exactly one JSON object, for
//! scripts:
//!
//! ```text
//! {"nodes": [{"id", "addr", "up"}],
//!  "shards": [{"id", "leader", "term", "commit", "applied", "quiesced",
//!              "replicas": [{"node_id", "role"}]}]}
//! ```
//!
//! with numbers as JSON numbers and `role` as `"voter"` or `"learner"`.
//!
//! Exit codes, as for `flotilla kv`: 0 done; 2 usage error or invalid
//! endpoint; 3 no endpoint answered (unavailable or timed out); 4 any other
//! failure (e.g. stdout could not be written).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tonic::transport::Endpoint;

use super::cli::exit_code;
use super::retry::{classify, Verdict};
use super::{endpoint_uri, ClientError, ClientOptions};
use crate::proto::admin_client::AdminClient;
use crate::proto::{NodeStatus, ReplicaRole, ReplicaStatus, ShardStatus, StatusRequest, StatusResponse};

/// The status of many thousand shards exceeds tonic's 4 MiB default.
const MAX_STATUS_BYTES: usize = 64 << 20;
/// How long one node may take to answer before the next one is asked.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Waited past a request's deadline for the node's own answer.
const ATTEMPT_GRACE: Duration = Duration::from_millis(200);
const EXIT_OTHER: u8 = 4;

#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// Node addresses (host:port), comma-separated; asked in this order
    /// until one answers.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Every node and every shard (leader, term, indexes, replicas), as
    /// the answering node sees them.
    Status {
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `flotilla admin` command; errors are reported on stderr and
/// become the exit code.
pub async fn run_admin(args: AdminArgs) -> ExitCode {
    let json = match args.command {
        AdminCommand::Status { json } => json,
    };
    let options = ClientOptions { request_timeout: STATUS_TIMEOUT, ..ClientOptions::default() };
    let status = match fetch_status(&args.endpoints, &options).await {
        Ok(status) => status,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(exit_code(&error));
        }
    };
    let output = if json { format!("{}\n", status_json(&status)) } else { status_table(&status) };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write the answer to stdout: {error}");
            ExitCode::from(EXIT_OTHER)
        }
    }
}

/// Asks each endpoint in turn for the cluster's status until one answers;
/// an endpoint that is down, overloaded or too slow is passed over.
pub async fn fetch_status(endpoints: &[String], options: &ClientOptions) -> Result<StatusResponse, ClientError> {
    let endpoints = parse_endpoints(endpoints, options)?;
    let started = Instant::now();
    let mut last = String::new();
    for (uri, endpoint) in &endpoints {
        let mut client = AdminClient::new(endpoint.connect_lazy()).max_decoding_message_size(MAX_STATUS_BYTES);
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(options.request_timeout);
        let wait = options.request_timeout.saturating_add(ATTEMPT_GRACE);
        match tokio::time::timeout(wait, client.status(request)).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            // A status query changes nothing: any doubt means "ask the next".
            Ok(Err(status)) => match classify(&status) {
                Verdict::Fatal(error) => return Err(error),
                Verdict::Retry(message) | Verdict::OutcomeUnknown(message) => last = format!("{uri}: {message}"),
            },
            Err(_elapsed) => last = format!("{uri} did not answer within {:.1?}", options.request_timeout),
        }
        tracing::debug!(endpoint = %uri, error = %last, "status: trying the next endpoint");
    }
    let attempts = u32::try_from(endpoints.len()).unwrap_or(u32::MAX);
    Err(ClientError::Unavailable { attempts, elapsed: started.elapsed(), last })
}

/// Every non-empty endpoint as a URI and a configured endpoint.
fn parse_endpoints(endpoints: &[String], options: &ClientOptions) -> Result<Vec<(String, Endpoint)>, ClientError> {
    let mut parsed = Vec::new();
    for endpoint in endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let uri = endpoint_uri(endpoint);
        let configured = Endpoint::from_shared(uri.clone())
            .map_err(|error| ClientError::InvalidEndpoint { endpoint: endpoint.to_owned(), detail: error.to_string() })?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true);
        parsed.push((uri, configured));
    }
    if parsed.is_empty() {
        return Err(ClientError::NoEndpoints);
    }
    Ok(parsed)
}

fn role_name(replica: &ReplicaStatus) -> &'static str {
    match ReplicaRole::try_from(replica.role) {
        Ok(ReplicaRole::Voter) => "voter",
        Ok(ReplicaRole::Learner) => "learner",
        Ok(ReplicaRole::Unspecified) | Err(_) => "unspecified",
    }
}

/// The one JSON object of `status --json` (see the module doc).
pub fn status_json(status: &StatusResponse) -> Value {
    let nodes: Vec<Value> = status.nodes.iter().map(node_json).collect();
    let shards: Vec<Value> = status.shards.iter().map(shard_json).collect();
    json!({ "nodes": nodes, "shards": shards })
}

fn node_json(node: &NodeStatus) -> Value {
    json!({ "id": node.id, "addr": node.addr, "up": node.up })
}

fn shard_json(shard: &ShardStatus) -> Value {
    let replicas: Vec<Value> =
        shard.replicas.iter().map(|r| json!({ "node_id": r.node_id, "role": role_name(r) })).collect();
    json!({
        "id": shard.id,
        "leader": shard.leader,
        "term": shard.term,
        "commit": shard.commit,
        "applied": shard.applied,
        "quiesced": shard.quiesced,
        "replicas": replicas,
    })
}

/// Nodes, then shards, then a one-line summary.
pub fn status_table(status: &StatusResponse) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let nodes: Vec<Vec<String>> =
        status.nodes.iter().map(|n| vec![n.id.to_string(), n.addr.clone(), yes_no(n.up)]).collect();
    let shards: Vec<Vec<String>> = status
        .shards
        .iter()
        .map(|s| {
            let leader = if s.leader == 0 { "-".to_owned() } else { s.leader.to_string() };
            let numbers = [s.term, s.commit, s.applied].map(|n| n.to_string());
            let mut row = vec![s.id.to_string(), leader];
            row.extend(numbers);
            row.extend([yes_no(s.quiesced), replicas_text(&s.replicas)]);
            row
        })
        .collect();
    let mut out = table(&["NODE", "ADDRESS", "UP"], &nodes);
    out.push('\n');
    out.push_str(&table(&["SHARD", "LEADER", "TERM", "COMMIT", "APPLIED", "QUIESCED", "REPLICAS"], &shards));
    let led = status.shards.iter().filter(|s| s.leader != 0).count();
    let quiesced = status.shards.iter().filter(|s| s.quiesced).count();
    let up = status.nodes.iter().filter(|n| n.up).count();
    out.push_str(&format!(
        "\n{} shards: {led} with a leader, {quiesced} quiesced; {up} of {} nodes up\n",
        status.shards.len(),
        status.nodes.len()
    ));
    out
}

/// "1,2,3", with non-voters marked: "1,2,3,4(learner)".
fn replicas_text(replicas: &[ReplicaStatus]) -> String {
    let names: Vec<String> = replicas
        .iter()
        .map(|r| match role_name(r) {
            "voter" => r.node_id.to_string(),
            role => format!("{}({role})", r.node_id),
        })
        .collect();
    names.join(",")
}

/// Left-aligned columns, two spaces apart, no trailing spaces.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sample() -> StatusResponse {
        let voter = |n| ReplicaStatus { node_id: n, role: ReplicaRole::Voter as i32 };
        let learner = ReplicaStatus { node_id: 4, role: ReplicaRole::Learner as i32 };
        StatusResponse {
            nodes: vec![
                NodeStatus { id: 1, addr: "127.0.0.1:7001".into(), up: true },
                NodeStatus { id: 2, addr: "127.0.0.1:7002".into(), up: false },
            ],
            shards: vec![
                ShardStatus {
                    id: 0,
                    leader: 1,
                    term: 2,
                    commit: 10,
                    applied: 9,
                    quiesced: true,
                    replicas: vec![voter(1), voter(2), learner],
                },
                ShardStatus { id: 1, replicas: vec![voter(2)], ..ShardStatus::default() },
            ],
        }
    }

    #[test]
    fn json_has_the_agreed_shape() {
        let text = status_json(&sample()).to_string();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["nodes"][1], json!({"id": 2, "addr": "127.0.0.1:7002", "up": false}));
        let shard = &value["shards"][0];
        assert_eq!(shard["leader"], 1);
        assert_eq!(
            (shard["term"].as_u64(), shard["commit"].as_u64(), shard["applied"].as_u64()),
            (Some(2), Some(10), Some(9))
        );
        assert_eq!(shard["quiesced"], true);
        assert_eq!(shard["replicas"][2], json!({"node_id": 4, "role": "learner"}));
        assert_eq!(shard["replicas"][0]["role"], "voter");
        assert_eq!(value["shards"][1]["leader"], 0);
        assert_eq!(value.as_object().unwrap().len(), 2, "nothing but nodes and shards");
    }

    #[test]
    fn the_table_lists_nodes_then_shards_then_a_summary() {
        let text = status_table(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NODE  ADDRESS         UP");
        assert_eq!(lines[2], "2     127.0.0.1:7002  no");
        assert_eq!(lines[4], "SHARD  LEADER  TERM  COMMIT  APPLIED  QUIESCED  REPLICAS");
        assert_eq!(lines[5], "0      1       2     10      9        yes       1,2,4(learner)");
        assert_eq!(lines[6], "1      -       0     0       0        no        2");
        assert_eq!(lines[8], "2 shards: 1 with a leader, 1 quiesced; 1 of 2 nodes up");
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    #[test]
    fn the_command_line_parses_as_documented() {
        let cli = Cli::try_parse_from(["admin", "--endpoints", "a:1,b:2", "status", "--json"]).unwrap();
        assert_eq!(cli.admin.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.admin.command, AdminCommand::Status { json: true });
        let error = Cli::try_parse_from(["admin", "status"]).unwrap_err();
        assert_eq!(error.exit_code(), 2, "--endpoints is required");
    }

    #[tokio::test]
    async fn bad_endpoints_are_usage_errors_and_dead_ones_unavailable() {
        let options = ClientOptions::default();
        let error = fetch_status(&[" ".into()], &options).await.unwrap_err();
        assert_eq!(exit_code(&error), 2);
        let error = fetch_status(&["bad host:1".into()], &options).await.unwrap_err();
        assert!(matches!(error, ClientError::InvalidEndpoint { .. }), "{error:?}");
        // Bound and closed again: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dead = format!("127.0.0.1:{port}");
        let error = fetch_status(&[dead.clone(), dead], &options).await.unwrap_err();
        assert!(matches!(error, ClientError::Unavailable { attempts: 2, .. }), "{error:?}");
        assert_eq!(exit_code(&error), 3);
    }
}
