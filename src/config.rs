//! The one typed configuration: defaults < TOML file (`--config`) < environment (`SLUICE_*`) <
//! command-line flags. Unknown keys are errors, so a typo never silently falls back to a default.
//! Every bound the gateway enforces is a named field here; see `docs/configuration.md`.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Holds the control-plane store (`sluice.db`), the master key file and demo files.
    pub data_dir: PathBuf,
    /// Internal networks (loopback, private, link-local) datasources may connect to. Empty: none.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Directories SQLite datasource files may lie in. Empty: `<data_dir>/sqlite`.
    pub sqlite_roots: Vec<PathBuf>,
    /// After SIGTERM/SIGINT, how long in-flight requests may still finish; past it they are
    /// dropped, the audit log is flushed and the process exits, so a stop never hangs.
    pub shutdown_grace_secs: u64,
    pub limits: Limits,
    pub pools: Pools,
    pub tokens: Tokens,
    pub audit: Audit,
    pub log: Log,
    pub mcp: Mcp,
    pub tls: Tls,
    pub store: StoreSettings,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Longest SQL text accepted (400 above), checked before parsing.
    pub max_sql_bytes: usize,
    /// Upper bound on any datasource's `max_rows`.
    pub max_rows: u64,
    /// Upper bound on any datasource's `timeout_ms`.
    pub max_timeout_ms: u64,
    /// Upper bound on the encoded bytes of one query result.
    pub max_result_bytes: u64,
    /// Time a client has to send its request headers (then the connection is closed).
    pub header_read_timeout_ms: u64,
    /// Policy decisions remembered for repeated statements (0 turns the cache off).
    pub policy_cache_entries: usize,
    /// Bytes of SQL the policy cache may hold.
    pub policy_cache_bytes: usize,
    /// Queries running at once across the whole gateway.
    pub max_concurrent_queries: usize,
    /// Queries running at once for one token (429 above).
    pub max_concurrent_per_token: usize,
    /// Queries running at once through one app (429 above), so one app cannot starve the others.
    pub max_concurrent_per_app: usize,
    /// Time a non-query request may take end to end.
    pub request_timeout_ms: u64,
    /// Heap SQLite may use in the whole process: SQLite datasources run inside the gateway, and
    /// share this with the store's and the audit log's connections. An allocation past it fails
    /// the statement that made it (422 `query_failed`) instead of growing the gateway. One
    /// string or blob may be at most a quarter of it (and at most `max_result_bytes`).
    pub sqlite_heap_limit_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pools {
    /// Pool size of a datasource that does not set one.
    pub default_size: usize,
    /// Upper bound on any datasource's pool size.
    pub max_size: usize,
    /// How long a query waits for a free connection (then 503 `pool_timeout`).
    pub wait_timeout_ms: u64,
    /// How long opening one database connection may take.
    pub connect_timeout_ms: u64,
    /// Pools unused this long are closed.
    pub idle_timeout_secs: u64,
    /// How often a datasource's catalogue (what the policy knows of the server: schemas,
    /// inheritance, views, virtual tables, functions) is read again. A change on the server is
    /// enforced within this time, at once after a `check`, and before the next query after a
    /// statement failed on a missing object.
    pub catalog_refresh_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    /// Lifetime of a token created without `expires_at` (0: no expiry).
    pub default_ttl_days: u64,
    /// Tokens per user at most.
    pub max_per_user: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// Answer a query only after its audit record is committed (no answered query is ever
    /// missing from the log). `false` trades that guarantee for throughput.
    pub wait_for_commit: bool,
    /// Records committed in one transaction at most.
    pub max_batch: usize,
    /// How long the writer waits to fill a batch. 0 (default): a batch is what queued while the
    /// previous commit ran; a wait would only add its length to every lone query's answer.
    pub max_delay_ms: u64,
    /// Records queued at most before `record` waits (backpressure, never dropping).
    pub queue_capacity: usize,
    /// fsync the audit log at every commit, so records survive an OS crash or power loss, not
    /// only a crash of the gateway process. Costs about one disk flush per batch.
    pub fsync: bool,
    /// Days audit records are kept; older ones are deleted by the writer at start and every ten
    /// minutes, 1,000 at a time. Unset (default): kept forever.
    pub retention_days: Option<u32>,
}

