//! Typed settings: defaults → `triggerd.toml` → `TRIGGERD_*` env vars → CLI flags, validated at
//! load so that a bad value stops the start with a one-line reason. Every key is documented in
//! `examples/triggerd.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// All settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds, e.g. `127.0.0.1:8080`. Port 0 picks a free port.
    pub listen: String,
    /// Base URL used in generated links (`apiUrl`, `webhookUrl`, `curl`). Defaults to
    /// `http://<listen>`.
    pub public_url: Option<String>,
    /// `sqlite://PATH` (embedded, one process) or `postgres://...` (several nodes).
    pub database_url: String,
    /// Where executions get their working directories; see [`Settings::work_root`].
    pub work_dir: Option<String>,
    /// The user Run steps run as: a name, a uid or `uid:gid`. Unset, a server started as root
    /// runs them as `nobody`, and any other runs them as itself.
    #[serde(deserialize_with = "text_or_number")]
    pub run_user: Option<String>,
    /// The `triggerd` binary that supervises Run steps (`triggerd serve` sets it to itself);
    /// not a setting of the file or the environment.
    #[serde(skip)]
    pub step_supervisor: Option<std::path::PathBuf>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive, e.g. `30s`.
    pub body_timeout: String,
    /// HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Executions run at once (DESIGN §6.3); `Wait` steps hold none.
    pub workers: usize,
    /// How much lower than the HTTP workers' the CPU priority of the engine, the Run steps and
    /// the other background work is: a Linux nice increment, 0 (the same) to 19.
    pub engine_nice: i32,
    /// Days to keep executions, their logs and webhook events; 0 keeps them forever.
    pub retention_days: u32,
    /// Logging.
    pub log: LogSettings,
    /// The SQLite writer.
    pub writer: WriterSettings,
    /// The PostgreSQL connection pool and server-side timeouts.
    pub postgres: PostgresSettings,
    /// API key verification.
    pub auth: AuthSettings,
    /// Outbound event delivery (DESIGN §8).
    pub outbound: OutboundSettings,
    /// This node.
    pub node: NodeSettings,
    /// Built-in TLS.
    pub tls: TlsSettings,
}

/// Built-in TLS: with both files set, `listen` serves HTTPS (HTTP/2 and HTTP/1.1, chosen by
/// ALPN) instead of plain HTTP, and SIGHUP reads both files again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// The certificate and key files when TLS is on; both or neither must be set.
    pub fn files(&self) -> Result<Option<(&Path, &Path)>, ConfigError> {
        match (&self.cert, &self.key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (Some(_), None) => Err(ConfigError(
                "tls.cert is set but tls.key is not: TLS needs both the certificate and its key"
                    .into(),
            )),
            (None, Some(_)) => Err(ConfigError(
                "tls.key is set but tls.cert is not: TLS needs both the certificate and its key"
                    .into(),
            )),
        }
    }
}

/// The database a `database_url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// `sqlite://PATH`: the embedded backend, one process per file.
    Sqlite(PathBuf),
    /// `postgres://...`: shared by several nodes.
    Postgres(String),
}

/// Outbound event delivery settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundSettings {
    /// How long one delivery attempt may take, e.g. `15s`.
    pub timeout: String,
    /// The delay before each attempt; its length is the number of attempts.
    #[serde(deserialize_with = "list_or_commas")]
    pub retry_schedule: Vec<String>,
    /// A rule whose every attempt has failed for this long is disabled, e.g. `5d`.
    pub disable_after: String,
    /// Destination ranges the SSRF guard lets through (e.g. `127.0.0.0/8`).
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_cidrs: Vec<String>,
    /// Delivery attempts in flight at once.
    pub concurrency: usize,
}

/// Settings of this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Tags an event rule's `selectors` are matched against.
    #[serde(deserialize_with = "list_or_commas")]
    pub tags: Vec<String>,
    /// How long a claim on exclusive work (a running execution, a delivery attempt) lasts
    /// without renewal, e.g. `30s`: the holder renews it, and a dead node's work is taken over
    /// by another once it expires.
    pub lease: String,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            lease: "30s".into(),
        }
    }
}

