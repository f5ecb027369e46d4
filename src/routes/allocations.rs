//! Allocations (issue, return, cancel, transfusion outcome), crossmatches, compatibility and
//! the exceptions report.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::with_policy;
use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::input::{Text, decode_cursor, page_limit, parse_id};
use crate::services::allocations::{
    self as work, AllocationView, CompatibilityView, CrossmatchInput, CrossmatchView, ExceptionEntry, IssueInput,
    TransfusionInput,
};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "patient transferred to another hospital"}))]
pub struct EndRequest {
    /// Why, 1–500 characters.
    pub reason: Text<1, 500>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CompatibilityQuery {
    #[serde(deserialize_with = "crate::input::integral::required")]
    pub unit_id: i64,
    #[serde(deserialize_with = "crate::input::integral::required")]
    pub patient_id: i64,
    /// Judge against this request's requirements and need time too.
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub request_id: Option<i64>,
    /// Planned transfusion time (default: the request's `needed_by`, else now).
    pub at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ExceptionList {
    pub items: Vec<ExceptionEntry>,
    pub next_cursor: Option<String>,
}

const TRANSITION: &str = "`invalid_transition`, `unit_expired`";

/// One allocation (hospital accounts: their own).
#[utoipa::path(
    get, path = "/api/v1/allocations/{id}", operation_id = "get_allocation", tag = "allocations", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the allocation", body = AllocationView))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "allocation")?;
    let found = state.db(move |conn| work::get(conn, id, scope)).await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Issue the unit: every final check at this moment (irradiated, unexpired, released,
/// compatible crossmatch on a valid sample, scanned DIN equal to the unit's).
#[utoipa::path(
    post, path = "/api/v1/allocations/{id}/issue", tag = "allocations", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = IssueInput,
    responses(
        (status = 200, description = "the allocation, issued", body = AllocationView),
        (status = 409, description = TRANSITION, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`issue_refused` with a reason per failing check (every rule of allocation is applied again); `acknowledgement_required` / `authorisation_required` for findings that appeared since allocation", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<IssueInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "allocation")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let issued = state
        .write(with_policy(move |conn, policy| {
            work::issue(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(issued))
}

/// An issued unit comes back: quarantined (reason `returned`) until it is inspected
/// (`POST /units/{id}/inspection`); discarded if it has expired.
#[utoipa::path(
    post, path = "/api/v1/allocations/{id}/return", tag = "allocations", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = EndRequest,
    responses(
        (status = 200, description = "the allocation, returned", body = AllocationView),
        (status = 409, description = TRANSITION, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn return_unit(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<EndRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "allocation")?;
    let (actor, reason) = (caller.actor(), body.into_inner().reason);
    let returned = state
        .write(with_policy(move |conn, policy| {
            work::return_unit(conn, &actor, id, &reason, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(returned))
}

/// Cancel an allocation not yet issued; the unit goes back to the bank.
#[utoipa::path(
    post, path = "/api/v1/allocations/{id}/cancel", operation_id = "cancel_allocation", tag = "allocations", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = EndRequest,
    responses(
        (status = 200, description = "the allocation, cancelled", body = AllocationView),
        (status = 409, description = TRANSITION, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<EndRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "allocation")?;
    let (actor, reason) = (caller.actor(), body.into_inner().reason);
    let cancelled = state.write(move |conn| work::cancel(conn, &actor, id, &reason)).await?;
    Ok(HttpResponse::Ok().json(cancelled))
}

/// Record the transfusion outcome (the receiving hospital or staff); the ANC increment is
/// computed.
#[utoipa::path(
    post, path = "/api/v1/allocations/{id}/transfusion", tag = "allocations", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = TransfusionInput,
    responses(
        (status = 200, description = "the allocation with its transfusion outcome", body = AllocationView),
        (status = 409, description = TRANSITION, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn transfusion(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<TransfusionInput>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "allocation")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let done = state
        .write(with_policy(move |conn, policy| {
            work::transfusion(conn, &actor, id, input, scope, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// Record a crossmatch of a unit against a patient sample. Results are kept: an incompatible
/// one blocks the unit for the patient until a medical director resolves it.
#[utoipa::path(
    post, path = "/api/v1/crossmatches", tag = "allocations", security(("bearer" = [])), request_body = CrossmatchInput,
    responses(
        (status = 201, description = "the crossmatch recorded", body = CrossmatchView),
        (status = 422, description = "`unknown_unit`, `unknown_sample`; `electronic_crossmatch_not_allowed` with reasons `group_unconfirmed`, `antibodies_recorded`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn crossmatch(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<CrossmatchInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let created = state
        .write(with_policy(move |conn, policy| {
            work::record_crossmatch(conn, &actor, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Is this unit compatible with this patient? Every finding with its severity.
#[utoipa::path(
    get, path = "/api/v1/compatibility", tag = "allocations", security(("bearer" = [])), params(CompatibilityQuery),
    responses(
        (status = 200, description = "the verdict with every finding", body = CompatibilityView),
        (status = 422, description = "`unknown_unit`, `unknown_patient`, `unknown_request`, `request_of_another_patient`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn compatibility(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<CompatibilityQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    let found = state
        .db(with_policy(move |conn, policy| {
            work::compatibility(conn, q.unit_id, q.patient_id, q.request_id, q.at, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExceptionQuery {
    /// `false`: only allocations with an authorisation waiting for a medical director's sign-off;
    /// `true`: only those fully signed off; absent: all.
    pub signed_off: Option<bool>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// The exceptions report: allocations accepted over authorise-tier findings, with who
/// authorised them by phone, and their medical director's sign-off.
#[utoipa::path(
    get, path = "/api/v1/reports/exceptions", tag = "allocations", security(("bearer" = [])), params(ExceptionQuery),
    responses((status = 200, description = "the allocations accepted over authorise-tier findings", body = ExceptionList))
)]
pub async fn exceptions(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<ExceptionQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let after = decode_cursor(q.cursor.as_deref())?;
    let (items, next_cursor) = state
        .db(move |conn| work::exceptions(conn, q.signed_off, after, limit))
        .await?;
    Ok(HttpResponse::Ok().json(ExceptionList { items, next_cursor }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"comment": "reviewed: CMV-negative stock was exhausted; appropriate"}))]
pub struct SignOffRequest {
    /// 1–500 characters.
    pub comment: Text<1, 500>,
}

/// A medical director signs off the authorisations recorded on an allocation.
#[utoipa::path(
    post, path = "/api/v1/allocations/{id}/sign-off", tag = "allocations", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = SignOffRequest,
    responses(
        (status = 200, description = "the allocation, signed off", body = AllocationView),
        (status = 409, description = "`nothing_to_sign_off`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn sign_off(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<SignOffRequest>,
) -> ApiResult<HttpResponse> {
    caller.require(&[crate::auth::Role::MedicalDirector])?;
    let id = parse_id(&id, "allocation")?;
    let (actor, comment) = (caller.actor(), body.into_inner().comment);
    let signed = state
        .write(move |conn| work::sign_off(conn, &actor, id, &comment))
        .await?;
    Ok(HttpResponse::Ok().json(signed))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "repeat crossmatch on a fresh sample compatible; first result a clerical error, investigated"}))]
pub struct ResolveRequest {
    /// Why the incompatible result no longer stands, 1–500 characters.
    pub reason: Text<1, 500>,
}

/// Resolve an incompatible crossmatch (medical director): it no longer blocks the unit for the
/// patient. The result itself is kept as recorded.
#[utoipa::path(
    post, path = "/api/v1/crossmatches/{id}/resolve", tag = "allocations", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = ResolveRequest,
    responses(
        (status = 200, description = "the crossmatch, resolved", body = CrossmatchView),
        (status = 409, description = "`crossmatch_not_incompatible`, `already_resolved`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resolve_crossmatch(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<ResolveRequest>,
) -> ApiResult<HttpResponse> {
    caller.require(&[crate::auth::Role::MedicalDirector])?;
    let id = parse_id(&id, "crossmatch")?;
    let (actor, reason) = (caller.actor(), body.into_inner().reason);
    let resolved = state
        .write(move |conn| work::resolve_crossmatch(conn, &actor, id, &reason))
        .await?;
    Ok(HttpResponse::Ok().json(resolved))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CrossmatchQuery {
    #[param(minimum = 1)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub unit_id: Option<i64>,
    #[param(minimum = 1)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub patient_id: Option<i64>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CrossmatchList {
    pub items: Vec<CrossmatchView>,
    pub next_cursor: Option<String>,
}

/// Crossmatches of a unit and/or of a patient's samples, oldest first, with their resolutions.
#[utoipa::path(
    get, path = "/api/v1/crossmatches", tag = "allocations", security(("bearer" = [])), params(CrossmatchQuery),
    responses((status = 200, description = "the matching crossmatches, oldest first", body = CrossmatchList))
)]
pub async fn crossmatches(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<CrossmatchQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    for (field, id) in [("unit_id", q.unit_id), ("patient_id", q.patient_id)] {
        if id.is_some_and(|id| id < 1) {
            return Err(crate::error::ApiError::field(field, "must be a positive id"));
        }
    }
    let limit = page_limit(q.limit)?;
    let after = decode_cursor(q.cursor.as_deref())?;
    let (items, next_cursor) = state
        .db(move |conn| work::crossmatches(conn, q.unit_id, q.patient_id, after, limit))
        .await?;
    Ok(HttpResponse::Ok().json(CrossmatchList { items, next_cursor }))
}