/// Where the control plane and the audit log live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// A PostgreSQL store shared by every replica, `postgres://user:pass@host:port/db?sslmode=…`
    /// (sslmode `disable`, `prefer` (default), `require`, `verify-ca`, `verify-full`, with
    /// `sslrootcert=<file>`). Unset (default): the embedded SQLite store in `data_dir`, for one
    /// node. Env `SLUICE_STORE__URL`, flag `--store-url`.
    pub url: Option<StoreUrl>,
    /// With a PostgreSQL store: how long a replica may go without confirming that its view of
    /// the control plane is current (a change notification or a version check on its listening
    /// connection) before it answers 503 rather than risk serving revoked access. The version is
    /// checked every quarter of this.
    pub max_staleness_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: None,
            max_staleness_ms: 1_000,
        }
    }
}

/// A store URL; it carries the store's password, so its `Debug` shows none of it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    pub fn new(url: impl Into<String>) -> StoreUrl {
        StoreUrl(url.into())
    }

    /// The URL itself, password included: for connecting, never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Scheme and host part after the credentials, nothing from before the `@`.
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        let host = host.split('?').next().unwrap_or_default();
        write!(f, "StoreUrl({scheme}://…@{host})")
    }
}

/// The MCP endpoint (`/v1/apps/{id}/mcp`). It is stateless: no MCP session outlives the HTTP
/// request that carried it, so any replica serves any request and there are no sessions to
/// count or expire; what a client can hold is a request, bounded here and by `limits`' query
/// limits (every tool call takes its places per token, per app and in total).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mcp {
    /// Rows a `query` tool answer carries at most (a call may ask for fewer, and a datasource's
    /// own `max_rows` may be lower): a model's context is small. Past it the answer says
    /// `truncated`.
    pub max_rows: u64,
    /// Encoded row bytes a `query` tool answer carries at most; rows past it are cut and the
    /// answer says `truncated`.
    pub max_result_bytes: u64,
    /// Largest MCP request body accepted (413 above).
    pub max_request_bytes: usize,
    /// The gateway's public base URL (`https://sluice.example.com`), used in the protected
    /// resource metadata and the `WWW-Authenticate` header. Unset: taken from the request's
    /// `Host` (and `X-Forwarded-Proto`).
    pub public_url: Option<String>,
}

/// HTTPS on the listener. Both files set: the listener speaks TLS only (HTTP/2 and HTTP/1.1
/// through ALPN); neither set: plain HTTP (local use, or behind a proxy that terminates TLS).
/// Both files are read at startup (a bad one stops it) and again on SIGHUP, when a bad one is
/// logged and the certificate being served stays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM file with the certificate chain, the server's certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Time a client has, from the TCP connection, to finish the TLS handshake (then the
    /// connection is closed).
    pub handshake_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter, e.g. `info` or `sluice=debug,tower_http=info` (`RUST_LOG` overrides).
    pub level: String,
    /// `json` (one object per line) or `text`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("sluice-data"),
            allow_networks: Vec::new(),
            sqlite_roots: Vec::new(),
            shutdown_grace_secs: 30,
            limits: Limits::default(),
            pools: Pools::default(),
            tokens: Tokens::default(),
            audit: Audit::default(),
            log: Log::default(),
            mcp: Mcp::default(),
            tls: Tls::default(),
            store: StoreSettings::default(),
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert_file: None,
            key_file: None,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl Default for Mcp {
    fn default() -> Self {
        Mcp {
            max_rows: 200,
            max_result_bytes: 256 * 1024,
            max_request_bytes: 1024 * 1024,
            public_url: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_sql_bytes: 64 * 1024,
            max_rows: 1_000_000,
            max_timeout_ms: 300_000,
            max_result_bytes: 512 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            policy_cache_entries: 10_000,
            policy_cache_bytes: 64 * 1024 * 1024,
            max_concurrent_queries: 512,
            max_concurrent_per_token: 32,
            max_concurrent_per_app: 64,
            request_timeout_ms: 30_000,
            sqlite_heap_limit_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            default_size: 8,
            max_size: 64,
            wait_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            idle_timeout_secs: 300,
            catalog_refresh_secs: 60,
        }
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            default_ttl_days: 0,
            max_per_user: 100,
        }
    }
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            wait_for_commit: true,
            max_batch: 512,
            max_delay_ms: 0,
            queue_capacity: 65_536,
            fsync: false,
            retention_days: None,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_owned(),
            format: LogFormat::Json,
        }
    }
}

