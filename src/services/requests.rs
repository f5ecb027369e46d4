//! Hospital requests: creation (idempotent), the approval gate, cancel, and the course so far.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::Connection as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{reasons, stored, to_value, utc};
use crate::domain::policy::Policy;
use crate::domain::requests::AllocationStatus;
use crate::domain::requests::{self as rules, Indication, Priority, RequestAction, RequestStatus};
use crate::domain::scheduling::CollectionStatus;
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::input::Text;
use crate::services::{idempotency, patients};
use crate::store::audit::{self, Actor, Change};
use crate::store::requests::{self as rows, Request, RequestData};
use crate::store::{
    self, DbConn, allocations as allocation_rows, course_plans as plan_rows, hospitals, units as unit_rows,
};
use std::collections::HashMap;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndicationInput {
    /// Absolute neutrophil count, per µL.
    pub anc_per_ul: u32,
    /// The infection being treated (bacterial / fungal), 1–500 characters.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,498}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub infection: String,
    /// Hours the infection has been refractory to antimicrobials.
    pub refractory_hours: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// Only CMV-negative units (blocks CMV-positive and CMV-unknown ones).
    pub cmv_negative: Option<bool>,
    /// Only units from donors HLA-typed at every locus of the patient's antibodies.
    pub hla_compatible: Option<bool>,
    /// Irradiated units only: always true for granulocytes (a `false` is refused).
    pub irradiated: Option<bool>,
}

impl Requirements {
    /// The requirements of a stored request as the rules read them.
    pub fn of(r: &Request) -> crate::domain::compatibility::Requirements {
        crate::domain::compatibility::Requirements {
            cmv_negative: r.cmv_negative,
            hla_compatible: r.hla_compatible,
        }
    }
}

