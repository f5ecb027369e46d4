//! Test results (and what a reactive one sets off), and release: tested, or in an emergency
//! with its follow-up.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::view::{Physician, UnitRecord, UnitView, record, view};
use super::{ReleaseKind, begin, find, save};
use crate::domain::alerts::AlertKind;
use crate::domain::policy::{Policy, is_marker_name};
use crate::domain::requests::RequestStatus;
use crate::domain::units::{
    self as rules, ReactiveAlert, ReactiveDecision, ReactiveResultFacts, ReleaseRequest, TestResult, UnitAction,
    UnitStatus,
};
use crate::error::{ApiError, ApiResult, ErrorCode, Validator};
use crate::input::{Text, UnitKey};
use crate::services::alerts::{self, Raise};
use crate::services::{from_stored_json, is_past, stored, to_value, utc};
use crate::store::allocations::Allocation;
use crate::store::audit::{self, Actor, Change};
use crate::store::patients::Patient;
use crate::store::units::{self as rows, Unit, UnitData};
use crate::store::{self, DbConn};

/// A sanity bound on when an emergency release's pending results are expected (not a clinical
/// threshold: the policy's default is a day).
const RESULTS_EXPECTED_WITHIN: chrono::TimeDelta = chrono::TimeDelta::days(30);

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"marker": "anti_hiv", "result": "negative"}))]
pub struct TestInput {
    /// Marker name, e.g. `anti_hiv`, `hbsag`, `hcv_nat` (lower-case).
    #[schema(pattern = r"^[a-z][a-z0-9_]{1,39}$")]
    pub marker: String,
    pub result: TestResult,
}

/// Records a result; results are facts, never replaced. A positive (reactive) result holds the
/// unit for good (quarantined with reason `reactive_marker`, only a discard remains), defers
/// the donor pending confirmatory testing, quarantines the donor's other units still in stock,
/// and raises the look-forward alert naming every allocation of the donor's units that was
/// issued or transfused.
pub fn record_test(
    conn: &mut DbConn,
    actor: &Actor,
    key: &UnitKey,
    input: TestInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let marker = input.marker.trim().to_ascii_lowercase();
    if !is_marker_name(&marker) {
        return Err(ApiError::field(
            "marker",
            "must be a marker name such as anti_hiv or hbsag",
        ));
    }
    let u = find(conn, key)?;
    rows::lock(conn, u.id)?;
    rows::insert_test(conn, u.id, &marker, input.result.as_str(), stored(now), &actor.name)?;
    let mut data = UnitData::from(u.clone());
    data.updated_at = stored(now);
    let facts = record(conn, &u)?;
    follow_up(conn, actor, &u, &facts)?;
    if input.result != TestResult::Positive {
        return save(conn, actor, "unit.test", u, data, now);
    }
    let reached = reached(conn, &u)?;
    let decision = rules::reactive_result(
        ReactiveResultFacts {
            status: u.status,
            expires_at: utc(u.expires_at),
            released: u.release_kind.is_some(),
            emergency: facts.emergency.is_some(),
            patient_reached: reached.iter().any(|r| r.patient.is_some()),
            unit_reached: reached.iter().any(|r| r.allocation.unit_id == u.id),
        },
        now,
    );
    if let Some(to) = decision.status {
        data.status = to;
    }
    if decision.discard_only {
        data.status_reason = Some(format!("{marker} reactive: the unit can only be discarded"));
    }
    save(conn, actor, "unit.test", u.clone(), data, now)?;
    reactive_result(
        conn,
        actor,
        &u,
        &marker,
        facts.emergency.as_ref(),
        &reached,
        decision,
        now,
        policy,
    )?;
    // The donor's deferral and other units changed: show the unit as it now stands.
    let fresh = rows::find(conn, u.id)?.ok_or_else(|| ApiError::not_found("unit"))?;
    view(conn, fresh, now)
}

