//! Compatibility, crossmatches, allocation (never twice), issue, return, cancel and the
//! transfusion outcome.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{from_stored_json, is_past, stored, stored_enum, to_value, utc};
use crate::domain::blood::Hla;
use crate::domain::compatibility::{
    self, Assessment, Context, CrossmatchFacts, CrossmatchKind, Requirements, Severity, Stage, UnitFacts, Verdict,
};
use crate::domain::policy::Policy;
use crate::domain::requests::{self as request_rules, AllocationAction, AllocationStatus, RequestAction};
use crate::domain::text_enum;
use crate::domain::units::{self as unit_rules, UnitAction, UnitStatus};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason};
use crate::services::{decisions, patients, requests, tasks, units};
use crate::store::alerts::NewAlert;
use crate::store::allocations::{self as rows, Allocation, AllocationData};
use crate::store::audit::{self, Actor, Change};
use crate::store::units::{Unit, UnitData};
use crate::store::{self, DbConn, donors as donor_rows, patients as patient_rows, units as unit_rows};

pub use super::decisions::FindingView;

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
                kind: stored_enum("crossmatch kind", &x.kind, CrossmatchKind::parse)?,
                compatible: x.result == CrossmatchResult::Compatible.as_str(),
                resolved: resolved.contains(&x.id),
                sample_valid_until: valid_until,
            })
        })
        .collect()
}

/// The request a unit is judged for: its id, requirements, and the granulocytes of its other
/// units due the same day (allocated or issued, not yet transfused).
struct ForRequest {
    id: Option<i64>,
    requirements: Requirements,
    day_granulocytes: f64,
}

impl ForRequest {
    fn none() -> Self {
        Self {
            id: None,
            requirements: Requirements::default(),
            day_granulocytes: 0.0,
        }
    }

    fn of(conn: &mut DbConn, r: &crate::store::requests::Request, unit_id: i64) -> ApiResult<Self> {
        let mut day_granulocytes = 0.0;
        for a in rows::of_request(conn, r.id)? {
            if a.unit_id != unit_id && request_rules::is_active(parse_status(&a)?) {
                day_granulocytes += unit_rows::find(conn, a.unit_id)?.map_or(0.0, |u| u.granulocyte_count);
            }
        }
        Ok(Self {
            id: Some(r.id),
            requirements: requests::Requirements::of(r),
            day_granulocytes,
        })
    }
}

