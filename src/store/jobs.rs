//! Job leases: one row per job; a run holds the lease until it finishes or the lease lapses, so
//! scans never overlap, on one instance or several.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::job_leases;

/// The lease of the alert scan (`jobs`).
pub const ALERT_SCAN: &str = "alert_scan";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = job_leases)]
pub struct JobLease {
    pub name: String,
    pub holder: Option<String>,
    pub leased_until: Option<NaiveDateTime>,
    pub runs: i64,
    pub last_started_at: Option<NaiveDateTime>,
    pub last_finished_at: Option<NaiveDateTime>,
    pub last_duration_ms: Option<i64>,
    pub last_raised: Option<i64>,
    pub last_resolved: Option<i64>,
    pub last_expired: Option<i64>,
    pub last_error: Option<String>,
    pub last_escalated: Option<i64>,
    /// The last run that succeeded (the last run may have failed since).
    pub last_succeeded_at: Option<NaiveDateTime>,
    pub last_success_duration_ms: Option<i64>,
}

/// Takes the lease of `name` until `until` unless another holder has it; true when taken.
pub fn acquire(
    conn: &mut DbConn,
    name: &str,
    holder: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> QueryResult<bool> {
    diesel::sql_query("INSERT INTO job_leases (name, runs) VALUES ($1, 0) ON CONFLICT DO NOTHING")
        .bind::<diesel::sql_types::Text, _>(name)
        .execute(conn)?;
    let n = diesel::update(
        job_leases::table
            .find(name)
            .filter(job_leases::leased_until.is_null().or(job_leases::leased_until.lt(now))),
    )
    .set((
        job_leases::holder.eq(holder),
        job_leases::leased_until.eq(until),
        job_leases::last_started_at.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

pub struct RunResult<'a> {
    pub finished_at: NaiveDateTime,
    pub duration_ms: i64,
    pub raised: i64,
    pub escalated: i64,
    pub resolved: i64,
    pub expired: i64,
    pub error: Option<&'a str>,
}

/// Releases the lease held by `holder` and records the run.
pub fn finish(conn: &mut DbConn, name: &str, holder: &str, r: &RunResult<'_>) -> QueryResult<()> {
    let released = diesel::update(job_leases::table.find(name).filter(job_leases::holder.eq(holder)))
        .set((
            job_leases::holder.eq(None::<String>),
            job_leases::leased_until.eq(None::<NaiveDateTime>),
            job_leases::runs.eq(job_leases::runs + 1),
            job_leases::last_finished_at.eq(r.finished_at),
            job_leases::last_duration_ms.eq(r.duration_ms),
            job_leases::last_raised.eq(r.raised),
            job_leases::last_escalated.eq(r.escalated),
            job_leases::last_resolved.eq(r.resolved),
            job_leases::last_expired.eq(r.expired),
            job_leases::last_error.eq(r.error),
        ))
        .execute(conn)?;
    if released == 1 && r.error.is_none() {
        diesel::update(job_leases::table.find(name))
            .set((
                job_leases::last_succeeded_at.eq(r.finished_at),
                job_leases::last_success_duration_ms.eq(r.duration_ms),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn find(conn: &mut DbConn, name: &str) -> QueryResult<Option<JobLease>> {
    job_leases::table
        .find(name)
        .select(JobLease::as_select())
        .first(conn)
        .optional()
}

pub fn all(conn: &mut DbConn) -> QueryResult<Vec<JobLease>> {
    job_leases::table
        .order(job_leases::name.asc())
        .select(JobLease::as_select())
        .load(conn)
}
