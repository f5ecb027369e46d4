//! The aggregate queries behind the gauges of `/metrics`: counts only, no rows.

use chrono::NaiveDateTime;
use diesel::dsl::{count_star, exists, min, not};
use diesel::prelude::*;

use super::DbConn;
use super::schema::{alerts, allocations, requests, tasks, units, webhook_outbox};

/// Units whose stored status is `available` and that have not expired at `now`, per (ABO, RhD).
pub fn available_units_by_group(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<Vec<(String, String, i64)>> {
    units::table
        .filter(units::status.eq("available"))
        .filter(units::expires_at.gt(now))
        .group_by((units::abo, units::rhd))
        .select((units::abo, units::rhd, count_star()))
        .load(conn)
}

/// Expiry times of the units in the bank (quarantined, available, allocated) that expire after
/// `now` and no later than `until`.
pub fn in_bank_expiring(
    conn: &mut DbConn,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> QueryResult<Vec<NaiveDateTime>> {
    units::table
        .filter(units::status.eq_any(["quarantined", "available", "allocated"]))
        .filter(units::expires_at.gt(now))
        .filter(units::expires_at.le(until))
        .select(units::expires_at)
        .load(conn)
}

/// Open requests with no unit allocated, issued or transfused.
pub fn open_requests_without_units(conn: &mut DbConn) -> QueryResult<i64> {
    requests::table
        .filter(requests::status.eq("open"))
        .filter(not(exists(
            allocations::table
                .filter(allocations::request_id.eq(requests::id))
                .filter(allocations::status.eq_any(["allocated", "issued", "transfused"])),
        )))
        .count()
        .get_result(conn)
}

/// Open alert episodes per (kind, status).
pub fn open_alerts(conn: &mut DbConn) -> QueryResult<Vec<(String, String, i64)>> {
    alerts::table
        .filter(alerts::closed_at.is_null())
        .group_by((alerts::kind, alerts::status))
        .select((alerts::kind, alerts::status, count_star()))
        .load(conn)
}

/// Open tasks per kind.
pub fn open_tasks(conn: &mut DbConn) -> QueryResult<Vec<(String, i64)>> {
    tasks::table
        .filter(tasks::status.eq("open"))
        .group_by(tasks::kind)
        .select((tasks::kind, count_star()))
        .load(conn)
}

/// Webhook deliveries per status.
pub fn outbox_by_status(conn: &mut DbConn) -> QueryResult<Vec<(String, i64)>> {
    webhook_outbox::table
        .group_by(webhook_outbox::status)
        .select((webhook_outbox::status, count_star()))
        .load(conn)
}

/// Pending deliveries that have failed at least once, and when the oldest pending one was queued.
pub fn outbox_pending(conn: &mut DbConn) -> QueryResult<(i64, Option<NaiveDateTime>)> {
    let retrying = webhook_outbox::table
        .filter(webhook_outbox::status.eq("pending"))
        .filter(webhook_outbox::attempts.gt(0))
        .count()
        .get_result(conn)?;
    let oldest = webhook_outbox::table
        .filter(webhook_outbox::status.eq("pending"))
        .select(min(webhook_outbox::created_at))
        .get_result(conn)?;
    Ok((retrying, oldest))
}
