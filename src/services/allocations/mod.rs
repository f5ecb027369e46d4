//! Compatibility, crossmatches, allocation (never twice), issue, return, cancel and the
//! transfusion outcome.
//!
//! Here: the allocation as the API shows it, the shared load-and-lock (`begin`), unit moves and
//! audited `save`, sign-off and the exceptions report. `assess`: compatibility; `crossmatch`;
//! `allocate` (and cancel); `issue` (and return); `transfusion`.

mod allocate;
mod assess;
pub mod counts;
mod crossmatch;
mod holders;
mod issue;
mod transfusion;

pub use allocate::{AllocateInput, allocate, cancel, cancel_request};
pub use assess::{CompatibilityView, compatibility, crossmatch_facts, findings, unit_facts};
pub use crossmatch::{
    CrossmatchInput, CrossmatchMethod, CrossmatchResult, CrossmatchView, ResolutionView, crossmatches,
    crossmatches_of_patients, find_crossmatch, record_crossmatch, resolve_crossmatch,
};
pub use holders::{Holder, holders};
pub use issue::{IssueInput, issue, return_unit};
pub use transfusion::{MAX_ANC, TransfusionInput, transfusion};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{stored, to_value, utc};
use crate::domain::compatibility::{self};
use crate::domain::requests::{self as request_rules, AllocationAction, AllocationStatus};
use crate::domain::units::{self as unit_rules, UnitAction, UnitStatus};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason};
use crate::services::outcomes::{self, AncResultView};
use crate::services::{decisions, requests};
use crate::store::allocations::{self as rows, Allocation, AllocationData};
use crate::store::audit::{self, Actor, Change};
use crate::store::units::{Unit, UnitData};
use crate::store::{DbConn, units as unit_rows};

pub use super::decisions::FindingView;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AllocationView {
    pub id: i64,
    pub request_id: i64,
    #[schema(minimum = 1)]
    pub unit_id: i64,
    pub din: String,
    pub patient_id: i64,
    pub hospital_id: i64,
    pub status: AllocationStatus,
    /// The findings accepted at allocation and at issue (every tier but block).
    pub warnings: Vec<FindingView>,
    /// Codes acknowledged, who recorded the authorisations and the medical director's
    /// sign-offs.
    #[serde(flatten)]
    pub acceptances: decisions::Acceptances,
    /// An anti-D prophylaxis task follows the transfusion (RhD-positive unit for an
    /// RhD-negative female of childbearing potential).
    pub anti_d_task: bool,
    pub allocated_by: String,
    pub allocated_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
    pub issued_by: Option<String>,
    pub scanned_din: Option<String>,
    /// Return or cancellation.
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub transfusion_started_at: Option<DateTime<Utc>>,
    pub transfusion_ended_at: Option<DateTime<Utc>>,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,498}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub reaction: Option<String>,
    /// As recorded with the transfusion; when not recorded there, the latest count in
    /// `anc_results` taken at or before the transfusion started.
    pub pre_anc_per_ul: Option<i32>,
    /// As recorded with the transfusion; when not recorded there, the earliest count in
    /// `anc_results` taken after the transfusion ended (after it started when no end is
    /// recorded).
    pub post_anc_per_ul: Option<i32>,
    /// post − pre ANC.
    pub anc_increment_per_ul: Option<i32>,
    /// Absolute neutrophil counts reported for this allocation (FHIR Observation LOINC 751-8
    /// with `focus` on the dispense), by time taken.
    pub anc_results: Vec<AncResultView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn view(conn: &mut DbConn, a: Allocation) -> ApiResult<AllocationView> {
    let din = unit_rows::find(conn, a.unit_id)?.map(|u| u.din).unwrap_or_default();
    let r = crate::store::requests::find(conn, a.request_id)?.ok_or_else(|| ApiError::not_found("request"))?;
    let mut acceptances = decisions::of_allocations(conn, &[a.id])?
        .remove(&a.id)
        .unwrap_or_default();
    let (anc_results, anc) = outcomes::of_allocation(conn, &a)?;
    Ok(AllocationView {
        warnings: std::mem::take(&mut acceptances.findings),
        acceptances,
        status: a.status,
        id: a.id,
        request_id: a.request_id,
        unit_id: a.unit_id,
        din,
        patient_id: r.patient_id,
        hospital_id: r.hospital_id,
        anti_d_task: a.anti_d_task,
        allocated_by: a.allocated_by,
        allocated_at: utc(a.allocated_at),
        issued_at: a.issued_at.map(utc),
        issued_by: a.issued_by,
        scanned_din: a.scanned_din,
        ended_at: a.ended_at.map(utc),
        end_reason: a.end_reason,
        transfusion_started_at: a.transfusion_started_at.map(utc),
        transfusion_ended_at: a.transfusion_ended_at.map(utc),
        reaction: a.reaction,
        pre_anc_per_ul: anc.pre,
        post_anc_per_ul: anc.post,
        anc_increment_per_ul: a.anc_increment_per_ul.or(anc.increment),
        anc_results,
        created_at: utc(a.created_at),
        updated_at: utc(a.updated_at),
    })
}