/// The smallest `limits.sqlite_heap_limit_bytes` accepted.
const MIN_SQLITE_HEAP: u64 = 64 * 1024 * 1024;

/// Environment variables with the `SLUICE_` prefix that are not configuration keys: secrets read
/// directly (the master key) and variables of the test suite.
const ENV_NOT_CONFIG: &[&str] = &["MASTER_KEY", "LOG"];
const ENV_NOT_CONFIG_PREFIXES: &[&str] = &["TEST_", "BENCH_", "DEMO_"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Flags given on the command line; `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_networks: Option<Vec<ipnet::IpNet>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreOverrides>,
}

/// `--store-url`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreOverrides {
    pub url: StoreUrl,
}

impl Config {
    /// Loads the layers in order. `env` is the process environment (passed in so tests need not
    /// mutate the real one).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(env_provider(env)?);
        fig = fig.merge(Serialized::defaults(overrides));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_body_bytes", self.limits.max_body_bytes as u64),
            ("limits.max_sql_bytes", self.limits.max_sql_bytes as u64),
            ("limits.max_rows", self.limits.max_rows),
            ("limits.max_timeout_ms", self.limits.max_timeout_ms),
            ("limits.max_result_bytes", self.limits.max_result_bytes),
            (
                "limits.header_read_timeout_ms",
                self.limits.header_read_timeout_ms,
            ),
            (
                "limits.max_concurrent_queries",
                self.limits.max_concurrent_queries as u64,
            ),
            (
                "limits.max_concurrent_per_token",
                self.limits.max_concurrent_per_token as u64,
            ),
            (
                "limits.max_concurrent_per_app",
                self.limits.max_concurrent_per_app as u64,
            ),
            ("pools.default_size", self.pools.default_size as u64),
            ("pools.max_size", self.pools.max_size as u64),
            (
                "pools.catalog_refresh_secs",
                self.pools.catalog_refresh_secs,
            ),
            ("audit.max_batch", self.audit.max_batch as u64),
            ("audit.queue_capacity", self.audit.queue_capacity as u64),
            ("mcp.max_rows", self.mcp.max_rows),
            ("mcp.max_result_bytes", self.mcp.max_result_bytes),
            ("mcp.max_request_bytes", self.mcp.max_request_bytes as u64),
            ("tls.handshake_timeout_ms", self.tls.handshake_timeout_ms),
            ("store.max_staleness_ms", self.store.max_staleness_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.audit.retention_days == Some(0) {
            return Err(ConfigError::Invalid(
                "audit.retention_days must be at least 1 (unset keeps every record)".into(),
            ));
        }
        if let Some(url) = &self.store.url
            && !(url.expose().starts_with("postgres://")
                || url.expose().starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "store.url must be a postgres:// URL (unset: the embedded SQLite store)".into(),
            ));
        }
        // Below this the store and the audit log would fail for want of memory long before any
        // datasource statement is refused.
        if self.limits.sqlite_heap_limit_bytes < MIN_SQLITE_HEAP {
            return Err(ConfigError::Invalid(format!(
                "limits.sqlite_heap_limit_bytes must be at least {MIN_SQLITE_HEAP} (64 MiB)"
            )));
        }
        if let Some(url) = &self.mcp.public_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && !url.trim_end_matches('/').ends_with(':')
                && url.chars().all(|c| c.is_ascii_graphic() && c != '"');
            if !ok {
                return Err(ConfigError::Invalid(
                    "mcp.public_url must be an absolute http(s) URL such as https://sluice.example.com"
                        .to_owned(),
                ));
            }
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "tls.cert_file is set but tls.key_file is not: set both for HTTPS, or neither"
                        .to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "tls.key_file is set but tls.cert_file is not: set both for HTTPS, or neither"
                        .to_owned(),
                ));
            }
            _ => {}
        }
        if self.pools.default_size > self.pools.max_size {
            return Err(ConfigError::Invalid(
                "pools.default_size must not exceed pools.max_size".to_owned(),
            ));
        }
        Ok(())
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("sluice.db")
    }

    pub fn sqlite_roots(&self) -> Vec<PathBuf> {
        if self.sqlite_roots.is_empty() {
            vec![self.data_dir.join("sqlite")]
        } else {
            self.sqlite_roots.clone()
        }
    }

    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.pools.wait_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// `SLUICE_LISTEN`, `SLUICE_LIMITS__MAX_ROWS`, … (`__` separates sections). A `SLUICE_` variable
/// that is neither a key nor on the ignore list is an error, like an unknown key in the file.
/// List values (`SLUICE_ALLOW_NETWORKS`) are comma-separated.
fn env_provider(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Serialized<serde_json::Value>, ConfigError> {
    let mut root = serde_json::Map::new();
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("SLUICE_") else {
            continue;
        };
        if ENV_NOT_CONFIG.contains(&rest)
            || ENV_NOT_CONFIG_PREFIXES.iter().any(|p| rest.starts_with(p))
        {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let json_value = env_value(&path, &value);
        let mut node = &mut root;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.insert(part.clone(), json_value.clone());
            } else {
                let entry = node
                    .entry(part.clone())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                match entry {
                    serde_json::Value::Object(m) => node = m,
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "environment variable {key} conflicts with another"
                        )));
                    }
                }
            }
        }
    }
    Ok(Serialized::defaults(serde_json::Value::Object(root)))
}

/// Environment values are strings; give numbers, booleans and lists their JSON type so the typed
/// config can take them.
fn env_value(path: &[String], raw: &str) -> serde_json::Value {
    let last = path.last().map(String::as_str).unwrap_or("");
    if matches!(last, "allow_networks" | "sqlite_roots") {
        return serde_json::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| serde_json::Value::String(s.to_owned()))
                .collect(),
        );
    }
    if let Ok(n) = raw.parse::<u64>() {
        return serde_json::Value::from(n);
    }
    match raw {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        _ => serde_json::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_from_env_or_flag_and_never_shown() {
        let secret = "postgres://sluice:s3cret-pw@db.internal:5433/control?sslmode=verify-full";
        let c = Config::load(
            None,
            env(&[("SLUICE_STORE__URL", secret)]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.store.url.as_ref().map(StoreUrl::expose), Some(secret));
        assert_eq!(c.store.max_staleness_ms, 1_000);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("db.internal:5433/control"), "{shown}");

        let flag = "postgres://other@h/d";
        let c = Config::load(
            None,
            env(&[("SLUICE_STORE__URL", secret)]),
            &Overrides {
                store: Some(StoreOverrides {
                    url: StoreUrl::new(flag),
                }),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.store.url.as_ref().map(StoreUrl::expose), Some(flag));

        let err = Config::load(
            None,
            env(&[("SLUICE_STORE__URL", "mysql://x@y/z")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("store.url"), "{err}");
        let err = Config::load(
            None,
            env(&[("SLUICE_STORE__MAX_STALENESS_MS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("store.max_staleness_ms"), "{err}");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_used_when_nothing_is_given() {
        let c = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn file_then_environment_then_flags_win_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\n[limits]\nmax_rows = 5\nmax_sql_bytes = 7\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            env(&[
                ("SLUICE_DATA_DIR", "/from/env"),
                ("SLUICE_LIMITS__MAX_ROWS", "6"),
                ("SLUICE_SHUTDOWN_GRACE_SECS", "3"),
                ("SLUICE_ALLOW_NETWORKS", "127.0.0.0/8, 10.0.0.0/8"),
                ("SLUICE_MASTER_KEY", "not a config key"),
                ("SLUICE_TEST_PG_URL", "ignored"),
                ("OTHER", "ignored"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:3333".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3333", "flag wins");
        assert_eq!(c.data_dir, PathBuf::from("/from/env"), "env beats file");
        assert_eq!(c.limits.max_rows, 6, "env beats file in a section");
        assert_eq!(c.limits.max_sql_bytes, 7, "file beats default");
        assert_eq!(c.shutdown_grace(), Duration::from_secs(3));
        assert_eq!(c.allow_networks.len(), 2);
    }

    #[test]
    fn unknown_keys_are_refused_in_the_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "[limits]\nmax_rowz = 5\n").unwrap();
        let e = Config::load(Some(&f), env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("max_rowz"), "{e}");
        let e =
            Config::load(None, env(&[("SLUICE_LISTN", "x")]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
    }

    #[test]
    fn wrong_types_and_zero_bounds_are_refused() {
        let e = Config::load(
            None,
            env(&[("SLUICE_LIMITS__MAX_ROWS", "many")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_rows"), "{e}");
        let e = Config::load(
            None,
            env(&[("SLUICE_POOLS__MAX_SIZE", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("pools"), "{e}");
    }

    #[test]
    fn the_mcp_section_has_bounded_defaults_and_checks_its_public_url() {
        let c = Config::default();
        assert_eq!(
            (c.mcp.max_rows, c.mcp.max_result_bytes, c.mcp.public_url),
            (200, 256 * 1024, None)
        );
        let c = Config::load(
            None,
            env(&[
                ("SLUICE_MCP__MAX_ROWS", "50"),
                ("SLUICE_MCP__PUBLIC_URL", "https://sluice.example.com"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.mcp.max_rows, 50);
        assert_eq!(
            c.mcp.public_url.as_deref(),
            Some("https://sluice.example.com")
        );
        for bad in ["sluice.example.com", "https://a\"b", "ftp://x"] {
            let e = Config::load(
                None,
                env(&[("SLUICE_MCP__PUBLIC_URL", bad)]),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(e.to_string().contains("mcp.public_url"), "{bad}: {e}");
        }
        let e = Config::load(
            None,
            env(&[("SLUICE_MCP__MAX_ROWS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mcp.max_rows"), "{e}");
    }

    #[test]
    fn the_tls_section_is_unset_by_default_and_takes_both_files_or_neither() {
        let c = Config::default();
        assert_eq!((&c.tls.cert_file, &c.tls.key_file), (&None, &None));
        assert_eq!(c.tls.handshake_timeout_ms, 10_000);
        let c = Config::load(
            None,
            env(&[
                ("SLUICE_TLS__CERT_FILE", "/etc/sluice/cert.pem"),
                ("SLUICE_TLS__KEY_FILE", "/etc/sluice/key.pem"),
                ("SLUICE_TLS__HANDSHAKE_TIMEOUT_MS", "2500"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(Path::new("/etc/sluice/cert.pem"))
        );
        assert_eq!(
            c.tls.key_file.as_deref(),
            Some(Path::new("/etc/sluice/key.pem"))
        );
        assert_eq!(c.tls.handshake_timeout_ms, 2500);
        for (var, missing) in [
            ("SLUICE_TLS__CERT_FILE", "tls.key_file"),
            ("SLUICE_TLS__KEY_FILE", "tls.cert_file"),
        ] {
            let e = Config::load(None, env(&[(var, "/x.pem")]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{missing} is not")), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "[tls]\ncert_fil = \"/x.pem\"\n").unwrap();
        let e = Config::load(Some(&f), env(&[]), &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("cert_fil"), "{e}");
        let e = Config::load(
            None,
            env(&[("SLUICE_TLS__HANDSHAKE_TIMEOUT_MS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tls.handshake_timeout_ms"), "{e}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let e = Config::load(
            Some(Path::new("/nonexistent/sluice.toml")),
            env(&[]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not exist"));
    }
}