/// The hospital's own number for an order (FHIR `ServiceRequest.identifier`): one order per
/// number, so a retried order is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"system": "urn:oid:2.16.840.1.113883.3.72.5.20", "value": "ORD-2026-004217"}))]
pub struct OrderIdentifier {
    /// The system (an absolute URI) the hospital numbers its orders in. Default: the
    /// hospital's order system (`urn:granulo:hospital:<code>:order` unless set). Always present
    /// when shown.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9+.\-]*:[!-~]{1,250}$")]
    pub system: Option<String>,
    /// The order number, 1–64 characters; unique within the hospital and system
    /// (409 `order_identifier_taken`).
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,62}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"patient_id": 12, "units_requested": 5, "needed_by": "2026-11-26T08:00:00Z", "priority": "asap", "indication": {"anc_per_ul": 150, "infection": "invasive aspergillosis", "refractory_hours": 72}, "requirements": {"cmv_negative": true}}))]
pub struct RequestInput {
    #[schema(minimum = 1)]
    pub patient_id: i64,
    /// Daily units for the course, 1–30.
    #[schema(minimum = 1, maximum = 30)]
    pub units_requested: u32,
    pub needed_by: DateTime<Utc>,
    pub priority: Priority,
    pub indication: IndicationInput,
    pub requirements: Option<Requirements>,
    /// The hospital's own number for the order; a second order with the same number is refused.
    pub order_identifier: Option<OrderIdentifier>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CourseEntry {
    pub allocation_id: i64,
    pub unit_id: i64,
    pub din: String,
    /// Allocation status.
    pub status: String,
    pub issued_at: Option<DateTime<Utc>>,
    pub transfusion_started_at: Option<DateTime<Utc>>,
    /// post − pre ANC, as the allocation shows it (`GET /allocations/{id}`).
    pub anc_increment_per_ul: Option<i32>,
    pub reaction: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestView {
    pub id: i64,
    pub hospital_id: i64,
    #[schema(minimum = 1)]
    pub patient_id: i64,
    pub units_requested: i32,
    pub needed_by: DateTime<Utc>,
    pub priority: Priority,
    pub indication: IndicationInput,
    pub requirements: Requirements,
    pub status: RequestStatus,
    /// Whether the indication met the policy gate; `approval_reasons` say why not.
    pub within_indication: bool,
    pub approval_reasons: Vec<Reason>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
    pub requested_by: String,
    /// The hospital's own number for the order, when it gave one.
    pub order_identifier: Option<OrderIdentifier>,
    /// Units issued or transfused so far.
    pub units_issued: i64,
    /// The course so far: every allocation with its outcome.
    pub course: Vec<CourseEntry>,
    /// The accepted course plan in force (`POST /requests/{id}/plan`), day by day; `null`
    /// until one is accepted.
    pub plan: Option<PlanInForce>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A day of the plan in force, for the request's JSON (no donor identity: hospitals read it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedDay {
    pub day: u32,
    pub transfuse_at: DateTime<Utc>,
    pub collection_id: Option<i64>,
    /// The collection's status now.
    pub collection_status: Option<CollectionStatus>,
    pub unit_id: Option<i64>,
    /// Set when the day was left uncovered.
    pub uncovered_code: Option<String>,
}

/// The accepted plan in force for a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanInForce {
    pub plan_id: i64,
    pub accepted_at: DateTime<Utc>,
    pub days: Vec<PlannedDay>,
}

pub fn in_force(conn: &mut DbConn, request_id: i64) -> ApiResult<Option<PlanInForce>> {
    let Some(plan) = plan_rows::accepted(conn, request_id)? else {
        return Ok(None);
    };
    let days = plan_rows::days_of(conn, plan.id)?;
    let statuses: HashMap<i64, CollectionStatus> = plan_rows::collections_of_request(conn, request_id)?
        .into_iter()
        .map(|c| (c.id, c.status))
        .collect();
    Ok(Some(PlanInForce {
        plan_id: plan.id,
        accepted_at: plan.accepted_at.map_or_else(|| utc(plan.proposed_at), utc),
        days: days
            .into_iter()
            .map(|d| PlannedDay {
                day: u32::try_from(d.day).unwrap_or(0),
                transfuse_at: utc(d.due_at),
                collection_status: d.collection_id.and_then(|c| statuses.get(&c).copied()),
                collection_id: d.collection_id,
                unit_id: d.unit_id,
                uncovered_code: d.uncovered_code,
            })
            .collect(),
    }))
}

pub fn indication_of(r: &Request) -> Indication {
    Indication {
        anc_per_ul: u32::try_from(r.anc_per_ul).unwrap_or(0),
        refractory_hours: u32::try_from(r.refractory_hours).unwrap_or(0),
    }
}

pub fn view(conn: &mut DbConn, r: Request, policy: &Policy) -> ApiResult<RequestView> {
    let mut course = Vec::new();
    let mut issued = 0;
    for a in allocation_rows::of_request(conn, r.id)? {
        if a.issued_at.is_some() && matches!(a.status, AllocationStatus::Issued | AllocationStatus::Transfused) {
            issued += 1;
        }
        let din = unit_rows::find(conn, a.unit_id)?.map(|u| u.din).unwrap_or_default();
        // As the allocation shows it: recorded with the transfusion, else from reported counts.
        let (_, anc) = crate::services::outcomes::of_allocation(conn, &a)?;
        course.push(CourseEntry {
            allocation_id: a.id,
            unit_id: a.unit_id,
            din,
            status: a.status.as_str().to_owned(),
            issued_at: a.issued_at.map(utc),
            transfusion_started_at: a.transfusion_started_at.map(utc),
            anc_increment_per_ul: a.anc_increment_per_ul.or(anc.increment),
            reaction: a.reaction,
        });
    }
    Ok(RequestView {
        status: r.status,
        priority: r.priority,
        approval_reasons: reasons(rules::outside_indication(indication_of(&r), policy)),
        id: r.id,
        hospital_id: r.hospital_id,
        patient_id: r.patient_id,
        units_requested: r.units_requested,
        needed_by: utc(r.needed_by),
        indication: IndicationInput {
            anc_per_ul: u32::try_from(r.anc_per_ul).unwrap_or(0),
            infection: r.infection,
            refractory_hours: u32::try_from(r.refractory_hours).unwrap_or(0),
        },
        requirements: Requirements {
            cmv_negative: Some(r.cmv_negative),
            hla_compatible: Some(r.hla_compatible),
            irradiated: Some(r.irradiated),
        },
        within_indication: r.within_indication,
        decided_by: r.decided_by,
        decided_at: r.decided_at.map(utc),
        decision_reason: r.decision_reason,
        cancelled_by: r.cancelled_by,
        cancel_reason: r.cancel_reason,
        requested_by: r.requested_by,
        order_identifier: r.order_value.map(|value| OrderIdentifier {
            system: r.order_system,
            value,
        }),
        units_issued: issued,
        plan: in_force(conn, r.id)?,
        course,
        created_at: utc(r.created_at),
        updated_at: utc(r.updated_at),
    })
}

/// The request if the caller may see it (hospital accounts: their own only).
pub fn find(conn: &mut DbConn, id: i64, scope: Option<i64>) -> ApiResult<Request> {
    rows::find(conn, id)?
        .filter(|r| scope.is_none_or(|h| h == r.hospital_id))
        .ok_or_else(|| ApiError::not_found("request"))
}

pub fn get(conn: &mut DbConn, id: i64, scope: Option<i64>, policy: &Policy) -> ApiResult<RequestView> {
    let r = find(conn, id, scope)?;
    view(conn, r, policy)
}

const MAX_UNITS: u32 = 30;
const NEEDED_BY_PAST: TimeDelta = TimeDelta::hours(24);
const NEEDED_BY_AHEAD: TimeDelta = TimeDelta::days(60);

/// Places a request. `tz` is the facility's time zone, whose calendar day the hospital request
/// cap counts in.
pub fn create(
    conn: &mut DbConn,
    actor: &Actor,
    input: RequestInput,
    scope: Option<i64>,
    policy: &Policy,
    tz: chrono_tz::Tz,
) -> ApiResult<RequestView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    v.check(
        (1..=MAX_UNITS).contains(&input.units_requested),
        "units_requested",
        format!("must be between 1 and {MAX_UNITS}"),
    );
    v.check(
        input.needed_by >= now - NEEDED_BY_PAST && input.needed_by <= now + NEEDED_BY_AHEAD,
        "needed_by",
        "must be within a day before and 60 days after now",
    );
    // `IndicationInput` is also the shown shape, so `infection` stays a `String`.
    let infection = Text::<1, 500>::check(&mut v, "indication.infection", &input.indication.infection);
    v.check(
        input.indication.anc_per_ul <= 100_000,
        "indication.anc_per_ul",
        "must be at most 100000",
    );
    v.check(
        input.indication.refractory_hours <= 24 * 365,
        "indication.refractory_hours",
        "must be at most 8760",
    );
    v.check(
        input.requirements.as_ref().and_then(|r| r.irradiated) != Some(false),
        "requirements.irradiated",
        "must be true: every granulocyte unit is irradiated before issue",
    );
    let order = input.order_identifier.as_ref().map(|o| {
        let value = Text::<1, 64>::check(&mut v, "order_identifier.value", &o.value);
        let system =
            (o.system.as_deref()).and_then(|s| crate::input::check_system_uri(&mut v, "order_identifier.system", s));
        (system, value)
    });
    v.finish()?;
    // Another hospital's patient is answered as one that does not exist.
    let patient = patients::find(conn, input.patient_id, scope)
        .map_err(|e| e.or_unknown(ErrorCode::UnknownPatient, "patient", input.patient_id))?;
    let order = match order {
        None => None,
        Some((system, value)) => {
            let system = match system {
                Some(s) => s,
                None => hospitals::find(conn, patient.hospital_id)?
                    .ok_or_else(|| ApiError::unknown(ErrorCode::UnknownHospital, "hospital", patient.hospital_id))?
                    .order_system(),
            };
            if !with_order_identifier(conn, patient.hospital_id, Some(&system), &value, 1)?.is_empty() {
                return Err(order_taken(&system, &value));
            }
            Some((system, value))
        }
    };
    // A hospital account's request counts toward its hospital's daily cap (staff placing one,
    // say after a phone call, neither count nor are refused). Counted in this transaction:
    // exact across instances, and a creation that fails gives its place back.
    if scope.is_some() {
        crate::services::limits::count_hospital_request(
            conn,
            patient.hospital_id,
            policy.security.hospital_daily_request_cap,
            tz,
        )?;
    }
    let indication = Indication {
        anc_per_ul: input.indication.anc_per_ul,
        refractory_hours: input.indication.refractory_hours,
    };
    let (status, outside) = rules::initial_status(indication, policy);
    let within = rules::outside_indication(indication, policy).is_empty();
    let requirements = input.requirements.unwrap_or_default();
    let at = stored(now);
    let row = rows::insert(
        conn,
        &RequestData {
            hospital_id: patient.hospital_id,
            patient_id: patient.id,
            units_requested: i32::try_from(input.units_requested).unwrap_or(1),
            needed_by: stored(input.needed_by),
            priority: input.priority,
            anc_per_ul: i32::try_from(indication.anc_per_ul).unwrap_or(i32::MAX),
            infection,
            refractory_hours: i32::try_from(indication.refractory_hours).unwrap_or(i32::MAX),
            cmv_negative: requirements.cmv_negative.unwrap_or(false),
            hla_compatible: requirements.hla_compatible.unwrap_or(false),
            within_indication: within,
            status,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            cancelled_by: None,
            cancel_reason: None,
            requested_by: actor.name.clone(),
            updated_at: at,
            irradiated: true,
            order_system: order.as_ref().map(|(s, _)| s.clone()),
            order_value: order.as_ref().map(|(_, v)| v.clone()),
        },
        at,
    )
    .map_err(|e| match &order {
        Some((system, value)) if store::is_unique_violation(&e) => order_taken(system, value),
        _ => e.into(),
    })?;
    let created = view(conn, row, policy)?;
    let mut snapshot = to_value(&created)?;
    if let Some(obj) = snapshot.as_object_mut() {
        obj.insert("gate".to_owned(), to_value(&reasons(outside))?);
    }
    audit::append(
        conn,
        actor,
        Change::created("request.create", "request", created.id, snapshot),
    )?;
    Ok(created)
}

