//! Collections: booking, moving, start, completion and abort.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::donors::{self, booking};
use super::stimulations::{StimulationView, stimulation_view};
use super::{from_stored_json, is_past, not_future, reasons, stored, to_json, to_value, utc};
use crate::domain::policy::Policy;
use crate::domain::scheduling::{Booking, CollectionStatus, Transition, check_booking, next_status, overlaps};
use crate::domain::stimulation::{self, normalize_agent};
use crate::domain::text_enum;
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::input::Text;
use crate::store::audit::{self, Actor, Change};
use crate::store::collections::{self as rows, Collection, CollectionData, Stimulation};
use crate::store::devices::{self, Device};
use crate::store::donors as donor_rows;
use crate::store::{self, DbConn};

text_enum!(
    /// Donor adverse events during apheresis.
    AdverseEventKind {
        CitrateReaction => "citrate_reaction",
        Vasovagal => "vasovagal",
        Hypotension => "hypotension",
        Hematoma => "hematoma",
        AllergicReaction => "allergic_reaction",
        VenousAccess => "venous_access",
        Other => "other",
    }
);

text_enum!(
    AdverseEventSeverity {
        Mild => "mild",
        Moderate => "moderate",
        Severe => "severe",
    }
);

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdverseEvent {
    pub kind: AdverseEventKind,
    pub severity: AdverseEventSeverity,
    /// Default: the time of the transition that records it.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Up to 1000 characters.
    pub description: Option<Text<0, 1000>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CollectionView {
    pub id: i64,
    #[schema(minimum = 1)]
    pub donor_id: i64,
    #[schema(minimum = 1)]
    pub device_id: i64,
    #[schema(minimum = 1)]
    pub request_id: Option<i64>,
    pub status: CollectionStatus,
    pub scheduled_start: DateTime<Utc>,
    pub scheduled_end: DateTime<Utc>,
    /// Stimulation agents planned (checked against the donor's contraindications).
    pub planned_agents: Vec<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub volume_processed_ml: Option<i32>,
    pub hes_used: Option<bool>,
    /// Hydroxyethyl starch the donor received, mL (counted against
    /// `donor.max_hes_ml_per_12_months`).
    #[schema(minimum = 0, maximum = 5000)]
    pub hes_volume_ml: Option<i32>,
    /// Red cells lost other than in the product (e.g. an aborted run's circuit), mL.
    #[schema(minimum = 0, maximum = 1000)]
    pub red_cell_loss_ml: Option<i32>,
    /// Red cells in the unit made from this collection, mL, recorded when the unit is created.
    /// With `red_cell_loss_ml` it counts towards the donor's red-cell-loss rules.
    #[schema(minimum = 0, maximum = 500)]
    pub product_red_cell_ml: Option<f64>,
    /// Donor's pre-collection WBC, × 10⁹/L.
    #[schema(minimum = 0, maximum = 500)]
    pub pre_count_wbc: Option<f64>,
    /// Donor's pre-collection ANC, × 10⁹/L.
    #[schema(minimum = 0, maximum = 500)]
    pub pre_count_anc: Option<f64>,
    pub abort_reason: Option<String>,
    pub adverse_events: Vec<AdverseEvent>,
    /// Stimulations given for this collection, each with its window check.
    pub stimulations: Vec<StimulationView>,
    /// Every stimulation warning, re-evaluated against the current start.
    pub warnings: Vec<Reason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn view(conn: &mut DbConn, c: Collection, policy: &Policy) -> ApiResult<CollectionView> {
    let b = booking(&c)?;
    let stimulations = rows::stimulations_for_collection(conn, c.id)?
        .into_iter()
        .map(|s| stimulation_view(s, Some(b.start()), policy))
        .collect::<ApiResult<Vec<_>>>()?;
    let warnings = stimulations
        .iter()
        .flat_map(|s| {
            s.warnings.iter().map(move |w| Reason {
                code: w.code.clone(),
                message: format!("stimulation {} ({}): {}", s.id, s.agent, w.message),
            })
        })
        .collect();
    Ok(CollectionView {
        id: c.id,
        donor_id: c.donor_id,
        device_id: c.device_id,
        request_id: c.request_id,
        status: b.status,
        scheduled_start: b.scheduled_start,
        scheduled_end: b.scheduled_end,
        planned_agents: from_stored_json("planned_agents", &c.planned_agents)?,
        started_at: b.started_at,
        ended_at: b.ended_at,
        volume_processed_ml: c.volume_processed_ml,
        hes_used: c.hes_used,
        hes_volume_ml: c.hes_volume_ml,
        red_cell_loss_ml: c.red_cell_loss_ml,
        product_red_cell_ml: c.product_red_cell_ml,
        pre_count_wbc: c.pre_count_wbc,
        pre_count_anc: c.pre_count_anc,
        abort_reason: c.abort_reason,
        adverse_events: from_stored_json("adverse_events", &c.adverse_events)?,
        stimulations,
        warnings,
        created_at: utc(c.created_at),
        updated_at: utc(c.updated_at),
    })
}

/// Audit snapshot: the collection's own fields.
fn snapshot(v: &CollectionView) -> ApiResult<serde_json::Value> {
    let mut value = to_value(v)?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("stimulations");
        obj.remove("warnings");
    }
    Ok(value)
}

pub fn find(conn: &mut DbConn, id: i64) -> ApiResult<Collection> {
    rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("collection"))
}

