//! The kill -9 harness of `tests/storage_crash.rs`: a parent test
//! re-executes the test binary in child mode, reads the lines the child
//! prints once its writes are acknowledged, and SIGKILLs it (see there).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const CHILD_DIR: &str = "FLOTILLA_CRASH_CHILD_DIR";
pub const CHILD_SEED: &str = "FLOTILLA_CRASH_CHILD_SEED";
pub const CHILD_FIRST_BATCH: &str = "FLOTILLA_CRASH_FIRST_BATCH";
pub const DEFAULT_SEED: u64 = 0xF107_111A;
/// Child lines are found by this marker, not at the start of a line: with
/// `--nocapture` libtest may print "test name ... " on the same line.
pub const MARK: &str = "@@";
/// Generous: the machine may be busy compiling while a child opens RocksDB.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A child's own deadline, which only matters if its parent vanished.
pub const CHILD_LIFETIME: Duration = Duration::from_secs(120);
pub const GROUPS: usize = 50;

pub type ChildResult<T> = Result<T, Box<dyn std::error::Error>>;

pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        Err(_) => default,
    }
}

/// Names the seed when the test fails, whichever assertion fired.
pub struct SeedReport(pub &'static str, pub u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} failed with FLOTILLA_CRASH_SEED={}", self.0, self.1);
        }
    }
}

/// One line to the parent in one `write` (a pipe write under PIPE_BUF is
/// atomic, so a kill never leaves half a line), flushed at once.
pub fn emit(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{MARK}{line}\n").as_bytes())?;
    out.flush()
}

/// The body of a child-mode test: nothing in a normal run; in a child, runs
/// `body` and reports its error to the parent (exit code 3).
pub fn child_mode(body: fn(&Path) -> ChildResult<()>) {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    if let Err(error) = body(Path::new(&dir)) {
        let _ = emit(&format!("ERROR {error}"));
        std::process::exit(3);
    }
}

/// A child test process. Dropping it kills it, so a failing parent never
/// leaves a writer behind.
pub struct ChildProcess {
    child: Child,
    /// The child's lines as they arrive (read by a thread).
    pub lines: Receiver<String>,
    /// Every line taken from `lines` so far.
    pub seen: Vec<String>,
}

impl ChildProcess {
    pub fn spawn(test: &str, dir: &Path, env: &[(&str, u64)]) -> ChildProcess {
        let mut command = Process::new(std::env::current_exe().expect("test binary path"));
        command.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD_DIR, dir).stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value.to_string());
        }
        let mut child = command.spawn().expect("spawn the child test process");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(stdout.read_line(&mut line), Ok(n) if n > 0) {
                // Only whole lines count: the kill may cut the last one short.
                if let (Some(at), true) = (line.find(MARK), line.ends_with('\n')) {
                    if sender.send(line[at + MARK.len()..].trim_end().to_string()).is_err() {
                        break;
                    }
                }
                line.clear();
            }
        });
        ChildProcess { child, lines, seen: Vec::new() }
    }

    /// Whether the child printed `wanted` within `timeout`.
    pub fn wait_for(&mut self, wanted: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.seen.iter().any(|line| line == wanted) {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(_) => return false,
            }
        }
        true
    }

    /// SIGKILLs and reaps the child; returns everything it printed.
    pub fn kill(mut self) -> (ExitStatus, Vec<String>) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap the child");
        let mut lines = std::mem::take(&mut self.seen);
        // The reader stops at end of file, which the dead child guarantees.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            lines.push(line);
        }
        (status, lines)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn assert_killed(status: ExitStatus, lines: &[String], context: &str) {
    let tail = &lines[lines.len().saturating_sub(3)..];
    assert_eq!(status.signal(), Some(9), "{context}: the child ended by itself ({status}); it last printed {tail:?}");
}
