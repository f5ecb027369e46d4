//! Typed settings, read once at start-up from `GRANULO_*` environment variables (or the matching
//! command-line flags) and passed by value: nothing global, so tests build their own.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `GRANULO_DATABASE_URL` | `sqlite://granulo.db` | `sqlite://PATH` or `postgres://user@host:5432/db` |
//! | `GRANULO_BIND` | `127.0.0.1:8080` | listen address |
//! | `GRANULO_JWT_SECRET` | generated beside the SQLite file | the first HS256 signing key, at least 32 bytes, stored sealed in `signing_keys` on the first start (later keys: `granulo keys rotate`); required on PostgreSQL |
//! | `GRANULO_SECRETS_KEY` | generated beside the SQLite file | master key (≥ 32 bytes) that seals stored secrets (webhook secrets, signing keys, TOTP seeds); required on PostgreSQL |
//! | `GRANULO_SECRETS_KEY_FILE` | unset | read the master key from this file instead |
//! | `GRANULO_SECRETS_KEY_PREVIOUS` | unset | the key before a rotation: still opens, never seals (`granulo secrets rotate`) |
//! | `GRANULO_WEBHOOK_ALLOW` | empty | comma-separated hosts and CIDRs webhooks may reach although internal (loopback, private, link-local, … are refused otherwise), and over `http://` |
//! | `GRANULO_ADMIN_USERNAME`, `GRANULO_ADMIN_PASSWORD` | unset | first admin, created when there are no users |
//! | `GRANULO_DB_POOL_SIZE` | 8 | connections in the pool |
//! | `GRANULO_DB_CHECKOUT_TIMEOUT_MS` | 3000 | wait for a pooled connection before answering 503 |
//! | `GRANULO_ACCESS_TOKEN_MINUTES` | 15 | access-token lifetime |
//! | `GRANULO_REFRESH_TOKEN_HOURS` | 12 | refresh-token lifetime (one shift) |
//! | `GRANULO_LOGIN_MAX_FAILURES` | 5 | failed logins per username within the window before 429 |
//! | `GRANULO_LOGIN_MAX_FAILURES_PER_ADDRESS` | 30 | the same per client address |
//! | `GRANULO_LOGIN_WINDOW_MINUTES` | 15 | throttling window |
//! | `GRANULO_TRUST_FORWARDED_FOR` | false | client address = the last `X-Forwarded-For` entry (only behind a proxy you run, which appends it) |
//! | `GRANULO_COOKIE_SECURE` | false | mark the console's session cookie `Secure` (set it when a TLS proxy serves granulo; a request a trusted proxy forwards as HTTPS gets it anyway) |
//! | `GRANULO_WORKERS` | one per core | HTTP worker threads |
//! | `GRANULO_ALERT_INTERVAL_SECS` | 60 | in-process alert scan interval; 0 turns it off (run `granulo alerts run` from cron instead) |
//! | `GRANULO_FIN` | `A9999` | ISBT 128 facility identification number used in assigned DINs (`A9999` is ICCBBA's example FIN: set your own) |
//! | `GRANULO_FACILITY_NAME` | `granulo blood bank` | producer name printed on labels |
//! | `GRANULO_TIMEZONE` | `UTC` | the facility's IANA time zone: label text, ISBT 128 expiry and pooled expiry use its wall clock; the API stays UTC |
//! | `GRANULO_RATE_LIMIT_PER_ACCOUNT` | 1200 | requests per minute per account (bearer `sub` or console session), all instances together; 0 turns it off; over it, 429 `rate_limited` |
//! | `GRANULO_RATE_LIMIT_PER_ADDRESS` | 3000 | the same per client address (see `GRANULO_TRUST_FORWARDED_FOR`) |
//! | `GRANULO_RATE_LIMIT_BURST_SECONDS` | 10 | seconds of the rate a caller may spend at once (1200/min: bursts of 200) |
//! | `GRANULO_MAX_STREAMS_PER_ACCOUNT` | 10 | open event streams (`/api/v1/alerts/stream`, `/console/events`) per account, all instances; over it, 429 `too_many_streams` |
//! | `GRANULO_INSTANCE_HEARTBEAT_SECS` | 10 | how often an instance reports itself alive; each enforces 1/n of the rate limits, n = instances seen in the last 3 heartbeats |
//! | `GRANULO_LOG` | `info` | tracing filter, e.g. `granulo=debug,info` |
//! | `GRANULO_LOG_FORMAT` | `text` | `text` or `json` |

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::domain::destinations::{AllowList, NameLookup};

