//! Through the real binary: `flotilla server --config FILE`. A bad file or
//! variable stops the process at start-up with a nonzero exit and the key
//! named on stderr; a good file starts a node that serves put and get, with
//! a flag overriding the file. Every process started is killed by its
//! guard, even when the test fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{free_port, KillOnDrop as Server};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// `flotilla server` with only the given FLOTILLA_* variables set.
fn server(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Server {
    let mut command = Command::new(BIN);
    command.arg("server").args(args).stdout(Stdio::null()).stderr(stderr);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FLOTILLA_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    Server(command.spawn().unwrap())
}

/// Waits for the process to exit, for at most `within`.
fn exit_within(server: &mut Server, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            return exit;
        }
        assert!(Instant::now() < deadline, "flotilla server still runs after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a server that must refuse to start; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut server = server(args, env, Stdio::piped());
    let exit = exit_within(&mut server, Duration::from_secs(20));
    let mut stderr = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!exit.success(), "a bad setting must fail the start: {stderr}");
    stderr
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn kv(endpoint: &str, args: &[&str]) -> Output {
    Command::new(BIN).args(["kv", "--endpoints", endpoint]).args(args).output().unwrap()
}

#[test]
fn bad_settings_stop_the_start_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = format!("id = 1\ndata-dir = {:?}\nlisten = \"127.0.0.1:{}\"\n", data.to_str().unwrap(), free_port());
    let unknown = write(dir.path(), "unknown.toml", &format!("{base}heartbeat-tick = 3\n"));
    let stderr = refused(&["--config", &unknown], &[]);
    assert!(stderr.contains("heartbeat-tick") && stderr.contains("unknown"), "{stderr}");
    let bad_type = write(dir.path(), "type.toml", &format!("{base}tick-interval-ms = \"fast\"\n"));
    let stderr = refused(&["--config", &bad_type], &[]);
    assert!(stderr.contains("tick-interval-ms") && stderr.contains("fast"), "{stderr}");
    let bad_value = write(dir.path(), "value.toml", &format!("{base}max-value-bytes = 0\n"));
    let stderr = refused(&["--config", &bad_value], &[]);
    assert!(stderr.contains("max-value-bytes = 0"), "{stderr}");
    let good = write(dir.path(), "good.toml", &base);
    let stderr = refused(&["--config", &good], &[("FLOTILLA_ELECTION_TICKS", "1")]);
    assert!(stderr.contains("election-ticks = 1") && stderr.contains("FLOTILLA_ELECTION_TICKS"), "{stderr}");
    let stderr = refused(&[], &[("FLOTILLA_CONFIG", &unknown)]);
    assert!(stderr.contains("heartbeat-tick"), "FLOTILLA_CONFIG names the file too: {stderr}");
    assert!(!data.exists(), "nothing was created before the settings were checked");
}

#[test]
fn a_config_file_starts_a_node_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, flag_port, metrics_port) = (free_port(), free_port(), free_port());
    let text = format!(
        "id = 1\nlisten = \"127.0.0.1:{file_port}\"\ndata-dir = {:?}\nshards = 4\n\
         metrics-listen = \"127.0.0.1:{metrics_port}\"\ntick-interval-ms = 50\nelection-ticks = 6\n",
        dir.path().join("n1").to_str().unwrap()
    );
    let config = write(dir.path(), "flotilla.toml", &text);
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let flag_listen = format!("127.0.0.1:{flag_port}");
    let mut node = server(&["--config", &config, "--listen", &flag_listen], &[], Stdio::from(log));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kv(&flag_listen, &["put", "configured", "yes"]).status.success() {
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        assert!(node.0.try_wait().unwrap().is_none(), "the node exited: {log}");
        assert!(Instant::now() < deadline, "no put within 60 s at the --listen address: {log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = kv(&flag_listen, &["get", "configured"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim_end(), "yes");
    assert!(TcpStream::connect(("127.0.0.1", file_port)).is_err(), "the flag overrides the file's listen");
    let mut metrics = TcpStream::connect(("127.0.0.1", metrics_port)).expect("metrics-listen from the file");
    metrics.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    metrics.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = metrics.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.200}");

    let pid = node.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(exit_within(&mut node, Duration::from_secs(15)).success(), "SIGTERM stops the node with exit 0");
}