pub fn get(conn: &mut DbConn, id: i64, policy: &Policy) -> ApiResult<CollectionView> {
    let c = find(conn, id)?;
    view(conn, c, policy)
}

// Plausibility bounds on booking times (record-keeping, not clinical).
const BOOK_BACK: TimeDelta = TimeDelta::days(2 * 366);
const BOOK_AHEAD: TimeDelta = TimeDelta::days(366);
const MAX_DURATION_MINUTES: u32 = 24 * 60;

fn agents(v: &mut Validator, raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        match normalize_agent(a) {
            Some(agent) if !out.contains(&agent) => out.push(agent),
            Some(_) => {}
            None => v.push(
                &format!("planned_agents[{i}]"),
                "must be an agent name such as gcsf or dexamethasone",
            ),
        }
    }
    out
}

fn slot(
    v: &mut Validator,
    start: DateTime<Utc>,
    duration_minutes: Option<u32>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    v.check(
        start >= now - BOOK_BACK && start <= now + BOOK_AHEAD,
        "scheduled_start",
        "must be within two years before and one year after now",
    );
    let minutes = duration_minutes.unwrap_or(policy.collection.default_duration_minutes);
    v.check(
        (1..=MAX_DURATION_MINUTES).contains(&minutes),
        "duration_minutes",
        format!("must be between 1 and {MAX_DURATION_MINUTES}"),
    );
    let start = utc(stored(start));
    (
        start,
        start + TimeDelta::minutes(i64::from(minutes.clamp(1, MAX_DURATION_MINUTES))),
    )
}

/// Bookings on the device that overlap `candidate` (other than itself).
fn device_conflicts(
    conn: &mut DbConn,
    device_id: i64,
    candidate: &Booking,
    now: DateTime<Utc>,
) -> ApiResult<Vec<Reason>> {
    let Some(wanted) = candidate.occupancy(now) else {
        return Ok(Vec::new());
    };
    let margin = TimeDelta::minutes(i64::from(MAX_DURATION_MINUTES)) + TimeDelta::days(1);
    let mut conflicts = Vec::new();
    for c in rows::on_device_near(conn, device_id, stored(wanted.0 - margin), stored(wanted.1 + margin))? {
        let other = booking(&c)?;
        if other.id != candidate.id
            && let Some(taken) = other.occupancy(now)
            && overlaps(wanted, taken)
        {
            conflicts.push(Reason {
                code: ErrorCode::DeviceBusy.as_str().to_owned(),
                message: format!(
                    "device {device_id} is taken by collection {} from {} to {}",
                    other.id,
                    taken.0.format("%Y-%m-%d %H:%M UTC"),
                    taken.1.format("%Y-%m-%d %H:%M UTC")
                ),
            });
        }
    }
    Ok(conflicts)
}