/// Where the data lives, parsed from the URL scheme.
#[derive(Clone)]
pub enum DatabaseTarget {
    Sqlite(PathBuf),
    Postgres(SecretString),
}

impl DatabaseTarget {
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let url = url.trim();
        if let Some(rest) = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
        {
            if rest.is_empty() {
                return Err(ConfigError::new("GRANULO_DATABASE_URL has no host after postgres://"));
            }
            return Ok(Self::Postgres(SecretString::from(url.to_owned())));
        }
        if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if rest.is_empty() || rest == ":memory:" || rest.starts_with("file::memory:") {
                return Err(ConfigError::new(
                    "GRANULO_DATABASE_URL: an in-memory SQLite database is not supported \
                     (each pooled connection would see its own empty database); name a file",
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(rest)));
        }
        Err(ConfigError::new(format!(
            "GRANULO_DATABASE_URL must start with sqlite:// or postgres:// (got {})",
            redact_url(url)
        )))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The URL with any password masked, for logs and messages.
    pub fn display(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => redact_url(url.expose_secret()),
        }
    }
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// Mask the password of `scheme://user:password@host/…` and of a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{}", &userinfo[..colon], host),
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find("password=") {
        Some(p) => {
            let value_start = p + "password=".len();
            let value_end = tail[value_start..].find('&').map_or(tail.len(), |e| value_start + e);
            format!("{}***{}", &tail[..value_start], &tail[value_end..])
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `serve` needs. Secrets are `SecretString`: their `Debug` prints a placeholder.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database: DatabaseTarget,
    pub bind: String,
    pub jwt_secret: Option<SecretString>,
    /// Master key of sealed secrets (`credentials::sealed`).
    pub secrets_key: Option<SecretString>,
    pub secrets_key_file: Option<PathBuf>,
    /// The master key before a rotation: opens values not yet re-sealed.
    pub secrets_key_previous: Option<SecretString>,
    pub admin_username: Option<String>,
    pub admin_password: Option<SecretString>,
    pub pool_size: u32,
    pub db_checkout_timeout_ms: u64,
    pub access_token_minutes: i64,
    pub refresh_token_hours: i64,
    pub login_max_failures: i64,
    pub login_max_failures_per_address: i64,
    pub login_window_minutes: i64,
    pub trust_forwarded_for: bool,
    /// Mark the console's session cookie `Secure` even when the request arrived over HTTP
    /// (behind a TLS-terminating proxy).
    pub cookie_secure: bool,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds between in-process alert scans; 0 disables the scheduler.
    pub alert_interval_secs: u64,
    /// ISBT 128 facility identification number (`αpppp`) of assigned DINs.
    pub fin: String,
    /// Producer name on labels.
    pub facility_name: String,
    /// The facility's wall clock (labels, ISBT 128 `&>` expiry, pooled expiry).
    pub timezone: chrono_tz::Tz,
    /// Internal hosts and networks webhooks may reach (`GRANULO_WEBHOOK_ALLOW`).
    pub webhook_allow: AllowList,
    /// The name lookup of webhook deliveries: the system resolver unless a test sets one.
    pub webhook_lookup: WebhookLookup,
    /// Requests per minute per account, deployment-wide; 0 = off.
    pub rate_limit_per_account: u32,
    /// Requests per minute per client address, deployment-wide; 0 = off.
    pub rate_limit_per_address: u32,
    /// Seconds of the rate a full bucket holds.
    pub rate_limit_burst_seconds: u32,
    /// Open event streams per account, deployment-wide.
    pub max_streams_per_account: u32,
    /// Seconds between an instance's heartbeats in `instances`.
    pub instance_heartbeat_secs: u64,
    /// A second listener serving only `/metrics`, without a token (`GRANULO_METRICS_BIND`).
    pub metrics_bind: Option<String>,
    /// A bearer token that may read `/metrics` on the main port (`GRANULO_METRICS_TOKEN`).
    pub metrics_token: Option<SecretString>,
}

/// An injected name lookup for webhook destinations (`None`: the system resolver).
#[derive(Clone, Default)]
pub struct WebhookLookup(pub Option<std::sync::Arc<dyn NameLookup>>);

impl fmt::Debug for WebhookLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "injected" } else { "system" })
    }
}