impl NodeSettings {
    /// `lease`, parsed.
    pub fn lease(&self) -> Result<std::time::Duration, ConfigError> {
        let lease = crate::domain::pipeline::parse_duration(&self.lease)
            .map_err(|e| ConfigError(format!("node.lease: {e}")))?;
        if lease < std::time::Duration::from_secs(3) || lease > std::time::Duration::from_secs(3600)
        {
            return Err(ConfigError(format!(
                "node.lease = {:?} must be between 3s and 1h",
                self.lease
            )));
        }
        Ok(lease)
    }
}

/// The outbound settings, parsed.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Attempt timeout.
    pub timeout: std::time::Duration,
    /// Delay before each attempt.
    pub retry_schedule: Vec<std::time::Duration>,
    /// Continuous failure that disables a rule.
    pub disable_after: std::time::Duration,
    /// The SSRF guard's allow list.
    pub policy: crate::outbound::guard::AddressPolicy,
}

/// A list given as a TOML array, or (handy in env vars) as one comma-separated string.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(items) => items,
        Either::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            timeout: "15s".into(),
            retry_schedule: ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(String::from)
                .to_vec(),
            disable_after: "5d".into(),
            allowed_cidrs: Vec::new(),
            concurrency: 64,
        }
    }
}

impl OutboundSettings {
    /// Parses the durations and CIDRs; the error names the key.
    pub fn parse(&self) -> Result<Outbound, ConfigError> {
        use crate::domain::pipeline::parse_duration;
        let duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| ConfigError(format!("outbound.{key}: {e}")))
        };
        let timeout = duration("timeout", &self.timeout)?;
        if timeout.is_zero() || timeout > std::time::Duration::from_secs(300) {
            return Err(ConfigError(format!(
                "outbound.timeout = {:?} must be more than 0 and at most 5m",
                self.timeout
            )));
        }
        let retry_schedule = self
            .retry_schedule
            .iter()
            .map(|t| duration("retry_schedule", t))
            .collect::<Result<Vec<_>, _>>()?;
        if retry_schedule.is_empty() || retry_schedule.len() > 50 {
            return Err(ConfigError(
                "outbound.retry_schedule must list 1 to 50 delays (the first is before the first attempt, usually 0s)".into(),
            ));
        }
        let disable_after = duration("disable_after", &self.disable_after)?;
        let policy = crate::outbound::guard::AddressPolicy::new(&self.allowed_cidrs)
            .map_err(|e| ConfigError(format!("outbound.allowed_cidrs: {e}")))?;
        Ok(Outbound {
            timeout,
            retry_schedule,
            disable_after,
            policy,
        })
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `triggerd=debug,actix_web=warn`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// SQLite writer settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterSettings {
    /// Writes that may wait for the writer; intake answers 503 beyond this.
    pub queue_capacity: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// The WAL's bound in MiB: past it the writer finishes a checkpoint and the WAL starts
    /// over. It overshoots by what is written until the finish runs; the file is cut back to
    /// twice this size by the first commit after a finish, and truncated when idle.
    pub wal_limit_mib: u64,
}

/// PostgreSQL settings (ignored on SQLite).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// Most connections this node opens.
    pub pool_size: usize,
    /// How long a request waits for a free connection before it is refused as overloaded.
    pub pool_wait: String,
    /// How long opening a connection may take before the database counts as unreachable.
    pub connect_timeout: String,
    /// Longest one statement may run on the server (`statement_timeout`).
    pub statement_timeout: String,
    /// Longest one statement may wait for a lock (`lock_timeout`).
    pub lock_timeout: String,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            pool_size: 16,
            pool_wait: "5s".into(),
            connect_timeout: "5s".into(),
            statement_timeout: "30s".into(),
            lock_timeout: "10s".into(),
        }
    }
}

/// The PostgreSQL settings, parsed.
#[derive(Debug, Clone, Copy)]
pub struct Postgres {
    /// `pool_size`.
    pub pool_size: usize,
    /// `pool_wait`.
    pub pool_wait: std::time::Duration,
    /// `connect_timeout`.
    pub connect_timeout: std::time::Duration,
    /// `statement_timeout`.
    pub statement_timeout: std::time::Duration,
    /// `lock_timeout`.
    pub lock_timeout: std::time::Duration,
}

