//! The configurable rule table: staff read it, a medical director or admin replaces it.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::{AuthUser, Role};
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::services::policy::{self, CurrentPolicy};
use crate::state::AppState;

fn respond(current: CurrentPolicy) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.insert_header((header::ETAG, format!("\"{}\"", current.version)))
        .insert_header(("X-Policy-Version", current.version.to_string()));
    if let Some(at) = current.updated_at {
        res.insert_header(("X-Policy-Updated-At", at.to_rfc3339()));
    }
    res.json(current.policy)
}

/// The rule table in force. `ETag` carries its version (0 while the documented defaults apply).
#[utoipa::path(
    get, path = "/api/v1/policy", operation_id = "get_policy", tag = "policy", security(("bearer" = [])),
    responses((status = 200, description = "the rule table in force", body = Policy, headers(("ETag" = String, description = "the table's version, quoted"))))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let current = state.db(policy::current).await?;
    Ok(respond(current))
}

/// `If-Match: "<version>"` (optional) refuses the change if someone saved in between.
fn expected_version(req: &HttpRequest) -> ApiResult<Option<i64>> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::field("If-Match", "must be the quoted version from the ETag"))
}

/// Replace the whole table (every key required; unknown keys refused). Validated and audited.
#[utoipa::path(
    put, path = "/api/v1/policy", operation_id = "put_policy", tag = "policy", security(("bearer" = [])), request_body = Policy,
    params(("If-Match" = Option<String>, Header, pattern = r#"^(W/)?"?[0-9]{1,18}"?$"#, description = "the ETag last read; refuses the change if the table changed since")),
    responses(
        (status = 200, description = "the new rule table, in force", body = Policy),
        (status = 409, description = "`policy_changed`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
    body: JsonBody<Policy>,
) -> ApiResult<HttpResponse> {
    caller.require(&[Role::MedicalDirector, Role::Admin])?;
    let expected = expected_version(&req)?;
    let actor = caller.actor();
    let new = body.into_inner();
    let current = state
        .write(move |conn| policy::replace(conn, &actor, new, expected))
        .await?;
    Ok(respond(current))
}