/// The allocation if the caller may see it (hospital accounts: their own requests only).
pub fn find(conn: &mut DbConn, id: i64, scope: Option<i64>) -> ApiResult<Allocation> {
    let a = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("allocation"))?;
    requests::find(conn, a.request_id, scope).map_err(|_| ApiError::not_found("allocation"))?;
    Ok(a)
}

pub fn get(conn: &mut DbConn, id: i64, scope: Option<i64>) -> ApiResult<AllocationView> {
    let a = find(conn, id, scope)?;
    view(conn, a)
}

fn unit_not_available(din: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnitNotAvailable,
        format!("unit {din} is not available: {why}"),
    )
}

fn as_reason(f: &compatibility::Finding) -> Reason {
    Reason {
        code: f.code.to_owned(),
        message: f.message.clone(),
    }
}

/// Loads and locks the allocation (and its unit) and checks the transition.
fn begin(
    conn: &mut DbConn,
    id: i64,
    action: AllocationAction,
    scope: Option<i64>,
) -> ApiResult<(Allocation, AllocationStatus, Unit)> {
    let a = find(conn, id, scope)?;
    // Lock order everywhere: request, allocation, unit (allocation takes request then unit).
    crate::store::requests::lock(conn, a.request_id)?;
    rows::lock(conn, id)?;
    unit_rows::lock(conn, a.unit_id)?;
    let from = a.status;
    let to = request_rules::next_allocation_status(from, action).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidTransition,
            format!("allocation {id} is {from}; it cannot {action}"),
        )
    })?;
    let u = unit_rows::find(conn, a.unit_id)?.ok_or_else(|| ApiError::not_found("unit"))?;
    Ok((a, to, u))
}

/// Moves the unit by `action`; `Err` names why the unit refuses.
fn move_unit(
    conn: &mut DbConn,
    u: &Unit,
    action: UnitAction,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> ApiResult<UnitStatus> {
    let to = unit_rules::transition(u.status, action, utc(u.expires_at), now)
        .map_err(|r| ApiError::new(r.into(), format!("unit {} cannot {action}", u.din)))?;
    let mut data = UnitData::from(u.clone());
    data.status = to;
    if reason.is_some() {
        data.status_reason = reason;
    }
    data.updated_at = stored(now);
    unit_rows::update(conn, u.id, &data)?;
    Ok(to)
}

fn save(
    conn: &mut DbConn,
    actor: &Actor,
    action: &str,
    before: Allocation,
    data: AllocationData,
) -> ApiResult<AllocationView> {
    let id = before.id;
    let before = view(conn, before)?;
    let row = rows::update(conn, id, &data)?;
    let after = view(conn, row)?;
    audit::append(
        conn,
        actor,
        Change::updated(action, "allocation", id, to_value(&before)?, to_value(&after)?),
    )?;
    Ok(after)
}

/// A medical director signs off the authorisations recorded on an allocation (it then leaves
/// the exceptions report's `signed_off=false` list). Audited.
pub fn sign_off(conn: &mut DbConn, actor: &Actor, id: i64, comment: &str) -> ApiResult<AllocationView> {
    let a = find(conn, id, None)?;
    rows::lock(conn, id)?;
    let before = view(conn, a.clone())?;
    decisions::sign_off(conn, actor, id, comment)?;
    let after = view(conn, a)?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "allocation.sign_off",
            "allocation",
            id,
            to_value(&before)?,
            to_value(&after)?,
        ),
    )?;
    Ok(after)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExceptionEntry {
    pub allocation_id: i64,
    pub request_id: i64,
    pub patient_id: i64,
    #[schema(minimum = 1)]
    pub unit_id: i64,
    pub din: String,
    /// The findings accepted, with their tiers.
    pub warnings: Vec<FindingView>,
    pub authorisations: Vec<decisions::AuthorisationView>,
    pub sign_offs: Vec<decisions::SignOffView>,
    /// An authorisation waits for a medical director's sign-off.
    pub awaiting_sign_off: bool,
    pub allocated_at: DateTime<Utc>,
    pub status: AllocationStatus,
}

/// Allocations accepted over authorise-tier findings (the exceptions report); `signed_off`
/// keeps those whose authorisations are all (or not all) signed off.
pub fn exceptions(
    conn: &mut DbConn,
    signed_off: Option<bool>,
    after_id: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<ExceptionEntry>, Option<String>)> {
    let ids = rows::authorised(conn, signed_off, after_id, limit + 1)?;
    let (ids, next) = crate::input::paginate(ids, limit, |id| *id);
    let mut out = Vec::new();
    for id in ids {
        let Some(a) = rows::find(conn, id)? else { continue };
        let v = view(conn, a)?;
        out.push(ExceptionEntry {
            allocation_id: v.id,
            request_id: v.request_id,
            patient_id: v.patient_id,
            unit_id: v.unit_id,
            din: v.din,
            warnings: v.warnings,
            authorisations: v.acceptances.authorisations,
            sign_offs: v.acceptances.sign_offs,
            awaiting_sign_off: v.acceptances.awaiting_sign_off,
            allocated_at: v.allocated_at,
            status: v.status,
        });
    }
    Ok((out, next))
}
