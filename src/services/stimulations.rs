//! Stimulations (mobilising agents given to a donor) and their window and contraindication checks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::donors::{self, booking};
use super::{is_past, stored, to_value, utc};
use crate::domain::policy::Policy;
pub use crate::domain::stimulation::DoseUnit;
use crate::domain::stimulation::{self, normalize_agent};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::input::Text;
use crate::store::audit::{self, Actor, Change};
use crate::store::collections::{self as rows, Stimulation};
use crate::store::{self, DbConn};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StimulationView {
    pub id: i64,
    #[schema(minimum = 1)]
    pub donor_id: i64,
    #[schema(minimum = 1)]
    pub collection_id: Option<i64>,
    #[schema(pattern = r"^[^\S\x1c-\x1f]*[A-Za-z][A-Za-z0-9_]{1,39}[^\S\x1c-\x1f]*$")]
    pub agent: String,
    pub dose: f64,
    pub dose_unit: DoseUnit,
    pub administered_at: DateTime<Utc>,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,998}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub adverse_effects: Option<String>,
    pub recorded_by: String,
    pub created_at: DateTime<Utc>,
    /// Hours from administration to the linked collection's start (negative: after it).
    pub hours_before_collection_start: Option<f64>,
    /// `stimulation_too_early`, `stimulation_too_late`, `contraindicated_agent`.
    pub warnings: Vec<Reason>,
}

fn warning(w: stimulation::Warning) -> Reason {
    Reason {
        code: w.code.to_owned(),
        message: w.message,
    }
}

pub(super) fn stimulation_view(
    s: Stimulation,
    collection_start: Option<DateTime<Utc>>,
    policy: &Policy,
) -> ApiResult<StimulationView> {
    let given = utc(s.administered_at);
    let warnings = collection_start
        .and_then(|start| stimulation::window_warning(&s.agent, given, start, policy))
        .map(warning)
        .into_iter()
        .collect();
    let hours = collection_start.map(|start| start.signed_duration_since(given).num_minutes() as f64 / 60.0);
    Ok(StimulationView {
        id: s.id,
        donor_id: s.donor_id,
        collection_id: s.collection_id,
        dose_unit: s.dose_unit,
        agent: s.agent,
        dose: s.dose,
        administered_at: given,
        adverse_effects: s.adverse_effects,
        recorded_by: s.recorded_by,
        created_at: utc(s.created_at),
        hours_before_collection_start: hours,
        warnings,
    })
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"agent": "gcsf", "dose": 480, "dose_unit": "ug", "administered_at": "2026-11-25T20:00:00Z", "collection_id": 42}))]
pub struct StimulationInput {
    /// `gcsf`, `dexamethasone`, `prednisone`, … (lower-case identifier).
    #[schema(pattern = r"^[^\S\x1c-\x1f]*[A-Za-z][A-Za-z0-9_]{1,39}[^\S\x1c-\x1f]*$")]
    pub agent: String,
    pub dose: f64,
    pub dose_unit: DoseUnit,
    /// When it was given; not in the future.
    pub administered_at: DateTime<Utc>,
    /// The collection it prepares; its start is what the window is measured against.
    #[schema(minimum = 1)]
    pub collection_id: Option<i64>,
    /// Side effects reported by the donor, up to 1000 characters.
    pub adverse_effects: Option<Text<0, 1000>>,
}

const MAX_DOSE: f64 = 100_000.0;

pub fn record_stimulation(
    conn: &mut DbConn,
    actor: &Actor,
    donor_id: i64,
    input: StimulationInput,
    policy: &Policy,
) -> ApiResult<StimulationView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    let agent = normalize_agent(&input.agent).unwrap_or_else(|| {
        v.push("agent", "must be an agent name such as gcsf or dexamethasone");
        String::new()
    });
    v.check(
        input.dose.is_finite() && input.dose > 0.0 && input.dose <= MAX_DOSE,
        "dose",
        format!("must be greater than 0 and at most {MAX_DOSE}"),
    );
    let given = utc(stored(input.administered_at));
    v.check(is_past(given, now), "administered_at", "must not be in the future");
    let effects = input.adverse_effects.map(Text::into_inner).filter(|e| !e.is_empty());
    v.finish()?;
    let donor = donors::find(conn, donor_id)?;
    let collection_start = match input.collection_id {
        None => None,
        Some(cid) => {
            // A body that names a missing collection is refused (422): 404 is for the URL's donor.
            let c = rows::find(conn, cid)?.ok_or_else(|| {
                ApiError::refused(
                    ErrorCode::UnknownCollection,
                    format!("there is no collection {cid}"),
                    vec![],
                )
            })?;
            if c.donor_id != donor_id {
                return Err(ApiError::refused(
                    ErrorCode::CollectionOfOtherDonor,
                    format!("collection {cid} is for another donor"),
                    vec![],
                ));
            }
            Some(booking(&c)?.start())
        }
    };
    let row = rows::insert_stimulation(
        conn,
        &rows::NewStimulation {
            donor_id,
            collection_id: input.collection_id,
            agent: &agent,
            dose: input.dose,
            dose_unit: input.dose_unit,
            administered_at: stored(given),
            adverse_effects: effects.as_deref(),
            recorded_by: &actor.name,
            created_at: stored(now),
        },
    )?;
    let mut created = stimulation_view(row, collection_start, policy)?;
    let facts = donors::records(conn, std::slice::from_ref(&donor))?
        .pop()
        .map(|r| r.facts)
        .ok_or_else(|| ApiError::not_found("donor"))?;
    created.warnings.extend(
        stimulation::contraindication_warnings(&agent, &facts, policy)
            .into_iter()
            .map(warning),
    );
    let mut snapshot = to_value(&created)?;
    if let Some(obj) = snapshot.as_object_mut() {
        obj.remove("warnings");
        obj.remove("hours_before_collection_start");
    }
    audit::append(
        conn,
        actor,
        Change::created("donor.stimulation", "donor", donor_id, snapshot),
    )?;
    Ok(created)
}

pub fn stimulations_of(conn: &mut DbConn, donor_id: i64, policy: &Policy) -> ApiResult<Vec<StimulationView>> {
    donors::find(conn, donor_id)?;
    let list = rows::stimulations_of_donor(conn, donor_id)?;
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let start = match s.collection_id {
            Some(cid) => {
                let c = rows::find(conn, cid)?.ok_or_else(|| ApiError::not_found("collection"))?;
                Some(booking(&c)?.start())
            }
            None => None,
        };
        out.push(stimulation_view(s, start, policy)?);
    }
    Ok(out)
}