fn order_taken(system: &str, value: &str) -> ApiError {
    ApiError::new(
        ErrorCode::OrderIdentifierTaken,
        format!("the hospital already placed an order with identifier {system}|{value}"),
    )
}

/// The hospital's requests with the order identifier `value` (in `system`, or in any system),
/// at most `limit`, oldest first.
pub fn with_order_identifier(
    conn: &mut DbConn,
    hospital_id: i64,
    system: Option<&str>,
    value: &str,
    limit: i64,
) -> ApiResult<Vec<Request>> {
    let filter = rows::Filter {
        hospital_id: Some(hospital_id),
        identifiers: vec![vec![rows::IdentifierToken {
            system: system.map(str::to_owned),
            value: Some(value.to_owned()),
        }]],
        ..rows::Filter::default()
    };
    Ok(rows::search(conn, &filter, None, limit)?)
}

/// A POST's answer as first sent, for replay.
pub enum Outcome {
    Created(Box<RequestView>),
    Replayed(idempotency::Answer),
    /// Another request with the same key was created at the same moment; nothing was written.
    LostRace,
}

/// Creates the request, or replays the first answer for the same account and
/// `Idempotency-Key`. The key is stored in the same transaction as the request, so a
/// concurrent duplicate fails on the key's unique index and is answered from the stored row.
pub fn create_idempotent(
    conn: &mut DbConn,
    actor: &Actor,
    attempt: Option<&idempotency::Attempt>,
    input: RequestInput,
    scope: Option<i64>,
    policy: &Policy,
    tz: chrono_tz::Tz,
) -> ApiResult<Outcome> {
    if let Some(a) = attempt
        && let Some(row) = idempotency::find_live(conn, &a.account, &a.key, policy)?
    {
        return idempotency::replay(&row, a).map(Outcome::Replayed);
    }
    // A savepoint, so that losing the race on the key leaves nothing of this attempt behind
    // while the surrounding transaction still ends normally.
    let attempt = conn.transaction::<_, Attempt, _>(|conn| {
        let created = create(conn, actor, input, scope, policy, tz).map_err(Attempt::Failed)?;
        if let Some(a) = attempt {
            let body = serde_json::to_string(&created)
                .map_err(|e| Attempt::Failed(ApiError::internal(anyhow::anyhow!("{e}"))))?;
            let answer = idempotency::Answer {
                status: 201,
                headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                body,
            };
            idempotency::insert_answer(conn, a, &answer).map_err(|e| {
                if store::is_unique_violation(&e) {
                    Attempt::LostRace
                } else {
                    Attempt::Failed(e.into())
                }
            })?;
        }
        Ok(created)
    });
    match attempt {
        Ok(created) => Ok(Outcome::Created(Box::new(created))),
        Err(Attempt::LostRace) => Ok(Outcome::LostRace),
        Err(Attempt::Failed(e)) => Err(e),
    }
}

