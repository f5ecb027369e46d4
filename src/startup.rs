//! Building the application: database, migrations, keys, bootstrap admin, HTTP server. Shared by
//! `granulo serve` and the integration tests (which bind port 0).

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{Compress, DefaultHeaders, ErrorHandlers};
use actix_web::{App, HttpServer, web};
use secrecy::ExposeSecret;
use tracing_actix_web::TracingLogger;

use crate::auth::jwt::{JwtKeys, KeySet};
use crate::auth::password;
use crate::config::{self, ConfigError, DatabaseTarget, Settings};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{self, Pool, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("bootstrap admin: {0}")]
    Bootstrap(String),
    #[error("stored secrets: {0}")]
    Secrets(String),
    #[error("signing keys: {0}")]
    Keys(#[from] store::signing_keys::KeysError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// What start-up did about the first account, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Users already exist.
    NotNeeded,
    /// Created from `GRANULO_ADMIN_USERNAME` / `GRANULO_ADMIN_PASSWORD`.
    FromEnvironment { username: String },
    /// Embedded default, nothing configured: a random password was written to this file.
    Generated {
        username: String,
        password_file: std::path::PathBuf,
    },
    /// PostgreSQL with no users and nothing configured.
    NoUsers,
}

/// Open the pool and bring the schema up to date.
pub fn open_database(settings: &Settings) -> Result<Pool, StartupError> {
    let pool = store::build_pool(
        &settings.database,
        settings.pool_size,
        std::time::Duration::from_millis(settings.db_checkout_timeout_ms),
    )?;
    let mut conn = pool.get().map_err(StoreError::from)?;
    let applied = store::run_migrations(&mut conn)?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(pool)
}

fn bootstrap(settings: &Settings, pool: &Pool) -> Result<Bootstrap, StartupError> {
    let err = |e: ApiError| StartupError::Bootstrap(e.to_string());
    let mut conn = pool.get().map_err(StoreError::from)?;
    if store::users::count(&mut conn).map_err(StoreError::from)? > 0 {
        return Ok(Bootstrap::NotNeeded);
    }
    let (username, password, generated_file) = match (&settings.admin_username, &settings.admin_password) {
        (Some(u), Some(p)) => {
            let username = crate::accounts::normalize_username(u)
                .map_err(|m| StartupError::Bootstrap(format!("GRANULO_ADMIN_USERNAME {m}")))?;
            if let Some(m) = password::policy_violation(p.expose_secret(), &username) {
                return Err(StartupError::Bootstrap(format!("GRANULO_ADMIN_PASSWORD {m}")));
            }
            (username, p.expose_secret().to_owned(), None)
        }
        _ => match &settings.database {
            DatabaseTarget::Sqlite(path) => {
                let mut bytes = [0u8; 18];
                rand::fill(&mut bytes);
                let generated = {
                    use base64::Engine as _;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
                };
                let file = config::sidecar_path(path, "admin-password");
                // An old file from a deleted database would be misleading: replace it.
                let _ = std::fs::remove_file(&file);
                config::write_private_file(&file, &generated)
                    .map_err(|e| StartupError::Bootstrap(format!("cannot write {}: {e}", file.display())))?;
                ("admin".to_owned(), generated, Some(file))
            }
            DatabaseTarget::Postgres(_) => return Ok(Bootstrap::NoUsers),
        },
    };
    let hash = password::hash(&password).map_err(|e| StartupError::Bootstrap(e.to_string()))?;
    let created = store::write_tx(&mut conn, |c| crate::accounts::bootstrap_admin(c, &username, &hash)).map_err(err)?;
    Ok(match (created, generated_file) {
        (None, _) => Bootstrap::NotNeeded,
        (Some(_), Some(password_file)) => Bootstrap::Generated {
            username,
            password_file,
        },
        (Some(_), None) => Bootstrap::FromEnvironment { username },
    })
}

/// Secrets an earlier release stored in plain text are sealed before anything serves.
fn seal_stored_secrets(pool: &Pool, ring: &crate::credentials::sealed::Keyring) -> Result<(), StartupError> {
    let mut conn = pool.get().map_err(StoreError::from)?;
    let sealed = store::write_tx(&mut conn, |c| crate::services::secrets::seal_plaintext(c, ring))
        .map_err(|e| StartupError::Secrets(e.to_string()))?;
    if sealed > 0 {
        tracing::info!(sealed, "webhook secrets stored in plain text were sealed");
    }
    Ok(())
}

/// The database opened and migrated, the signing keys read and the first account seen to:
/// everything `serve` does before it listens (`demo` seeds the data set at this point).
pub struct Prepared {
    pub pool: Pool,
    pub bootstrap: Bootstrap,
    keys: KeySet,
    pub secrets: Arc<crate::credentials::sealed::Keyring>,
}

pub fn prepare(settings: &Settings) -> Result<Prepared, StartupError> {
    settings.validate()?;
    let secret = config::resolve_jwt_secret(settings)?;
    let secrets = Arc::new(config::resolve_secrets_keyring(settings)?);
    let pool = open_database(settings)?;
    seal_stored_secrets(&pool, &secrets)?;
    let keys = signing_keys(&pool, &secrets, &secret)?;
    let bootstrap = bootstrap(settings, &pool)?;
    Ok(Prepared {
        pool,
        bootstrap,
        keys,
        secrets,
    })
}

