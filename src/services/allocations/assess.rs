//! Compatibility of a unit for a patient (and a request): the facts the rules need, read from
//! the store, and the assessment at allocation and at issue.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{CrossmatchResult, FindingView};
use crate::domain::blood::Hla;
use crate::domain::compatibility::{
    self, Assessment, Context, CrossmatchFacts, Requirements, Stage, UnitFacts, Verdict,
};
use crate::domain::policy::Policy;
use crate::domain::requests::{self as request_rules};
use crate::domain::units::{self as unit_rules};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::services::{decisions, patients, requests, units};
use crate::services::{from_stored_json, utc};
use crate::store::allocations::{self as rows};
use crate::store::units::Unit;
use crate::store::{self, DbConn, donors as donor_rows, patients as patient_rows, units as unit_rows};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompatibilityView {
    #[schema(minimum = 1)]
    pub unit_id: i64,
    pub patient_id: i64,
    pub verdict: Verdict,
    pub reasons: Vec<FindingView>,
    /// Giving this unit needs an anti-D prophylaxis task (RhD-negative female of childbearing
    /// potential, RhD-positive unit).
    pub anti_d_prophylaxis: bool,
    /// Granulocytes per kg of the patient's weight in this unit.
    pub dose_per_kg: Option<f64>,
    /// With the request's other units due that day (only with `request_id`).
    pub day_dose_per_kg: Option<f64>,
}

/// An assessment's findings as the API shows them.
pub fn findings(a: &Assessment) -> Vec<FindingView> {
    a.reasons.iter().map(decisions::finding_view).collect()
}

/// What the rules need to know about a unit; the donor's HLA typing when it has one.
pub fn unit_facts(conn: &mut DbConn, u: &Unit) -> ApiResult<UnitFacts> {
    let donor_hla = match u.donor_id {
        Some(id) => donor_rows::find(conn, id)?
            .map(|d| from_stored_json::<Hla>("hla", &d.hla))
            .transpose()?
            .filter(|h| !h.is_empty()),
        None => None,
    };
    let v = units::view(conn, u.clone(), utc(store::now()))?;
    Ok(UnitFacts {
        abo: v.abo,
        rhd: v.rhd,
        cmv: v.cmv,
        donor_hla,
        irradiated: v.irradiated,
        released: v.release.is_some(),
        reactive: v.tests.iter().any(|t| t.result == unit_rules::TestResult::Positive),
        excursion_pending: v.holds.iter().any(|h| h == unit_rules::codes::EXCURSION_REVIEW),
        reserved_for: v.release.as_ref().and_then(|r| r.request_id),
        expires_at: v.expires_at,
        granulocyte_count: v.granulocyte_count,
    })
}

/// Every crossmatch recorded for the unit against any sample of the patient, with whether a
/// medical director resolved it: the rules decide which ones count.
pub fn crossmatch_facts(conn: &mut DbConn, unit_id: i64, patient_id: i64) -> ApiResult<Vec<CrossmatchFacts>> {
    let samples = patient_rows::samples_of(conn, patient_id)?;
    let ids: Vec<i64> = samples.iter().map(|s| s.id).collect();
    let found = rows::crossmatches_for(conn, unit_id, &ids)?;
    let resolved: Vec<i64> = rows::resolutions_of(conn, &found.iter().map(|x| x.id).collect::<Vec<_>>())?
        .into_iter()
        .map(|r| r.crossmatch_id)
        .collect();
    found
        .into_iter()
        .map(|x| {
            let valid_until = samples
                .iter()
                .find(|s| s.id == x.sample_id)
                .map(|s| utc(s.valid_until))
                .unwrap_or_else(|| utc(store::now()));
            Ok(CrossmatchFacts {
                id: x.id,
                kind: x.kind,
                compatible: x.result == CrossmatchResult::Compatible,
                resolved: resolved.contains(&x.id),
                sample_valid_until: valid_until,
            })
        })
        .collect()
}

/// The request a unit is judged for: its id, requirements, and the granulocytes of its other
/// units due the same day (allocated or issued, not yet transfused).
pub(super) struct ForRequest {
    id: Option<i64>,
    requirements: Requirements,
    day_granulocytes: f64,
}

impl ForRequest {
    pub(super) fn none() -> Self {
        Self {
            id: None,
            requirements: Requirements::default(),
            day_granulocytes: 0.0,
        }
    }

    pub(super) fn of(conn: &mut DbConn, r: &crate::store::requests::Request, unit_id: i64) -> ApiResult<Self> {
        let mut day_granulocytes = 0.0;
        for (unit, status, granulocytes) in rows::units_of_request(conn, r.id)? {
            if unit != unit_id && request_rules::is_active(status) {
                day_granulocytes += granulocytes;
            }
        }
        Ok(Self {
            id: Some(r.id),
            requirements: requests::Requirements::of(r),
            day_granulocytes,
        })
    }
}

pub(super) fn assess(
    conn: &mut DbConn,
    u: &Unit,
    patient_id: i64,
    request: &ForRequest,
    planned_at: DateTime<Utc>,
    stage: Stage,
    policy: &Policy,
) -> ApiResult<Assessment> {
    let found = patient_rows::find(conn, patient_id)?.ok_or_else(|| ApiError::not_found("patient"))?;
    let patient = patients::view(conn, found, policy)?;
    let facts = unit_facts(conn, u)?;
    let crossmatches = crossmatch_facts(conn, u.id, patient_id)?;
    let ctx = Context {
        crossmatches: &crossmatches,
        request_id: request.id,
        day_granulocytes: request.day_granulocytes,
        requirements: request.requirements,
        planned_at,
        now: utc(store::now()),
        stage,
    };
    Ok(compatibility::assess(&patients::facts(&patient), &facts, &ctx, policy))
}

/// Compatibility of a unit for a patient; with a request, also against its requirements and
/// its need time.
pub fn compatibility(
    conn: &mut DbConn,
    unit_id: i64,
    patient_id: i64,
    request_id: Option<i64>,
    planned_at: Option<DateTime<Utc>>,
    policy: &Policy,
) -> ApiResult<CompatibilityView> {
    let u =
        unit_rows::find(conn, unit_id)?.ok_or_else(|| ApiError::unknown(ErrorCode::UnknownUnit, "unit", unit_id))?;
    patients::find(conn, patient_id, None)
        .map_err(|e| e.or_unknown(ErrorCode::UnknownPatient, "patient", patient_id))?;
    let now = utc(store::now());
    let (request, needed_by) = match request_id {
        Some(id) => {
            let r =
                requests::find(conn, id, None).map_err(|e| e.or_unknown(ErrorCode::UnknownRequest, "request", id))?;
            if r.patient_id != patient_id {
                return Err(ApiError::refused(
                    ErrorCode::RequestOfAnotherPatient,
                    format!("request {id} is for another patient"),
                    vec![],
                ));
            }
            (ForRequest::of(conn, &r, unit_id)?, Some(utc(r.needed_by)))
        }
        None => (ForRequest::none(), None),
    };
    let planned = planned_at.or(needed_by).unwrap_or(now).max(now);
    let a = assess(conn, &u, patient_id, &request, planned, Stage::Allocation, policy)?;
    Ok(CompatibilityView {
        unit_id,
        patient_id,
        verdict: a.verdict,
        reasons: findings(&a),
        anti_d_prophylaxis: a.anti_d_prophylaxis,
        dose_per_kg: a.dose_per_kg,
        day_dose_per_kg: a.day_dose_per_kg,
    })
}
