//! Donors, their deferrals, outside donations, eligibility and stimulations (staff only).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::with_policy;
use crate::auth::AuthUser;
use crate::domain::blood::{Abo, Cmv, Rhd};
use crate::domain::stimulation::normalize_agent;
use crate::error::{ApiError, ApiResult, Reason};
use crate::extract::JsonBody;
use crate::input::{decode_cursor, page_limit, parse_id};
use crate::services::course_plans::{self as plan_work, AvailabilityInput, AvailabilityView};
use crate::services::donations::{self as donation_work, DonationInput, DonationView};
use crate::services::donors::{
    self as work, DeferralInput, DeferralView, DonorInput, DonorPatch, DonorView, ListRequest,
};
use crate::services::stimulations::{self as stimulation_work, StimulationInput, StimulationView};
use crate::state::AppState;
use crate::store::donors::DonorFilter;

#[derive(Serialize, ToSchema)]
pub struct DonorList {
    pub items: Vec<DonorView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeferralList {
    pub items: Vec<DeferralView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DonationList {
    pub items: Vec<DonationView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StimulationList {
    pub items: Vec<StimulationView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DonorQuery {
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub cmv: Option<Cmv>,
    /// Text found in the given name, family name or donor number (case-insensitive).
    pub q: Option<String>,
    /// Only donors eligible for a collection at this time (RFC 3339).
    pub eligible_at: Option<DateTime<Utc>>,
    /// Only active (`true`) or deactivated (`false`) donors.
    pub active: Option<bool>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EligibilityQuery {
    /// Default: now.
    pub at: Option<DateTime<Utc>>,
    /// Comma-separated stimulation agents to check against the donor's contraindications.
    #[param(
        pattern = r"^([^\S\x1c-\x1f]|,)*([A-Za-z][A-Za-z0-9_]{1,39}([^\S\x1c-\x1f]*,([^\S\x1c-\x1f]|,)*[A-Za-z][A-Za-z0-9_]{1,39})*)?([^\S\x1c-\x1f]|,)*$"
    )]
    pub agents: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EligibilityResponse {
    pub donor_id: i64,
    pub at: DateTime<Utc>,
    pub eligible: bool,
    /// Every failing rule, not just the first.
    pub reasons: Vec<Reason>,
}

/// Register a donor; the server assigns the donor number.
#[utoipa::path(
    post, path = "/api/v1/donors", operation_id = "create_donor", tag = "donors", security(("bearer" = [])), request_body = DonorInput,
    responses((status = 201, description = "the donor registered, with the donor number", body = DonorView))
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<DonorInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let actor = caller.actor();
    let input = body.into_inner();
    let donor = state
        .write(with_policy(move |conn, policy| {
            work::register(conn, &actor, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(donor))
}

/// List donors, with filters.
#[utoipa::path(
    get, path = "/api/v1/donors", operation_id = "list_donors", tag = "donors", security(("bearer" = [])), params(DonorQuery),
    responses((status = 200, description = "a page of donors", body = DonorList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<DonorQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    let limit = page_limit(q.limit)?;
    let text = match q.q.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) if t.chars().count() > 100 => return Err(ApiError::field("q", "must be at most 100 characters")),
        Some(t) => Some(t.to_lowercase()),
    };
    let request = ListRequest {
        filter: DonorFilter {
            abo: q.abo.map(|x| x.as_str().to_owned()),
            rhd: q.rhd.map(|x| x.as_str().to_owned()),
            cmv: q.cmv.map(|x| x.as_str().to_owned()),
            active: q.active,
            q: text,
            after_id: decode_cursor(q.cursor.as_deref())?,
        },
        eligible_at: q.eligible_at,
        limit,
    };
    let (items, next_cursor) = state
        .db(with_policy(move |conn, policy| work::list(conn, request, policy)))
        .await?;
    Ok(HttpResponse::Ok().json(DonorList { items, next_cursor }))
}

/// One donor.
#[utoipa::path(
    get, path = "/api/v1/donors/{id}", operation_id = "get_donor", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the donor", body = DonorView))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let donor = state.db(move |conn| work::get(conn, id)).await?;
    Ok(HttpResponse::Ok().json(donor))
}

/// Change a donor; `{"active": false}` deactivates.
#[utoipa::path(
    patch, path = "/api/v1/donors/{id}", operation_id = "update_donor", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = DonorPatch, responses((status = 200, description = "the donor, changed", body = DonorView))
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<DonorPatch>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let actor = caller.actor();
    let patch = body.into_inner();
    let donor = state
        .write(with_policy(move |conn, policy| {
            work::update(conn, &actor, id, patch, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(donor))
}

/// Defer a donor, temporarily (`until`) or permanently.
#[utoipa::path(
    post, path = "/api/v1/donors/{id}/deferrals", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = DeferralInput, responses((status = 201, description = "the deferral recorded", body = DeferralView))
)]
pub async fn defer(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<DeferralInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let actor = caller.actor();
    let input = body.into_inner();
    let created = state.write(move |conn| work::defer(conn, &actor, id, input)).await?;
    Ok(HttpResponse::Created().json(created))
}

/// The donor's deferrals, oldest first.
#[utoipa::path(
    get, path = "/api/v1/donors/{id}/deferrals", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the donor's deferrals", body = DeferralList))
)]
pub async fn deferrals(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let items = state.db(move |conn| work::deferrals(conn, id)).await?;
    Ok(HttpResponse::Ok().json(DeferralList {
        items,
        next_cursor: None,
    }))
}

/// Record a donation from another programme (feeds the interval rules).
#[utoipa::path(
    post, path = "/api/v1/donors/{id}/donations", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = DonationInput, responses((status = 201, description = "the donation recorded", body = DonationView))
)]
pub async fn add_donation(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<DonationInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let actor = caller.actor();
    let input = body.into_inner();
    let created = state
        .write(move |conn| donation_work::record_donation(conn, &actor, id, input))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// The donor's donations from other programmes, oldest first.
#[utoipa::path(
    get, path = "/api/v1/donors/{id}/donations", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the donor's donations", body = DonationList))
)]
pub async fn donations(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let items = state.db(move |conn| donation_work::donations(conn, id)).await?;
    Ok(HttpResponse::Ok().json(DonationList {
        items,
        next_cursor: None,
    }))
}

