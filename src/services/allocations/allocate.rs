//! Allocation of a unit to a request (never twice) and its cancellation.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::assess::{ForRequest, assess};
use super::{AllocationView, as_reason, begin, move_unit, save, unit_not_available, view};
use crate::domain::compatibility::{self, Severity, Stage};
use crate::domain::policy::Policy;
use crate::domain::requests::{self as request_rules, AllocationAction, AllocationStatus, RequestAction};
use crate::domain::units::{self as unit_rules, UnitAction, UnitStatus};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::services::{decisions, requests};
use crate::services::{stored, to_value, utc};
use crate::store::allocations::{self as rows, AllocationData};
use crate::store::audit::{self, Actor, Change};
use crate::store::units::Unit;
use crate::store::{self, DbConn, units as unit_rows};

/// Claims the unit for an allocation: on PostgreSQL a contended unit is skipped at once
/// (`FOR UPDATE SKIP LOCKED`) instead of waited for; on both, the status change is guarded
/// (`WHERE status = 'available'`), so exactly one claimant wins.
fn claim(conn: &mut DbConn, u: &Unit, now: DateTime<Utc>) -> ApiResult<()> {
    if !unit_rows::lock_available_unless_contended(conn, u.id)? {
        return Err(unit_not_available(&u.din, "another allocation holds or is taking it"));
    }
    if !unit_rows::claim_available(conn, u.id, stored(now))? {
        return Err(unit_not_available(&u.din, "it is no longer available"));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"unit_id": 17, "acknowledge": ["rhd_mismatch"]}))]
pub struct AllocateInput {
    #[schema(minimum = 1)]
    pub unit_id: i64,
    /// Codes of the unit's acknowledge-tier findings the staff member acknowledges.
    #[schema(max_items = 50)]
    pub acknowledge: Option<Vec<String>>,
    /// Who authorised the unit over its authorise-tier findings (recorded by any staff member;
    /// a medical director signs it off later).
    pub authorisation: Option<decisions::AuthorisationInput>,
}

/// Allocates a unit to a request. Blocks refuse (422 `incompatible`, or `reserved_for_request`
/// for a unit released in an emergency for another request); findings of the acknowledge tier
/// need their codes in `acknowledge`, those of the authorise tier an `authorisation` (422
/// `acknowledgement_required` / `authorisation_required` otherwise); info findings are shown and
/// stored.
pub fn allocate(
    conn: &mut DbConn,
    actor: &Actor,
    request_id: i64,
    input: AllocateInput,
    policy: &Policy,
) -> ApiResult<AllocationView> {
    let now = utc(store::now());
    let (acknowledged, authorisation) = decisions::clean(input.acknowledge, input.authorisation, now)?;
    let r = requests::find(conn, request_id, None)?;
    crate::store::requests::lock(conn, request_id)?;
    let status = r.status;
    if request_rules::next_request_status(status, RequestAction::Allocate).is_none() {
        return Err(ApiError::new(
            ErrorCode::RequestNotOpen,
            format!("request {request_id} is {status}; only open requests take allocations"),
        ));
    }
    // A missing unit named in the body is refused (422): 404 is for the URL's request.
    let u = unit_rows::find(conn, input.unit_id)?.ok_or_else(|| {
        ApiError::refused(
            ErrorCode::UnknownUnit,
            format!("there is no unit {}", input.unit_id),
            vec![],
        )
    })?;
    let unit_status = unit_rules::effective_status(u.status, utc(u.expires_at), now);
    if unit_status != UnitStatus::Available {
        return Err(unit_not_available(&u.din, &format!("it is {unit_status}")));
    }
    let planned = utc(r.needed_by).max(now);
    let request = ForRequest::of(conn, &r, u.id)?;
    let a = assess(conn, &u, r.patient_id, &request, planned, Stage::Allocation, policy)?;
    let blocks = a.of_tier(Severity::Block);
    if !blocks.is_empty() {
        let reasons = blocks.iter().map(|f| as_reason(f)).collect();
        // A unit kept for another patient's request says so first.
        let code = if blocks
            .iter()
            .all(|f| f.code == compatibility::codes::RESERVED_FOR_REQUEST)
        {
            ErrorCode::ReservedForRequest
        } else {
            ErrorCode::Incompatible
        };
        return Err(ApiError::refused(
            code,
            format!("unit {} cannot be given to this patient", u.din),
            reasons,
        ));
    }
    let accepted: Vec<&compatibility::Finding> = a.reasons.iter().collect();
    decisions::check(
        accepted.iter().copied(),
        &acknowledged,
        authorisation.as_ref(),
        &format!("unit {} has findings to handle", u.din),
    )?;
    claim(conn, &u, now)?;
    let row = rows::insert(
        conn,
        &AllocationData {
            request_id,
            unit_id: u.id,
            status: AllocationStatus::Allocated,
            anti_d_task: a.anti_d_prophylaxis,
            allocated_by: actor.name.clone(),
            allocated_at: stored(now),
            issued_at: None,
            issued_by: None,
            scanned_din: None,
            ended_at: None,
            end_reason: None,
            transfusion_started_at: None,
            transfusion_ended_at: None,
            reaction: None,
            pre_anc_per_ul: None,
            post_anc_per_ul: None,
            anc_increment_per_ul: None,
            outcome_recorded_by: None,
            updated_at: stored(now),
        },
        stored(now),
    )
    .map_err(|e| {
        if store::is_unique_violation(&e) {
            unit_not_available(&u.din, "it is in another active allocation")
        } else {
            e.into()
        }
    })?;
    decisions::record(
        conn,
        row.id,
        Stage::Allocation,
        &accepted,
        &acknowledged,
        authorisation.as_ref(),
        actor,
        now,
    )?;
    let created = view(conn, row)?;
    audit::append_all(
        conn,
        actor,
        vec![
            Change::created("allocation.create", "allocation", created.id, to_value(&created)?),
            Change::updated(
                "unit.allocate",
                "unit",
                u.id,
                serde_json::json!({"status": "available"}),
                serde_json::json!({"status": "allocated", "allocation_id": created.id}),
            ),
        ],
    )?;
    Ok(created)
}

