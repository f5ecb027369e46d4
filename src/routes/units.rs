//! Granulocyte units: creation, inventory, irradiation, tests, release, discard, storage
//! readings and labels (staff). A unit is addressed by id or DIN (with or without check
//! character).

use actix_web::{HttpResponse, web};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::with_policy;
use crate::auth::{AuthUser, Role};
use crate::domain::blood::{Abo, Rhd};
use crate::domain::units::UnitStatus;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::input::{Text, UnitKey, page_limit};
use crate::services::units::{
    self as work, CreateUnitInput, InspectionInput, InspectionView, IrradiationInput, Label, LocationReadingInput,
    ReadingInput, ReadingView, ReleaseInput, TestInput, UnitView,
};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct UnitList {
    pub items: Vec<UnitView>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UnitQuery {
    /// Status as of now (a unit past its expiry is `expired`).
    pub status: Option<UnitStatus>,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    /// Only units expiring within this many hours (1–720).
    #[param(minimum = 1, maximum = 720)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub expiring_within_hours: Option<u32>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,16}_[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "bag damaged in transport"}))]
pub struct DiscardRequest {
    /// Why (the discard, or the disposition), 1–500 characters.
    pub reason: Text<1, 500>,
}

/// Keyset cursor over (expires_at, id): `<expiry in µs since 1970>_<id>`.
fn encode_cursor((at, id): (NaiveDateTime, i64)) -> String {
    format!("{}_{id}", at.and_utc().timestamp_micros())
}

fn decode_cursor(cursor: Option<&str>) -> ApiResult<Option<(NaiveDateTime, i64)>> {
    let Some(cursor) = cursor else { return Ok(None) };
    let bad = || ApiError::field("cursor", "is not a cursor this server returned");
    let (micros, id) = cursor.split_once('_').ok_or_else(bad)?;
    let digits = |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(micros.strip_prefix('-').unwrap_or(micros), 16) || !digits(id, 18) {
        return Err(bad());
    }
    let micros = micros.parse::<i64>().map_err(|_| bad())?;
    let id = id.parse::<i64>().map_err(|_| bad())?;
    let at = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(bad)?
        .naive_utc();
    Ok(Some((at, id)))
}

const CHANGE_REFUSALS: &str = "409 `invalid_transition` or `unit_expired` (checked at the moment of the action)";

/// Create a unit. The server assigns (or validates) the DIN, derives `expires_at` from the
/// policy, and starts the unit in `quarantined`.
#[utoipa::path(
    post, path = "/api/v1/units", operation_id = "create_unit", tag = "units", security(("bearer" = [])), request_body = CreateUnitInput,
    responses(
        (status = 201, description = "the unit created, quarantined until tested", body = UnitView),
        (status = 409, description = "`din_exists`, `unit_exists`, `collection_not_completed`, `din_sequence_exhausted`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_collection`, `invalid_check_character`, `invalid_isbt128`, `unit_expired`, `pool_group_inconsistent` (with reasons `pool_abo_inconsistent`, `pool_rhd_inconsistent`)", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<CreateUnitInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let actor = caller.actor();
    let fin = state.settings.fin.clone();
    let tz = state.settings.timezone;
    let input = body.into_inner();
    let created = state
        .write(with_policy(move |conn, policy| {
            work::create(conn, &actor, &fin, tz, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Receive a supplier unit by scanning its label: the scanned ISBT 128 data strings (DIN,
/// blood group, product, expiry, collection) are decoded and their check character verified; a
/// structure not scanned is typed. A typed field that disagrees with the bag refuses the unit.
/// The unit is then created as `POST /units` creates a supplier unit.
#[utoipa::path(
    post, path = "/api/v1/units/receive", operation_id = "receive_unit", tag = "units", security(("bearer" = [])), request_body = work::ReceiveUnitInput,
    responses(
        (status = 201, description = "the unit created, quarantined until tested", body = UnitView),
        (status = 409, description = "`din_exists`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`label_mismatch` (reasons `din_mismatch`, `abo_mismatch`, `rhd_mismatch`, `product_code_mismatch`, `expires_at_mismatch`, `collected_at_mismatch`); `invalid_isbt128`, `invalid_check_character`, `unsupported_data_structure`, `label_not_accepted` (reasons `structure_missing`, `structure_repeated`, `blood_group_not_accepted`), each naming `scans[i]` and its structure; `unit_expired`, `pool_group_inconsistent`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn receive(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<work::ReceiveUnitInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let actor = caller.actor();
    let fin = state.settings.fin.clone();
    let tz = state.settings.timezone;
    let input = body.into_inner();
    let created = state
        .write(with_policy(move |conn, policy| {
            work::receive(conn, &actor, &fin, tz, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// The inventory, first-expiring first, with hours remaining.
#[utoipa::path(
    get, path = "/api/v1/units", operation_id = "list_units", tag = "units", security(("bearer" = [])), params(UnitQuery),
    responses((status = 200, description = "a page of the inventory", body = UnitList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<UnitQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    if q.expiring_within_hours.is_some_and(|h| !(1..=720).contains(&h)) {
        return Err(ApiError::field("expiring_within_hours", "must be between 1 and 720"));
    }
    let request = work::ListRequest {
        status: q.status,
        abo: q.abo,
        rhd: q.rhd,
        expiring_within_hours: q.expiring_within_hours,
        after: decode_cursor(q.cursor.as_deref())?,
        limit: page_limit(q.limit)?,
    };
    let (items, next) = state.db(move |conn| work::list(conn, request)).await?;
    Ok(HttpResponse::Ok().json(UnitList {
        items,
        next_cursor: next.map(encode_cursor),
    }))
}

/// One unit, by id or DIN. Hospital accounts see the units issued to their hospital.
#[utoipa::path(
    get, path = "/api/v1/units/{id_or_din}", operation_id = "get_unit", tag = "units", security(("bearer" = [])),
    params(("id_or_din" = String, Path, description = "numeric id, 13-character DIN, or DIN and check character")),
    responses((status = 200, description = "the unit: the full `UnitView` for staff; for a hospital account the `HospitalUnitView` of a unit issued to one of its requests (no donor, collection or pool-member ids, no staff usernames; any other unit is 404)", body = work::UnitRead))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, key: web::Path<String>) -> ApiResult<HttpResponse> {
    let scope = caller.scope()?;
    let key = UnitKey::parse(&key)?;
    let unit = state.db(move |conn| work::read(conn, &key, scope)).await?;
    Ok(HttpResponse::Ok().json(unit))
}

/// Record the irradiation (dose within the policy range, else 422 `irradiation_dose_out_of_range`).
#[utoipa::path(
    post, path = "/api/v1/units/{id}/irradiation", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), request_body = IrradiationInput,
    responses(
        (status = 200, description = "the unit, irradiated", body = UnitView),
        (status = 409, description = CHANGE_REFUSALS, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn irradiate(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    body: JsonBody<IrradiationInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let (actor, key, input) = (caller.actor(), UnitKey::parse(&key)?, body.into_inner());
    let unit = state
        .write(with_policy(move |conn, policy| {
            work::irradiate(conn, &actor, &key, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(unit))
}

/// Record an infectious-disease marker result; a positive one quarantines the unit (and alerts
/// when it had been released).
#[utoipa::path(
    post, path = "/api/v1/units/{id}/tests", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), request_body = TestInput,
    responses((status = 200, description = "the unit with the result recorded", body = UnitView))
)]
pub async fn record_test(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    body: JsonBody<TestInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let (actor, key, input) = (caller.actor(), UnitKey::parse(&key)?, body.into_inner());
    let unit = state
        .write(with_policy(move |conn, policy| {
            work::record_test(conn, &actor, &key, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(unit))
}

/// Release to `available`: every required marker negative, or an emergency release
/// (medical director) with a named physician's acknowledgement, for one request only (the unit
/// can then be allocated to that request alone). Never with a reactive result
/// on record, a reactive donor or an inspection due; a unit with a storage excursion only by a
/// medical director with an `excursion_disposition`.
#[utoipa::path(
    post, path = "/api/v1/units/{id}/release", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), request_body = ReleaseInput,
    responses(
        (status = 200, description = "the unit, released (available)", body = UnitView),
        (status = 409, description = "`invalid_transition`, `unit_expired`, `request_not_open`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_request`; `release_blocked` with reasons `marker_missing`, `marker_pending`, `marker_positive`, `donor_reactive_marker`, `inspection_required`, `excursion_review`, `not_irradiated`; `excursion_review` when a technologist releases a unit with an excursion", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn release(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    body: JsonBody<ReleaseInput>,
) -> ApiResult<HttpResponse> {
    let input = body.into_inner();
    if input.emergency {
        caller.require(&[Role::MedicalDirector])?;
    } else {
        caller.require_staff()?;
    }
    let (actor, key) = (caller.actor(), UnitKey::parse(&key)?);
    let director = caller.role == Role::MedicalDirector;
    let unit = state
        .write(with_policy(move |conn, policy| {
            work::release(conn, &actor, director, &key, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(unit))
}

/// A medical director's disposition of a unit's storage excursions without releasing it (for a
/// unit already in stock); a quarantined unit takes `excursion_disposition` on its release.
#[utoipa::path(
    post, path = "/api/v1/units/{id}/excursion-disposition", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), request_body = DiscardRequest,
    responses(
        (status = 200, description = "the unit with the disposition recorded", body = UnitView),
        (status = 409, description = "`no_excursion_pending`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disposition(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    body: JsonBody<DiscardRequest>,
) -> ApiResult<HttpResponse> {
    caller.require(&[Role::MedicalDirector])?;
    let (actor, key, reason) = (caller.actor(), UnitKey::parse(&key)?, body.into_inner().reason);
    let unit = state
        .write(move |conn| work::disposition_excursions(conn, &actor, &key, &reason))
        .await?;
    Ok(HttpResponse::Ok().json(unit))
}

/// Inspect a unit that came back after issue: `available` when acceptable, unexpired, out of
/// controlled storage within `unit.max_minutes_out_of_storage` and not reactive; otherwise
/// discarded (or still held while an excursion or a reactive donor holds it).
#[utoipa::path(
    post, path = "/api/v1/units/{id}/inspection", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), request_body = InspectionInput,
    responses(
        (status = 201, description = "the inspection recorded, with its outcome and the unit", body = InspectionView),
        (status = 409, description = "`no_inspection_due`, `invalid_transition`, `unit_expired`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn inspect(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    body: JsonBody<InspectionInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let (actor, key, input) = (caller.actor(), UnitKey::parse(&key)?, body.into_inner());
    let done = state
        .write(with_policy(move |conn, policy| {
            work::inspect(conn, &actor, &key, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(done))
}

/// Discard a unit (not once issued).
#[utoipa::path(
    post, path = "/api/v1/units/{id}/discard", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), request_body = DiscardRequest,
    responses(
        (status = 200, description = "the unit, discarded", body = UnitView),
        (status = 409, description = CHANGE_REFUSALS, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn discard(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    body: JsonBody<DiscardRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let (actor, key, reason) = (caller.actor(), UnitKey::parse(&key)?, body.into_inner().reason);
    let unit = state
        .write(move |conn| work::discard(conn, &actor, &key, &reason))
        .await?;
    Ok(HttpResponse::Ok().json(unit))
}

/// Record a storage temperature; outside the policy range an available or allocated unit is
/// quarantined and a `unit.quarantined` alert raised.
#[utoipa::path(
    post, path = "/api/v1/units/{id}/storage-readings", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), request_body = ReadingInput,
    responses((status = 201, description = "the reading recorded", body = ReadingView))
)]
pub async fn add_reading(
    state: web::Data<AppState>,
    caller: AuthUser,
    key: web::Path<String>,
    body: JsonBody<ReadingInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let (actor, key, input) = (caller.actor(), UnitKey::parse(&key)?, body.into_inner());
    let reading = state
        .write(with_policy(move |conn, policy| {
            work::record_reading(conn, &actor, &key, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(reading))
}

/// Record the temperature of a storage location; outside the policy range every available or
/// allocated unit kept there is quarantined (each with a `unit.quarantined` alert).
#[utoipa::path(
    post, path = "/api/v1/storage-readings", tag = "units", security(("bearer" = [])), request_body = LocationReadingInput,
    responses((status = 201, description = "the reading recorded, with the units it quarantined", body = ReadingView))
)]
pub async fn add_location_reading(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<LocationReadingInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let reading = state
        .write(with_policy(move |conn, policy| {
            work::record_location_reading(conn, &actor, input, policy)
        }))
        .await?;
    Ok(HttpResponse::Created().json(reading))
}

/// Label content and ISBT 128 data strings.
#[utoipa::path(
    get, path = "/api/v1/units/{id}/label", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id or DIN")), responses((status = 200, description = "the label content and its ISBT 128 data strings", body = Label))
)]
pub async fn label(state: web::Data<AppState>, caller: AuthUser, key: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let key = UnitKey::parse(&key)?;
    let facility = state.settings.facility_name.clone();
    let tz = state.settings.timezone;
    let label = state
        .db(with_policy(move |conn, policy| {
            work::label(conn, &key, &facility, tz, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(label))
}

/// The unit traced both ways: donor, stimulations, collection, irradiation, tests,
/// crossmatches, allocations, issue, outcome and recipients. The DIN of a donation that went
/// into a pool finds the pool (`matched_member_din`, and every such pool in `member_of`).
#[utoipa::path(
    get, path = "/api/v1/units/{id}/trace", tag = "units", security(("bearer" = [])),
    params(("id" = String, Path, description = "id, DIN, or the DIN of a donation in a pool")),
    responses((status = 200, description = "the unit's trace, from donor to recipient", body = crate::services::trace::Trace))
)]
pub async fn trace(state: web::Data<AppState>, caller: AuthUser, key: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let key = UnitKey::parse(&key)?;
    let found = state
        .db(with_policy(move |conn, policy| {
            crate::services::trace::unit_trace(conn, &key, policy)
        }))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursors_round_trip() {
        let at = chrono::DateTime::from_timestamp_micros(1_800_000_000_123_456)
            .expect("time")
            .naive_utc();
        assert_eq!(decode_cursor(Some(&encode_cursor((at, 7)))).expect("ok"), Some((at, 7)));
        assert_eq!(encode_cursor((at, 7)), "1800000000123456_7");
        assert!(decode_cursor(Some("djE6NDI")).is_err());
        assert!(decode_cursor(Some("???")).is_err());
        assert!(decode_cursor(Some("-_1")).is_err());
    }

    proptest! {
        #[test]
        fn keyset_cursors_round_trip_and_garbage_is_refused(
            text in any::<String>(),
            raw in "-?[0-9]{0,18}_?[0-9]{0,20}",
            micros in -9_999_999_999_999_999i64..=9_999_999_999_999_999,
            id in 0i64..1_000_000_000_000_000_000,
        ) {
            let _ = decode_cursor(Some(&text));
            let digits = |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
            let well_formed = raw.split_once('_').is_some_and(|(m, i)| digits(m.strip_prefix('-').unwrap_or(m), 16) && digits(i, 18));
            prop_assert_eq!(decode_cursor(Some(&raw)).is_ok(), well_formed);
            let at = chrono::DateTime::from_timestamp_micros(micros).expect("in range").naive_utc();
            prop_assert_eq!(decode_cursor(Some(&encode_cursor((at, id)))).ok(), Some(Some((at, id))));
        }
    }
}
