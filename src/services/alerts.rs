//! Alerts: raising one (`raise`, the one entry point of the scan and the services), reading
//! them and their changes, acknowledgement, and resolution when the scan finds their condition
//! cleared.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::domain::alerts::{
    self as rules, AlertKind, AlertSeverity, AlertStatus, AlertTransition, EpisodeEnd, RaiseDecision,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::input::paginate;
use crate::store::alerts::{self, Alert, AlertEvent, NewAlert, NewEvent, Occurred};
use crate::store::audit::{self, Actor, Change};
use crate::store::jobs::JobLease;
use crate::store::{self, DbConn};

/// A page of alerts by id, filtered by status and kind, with the next page's cursor.
/// A kind that is none of `AlertKind`'s has no alerts.
pub fn list(
    conn: &mut DbConn,
    status: Option<AlertStatus>,
    kind: Option<&str>,
    after: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<Alert>, Option<String>)> {
    let kind = match kind.map(AlertKind::parse) {
        Some(None) => return Ok((Vec::new(), None)),
        Some(Some(k)) => Some(k),
        None => None,
    };
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
    let ends = before.kind.episode_end() == EpisodeEnd::Acknowledged;
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
            transition: AlertTransition::Acknowledged,
            severity: alert.severity,
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
            serde_json::json!({"status": AlertStatus::Open, "severity": before.severity}),
            serde_json::json!({"status": AlertStatus::Acknowledged, "severity": alert.severity, "episode_ended": ends}),
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
            transition: AlertTransition::Resolved,
            severity: alert.severity,
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

/// One occurrence of a condition, as the scan and the services raise it. The entity type is the
/// kind's.
#[derive(Debug, Clone)]
pub struct Raise {
    pub kind: AlertKind,
    /// One of `kind.ladder()`.
    pub severity: AlertSeverity,
    pub entity_id: i64,
    /// Which condition this is (`AlertKind::condition_key`), kept on the alert as its latest
    /// occurrence.
    pub condition_key: String,
    pub message: String,
    pub details: serde_json::Value,
    /// For `unit.expiring`: the expiry threshold passed, in hours (a tighter one at the same
    /// severity escalates too).
    pub threshold_hours: Option<u32>,
    pub at: DateTime<Utc>,
}

impl Raise {
    /// An event a service raises: the kind's one severity (an event kind has a ladder of one,
    /// a domain test holds it), no expiry threshold; the caller adds the message and details.
    pub fn event(kind: AlertKind, entity_id: i64, condition: impl std::fmt::Display, at: DateTime<Utc>) -> Self {
        Self {
            kind,
            severity: kind.ladder().last().copied().unwrap_or(AlertSeverity::Urgent),
            entity_id,
            condition_key: kind.condition_key(condition),
            message: String::new(),
            details: serde_json::Value::Null,
            threshold_hours: None,
            at,
        }
    }
}

/// What raising changed.
#[derive(Debug)]
pub struct Raised {
    pub transition: AlertTransition,
    pub alert: Alert,
}

/// Raises an alert in the caller's transaction, once per episode: a new alert when no episode
/// of (kind, entity) is open; an escalation of the open one when this is worse; a repeat
/// recorded on it for an event kind; nothing otherwise (`domain::alerts::decide`). Every change
/// is appended to the alert's events and queued for every matching webhook subscription.
/// Returns what changed, if anything.
pub fn raise(conn: &mut DbConn, r: Raise) -> ApiResult<Option<Raised>> {
    if !r.kind.ladder().contains(&r.severity) {
        return Err(ApiError::internal(anyhow::anyhow!(
            "{} is never {}",
            r.kind,
            r.severity
        )));
    }
    let threshold = r
        .threshold_hours
        .map(i32::try_from)
        .transpose()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("threshold {:?}: {e}", r.threshold_hours)))?;
    let entity_id = r.entity_id.to_string();
    let details = r.details.to_string();
    let new = NewAlert {
        kind: r.kind,
        severity: r.severity,
        dedup_key: &r.condition_key,
        entity_id: &entity_id,
        message: &r.message,
        details: details.clone(),
        created_at: store::truncate_micros(r.at.naive_utc()),
    };
    let occurrence = rules::Occurrence {
        kind: r.kind,
        severity: r.severity,
        threshold_hours: r.threshold_hours,
        condition_key: &r.condition_key,
        message: &r.message,
    };
    // A concurrent transaction may open the episode between the look and the insert (the
    // insert then waits for it and does nothing): look again, once.
    for _ in 0..2 {
        let Some(current) = alerts::lock_open_episode(conn, r.kind, &entity_id)? else {
            match alerts::open_episode(conn, &new, threshold)? {
                Some(alert) => return changed(conn, AlertTransition::Raised, alert, &new, None).map(Some),
                None => continue,
            }
        };
        let episode = rules::OpenEpisode {
            severity: current.severity,
            threshold_hours: current.threshold_hours.and_then(|h| u32::try_from(h).ok()),
            condition_key: &current.dedup_key,
            message: &current.message,
        };
        let (transition, change) = match rules::decide(Some(&episode), &occurrence) {
            RaiseDecision::Nothing => return Ok(None),
            RaiseDecision::Open => {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "alert {}: an open episode cannot be opened again",
                    current.id
                )));
            }
            RaiseDecision::Escalate => (
                AlertTransition::Escalated,
                Occurred {
                    severity: r.severity,
                    threshold_hours: threshold,
                    text: Some((&r.condition_key, &r.message, &details)),
                    at: new.created_at,
                    escalation: true,
                },
            ),
            RaiseDecision::Repeat { take_text } => (
                AlertTransition::Repeated,
                Occurred {
                    severity: current.severity,
                    threshold_hours: current.threshold_hours,
                    text: take_text.then_some((r.condition_key.as_str(), r.message.as_str(), details.as_str())),
                    at: new.created_at,
                    escalation: false,
                },
            ),
        };
        alerts::occur(conn, current.id, &change)?;
        let alert = alerts::find(conn, current.id)?.ok_or_else(|| ApiError::not_found("alert"))?;
        let previous = (transition == AlertTransition::Escalated).then_some(current.severity);
        return changed(conn, transition, alert, &new, previous).map(Some);
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "{} of {} {entity_id}: the open episode kept changing",
        r.kind,
        r.kind.entity(),
    )))
}

/// Records the change as an alert event (the occurrence as raised: its severity, condition,
/// message and details) and queues it for the subscriptions.
fn changed(
    conn: &mut DbConn,
    transition: AlertTransition,
    alert: Alert,
    new: &NewAlert<'_>,
    previous_severity: Option<AlertSeverity>,
) -> ApiResult<Raised> {
    let event_id = alerts::record_event(
        conn,
        &NewEvent {
            alert_id: alert.id,
            transition,
            severity: new.severity,
            previous_severity,
            condition_key: new.dedup_key,
            message: new.message,
            details: &new.details,
            actor: None,
            occurred_at: new.created_at,
        },
    )?;
    crate::services::webhooks::fan_out(conn, &alert, event_id)?;
    Ok(Raised { transition, alert })
}
