//! Raising an alert: the episode rules (`domain::alerts::decide`: open, escalate, repeat or
//! nothing), the alert event, and one queued delivery per matching subscription (outbox), all
//! in the caller's transaction.

use crate::domain::alerts::{self as rules, AlertSeverity, AlertTransition, RaiseDecision};
use crate::domain::requests::AllocationStatus;
use crate::error::{ApiError, ApiResult};
use crate::services::from_stored_json;
use crate::store::alerts::{self, Alert, NewAlert, NewEvent, Occurred};
use crate::store::webhooks as rows;
use crate::store::{self, DbConn};

/// The hospital an alert is about, if any: the hospital of the request, of the allocation, or
/// of the allocation holding (or having received) the unit. Donor and collection alerts belong
/// to the blood bank only.
fn hospital_of(conn: &mut DbConn, alert: &Alert) -> ApiResult<Option<i64>> {
    let Ok(id) = alert.entity_id.parse::<i64>() else {
        return Ok(None);
    };
    let request_hospital = |conn: &mut DbConn, request_id: i64| -> ApiResult<Option<i64>> {
        Ok(store::requests::find(conn, request_id)?.map(|r| r.hospital_id))
    };
    match alert.entity_type.as_str() {
        "request" => request_hospital(conn, id),
        "patient" => Ok(store::patients::find(conn, id)?.map(|p| p.hospital_id)),
        "allocation" => match store::allocations::find(conn, id)? {
            Some(a) => request_hospital(conn, a.request_id),
            None => Ok(None),
        },
        "unit" => {
            let held = store::allocations::of_unit(conn, id)?.into_iter().rev().find(|a| {
                matches!(
                    a.status,
                    AllocationStatus::Allocated | AllocationStatus::Issued | AllocationStatus::Transfused
                )
            });
            match held {
                Some(a) => request_hospital(conn, a.request_id),
                None => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// Raises an alert in the caller's transaction, once per episode: a new alert when no episode
/// of (kind, entity) is open; an escalation of the open one when this is worse; a repeat
/// recorded on it for an event kind; nothing otherwise (`domain::alerts::decide`). Every change
/// is appended to the alert's events and queued for every matching webhook subscription.
/// Returns the alert when it changed.
pub fn raise(conn: &mut DbConn, new: &NewAlert<'_>) -> ApiResult<Option<Alert>> {
    Ok(raise_at_threshold(conn, new, None)?.map(|(_, alert)| alert))
}

fn stored_severity(text: &str) -> ApiResult<AlertSeverity> {
    AlertSeverity::parse(text).ok_or_else(|| ApiError::internal(anyhow::anyhow!("alert severity {text:?}")))
}

/// `raise`, for a condition with an expiry threshold (`unit.expiring`): a tighter threshold at
/// the same severity escalates too. Returns what changed.
pub fn raise_at_threshold(
    conn: &mut DbConn,
    new: &NewAlert<'_>,
    threshold_hours: Option<u32>,
) -> ApiResult<Option<(AlertTransition, Alert)>> {
    let severity = stored_severity(new.severity)?;
    let threshold = threshold_hours
        .map(i32::try_from)
        .transpose()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("threshold {threshold_hours:?}: {e}")))?;
    let occurrence = rules::Occurrence {
        kind: new.kind,
        severity,
        threshold_hours,
        condition_key: new.dedup_key,
        message: new.message,
    };
    // A concurrent transaction may open the episode between the look and the insert (the
    // insert then waits for it and does nothing): look again, once.
    for _ in 0..2 {
        let open = alerts::lock_open_episode(conn, new.kind, new.entity_type, new.entity_id)?;
        let Some(current) = open else {
            match alerts::open_episode(conn, new, threshold)? {
                Some(alert) => return changed(conn, AlertTransition::Raised, alert, new, None).map(Some),
                None => continue,
            }
        };
        let episode = rules::OpenEpisode {
            severity: stored_severity(&current.severity)?,
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
                    severity: new.severity,
                    threshold_hours: threshold,
                    text: Some((new.dedup_key, new.message, &new.details)),
                    at: new.created_at,
                    escalation: true,
                },
            ),
            RaiseDecision::Repeat { take_text } => (
                AlertTransition::Repeated,
                Occurred {
                    severity: &current.severity,
                    threshold_hours: current.threshold_hours,
                    text: take_text.then_some((new.dedup_key, new.message, new.details.as_str())),
                    at: new.created_at,
                    escalation: false,
                },
            ),
        };
        alerts::occur(conn, current.id, &change)?;
        let alert = alerts::find(conn, current.id)?.ok_or_else(|| ApiError::not_found("alert"))?;
        let previous = (transition == AlertTransition::Escalated).then_some(current.severity.as_str());
        return changed(conn, transition, alert, new, previous).map(Some);
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "{} of {} {}: the open episode kept changing",
        new.kind,
        new.entity_type,
        new.entity_id
    )))
}

/// Records the change as an alert event (the occurrence as raised: its severity, condition,
/// message and details) and queues it for the subscriptions.
fn changed(
    conn: &mut DbConn,
    transition: AlertTransition,
    alert: Alert,
    new: &NewAlert<'_>,
    previous_severity: Option<&str>,
) -> ApiResult<(AlertTransition, Alert)> {
    let event_id = alerts::record_event(
        conn,
        &NewEvent {
            alert_id: alert.id,
            transition: transition.as_str(),
            severity: new.severity,
            previous_severity,
            condition_key: new.dedup_key,
            message: new.message,
            details: &new.details,
            actor: None,
            occurred_at: new.created_at,
        },
    )?;
    fan_out(conn, &alert, event_id)?;
    Ok((transition, alert))
}

/// Queues one delivery of the event for every active subscription that wants the alert's kind
/// and may see its hospital.
fn fan_out(conn: &mut DbConn, alert: &Alert, event_id: i64) -> ApiResult<()> {
    let subscriptions = rows::active(conn)?;
    if subscriptions.is_empty() {
        return Ok(());
    }
    let hospital = hospital_of(conn, alert)?;
    for s in subscriptions {
        let events: Vec<String> = from_stored_json("events", &s.events)?;
        let wanted = events.iter().any(|e| e == "*" || *e == alert.kind);
        let allowed = s.hospital_id.is_none_or(|h| Some(h) == hospital);
        if wanted && allowed {
            rows::enqueue(conn, s.id, alert.id, event_id, &alert.kind, store::now())?;
        }
    }
    Ok(())
}