/// The stored signing keys; on the first start the configured key becomes the first of them.
fn signing_keys(
    pool: &Pool,
    ring: &crate::credentials::sealed::Keyring,
    configured: &secrecy::SecretString,
) -> Result<KeySet, StartupError> {
    let mut conn = pool.get().map_err(StoreError::from)?;
    let actor = store::audit::Actor::system("startup");
    let seeded = store::write_tx(&mut conn, |c| {
        store::signing_keys::seed(c, ring, configured, &actor).map_err(StoreError::from)
    })?;
    if let Some(kid) = seeded {
        tracing::info!(%kid, "the configured signing key is stored as the first key");
    }
    Ok(store::signing_keys::load(&mut conn, ring)?)
}

/// A built, bound, not yet running application.
pub struct Application {
    port: u16,
    /// The port of the `GRANULO_METRICS_BIND` listener, when there is one.
    metrics_port: Option<u16>,
    server: Server,
    pub bootstrap: Bootstrap,
    pub state: AppState,
}

impl Application {
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let prepared = prepare(&settings)?;
        Self::start(settings, prepared)
    }

    /// Binds and starts serving a prepared database.
    pub fn start(settings: Settings, prepared: Prepared) -> Result<Self, StartupError> {
        let Prepared {
            pool,
            bootstrap,
            keys,
            secrets,
        } = prepared;
        let state = AppState {
            pool,
            jwt: JwtKeys::stored(keys, Arc::clone(&secrets)),
            secrets,
            dummy_password_hash: Arc::from(password::dummy_hash()),
            limits: Arc::new(crate::state::Limits::new(&settings)),
            donor_index: Arc::default(),
            settings: Arc::new(settings),
        };
        let addr = state.settings.bind.clone();
        let listener = TcpListener::bind(&addr).map_err(|source| StartupError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?
            .port();
        // Counted once before serving, so a second instance enforces its share from the start
        // (the first learns of it at its next heartbeat).
        let beat = std::time::Duration::from_secs(state.settings.instance_heartbeat_secs);
        if let Ok(mut conn) = state.pool.get()
            && let Err(e) = crate::services::limits::heartbeat(&mut conn, &state.limits, beat)
        {
            tracing::warn!(error = %e, "first instance heartbeat failed");
        }
        let server = run(listener, state.clone())?;
        let metrics_port = match state.settings.metrics_bind.clone() {
            Some(addr) => Some(run_metrics(&addr, state.clone())?),
            None => None,
        };
        crate::services::limits::spawn_heartbeat(state.pool.clone(), Arc::clone(&state.limits), beat);
        if state.settings.alert_interval_secs > 0 {
            let outbound = crate::services::webhooks::Outbound::new(&state.settings).map_err(ConfigError::new)?;
            crate::jobs::spawn_scheduler(
                state.pool.clone(),
                std::time::Duration::from_secs(state.settings.alert_interval_secs),
                outbound,
                state.secrets.clone(),
            );
        }
        Ok(Self {
            port,
            metrics_port,
            server,
            bootstrap,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    pub fn into_server(self) -> Server {
        self.server
    }
}

fn run(listener: TcpListener, state: AppState) -> Result<Server, StartupError> {
    let workers = state.settings.workers;
    let pool_size = state.settings.pool_size;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(crate::extract::path_config())
            .app_data(crate::extract::query_config())
            .app_data(crate::extract::json_config())
            // Innermost: no answer to a bearer caller leaves before its session check passed.
            .wrap(actix_web::middleware::from_fn(
                crate::routes::session_gate::session_gate,
            ))
            .wrap(actix_web::middleware::from_fn(crate::extract::refuse_nul))
            .wrap(ErrorHandlers::new().default_handler(crate::extract::normalize_error))
            .wrap(Compress::default())
            .wrap(
                // Answers carry patient data: no cache keeps them, no page frames them.
                // Handlers that set their own Cache-Control (the event stream) keep it.
                DefaultHeaders::new()
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "no-referrer"))
                    .add(("Cache-Control", "no-store"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Content-Security-Policy", "frame-ancestors 'none'")),
            )
            // Outside every other middleware but the log: a limited request costs a bucket
            // lookup and reaches nothing else (no handler, no idempotency store).
            .wrap(actix_web::middleware::from_fn(crate::routes::limits::rate_limit))
            // Outside the rate limit, so that refused requests are counted too.
            .wrap(actix_web::middleware::from_fn(crate::telemetry::record_http))
            .wrap(TracingLogger::<crate::telemetry::RequestSpan>::new())
            .configure(crate::routes::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::not_found("route"))
            }))
    })
    .shutdown_timeout(10)
    // Every blocking task of a worker holds a pool connection (`AppState::db`): threads past
    // the pool size would only wait for one, each adding a stack and allocator state.
    .worker_max_blocking_threads(usize::try_from(pool_size).unwrap_or(1).max(1));
    if workers > 0 {
        server = server.workers(workers);
    }
    let server = server
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: "listener".to_owned(),
            source,
        })?
        .run();
    Ok(server)
}

/// The `GRANULO_METRICS_BIND` listener: `/metrics` without a token and nothing else, on one
/// worker, running beside the main server. Returns its port.
fn run_metrics(addr: &str, state: AppState) -> Result<u16, StartupError> {
    let bind_error = |source| StartupError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(ErrorHandlers::new().default_handler(crate::extract::normalize_error))
            .wrap(DefaultHeaders::new().add(("Cache-Control", "no-store")))
            .service(web::resource("/metrics").route(web::get().to(crate::routes::metrics::open_scrape)))
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::not_found("route"))
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(bind_error)?
    .run();
    actix_web::rt::spawn(server);
    Ok(port)
}
