//! Absolute neutrophil counts a hospital (or the blood bank) reports for a patient, optionally for
//! one allocation (FHIR `Observation` LOINC 751-8): appended, never changed, audited. A count that
//! names an allocation feeds that transfusion's outcome (`services::outcomes`).
//!
//! The only writer is the FHIR facade, so field errors name FHIR elements.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{MAX_ANC, find as find_allocation};
use crate::domain::outcome::AncStatus;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::services::{not_future, patients, stored, to_value, utc};
use crate::store::anc_results::{self as rows, AncResult, NewAncResult};
use crate::store::audit::{self, Actor, Change};
use crate::store::{self, DbConn};

/// A count as recorded (what the audit trail keeps and the FHIR Observation shows).
#[derive(Debug, Clone, Serialize)]
pub struct AncRecord {
    pub id: i64,
    pub patient_id: i64,
    pub allocation_id: Option<i64>,
    pub anc_per_ul: i32,
    pub effective_at: DateTime<Utc>,
    pub status: AncStatus,
    pub recorded_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<AncResult> for AncRecord {
    fn from(r: AncResult) -> Self {
        Self {
            id: r.id,
            patient_id: r.patient_id,
            allocation_id: r.allocation_id,
            anc_per_ul: r.anc_per_ul,
            effective_at: utc(r.effective_at),
            status: r.status,
            recorded_by: r.recorded_by,
            created_at: utc(r.created_at),
        }
    }
}

/// A count to record.
#[derive(Debug, Clone)]
pub struct AncInput {
    pub patient_id: i64,
    /// The allocation whose outcome it belongs to.
    pub allocation_id: Option<i64>,
    pub anc_per_ul: u32,
    pub effective_at: DateTime<Utc>,
    pub status: AncStatus,
}

/// Records a count for a patient the caller may see (422 `unknown_patient` otherwise) and, when
/// it names one, an allocation of that same patient the caller may see (422
/// `unknown_allocation`, `allocation_of_another_patient`). Audited on the allocation, else on
/// the patient.
pub fn record(conn: &mut DbConn, actor: &Actor, input: AncInput, scope: Option<i64>) -> ApiResult<AncRecord> {
    let now = utc(store::now());
    not_future("effectiveDateTime", input.effective_at, now)?;
    if input.anc_per_ul > MAX_ANC {
        return Err(ApiError::field(
            "valueQuantity",
            format!("must be at most {} /uL", MAX_ANC),
        ));
    }
    let anc_per_ul =
        i32::try_from(input.anc_per_ul).map_err(|_| ApiError::field("valueQuantity", "is out of range"))?;
    let patient = patients::find(conn, input.patient_id, scope)
        .map_err(|e| e.or_unknown(ErrorCode::UnknownPatient, "patient", input.patient_id))?;
    if let Some(id) = input.allocation_id {
        let a = find_allocation(conn, id, scope)
            .map_err(|e| e.or_unknown(ErrorCode::UnknownAllocation, "allocation", id))?;
        let request = store::requests::find(conn, a.request_id)?.ok_or_else(|| ApiError::not_found("request"))?;
        if request.patient_id != patient.id {
            return Err(ApiError::refused(
                ErrorCode::AllocationOfAnotherPatient,
                format!(
                    "allocation {id} (BiologicallyDerivedProductDispense/{id}) is for another patient, not Patient/{}",
                    patient.id
                ),
                Vec::new(),
            ));
        }
    }
    let row = rows::insert(
        conn,
        &NewAncResult {
            patient_id: patient.id,
            allocation_id: input.allocation_id,
            anc_per_ul,
            effective_at: stored(input.effective_at),
            status: input.status,
            recorded_by: &actor.name,
            created_at: stored(now),
        },
    )?;
    let created = AncRecord::from(row);
    let change = match created.allocation_id {
        Some(a) => Change::created("allocation.anc_result", "allocation", a, to_value(&created)?),
        None => Change::created("patient.anc_result", "patient", created.patient_id, to_value(&created)?),
    };
    audit::append(conn, actor, change)?;
    Ok(created)
}

/// One count, if the caller may see its patient.
pub fn find(conn: &mut DbConn, id: i64, scope: Option<i64>) -> ApiResult<AncRecord> {
    let row = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("neutrophil count"))?;
    patients::find(conn, row.patient_id, scope).map_err(|_| ApiError::not_found("neutrophil count"))?;
    Ok(row.into())
}

/// Every count of a patient, in order of recording (the caller has checked the patient is
/// visible).
pub fn of_patient(conn: &mut DbConn, patient_id: i64) -> ApiResult<Vec<AncRecord>> {
    Ok(rows::of_patients(conn, &[patient_id])?
        .into_iter()
        .map(AncRecord::from)
        .collect())
}
