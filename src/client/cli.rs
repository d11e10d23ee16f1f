//! `flotilla kv`: one request to a cluster from the command line.
//!
//! ```text
//! flotilla kv --endpoints 127.0.0.1:7001[,...] put KEY VALUE
//! flotilla kv --endpoints ... get KEY [--stale]
//! flotilla kv --endpoints ... delete KEY
//! flotilla kv --endpoints ... cas KEY [--expected V] [--new V]
//! flotilla kv --endpoints ... scan [--prefix P] [--limit N]
//! ```
//!
//! Output on stdout (values are written as raw bytes, each followed by a
//! newline):
//! - `put`: `OK` (as etcdctl does), so a script can tell success from
//!   silence;
//! - `get`: the value alone;
//! - `delete`: `deleted` when the key existed, `not found` otherwise;
//! - `cas`: `succeeded` or `failed`, then the key's value now on its own
//!   line (after a success the new value, after a failure the value that
//!   did not match); no second line when the key does not exist now;
//! - `scan`: one `key<TAB>value` line per item, in key order.
//!
//! `cas` without `--expected` requires the key to be absent; without
//! `--new` it deletes the key. `scan` without `--limit` lists at most
//! [`DEFAULT_SCAN_LIMIT`] items.
//!
//! Exit codes:
//! - 0: done;
//! - 1: the answer is "no": `get` found no such key, or `cas` did not match;
//! - 2: usage error or invalid argument (e.g. a key over the size limit;
//!   clap's own usage errors exit 2 as well);
//! - 3: the cluster was unavailable or timed out, or a write's outcome is
//!   unknown (read the key to find out);
//! - 4: any other failure (the server failed the request, or stdout could
//!   not be written).
//!
//! Errors go to stderr as `error: <what was wrong>`, e.g. `error: invalid
//! argument: key is 5000 bytes; the limit is 4096 bytes`.

use std::io::Write;
use std::process::ExitCode;

use super::{Client, ClientError, ClientOptions};

/// Items `scan` lists when `--limit` is not given.
pub const DEFAULT_SCAN_LIMIT: u32 = 1000;

#[derive(clap::Args, Debug, Clone)]
pub struct KvArgs {
    /// Node addresses (host:port), comma-separated; any node will do.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum KvCommand {
    /// Set KEY to VALUE; prints OK.
    Put { key: String, value: String },
    /// Print KEY's value; exits 1 when it does not exist.
    Get {
        key: String,
        /// Read from any replica, which may lag behind the latest writes.
        #[arg(long)]
        stale: bool,
    },
    /// Remove KEY; prints `deleted` or `not found`.
    Delete { key: String },
    /// Compare-and-swap: set KEY to --new if it holds --expected.
    Cas {
        key: String,
        /// The value KEY must hold; omitted: KEY must not exist.
        #[arg(long)]
        expected: Option<String>,
        /// The value to store; omitted: delete KEY.
        #[arg(long)]
        new: Option<String>,
    },
    /// List keys (with values) in key order.
    Scan {
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many items (default 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// Exit codes (see the module doc).
const EXIT_NO: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNAVAILABLE: u8 = 3;
const EXIT_OTHER: u8 = 4;

/// Runs one `flotilla kv` command. Every client error is reported on stderr
/// here and becomes its exit code, so this returns `Ok` with that code;
/// [`exit_code`] is there for callers that handle a `ClientError` of their
/// own the same way.
pub async fn run_kv(args: KvArgs) -> Result<ExitCode, ClientError> {
    let outcome = match Client::connect(args.endpoints, ClientOptions::default()) {
        Ok(client) => execute(&client, args.command).await,
        Err(error) => Err(error),
    };
    let code = match outcome {
        Ok(Printed { output, code }) => match write_stdout(&output) {
            Ok(()) => code,
            Err(error) => {
                eprintln!("error: cannot write the answer to stdout: {error}");
                EXIT_OTHER
            }
        },
        Err(error) => {
            eprintln!("error: {error}");
            exit_code(&error)
        }
    };
    Ok(ExitCode::from(code))
}

/// The exit code for a client error (see the module doc).
pub fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::NoEndpoints | ClientError::InvalidEndpoint { .. } | ClientError::InvalidArgument(_) => EXIT_USAGE,
        ClientError::Unavailable { .. } | ClientError::OutcomeUnknown(_) => EXIT_UNAVAILABLE,
        ClientError::Server { .. } => EXIT_OTHER,
    }
}

/// What a command prints on stdout, and its exit code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Printed {
    pub output: Vec<u8>,
    pub code: u8,
}

impl Printed {
    fn ok(output: Vec<u8>) -> Printed {
        Printed { output, code: 0 }
    }
}

