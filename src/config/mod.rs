//! The settings of one `flotilla server` process, from four layers, the
//! highest winning: command-line flags, `FLOTILLA_*` environment variables,
//! the `--config` TOML file, built-in defaults.
//!
//! **Owns:** the names of the settings (declared once in [`Settings`], so a
//! file key, its environment variable and its documentation cannot drift
//! apart: `election-ticks` is `FLOTILLA_ELECTION_TICKS`), their layering,
//! and checking every value before anything starts, with an error that
//! names the setting and where its value came from. `deploy/flotilla.toml`
//! documents every key with its default (a test keeps the two in step).
//! **Must not:** start or bind anything: it produces the `NodeOptions` and
//! addresses that `main.rs` starts a node with.

mod resolve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use resolve::{Config, DEFAULT_LISTEN};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// Unknown key, bad TOML, or a value of the wrong type.
    #[error("config file {}: {detail}", path.display())]
    File { path: PathBuf, detail: String },
    #[error("environment variable {var}={value:?}: {reason}")]
    Env { var: String, value: String, reason: String },
    #[error("invalid setting {key} = {value} ({origin}): {reason}")]
    Invalid { key: String, value: String, origin: String, reason: String },
    #[error("{key} is not set: give --{key}, {env} or `{key} = ...` in the config file")]
    Missing { key: String, env: String },
}

/// Declares every setting once: the struct the file deserializes into,
/// the list of keys, the environment lookup and the layering all come
/// from this one list.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $field:ident: $ty:ty, )*) => {
        /// Every setting, `None` where a layer leaves it to the layers
        /// below. File keys are the field names in kebab-case.
        #[derive(Clone, Debug, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $field: Option<$ty>, )*
        }

        impl Settings {
            /// Every setting's field name, in declaration order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The settings given as `FLOTILLA_*` variables; `lookup` reads
            /// one variable (the process environment, or a map in tests).
            pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
                Ok(Settings { $( $field: env_value(stringify!($field), lookup)?, )* })
            }

            /// Replaces every setting `over` gives, recording where it came from.
            fn overlay(&mut self, over: Settings, origin: &Origin, origins: &mut BTreeMap<&'static str, Origin>) {
                $(
                    if over.$field.is_some() {
                        self.$field = over.$field;
                        origins.insert(stringify!($field), origin.clone());
                    }
                )*
            }
        }
    };
}

settings! {
    /// This node's id, a positive integer unique in the cluster.
    id: u64,
    /// HOST:PORT serving clients and peers.
    listen: String,
    data_dir: PathBuf,
    /// ID=HOST:PORT,... of every member (first start only).
    initial_cluster: String,
    /// Shards of a new cluster (first start only).
    shards: u32,
    metrics_listen: String,
    tick_interval_ms: u64,
    election_ticks: u32,
    heartbeat_ticks: u32,
    quiesce_after_idle_ticks: u32,
    max_wakeups_per_tick: usize,
    compact_log_entries: u64,
    compact_keep_entries: u64,
    compact_every_ticks: u64,
    tail_cache_bytes: u64,
    inbox_capacity: usize,
    block_cache_bytes: usize,
    write_buffer_total_bytes: usize,
    write_buffer_bytes: usize,
    log_write_buffer_bytes: usize,
    compress_data: bool,
    background_jobs: u32,
    max_key_bytes: usize,
    max_value_bytes: usize,
    default_deadline_ms: u64,
    scan_default_limit: u32,
    scan_max_limit: u32,
    scan_max_bytes: usize,
    peer_queue_batches: usize,
    reconnect_min_ms: u64,
    reconnect_max_ms: u64,
    max_snapshot_bytes: u64,
    max_concurrent_snapshots: usize,
    snapshot_chunk_timeout_ms: u64,
}

/// The file key of a field: `data_dir` -> `data-dir`.
pub fn key(field: &str) -> String {
    field.replace('_', "-")
}

/// The environment variable of a field: `data_dir` -> `FLOTILLA_DATA_DIR`.
pub fn env_var(field: &str) -> String {
    format!("FLOTILLA_{}", field.to_ascii_uppercase())
}

/// Where a setting's value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env,
    Flag,
}

