//! Hospital requests: create (idempotent), read, approve/decline, cancel, allocate.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::with_policy;
use crate::auth::{AuthUser, Role};
use crate::domain::requests::RequestStatus;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, parse_json};
use crate::input::{Text, decode_cursor, page_limit, parse_id};
use crate::services::allocations::{self as allocation_work, AllocateInput, AllocationView};
use crate::services::candidates::{self as matching, Candidates};
use crate::services::course_plans::{self as plan_work, AcceptInput, CoursePlanView};
use crate::services::idempotency;
use crate::services::requests::{self as work, Outcome, RequestInput, RequestView};
use crate::state::AppState;
use crate::store::audit::Actor;

#[derive(Serialize, ToSchema)]
pub struct RequestList {
    pub items: Vec<RequestView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RequestQuery {
    pub status: Option<RequestStatus>,
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CandidateQuery {
    /// When the donors would be collected (default: the next 08:00 UTC at least 12 h away).
    pub collection_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Units and donors returned, each (1–500, default 20).
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "indication not met: ANC above the policy threshold"}))]
pub struct ReasonBody {
    /// Up to 500 characters (required to decline).
    pub reason: Option<Text<0, 500>>,
}

/// Order a course. With `Idempotency-Key`, a retry with the same body returns the first answer
/// (also from another instance); the same key with another body is 422 `idempotency_key_reused`.
/// Starts `open`, or `pending_approval` when the policy's indication gate asks for it.
#[utoipa::path(
    post, path = "/api/v1/requests", operation_id = "create_request", tag = "requests", security(("bearer" = [])), request_body = RequestInput,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[\x21-\x7e]{1,255}$", description = "makes retries safe")),
    responses(
        (status = 201, description = "the request created (or, for a repeated `Idempotency-Key`, the first answer)", body = RequestView),
        (status = 422, description = "`unknown_patient` (also for another hospital's patient), `idempotency_key_reused`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`hospital_daily_cap_reached`: the hospital placed `policy.security.hospital_daily_request_cap` requests today (the facility's day); `Retry-After` is the next day", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    req: HttpRequest,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let key = idempotency::parse_key(req.headers().get("Idempotency-Key"))?;
    let input: RequestInput = parse_json(&body)?;
    let actor = caller.actor();
    let attempt = key.map(|key| idempotency::Attempt {
        account: idempotency::account(&actor),
        key,
        method: "POST".to_owned(),
        path: req.path().to_owned(),
        body_hash: idempotency::body_hash(&body),
    });
    let a = attempt.clone();
    let tz = state.settings.timezone;
    let outcome = state
        .write(with_policy(move |conn, policy| {
            work::create_idempotent(conn, &actor, a.as_ref(), input, scope, policy, tz)
        }))
        .await;
    let outcome = match (outcome?, attempt) {
        // A concurrent retry committed first: answer from its stored response.
        (Outcome::LostRace, Some(attempt)) => state.db(move |conn| work::replay_winner(conn, &attempt)).await?,
        (other, _) => other,
    };
    Ok(match outcome {
        Outcome::Created(view) => HttpResponse::Created().json(view),
        Outcome::Replayed(answer) => super::idempotency::replayed(answer),
        Outcome::LostRace => return Err(ApiError::internal(anyhow::anyhow!("lost a race without a key"))),
    })
}

/// Requests the caller may see, oldest first.
#[utoipa::path(
    get, path = "/api/v1/requests", operation_id = "list_requests", tag = "requests", security(("bearer" = [])), params(RequestQuery),
    responses((status = 200, description = "a page of requests", body = RequestList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<RequestQuery>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let after = decode_cursor(q.cursor.as_deref())?;
    let status = q.status;
    let (items, next_cursor) = state
        .db(with_policy(move |conn, policy| {
            work::list(conn, scope, status, after, limit, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(RequestList { items, next_cursor }))
}

/// One request with its course so far.
#[utoipa::path(
    get, path = "/api/v1/requests/{id}", operation_id = "get_request", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the request with its course", body = RequestView))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "request")?;
    let found = state
        .db(with_policy(move |conn, policy| work::get(conn, id, scope, policy)))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

async fn decide(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<ReasonBody>,
    approve: bool,
) -> ApiResult<HttpResponse> {
    caller.require(&[Role::MedicalDirector])?;
    let id = parse_id(&id, "request")?;
    let (actor, reason) = (caller.actor(), body.into_inner().reason);
    let decided = state
        .write(with_policy(move |conn, policy| {
            work::decide(conn, &actor, id, approve, reason.as_deref(), policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(decided))
}

/// Approve a request waiting for the clinical gate (medical director).
#[utoipa::path(
    post, path = "/api/v1/requests/{id}/approve", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = ReasonBody,
    responses(
        (status = 200, description = "the request, approved (open)", body = RequestView),
        (status = 409, description = "`invalid_transition`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn approve(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<ReasonBody>,
) -> ApiResult<HttpResponse> {
    decide(state, caller, id, body, true).await
}

/// Decline a request waiting for the clinical gate (medical director; reason required).
#[utoipa::path(
    post, path = "/api/v1/requests/{id}/decline", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = ReasonBody,
    responses(
        (status = 200, description = "the request, declined", body = RequestView),
        (status = 409, description = "`invalid_transition`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn decline(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<ReasonBody>,
) -> ApiResult<HttpResponse> {
    decide(state, caller, id, body, false).await
}

/// Cancel a request (the requesting hospital or staff); units only allocated go back.
#[utoipa::path(
    post, path = "/api/v1/requests/{id}/cancel", operation_id = "cancel_request", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = ReasonBody,
    responses(
        (status = 200, description = "the request, cancelled", body = RequestView),
        (status = 409, description = "`invalid_transition`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<ReasonBody>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "request")?;
    let (actor, reason) = (caller.actor(), body.into_inner().reason);
    let cancelled = state
        .write(with_policy(move |conn, policy| {
            allocation_work::cancel_request(conn, &actor, id, reason.as_deref(), scope, policy)?;
            work::get(conn, id, scope, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(cancelled))
}

/// Allocate a unit to the request. Blocks refuse (422 `incompatible`; `reserved_for_request` for
/// a unit released in an emergency for another request); acknowledge-tier findings need their
/// codes in `acknowledge`, authorise-tier ones an `authorisation` recorded by any staff member
/// (422 `acknowledgement_required` / `authorisation_required`); info findings are shown and
/// stored. A unit already taken answers 409 `unit_not_available`.
#[utoipa::path(
    post, path = "/api/v1/requests/{id}/allocations", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = AllocateInput,
    responses(
        (status = 201, description = "the allocation, with any warnings accepted", body = AllocationView),
        (status = 409, description = "`unit_not_available`, `request_not_open`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`incompatible`, `reserved_for_request`, `acknowledgement_required`, `authorisation_required` (with reasons), `unknown_unit`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn allocate(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<AllocateInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "request")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let created = state
        .write(with_policy(move |conn, policy| {
            allocation_work::allocate(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Ranked candidates: available units (compatible first, ABO-identical preferred, first-expiring
/// first among equals, dose, HLA) and donors to recruit for the next collection (eligible then,
/// ABO/RhD/CMV/HLA-suitable, least recently stimulated first), each with verdict and reasons.
#[utoipa::path(
    get, path = "/api/v1/requests/{id}/candidates", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), CandidateQuery), responses((status = 200, description = "ranked candidate units and donors, with reasons", body = Candidates))
)]
pub async fn candidates(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    query: web::Query<CandidateQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "request")?;
    let q = query.into_inner();
    let limit = usize::try_from(q.limit.map_or(Ok(20), |l| page_limit(Some(l)))?).unwrap_or(20);
    let index = state.donor_index.clone();
    let found = state
        .db(with_policy(move |conn, policy| {
            matching::candidates(conn, id, q.collection_at, limit, policy, Some(&index))
        }))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Propose a roster for the rest of the course: for each remaining day, a donor (with the
/// stimulation the evening before, the device and slot, and the findings of its future unit for
/// the patient), a unit already on its way, or why the day cannot be covered. Exact against the
/// stated objective (docs/matching.md, "Course planner"). While a plan is in force this is a
/// repair: days whose booking still holds are kept, and only the broken days are planned again.
/// The proposal is kept until a later one is made; accept it with `plan/accept`.
#[utoipa::path(
    post, path = "/api/v1/requests/{id}/plan", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 201, description = "the proposed roster", body = CoursePlanView))
)]
pub async fn plan(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "request")?;
    let proposed = propose_plan(&state, caller.actor(), id).await?;
    Ok(HttpResponse::Created().json(proposed))
}

/// Plans in a read-only hop, then keeps the proposal in a short write: the planning reads every
/// donor, and holding the write lock for it would queue every other write behind it.
pub(crate) async fn propose_plan(state: &AppState, actor: Actor, id: i64) -> ApiResult<CoursePlanView> {
    let (index, tz) = (state.donor_index.clone(), state.settings.timezone);
    let now = crate::services::utc(crate::store::now());
    let proposal = state
        .db(with_policy(move |conn, policy| {
            plan_work::plan_for(conn, id, policy, tz, Some(&index), now)
        }))
        .await?;
    state.write(move |conn| plan_work::keep(conn, &actor, proposal)).await
}

/// The request's latest course plan (proposed, accepted or superseded).
#[utoipa::path(
    get, path = "/api/v1/requests/{id}/plan", operation_id = "get_plan", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the latest plan", body = CoursePlanView))
)]
pub async fn get_plan(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "request")?;
    let found = state.db(move |conn| plan_work::latest(conn, id)).await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Book the proposal in one transaction: a collection per donor day (with the programme's
/// stimulations, which then fall due on the stimulation list), each checked again under the
/// donor's and the device's locks. If anything changed since the proposal (a slot taken, a
/// donor deferred, a unit gone), 409 `plan_changed` names each day and nothing is booked.
#[utoipa::path(
    post, path = "/api/v1/requests/{id}/plan/accept", tag = "requests", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = AcceptInput, responses((status = 200, description = "the accepted plan, with its collections", body = CoursePlanView))
)]
pub async fn accept_plan(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<AcceptInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "request")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let accepted = state
        .write(with_policy(move |conn, policy| {
            plan_work::accept(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(accepted))
}
