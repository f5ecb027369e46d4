//! Persistence: one diesel connection type over SQLite and PostgreSQL, the r2d2 pool, embedded
//! migrations, and the transaction helpers every unit of work goes through.
//!
//! Query functions in the submodules take `&mut DbConn` so they compose inside one transaction;
//! they never decide anything clinical (that is `domain/`).

pub mod alerts;
pub mod allocations;
pub mod anc_results;
pub mod api_clients;
pub mod audit;
pub mod collections;
pub mod course_plans;
pub mod devices;
pub mod donors;
pub mod hospitals;
pub mod idempotency;
pub mod jobs;
pub mod label_prints;
pub mod limits;
pub mod matching;
pub mod metrics;
pub mod mfa;
pub mod patients;
pub mod policy;
pub mod requests;
pub mod schema;
pub mod sessions;
pub mod signing_keys;
mod stored;
pub mod tasks;
pub mod throttle;
pub mod units;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseTarget;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to whichever backend the configured URL names.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Postgres(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// Errors of the storage layer, before they are mapped to HTTP answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("no database connection available: {0}")]
    Pool(#[from] r2d2::PoolError),
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A sealed value that none of the configured secrets keys opens.
    #[error("{0}")]
    Unsealable(String),
}

/// r2d2 manager that builds the concrete variant from the URL scheme, so that a PostgreSQL
/// server that is down reports its real cause, and SQLite gets its per-connection pragmas.
#[derive(Debug, Clone)]
pub struct Manager {
    target: DatabaseTarget,
}

impl Manager {
    pub fn new(target: DatabaseTarget) -> Self {
        Self { target }
    }
}

/// Per-connection SQLite settings: WAL for concurrent readers, a busy timeout instead of
/// immediate "database is locked", enforced foreign keys (off by default in SQLite), and a
/// sync at every commit: with NORMAL an acknowledged allocation could vanish on power loss.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
     PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;";

pub fn establish(target: &DatabaseTarget) -> Result<DbConn, diesel::ConnectionError> {
    match target {
        DatabaseTarget::Postgres(url) => {
            use secrecy::ExposeSecret;
            let mut conn = diesel::PgConnection::establish(url.expose_secret())?;
            conn.batch_execute("SET TIME ZONE 'UTC'")
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(DbConn::Postgres(conn))
        }
        DatabaseTarget::Sqlite(path) => {
            let path = path.to_string_lossy();
            let mut conn = diesel::SqliteConnection::establish(&path)?;
            conn.batch_execute(SQLITE_PRAGMAS)
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(DbConn::Sqlite(conn))
        }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        establish(&self.target).map_err(r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1").map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        use diesel::r2d2::R2D2Connection;
        conn.is_broken()
    }
}

/// Build the pool. `checkout_timeout` bounds how long a request waits for a connection; when it
/// runs out the request answers 503 instead of hanging.
pub fn build_pool(target: &DatabaseTarget, max_size: u32, checkout_timeout: Duration) -> Result<Pool, StoreError> {
    // Fail fast with the real cause (wrong host, auth, missing file) before building the pool.
    establish(target)?;
    let pool = r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(checkout_timeout)
        .test_on_check_out(false)
        .event_handler(Box::new(PoolEvents))
        .build(Manager::new(target.clone()))?;
    Ok(pool)
}

/// Feeds checkout waits and timeouts to `/metrics`.
#[derive(Debug)]
struct PoolEvents;

impl r2d2::HandleEvent for PoolEvents {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        crate::metrics::observe_pool_wait(event.duration());
    }

    fn handle_timeout(&self, _event: r2d2::event::TimeoutEvent) {
        crate::metrics::count_pool_timeout();
    }
}

/// Apply every pending migration of the backend's tree; returns how many ran.
pub fn run_migrations(conn: &mut DbConn) -> Result<usize, StoreError> {
    let applied = match conn {
        DbConn::Postgres(pg) => pg
            .run_pending_migrations(POSTGRES_MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?
            .len(),
        DbConn::Sqlite(lite) => lite
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?
            .len(),
    };
    Ok(applied)
}

/// Run `f` in a read-write transaction. On SQLite it is `BEGIN IMMEDIATE`, which takes the
/// write lock up front: deferred transactions that upgrade later fail with "database is
/// locked" under concurrency instead of waiting for the busy timeout.
pub fn write_tx<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match conn {
        DbConn::Sqlite(lite) => AnsiTransactionManager::begin_transaction_sql(lite, "BEGIN IMMEDIATE")?,
        DbConn::Postgres(_) => <DbConn as Connection>::TransactionManager::begin_transaction(conn)?,
    }
    finish_tx(conn, f)
}

/// Run `f` in a read-only transaction whose statements all read one snapshot of the database
/// (PostgreSQL: `REPEATABLE READ`; SQLite in WAL mode: any read transaction).
pub fn snapshot_tx<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match conn {
        DbConn::Sqlite(lite) => AnsiTransactionManager::begin_transaction_sql(lite, "BEGIN")?,
        DbConn::Postgres(pg) => {
            AnsiTransactionManager::begin_transaction_sql(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?
        }
    }
    finish_tx(conn, f)
}

fn finish_tx<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match f(conn) {
        Ok(value) => {
            <DbConn as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(user_error) => match <DbConn as Connection>::TransactionManager::rollback_transaction(conn) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(user_error),
            Err(rollback_error) => Err(rollback_error.into()),
        },
    }
}

/// True when the error is a unique-constraint violation (mapped to 409 by callers).
pub fn is_unique_violation(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Current time as stored: UTC, truncated to microseconds (PostgreSQL's precision), so a value
/// read back equals the value written on both backends.
pub fn now() -> chrono::NaiveDateTime {
    truncate_micros(chrono::Utc::now().naive_utc())
}

pub fn truncate_micros(t: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
    use chrono::Timelike;
    let micros = t.nanosecond() / 1_000 * 1_000;
    t.with_nanosecond(micros).unwrap_or(t)
}