impl PostgresSettings {
    /// Parses and checks every value; the error names the key.
    pub fn parse(&self) -> Result<Postgres, ConfigError> {
        let duration = |key: &str, text: &str, max_secs: u64| {
            let d = crate::domain::pipeline::parse_duration(text)
                .map_err(|e| ConfigError(format!("postgres.{key}: {e}")))?;
            if d < std::time::Duration::from_millis(100)
                || d > std::time::Duration::from_secs(max_secs)
            {
                return Err(ConfigError(format!(
                    "postgres.{key} = {text:?} must be between 100ms and {max_secs}s"
                )));
            }
            Ok(d)
        };
        if !(1..=1024).contains(&self.pool_size) {
            return Err(ConfigError(format!(
                "postgres.pool_size = {} must be between 1 and 1024",
                self.pool_size
            )));
        }
        Ok(Postgres {
            pool_size: self.pool_size,
            pool_wait: duration("pool_wait", &self.pool_wait, 300)?,
            connect_timeout: duration("connect_timeout", &self.connect_timeout, 300)?,
            statement_timeout: duration("statement_timeout", &self.statement_timeout, 3600)?,
            lock_timeout: duration("lock_timeout", &self.lock_timeout, 3600)?,
        })
    }
}

/// API key verification settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Concurrent argon2 verifications; 0 means one per core.
    pub argon2_threads: usize,
    /// Seconds a verified key stays cached (at most 300).
    pub key_cache_ttl_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            database_url: "sqlite://triggerd.db".into(),
            work_dir: None,
            run_user: None,
            step_supervisor: None,
            max_body_bytes: 1024 * 1024,
            body_timeout: "30s".into(),
            http_workers: 0,
            shutdown_grace_secs: 30,
            workers: 32,
            engine_nice: 10,
            retention_days: 30,
            log: LogSettings::default(),
            writer: WriterSettings::default(),
            postgres: PostgresSettings::default(),
            auth: AuthSettings::default(),
            outbound: OutboundSettings::default(),
            node: NodeSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            max_batch: 512,
            wal_limit_mib: 256,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            argon2_threads: 0,
            key_cache_ttl_secs: 300,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--public-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// A configuration problem, in one line.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// A setting given as text or, from the environment where `1000` reads as a number, a number.
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Given>::deserialize(d)?.map(|g| match g {
        Given::Text(t) => t,
        Given::Number(n) => n.to_string(),
    }))
}

/// Env vars with the `TRIGGERD_` prefix that are not settings keys: the server's own, the
/// client's (a shell set up for `triggerd fire` can still start a server), and the test suite's.
const NON_SETTING_ENV: &[&str] = &[
    "config",
    "root_key",
    "root_key_fd",
    "url",
    "api_key",
    "project",
    "profile",
    "ca_cert",
    "test_backend",
    "browser_tests",
];