/// 422 with every reason: `donor_ineligible` when the donor fails any rule, else `device_busy`.
fn refuse_unless_clear(eligibility: crate::domain::eligibility::Eligibility, busy: Vec<Reason>) -> ApiResult<()> {
    if !eligibility.eligible {
        let mut all = reasons(eligibility.reasons);
        all.extend(busy);
        return Err(ApiError::refused(
            ErrorCode::DonorIneligible,
            "the donor is not eligible for a collection at that time",
            all,
        ));
    }
    if !busy.is_empty() {
        return Err(ApiError::refused(
            ErrorCode::DeviceBusy,
            "the device is booked at that time",
            busy,
        ));
    }
    Ok(())
}

/// The device named in the body, locked; a missing one is `unknown_device`.
fn active_device(conn: &mut DbConn, device_id: i64) -> ApiResult<Device> {
    let unknown = || ApiError::unknown(ErrorCode::UnknownDevice, "device", device_id);
    if !devices::lock(conn, device_id)? {
        return Err(unknown());
    }
    let device = devices::find(conn, device_id)?.ok_or_else(unknown)?;
    if !device.active {
        return Err(ApiError::refused(
            ErrorCode::DeviceInactive,
            format!("device {} is out of service", device.name),
            vec![],
        ));
    }
    Ok(device)
}

fn locked_donor(conn: &mut DbConn, donor_id: i64) -> ApiResult<donor_rows::Donor> {
    if !donor_rows::lock(conn, donor_id)? {
        return Err(ApiError::not_found("donor"));
    }
    donors::find(conn, donor_id)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"donor_id": 7, "device_id": 1, "scheduled_start": "2026-11-26T08:00:00Z", "request_id": 5, "planned_agents": ["gcsf", "dexamethasone"]}))]
pub struct ScheduleInput {
    #[schema(minimum = 1)]
    pub donor_id: i64,
    #[schema(minimum = 1)]
    pub device_id: i64,
    /// May be in the past: procedures are often recorded after they happened.
    pub scheduled_start: DateTime<Utc>,
    /// Default: the policy's `collection.default_duration_minutes`.
    #[schema(minimum = 1, maximum = 1440)]
    pub duration_minutes: Option<u32>,
    /// The hospital request this collection is for.
    #[schema(minimum = 1)]
    pub request_id: Option<i64>,
    /// Agents the donor will be given (default none); checked against contraindications.
    #[serde(default)]
    pub planned_agents: Vec<String>,
}

