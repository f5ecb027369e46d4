//! The `granulo` command line: `serve` (default), `demo`, `migrate`, `user create`,
//! `audit verify`, `alerts run`, `secrets rotate`, `keys rotate|list|retire`, `backup`.

use std::io::BufRead as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

use crate::auth::{Role, password};
use crate::config::{DatabaseTarget, LogFormat, Settings};
use crate::startup::{self, Application, Bootstrap, Prepared};
use crate::store::{self, StoreError, audit};

#[derive(Debug, Parser)]
#[command(name = "granulo", version, about = "Donor granulocyte management for blood banks")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// `sqlite://PATH` or `postgres://user@host:5432/db`.
    #[arg(
        long,
        env = "GRANULO_DATABASE_URL",
        default_value = "sqlite://granulo.db",
        global = true,
        hide_env_values = true
    )]
    pub database_url: String,
    /// tracing filter directive.
    #[arg(long, env = "GRANULO_LOG", default_value = "info", global = true)]
    pub log: String,
    #[arg(long, env = "GRANULO_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (the default).
    Serve(ServeArgs),
    /// Load a demo data set into an empty database (donors, units, requests, alerts), then serve
    /// it like `serve`, printing the console's address and accounts to sign in with.
    Demo(DemoArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Alert jobs.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Stored secrets (webhook secrets, signing keys, TOTP seeds), sealed under GRANULO_SECRETS_KEY.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Consistent online copy of the SQLite database (PostgreSQL: use pg_dump, see README).
    Backup {
        /// The file to create (refused if it exists).
        #[arg(long)]
        to: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// One alert scan (for cron): exits 0 when it ran or another run held the lease, 1 on error.
    Run,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal every stored secret under the current key, in one transaction. With a configured
    /// key: set the new one as GRANULO_SECRETS_KEY and the old one as GRANULO_SECRETS_KEY_PREVIOUS.
    /// On SQLite with the generated key file and nothing set: generates the new key itself.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new random key the signer; the old one keeps verifying until every token it
    /// signed has expired (60 min + 30 s), so nobody is signed out.
    Rotate,
    /// The keys: kid, created, and whether it signs, verifies until a time, or has retired.
    List,
    /// Stop a key that no longer signs from verifying now (it may have leaked); whoever holds a
    /// token it signed refreshes or signs in again.
    Retire {
        #[arg(long)]
        kid: String,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed the database (when it is empty), print the accounts and exit without serving.
    #[arg(long)]
    pub seed_only: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    #[arg(long, env = "GRANULO_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    #[arg(long, env = "GRANULO_DB_POOL_SIZE", default_value_t = 8)]
    pub pool_size: u32,
    #[arg(long, env = "GRANULO_DB_CHECKOUT_TIMEOUT_MS", default_value_t = 3000)]
    pub db_checkout_timeout_ms: u64,
    #[arg(long, env = "GRANULO_ACCESS_TOKEN_MINUTES", default_value_t = 15)]
    pub access_token_minutes: i64,
    #[arg(long, env = "GRANULO_REFRESH_TOKEN_HOURS", default_value_t = 12)]
    pub refresh_token_hours: i64,
    #[arg(long, env = "GRANULO_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: i64,
    #[arg(long, env = "GRANULO_LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 30)]
    pub login_max_failures_per_address: i64,
    #[arg(long, env = "GRANULO_LOGIN_WINDOW_MINUTES", default_value_t = 15)]
    pub login_window_minutes: i64,
    #[arg(long, env = "GRANULO_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// Mark the console's session cookie `Secure` (behind a TLS proxy).
    #[arg(long, env = "GRANULO_COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,
    #[arg(long, env = "GRANULO_WORKERS", default_value_t = 0)]
    pub workers: usize,
    #[arg(long, env = "GRANULO_ALERT_INTERVAL_SECS", default_value_t = 60)]
    pub alert_interval_secs: u64,
    #[arg(long, env = "GRANULO_FIN", default_value = "A9999")]
    pub fin: String,
    #[arg(long, env = "GRANULO_FACILITY_NAME", default_value = "granulo blood bank")]
    pub facility_name: String,
    /// The facility's IANA time zone (labels, ISBT 128 expiry, pooled expiry).
    #[arg(long, env = "GRANULO_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// Comma-separated hosts and CIDRs webhooks may reach although internal, and over http://.
    #[arg(long, env = "GRANULO_WEBHOOK_ALLOW", default_value = "")]
    pub webhook_allow: String,
    /// Requests per minute one account may make (all instances together); 0 turns it off.
    #[arg(long, env = "GRANULO_RATE_LIMIT_PER_ACCOUNT", default_value_t = 1200)]
    pub rate_limit_per_account: u32,
    /// Requests per minute one client address may make (all instances together); 0 turns it off.
    #[arg(long, env = "GRANULO_RATE_LIMIT_PER_ADDRESS", default_value_t = 3000)]
    pub rate_limit_per_address: u32,
    /// Seconds of the rate a caller may save up and spend at once.
    #[arg(long, env = "GRANULO_RATE_LIMIT_BURST_SECONDS", default_value_t = 10)]
    pub rate_limit_burst_seconds: u32,
    /// Open event streams per account (API and console together, all instances).
    #[arg(long, env = "GRANULO_MAX_STREAMS_PER_ACCOUNT", default_value_t = 10)]
    pub max_streams_per_account: u32,
    /// How often an instance reports itself alive (the rate limits are shared among live ones).
    #[arg(long, env = "GRANULO_INSTANCE_HEARTBEAT_SECS", default_value_t = 10)]
    pub instance_heartbeat_secs: u64,
    /// A second address serving only /metrics, without a token, for the operator's network
    /// (e.g. 127.0.0.1:9464). Unset: no second listener.
    #[arg(long, env = "GRANULO_METRICS_BIND")]
    pub metrics_bind: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Hospital code or id (role `hospital` only).
        #[arg(long)]
        hospital: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; exits 1 and names the first bad row when it is broken.
    Verify,
}

/// Secrets come from the environment only, never from flags (which `ps` shows).
fn env_secret(name: &str) -> Option<SecretString> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
}

pub fn settings_from(global: &GlobalArgs, serve: &ServeArgs) -> Result<Settings, crate::config::ConfigError> {
    let mut s = Settings::with_database(DatabaseTarget::parse(&global.database_url)?);
    s.bind.clone_from(&serve.bind);
    s.jwt_secret = env_secret("GRANULO_JWT_SECRET");
    s.secrets_key = env_secret("GRANULO_SECRETS_KEY");
    s.secrets_key_file = std::env::var_os("GRANULO_SECRETS_KEY_FILE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from);
    s.secrets_key_previous = env_secret("GRANULO_SECRETS_KEY_PREVIOUS");
    s.admin_username = std::env::var("GRANULO_ADMIN_USERNAME").ok().filter(|v| !v.is_empty());
    s.admin_password = env_secret("GRANULO_ADMIN_PASSWORD");
    s.pool_size = serve.pool_size;
    s.db_checkout_timeout_ms = serve.db_checkout_timeout_ms;
    s.access_token_minutes = serve.access_token_minutes;
    s.refresh_token_hours = serve.refresh_token_hours;
    s.login_max_failures = serve.login_max_failures;
    s.login_max_failures_per_address = serve.login_max_failures_per_address;
    s.login_window_minutes = serve.login_window_minutes;
    s.trust_forwarded_for = serve.trust_forwarded_for;
    s.cookie_secure = serve.cookie_secure;
    s.workers = serve.workers;
    s.alert_interval_secs = serve.alert_interval_secs;
    s.fin = serve.fin.trim().to_ascii_uppercase();
    s.facility_name = serve.facility_name.trim().to_owned();
    s.timezone = crate::config::parse_timezone(&serve.timezone)?;
    s.webhook_allow = crate::domain::destinations::AllowList::parse(&serve.webhook_allow)
        .map_err(|e| crate::config::ConfigError::new(format!("GRANULO_WEBHOOK_ALLOW: {e}")))?;
    s.rate_limit_per_account = serve.rate_limit_per_account;
    s.rate_limit_per_address = serve.rate_limit_per_address;
    s.rate_limit_burst_seconds = serve.rate_limit_burst_seconds;
    s.max_streams_per_account = serve.max_streams_per_account;
    s.instance_heartbeat_secs = serve.instance_heartbeat_secs;
    s.metrics_bind = serve.metrics_bind.clone().filter(|b| !b.trim().is_empty());
    s.metrics_token = env_secret("GRANULO_METRICS_TOKEN");
    Ok(s)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("granulo: {msg}");
    ExitCode::FAILURE
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => serve(&cli.global, &ServeArgs::parse_defaults()),
        Some(Command::Serve(args)) => serve(&cli.global, &args),
        Some(Command::Demo(args)) => demo(&cli.global, &args),
        Some(Command::Migrate) => migrate(&cli.global),
        Some(Command::User(UserCommand::Create {
            username,
            role,
            hospital,
            password_stdin: _,
        })) => user_create(&cli.global, &username, role, hospital.as_deref()),
        Some(Command::Audit(AuditCommand::Verify)) => audit_verify(&cli.global),
        Some(Command::Alerts(AlertsCommand::Run)) => alerts_run(&cli.global),
        Some(Command::Secrets(SecretsCommand::Rotate)) => secrets_rotate(&cli.global),
        Some(Command::Keys(KeysCommand::Rotate)) => keys_rotate(&cli.global),
        Some(Command::Keys(KeysCommand::List)) => keys_list(&cli.global),
        Some(Command::Keys(KeysCommand::Retire { kid })) => keys_retire(&cli.global, &kid),
        Some(Command::Backup { to }) => backup(&cli.global, &to),
    }
}

impl ServeArgs {
    /// Defaults and environment, as if `serve` had been given with no flags.
    fn parse_defaults() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::try_parse_from(["granulo"]).map(|o| o.serve).unwrap_or_default()
    }
}