pub(crate) async fn execute(client: &Client, command: KvCommand) -> Result<Printed, ClientError> {
    match command {
        KvCommand::Put { key, value } => {
            client.put(key, value).await?;
            Ok(Printed::ok(b"OK\n".to_vec()))
        }
        KvCommand::Get { key, stale } => {
            let value = if stale { client.get_stale(key.clone()).await? } else { client.get(key.clone()).await? };
            Ok(print_get(&key, value))
        }
        KvCommand::Delete { key } => {
            let existed = client.delete(key).await?;
            Ok(Printed::ok(if existed { b"deleted\n".to_vec() } else { b"not found\n".to_vec() }))
        }
        KvCommand::Cas { key, expected, new } => {
            let new = new.map(String::into_bytes);
            let result = client.compare_and_swap(key, expected.map(String::into_bytes), new.clone()).await?;
            Ok(print_cas(result.succeeded, if result.succeeded { new } else { result.current }))
        }
        KvCommand::Scan { prefix, limit } => {
            let limit = limit.unwrap_or(DEFAULT_SCAN_LIMIT) as usize;
            let items = client.scan(prefix.unwrap_or_default(), limit).await?;
            Ok(Printed::ok(print_scan(&items)))
        }
    }
}

fn print_get(key: &str, value: Option<Vec<u8>>) -> Printed {
    match value {
        Some(value) => Printed::ok(line(value)),
        None => {
            eprintln!("key {key:?} not found");
            Printed { output: Vec::new(), code: EXIT_NO }
        }
    }
}

/// `now`: the key's value after the call.
fn print_cas(succeeded: bool, now: Option<Vec<u8>>) -> Printed {
    let mut output = if succeeded { b"succeeded\n".to_vec() } else { b"failed\n".to_vec() };
    if let Some(value) = now {
        output.extend(line(value));
    }
    Printed { output, code: if succeeded { 0 } else { EXIT_NO } }
}

fn print_scan(items: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut output = Vec::new();
    for (key, value) in items {
        output.extend_from_slice(key);
        output.push(b'\t');
        output.extend_from_slice(value);
        output.push(b'\n');
    }
    output
}

fn line(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.push(b'\n');
    bytes
}

fn write_stdout(output: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        kv: KvArgs,
    }

    fn parse(args: &[&str]) -> Result<KvArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("kv").chain(args.iter().copied())).map(|cli| cli.kv)
    }

    #[test]
    fn the_command_line_parses_as_documented() {
        let args = parse(&["--endpoints", "127.0.0.1:7001,127.0.0.1:7002", "put", "k", "v"]).unwrap();
        assert_eq!(args.endpoints, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(args.command, KvCommand::Put { key: "k".into(), value: "v".into() });
        let args = parse(&["--endpoints", "a:1", "get", "k", "--stale"]).unwrap();
        assert_eq!(args.command, KvCommand::Get { key: "k".into(), stale: true });
        let args = parse(&["--endpoints", "a:1", "cas", "k", "--expected", "1", "--new", "2"]).unwrap();
        assert_eq!(args.command, KvCommand::Cas { key: "k".into(), expected: Some("1".into()), new: Some("2".into()) });
        let args = parse(&["--endpoints", "a:1", "cas", "k"]).unwrap();
        assert_eq!(args.command, KvCommand::Cas { key: "k".into(), expected: None, new: None });
        let args = parse(&["--endpoints", "a:1", "scan", "--prefix", "p", "--limit", "5"]).unwrap();
        assert_eq!(args.command, KvCommand::Scan { prefix: Some("p".into()), limit: Some(5) });
        let args = parse(&["--endpoints", "a:1", "delete", "k"]).unwrap();
        assert_eq!(args.command, KvCommand::Delete { key: "k".into() });
    }

    #[test]
    fn usage_errors_are_refused_with_clap_exit_code_2() {
        for bad in [&["get", "k"][..], &["--endpoints", "a:1", "put", "k"], &["--endpoints", "a:1", "frob"]] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn output_formats() {
        assert_eq!(print_get("k", Some(b"v".to_vec())), Printed::ok(b"v\n".to_vec()));
        assert_eq!(print_get("k", None), Printed { output: vec![], code: 1 });
        assert_eq!(print_cas(true, Some(b"new".to_vec())), Printed::ok(b"succeeded\nnew\n".to_vec()));
        assert_eq!(print_cas(true, None), Printed::ok(b"succeeded\n".to_vec()));
        assert_eq!(print_cas(false, Some(b"cur".to_vec())), Printed { output: b"failed\ncur\n".to_vec(), code: 1 });
        assert_eq!(print_cas(false, None), Printed { output: b"failed\n".to_vec(), code: 1 });
        let items = vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])];
        assert_eq!(print_scan(&items), b"a\t1\nb\t\n".to_vec());
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        assert_eq!(exit_code(&ClientError::InvalidArgument("key is empty".into())), 2);
        assert_eq!(exit_code(&ClientError::NoEndpoints), 2);
        let unavailable = ClientError::Unavailable { attempts: 3, elapsed: Duration::from_secs(30), last: "x".into() };
        assert_eq!(exit_code(&unavailable), 3);
        assert_eq!(exit_code(&ClientError::OutcomeUnknown("x".into())), 3);
        assert_eq!(exit_code(&ClientError::Server { code: tonic::Code::Internal, message: "x".into() }), 4);
    }
}
