//! Alert instances (staff): list and acknowledge.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{decode_cursor, page_limit, paginate, parse_id, utc};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::alerts::{self, Alert};
use crate::store::audit::{self, Change};

#[derive(Serialize, ToSchema)]
pub struct AlertView {
    pub id: i64,
    /// e.g. `unit.quarantined`, `unit.positive_result_after_release`.
    pub kind: String,
    /// `info`, `warning`, `urgent`.
    pub severity: String,
    /// `open`, `acknowledged` or `resolved` (the condition cleared).
    pub status: String,
    pub entity_type: String,
    pub entity_id: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
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
        }
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
    #[serde(default, deserialize_with = "super::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// Alerts, oldest first.
#[utoipa::path(
    get, path = "/api/v1/alerts", tag = "alerts", security(("bearer" = [])), params(AlertQuery),
    responses((status = 200, body = AlertList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<AlertQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    if q.status
        .as_deref()
        .is_some_and(|s| !["open", "acknowledged", "resolved"].contains(&s))
    {
        return Err(ApiError::field("status", "must be open, acknowledged or resolved"));
    }
    let limit = page_limit(q.limit)?;
    let after = decode_cursor(q.cursor.as_deref())?;
    let status = q.status;
    let kind = q.kind;
    let rows = state
        .db(move |conn| alerts::list(conn, status.as_deref(), kind.as_deref(), after, limit + 1).map_err(Into::into))
        .await?;
    let (rows, next_cursor) = paginate(rows, limit, |a| a.id);
    Ok(HttpResponse::Ok().json(AlertList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Acknowledge an open alert (409 `already_acknowledged` otherwise).
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = AlertView),
        (status = 409, description = "`already_acknowledged`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ack(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "alert")?;
    let actor = caller.actor();
    let alert = state
        .write(move |conn| {
            alerts::find(conn, id)?.ok_or_else(|| ApiError::not_found("alert"))?;
            if !alerts::acknowledge(conn, id, crate::store::now(), &actor.name)? {
                return Err(ApiError::conflict(
                    "already_acknowledged",
                    format!("alert {id} is not open"),
                ));
            }
            let alert = alerts::find(conn, id)?.ok_or_else(|| ApiError::not_found("alert"))?;
            audit::append(
                conn,
                &actor,
                Change::updated(
                    "alert.acknowledge",
                    "alert",
                    id,
                    serde_json::json!({"status": "open"}),
                    serde_json::json!({"status": "acknowledged"}),
                ),
            )?;
            Ok(alert)
        })
        .await?;
    Ok(HttpResponse::Ok().json(AlertView::from(alert)))
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
    responses((status = 200, body = JobList))
)]
pub async fn jobs(state: web::Data<AppState>, caller: AuthUser) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let rows = state
        .db(|conn| crate::store::jobs::all(conn).map_err(Into::into))
        .await?;
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
                last_resolved: j.last_resolved,
                last_expired: j.last_expired,
                last_error: j.last_error,
            })
            .collect(),
    }))
}

/// Polling interval of the live stream (each connection reads new alerts this often).
const STREAM_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A server-sent-events stream of alerts for dashboards: each alert once, as `event: <kind>`,
/// `id: <alert id>`, `data: <alert JSON>`. Resumes after `Last-Event-ID`; without it, starts
/// with alerts raised from now on. Comments keep idle connections alive.
#[utoipa::path(
    get, path = "/api/v1/alerts/stream", tag = "alerts", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<i64>, Header, description = "resume after this alert id")),
    responses((status = 200, description = "text/event-stream of alerts", content_type = "text/event-stream", body = String))
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
                .ok_or_else(|| ApiError::field("Last-Event-ID", "must be an alert id"))?,
        ),
    };
    let after = match resume {
        Some(id) => id,
        None => state.db(|conn| Ok(alerts::list_newest_id(conn)?.unwrap_or(0))).await?,
    };
    let body = futures_util::stream::unfold((state, after, true), |(state, after, first)| async move {
        if !first {
            actix_web::rt::time::sleep(STREAM_POLL).await;
        }
        let rows = state
            .db(move |conn| alerts::list(conn, None, None, Some(after), 100).map_err(Into::into))
            .await;
        let (chunk, next) = match rows {
            Ok(rows) if rows.is_empty() => (": keep-alive\n\n".to_owned(), after),
            Ok(rows) => {
                let last = rows.last().map_or(after, |a| a.id);
                let mut out = String::new();
                for a in rows {
                    let (id, kind) = (a.id, a.kind.clone());
                    let data = serde_json::to_string(&AlertView::from(a)).unwrap_or_default();
                    out.push_str(&format!("id: {id}\nevent: {kind}\ndata: {data}\n\n"));
                }
                (out, last)
            }
            Err(_) => (": database unavailable, retrying\n\n".to_owned(), after),
        };
        Some((
            Ok::<_, actix_web::Error>(actix_web::web::Bytes::from(chunk)),
            (state, next, false),
        ))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("Content-Encoding", "identity"))
        .streaming(body))
}