fn serve(global: &GlobalArgs, args: &ServeArgs) -> ExitCode {
    let settings = match settings_from(global, args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let prepared = match startup::prepare(&settings) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    listen(settings, prepared, None)
}

/// `granulo demo`: the data set goes in before the server listens (and before the alert
/// scheduler starts), then the database is served as `serve` serves it.
fn demo(global: &GlobalArgs, args: &DemoArgs) -> ExitCode {
    let settings = match settings_from(global, &args.serve) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let prepared = match startup::prepare(&settings) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let outcome = match prepared.pool.get() {
        Ok(mut conn) => crate::demo::seed(&mut conn, &settings),
        Err(e) => return fail(e),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return fail(format!("the demo data set could not be loaded: {e}")),
    };
    if args.seed_only {
        print_demo(&outcome, None);
        print_bootstrap(&prepared.bootstrap, None);
        return ExitCode::SUCCESS;
    }
    listen(settings, prepared, Some(&outcome))
}

fn listen(settings: Settings, prepared: Prepared, demo: Option<&crate::demo::Outcome>) -> ExitCode {
    let database = settings.database.display();
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let app = match Application::start(settings, prepared) {
            Ok(app) => app,
            Err(e) => return fail(e),
        };
        let bind = app.state.settings.bind.clone();
        let host = bind.rsplit_once(':').map_or(bind.as_str(), |(h, _)| h).to_owned();
        let base = format!("http://{host}:{}", app.port());
        tracing::info!(%database, address = %base, "granulo listening");
        if let Some(port) = app.metrics_port() {
            tracing::info!(port, "/metrics served without a token on GRANULO_METRICS_BIND");
        }
        println!("granulo is listening on {base} (database {database})");
        println!("  Console:   {base}/console/");
        println!("  API docs:  {base}/docs/");
        if let Some(outcome) = demo {
            print_demo(outcome, Some(&base));
        }
        print_bootstrap(&app.bootstrap, Some(&base));
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}

/// What the operator needs about the first account; `base` when the server listens.
fn print_bootstrap(bootstrap: &Bootstrap, base: Option<&str>) {
    match (bootstrap, base) {
        (
            Bootstrap::Generated {
                username,
                password_file,
            },
            Some(base),
        ) => {
            println!("  First start: created the admin account '{username}'.");
            println!(
                "  Its password is in {} (readable only by you).",
                password_file.display()
            );
            println!("  Sign in:   curl -s {base}/api/v1/auth/login -H 'content-type: application/json' \\");
            println!(
                "               -d '{{\"username\":\"{username}\",\"password\":\"'\"$(cat {})\"'\"}}'",
                password_file.display()
            );
            println!("  Then change it: PATCH /api/v1/users/{{id}} {{\"password\": …}} and delete the file.");
        }
        (
            Bootstrap::Generated {
                username,
                password_file,
            },
            None,
        ) => {
            println!(
                "  First start: created the admin account '{username}'; its password is in {} (readable only by you).",
                password_file.display()
            );
        }
        (Bootstrap::FromEnvironment { username }, _) => {
            println!("  First start: created the admin account '{username}' from GRANULO_ADMIN_USERNAME.");
            if let Some(base) = base {
                println!("  Sign in:   POST {base}/api/v1/auth/login {{\"username\", \"password\"}}");
            }
        }
        (Bootstrap::NoUsers, _) => {
            println!("  There are no accounts yet: set GRANULO_ADMIN_USERNAME and GRANULO_ADMIN_PASSWORD,");
            println!("  or run: granulo user create --username NAME --role admin --password-stdin");
        }
        (Bootstrap::NotNeeded, Some(base)) => {
            println!("  Sign in:   POST {base}/api/v1/auth/login {{\"username\", \"password\"}}");
        }
        (Bootstrap::NotNeeded, None) => {}
    }
}

/// The demo's accounts (or why nothing was loaded); `base` when the server listens.
fn print_demo(outcome: &crate::demo::Outcome, base: Option<&str>) {
    use crate::demo::Outcome;
    let console = base.map_or_else(|| "the console (/console/)".to_owned(), |b| format!("{b}/console/"));
    match outcome {
        Outcome::Seeded(seeded) => {
            let s = &seeded.summary;
            println!(
                "  Demo data: {} donors, {} collections, {} units, {} patients, {} requests; {} alerts and {} tasks open.",
                s.donors, s.collections, s.units, s.patients, s.requests, s.open_alerts, s.open_tasks
            );
            println!("  Sign in to {console} as:");
            for a in seeded.accounts.iter().filter(|a| !a.client) {
                println!("    {:<18} {:<12} {}", a.describe(), a.username, a.password);
            }
            match &seeded.credentials_file {
                Some(file) => println!("  These are also in {} (readable only by you).", file.display()),
                None => println!("  Keep them: they are shown only now (a PostgreSQL database has no file beside it)."),
            }
        }
        Outcome::NotEmpty { credentials_file } => {
            println!("  Demo data: the database already has donors or units, so nothing was added.");
            match credentials_file {
                Some(file) => println!(
                    "  The demo accounts, if this database is the demo's, are in {}.",
                    file.display()
                ),
                None => println!("  Sign in with its existing accounts."),
            }
        }
    }
}

fn open(global: &GlobalArgs) -> Result<store::DbConn, String> {
    let target = DatabaseTarget::parse(&global.database_url).map_err(|e| e.to_string())?;
    let mut conn = store::establish(&target).map_err(|e| format!("cannot connect to {}: {e}", target.display()))?;
    store::run_migrations(&mut conn).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn migrate(global: &GlobalArgs) -> ExitCode {
    let target = match DatabaseTarget::parse(&global.database_url) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let mut conn = match store::establish(&target) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot connect to {}: {e}", target.display())),
    };
    match store::run_migrations(&mut conn) {
        Ok(n) => {
            println!("{n} migration(s) applied to {}", target.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn user_create(global: &GlobalArgs, username: &str, role: Role, hospital: Option<&str>) -> ExitCode {
    let username = match crate::accounts::normalize_username(username) {
        Ok(u) => u,
        Err(m) => return fail(format!("--username {m}")),
    };
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        return fail(format!("cannot read the password from standard input: {e}"));
    }
    let pw = line.trim_end_matches(['\n', '\r']).to_owned();
    if let Some(m) = password::policy_violation(&pw, &username) {
        return fail(format!("password {m}"));
    }
    let mut conn = match open(global) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let hospital_id = match hospital {
        None => None,
        Some(h) => {
            let found = match h.parse::<i64>() {
                Ok(id) => store::hospitals::find(&mut conn, id),
                Err(_) => store::hospitals::find_by_code(&mut conn, &h.trim().to_uppercase()),
            };
            match found {
                Ok(Some(found)) => Some(found.id),
                Ok(None) => return fail(format!("no hospital {h}")),
                Err(e) => return fail(e),
            }
        }
    };
    let hash = match password::hash(&pw) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let account = crate::accounts::NewAccount {
        username,
        password_hash: hash,
        role,
        hospital_id,
    };
    let actor = audit::Actor::system("cli");
    match store::write_tx(&mut conn, |c| crate::accounts::create_user(c, &actor, &account)) {
        Ok(user) => {
            println!("created {} '{}' (id {})", user.role, user.username, user.id);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The database and the secrets keyring, as `serve` would find them; on a database that was
/// never served the configured signing key is stored first (as `serve` does).
fn open_keys(global: &GlobalArgs) -> Result<(store::DbConn, crate::credentials::sealed::Keyring), String> {
    let settings = settings_from(global, &ServeArgs::parse_defaults()).map_err(|e| e.to_string())?;
    let ring = crate::config::resolve_secrets_keyring(&settings).map_err(|e| e.to_string())?;
    let mut conn = open(global)?;
    let stored = store::signing_keys::list(&mut conn).map_err(|e| e.to_string())?;
    if stored.is_empty() {
        let secret = crate::config::resolve_jwt_secret(&settings).map_err(|e| e.to_string())?;
        let actor = audit::Actor::system("cli");
        store::write_tx(&mut conn, |c| store::signing_keys::seed(c, &ring, &secret, &actor))
            .map_err(|e| e.to_string())?;
    }
    Ok((conn, ring))
}

fn keys_rotate(global: &GlobalArgs) -> ExitCode {
    let (mut conn, ring) = match open_keys(global) {
        Ok(opened) => opened,
        Err(e) => return fail(e),
    };
    let actor = audit::Actor::system("cli");
    let rotated = store::write_tx(&mut conn, |c| {
        // Every stored key must open before one is added: a wrong GRANULO_SECRETS_KEY here
        // would leave instances unable to read the new signer.
        store::signing_keys::load(c, &ring)?;
        store::signing_keys::rotate(c, &ring, &actor, store::now())
    });
    match rotated {
        Ok(r) => {
            println!("new signing key {} (signs from now on)", r.new_kid);
            println!(
                "key {} keeps verifying until {} and then retires",
                r.old_kid,
                r.old_retires_at
                    .and_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn keys_retire(global: &GlobalArgs, kid: &str) -> ExitCode {
    let (mut conn, _) = match open_keys(global) {
        Ok(opened) => opened,
        Err(e) => return fail(e),
    };
    let actor = audit::Actor::system("cli");
    match store::write_tx(&mut conn, |c| {
        store::signing_keys::retire(c, kid.trim(), &actor, store::now())
    }) {
        Ok(()) => {
            println!(
                "key {} no longer verifies (every instance stops accepting it within a minute)",
                kid.trim()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn keys_list(global: &GlobalArgs) -> ExitCode {
    let (mut conn, _) = match open_keys(global) {
        Ok(opened) => opened,
        Err(e) => return fail(e),
    };
    let rows = match store::signing_keys::list(&mut conn) {
        Ok(rows) => rows,
        Err(e) => return fail(e),
    };
    let now = store::now();
    let time = |t: chrono::NaiveDateTime| t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    println!("{:<16}  {:<20}  {:<10}  state", "kid", "created", "by");
    for row in rows {
        let state = match row.retire_after {
            None => "signer".to_owned(),
            Some(t) if t > now => format!("verifies until {}", time(t)),
            Some(t) => format!("retired {}", time(t)),
        };
        println!(
            "{:<16}  {:<20}  {:<10}  {state}",
            row.kid,
            time(row.created_at),
            row.created_by
        );
    }
    ExitCode::SUCCESS
}

fn alerts_run(global: &GlobalArgs) -> ExitCode {
    // The keyring and the webhook allow-list as `serve` resolves them.
    let settings = match settings_from(global, &ServeArgs::parse_defaults()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let ring = match crate::config::resolve_secrets_keyring(&settings) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let outbound = match crate::services::webhooks::Outbound::new(&settings) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let mut conn = match open(global) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = store::write_tx(&mut conn, |c| crate::services::secrets::seal_plaintext(c, &ring)) {
        return fail(e);
    }
    match crate::jobs::run_once(&mut conn, &crate::jobs::holder_name(), chrono::Utc::now()) {
        Ok(Some(r)) => {
            println!(
                "alert scan: {} raised, {} escalated, {} resolved, {} units expired, {} ms",
                r.raised, r.escalated, r.resolved, r.expired, r.duration_ms
            );
            deliver(&mut conn, &ring, &outbound)
        }
        Ok(None) => {
            println!("alert scan skipped: another run holds the lease");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Sends the webhook deliveries that are due (after a scan from cron), on the one connection.
fn deliver(
    conn: &mut store::DbConn,
    ring: &crate::credentials::sealed::Keyring,
    outbound: &crate::services::webhooks::Outbound,
) -> ExitCode {
    let now = chrono::Utc::now();
    let outgoing = match crate::services::webhooks::load_due(conn, ring, now) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let system = actix_web::rt::System::new();
    let results = system.block_on(crate::services::webhooks::send_all(outbound, outgoing));
    match crate::services::webhooks::record(conn, results, now) {
        Ok(r) => {
            println!(
                "webhooks: {} delivered, {} failed (retried later)",
                r.delivered, r.failed
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `granulo secrets rotate`. With a configured key (`GRANULO_SECRETS_KEY` or `_FILE`, always on
/// PostgreSQL) the operator has set the new key and the old one as `GRANULO_SECRETS_KEY_PREVIOUS`:
/// this re-seals. With the generated key file (SQLite, nothing set) it makes the next key itself,
/// crash-safe: `<db>.secrets-key.next` is written first (start-up loads it as an opening key),
/// the re-sealing commits, then `.next` replaces `<db>.secrets-key`. Run again after a crash: a
/// leftover `.next` is reused, never replaced.
fn secrets_rotate(global: &GlobalArgs) -> ExitCode {
    use secrecy::ExposeSecret as _;
    let settings = match settings_from(global, &ServeArgs::parse_defaults()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let generated = crate::config::secrets_key_is_generated(&settings);
    let (ring, files) = match &generated {
        None => match crate::config::resolve_secrets_keyring(&settings) {
            Ok(r) => (r, None),
            Err(e) => return fail(e),
        },
        Some(db) => {
            let key_file = crate::config::sidecar_path(db, crate::config::SECRETS_KEY_SUFFIX);
            let next_file = crate::config::sidecar_path(db, crate::config::SECRETS_KEY_NEXT_SUFFIX);
            let old = match crate::config::read_key_file(&key_file) {
                Ok(Some(k)) => k,
                Ok(None) => {
                    return fail(format!(
                        "{} does not exist: nothing is sealed under it",
                        key_file.display()
                    ));
                }
                Err(e) => return fail(e),
            };
            let next = match crate::config::read_key_file(&next_file) {
                Ok(Some(k)) => k,
                Ok(None) => {
                    let k = crate::config::generate_key();
                    if let Err(e) = crate::config::write_private_file(&next_file, k.expose_secret()) {
                        return fail(format!("cannot write {}: {e}", next_file.display()));
                    }
                    k
                }
                Err(e) => return fail(e),
            };
            let previous: Vec<SecretString> = std::iter::once(old)
                .chain(settings.secrets_key_previous.iter().cloned())
                .collect();
            match crate::credentials::sealed::Keyring::new(&next, &previous) {
                Ok(r) => (r, Some((next_file, key_file))),
                Err(e) => return fail(e),
            }
        }
    };
    let mut conn = match open(global) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let counts = match store::write_tx(&mut conn, |c| crate::services::secrets::reseal_all(c, &ring)) {
        Ok(c) => c,
        Err(e) => return fail(format!("nothing was re-sealed: {e}")),
    };
    if let Some((next_file, key_file)) = files
        && let Err(e) = replace_file(&next_file, &key_file)
    {
        return fail(format!(
            "the secrets were re-sealed under {}, but {} could not replace {}: {e}; start-up still \
             opens them with it; run `granulo secrets rotate` again to finish",
            next_file.display(),
            next_file.display(),
            key_file.display()
        ));
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    println!("secrets re-sealed under key {}: {total}", ring.current_id());
    for (kind, n) in &counts {
        println!("  {kind}: {n}");
    }
    if generated.is_some() {
        println!("  the new key is in the key file; the previous one is gone");
    } else {
        println!("  now remove GRANULO_SECRETS_KEY_PREVIOUS and restart every instance");
    }
    ExitCode::SUCCESS
}

/// Atomic `rename`, then the directory synced so the rename survives a crash.
fn replace_file(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `VACUUM INTO` writes a transactionally consistent copy while the service keeps running
/// (readers and writers are not blocked for long in WAL mode).
fn backup(global: &GlobalArgs, to: &std::path::Path) -> ExitCode {
    use diesel::RunQueryDsl as _;
    let target = match DatabaseTarget::parse(&global.database_url) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    if matches!(target, DatabaseTarget::Postgres(_)) {
        return fail("backups of PostgreSQL are taken with pg_dump (see the README)");
    }
    if to.exists() {
        return fail(format!("{} exists; choose a new file", to.display()));
    }
    let Some(path) = to.to_str() else {
        return fail("the backup path must be valid UTF-8");
    };
    let mut conn = match store::establish(&target) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot open {}: {e}", target.display())),
    };
    // A string literal: single quotes doubled (VACUUM INTO takes no bind parameters).
    let sql = format!("VACUUM INTO '{}'", path.replace('\'', "''"));
    match diesel::sql_query(sql).execute(&mut conn) {
        Ok(_) => {
            println!("backup written to {}", to.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("backup failed: {e}")),
    }
}

fn audit_verify(global: &GlobalArgs) -> ExitCode {
    let mut conn = match open(global) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match audit::verify(&mut conn).map_err(StoreError::from) {
        Ok(report) => match report.first_bad {
            None => {
                let heads: Vec<String> = report
                    .heads
                    .iter()
                    .map(|(lane, hash)| format!("lane {lane} {hash}"))
                    .collect();
                println!(
                    "audit chain intact: {} rows in {} lane(s), last hash of each: {}",
                    report.rows_checked,
                    report.heads.len(),
                    heads.join(", ")
                );
                ExitCode::SUCCESS
            }
            Some(bad) => {
                println!(
                    "audit chain BROKEN at row {}: {} ({} rows before it verified)",
                    bad.id, bad.problem, report.rows_checked
                );
                ExitCode::FAILURE
            }
        },
        Err(e) => fail(e),
    }
}