impl Settings {
    /// Defaults for everything but the database (used by tests and as the base of the CLI).
    pub fn with_database(database: DatabaseTarget) -> Self {
        Self {
            database,
            bind: "127.0.0.1:8080".to_owned(),
            jwt_secret: None,
            secrets_key: None,
            secrets_key_file: None,
            secrets_key_previous: None,
            admin_username: None,
            admin_password: None,
            pool_size: 8,
            db_checkout_timeout_ms: 3000,
            access_token_minutes: 15,
            refresh_token_hours: 12,
            login_max_failures: 5,
            login_max_failures_per_address: 30,
            login_window_minutes: 15,
            trust_forwarded_for: false,
            cookie_secure: false,
            workers: 0,
            alert_interval_secs: 60,
            fin: "A9999".to_owned(),
            facility_name: "granulo blood bank".to_owned(),
            timezone: chrono_tz::UTC,
            webhook_allow: AllowList::default(),
            webhook_lookup: WebhookLookup::default(),
            rate_limit_per_account: 1200,
            rate_limit_per_address: 3000,
            rate_limit_burst_seconds: 10,
            max_streams_per_account: 10,
            instance_heartbeat_secs: 10,
            metrics_bind: None,
            metrics_token: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pool_size == 0 {
            return Err(ConfigError::new("GRANULO_DB_POOL_SIZE must be at least 1"));
        }
        if !(1..=60).contains(&self.access_token_minutes) {
            return Err(ConfigError::new("GRANULO_ACCESS_TOKEN_MINUTES must be 1 to 60"));
        }
        if !(1..=24 * 30).contains(&self.refresh_token_hours) {
            return Err(ConfigError::new("GRANULO_REFRESH_TOKEN_HOURS must be 1 to 720"));
        }
        if self.login_max_failures < 1 || self.login_max_failures_per_address < 1 || self.login_window_minutes < 1 {
            return Err(ConfigError::new("login throttling limits must be at least 1"));
        }
        if !(1..=3600).contains(&self.rate_limit_burst_seconds) {
            return Err(ConfigError::new("GRANULO_RATE_LIMIT_BURST_SECONDS must be 1 to 3600"));
        }
        if !(1..=1000).contains(&self.max_streams_per_account) {
            return Err(ConfigError::new("GRANULO_MAX_STREAMS_PER_ACCOUNT must be 1 to 1000"));
        }
        if !(1..=300).contains(&self.instance_heartbeat_secs) {
            return Err(ConfigError::new("GRANULO_INSTANCE_HEARTBEAT_SECS must be 1 to 300"));
        }
        if crate::domain::isbt128::validate_fin(&self.fin).is_err() {
            return Err(ConfigError::new(
                "GRANULO_FIN must be an ISBT 128 facility identification number such as A9999",
            ));
        }
        if self.facility_name.trim().is_empty() || self.facility_name.chars().count() > 100 {
            return Err(ConfigError::new("GRANULO_FACILITY_NAME must be 1 to 100 characters"));
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < MIN_METRICS_TOKEN_BYTES)
        {
            return Err(ConfigError::new(format!(
                "GRANULO_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_BYTES} bytes"
            )));
        }
        if self.admin_username.is_some() != self.admin_password.is_some() {
            return Err(ConfigError::new(
                "set both GRANULO_ADMIN_USERNAME and GRANULO_ADMIN_PASSWORD, or neither",
            ));
        }
        Ok(())
    }
}

/// An IANA time zone name (`Europe/London`, `America/New_York`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, ConfigError> {
    name.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        ConfigError::new(format!(
            "GRANULO_TIMEZONE {name:?} is not an IANA time zone name such as Europe/London or America/New_York"
        ))
    })
}

/// The minimum length of `GRANULO_METRICS_TOKEN` (a guessable token would open the metrics).
pub const MIN_METRICS_TOKEN_BYTES: usize = 32;