pub fn schedule(conn: &mut DbConn, actor: &Actor, input: ScheduleInput, policy: &Policy) -> ApiResult<CollectionView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    let (start, end) = slot(&mut v, input.scheduled_start, input.duration_minutes, policy, now);
    let planned = agents(&mut v, &input.planned_agents);
    v.check(
        input.request_id.is_none_or(|r| r > 0),
        "request_id",
        "must be a request id",
    );
    v.finish()?;
    if let Some(request_id) = input.request_id
        && crate::store::requests::find(conn, request_id)?.is_none()
    {
        return Err(ApiError::unknown(ErrorCode::UnknownRequest, "request", request_id));
    }
    // Donor before device, everywhere, so concurrent units of work cannot deadlock.
    let donor = locked_donor(conn, input.donor_id)
        .map_err(|e| e.or_unknown(ErrorCode::UnknownDonor, "donor", input.donor_id))?;
    active_device(conn, input.device_id)?;
    let record = donors::record(conn, &donor)?;
    let candidate = Booking {
        id: 0,
        status: CollectionStatus::Scheduled,
        scheduled_start: start,
        scheduled_end: end,
        started_at: None,
        ended_at: None,
        red_cell_loss_ml: None,
        hes_ml: None,
    };
    let eligibility = check_booking(&record, &candidate, &planned, policy, now);
    let busy = device_conflicts(conn, input.device_id, &candidate, now)?;
    refuse_unless_clear(eligibility, busy)?;
    let at = stored(now);
    let row = rows::insert(
        conn,
        &CollectionData {
            donor_id: donor.id,
            device_id: input.device_id,
            request_id: input.request_id,
            status: CollectionStatus::Scheduled,
            scheduled_start: stored(start),
            scheduled_end: stored(end),
            planned_agents: to_json(&planned)?,
            started_at: None,
            ended_at: None,
            volume_processed_ml: None,
            hes_used: None,
            pre_count_wbc: None,
            pre_count_anc: None,
            abort_reason: None,
            adverse_events: "[]".to_owned(),
            updated_at: at,
            red_cell_loss_ml: None,
            product_red_cell_ml: None,
            hes_volume_ml: None,
        },
        at,
    )?;
    let created = view(conn, row, policy)?;
    audit::append(
        conn,
        actor,
        Change::created("collection.schedule", "collection", created.id, snapshot(&created)?),
    )?;
    Ok(created)
}

fn transition(c: &Collection, t: Transition) -> ApiResult<CollectionStatus> {
    let from = booking(c)?.status;
    next_status(from, t).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidTransition,
            format!("collection {} is {from}; it cannot {t}", c.id),
        )
    })
}

/// The agents a booked collection's donor is checked against by the alert scan: the
/// programme's default agents, the collection's planned agents and those already given for it.
pub fn agents_to_check(c: &Collection, given: &[Stimulation], policy: &Policy) -> ApiResult<Vec<String>> {
    let mut planned: Vec<String> = from_stored_json("planned_agents", &c.planned_agents)?;
    planned.extend(given.iter().map(|s| s.agent.clone()));
    Ok(stimulation::agents_to_check(&planned, policy))
}

/// Records the red cells of the unit made from collection `id` (part of the unit's creation
/// transaction); audited. A volume already recorded is kept, never overwritten.
pub fn record_product_red_cells(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    red_cell_volume_ml: Option<f64>,
    policy: &Policy,
) -> ApiResult<()> {
    let Some(ml) = red_cell_volume_ml else {
        return Ok(());
    };
    let c = find(conn, id)?;
    if c.product_red_cell_ml.is_some() {
        return Ok(());
    }
    let mut data = CollectionData::from(c.clone());
    data.product_red_cell_ml = Some(ml);
    data.updated_at = store::now();
    save(conn, actor, "collection.product_red_cells", c, data, policy)?;
    Ok(())
}

/// `planned` plus the agents already given for the collection.
fn with_given_agents(conn: &mut DbConn, collection_id: i64, mut planned: Vec<String>) -> ApiResult<Vec<String>> {
    for s in rows::stimulations_for_collection(conn, collection_id)? {
        if !planned.contains(&s.agent) {
            planned.push(s.agent);
        }
    }
    Ok(planned)
}