/// Releases an allocated (not yet issued) unit back to the bank (or to `expired`).
pub fn cancel(conn: &mut DbConn, actor: &Actor, id: i64, reason: &str) -> ApiResult<AllocationView> {
    let now = utc(store::now());
    let (a, to, u) = begin(conn, id, AllocationAction::Cancel, None)?;
    cancel_holding(conn, &u, now)?;
    let mut data = AllocationData::from(a.clone());
    data.status = to;
    data.ended_at = Some(stored(now));
    data.end_reason = Some(reason.to_owned());
    data.updated_at = stored(now);
    save(conn, actor, "allocation.cancel", a, data)
}

/// The unit of a cancelled allocation goes back to `available`, or to `expired` if it is. A
/// unit that left `allocated` meanwhile (quarantined by a reading or a result, swept to
/// `expired`, discarded) stays as it is.
fn cancel_holding(conn: &mut DbConn, u: &Unit, now: DateTime<Utc>) -> ApiResult<()> {
    let stored_status = u.status;
    if stored_status != UnitStatus::Allocated {
        return Ok(());
    }
    match unit_rules::transition(stored_status, UnitAction::Deallocate, utc(u.expires_at), now) {
        Ok(_) => move_unit(conn, u, UnitAction::Deallocate, None, now).map(|_| ()),
        Err(_) => move_unit(conn, u, UnitAction::Expire, None, now).map(|_| ()),
    }
}

/// Cancels a request (the requesting hospital or staff) and every allocation of it that still
/// only holds its unit, which goes back to stock; issued units stay with the patient.
pub fn cancel_request(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    reason: Option<&str>,
    scope: Option<i64>,
    policy: &crate::domain::policy::Policy,
) -> ApiResult<()> {
    crate::services::requests::cancel(conn, actor, id, reason, scope, policy)?;
    cancel_for_request(conn, actor, id)
}

/// Cancels every allocation of a request that still only holds its unit.
fn cancel_for_request(conn: &mut DbConn, actor: &Actor, request_id: i64) -> ApiResult<()> {
    for a in rows::of_request(conn, request_id)? {
        if a.status == AllocationStatus::Allocated {
            cancel(conn, actor, a.id, "request cancelled")?;
        }
    }
    Ok(())
}