/// The follow-up of an emergency release ends when the last pending result arrives: by itself
/// when every one is negative; when one is reactive it is superseded by the look-forward that
/// the reactive result opens.
fn follow_up(conn: &mut DbConn, actor: &Actor, u: &Unit, facts: &UnitRecord) -> ApiResult<()> {
    let Some(e) = &facts.emergency else {
        return Ok(());
    };
    let pending: Vec<String> = from_stored_json("pending markers", &e.pending_markers)?;
    let note = match rules::emergency_follow_up(&pending, &facts.results) {
        rules::FollowUp::Waiting => return Ok(()),
        rules::FollowUp::AllNegative => {
            format!(
                "every result pending at the emergency release of unit {} is negative",
                u.din
            )
        }
        rules::FollowUp::Reactive(markers) => format!(
            "{} reactive on unit {}: superseded by the look-forward",
            markers.join(", "),
            u.din
        ),
    };
    crate::services::tasks::complete_about(
        conn,
        actor,
        crate::services::tasks::TaskKind::EmergencyReleaseFollowUp,
        "unit",
        u.id,
        &note,
    )?;
    Ok(())
}

/// An allocation of one of the donor's units (or of this unit, without a donor) that reached a
/// patient, with the unit's DIN and the patient when their record is found.
struct Reached {
    allocation: Allocation,
    din: String,
    patient: Option<Patient>,
}

/// Look-forward: every allocation of the donor's units that reached a patient.
fn reached(conn: &mut DbConn, u: &Unit) -> ApiResult<Vec<Reached>> {
    let units = match u.donor_id {
        Some(donor_id) => rows::of_donor(conn, donor_id)?,
        None => vec![u.clone()],
    };
    let ids: Vec<i64> = units.iter().map(|x| x.id).collect();
    let mut out = Vec::new();
    for a in crate::store::allocations::of_units(conn, &ids)? {
        if !rules::reached_patient(a.status, a.issued_at.is_some()) {
            continue;
        }
        let din = units
            .iter()
            .find(|x| x.id == a.unit_id)
            .map(|x| x.din.clone())
            .unwrap_or_default();
        let patient = match crate::store::requests::find(conn, a.request_id)? {
            Some(r) => crate::store::patients::find(conn, r.patient_id)?,
            None => None,
        };
        out.push(Reached {
            allocation: a,
            din,
            patient,
        });
    }
    Ok(out)
}

