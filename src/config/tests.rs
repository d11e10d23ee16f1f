use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::node::NodeOptions;
use crate::raft::NodeId;

const EXAMPLE: &str = include_str!("../../deploy/flotilla.toml");

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn write_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("flotilla.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn flags_with_file(path: &Path) -> ServerFlags {
    ServerFlags { config: Some(path.to_path_buf()), ..ServerFlags::default() }
}

#[test]
fn a_file_sets_flags_and_tunables() {
    let text = r#"
        id = 2
        listen = "127.0.0.1:7102"
        data-dir = "/var/lib/flotilla"
        initial-cluster = "1=127.0.0.1:7101,2=127.0.0.1:7102"
        shards = 128
        metrics-listen = "127.0.0.1:9102"
        tick-interval-ms = 50
        election-ticks = 20
        heartbeat-ticks = 3
        tail-cache-bytes = 1_000_000
        block-cache-bytes = 268_435_456
        compress-data = false
        background-jobs = 4
        max-key-bytes = 1024
        default-deadline-ms = 2500
        reconnect-max-ms = 5000
    "#;
    let dir = tempfile::tempdir().unwrap();
    let config = load(&flags_with_file(&write_file(dir.path(), text)), &no_env).unwrap();
    assert_eq!(config.listen, "127.0.0.1:7102");
    assert_eq!(config.metrics_listen.as_deref(), Some("127.0.0.1:9102"));
    let node = &config.node;
    assert_eq!(node.id, NodeId(2));
    assert_eq!(node.data_dir, PathBuf::from("/var/lib/flotilla"));
    assert_eq!(node.initial_cluster.as_ref().unwrap()[&NodeId(1)], "127.0.0.1:7101");
    assert_eq!(node.shards, Some(128));
    assert_eq!(node.tick_interval, Duration::from_millis(50));
    assert_eq!((node.runtime.election_timeout_ticks, node.runtime.heartbeat_interval_ticks), (20, 3));
    assert_eq!(node.runtime.cache_budget_bytes, 1_000_000);
    assert_eq!(node.storage.block_cache_bytes, 256 << 20);
    assert!(!node.storage.compress_data);
    assert_eq!(node.storage.background_jobs, 4);
    assert_eq!(node.server.max_key_bytes, 1024);
    assert_eq!(node.server.default_deadline, Duration::from_millis(2500));
    assert_eq!(node.transport.reconnect_max, Duration::from_secs(5));
    // What the file leaves out keeps the code's defaults.
    let defaults = NodeOptions::new(NodeId(2), PathBuf::new());
    assert_eq!(node.inbox_capacity, defaults.inbox_capacity);
    assert_eq!(node.server.max_value_bytes, defaults.server.max_value_bytes);
    assert_eq!(node.transport.max_concurrent_snapshots, defaults.transport.max_concurrent_snapshots);
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let text = "id = 1\ndata-dir = \"/file\"\nlisten = \"127.0.0.1:1\"\ntick-interval-ms = 10\nelection-ticks = 30\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), text);
    let vars = env(&[
        ("FLOTILLA_ID", "2"),
        ("FLOTILLA_LISTEN", "127.0.0.1:2"),
        ("FLOTILLA_TICK_INTERVAL_MS", "20"),
        ("FLOTILLA_SHARDS", ""),
    ]);
    let flags = ServerFlags { id: Some(3), ..flags_with_file(&path) };
    let config = load(&flags, &vars).unwrap();
    assert_eq!(config.node.id, NodeId(3), "the flag wins over env and file");
    assert_eq!(config.listen, "127.0.0.1:2", "env wins over the file");
    assert_eq!(config.node.tick_interval, Duration::from_millis(20), "env wins over the file");
    assert_eq!(config.node.runtime.election_timeout_ticks, 30, "the file wins over the default");
    assert_eq!(config.node.data_dir, PathBuf::from("/file"));
    assert_eq!(config.node.shards, None, "an empty variable is unset");
    // Without the file, flags and environment alone are enough.
    let config = load(&ServerFlags { data_dir: Some("/flag".into()), ..ServerFlags::default() }, &vars).unwrap();
    assert_eq!((config.node.id, config.node.data_dir), (NodeId(2), PathBuf::from("/flag")));
    assert_eq!(config.metrics_listen, None);
}

#[test]
fn unknown_keys_and_bad_values_in_the_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("id = 1\ntick-intervl-ms = 5\n", "tick-intervl-ms"),
        ("id = 1\ntick-interval-ms = \"fast\"\n", "tick-interval-ms"),
        ("id = 1\nelection-ticks = -3\n", "election-ticks"),
        ("id = 1\ncompress-data = 1\n", "compress-data"),
        ("id = 1\n[raft]\nelection-ticks = 3\n", "raft"),
        ("id = = 1\n", "line 1"),
    ];
    for (text, named) in cases {
        let path = write_file(dir.path(), text);
        let error = load(&flags_with_file(&path), &no_env).unwrap_err().to_string();
        assert!(error.contains(named), "{text:?}: {error}");
        assert!(error.contains("flotilla.toml"), "names the file: {error}");
        assert!(!error.contains("expected one of"), "no list of every key: {error}");
    }
    let missing = dir.path().join("absent.toml");
    let error = load(&flags_with_file(&missing), &no_env).unwrap_err().to_string();
    assert!(error.contains("absent.toml"), "{error}");
}

