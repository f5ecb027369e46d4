//! Alerts (staff): list, acknowledge, the jobs view, and the live stream of alert events.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::utc;
use crate::auth::AuthUser;
use crate::domain::alerts::{AlertEntity, AlertKind, AlertSeverity, AlertStatus, AlertTransition};
use crate::error::{ApiError, ApiResult};
use crate::input::{decode_cursor, page_limit, parse_id};
use crate::services::alerts as work;
use crate::state::AppState;
use crate::store::alerts::{Alert, AlertEvent};

/// An alert: one episode of a condition of one entity. At most one is open per (kind, entity);
/// it escalates as the condition gets worse, and a condition that clears and comes back opens
/// the next episode.
#[derive(Serialize, ToSchema)]
pub struct AlertView {
    pub id: i64,
    pub kind: AlertKind,
    /// The highest stage the episode reached.
    pub severity: AlertSeverity,
    /// `resolved`: the condition cleared. An escalation re-opens an acknowledged alert.
    pub status: AlertStatus,
    pub entity_type: AlertEntity,
    pub entity_id: String,
    /// The latest occurrence's message.
    pub message: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// 1 for the first alert of this (kind, entity), 2 for the next one after it ended, …
    #[schema(minimum = 1)]
    pub episode: i32,
    /// For `unit.expiring`: the tightest expiry threshold passed, in hours.
    pub threshold_hours: Option<i32>,
    /// How often the episode was raised, escalated or repeated (an event kind happening again
    /// while its alert was open).
    #[schema(minimum = 1)]
    pub occurrences: i32,
    pub last_occurred_at: DateTime<Utc>,
    /// The latest escalation, if any.
    pub escalated_at: Option<DateTime<Utc>>,
    /// When the episode ended (resolved; or acknowledged, for event kinds the scan does not
    /// own): a new occurrence then opens a new alert. Null while it is open.
    pub closed_at: Option<DateTime<Utc>>,
}

impl From<Alert> for AlertView {
    fn from(a: Alert) -> Self {
        Self {
            id: a.id,
            kind: a.kind,
            severity: a.severity,
            status: a.status,
            entity_type: a.entity_type,
            entity_id: a.entity_id,
            message: a.message,
            details: serde_json::from_str(&a.details).unwrap_or(serde_json::Value::Null),
            created_at: utc(a.created_at),
            acknowledged_at: a.acknowledged_at.map(utc),
            acknowledged_by: a.acknowledged_by,
            resolved_at: a.resolved_at.map(utc),
            episode: a.episode,
            threshold_hours: a.threshold_hours,
            occurrences: a.occurrences,
            last_occurred_at: utc(a.last_occurred_at),
            escalated_at: a.escalated_at.map(utc),
            closed_at: a.closed_at.map(utc),
        }
    }
}

/// One change of an alert, as it was when it happened.
#[derive(Serialize, ToSchema)]
pub struct AlertChangeView {
    /// The event number: the stream's `id:`, in commit order.
    pub seq: i64,
    pub transition: AlertTransition,
    /// The occurrence's severity (the alert's, for an acknowledgement or a resolution).
    pub severity: AlertSeverity,
    /// Before an escalation.
    pub previous_severity: Option<AlertSeverity>,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
    /// Who acknowledged; null for the system.
    pub by: Option<String>,
}