enum Attempt {
    Failed(ApiError),
    /// A concurrent request with the same key committed first.
    LostRace,
}

impl From<diesel::result::Error> for Attempt {
    fn from(e: diesel::result::Error) -> Self {
        Attempt::Failed(e.into())
    }
}

/// The answer for a request that lost the race on its key: the winner's, when route and body match.
pub fn replay_winner(conn: &mut DbConn, attempt: &idempotency::Attempt) -> ApiResult<Outcome> {
    let stored = crate::store::idempotency::find(conn, &attempt.account, &attempt.key)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ConcurrentUpdate,
            "a request with this key was being created at the same time; retry",
        )
    })?;
    idempotency::replay(&stored, attempt).map(Outcome::Replayed)
}

fn change(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    action: RequestAction,
    edit: impl FnOnce(&mut RequestData),
    scope: Option<i64>,
    policy: &Policy,
) -> ApiResult<RequestView> {
    let r = find(conn, id, scope)?;
    rows::lock(conn, id)?;
    let from = r.status;
    let to = rules::next_request_status(from, action).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidTransition,
            format!("request {id} is {from}; it cannot {action}"),
        )
    })?;
    let before = view(conn, r.clone(), policy)?;
    let mut data = RequestData::from(r);
    data.status = to;
    data.updated_at = store::now();
    edit(&mut data);
    let row = rows::update(conn, id, &data)?;
    let after = view(conn, row, policy)?;
    audit::append(
        conn,
        actor,
        Change::updated(
            match action {
                RequestAction::Approve => "request.approve",
                RequestAction::Decline => "request.decline",
                RequestAction::Cancel => "request.cancel",
                RequestAction::Fulfil => "request.fulfil",
                RequestAction::Reopen => "request.reopen",
                RequestAction::Allocate => "request.allocate",
            },
            "request",
            id,
            to_value(&before)?,
            to_value(&after)?,
        ),
    )?;
    Ok(after)
}

