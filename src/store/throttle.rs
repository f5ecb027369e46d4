//! Sign-in attempts, kept in the database so that every app instance throttles alike. An attempt
//! is recorded before its credentials are checked and removed again if it succeeds.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::login_failures;

/// Record an attempt (a failure until proven otherwise); returns its row id.
pub fn record_failure(conn: &mut DbConn, key: &str, at: NaiveDateTime) -> QueryResult<i64> {
    diesel::insert_into(login_failures::table)
        .values((login_failures::throttle_key.eq(key), login_failures::failed_at.eq(at)))
        .returning(login_failures::id)
        .get_result(conn)
}

/// Failures for `key` since `since`, and the oldest of them (when the window reopens).
pub fn failures_since(conn: &mut DbConn, key: &str, since: NaiveDateTime) -> QueryResult<(i64, Option<NaiveDateTime>)> {
    let rows = login_failures::table
        .filter(login_failures::throttle_key.eq(key))
        .filter(login_failures::failed_at.gt(since));
    let count: i64 = rows.count().get_result(conn)?;
    let oldest: Option<NaiveDateTime> = rows.select(diesel::dsl::min(login_failures::failed_at)).first(conn)?;
    Ok((count, oldest))
}

pub fn clear(conn: &mut DbConn, key: &str) -> QueryResult<usize> {
    diesel::delete(login_failures::table.filter(login_failures::throttle_key.eq(key))).execute(conn)
}

/// Withdraw recorded attempts (refused unchecked, or successful).
pub fn remove(conn: &mut DbConn, ids: &[i64]) -> QueryResult<usize> {
    diesel::delete(login_failures::table.filter(login_failures::id.eq_any(ids))).execute(conn)
}

/// Forget failures older than `before` (they no longer count toward any window).
pub fn prune(conn: &mut DbConn, before: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(login_failures::table.filter(login_failures::failed_at.lt(before))).execute(conn)
}