fn save(
    conn: &mut DbConn,
    actor: &Actor,
    action: &str,
    before: Collection,
    data: CollectionData,
    policy: &Policy,
) -> ApiResult<CollectionView> {
    let id = before.id;
    let before = view(conn, before, policy)?;
    let row = rows::update(conn, id, &data)?;
    let after = view(conn, row, policy)?;
    audit::append(
        conn,
        actor,
        Change::updated(action, "collection", id, snapshot(&before)?, snapshot(&after)?),
    )?;
    Ok(after)
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scheduled_start": "2026-11-26T09:30:00Z"}))]
pub struct RescheduleInput {
    pub scheduled_start: Option<DateTime<Utc>>,
    #[schema(minimum = 1)]
    pub device_id: Option<i64>,
    #[schema(minimum = 1, maximum = 1440)]
    pub duration_minutes: Option<u32>,
    pub planned_agents: Option<Vec<String>>,
}

/// Moves a scheduled collection (time, device, length, planned agents); its stimulations'
/// windows are re-evaluated against the new start and returned as `warnings`.
pub fn reschedule(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    input: RescheduleInput,
    policy: &Policy,
) -> ApiResult<CollectionView> {
    let now = utc(store::now());
    let c = find(conn, id)?;
    transition(&c, Transition::Reschedule)?;
    let current = booking(&c)?;
    let mut v = Validator::new();
    let minutes = input
        .duration_minutes
        .or_else(|| u32::try_from(current.planned_duration().num_minutes()).ok());
    let (start, end) = slot(
        &mut v,
        input.scheduled_start.unwrap_or(current.scheduled_start),
        minutes,
        policy,
        now,
    );
    let planned = match &input.planned_agents {
        Some(list) => agents(&mut v, list),
        None => from_stored_json("planned_agents", &c.planned_agents)?,
    };
    v.finish()?;
    let device_id = input.device_id.unwrap_or(c.device_id);
    let donor = locked_donor(conn, c.donor_id)?;
    active_device(conn, device_id)?;
    let record = donors::record(conn, &donor)?;
    let candidate = Booking {
        scheduled_start: start,
        scheduled_end: end,
        ..current
    };
    let given = with_given_agents(conn, c.id, planned.clone())?;
    let eligibility = check_booking(&record, &candidate, &given, policy, now);
    let busy = device_conflicts(conn, device_id, &candidate, now)?;
    refuse_unless_clear(eligibility, busy)?;
    let mut data = CollectionData::from(c.clone());
    data.scheduled_start = stored(start);
    data.scheduled_end = stored(end);
    data.device_id = device_id;
    data.planned_agents = to_json(&planned)?;
    data.updated_at = stored(now);
    save(conn, actor, "collection.reschedule", c, data, policy)
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({}))]
pub struct StartInput {
    /// Default: now. Not in the future.
    pub started_at: Option<DateTime<Utc>>,
}

/// Starts the procedure after checking the donor again at the real start time.
pub fn start(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    input: StartInput,
    policy: &Policy,
) -> ApiResult<CollectionView> {
    let now = utc(store::now());
    let started_at = utc(stored(input.started_at.unwrap_or(now)));
    not_future("started_at", started_at, now)?;
    let c = find(conn, id)?;
    let status = transition(&c, Transition::Start)?;
    let donor = locked_donor(conn, c.donor_id)?;
    devices::lock(conn, c.device_id)?;
    let record = donors::record(conn, &donor)?;
    let candidate = Booking {
        status,
        started_at: Some(started_at),
        ..booking(&c)?
    };
    let agents = with_given_agents(conn, c.id, from_stored_json("planned_agents", &c.planned_agents)?)?;
    let eligibility = check_booking(&record, &candidate, &agents, policy, now);
    let busy = device_conflicts(conn, c.device_id, &candidate, now)?;
    refuse_unless_clear(eligibility, busy)?;
    let mut data = CollectionData::from(c.clone());
    data.status = status;
    data.started_at = Some(stored(started_at));
    data.updated_at = stored(now);
    save(conn, actor, "collection.start", c, data, policy)
}

