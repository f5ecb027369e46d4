//! The `granulo` command line: `serve` (default), `demo`, `migrate`, `user create`,
//! `audit verify`, `alerts run`, `backup`.

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
    s.rate_limit_per_account = serve.rate_limit_per_account;
    s.rate_limit_per_address = serve.rate_limit_per_address;
    s.rate_limit_burst_seconds = serve.rate_limit_burst_seconds;
    s.max_streams_per_account = serve.max_streams_per_account;
    s.instance_heartbeat_secs = serve.instance_heartbeat_secs;
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

fn alerts_run(global: &GlobalArgs) -> ExitCode {
    let mut conn = match open(global) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match crate::jobs::run_once(&mut conn, &crate::jobs::holder_name(), chrono::Utc::now()) {
        Ok(Some(r)) => {
            println!(
                "alert scan: {} raised, {} escalated, {} resolved, {} units expired, {} ms",
                r.raised, r.escalated, r.resolved, r.expired, r.duration_ms
            );
            deliver(&mut conn)
        }
        Ok(None) => {
            println!("alert scan skipped: another run holds the lease");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Sends the webhook deliveries that are due (after a scan from cron), on the one connection.
fn deliver(conn: &mut store::DbConn) -> ExitCode {
    let now = chrono::Utc::now();
    let outgoing = match crate::services::webhooks::load_due(conn, now) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let system = actix_web::rt::System::new();
    let results = system
        .block_on(async move { crate::services::webhooks::send_all(&crate::jobs::webhook_client(), outgoing).await });
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
                println!(
                    "audit chain intact: {} rows, last hash {}",
                    report.rows_checked, report.last_hash
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
