//! Apheresis collections: booking, moving, and the procedure lifecycle (staff).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::with_policy;
use crate::auth::AuthUser;
use crate::domain::scheduling::CollectionStatus;
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::input::{decode_cursor, page_limit, parse_id};
use crate::services::collections::{
    self as work, AbortInput, CollectionView, CompleteInput, RescheduleInput, ScheduleInput, StartInput,
};
use crate::services::stored;
use crate::state::AppState;
use crate::store::collections::CollectionFilter;

#[derive(Serialize, ToSchema)]
pub struct CollectionList {
    pub items: Vec<CollectionView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CollectionQuery {
    pub status: Option<CollectionStatus>,
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub donor_id: Option<i64>,
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub device_id: Option<i64>,
    /// Planned start at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Planned start before this time.
    pub to: Option<DateTime<Utc>>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

const REFUSALS: &str = "`donor_ineligible` (reasons: every failing eligibility rule, `donor_already_booked`), \
    `device_busy`, `device_inactive`, `unknown_device`";
const SCHEDULE_REFUSALS: &str = "`donor_ineligible` (reasons: every failing eligibility rule, \
    `donor_already_booked`), `device_busy`, `device_inactive`, `unknown_donor`, `unknown_device`, `unknown_request`";

/// Book a collection for a donor on a device. The donor is checked at the scheduled start
/// (which may be in the past, for procedures recorded afterwards).
#[utoipa::path(
    post, path = "/api/v1/collections", operation_id = "create_collection", tag = "collections", security(("bearer" = [])), request_body = ScheduleInput,
    responses(
        (status = 201, description = "the collection booked", body = CollectionView),
        (status = 422, description = SCHEDULE_REFUSALS, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<ScheduleInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let actor = caller.actor();
    let input = body.into_inner();
    let created = state
        .write(with_policy(move |conn, policy| {
            work::schedule(conn, &actor, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// List collections, oldest booking first.
#[utoipa::path(
    get, path = "/api/v1/collections", operation_id = "list_collections", tag = "collections", security(("bearer" = [])), params(CollectionQuery),
    responses((status = 200, description = "a page of collections", body = CollectionList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<CollectionQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let filter = CollectionFilter {
        status: q.status.map(|s| s.as_str().to_owned()),
        donor_id: q.donor_id,
        device_id: q.device_id,
        from: q.from.map(stored),
        to: q.to.map(stored),
        after_id: decode_cursor(q.cursor.as_deref())?,
    };
    let (items, next_cursor) = state
        .db(with_policy(move |conn, policy| {
            work::list(conn, &filter, limit, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(CollectionList { items, next_cursor }))
}

/// One collection with its stimulations and their window warnings.
#[utoipa::path(
    get, path = "/api/v1/collections/{id}", operation_id = "get_collection", tag = "collections", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the collection", body = CollectionView))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "collection")?;
    let found = state
        .db(with_policy(move |conn, policy| work::get(conn, id, policy)))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Move a scheduled collection (time, device, length); the donor and device are checked again
/// and the stimulations' windows re-evaluated (`warnings`).
#[utoipa::path(
    patch, path = "/api/v1/collections/{id}", operation_id = "update_collection", tag = "collections", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = RescheduleInput,
    responses(
        (status = 200, description = "the collection, moved", body = CollectionView),
        (status = 409, description = "`invalid_transition`: not scheduled any more", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = REFUSALS, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<RescheduleInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "collection")?;
    let actor = caller.actor();
    let input = body.into_inner();
    let moved = state
        .write(with_policy(move |conn, policy| {
            work::reschedule(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(moved))
}

/// Start the procedure (the donor is checked again at the real start time).
#[utoipa::path(
    post, path = "/api/v1/collections/{id}/start", tag = "collections", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = StartInput,
    responses(
        (status = 200, description = "the collection, started", body = CollectionView),
        (status = 409, description = "`invalid_transition`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = REFUSALS, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<StartInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "collection")?;
    let actor = caller.actor();
    let input = body.into_inner();
    let started = state
        .write(with_policy(move |conn, policy| {
            work::start(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(started))
}

/// Complete the procedure with its data (HES volume and red cells lost count in the donor's
/// exposure; recorded once) and any donor adverse events.
#[utoipa::path(
    post, path = "/api/v1/collections/{id}/complete", operation_id = "complete_collection", tag = "collections", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = CompleteInput,
    responses(
        (status = 200, description = "the collection, completed", body = CollectionView),
        (status = 409, description = "`invalid_transition`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<CompleteInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "collection")?;
    let actor = caller.actor();
    let input = body.into_inner();
    let done = state
        .write(with_policy(move |conn, policy| {
            work::complete(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// Cancel a scheduled collection or stop a running one; a run that had started may record the
/// red cells and HES of the aborted run (they count in the donor's exposure).
#[utoipa::path(
    post, path = "/api/v1/collections/{id}/abort", tag = "collections", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = AbortInput,
    responses(
        (status = 200, description = "the collection, cancelled or stopped", body = CollectionView),
        (status = 409, description = "`invalid_transition`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn abort(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<AbortInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "collection")?;
    let actor = caller.actor();
    let input = body.into_inner();
    let aborted = state
        .write(with_policy(move |conn, policy| {
            work::abort(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(aborted))
}