impl Settings {
    /// Loads settings from `file` (or `triggerd.toml` when it exists), the environment and
    /// `overrides`, and validates them.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )))
            }
            Some(path) => figment = figment.merge(Toml::file(path)),
            None if Path::new("triggerd.toml").exists() => {
                figment = figment.merge(Toml::file("triggerd.toml"))
            }
            None => {}
        }
        let settings: Settings = figment
            .merge(
                Env::prefixed("TRIGGERD_")
                    .split("__")
                    .ignore(NON_SETTING_ENV),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError(e.to_string().replace('\n', "; ")))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value; the error names the key and what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        if self.listen.parse::<SocketAddr>().is_err() {
            return fail(format!(
                "listen = {:?} is not an address like 127.0.0.1:8080",
                self.listen
            ));
        }
        if let Some(url) = &self.public_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return fail(format!("public_url = {url:?} is not an http(s) URL")),
            }
        }
        if self.database().is_none() {
            return fail(format!(
                "database_url = {:?} is not supported; use sqlite://PATH or postgres://USER@HOST/DB",
                self.database_url
            ));
        }
        self.node.lease()?;
        self.tls.files()?;
        self.body_timeout()?;
        if !(1..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return fail(format!(
                "max_body_bytes = {} must be between 1 and 67108864",
                self.max_body_bytes
            ));
        }
        if !(1..=1024).contains(&self.workers) {
            return fail(format!(
                "workers = {} must be between 1 and 1024",
                self.workers
            ));
        }
        if !(0..=19).contains(&self.engine_nice) {
            return fail(format!(
                "engine_nice = {} must be between 0 and 19",
                self.engine_nice
            ));
        }
        if self.retention_days > 36_500 {
            return fail(format!(
                "retention_days = {} must be between 0 (keep forever) and 36500",
                self.retention_days
            ));
        }
        if self.writer.queue_capacity == 0 || self.writer.max_batch == 0 {
            return fail("writer.queue_capacity and writer.max_batch must be at least 1".into());
        }
        if !(1..=65_536).contains(&self.writer.wal_limit_mib) {
            return fail(format!(
                "writer.wal_limit_mib = {} must be between 1 and 65536",
                self.writer.wal_limit_mib
            ));
        }
        self.postgres.parse()?;
        if self.auth.key_cache_ttl_secs > 300 {
            return fail(format!(
                "auth.key_cache_ttl_secs = {} must be at most 300",
                self.auth.key_cache_ttl_secs
            ));
        }
        self.outbound.parse()?;
        if !(1..=4096).contains(&self.outbound.concurrency) {
            return fail(format!(
                "outbound.concurrency = {} must be between 1 and 4096",
                self.outbound.concurrency
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return fail(format!("log.level = {:?} is invalid: {e}", self.log.level));
        }
        // A bare word is a target to the filter syntax, so "verbose" would be accepted and
        // silence everything: a directive without `=` must be a level.
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        if let Some(word) = self.log.level.split(',').map(str::trim).find(|d| {
            !d.is_empty() && !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
        }) {
            return fail(format!(
                "log.level = {:?}: {word:?} is not a level; use off, error, warn, info, debug or trace, or target=level",
                self.log.level
            ));
        }
        Ok(())
    }

    /// `body_timeout`, parsed and checked (1s to 10m).
    pub fn body_timeout(&self) -> Result<std::time::Duration, ConfigError> {
        let timeout = crate::domain::pipeline::parse_duration(&self.body_timeout)
            .map_err(|e| ConfigError(format!("body_timeout: {e}")))?;
        if timeout < std::time::Duration::from_secs(1)
            || timeout > std::time::Duration::from_secs(600)
        {
            return Err(ConfigError(format!(
                "body_timeout = {:?} must be between 1s and 10m",
                self.body_timeout
            )));
        }
        Ok(timeout)
    }

    /// The backend `database_url` names; `None` when it names none.
    pub fn database(&self) -> Option<Database> {
        if let Some(path) = crate::store::sqlite::path_from_url(&self.database_url) {
            return Some(Database::Sqlite(path));
        }
        let url = url::Url::parse(&self.database_url).ok()?;
        matches!(url.scheme(), "postgres" | "postgresql")
            .then(|| Database::Postgres(self.database_url.clone()))
    }

    /// Where the engine makes each execution's working directory: `work_dir`, else
    /// `triggerd-work` next to the SQLite file, else `./triggerd-work`.
    pub fn work_root(&self) -> PathBuf {
        if let Some(dir) = &self.work_dir {
            return PathBuf::from(dir);
        }
        match self.database() {
            Some(Database::Sqlite(path)) => path
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
                .join("triggerd-work"),
            _ => PathBuf::from("triggerd-work"),
        }
    }

    /// The API key verifier these settings describe (argon2 pool size, cache TTL).
    pub fn key_verifier(&self) -> crate::auth::keys::KeyVerifier {
        let threads = match self.auth.argon2_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        crate::auth::keys::KeyVerifier::new(
            threads,
            std::time::Duration::from_secs(self.auth.key_cache_ttl_secs),
        )
    }

    /// The public base URL for a server bound to `bound`, without a trailing slash.
    pub fn public_base(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let scheme = if self.tls.cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                if bound.ip().is_unspecified() {
                    format!("{scheme}://127.0.0.1:{}", bound.port())
                } else {
                    format!("{scheme}://{bound}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let cases = [
            (
                "listen",
                Settings {
                    listen: "nope".into(),
                    ..Settings::default()
                },
            ),
            (
                "database_url",
                Settings {
                    database_url: "mysql://x".into(),
                    ..Settings::default()
                },
            ),
            (
                "node.lease",
                Settings {
                    node: NodeSettings {
                        lease: "1s".into(),
                        ..NodeSettings::default()
                    },
                    ..Settings::default()
                },
            ),
            (
                "max_body_bytes",
                Settings {
                    max_body_bytes: 0,
                    ..Settings::default()
                },
            ),
            (
                "writer.wal_limit_mib",
                Settings {
                    writer: WriterSettings {
                        wal_limit_mib: 0,
                        ..WriterSettings::default()
                    },
                    ..Settings::default()
                },
            ),
            (
                "tls.key",
                Settings {
                    tls: TlsSettings {
                        cert: Some("c.pem".into()),
                        key: None,
                    },
                    ..Settings::default()
                },
            ),
            (
                "public_url",
                Settings {
                    public_url: Some("ftp://x".into()),
                    ..Settings::default()
                },
            ),
            (
                "body_timeout",
                Settings {
                    body_timeout: "0s".into(),
                    ..Settings::default()
                },
            ),
            (
                "postgres.pool_size",
                Settings {
                    postgres: PostgresSettings {
                        pool_size: 0,
                        ..PostgresSettings::default()
                    },
                    ..Settings::default()
                },
            ),
            (
                "postgres.statement_timeout",
                Settings {
                    postgres: PostgresSettings {
                        statement_timeout: "0s".into(),
                        ..PostgresSettings::default()
                    },
                    ..Settings::default()
                },
            ),
            (
                "log.level",
                Settings {
                    log: LogSettings {
                        level: "[".into(),
                        ..LogSettings::default()
                    },
                    ..Settings::default()
                },
            ),
            (
                "engine_nice = 20",
                Settings {
                    engine_nice: 20,
                    ..Settings::default()
                },
            ),
            (
                "engine_nice = -1",
                Settings {
                    engine_nice: -1,
                    ..Settings::default()
                },
            ),
            (
                "\"verbose\" is not a level",
                Settings {
                    log: LogSettings {
                        level: "verbose".into(),
                        ..LogSettings::default()
                    },
                    ..Settings::default()
                },
            ),
        ];
        for (key, settings) in cases {
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn outbound_lists_come_as_arrays_or_comma_separated_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[outbound]\nallowed_cidrs = \"127.0.0.0/8, ::1/128\"\nretry_schedule = [\"0s\", \"1s\"]\n[node]\ntags = [\"eu\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(s.outbound.allowed_cidrs, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(s.node.tags, ["eu"]);
        let parsed = s.outbound.parse().unwrap();
        assert_eq!(parsed.retry_schedule.len(), 2);
        assert_eq!(parsed.timeout, std::time::Duration::from_secs(15));
        for (toml, key) in [
            (
                "[outbound]\nallowed_cidrs = [\"10.0.0.0/33\"]\n",
                "allowed_cidrs",
            ),
            ("[outbound]\ntimeout = \"soon\"\n", "timeout"),
            ("[outbound]\nretry_schedule = []\n", "retry_schedule"),
        ] {
            std::fs::write(&path, toml).unwrap();
            let err = Settings::load(Some(&path), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn the_example_file_is_valid_and_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/triggerd.toml");
        let loaded = Settings::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(
            serde_json::to_value(&loaded).unwrap(),
            serde_json::to_value(Settings::default()).unwrap()
        );
    }

    #[test]
    fn public_base_falls_back_to_the_bound_address() {
        let s = Settings::default();
        assert_eq!(
            s.public_base("0.0.0.0:9000".parse().unwrap()),
            "http://127.0.0.1:9000"
        );
        let s = Settings {
            public_url: Some("https://hooks.example.com/".into()),
            ..Settings::default()
        };
        assert_eq!(
            s.public_base("127.0.0.1:1".parse().unwrap()),
            "https://hooks.example.com"
        );
        let s = Settings {
            tls: TlsSettings {
                cert: Some("c.pem".into()),
                key: Some("k.pem".into()),
            },
            ..Settings::default()
        };
        assert_eq!(
            s.public_base("127.0.0.1:8443".parse().unwrap()),
            "https://127.0.0.1:8443"
        );
    }

    #[test]
    fn file_values_are_loaded_and_unknown_keys_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "max_body_bytes = 2048\n[log]\nformat = \"json\"\n").unwrap();
        let s = Settings::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(s.max_body_bytes, 2048);
        assert_eq!(s.log.format, LogFormat::Json);
        std::fs::write(&path, "max_body_byte = 2048\n").unwrap();
        let err = Settings::load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("max_body_byte"), "{err}");
    }
}