fn assess(
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
    let u = unit_rows::find(conn, unit_id)?.ok_or_else(|| ApiError::not_found("unit"))?;
    patients::find(conn, patient_id, None)?;
    let now = utc(store::now());
    let (request, needed_by) = match request_id {
        Some(id) => {
            let r = requests::find(conn, id, None)?;
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

// ---------------------------------------------------------------------------------------------
// Crossmatches

text_enum!(
    CrossmatchResult {
        Compatible => "compatible",
        Incompatible => "incompatible",
    }
);

text_enum!(
    /// Red-cell crossmatches: indirect antiglobulin test, immediate spin, or electronic
    /// (computer) issue. Leukocyte crossmatches: granulocyte immunofluorescence or
    /// agglutination, or flow cytometry.
    CrossmatchMethod {
        Iat => "iat",
        ImmediateSpin => "immediate_spin",
        Electronic => "electronic",
        Gift => "granulocyte_immunofluorescence",
        Gat => "granulocyte_agglutination",
        FlowCytometry => "flow_cytometry",
    }
);

impl CrossmatchMethod {
    pub fn kind(self) -> CrossmatchKind {
        match self {
            Self::Iat | Self::ImmediateSpin | Self::Electronic => CrossmatchKind::RedCell,
            Self::Gift | Self::Gat | Self::FlowCytometry => CrossmatchKind::Leukocyte,
        }
    }
}

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
        kind: stored_enum("crossmatch kind", &x.kind, CrossmatchKind::parse)?,
        result: stored_enum("crossmatch result", &x.result, CrossmatchResult::parse)?,
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
    let u = unit_rows::find(conn, input.unit_id)?.ok_or_else(|| ApiError::not_found("unit"))?;
    let sample = patient_rows::find_sample(conn, input.sample_id)?.ok_or_else(|| ApiError::not_found("sample"))?;
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
                super::reasons(blockers),
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
            result: input.result.as_str(),
            method: input.method.as_str(),
            performed_by: &actor.name,
            performed_at: stored(at),
            created_at: stored(now),
            kind: kind.as_str(),
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
pub fn resolve_crossmatch(conn: &mut DbConn, actor: &Actor, id: i64, reason: &str) -> ApiResult<CrossmatchView> {
    let reason = clean_reason(reason)?;
    let x = rows::find_crossmatch(conn, id)?.ok_or_else(|| ApiError::not_found("crossmatch"))?;
    rows::lock_crossmatch(conn, id)?;
    if x.result != CrossmatchResult::Incompatible.as_str() {
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
        rows::insert_resolution(conn, id, &reason, &actor.name, store::now()).map_err(crate::error::unique_as(
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
    let (found, next) = super::paginate(found, limit, |x| x.id);
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

// ---------------------------------------------------------------------------------------------
// Allocations

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
    pub pre_anc_per_ul: Option<i32>,
    pub post_anc_per_ul: Option<i32>,
    /// post − pre ANC.
    pub anc_increment_per_ul: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn parse_status(a: &Allocation) -> ApiResult<AllocationStatus> {
    super::stored_enum("allocation status", &a.status, AllocationStatus::parse)
}

pub fn view(conn: &mut DbConn, a: Allocation) -> ApiResult<AllocationView> {
    let din = unit_rows::find(conn, a.unit_id)?.map(|u| u.din).unwrap_or_default();
    let r = crate::store::requests::find(conn, a.request_id)?.ok_or_else(|| ApiError::not_found("request"))?;
    let mut acceptances = decisions::of_allocations(conn, &[a.id])?
        .remove(&a.id)
        .unwrap_or_default();
    Ok(AllocationView {
        warnings: std::mem::take(&mut acceptances.findings),
        acceptances,
        status: parse_status(&a)?,
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
        pre_anc_per_ul: a.pre_anc_per_ul,
        post_anc_per_ul: a.post_anc_per_ul,
        anc_increment_per_ul: a.anc_increment_per_ul,
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

/// Claims the unit for an allocation: on PostgreSQL a contended unit is skipped at once
/// (`FOR UPDATE SKIP LOCKED`) instead of waited for; on both, the status change is guarded
/// (`WHERE status = 'available'`), so exactly one claimant wins.
fn claim(conn: &mut DbConn, u: &Unit, now: DateTime<Utc>) -> ApiResult<()> {
    if let DbConn::Postgres(pg) = conn {
        use diesel::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Locked {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            #[expect(dead_code)]
            id: i64,
        }
        let locked: Vec<Locked> =
            diesel::sql_query("SELECT id FROM units WHERE id = $1 AND status = 'available' FOR UPDATE SKIP LOCKED")
                .bind::<diesel::sql_types::BigInt, _>(u.id)
                .load(pg)?;
        if locked.is_empty() {
            return Err(unit_not_available(&u.din, "another allocation holds or is taking it"));
        }
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
    let status = requests::status_of(&r)?;
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
    let unit_status = unit_rules::effective_status(units::status_of_unit(&u)?, utc(u.expires_at), now);
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
            status: AllocationStatus::Allocated.as_str().to_owned(),
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
    audit::append(
        conn,
        actor,
        Change::created("allocation.create", "allocation", created.id, to_value(&created)?),
    )?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "unit.allocate",
            "unit",
            u.id,
            serde_json::json!({"status": "available"}),
            serde_json::json!({"status": "allocated", "allocation_id": created.id}),
        ),
    )?;
    Ok(created)
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
    let from = parse_status(&a)?;
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
    let to = unit_rules::transition(units::status_of_unit(u)?, action, utc(u.expires_at), now)
        .map_err(|r| ApiError::new(r.into(), format!("unit {} cannot {action}", u.din)))?;
    let mut data = UnitData::from(u.clone());
    data.status = to.as_str().to_owned();
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

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scanned_din": "=A99992600012363"}))]
pub struct IssueInput {
    /// The DIN as scanned from the bag: 13 characters, with its check character, or the `=`
    /// data structure with flags.
    #[schema(min_length = 1, max_length = 64)]
    pub scanned_din: String,
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
    let mut refusals: Vec<Reason> = Vec::new();
    match units::parse_din_reference(scanned) {
        Ok(din) if din.as_text() == u.din => {}
        Ok(din) => refusals.push(Reason {
            code: "din_mismatch".to_owned(),
            message: format!("scanned {} but the allocation is for {}", din.as_text(), u.din),
        }),
        Err(e) => refusals.push(Reason {
            code: e.code().as_str().to_owned(),
            message: format!("the scan is not a valid DIN: {}", e.problem().detail),
        }),
    }
    // The unit must still be held for this allocation: a storage excursion or a positive result
    // since allocation quarantines it (expiry is reported by the assessment below).
    let unit_status = unit_rules::effective_status(units::status_of_unit(&u)?, utc(u.expires_at), now);
    if !matches!(unit_status, UnitStatus::Allocated | UnitStatus::Expired) {
        refusals.push(Reason {
            code: format!("unit_{unit_status}"),
            message: format!(
                "unit {} is {unit_status}{}",
                u.din,
                u.status_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ),
        });
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
    data.status = to.as_str().to_owned();
    data.issued_at = Some(stored(now));
    data.issued_by = Some(actor.name.clone());
    data.scanned_din = Some(scanned.trim().to_owned());
    data.updated_at = stored(now);
    let after = save(conn, actor, "allocation.issue", a, data)?;
    requests::settle(conn, actor, after.request_id, policy)?;
    let fresh = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("allocation"))?;
    view(conn, fresh)
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

fn clean_reason(raw: &str) -> ApiResult<String> {
    let r = raw.trim();
    if r.is_empty() || r.chars().count() > 500 || !super::printable(r) {
        return Err(ApiError::field("reason", "must be 1 to 500 characters"));
    }
    Ok(r.to_owned())
}

/// An issued unit comes back: it goes to `quarantined` (reason `returned`) until it is
/// inspected (`POST /units/{id}/inspection`); one past its expiry is discarded at once.
pub fn return_unit(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    reason: &str,
    policy: &Policy,
) -> ApiResult<AllocationView> {
    let now = utc(store::now());
    let reason = clean_reason(reason)?;
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
    data.status = to.as_str().to_owned();
    data.ended_at = Some(stored(now));
    data.end_reason = Some(reason);
    data.updated_at = stored(now);
    let after = save(conn, actor, "allocation.return", a, data)?;
    requests::settle(conn, actor, after.request_id, policy)?;
    let fresh = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("allocation"))?;
    view(conn, fresh)
}

/// Releases an allocated (not yet issued) unit back to the bank (or to `expired`).
pub fn cancel(conn: &mut DbConn, actor: &Actor, id: i64, reason: &str) -> ApiResult<AllocationView> {
    let now = utc(store::now());
    let reason = clean_reason(reason)?;
    let (a, to, u) = begin(conn, id, AllocationAction::Cancel, None)?;
    cancel_holding(conn, &u, now)?;
    let mut data = AllocationData::from(a.clone());
    data.status = to.as_str().to_owned();
    data.ended_at = Some(stored(now));
    data.end_reason = Some(reason);
    data.updated_at = stored(now);
    save(conn, actor, "allocation.cancel", a, data)
}

/// The unit of a cancelled allocation goes back to `available`, or to `expired` if it is. A
/// unit that left `allocated` meanwhile (quarantined by a reading or a result, swept to
/// `expired`, discarded) stays as it is.
fn cancel_holding(conn: &mut DbConn, u: &Unit, now: DateTime<Utc>) -> ApiResult<()> {
    let stored_status = units::status_of_unit(u)?;
    if stored_status != UnitStatus::Allocated {
        return Ok(());
    }
    match unit_rules::transition(stored_status, UnitAction::Deallocate, utc(u.expires_at), now) {
        Ok(_) => move_unit(conn, u, UnitAction::Deallocate, None, now).map(|_| ()),
        Err(_) => move_unit(conn, u, UnitAction::Expire, None, now).map(|_| ()),
    }
}

/// Cancels every allocation of a request that still only holds its unit.
pub fn cancel_for_request(conn: &mut DbConn, actor: &Actor, request_id: i64) -> ApiResult<()> {
    for a in rows::of_request(conn, request_id)? {
        if parse_status(&a)? == AllocationStatus::Allocated {
            cancel(conn, actor, a.id, "request cancelled")?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"started_at": "2026-11-25T14:00:00Z", "ended_at": "2026-11-25T15:10:00Z", "reaction": null, "pre_anc_per_ul": 80, "post_anc_per_ul": 950}))]
pub struct TransfusionInput {
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Reaction observed (e.g. "fever", "chills", "pulmonary infiltrates"), up to 500 characters.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,498}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub reaction: Option<String>,
    pub pre_anc_per_ul: Option<u32>,
    pub post_anc_per_ul: Option<u32>,
}

const MAX_ANC: u32 = 100_000;

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
    let reaction = input.reaction.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    v.check(
        reaction
            .as_ref()
            .is_none_or(|r| r.chars().count() <= 500 && super::printable(r)),
        "reaction",
        "must be at most 500 characters",
    );
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
    data.status = to.as_str().to_owned();
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
        crate::services::webhooks::raise(
            conn,
            &NewAlert {
                kind: "allocation.anti_d_prophylaxis",
                severity: "warning",
                status: "open",
                dedup_key: &format!("allocation.anti_d_prophylaxis:{}", a.id),
                entity_type: "allocation",
                entity_id: &a.id.to_string(),
                message: &format!(
                    "RhD-positive unit {} transfused to an RhD-negative patient of childbearing potential (MRN {mrn}): give anti-D prophylaxis by {}",
                    u.din,
                    due.format("%Y-%m-%d %H:%M UTC")
                ),
                details: serde_json::json!({"allocation_id": a.id, "request_id": a.request_id,
                                            "patient_id": a.patient_id, "unit_id": u.id, "due_at": due})
                .to_string(),
                created_at: store::now(),
            },
        )?;
    }
    Ok(())
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
    let (ids, next) = super::paginate(ids, limit, |id| *id);
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
