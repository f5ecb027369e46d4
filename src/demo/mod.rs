//! `granulo demo`: a realistic data set in an empty database, so that a newcomer sees a living
//! board in one command. Everything is written through the services, inside one transaction, by
//! the system actor `demo` (audited, every rule applied); times are relative to now and the
//! choices come from a fixed seed, so every load looks the same apart from the clock.
//!
//! Only the command line uses this module (tests/layers.rs).

mod plan;
mod seed;

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::auth::Role;
use crate::config::{self, DatabaseTarget, Settings};
use crate::error::{ApiError, ApiResult};
use crate::store::{self, DbConn};

/// The audit trail's name for everything the demo writes.
pub const ACTOR: &str = "demo";

/// What `seed` did.
pub enum Outcome {
    Seeded(Box<Seeded>),
    /// The database has donors or units: nothing was written. The demo's credentials file, when
    /// one is beside the database.
    NotEmpty {
        credentials_file: Option<PathBuf>,
    },
}

pub struct Seeded {
    pub accounts: Vec<Account>,
    /// Beside an SQLite database (mode 0600); PostgreSQL has no file.
    pub credentials_file: Option<PathBuf>,
    pub summary: Summary,
}

/// An account the demo created, with its generated password (no `Debug`: it is a secret).
pub struct Account {
    pub username: String,
    pub role: Role,
    pub password: String,
    /// The hospital code of a hospital account or system.
    pub hospital: Option<String>,
    /// A hospital system's client credentials (`username` is the client id, `password` the
    /// secret), for `POST /api/v1/auth/token`.
    pub client: bool,
}

impl Account {
    /// "technologist", "medical director", "hospital STM", "system STM".
    pub fn describe(&self) -> String {
        match (&self.hospital, self.client) {
            (Some(code), true) => format!("system {code}"),
            (Some(code), false) => format!("hospital {code}"),
            (None, _) => self.role.as_str().replace('_', " "),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub donors: usize,
    pub collections: usize,
    pub units: usize,
    pub patients: usize,
    pub requests: usize,
    pub open_alerts: usize,
    pub open_tasks: usize,
}

/// The sidecar file of the demo's accounts (SQLite only).
pub fn credentials_path(settings: &Settings) -> Option<PathBuf> {
    match &settings.database {
        DatabaseTarget::Sqlite(path) => Some(config::sidecar_path(path, "demo-credentials")),
        DatabaseTarget::Postgres(_) => None,
    }
}

/// Seeds the database when it has no donors and no units, then runs one alert scan; otherwise
/// writes nothing. Safe to run against a database another process serves: the check and the
/// data set are one transaction.
pub fn seed(conn: &mut DbConn, settings: &Settings) -> ApiResult<Outcome> {
    let file = credentials_path(settings);
    let started = std::time::Instant::now();
    let mut wrote_file = false;
    let result = store::write_tx(conn, |c| {
        if !is_empty(c)? {
            return Ok(None);
        }
        let (accounts, summary, expired_by) = seed::Seeder::new(c, settings)?.run()?;
        if let Some(path) = &file {
            // A file from a deleted database would be misleading: replace it.
            let _ = std::fs::remove_file(path);
            wrote_file = true;
            config::write_private_file(path, &credentials_text(&accounts))
                .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
        }
        Ok(Some((accounts, summary, expired_by)))
    });
    let (accounts, mut summary, expired_by) = match result {
        Ok(Some(done)) => done,
        Ok(None) => {
            return Ok(Outcome::NotEmpty {
                credentials_file: file.filter(|f| f.exists()),
            });
        }
        Err(e) => {
            if wrote_file && let Some(path) = &file {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
    };
    finish(conn, expired_by, &mut summary)?;
    let elapsed_ms = started.elapsed().as_millis();
    tracing::info!(?summary, elapsed_ms, "demo data set loaded");
    Ok(Outcome::Seeded(Box::new(Seeded {
        accounts,
        credentials_file: file,
        summary,
    })))
}

fn is_empty(conn: &mut DbConn) -> ApiResult<bool> {
    let donors = store::donors::list(conn, &Default::default(), 1)?;
    let units = store::units::list(conn, &Default::default(), 1)?;
    Ok(donors.is_empty() && units.is_empty())
}

/// Waits for the units seeded to expire meanwhile, then scans once, as `granulo alerts run`
/// does: expired units are marked, expiry and request alerts raised.
fn finish(conn: &mut DbConn, expired_by: DateTime<Utc>, summary: &mut Summary) -> ApiResult<()> {
    let wait = expired_by.signed_duration_since(Utc::now());
    if let Ok(wait) = wait.to_std() {
        std::thread::sleep(wait);
    }
    if crate::jobs::run_once(conn, &crate::jobs::holder_name(), Utc::now())?.is_none() {
        tracing::info!("the alert scan is running elsewhere; the demo's alerts follow from it");
    }
    let open = Some(crate::domain::alerts::AlertStatus::Open);
    summary.open_alerts = store::alerts::list(conn, open, None, None, 10_000)?.len();
    summary.open_tasks = store::tasks::open(conn)?.len();
    Ok(())
}

fn credentials_text(accounts: &[Account]) -> String {
    let mut out = String::from(
        "# granulo demo accounts. Staff sign in at /console/; hospital accounts and systems use the\n\
         # API and FHIR only (systems: POST /api/v1/auth/token with client_id and client_secret).\n\
         # who                  username / client id                 password / secret\n",
    );
    for a in accounts {
        out.push_str(&format!("{:<22} {:<36} {}\n", a.describe(), a.username, a.password));
    }
    out.trim_end().to_owned()
}