fn adverse_events(
    v: &mut Validator,
    stored_events: &str,
    new: Vec<AdverseEvent>,
    default_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApiResult<String> {
    let mut events: Vec<AdverseEvent> = from_stored_json("adverse_events", stored_events)?;
    for (i, mut e) in new.into_iter().enumerate() {
        let at = e.occurred_at.unwrap_or(default_at);
        v.check(
            is_past(at, now),
            &format!("adverse_events[{i}].occurred_at"),
            "must not be in the future",
        );
        e.occurred_at = Some(utc(stored(at)));
        e.description = e.description.filter(|d| !d.is_empty());
        events.push(e);
    }
    to_json(&events)
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"volume_processed_ml": 7500, "hes_used": true, "hes_volume_ml": 500, "pre_count_wbc": 28.4, "pre_count_anc": 24.1}))]
pub struct CompleteInput {
    /// Default: now. Not before the start, not in the future.
    pub ended_at: Option<DateTime<Utc>>,
    /// 1–50 000 mL.
    #[schema(minimum = 1, maximum = 50000)]
    pub volume_processed_ml: Option<u32>,
    /// Default: true when `hes_volume_ml` is above 0.
    pub hes_used: Option<bool>,
    /// Hydroxyethyl starch the donor received, 0–5000 mL (0 only without HES); counted against
    /// `donor.max_hes_ml_per_12_months`. Recorded once.
    #[schema(minimum = 0, maximum = 5000)]
    pub hes_volume_ml: Option<u32>,
    /// Red cells lost other than in the product (not returned from the circuit), 0–1000 mL.
    /// The product's red cells are recorded when its unit is created. Recorded once.
    #[schema(minimum = 0, maximum = 1000)]
    pub red_cell_loss_ml: Option<u32>,
    /// Donor's pre-collection WBC, × 10⁹/L (0–500).
    #[schema(minimum = 0, maximum = 500)]
    pub pre_count_wbc: Option<f64>,
    /// Donor's pre-collection ANC, × 10⁹/L (0–500).
    #[schema(minimum = 0, maximum = 500)]
    pub pre_count_anc: Option<f64>,
    #[serde(default)]
    pub adverse_events: Vec<AdverseEvent>,
}

const MAX_VOLUME_PROCESSED_ML: u32 = 50_000;
const MAX_COUNT: f64 = 500.0;
// Plausibility bounds of what a collection records (not eligibility rules: those are policy).
const MAX_RED_CELL_LOSS_ML: u32 = 1000;
const MAX_HES_VOLUME_ML: u32 = 5000;

/// Checks the red-cell loss and HES volume of a procedure's end; `started` is whether it ran.
/// Returns them as stored, and `hes_used` as given or implied by the volume.
fn exposure(
    v: &mut Validator,
    started: bool,
    red_cell_loss_ml: Option<u32>,
    hes_volume_ml: Option<u32>,
    hes_used: Option<bool>,
) -> (Option<i32>, Option<i32>, Option<bool>) {
    v.check(
        red_cell_loss_ml.is_none_or(|ml| ml <= MAX_RED_CELL_LOSS_ML),
        "red_cell_loss_ml",
        format!("must be between 0 and {MAX_RED_CELL_LOSS_ML}"),
    );
    v.check(
        hes_volume_ml.is_none_or(|ml| ml <= MAX_HES_VOLUME_ML),
        "hes_volume_ml",
        format!("must be between 0 and {MAX_HES_VOLUME_ML}"),
    );
    match (hes_used, hes_volume_ml) {
        (Some(false), Some(ml)) if ml > 0 => v.push("hes_volume_ml", "must be 0 or absent when hes_used is false"),
        (Some(true), Some(0)) => v.push("hes_volume_ml", "must be above 0 when hes_used is true"),
        _ => {}
    }
    if !started {
        for (field, given) in [
            ("red_cell_loss_ml", red_cell_loss_ml.is_some()),
            ("hes_volume_ml", hes_volume_ml.is_some()),
        ] {
            v.check(
                !given,
                field,
                "must be absent: the procedure never started, so the donor lost and received nothing",
            );
        }
    }
    (
        red_cell_loss_ml.and_then(|ml| i32::try_from(ml).ok()),
        hes_volume_ml.and_then(|ml| i32::try_from(ml).ok()),
        hes_used.or(hes_volume_ml.map(|ml| ml > 0)),
    )
}

