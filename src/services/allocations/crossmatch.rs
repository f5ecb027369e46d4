//! Crossmatches: recording, a medical director's resolution of an incompatible one, listing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::compatibility::{self, CrossmatchKind};
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::input::Text;
use crate::services::patients;
use crate::services::{is_past, stored, to_value, utc};
use crate::store::allocations::{self as rows};
use crate::store::audit::{self, Actor, Change};
use crate::store::{self, DbConn, patients as patient_rows, units as unit_rows};

pub use crate::domain::compatibility::{CrossmatchMethod, CrossmatchResult};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"unit_id": 17, "sample_id": 9, "result": "compatible", "method": "iat"}))]
pub struct CrossmatchInput {
    #[schema(minimum = 1)]
    pub unit_id: i64,
    #[schema(minimum = 1)]
    pub sample_id: i64,
    pub result: CrossmatchResult,
    /// `electronic` only for a patient whose group of record is confirmed and who has no
    /// antibodies recorded (422 `electronic_crossmatch_not_allowed` otherwise).
    pub method: CrossmatchMethod,
    /// `red_cell` (default) or `leukocyte`; must agree with the method.
    pub kind: Option<CrossmatchKind>,
    /// Default: now.
    pub performed_at: Option<DateTime<Utc>>,
}

/// A medical director's resolution of an incompatible crossmatch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResolutionView {
    pub reason: String,
    pub resolved_by: String,
    pub resolved_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CrossmatchView {
    pub id: i64,
    #[schema(minimum = 1)]
    pub unit_id: i64,
    #[schema(minimum = 1)]
    pub sample_id: i64,
    pub patient_id: i64,
    pub kind: CrossmatchKind,
    pub result: CrossmatchResult,
    /// One of the `CrossmatchMethod` spellings; records made before methods were an
    /// enumeration keep their free text.
    pub method: String,
    pub performed_by: String,
    pub performed_at: DateTime<Utc>,
    /// The sample's validity, which bounds this crossmatch.
    pub valid_until: DateTime<Utc>,
    /// Set once a medical director resolved an incompatible result; until then it blocks the
    /// unit for this patient, whatever is recorded after it.
    pub resolution: Option<ResolutionView>,
}

fn crossmatch_view(
    x: rows::Crossmatch,
    sample: &crate::store::patients::Sample,
    resolution: Option<rows::Resolution>,
) -> ApiResult<CrossmatchView> {
    Ok(CrossmatchView {
        id: x.id,
        unit_id: x.unit_id,
        sample_id: x.sample_id,
        patient_id: sample.patient_id,
        kind: x.kind,
        result: x.result,
        method: x.method,
        performed_by: x.performed_by,
        performed_at: utc(x.performed_at),
        valid_until: utc(sample.valid_until),
        resolution: resolution.map(|r| ResolutionView {
            reason: r.reason,
            resolved_by: r.resolved_by,
            resolved_at: utc(r.resolved_at),
        }),
    })
}

pub fn record_crossmatch(
    conn: &mut DbConn,
    actor: &Actor,
    input: CrossmatchInput,
    policy: &Policy,
) -> ApiResult<CrossmatchView> {
    let now = utc(store::now());
    let at = utc(stored(input.performed_at.unwrap_or(now)));
    let mut v = crate::error::Validator::new();
    v.check(is_past(at, now), "performed_at", "must not be in the future");
    let kind = input.kind.unwrap_or(input.method.kind());
    v.check(
        kind == input.method.kind(),
        "method",
        format!(
            "{} is not a {} crossmatch method",
            input.method,
            kind.as_str().replace('_', "-")
        ),
    );
    v.finish()?;
    let u = unit_rows::find(conn, input.unit_id)?
        .ok_or_else(|| ApiError::unknown(ErrorCode::UnknownUnit, "unit", input.unit_id))?;
    let sample = patient_rows::find_sample(conn, input.sample_id)?
        .ok_or_else(|| ApiError::unknown(ErrorCode::UnknownSample, "sample", input.sample_id))?;
    if input.method == CrossmatchMethod::Electronic {
        let found = patient_rows::find(conn, sample.patient_id)?.ok_or_else(|| ApiError::not_found("patient"))?;
        let patient = patients::view(conn, found, policy)?;
        let antibodies = compatibility::alloimmunised(&patients::facts(&patient));
        let blockers =
            crate::domain::group::electronic_crossmatch_blockers(&patient.group_of_record.group(), antibodies);
        if !blockers.is_empty() {
            return Err(ApiError::refused(
                ErrorCode::ElectronicCrossmatchNotAllowed,
                "an electronic crossmatch is not allowed for this patient; crossmatch serologically",
                crate::services::reasons(blockers),
            ));
        }
    }
    if at < utc(sample.drawn_at) {
        return Err(ApiError::field(
            "performed_at",
            "must not be before the sample was drawn",
        ));
    }
    let row = rows::insert_crossmatch(
        conn,
        &rows::NewCrossmatch {
            unit_id: u.id,
            sample_id: sample.id,
            result: input.result,
            method: input.method.as_str(),
            performed_by: &actor.name,
            performed_at: stored(at),
            created_at: stored(now),
            kind,
        },
    )?;
    let created = crossmatch_view(row, &sample, None)?;
    audit::append(
        conn,
        actor,
        Change::created("unit.crossmatch", "unit", u.id, to_value(&created)?),
    )?;
    Ok(created)
}

