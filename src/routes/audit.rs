//! The audit trail, newest first (admin and medical director).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::utc;
use crate::auth::{AuthUser, Role};
use crate::error::ApiResult;
use crate::input::{decode_cursor, page_limit, paginate};
use crate::state::AppState;
use crate::store::audit::{self, AuditFilter, AuditRow};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// e.g. `user`, `hospital`, `donor`, `unit`.
    pub entity_type: Option<String>,
    /// Alone, matches that id in every entity type.
    pub entity_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditActor {
    /// `user`, `client` or `system`.
    pub kind: String,
    pub id: Option<i64>,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: AuditActor,
    /// e.g. `user.create`.
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

fn parse_json(text: Option<String>) -> Option<serde_json::Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            at: utc(r.occurred_at),
            actor: AuditActor {
                kind: r.actor_kind,
                id: r.actor_id,
                name: r.actor_name,
            },
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            before: parse_json(r.before_json),
            after: parse_json(r.after_json),
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// Read the audit trail, optionally for one entity.
#[utoipa::path(
    get, path = "/api/v1/audit", operation_id = "list_audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, description = "a page of audit entries", body = AuditList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<AuditQuery>,
) -> ApiResult<HttpResponse> {
    caller.require(&[Role::Admin, Role::MedicalDirector])?;
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let filter = AuditFilter {
        entity_type: q.entity_type,
        entity_id: q.entity_id,
        before_id: decode_cursor(q.cursor.as_deref())?,
        limit: limit + 1,
    };
    let rows = state
        .db(move |conn| audit::list(conn, &filter).map_err(Into::into))
        .await?;
    let (rows, next_cursor) = paginate(rows, limit, |r| r.id);
    Ok(HttpResponse::Ok().json(AuditList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