pub fn complete(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    input: CompleteInput,
    policy: &Policy,
) -> ApiResult<CollectionView> {
    let now = utc(store::now());
    let ended_at = utc(stored(input.ended_at.unwrap_or(now)));
    let c = find(conn, id)?;
    let status = transition(&c, Transition::Complete)?;
    let started_at = c.started_at.map(utc);
    let mut v = Validator::new();
    v.check(is_past(ended_at, now), "ended_at", "must not be in the future");
    v.check(
        started_at.is_none_or(|s| ended_at >= s),
        "ended_at",
        "must not be before started_at",
    );
    v.check(
        input
            .volume_processed_ml
            .is_none_or(|ml| (1..=MAX_VOLUME_PROCESSED_ML).contains(&ml)),
        "volume_processed_ml",
        format!("must be between 1 and {MAX_VOLUME_PROCESSED_ML}"),
    );
    for (field, value) in [
        ("pre_count_wbc", input.pre_count_wbc),
        ("pre_count_anc", input.pre_count_anc),
    ] {
        v.check(
            value.is_none_or(|x| x.is_finite() && (0.0..=MAX_COUNT).contains(&x)),
            field,
            format!("must be between 0 and {MAX_COUNT} (× 10⁹/L)"),
        );
    }
    let (red_cell_loss, hes_volume, hes_used) = exposure(
        &mut v,
        true,
        input.red_cell_loss_ml,
        input.hes_volume_ml,
        input.hes_used,
    );
    let events = adverse_events(&mut v, &c.adverse_events, input.adverse_events, ended_at, now)?;
    v.finish()?;
    let mut data = CollectionData::from(c.clone());
    data.status = status;
    data.ended_at = Some(stored(ended_at));
    data.volume_processed_ml = input.volume_processed_ml.and_then(|ml| i32::try_from(ml).ok());
    data.hes_used = hes_used;
    data.hes_volume_ml = hes_volume;
    data.red_cell_loss_ml = red_cell_loss;
    data.pre_count_wbc = input.pre_count_wbc;
    data.pre_count_anc = input.pre_count_anc;
    data.adverse_events = events;
    data.updated_at = stored(now);
    save(conn, actor, "collection.complete", c, data, policy)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "venous access lost", "red_cell_loss_ml": 120, "adverse_events": [{"kind": "venous_access", "severity": "mild"}]}))]
pub struct AbortInput {
    /// Why, 1–500 characters.
    pub reason: Text<1, 500>,
    /// Default: now. For a running procedure this is when it ended.
    pub aborted_at: Option<DateTime<Utc>>,
    /// Red cells the donor lost in the aborted run (not returned from the circuit), 0–1000 mL;
    /// counts towards the red-cell-loss rules. Only for a procedure that had started.
    #[schema(minimum = 0, maximum = 1000)]
    pub red_cell_loss_ml: Option<u32>,
    /// Hydroxyethyl starch the donor received before the run stopped, 0–5000 mL; counts against
    /// `donor.max_hes_ml_per_12_months`. Only for a procedure that had started.
    #[schema(minimum = 0, maximum = 5000)]
    pub hes_volume_ml: Option<u32>,
    #[serde(default)]
    pub adverse_events: Vec<AdverseEvent>,
}