/// Everything a reactive result on `u` sets off beyond the unit itself (see [`record_test`]),
/// as `decision` says.
#[expect(clippy::too_many_arguments)]
fn reactive_result(
    conn: &mut DbConn,
    actor: &Actor,
    u: &Unit,
    marker: &str,
    emergency: Option<&rows::EmergencyRelease>,
    reached: &[Reached],
    decision: ReactiveDecision,
    now: DateTime<Utc>,
    policy: &Policy,
) -> ApiResult<()> {
    let mut quarantined_units: Vec<String> = Vec::new();
    if let Some(donor_id) = u.donor_id {
        crate::services::donors::defer_for_reactive_result(
            conn,
            actor,
            donor_id,
            u.id,
            &format!("{marker} reactive on unit {}: pending confirmatory testing", u.din),
        )?;
        for other in rows::in_bank_of_donor(conn, donor_id, u.id)? {
            rows::lock(conn, other.id)?;
            let mut data = UnitData::from(other.clone());
            if let Ok(to) = rules::transition(other.status, UnitAction::Quarantine, utc(other.expires_at), now) {
                data.status = to;
            }
            if data.status == UnitStatus::Quarantined {
                data.status_reason = Some(format!(
                    "donor deferred: {marker} reactive on unit {} (pending confirmatory testing)",
                    u.din
                ));
                data.updated_at = stored(now);
                save(conn, actor, "unit.quarantine", other.clone(), data, now)?;
                quarantined_units.push(other.din.clone());
            }
        }
    }
    let mut recipients = Vec::new();
    let mut names = Vec::new();
    for r in reached {
        let (a, din, p) = (&r.allocation, &r.din, &r.patient);
        if let Some(p) = p {
            names.push(format!(
                "allocation {} ({}, unit {din}) for patient {} (MRN {}) of hospital {}",
                a.id, a.status, p.id, p.mrn, p.hospital_id
            ));
            crate::services::tasks::create(
                conn,
                actor,
                crate::services::tasks::NewTaskSpec {
                    kind: crate::services::tasks::TaskKind::LookForward,
                    subject_type: "allocation",
                    subject_id: a.id,
                    title: format!(
                        "look forward: {marker} reactive on the donor's unit {}; unit {din} went to patient {} (MRN {}) of hospital {}",
                        u.din, p.id, p.mrn, p.hospital_id
                    ),
                    details: serde_json::json!({"marker": marker, "reactive_unit_id": u.id, "reactive_din": u.din,
                                                "allocation_id": a.id, "allocation_status": a.status,
                                                "unit_id": a.unit_id, "din": din, "patient_id": p.id,
                                                "mrn": p.mrn, "hospital_id": p.hospital_id}),
                    owner_role: crate::services::tasks::OwnerRole::MedicalDirector,
                    due_at: crate::services::tasks::due(now, policy.tasks.look_forward_due_hours),
                },
            )?;
        }
        recipients.push(serde_json::json!({
            "allocation_id": a.id, "status": a.status, "unit_id": a.unit_id, "din": din,
            "request_id": a.request_id,
            "patient_id": p.as_ref().map(|p| p.id), "mrn": p.as_ref().map(|p| p.mrn.clone()),
            "hospital_id": p.as_ref().map(|p| p.hospital_id),
        }));
    }
    // An emergency release whose unit has not reached anyone still needs following: the unit is
    // bound to its request, which must not receive it.
    if let Some(e) = emergency.filter(|_| decision.unreached_emergency_look_forward) {
        crate::services::tasks::create(
            conn,
            actor,
            crate::services::tasks::NewTaskSpec {
                kind: crate::services::tasks::TaskKind::LookForward,
                subject_type: "unit",
                subject_id: u.id,
                title: format!(
                    "look forward: {marker} reactive on unit {} released in an emergency for request {}; it has not been given: make sure it is not",
                    u.din, e.request_id
                ),
                details: serde_json::json!({"marker": marker, "unit_id": u.id, "din": u.din,
                                            "request_id": e.request_id}),
                owner_role: crate::services::tasks::OwnerRole::MedicalDirector,
                due_at: crate::services::tasks::due(now, policy.tasks.look_forward_due_hours),
            },
        )?;
    }
    // This unit's own latest allocation and recipient, first: who to call.
    let own = recipients
        .iter()
        .rev()
        .find(|r| r["unit_id"] == u.id)
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let details = serde_json::json!({
        "unit_id": u.id, "din": u.din,
        "marker": marker, "release": u.release_kind, "donor_id": u.donor_id,
        "quarantined_units": quarantined_units,
        "allocation": if own.is_null() { own.clone() } else {
            serde_json::json!({"id": own["allocation_id"], "status": own["status"], "request_id": own["request_id"]})
        },
        "recipient": if own.is_null() { own.clone() } else {
            serde_json::json!({"patient_id": own["patient_id"], "hospital_id": own["hospital_id"], "mrn": own["mrn"]})
        },
        "allocations": recipients,
    });
    let donor_note = match u.donor_id {
        Some(_) => format!(
            "; donor deferred pending confirmatory testing; {} other unit(s) of the donor quarantined",
            quarantined_units.len()
        ),
        None => String::new(),
    };
    if decision.alert == ReactiveAlert::PositiveAfterRelease {
        let whom = if names.is_empty() {
            "; no allocation of the donor's units reached a patient".to_owned()
        } else {
            format!("; look forward: {}", names.join("; "))
        };
        alerts::raise(
            conn,
            Raise {
                message: format!(
                    "{marker} reactive on unit {}{}{donor_note}{whom}",
                    u.din,
                    u.release_kind
                        .map(|k| format!(" after its {k} release"))
                        .unwrap_or_default()
                ),
                details,
                ..Raise::event(
                    AlertKind::UnitPositiveResultAfterRelease,
                    u.id,
                    format_args!("{}:{marker}", u.id),
                    now,
                )
            },
        )?;
    } else {
        alerts::raise(
            conn,
            Raise {
                message: format!("unit {} quarantined: {marker} reactive{donor_note}", u.din),
                details,
                ..Raise::event(
                    AlertKind::UnitQuarantined,
                    u.id,
                    format_args!("{}:reactive:{marker}", u.id),
                    now,
                )
            },
        )?;
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"emergency": false}))]
pub struct ReleaseInput {
    pub emergency: bool,
    /// Required for an emergency release (and only then).
    pub physician: Option<Physician>,
    /// A medical director's disposition of the unit's storage excursions (why it is still fit
    /// to use), 1–500 characters. Required to release a unit with an excursion; only then.
    pub excursion_disposition: Option<Text<1, 500>>,
    /// Emergency releases: the request the unit is released for; it can be allocated to that
    /// request only. Required for an emergency release, and only then.
    #[schema(minimum = 1)]
    pub request_id: Option<i64>,
    /// Emergency releases: when the pending results are expected (default now +
    /// `unit.marker_results_expected_hours`), within 30 days; the follow-up task falls due then.
    pub results_expected_at: Option<DateTime<Utc>>,
}