impl Origin {
    fn describe(&self, field: &str) -> String {
        match self {
            Origin::Default => "the default".to_string(),
            Origin::File(path) => format!("from {}", path.display()),
            Origin::Env => format!("from {}", env_var(field)),
            Origin::Flag => format!("from --{}", key(field)),
        }
    }
}

/// The flags of `flotilla server`. Each may also come from `FLOTILLA_*` or
/// the config file, so none is required by clap itself.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerFlags {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<u64>,
    /// Address to serve clients and peers on, as HOST:PORT [default: 127.0.0.1:7001].
    #[arg(long)]
    pub listen: Option<String>,
    /// Where the node keeps its data; created on first start.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Every member as ID=HOST:PORT,...; without it a one-node cluster is
    /// created. Only needed on the first start: the data dir remembers it.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Number of shards of a new cluster (default 64); stored in the data dir.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Address for Prometheus metrics (HTTP GET /metrics).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// A TOML file with any setting (keys: deploy/flotilla.toml). Flags and
    /// FLOTILLA_* environment variables (e.g. FLOTILLA_TICK_INTERVAL_MS)
    /// override it.
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ServerFlags {
    fn settings(&self) -> Settings {
        Settings {
            id: self.id,
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            initial_cluster: self.initial_cluster.clone(),
            shards: self.shards,
            metrics_listen: self.metrics_listen.clone(),
            ..Settings::default()
        }
    }
}

/// Every layer applied: the values and where each came from.
#[derive(Clone, Debug, Default)]
pub struct Layered {
    pub values: Settings,
    origins: BTreeMap<&'static str, Origin>,
}

impl Layered {
    pub fn overlay(&mut self, over: Settings, origin: Origin) {
        self.values.overlay(over, &origin, &mut self.origins);
    }

    pub fn origin(&self, field: &str) -> Origin {
        self.origins.get(field).cloned().unwrap_or(Origin::Default)
    }
}

/// Reads `flags.config` if given, layers file < environment < flags over
/// the defaults, and checks everything. `env` reads one variable.
pub fn load(flags: &ServerFlags, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut layered = Layered::default();
    if let Some(path) = &flags.config {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.clone(), error })?;
        layered.overlay(parse_file(&text, path)?, Origin::File(path.clone()));
    }
    layered.overlay(Settings::from_env(env)?, Origin::Env);
    layered.overlay(flags.settings(), Origin::Flag);
    resolve::resolve(&layered)
}

/// Parses a config file's text. Errors give the line and its text, so the
/// key is named even when the parser's own message only names a type.
pub fn parse_file(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    toml::from_str(text).map_err(|error| {
        // "unknown field `x`, expected one of <every key>": the list is long
        // and deploy/flotilla.toml has it; keep the first part.
        let message = error.message().trim();
        let message = message.split(", expected one of").next().unwrap_or(message);
        let detail = match error.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line_no = text[..start].matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
                format!("line {line_no} (`{line}`): {message}")
            }
            None => message.to_string(),
        };
        ConfigError::File { path: path.to_path_buf(), detail }
    })
}

/// Parsing of one environment variable's text into a setting's type.
trait EnvValue: Sized {
    fn parse_env(text: &str) -> Result<Self, String>;
}

macro_rules! env_number {
    ($($ty:ty),*) => {$(
        impl EnvValue for $ty {
            fn parse_env(text: &str) -> Result<Self, String> {
                text.trim().replace('_', "").parse().map_err(|e| format!("not a whole number in range ({e})"))
            }
        }
    )*};
}
env_number!(u32, u64, usize);

impl EnvValue for bool {
    fn parse_env(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("not true or false".to_string()),
        }
    }
}

impl EnvValue for String {
    fn parse_env(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

impl EnvValue for PathBuf {
    fn parse_env(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

/// One setting from its variable. An empty variable counts as unset, as
/// compose files and shells often leave them.
fn env_value<T: EnvValue>(field: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<T>, ConfigError> {
    let var = env_var(field);
    match lookup(&var) {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => T::parse_env(&text).map(Some).map_err(|reason| ConfigError::Env { var, value: text, reason }),
    }
}

#[cfg(test)]
mod tests;