/// Cancels a scheduled collection or stops a running one. A procedure that had started still
/// counts in the donor's history.
pub fn abort(
    conn: &mut DbConn,
    actor: &Actor,
    id: i64,
    input: AbortInput,
    policy: &Policy,
) -> ApiResult<CollectionView> {
    let now = utc(store::now());
    let at = utc(stored(input.aborted_at.unwrap_or(now)));
    let c = find(conn, id)?;
    let status = transition(&c, Transition::Abort)?;
    let started_at = c.started_at.map(utc);
    let mut v = Validator::new();
    let reason = input.reason.into_inner();
    v.check(is_past(at, now), "aborted_at", "must not be in the future");
    v.check(
        started_at.is_none_or(|s| at >= s),
        "aborted_at",
        "must not be before started_at",
    );
    let (red_cell_loss, hes_volume, hes_used) = exposure(
        &mut v,
        started_at.is_some(),
        input.red_cell_loss_ml,
        input.hes_volume_ml,
        None,
    );
    let events = adverse_events(&mut v, &c.adverse_events, input.adverse_events, at, now)?;
    v.finish()?;
    let mut data = CollectionData::from(c.clone());
    data.status = status;
    data.ended_at = started_at.map(|_| stored(at));
    data.abort_reason = Some(reason);
    data.red_cell_loss_ml = red_cell_loss;
    data.hes_volume_ml = hes_volume;
    if hes_used.is_some() {
        data.hes_used = hes_used;
    }
    data.adverse_events = events;
    data.updated_at = stored(now);
    save(conn, actor, "collection.abort", c, data, policy)
}

pub fn list(
    conn: &mut DbConn,
    filter: &rows::CollectionFilter,
    limit: i64,
    policy: &Policy,
) -> ApiResult<(Vec<CollectionView>, Option<String>)> {
    let found = rows::list(conn, filter, limit + 1)?;
    let (found, next) = crate::input::paginate(found, limit, |c| c.id);
    let views = found
        .into_iter()
        .map(|c| view(conn, c, policy))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok((views, next))
}

/// A dose still to give for a booked collection, with its donor.
#[derive(Debug, Clone)]
pub struct DueStimulation {
    pub collection_id: i64,
    pub collection_start: DateTime<Utc>,
    pub device_id: i64,
    pub donor: donors::DonorView,
    pub dose: stimulation::DueDose,
}

/// The doses still to give (`stimulation::doses_due`) for collections still scheduled to start
/// at or after `from`, whose window opens by `until`: open now, opening later, or already
/// closed without the dose. Earliest closing first. A fixed number of queries.
pub fn stimulations_due(
    conn: &mut DbConn,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    policy: &Policy,
) -> ApiResult<Vec<DueStimulation>> {
    let booked: Vec<_> = rows::scheduled(conn)?
        .into_iter()
        .filter(|c| utc(c.scheduled_start) >= from)
        .collect();
    let ids: Vec<i64> = booked.iter().map(|c| c.id).collect();
    let given = rows::stimulations_for_collections(conn, &ids)?;
    let mut found: Vec<(i64, stimulation::DueDose, &rows::Collection)> = Vec::new();
    for c in &booked {
        let own: Vec<Stimulation> = given
            .iter()
            .filter(|s| s.collection_id == Some(c.id))
            .cloned()
            .collect();
        let agents = agents_to_check(c, &own, policy)?;
        let names: Vec<&str> = own.iter().map(|s| s.agent.as_str()).collect();
        let start = booking(c)?.start();
        for dose in stimulation::doses_due(&agents, &names, start, policy) {
            if dose.opens <= until {
                found.push((c.donor_id, dose, c));
            }
        }
    }
    let donor_ids: Vec<i64> = found.iter().map(|(d, ..)| *d).collect();
    let people: std::collections::HashMap<i64, donors::DonorView> = donors::get_many(conn, &donor_ids)?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    let mut out = Vec::with_capacity(found.len());
    for (donor_id, dose, c) in found {
        let donor = people
            .get(&donor_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("donor"))?;
        out.push(DueStimulation {
            collection_id: c.id,
            collection_start: utc(c.scheduled_start),
            device_id: c.device_id,
            donor,
            dose,
        });
    }
    out.sort_by(|a, b| {
        (a.dose.closes, a.collection_start, a.collection_id).cmp(&(b.dose.closes, b.collection_start, b.collection_id))
    });
    Ok(out)
}