impl From<AlertEvent> for AlertChangeView {
    fn from(e: AlertEvent) -> Self {
        Self {
            seq: e.seq.unwrap_or_default(),
            transition: e.transition,
            severity: e.severity,
            previous_severity: e.previous_severity,
            message: e.message,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
            at: utc(e.occurred_at),
            by: e.actor,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AlertChangeList {
    pub items: Vec<AlertChangeView>,
    pub next_cursor: Option<String>,
}

/// The data of one stream event: the alert as it is now, and the change.
#[derive(Serialize, ToSchema)]
pub struct AlertStreamItem {
    #[serde(flatten)]
    pub alert: AlertView,
    pub change: AlertChangeView,
}

fn stream_item(e: AlertEvent, a: Alert) -> AlertStreamItem {
    AlertStreamItem {
        alert: a.into(),
        change: e.into(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AlertList {
    pub items: Vec<AlertView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `open`, `acknowledged` or `resolved`.
    #[param(pattern = r"^(open|acknowledged|resolved)$")]
    pub status: Option<String>,
    /// e.g. `unit.expiring`.
    pub kind: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// Alerts (episodes), oldest first. `next_cursor` pages through this list by alert id; to
/// follow new alerts and their changes as they happen, use the stream, whose cursor follows
/// commit order.
#[utoipa::path(
    get, path = "/api/v1/alerts", operation_id = "list_alerts", tag = "alerts", security(("bearer" = [])), params(AlertQuery),
    responses((status = 200, description = "a page of alerts", body = AlertList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<AlertQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            AlertStatus::parse(s).ok_or_else(|| ApiError::field("status", "must be open, acknowledged or resolved"))?,
        ),
    };
    let limit = page_limit(q.limit)?;
    let after = decode_cursor(q.cursor.as_deref())?;
    let kind = q.kind;
    let (rows, next_cursor) = state
        .db(move |conn| work::list(conn, status, kind.as_deref(), after, limit))
        .await?;
    Ok(HttpResponse::Ok().json(AlertList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Acknowledge an open alert (409 `already_acknowledged` otherwise). For the event kinds the
/// scan does not own (those that end when acknowledged, in the README's table of alert kinds)
/// this ends the episode: the next occurrence opens a new alert. The scan's own kinds stay open
/// until their condition clears.
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, description = "the alert, acknowledged", body = AlertView),
        (status = 409, description = "`already_acknowledged`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ack(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "alert")?;
    let actor = caller.actor();
    let alert = state.write(move |conn| work::acknowledge(conn, &actor, id)).await?;
    Ok(HttpResponse::Ok().json(AlertView::from(alert)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertEventQuery {
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// The history of one alert, oldest first: its raise, each escalation and repeat (with that
/// occurrence's severity, message and details), acknowledgements and its resolution.
#[utoipa::path(
    get, path = "/api/v1/alerts/{id}/events", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), AlertEventQuery),
    responses((status = 200, description = "the alert's changes, oldest first", body = AlertChangeList))
)]
pub async fn events(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    query: web::Query<AlertEventQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "alert")?;
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let after = decode_cursor(q.cursor.as_deref())?;
    let (rows, next_cursor) = state.db(move |conn| work::events(conn, id, after, limit)).await?;
    Ok(HttpResponse::Ok().json(AlertChangeList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct JobView {
    pub name: String,
    /// The instance running it now, if any.
    pub holder: Option<String>,
    pub runs: i64,
    pub last_started_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_duration_ms: Option<i64>,
    pub last_raised: Option<i64>,
    pub last_escalated: Option<i64>,
    pub last_resolved: Option<i64>,
    pub last_expired: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub items: Vec<JobView>,
}

/// Background jobs and how they last ran.
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, description = "the background jobs and their last runs", body = JobList))
)]
pub async fn jobs(state: web::Data<AppState>, caller: AuthUser) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let rows = state.db(work::jobs).await?;
    Ok(HttpResponse::Ok().json(JobList {
        items: rows
            .into_iter()
            .map(|j| JobView {
                name: j.name,
                holder: j.holder,
                runs: j.runs,
                last_started_at: j.last_started_at.map(utc),
                last_finished_at: j.last_finished_at.map(utc),
                last_duration_ms: j.last_duration_ms,
                last_raised: j.last_raised,
                last_escalated: j.last_escalated,
                last_resolved: j.last_resolved,
                last_expired: j.last_expired,
                last_error: j.last_error,
            })
            .collect(),
    }))
}

/// Polling interval of the live stream (each connection reads new alert events this often).
const STREAM_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A server-sent-events stream of alert events for dashboards: every change of an alert
/// (`raised`, `escalated`, `repeated`, `acknowledged`, `resolved`) once, in commit order, as
/// `id: <event number>`, `event: <alert kind>`, `data: <the alert as it is now, with "change":
/// the change as it happened>`. Event numbers are assigned when the transaction commits, so an
/// alert whose transaction commits after a later one is never skipped. Resumes after
/// `Last-Event-ID`; without it, starts with events from now on. Comments keep idle connections
/// alive.
#[utoipa::path(
    get, path = "/api/v1/alerts/stream", tag = "alerts", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<i64>, Header, minimum = 0, nullable = false,
            description = "resume after this event number (the `id:` of the last event received)")),
    responses((status = 200, description = "text/event-stream of alert events; each `data:` is an `AlertStreamItem`",
               content_type = "text/event-stream", body = String),
              (status = 429, description = "`too_many_streams`: the account has `GRANULO_MAX_STREAMS_PER_ACCOUNT` streams open (API and console together); `Retry-After` says when a lapsed one frees its place", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub async fn stream(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let resume = match req.headers().get("Last-Event-ID") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::field("Last-Event-ID", "must be an event number"))?,
        ),
    };
    let after = match resume {
        Some(seq) => seq,
        None => state.db(work::last_event_seq).await?,
    };
    // One of the account's places among open streams, held until the stream is dropped.
    let lease = crate::services::limits::StreamLease::open(&state, caller.principal.subject()).await?;
    let body = futures_util::stream::unfold(
        (state, after, true, Some(lease)),
        |(state, after, first, lease)| async move {
            let mut lease = lease?;
            if !first {
                actix_web::rt::time::sleep(STREAM_POLL).await;
            }
            let due = lease.due();
            let renewing = due.is_some();
            let rows = state
                .db(move |conn| {
                    // The poll renews the lease; a lapsed one (taken meanwhile) ends the stream.
                    if let Some(id) = due
                        && !id.renew(conn)?
                    {
                        return Ok(None);
                    }
                    work::events_after(conn, after, 100).map(Some)
                })
                .await;
            if renewing && matches!(rows, Ok(Some(_))) {
                lease.renewed();
            }
            let (chunk, next, lease) = match rows {
                Ok(None) => (": stream lease lapsed; reconnect\n\n".to_owned(), after, None),
                Ok(Some(rows)) if rows.is_empty() => (": keep-alive\n\n".to_owned(), after, Some(lease)),
                Ok(Some(rows)) => {
                    let mut last = after;
                    let mut out = String::new();
                    for (e, a) in rows {
                        let Some(seq) = e.seq else { continue };
                        last = last.max(seq);
                        let kind = a.kind;
                        let data = serde_json::to_string(&stream_item(e, a)).unwrap_or_default();
                        out.push_str(&format!("id: {seq}\nevent: {kind}\ndata: {data}\n\n"));
                    }
                    (out, last, Some(lease))
                }
                Err(_) => (": database unavailable, retrying\n\n".to_owned(), after, Some(lease)),
            };
            Some((
                Ok::<_, actix_web::Error>(actix_web::web::Bytes::from(chunk)),
                (state, next, false, lease),
            ))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("Content-Encoding", "identity"))
        .streaming(body))
}