/// Quarantined → available. Standard: every required marker negative. Emergency: a named
/// physician's acknowledgement, and no positive marker. Either way no reactive result ever, no
/// reactive donor, no inspection due, and any excursion dispositioned by a medical director.
/// The caller checks the role for an emergency release; `director` says whether it is one.
pub fn release(
    conn: &mut DbConn,
    actor: &Actor,
    director: bool,
    key: &UnitKey,
    input: ReleaseInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    let disposition = input.excursion_disposition.map(Text::into_inner);
    let physician = match (input.emergency, input.physician) {
        (true, Some(p)) => {
            // `Physician` is also the stored and shown shape, so its name stays a `String`.
            let name = Text::<1, 200>::check(&mut v, "physician.name", &p.name);
            v.check(
                is_past(p.acknowledged_at, now),
                "physician.acknowledged_at",
                "must not be in the future",
            );
            Some(Physician {
                name,
                acknowledged_at: utc(stored(p.acknowledged_at)),
            })
        }
        (true, None) => {
            v.push("physician", "is required for an emergency release");
            None
        }
        (false, Some(_)) => {
            v.push("physician", "is only for an emergency release");
            None
        }
        (false, None) => None,
    };
    match (input.emergency, input.request_id) {
        (true, None) => v.push("request_id", "is required for an emergency release"),
        (false, Some(_)) => v.push("request_id", "is only for an emergency release"),
        (true, Some(id)) => {
            v.check(id > 0, "request_id", "must be a positive id");
        }
        (false, None) => {}
    }
    let results_expected_at = input
        .results_expected_at
        .map(|t| utc(stored(t)))
        .unwrap_or_else(|| crate::services::tasks::due(now, policy.unit.marker_results_expected_hours));
    v.check(
        input.results_expected_at.is_none() || input.emergency,
        "results_expected_at",
        "is only for an emergency release",
    );
    v.check(
        results_expected_at > now && results_expected_at <= now + RESULTS_EXPECTED_WITHIN,
        "results_expected_at",
        "must be in the future, within 30 days",
    );
    v.finish()?;
    if disposition.is_some() && !director {
        return Err(ApiError::forbidden(
            "only a medical director may disposition a storage excursion",
        ));
    }
    let (u, to) = begin(conn, key, UnitAction::Release, now)?;
    let facts = record(conn, &u)?;
    if let Some(p) = &physician
        && p.acknowledged_at < utc(u.collected_at)
    {
        return Err(ApiError::field(
            "physician.acknowledged_at",
            "must lie between the collection of the unit and now",
        ));
    }
    let bound = match input.request_id.filter(|_| input.emergency) {
        Some(id) => {
            // A request named in the body that does not exist is a refusal (422), not a 404.
            let r = crate::store::requests::find(conn, id)?.ok_or_else(|| {
                ApiError::refused(ErrorCode::UnknownRequest, format!("there is no request {id}"), vec![])
            })?;
            if r.status != RequestStatus::Open {
                return Err(ApiError::new(
                    ErrorCode::RequestNotOpen,
                    format!(
                        "request {id} is {}; an emergency release is for an open request",
                        r.status
                    ),
                ));
            }
            Some(r)
        }
        None => None,
    };
    if disposition.is_some() && !facts.holds.excursion_pending {
        return Err(ApiError::field(
            "excursion_disposition",
            "the unit has no storage excursion waiting for a disposition",
        ));
    }
    let request = ReleaseRequest {
        emergency: input.emergency,
        director,
        excursion_disposition: disposition.is_some(),
    };
    let blockers = rules::release_blockers(&facts.results, facts.holds, u.irradiated_at.is_some(), request, policy);
    if !blockers.is_empty() {
        // A technologist meets an excursion: say plainly that it needs a medical director.
        let code = if !director && blockers.iter().any(|b| b.code == rules::codes::EXCURSION_REVIEW) {
            ErrorCode::ExcursionReview
        } else {
            ErrorCode::ReleaseBlocked
        };
        return Err(ApiError::refused(
            code,
            format!("unit {} cannot be released", u.din),
            crate::services::reasons(blockers),
        ));
    }
    if let (Some(reason), Some(through)) = (&disposition, facts.last_excursion_id) {
        rows::insert_disposition(conn, u.id, through, reason, &actor.name, stored(now))?;
    }
    let kind = if input.emergency {
        ReleaseKind::Emergency
    } else {
        ReleaseKind::Tested
    };
    let mut data = UnitData::from(u.clone());
    data.status = to;
    data.status_reason = None;
    data.release_kind = Some(kind);
    data.released_at = Some(stored(now));
    data.released_by = Some(actor.name.clone());
    data.emergency_physician = physician.as_ref().map(|p| p.name.clone());
    data.emergency_acknowledged_at = physician.as_ref().map(|p| stored(p.acknowledged_at));
    data.updated_at = stored(now);
    let din = u.din.clone();
    let after = save(conn, actor, "unit.release", u, data, now)?;
    if let (Some(p), Some(r)) = (&physician, &bound) {
        // What was still pending or missing is recorded; the follow-up waits for it.
        let pending: Vec<String> = policy
            .unit
            .required_markers
            .iter()
            .filter(|m| rules::marker_standing(&facts.results, m) != Some(TestResult::Negative))
            .cloned()
            .collect();
        rows::insert_emergency_release(
            conn,
            &rows::NewEmergencyRelease {
                unit_id: after.id,
                request_id: r.id,
                physician: &p.name,
                acknowledged_at: stored(p.acknowledged_at),
                pending_markers: &crate::services::to_json(&pending)?,
                results_expected_at: stored(results_expected_at),
                released_by: &actor.name,
                released_at: stored(now),
            },
        )?;
        crate::services::tasks::create(
            conn,
            actor,
            crate::services::tasks::NewTaskSpec {
                kind: crate::services::tasks::TaskKind::EmergencyReleaseFollowUp,
                subject_type: "unit",
                subject_id: after.id,
                title: format!(
                    "follow up the results of unit {din} released in an emergency for request {}: {}",
                    r.id,
                    if pending.is_empty() {
                        "none pending".to_owned()
                    } else {
                        pending.join(", ")
                    }
                ),
                details: serde_json::json!({"unit_id": after.id, "din": din, "request_id": r.id,
                                            "patient_id": r.patient_id, "hospital_id": r.hospital_id,
                                            "physician": p.name, "pending_markers": pending}),
                owner_role: crate::services::tasks::OwnerRole::Technologist,
                due_at: results_expected_at,
            },
        )?;
    }
    let after = match bound {
        Some(_) => {
            let fresh = rows::find(conn, after.id)?.ok_or_else(|| ApiError::not_found("unit"))?;
            view(conn, fresh, now)?
        }
        None => after,
    };
    if let Some(reason) = disposition {
        audit::append(
            conn,
            actor,
            Change::created(
                "unit.excursion_disposition",
                "unit",
                after.id,
                serde_json::json!({"reason": reason, "through_excursion_id": facts.last_excursion_id,
                                   "excursions": to_value(&facts.excursions)?}),
            ),
        )?;
    }
    Ok(after)
}
