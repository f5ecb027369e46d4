//! Issue of an allocated unit (the final checks when the bag is scanned) and its return.

use serde::Deserialize;
use utoipa::ToSchema;

use super::assess::{ForRequest, assess};
use super::{AllocationView, as_reason, begin, move_unit, save, view};
use crate::domain::blood::UnitRhd;
use crate::domain::compatibility::{self, Severity, Stage};
use crate::domain::issue::{IssuedUnit, group_gate, issue_gate};
use crate::domain::policy::Policy;
use crate::domain::requests::AllocationAction;
use crate::domain::units::{UnitAction, UnitStatus};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason};
use crate::input::Text;
use crate::services::{decisions, requests};
use crate::services::{stored, utc};
use crate::store::allocations::{self as rows, AllocationData};
use crate::store::audit::{self, Actor, Change};
use crate::store::{self, DbConn, units as unit_rows};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scanned_din": "=A99992600012363"}))]
pub struct IssueInput {
    /// The DIN as scanned from the bag: 13 characters, with its check character, the `=`
    /// data structure with flags, or the eye-readable label typed in full (DIN, flags, check
    /// character; spaces ignored).
    #[schema(min_length = 1, max_length = 64)]
    pub scanned_din: String,
    /// The bag's blood group `=%ggre` as scanned, where the site's scanner sends it: a group
    /// other than the unit's (a pool labelled RhD pooled must read pooled) refuses the issue
    /// (`label_group_mismatch`).
    #[schema(max_length = 64)]
    pub scanned_group: Option<String>,
    /// Codes of acknowledge-tier findings that appeared since allocation.
    #[schema(max_items = 50)]
    pub acknowledge: Option<Vec<String>>,
    /// Who authorised the unit over authorise-tier findings that appeared since allocation.
    pub authorisation: Option<decisions::AuthorisationInput>,
}

/// Every final check at the moment of issue, under the rules that apply to allocation today;
/// refusals name each failing check. A finding that appeared since allocation (a new antibody,
/// a new typing, a CMV result), or one whose tier rose, is handled again by its tier.
pub fn issue(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    input: IssueInput,
    policy: &Policy,
) -> ApiResult<AllocationView> {
    let now = utc(store::now());
    let (acknowledged, authorisation) = decisions::clean(input.acknowledge, input.authorisation, now)?;
    let scanned = input.scanned_din.as_str();
    let (a, to, u) = begin(conn, id, AllocationAction::Issue, None)?;
    let r = requests::find(conn, a.request_id, None)?;
    // The scan must name the allocated unit, still held for this allocation (a storage
    // excursion or a positive result since allocation quarantines it).
    let unit = IssuedUnit {
        din: &u.din,
        status: u.status,
        status_reason: u.status_reason.as_deref(),
        expires_at: utc(u.expires_at),
    };
    let mut refusals: Vec<Reason> = issue_gate(scanned, unit, now)
        .iter()
        .map(|r| Reason {
            code: r.code().to_owned(),
            message: r.message(),
        })
        .collect();
    if let Some(scan) = input.scanned_group.as_deref() {
        let pooled = unit_rows::supply_of(conn, &[u.id])?
            .first()
            .is_some_and(|s| s.rhd_pooled);
        refusals.extend(group_gate(scan, u.abo, UnitRhd::of(u.rhd, pooled)).map(|r| Reason {
            code: r.code().to_owned(),
            message: r.message(),
        }));
    }
    let request = ForRequest::of(conn, &r, u.id)?;
    let a_now = assess(conn, &u, r.patient_id, &request, now, Stage::Issue, policy)?;
    refusals.extend(a_now.of_tier(Severity::Block).into_iter().map(as_reason));
    if !refusals.is_empty() {
        return Err(ApiError::refused(
            ErrorCode::IssueRefused,
            format!("unit {} cannot be issued", u.din),
            refusals,
        ));
    }
    let previous = decisions::accepted_tiers(&rows::decisions_of(conn, &[a.id])?)?;
    let new: Vec<&compatibility::Finding> = a_now
        .reasons
        .iter()
        .filter(|f| previous.get(f.code).is_none_or(|rank| *rank < f.severity.rank()))
        .collect();
    decisions::check(
        new.iter().copied(),
        &acknowledged,
        authorisation.as_ref(),
        &format!("unit {} has findings that appeared since it was allocated", u.din),
    )?;
    move_unit(conn, &u, UnitAction::Issue, None, now)?;
    decisions::record(
        conn,
        a.id,
        Stage::Issue,
        &new,
        &acknowledged,
        authorisation.as_ref(),
        actor,
        now,
    )?;
    let mut data = AllocationData::from(a.clone());
    data.anti_d_task |= a_now.anti_d_prophylaxis;
    data.status = to;
    data.issued_at = Some(stored(now));
    data.issued_by = Some(actor.name.clone());
    data.scanned_din = Some(scanned.trim().to_owned());
    data.updated_at = stored(now);
    let after = save(conn, actor, "allocation.issue", a, data)?;
    requests::settle(conn, actor, after.request_id, policy)?;
    let fresh = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("allocation"))?;
    view(conn, fresh)
}

/// An issued unit comes back: it goes to `quarantined` (reason `returned`) until it is
/// inspected (`POST /units/{id}/inspection`); one past its expiry is discarded at once.
pub fn return_unit(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    reason: &Text<1, 500>,
    policy: &Policy,
) -> ApiResult<AllocationView> {
    let now = utc(store::now());
    let reason = reason.to_string();
    let (a, to, u) = begin(conn, id, AllocationAction::Return, None)?;
    let held = format!("returned after issue ({reason}): inspect it before it goes back to stock");
    let mut back_to = move_unit(conn, &u, UnitAction::Return, Some(held), now)?;
    if back_to == UnitStatus::Expired {
        let back = unit_rows::find(conn, u.id)?.ok_or_else(|| ApiError::not_found("unit"))?;
        back_to = move_unit(
            conn,
            &back,
            UnitAction::Discard,
            Some(format!("returned unusable: {reason}")),
            now,
        )?;
    }
    audit::append(
        conn,
        actor,
        Change::updated(
            "unit.return",
            "unit",
            u.id,
            serde_json::json!({"status": UnitStatus::Issued}),
            serde_json::json!({"status": back_to, "allocation_id": a.id, "reason": reason}),
        ),
    )?;
    let mut data = AllocationData::from(a.clone());
    data.status = to;
    data.ended_at = Some(stored(now));
    data.end_reason = Some(reason);
    data.updated_at = stored(now);
    let after = save(conn, actor, "allocation.return", a, data)?;
    requests::settle(conn, actor, after.request_id, policy)?;
    let fresh = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("allocation"))?;
    view(conn, fresh)
}