/// The minimum length of an HS256 key, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Resolve the first signing key: the configured one, or on SQLite a random key generated once
/// and kept beside the database file with mode 0600. PostgreSQL deployments run several
/// instances that must share the key, so there it must be configured. It is stored (sealed) as
/// the first of the `signing_keys` when that table is empty and not read after that.
pub fn resolve_jwt_secret(settings: &Settings) -> Result<SecretString, ConfigError> {
    if let Some(secret) = &settings.jwt_secret {
        if secret.expose_secret().len() < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::new(format!(
                "GRANULO_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes"
            )));
        }
        return Ok(secret.clone());
    }
    match &settings.database {
        DatabaseTarget::Postgres(_) => Err(ConfigError::new(
            "GRANULO_JWT_SECRET is required with PostgreSQL (every instance must share it)",
        )),
        DatabaseTarget::Sqlite(db_path) => load_or_create_key_file(&sidecar_path(db_path, "jwt-secret")),
    }
}

/// The keyring of sealed secrets: `GRANULO_SECRETS_KEY`, else the file `GRANULO_SECRETS_KEY_FILE`,
/// else on SQLite a key generated once beside the database (`<db>.secrets-key`, mode 0600).
/// PostgreSQL instances share their data, so there it must be configured. On SQLite a leftover
/// `<db>.secrets-key.next` (a `granulo secrets rotate` that stopped before its last step) also
/// opens values, so none is lost whichever step it stopped at.
pub fn resolve_secrets_keyring(settings: &Settings) -> Result<crate::credentials::sealed::Keyring, ConfigError> {
    let mut previous: Vec<SecretString> = settings.secrets_key_previous.iter().cloned().collect();
    let current = if let Some(key) = &settings.secrets_key {
        key.clone()
    } else if let Some(path) = &settings.secrets_key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(format!("cannot read GRANULO_SECRETS_KEY_FILE {}: {e}", path.display())))?;
        SecretString::from(text.trim().to_owned())
    } else {
        match &settings.database {
            DatabaseTarget::Postgres(_) => {
                return Err(ConfigError::new(
                    "GRANULO_SECRETS_KEY (or GRANULO_SECRETS_KEY_FILE) is required with PostgreSQL \
                     (every instance must share it)",
                ));
            }
            DatabaseTarget::Sqlite(db_path) => {
                let current = load_or_create_key_file(&sidecar_path(db_path, SECRETS_KEY_SUFFIX))?;
                if let Some(next) = read_key_file(&sidecar_path(db_path, SECRETS_KEY_NEXT_SUFFIX))? {
                    previous.push(next);
                }
                current
            }
        }
    };
    crate::credentials::sealed::Keyring::new(&current, &previous)
        .map_err(|e| ConfigError::new(format!("GRANULO_SECRETS_KEY: {e}")))
}

/// The sidecar of the generated secrets key, and of the next one during a rotation.
pub const SECRETS_KEY_SUFFIX: &str = "secrets-key";
pub const SECRETS_KEY_NEXT_SUFFIX: &str = "secrets-key.next";

/// Whether the secrets key is the generated sidecar file (nothing configured, SQLite): then
/// `granulo secrets rotate` generates the next key itself.
pub fn secrets_key_is_generated(settings: &Settings) -> Option<PathBuf> {
    match (&settings.secrets_key, &settings.secrets_key_file, &settings.database) {
        (None, None, DatabaseTarget::Sqlite(db)) => Some(db.clone()),
        _ => None,
    }
}

/// A key file's content, `None` when the file does not exist.
pub fn read_key_file(path: &Path) -> Result<Option<SecretString>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim().to_owned();
            if key.len() < MIN_JWT_SECRET_BYTES {
                return Err(ConfigError::new(format!(
                    "the key file {} is shorter than {MIN_JWT_SECRET_BYTES} bytes",
                    path.display()
                )));
            }
            Ok(Some(SecretString::from(key)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::new(format!(
            "cannot read the key file {}: {e}",
            path.display()
        ))),
    }
}