#[test]
fn bad_values_are_named_with_where_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let base = "id = 1\ndata-dir = \"/d\"\n";
    let cases = [
        ("election-ticks = 2\n", "election-ticks = 2", "heartbeat-ticks"),
        ("tick-interval-ms = 0\n", "tick-interval-ms = 0", "between 1 and 60000"),
        ("tick-interval-ms = 3600000\n", "tick-interval-ms = 3600000", "between 1 and 60000"),
        ("election-ticks = 1000000\n", "election-ticks = 1000000", "between 2 and 100000"),
        ("inbox-capacity = 0\n", "inbox-capacity = 0", "between 1"),
        // Large enough to make tokio's semaphore panic at start-up.
        ("inbox-capacity = 4611686018427387904\n", "inbox-capacity = 4611686018427387904", "between 1"),
        ("peer-queue-batches = 4611686018427387904\n", "peer-queue-batches", "between 1"),
        ("max-key-bytes = 100000\n", "max-key-bytes = 100000", "4096"),
        ("shards = 0\n", "shards = 0", "between 1"),
        ("compact-keep-entries = 5000\n", "compact-keep-entries = 5000", "compact-log-entries"),
        ("initial-cluster = \"2=127.0.0.1:1\"\n", "initial-cluster", "id 1"),
        ("initial-cluster = \"1=nowhere\"\n", "initial-cluster", "HOST:PORT"),
        ("write-buffer-bytes = 1000\n", "write-buffer-bytes = 1000", "65536"),
        ("scan-max-limit = 10\n", "scan-max-limit = 10", "scan-default-limit"),
        ("reconnect-max-ms = 1\n", "reconnect-max-ms = 1", "reconnect-min-ms"),
        ("max-concurrent-snapshots = 0\n", "max-concurrent-snapshots = 0", "between 1 and 64"),
        ("max-concurrent-snapshots = 100000\n", "max-concurrent-snapshots = 100000", "between 1 and 64"),
    ];
    for (line, named, reason) in cases {
        let path = write_file(dir.path(), &format!("{base}{line}"));
        let error = load(&flags_with_file(&path), &no_env).unwrap_err().to_string();
        assert!(error.contains(named) && error.contains(reason), "{line:?}: {error}");
        assert!(error.contains("flotilla.toml"), "says where the value came from: {error}");
    }
    let flags = ServerFlags { id: Some(1), data_dir: Some("/d".into()), ..ServerFlags::default() };
    let error = load(&flags, &env(&[("FLOTILLA_HEARTBEAT_TICKS", "0")])).unwrap_err().to_string();
    assert!(error.contains("heartbeat-ticks = 0") && error.contains("FLOTILLA_HEARTBEAT_TICKS"), "{error}");
    let error = load(&flags, &env(&[("FLOTILLA_TICK_INTERVAL_MS", "soon")])).unwrap_err().to_string();
    assert!(error.contains("FLOTILLA_TICK_INTERVAL_MS") && error.contains("soon"), "{error}");
    let error = load(&flags, &env(&[("FLOTILLA_COMPRESS_DATA", "yes")])).unwrap_err().to_string();
    assert!(error.contains("FLOTILLA_COMPRESS_DATA"), "{error}");
    let error = load(&ServerFlags { id: Some(0), ..flags.clone() }, &no_env).unwrap_err().to_string();
    assert!(error.contains("id = 0") && error.contains("--id"), "{error}");
    let error = load(&ServerFlags { id: None, ..flags.clone() }, &no_env).unwrap_err().to_string();
    assert!(error.contains("--id") && error.contains("FLOTILLA_ID"), "{error}");
    let error = load(&ServerFlags { data_dir: None, ..flags }, &no_env).unwrap_err().to_string();
    assert!(error.contains("--data-dir") && error.contains("FLOTILLA_DATA_DIR"), "{error}");
}

/// deploy/flotilla.toml documents every key, and the defaults it shows
/// (the commented-out tunables) are the code's.
#[test]
fn the_example_file_documents_every_key_with_the_real_defaults() {
    for field in Settings::FIELDS {
        let key = key(field);
        let documented = EXAMPLE.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} ="))
        });
        assert!(documented, "deploy/flotilla.toml does not document `{key}`");
    }
    let flag_keys = ["id", "listen", "data-dir", "initial-cluster", "shards", "metrics-listen"];
    let uncommented: String = EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !flag_keys.iter().any(|k| rest.starts_with(&format!("{k} ="))) => {
                rest
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), &uncommented);
    let shown = load(&flags_with_file(&path), &no_env).unwrap();
    let settings = parse_file(&uncommented, &path).unwrap();
    let tunables = Settings::FIELDS.len() - flag_keys.len();
    assert_eq!(settings.tick_interval_ms, Some(100), "the tunables were uncommented");
    assert!(settings.snapshot_chunk_timeout_ms.is_some() && tunables > 20);
    let defaults = NodeOptions::new(NodeId(1), PathBuf::from("./data/n1"));
    assert_eq!(format!("{:?}", shown.node), format!("{defaults:?}"), "documented defaults differ from the code's");
    assert_eq!(shown.listen, DEFAULT_LISTEN);
}