fn clean_reason(raw: Option<&str>, required: bool) -> ApiResult<Option<String>> {
    let reason = raw.map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
    match &reason {
        None if required => Err(ApiError::field("reason", "is required")),
        _ => Ok(reason),
    }
}

pub fn decide(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    approve: bool,
    reason: Option<&str>,
    policy: &Policy,
) -> ApiResult<RequestView> {
    let reason = clean_reason(reason, !approve)?;
    let action = if approve {
        RequestAction::Approve
    } else {
        RequestAction::Decline
    };
    let by = actor.name.clone();
    change(
        conn,
        actor,
        id,
        action,
        |d| {
            d.decided_by = Some(by);
            d.decided_at = Some(store::now());
            d.decision_reason = reason;
        },
        None,
        policy,
    )
}

/// Cancels the request; its allocations that still hold units are cancelled by the caller.
pub fn cancel(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    reason: Option<&str>,
    scope: Option<i64>,
    policy: &Policy,
) -> ApiResult<RequestView> {
    let reason = clean_reason(reason, false)?;
    let by = actor.name.clone();
    change(
        conn,
        actor,
        id,
        RequestAction::Cancel,
        |d| {
            d.cancelled_by = Some(by);
            d.cancel_reason = reason;
        },
        scope,
        policy,
    )
}

/// After an issue or a return: fulfilled when enough units are out, open again when not.
pub fn settle(conn: &mut DbConn, actor: &Actor, id: i64, policy: &Policy) -> ApiResult<()> {
    let r = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("request"))?;
    let issued = allocation_rows::of_request(conn, id)?
        .iter()
        .filter(|a| matches!(a.status, AllocationStatus::Issued | AllocationStatus::Transfused))
        .count();
    let enough = issued >= usize::try_from(r.units_requested).unwrap_or(usize::MAX);
    match (r.status, enough) {
        (RequestStatus::Open, true) => {
            change(conn, actor, id, RequestAction::Fulfil, |_| {}, None, policy)?;
        }
        (RequestStatus::Fulfilled, false) => {
            change(conn, actor, id, RequestAction::Reopen, |_| {}, None, policy)?;
        }
        _ => {}
    }
    Ok(())
}

pub fn list(
    conn: &mut DbConn,
    scope: Option<i64>,
    status: Option<RequestStatus>,
    after_id: Option<i64>,
    limit: i64,
    policy: &Policy,
) -> ApiResult<(Vec<RequestView>, Option<String>)> {
    let found = rows::list(conn, scope, status.map(|s| s.as_str()), after_id, limit + 1)?;
    let (found, next) = crate::input::paginate(found, limit, |r| r.id);
    let views = found
        .into_iter()
        .map(|r| view(conn, r, policy))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok((views, next))
}
