//! Raising alerts and webhooks: `raise` is the one entry point every service raises an alert
//! through. It applies the episode rules (`domain::alerts::decide`: open, escalate, repeat or
//! nothing), appends the alert event, and queues one webhook delivery per matching subscription
//! and event (outbox), all in the caller's transaction. Then subscriptions per event kind, and
//! delivery with HMAC-SHA256 signatures, retries and exponential backoff.

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use super::{from_stored_json, to_json, utc};
use crate::domain::alerts::{self as rules, AlertSeverity, AlertTransition, EpisodeEnd, RaiseDecision, kinds};
use crate::error::{ApiError, ApiResult, Validator};
use crate::store::alerts::{self, Alert, NewAlert, NewEvent, Occurred};
use crate::store::audit::{self, Actor, Change};
use crate::store::webhooks::{self as rows, Delivery, Subscription};
use crate::store::{self, DbConn, Pool};

/// Every event a subscription may name (`*` = all).
pub const EVENTS: &[&str] = &[
    "unit.expiring",
    "unit.expired",
    "unit.quarantined",
    "unit.positive_result_after_release",
    "sample.expiring",
    "stimulation.window_missed",
    "collection.donor_ineligible",
    "collection.unstimulated",
    "request.unallocated",
    "transfusion.outcome_missing",
    "allocation.anti_d_prophylaxis",
    "patient.group_discordant",
    "task.overdue",
];

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://interface.example-hospital.org/granulo", "events": ["unit.expiring", "unit.quarantined"], "secret": "a long random shared secret", "hospital_id": 3}))]
pub struct SubscriptionInput {
    /// `https://…` (or `http://` for a receiver on a private network).
    pub url: String,
    /// Event names, or `["*"]`.
    pub events: Vec<String>,
    /// Shared secret for the signature, 16–256 characters.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: String,
    /// Limit deliveries to events about this hospital's patients and units.
    #[schema(minimum = 1)]
    pub hospital_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    #[schema(minimum = 1)]
    pub hospital_id: Option<i64>,
    pub active: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub alert_id: i64,
    /// The alert event delivered.
    pub alert_event_id: i64,
    /// The alert kind.
    pub event: String,
    /// What happened to the alert: `raised`, `escalated` or `repeated`.
    pub transition: String,
    /// `pending`, `delivered`, or `failed` (gave up).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

fn view(s: Subscription) -> ApiResult<SubscriptionView> {
    Ok(SubscriptionView {
        events: from_stored_json("events", &s.events)?,
        id: s.id,
        url: s.url,
        hospital_id: s.hospital_id,
        active: s.active,
        created_by: s.created_by,
        created_at: utc(s.created_at),
    })
}

pub fn create(conn: &mut DbConn, actor: &Actor, input: SubscriptionInput) -> ApiResult<SubscriptionView> {
    let mut v = Validator::new();
    let url = input.url.trim().to_owned();
    v.check(
        (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 2000
            && !url.chars().any(char::is_whitespace),
        "url",
        "must be an http(s) URL",
    );
    v.check(!input.events.is_empty(), "events", "must name at least one event or *");
    let mut events: Vec<String> = Vec::new();
    for (i, e) in input.events.iter().enumerate() {
        let e = e.trim();
        if e == "*" || EVENTS.contains(&e) {
            if !events.iter().any(|x| x == e) {
                events.push(e.to_owned());
            }
        } else {
            v.push(
                &format!("events[{i}]"),
                format!("{e:?} is not an event (see the documentation)"),
            );
        }
    }
    v.check(
        (16..=256).contains(&input.secret.chars().count()),
        "secret",
        "must be 16 to 256 characters",
    );
    v.finish()?;
    if let Some(h) = input.hospital_id
        && store::hospitals::find(conn, h)?.is_none()
    {
        return Err(ApiError::not_found("hospital"));
    }
    let row = rows::insert(
        conn,
        &rows::NewSubscription {
            url: &url,
            events: to_json(&events)?,
            secret: &input.secret,
            hospital_id: input.hospital_id,
            active: true,
            created_by: &actor.name,
            created_at: store::now(),
        },
    )?;
    let created = view(row)?;
    audit::append(
        conn,
        actor,
        Change::created("webhook.create", "webhook", created.id, super::to_value(&created)?),
    )?;
    Ok(created)
}

pub fn list(conn: &mut DbConn) -> ApiResult<Vec<SubscriptionView>> {
    rows::list(conn)?.into_iter().map(view).collect()
}

pub fn deliveries(conn: &mut DbConn, id: i64) -> ApiResult<Vec<DeliveryView>> {
    rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(rows::of_subscription(conn, id)?
        .into_iter()
        .map(|(d, transition)| DeliveryView {
            id: d.id,
            alert_id: d.alert_id,
            alert_event_id: d.alert_event_id,
            event: d.event,
            transition,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: utc(d.next_attempt_at),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(utc),
        })
        .collect())
}

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
            let held = store::allocations::of_unit(conn, id)?
                .into_iter()
                .rev()
                .find(|a| matches!(a.status.as_str(), "allocated" | "issued" | "transfused"));
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

/// Acknowledges an open alert (409 `already_acknowledged` otherwise), audited. For an event
/// kind this ends the episode: the next occurrence opens a new alert. For a kind the scan owns
/// the episode stays open until its condition clears (an escalation re-opens it).
pub fn acknowledge(conn: &mut DbConn, actor: &Actor, id: i64) -> ApiResult<Alert> {
    let before = alerts::find(conn, id)?.ok_or_else(|| ApiError::not_found("alert"))?;
    let ends = rules::episode_end(&before.kind) == EpisodeEnd::Acknowledged;
    let at = store::now();
    if !alerts::acknowledge(conn, id, at, &actor.name, ends)? {
        return Err(ApiError::conflict(
            "already_acknowledged",
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
pub fn resolve(conn: &mut DbConn, alert: &Alert, at: chrono::NaiveDateTime) -> ApiResult<bool> {
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

/// `sha256=` + hex HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Backoff after the `attempt`-th failure: 30 s doubling, at most an hour; give up after
/// `MAX_ATTEMPTS`.
pub const MAX_ATTEMPTS: i32 = 10;

pub fn backoff(attempt: i32) -> TimeDelta {
    let secs = 30_i64.saturating_mul(1_i64 << attempt.clamp(0, 20));
    TimeDelta::seconds(secs.min(3600))
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DeliveryReport {
    pub delivered: i64,
    pub failed: i64,
}

/// A delivery ready to send.
pub struct Outgoing {
    delivery: Delivery,
    transition: String,
    url: String,
    secret: String,
    body: Vec<u8>,
    sent_at: DateTime<Utc>,
}

/// The outcome of one attempt: the HTTP status, or the status and error of a failure.
pub type Attempt = (Delivery, Result<i32, (Option<i32>, String)>);

/// Every due delivery with its body: `{event, transition, sent_at, alert}`, the alert as the
/// delivered event left it (its severity and message then, the severity before an escalation).
pub fn load_due(conn: &mut DbConn, now: DateTime<Utc>) -> ApiResult<Vec<Outgoing>> {
    let mut out = Vec::new();
    for d in rows::due(conn, store::truncate_micros(now.naive_utc()), 100)? {
        let Some(s) = rows::find(conn, d.subscription_id)? else {
            continue;
        };
        let Some(a) = alerts::find(conn, d.alert_id)? else {
            continue;
        };
        let Some(e) = alerts::find_event(conn, d.alert_event_id)? else {
            continue;
        };
        let body = serde_json::json!({
            "event": d.event,
            "transition": e.transition,
            "sent_at": now,
            "alert": {
                "id": a.id, "kind": a.kind, "severity": e.severity, "previous_severity": e.previous_severity,
                "entity_type": a.entity_type, "entity_id": a.entity_id, "message": e.message,
                "created_at": utc(a.created_at), "episode": a.episode, "occurred_at": utc(e.occurred_at),
            },
        });
        out.push(Outgoing {
            transition: e.transition,
            delivery: d,
            url: s.url,
            secret: s.secret,
            body: serde_json::to_vec(&body).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?,
            sent_at: now,
        });
    }
    Ok(out)
}

/// Sends each delivery once. Headers: `X-Granulo-Signature: sha256=<hex HMAC of the body>`,
/// `X-Granulo-Timestamp` (= the body's `sent_at`, which the signature covers: receivers reject
/// old ones), `X-Granulo-Event` (the alert kind), `X-Granulo-Transition` (`raised`, `escalated`
/// or `repeated`), `X-Granulo-Delivery`.
pub async fn send_all(client: &reqwest::Client, outgoing: Vec<Outgoing>) -> Vec<Attempt> {
    let mut results = Vec::with_capacity(outgoing.len());
    for o in outgoing {
        let sent = client
            .post(&o.url)
            .header("Content-Type", "application/json")
            .header("X-Granulo-Signature", signature(&o.secret, &o.body))
            .header("X-Granulo-Timestamp", o.sent_at.to_rfc3339())
            .header("X-Granulo-Event", &o.delivery.event)
            .header("X-Granulo-Transition", &o.transition)
            .header("X-Granulo-Delivery", o.delivery.id.to_string())
            .body(o.body)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => Ok(i32::from(r.status().as_u16())),
            Ok(r) => Err((Some(i32::from(r.status().as_u16())), format!("HTTP {}", r.status()))),
            Err(e) => Err((None, e.to_string())),
        };
        results.push((o.delivery, outcome));
    }
    results
}

/// Records the attempts: delivered, or retried after the backoff, or given up.
pub fn record(conn: &mut DbConn, results: Vec<Attempt>, now: DateTime<Utc>) -> ApiResult<DeliveryReport> {
    let mut report = DeliveryReport::default();
    let at = store::truncate_micros(now.naive_utc());
    for (d, outcome) in results {
        match outcome {
            Ok(code) => {
                rows::record_attempt(conn, d.id, "delivered", at, Some(code), None, Some(at))?;
                report.delivered += 1;
            }
            Err((code, error)) => {
                let attempts = d.attempts + 1;
                let status = if attempts >= MAX_ATTEMPTS { "failed" } else { "pending" };
                rows::record_attempt(conn, d.id, status, at + backoff(attempts - 1), code, Some(&error), None)?;
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// One delivery pass through the pool (database work off the async threads).
pub async fn deliver_due(pool: &Pool, client: &reqwest::Client, now: DateTime<Utc>) -> ApiResult<DeliveryReport> {
    let p = pool.clone();
    let outgoing = actix_web::web::block(move || -> ApiResult<Vec<Outgoing>> {
        let mut conn = p.get().map_err(store::StoreError::from)?;
        load_due(&mut conn, now)
    })
    .await??;
    let results = send_all(client, outgoing).await;
    let p = pool.clone();
    actix_web::web::block(move || -> ApiResult<DeliveryReport> {
        let mut conn = p.get().map_err(store::StoreError::from)?;
        record(&mut conn, results, now)
    })
    .await?
}

/// Every event kind the scan raises is deliverable.
pub fn covers_scanned_kinds() -> bool {
    kinds::SCANNED.iter().all(|k| EVENTS.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_backoff() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(backoff(0), TimeDelta::seconds(30));
        assert_eq!(backoff(1), TimeDelta::seconds(60));
        assert_eq!(backoff(6), TimeDelta::seconds(1920));
        assert_eq!(backoff(7), TimeDelta::seconds(3600));
        assert_eq!(backoff(40), TimeDelta::seconds(3600));
        assert!(covers_scanned_kinds());
    }
}