/// A medical director resolves an incompatible crossmatch with a reason (audited): from then on
/// it no longer blocks the unit for the patient. The result itself is never changed.
pub fn resolve_crossmatch(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    reason: &Text<1, 500>,
) -> ApiResult<CrossmatchView> {
    let reason = reason.as_str();
    let x = rows::find_crossmatch(conn, id)?.ok_or_else(|| ApiError::not_found("crossmatch"))?;
    rows::lock_crossmatch(conn, id)?;
    if x.result != CrossmatchResult::Incompatible {
        return Err(ApiError::new(
            ErrorCode::CrossmatchNotIncompatible,
            format!("crossmatch {id} is compatible; only an incompatible result is resolved"),
        ));
    }
    if !rows::resolutions_of(conn, &[id])?.is_empty() {
        return Err(ApiError::new(
            ErrorCode::AlreadyResolved,
            format!("crossmatch {id} is already resolved"),
        ));
    }
    let sample = patient_rows::find_sample(conn, x.sample_id)?.ok_or_else(|| ApiError::not_found("sample"))?;
    let resolution =
        rows::insert_resolution(conn, id, reason, &actor.name, store::now()).map_err(crate::error::unique_as(
            ErrorCode::AlreadyResolved,
            format!("crossmatch {id} is already resolved"),
        ))?;
    let unit_id = x.unit_id;
    let resolved = crossmatch_view(x, &sample, Some(resolution))?;
    audit::append(
        conn,
        actor,
        Change::created(
            "unit.crossmatch_resolve",
            "unit",
            unit_id,
            serde_json::json!({"crossmatch_id": id, "patient_id": resolved.patient_id,
                               "resolution": to_value(&resolved.resolution)?}),
        ),
    )?;
    Ok(resolved)
}

/// One crossmatch with its resolution (404 when there is none).
pub fn find_crossmatch(conn: &mut DbConn, id: i64) -> ApiResult<CrossmatchView> {
    let x = rows::find_crossmatch(conn, id)?.ok_or_else(|| ApiError::not_found("crossmatch"))?;
    let sample = patient_rows::find_sample(conn, x.sample_id)?.ok_or_else(|| ApiError::not_found("sample"))?;
    let resolution = rows::resolutions_of(conn, &[id])?.into_iter().next();
    crossmatch_view(x, &sample, resolution)
}

/// Crossmatches of a unit, of a patient's samples, or both; oldest first.
pub fn crossmatches(
    conn: &mut DbConn,
    unit_id: Option<i64>,
    patient_id: Option<i64>,
    after_id: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<CrossmatchView>, Option<String>)> {
    let samples = match patient_id {
        Some(p) => Some(patient_rows::samples_of(conn, p)?),
        None => None,
    };
    let sample_ids: Option<Vec<i64>> = samples.as_ref().map(|list| list.iter().map(|s| s.id).collect());
    let found = rows::crossmatches_where(conn, unit_id, sample_ids.as_deref(), after_id, limit + 1)?;
    let (found, next) = crate::input::paginate(found, limit, |x| x.id);
    let ids: Vec<i64> = found.iter().map(|x| x.id).collect();
    let mut resolutions: std::collections::HashMap<i64, rows::Resolution> = rows::resolutions_of(conn, &ids)?
        .into_iter()
        .map(|r| (r.crossmatch_id, r))
        .collect();
    let mut out = Vec::with_capacity(found.len());
    for x in found {
        let sample = patient_rows::find_sample(conn, x.sample_id)?.ok_or_else(|| ApiError::not_found("sample"))?;
        let resolution = resolutions.remove(&x.id);
        out.push(crossmatch_view(x, &sample, resolution)?);
    }
    Ok((out, next))
}

/// Every crossmatch on the samples of several patients (staff), oldest first, with their
/// resolutions: a fixed number of queries however many patients.
pub fn crossmatches_of_patients(conn: &mut DbConn, patient_ids: &[i64]) -> ApiResult<Vec<CrossmatchView>> {
    let samples: std::collections::HashMap<i64, crate::store::patients::Sample> =
        patient_rows::samples_of_patients(conn, patient_ids)?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
    let sample_ids: Vec<i64> = samples.keys().copied().collect();
    let found = rows::crossmatches_for_samples(conn, &sample_ids)?;
    let ids: Vec<i64> = found.iter().map(|x| x.id).collect();
    let mut resolutions: std::collections::HashMap<i64, rows::Resolution> = rows::resolutions_of(conn, &ids)?
        .into_iter()
        .map(|r| (r.crossmatch_id, r))
        .collect();
    let mut out = Vec::with_capacity(found.len());
    for x in found {
        let sample = samples.get(&x.sample_id).ok_or_else(|| ApiError::not_found("sample"))?;
        let resolution = resolutions.remove(&x.id);
        out.push(crossmatch_view(x, sample, resolution)?);
    }
    out.sort_by_key(|x| x.id);
    Ok(out)
}
