//! Patients and samples: hospital accounts create and see their own; staff see all.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::users::ListQuery;
use super::with_policy;
use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::input::{decode_cursor, page_limit, parse_id};
use crate::services::patients::{
    self as work, PatientInput, PatientPatch, PatientView, SampleInput, SampleView, TypingInput, TypingResult,
};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct PatientList {
    pub items: Vec<PatientView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SampleList {
    pub items: Vec<SampleView>,
    pub next_cursor: Option<String>,
}

/// Register a patient (MRN unique per hospital; 409 `mrn_taken`).
#[utoipa::path(
    post, path = "/api/v1/patients", operation_id = "create_patient", tag = "patients", security(("bearer" = [])), request_body = PatientInput,
    responses(
        (status = 201, description = "the patient registered", body = PatientView),
        (status = 409, description = "`mrn_taken`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_hospital`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<PatientInput>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let created = state
        .write(with_policy(move |conn, policy| {
            work::create(conn, &actor, input, scope, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Patients the caller may see.
#[utoipa::path(
    get, path = "/api/v1/patients", operation_id = "list_patients", tag = "patients", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "a page of patients", body = PatientList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let limit = page_limit(query.limit)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let (items, next_cursor) = state
        .db(with_policy(move |conn, policy| {
            work::list(conn, scope, after, limit, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(PatientList { items, next_cursor }))
}

/// One patient (another hospital's answers 404).
#[utoipa::path(
    get, path = "/api/v1/patients/{id}", operation_id = "get_patient", tag = "patients", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the patient", body = PatientView))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "patient")?;
    let patient = state
        .db(with_policy(move |conn, policy| work::get(conn, id, scope, policy)))
        .await?;
    Ok(HttpResponse::Ok().json(patient))
}

/// Change a patient.
#[utoipa::path(
    patch, path = "/api/v1/patients/{id}", operation_id = "update_patient", tag = "patients", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = PatientPatch,
    responses(
        (status = 200, description = "the patient, changed", body = PatientView),
        (status = 409, description = "`mrn_taken`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<PatientPatch>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "patient")?;
    let (actor, patch) = (caller.actor(), body.into_inner());
    let patient = state
        .write(with_policy(move |conn, policy| {
            work::update(conn, &actor, id, patch, scope, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(patient))
}

/// Record a crossmatch sample; `valid_until` comes from the policy.
#[utoipa::path(
    post, path = "/api/v1/patients/{id}/samples", tag = "patients", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = SampleInput, responses((status = 201, description = "the sample recorded, with `valid_until`", body = SampleView))
)]
pub async fn add_sample(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<SampleInput>,
) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "patient")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let sample = state
        .write(with_policy(move |conn, policy| {
            work::add_sample(conn, &actor, id, input, scope, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(sample))
}

/// The patient's samples.
#[utoipa::path(
    get, path = "/api/v1/patients/{id}/samples", tag = "patients", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the patient's samples", body = SampleList))
)]
pub async fn samples(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let id = parse_id(&id, "patient")?;
    let items = state.db(move |conn| work::samples(conn, id, scope)).await?;
    Ok(HttpResponse::Ok().json(SampleList {
        items,
        next_cursor: None,
    }))
}

/// Record the blood bank's ABO/RhD typing of a sample (staff only). Two concordant typings of
/// two samples drawn at different times confirm the patient's group of record; typings that
/// disagree, or a declared group that differs, raise `patient.group_discordant`.
#[utoipa::path(
    post, path = "/api/v1/samples/{id}/typing", tag = "patients", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = TypingInput,
    responses((status = 201, description = "the typing recorded, with the patient's group of record", body = TypingResult))
)]
pub async fn type_sample(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<TypingInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "sample")?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let done = state
        .write(with_policy(move |conn, policy| {
            work::type_sample(conn, &actor, id, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(done))
}