/// Is the donor eligible for a collection at `at`? Lists every failing rule.
#[utoipa::path(
    get, path = "/api/v1/donors/{id}/eligibility", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), EligibilityQuery), responses((status = 200, description = "the eligibility verdict with every failing rule", body = EligibilityResponse))
)]
pub async fn eligibility(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    query: web::Query<EligibilityQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let q = query.into_inner();
    let at = q.at.unwrap_or_else(Utc::now);
    let mut agents = Vec::new();
    for raw in q
        .agents
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|a| !a.trim().is_empty())
    {
        agents.push(
            normalize_agent(raw).ok_or_else(|| ApiError::field("agents", format!("{raw:?} is not an agent name")))?,
        );
    }
    let result = state
        .db(with_policy(move |conn, policy| {
            work::eligibility(conn, id, at, &agents, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(EligibilityResponse {
        donor_id: id,
        at,
        eligible: result.eligible,
        reasons: crate::services::reasons(result.reasons),
    }))
}

/// Record a stimulation given to the donor. `warnings` name a time outside the policy window
/// for the agent (relative to the linked collection's start) or a flagged contraindication.
#[utoipa::path(
    post, path = "/api/v1/donors/{id}/stimulations", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = StimulationInput,
    responses(
        (status = 201, description = "the stimulation recorded, with any window warnings", body = StimulationView),
        (status = 422, description = "`collection_of_other_donor`, `unknown_collection`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add_stimulation(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<StimulationInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let actor = caller.actor();
    let input = body.into_inner();
    let created = state
        .write(with_policy(move |conn, policy| {
            stimulation_work::record_stimulation(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// The donor's stimulations, oldest first.
#[utoipa::path(
    get, path = "/api/v1/donors/{id}/stimulations", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the donor's stimulations", body = StimulationList))
)]
pub async fn stimulations(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let items = state
        .db(with_policy(move |conn, policy| {
            stimulation_work::stimulations_of(conn, id, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(StimulationList {
        items,
        next_cursor: None,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LookbackQuery {
    /// Units collected at or after this time (RFC 3339).
    pub since: DateTime<Utc>,
}

/// Look-back: every unit from this donor since a date, with each consignee hospital and
/// recipient.
#[utoipa::path(
    get, path = "/api/v1/donors/{id}/lookback", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), LookbackQuery), responses((status = 200, description = "the donor's units since the date, with consignees and recipients", body = crate::services::trace::Lookback))
)]
pub async fn lookback(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    query: web::Query<LookbackQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let since = query.into_inner().since;
    let found = state
        .db(move |conn| crate::services::trace::lookback(conn, id, since))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[derive(Serialize, ToSchema)]
pub struct AvailabilityList {
    pub items: Vec<AvailabilityView>,
}

/// Record what the donor said about when they can come (`available: false` for dates they
/// cannot). Statements are kept; for each date the latest covering it holds, and the course
/// planner offers no slot on a date the donor cannot come.
#[utoipa::path(
    post, path = "/api/v1/donors/{id}/availability", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = AvailabilityInput, responses((status = 201, description = "the statement recorded", body = AvailabilityView))
)]
pub async fn state_availability(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<AvailabilityInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let created = state
        .write(move |conn| plan_work::state_availability(conn, &actor, id, input))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// The donor's availability statements, oldest first.
#[utoipa::path(
    get, path = "/api/v1/donors/{id}/availability", tag = "donors", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the donor's statements", body = AvailabilityList))
)]
pub async fn availability(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "donor")?;
    let items = state.db(move |conn| plan_work::availability_of(conn, id)).await?;
    Ok(HttpResponse::Ok().json(AvailabilityList { items }))
}
