//! The transfusion outcome, and the anti-D prophylaxis it may call for.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{AllocationView, begin, move_unit, save};
use crate::domain::alerts::AlertKind;
use crate::domain::policy::Policy;
use crate::domain::requests::AllocationAction;
use crate::domain::units::UnitAction;
use crate::error::{ApiError, ApiResult};
use crate::input::Text;
use crate::services::alerts::Raise;
use crate::services::tasks;
use crate::services::{is_past, stored, utc};
use crate::store::allocations::AllocationData;
use crate::store::audit::Actor;
use crate::store::units::Unit;
use crate::store::{self, DbConn, patients as patient_rows};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"started_at": "2026-11-25T14:00:00Z", "ended_at": "2026-11-25T15:10:00Z", "reaction": null, "pre_anc_per_ul": 80, "post_anc_per_ul": 950}))]
pub struct TransfusionInput {
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Reaction observed (e.g. "fever", "chills", "pulmonary infiltrates"), up to 500 characters.
    pub reaction: Option<Text<0, 500>>,
    pub pre_anc_per_ul: Option<u32>,
    pub post_anc_per_ul: Option<u32>,
}

/// The largest absolute neutrophil count accepted, per µL (a plausibility bound).
pub const MAX_ANC: u32 = 100_000;

/// Records the outcome; the ANC increment is computed and stored.
pub fn transfusion(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    input: TransfusionInput,
    scope: Option<i64>,
    policy: &Policy,
) -> ApiResult<AllocationView> {
    let now = utc(store::now());
    let mut v = crate::error::Validator::new();
    v.check(
        is_past(input.started_at, now),
        "started_at",
        "must not be in the future",
    );
    if let Some(end) = input.ended_at {
        v.check(is_past(end, now), "ended_at", "must not be in the future");
        v.check(end >= input.started_at, "ended_at", "must not be before started_at");
    }
    for (field, value) in [
        ("pre_anc_per_ul", input.pre_anc_per_ul),
        ("post_anc_per_ul", input.post_anc_per_ul),
    ] {
        v.check(
            value.is_none_or(|x| x <= MAX_ANC),
            field,
            format!("must be at most {MAX_ANC}"),
        );
    }
    let reaction = input.reaction.map(Text::into_inner).filter(|r| !r.is_empty());
    v.finish()?;
    let (a, to, u) = begin(conn, id, AllocationAction::Transfuse, scope)?;
    if let Some(issued) = a.issued_at
        && input.started_at < utc(issued)
    {
        return Err(ApiError::field("started_at", "must not be before the unit was issued"));
    }
    move_unit(conn, &u, UnitAction::Transfuse, None, now)?;
    let pre = input.pre_anc_per_ul.and_then(|x| i32::try_from(x).ok());
    let post = input.post_anc_per_ul.and_then(|x| i32::try_from(x).ok());
    let mut data = AllocationData::from(a.clone());
    data.status = to;
    data.transfusion_started_at = Some(stored(input.started_at));
    data.transfusion_ended_at = input.ended_at.map(stored);
    data.reaction = reaction;
    data.pre_anc_per_ul = pre;
    data.post_anc_per_ul = post;
    data.anc_increment_per_ul = pre.zip(post).map(|(p, q)| q - p);
    data.outcome_recorded_by = Some(actor.name.clone());
    data.updated_at = stored(now);
    let anti_d = a.anti_d_task;
    let after = save(conn, actor, "allocation.transfusion", a, data)?;
    if anti_d {
        anti_d_prophylaxis(conn, actor, &after, &u, input.started_at, policy)?;
    }
    Ok(after)
}

/// An RhD-positive unit reached an RhD-negative female of childbearing potential: a task to give
/// anti-D prophylaxis, due `tasks.anti_d_due_hours` after the transfusion started, and the
/// `allocation.anti_d_prophylaxis` alert for the ward.
fn anti_d_prophylaxis(
    conn: &mut DbConn,
    actor: &Actor,
    a: &AllocationView,
    u: &Unit,
    started_at: DateTime<Utc>,
    policy: &Policy,
) -> ApiResult<()> {
    let due = tasks::due(started_at, policy.tasks.anti_d_due_hours);
    let mrn = patient_rows::find(conn, a.patient_id)?
        .map(|p| p.mrn)
        .unwrap_or_default();
    let created = tasks::create(
        conn,
        actor,
        tasks::NewTaskSpec {
            kind: tasks::TaskKind::AntiDProphylaxis,
            subject_type: "allocation",
            subject_id: a.id,
            title: format!(
                "give anti-D prophylaxis to patient {} (MRN {mrn}): RhD-positive unit {} transfused",
                a.patient_id, u.din
            ),
            details: serde_json::json!({"allocation_id": a.id, "patient_id": a.patient_id, "mrn": mrn,
                                        "hospital_id": a.hospital_id, "unit_id": u.id, "din": u.din,
                                        "transfusion_started_at": started_at}),
            owner_role: tasks::OwnerRole::Technologist,
            due_at: due,
        },
    )?;
    if created.is_some() {
        crate::services::alerts::raise(
            conn,
            Raise {
                message: format!(
                    "RhD-positive unit {} transfused to an RhD-negative patient of childbearing potential (MRN {mrn}): give anti-D prophylaxis by {}",
                    u.din,
                    due.format("%Y-%m-%d %H:%M UTC")
                ),
                details: serde_json::json!({"allocation_id": a.id, "request_id": a.request_id,
                                            "patient_id": a.patient_id, "unit_id": u.id, "due_at": due}),
                ..Raise::event(AlertKind::AllocationAntiDProphylaxis, a.id, a.id, utc(store::now()))
            },
        )?;
    }
    Ok(())
}
