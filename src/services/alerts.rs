//! Alerts once raised (raising is `webhooks::raise`): reading them and their changes,
//! acknowledgement, and resolution when the scan finds their condition cleared.

use chrono::NaiveDateTime;

use crate::domain::alerts::{self as rules, AlertTransition, EpisodeEnd};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::input::paginate;
use crate::store::alerts::{self, Alert, AlertEvent, NewEvent};
use crate::store::audit::{self, Actor, Change};
use crate::store::jobs::JobLease;
use crate::store::{self, DbConn};

/// A page of alerts by id, filtered by status and kind, with the next page's cursor.
pub fn list(
    conn: &mut DbConn,
    status: Option<&str>,
    kind: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<Alert>, Option<String>)> {
    let found = alerts::list(conn, status, kind, after, limit + 1)?;
    Ok(paginate(found, limit, |a| a.id))
}

/// A page of one alert's changes in commit order (404 for an unknown alert).
pub fn events(
    conn: &mut DbConn,
    id: i64,
    after: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<AlertEvent>, Option<String>)> {
    alerts::find(conn, id)?.ok_or_else(|| ApiError::not_found("alert"))?;
    let found = alerts::events_of(conn, id, after, limit + 1)?;
    Ok(paginate(found, limit, |e| e.seq.unwrap_or_default()))
}

/// The last committed event number: where a stream without a resume point starts.
pub fn last_event_seq(conn: &mut DbConn) -> ApiResult<i64> {
    Ok(alerts::last_event_seq(conn)?)
}

/// Up to `limit` committed events after `after`, with their alert as it is now.
pub fn events_after(conn: &mut DbConn, after: i64, limit: i64) -> ApiResult<Vec<(AlertEvent, Alert)>> {
    Ok(alerts::events_after(conn, after, limit)?)
}

/// The background jobs (the scan, deliveries) and how they last ran.
pub fn jobs(conn: &mut DbConn) -> ApiResult<Vec<JobLease>> {
    Ok(store::jobs::all(conn)?)
}

/// Acknowledges an open alert (409 `already_acknowledged` otherwise), audited. For an event
/// kind this ends the episode: the next occurrence opens a new alert. For a kind the scan owns
/// the episode stays open until its condition clears (an escalation re-opens it).
pub fn acknowledge(conn: &mut DbConn, actor: &Actor, id: i64) -> ApiResult<Alert> {
    let before = alerts::find(conn, id)?.ok_or_else(|| ApiError::not_found("alert"))?;
    let ends = rules::episode_end(&before.kind) == EpisodeEnd::Acknowledged;
    let at = store::now();
    if !alerts::acknowledge(conn, id, at, &actor.name, ends)? {
        return Err(ApiError::new(
            ErrorCode::AlreadyAcknowledged,
            format!("alert {id} is not open"),
        ));
    }
    let alert = alerts::find(conn, id)?.ok_or_else(|| ApiError::not_found("alert"))?;
    alerts::record_event(
        conn,
        &NewEvent {
            alert_id: id,
            transition: AlertTransition::Acknowledged.as_str(),
            severity: &alert.severity,
            previous_severity: None,
            condition_key: &alert.dedup_key,
            message: &alert.message,
            details: &alert.details,
            actor: Some(&actor.name),
            occurred_at: at,
        },
    )?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "alert.acknowledge",
            "alert",
            id,
            serde_json::json!({"status": "open", "severity": before.severity}),
            serde_json::json!({"status": "acknowledged", "severity": alert.severity, "episode_ended": ends}),
        ),
    )?;
    Ok(alert)
}

/// Resolves an alert whose condition cleared (the scan), ending its episode; false when it
/// was already resolved.
pub fn resolve(conn: &mut DbConn, alert: &Alert, at: NaiveDateTime) -> ApiResult<bool> {
    if !alerts::resolve(conn, alert.id, at)? {
        return Ok(false);
    }
    alerts::record_event(
        conn,
        &NewEvent {
            alert_id: alert.id,
            transition: AlertTransition::Resolved.as_str(),
            severity: &alert.severity,
            previous_severity: None,
            condition_key: &alert.dedup_key,
            message: &alert.message,
            details: &alert.details,
            actor: None,
            occurred_at: at,
        },
    )?;
    Ok(true)
}