/// A new random key (64 base64url characters).
pub fn generate_key() -> SecretString {
    use base64::Engine as _;
    let mut bytes = [0u8; 48];
    rand::fill(&mut bytes);
    SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `granulo.db` → `granulo.db.<suffix>`, in the same directory.
pub fn sidecar_path(db_path: &Path, suffix: &str) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn load_or_create_key_file(path: &Path) -> Result<SecretString, ConfigError> {
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    let key = generate_key();
    write_private_file(path, key.expose_secret())
        .map_err(|e| ConfigError::new(format!("cannot write the key file {}: {e}", path.display())))?;
    Ok(key)
}

/// Create a new file readable only by its owner; refuses to overwrite.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes() {
        assert!(
            matches!(DatabaseTarget::parse("sqlite://granulo.db"), Ok(DatabaseTarget::Sqlite(p)) if p == Path::new("granulo.db"))
        );
        assert!(
            matches!(DatabaseTarget::parse("sqlite:///var/lib/g.db"), Ok(DatabaseTarget::Sqlite(p)) if p == Path::new("/var/lib/g.db"))
        );
        assert!(matches!(
            DatabaseTarget::parse("postgres://u@h:5432/d"),
            Ok(DatabaseTarget::Postgres(_))
        ));
        assert!(matches!(
            DatabaseTarget::parse("postgresql://u@h/d"),
            Ok(DatabaseTarget::Postgres(_))
        ));
        assert!(DatabaseTarget::parse("mysql://x").is_err());
        assert!(DatabaseTarget::parse("sqlite://:memory:").is_err());
        assert!(DatabaseTarget::parse("sqlite://").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/d"), "postgres://u:***@h:5432/d");
        assert_eq!(
            redact_url("postgres://u@h/d?password=pw&x=1"),
            "postgres://u@h/d?password=***&x=1"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        let target = DatabaseTarget::parse("postgres://u:secret@h/d").expect("parses");
        assert!(!format!("{target:?}").contains("secret"));
    }

    #[test]
    fn settings_debug_hides_secrets() {
        let mut s = Settings::with_database(DatabaseTarget::Sqlite("x.db".into()));
        s.jwt_secret = Some(SecretString::from("a-very-secret-signing-key-of-32-bytes!"));
        s.admin_password = Some(SecretString::from("hunter2hunter2"));
        s.secrets_key = Some(SecretString::from("a-very-secret-sealing-key-of-32-bytes!!"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("a-very-secret"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn generated_key_is_private_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("g.db");
        let settings = Settings::with_database(DatabaseTarget::Sqlite(db.clone()));
        let first = resolve_jwt_secret(&settings).expect("generated");
        let second = resolve_jwt_secret(&settings).expect("read back");
        assert_eq!(first.expose_secret(), second.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(sidecar_path(&db, "jwt-secret"))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn postgres_requires_a_secret() {
        let settings = Settings::with_database(DatabaseTarget::Postgres("postgres://h/d".into()));
        assert!(resolve_jwt_secret(&settings).is_err());
        assert!(resolve_secrets_keyring(&settings).is_err());
    }

    /// A rotation that stopped after writing `<db>.secrets-key.next`: values sealed under the
    /// next key still open at start-up, and the current key stays the one that seals.
    #[test]
    fn a_leftover_next_key_opens_but_does_not_seal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("g.db");
        let settings = Settings::with_database(DatabaseTarget::Sqlite(db.clone()));
        let before = resolve_secrets_keyring(&settings).expect("generated");
        let next = generate_key();
        write_private_file(&sidecar_path(&db, SECRETS_KEY_NEXT_SUFFIX), next.expose_secret()).expect("next");
        let next_ring = crate::credentials::sealed::Keyring::new(&next, &[]).expect("key");
        let sealed = next_ring.seal_str("s", "c");
        let during = resolve_secrets_keyring(&settings).expect("both keys");
        assert_eq!(during.open(&sealed, "c").expect("opens"), b"s");
        assert_eq!(during.current_id(), before.current_id());
        assert!(secrets_key_is_generated(&settings).is_some());
        let mut configured = settings.clone();
        configured.secrets_key = Some(next);
        assert!(secrets_key_is_generated(&configured).is_none());
    }

    #[test]
    fn generated_secrets_key_is_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings::with_database(DatabaseTarget::Sqlite(dir.path().join("g.db")));
        let first = resolve_secrets_keyring(&settings).expect("generated");
        let sealed = first.seal_str("s", "c");
        let second = resolve_secrets_keyring(&settings).expect("read back");
        assert_eq!(second.open(&sealed, "c").expect("opens"), b"s");
    }
}
