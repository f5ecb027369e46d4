//! The course planner's service (issue 20): propose a roster for the remaining days of a
//! request's course, book it in one transaction, repair it when a day breaks. The optimiser is
//! the pure `domain::course_plan`; this module supplies its inputs from the database:
//!
//! * **Days**: the course's days still to come (`domain::course`). A day is already covered,
//!   and not planned, by (in this order) an active allocation of the request (the first days,
//!   as the course counts them), a live collection booked for the request whose unit would be in
//!   date at the day's transfusion (a booked, running or completed collection whose unit is not
//!   gone), or a compatible unit in stock that is still in date then.
//! * **Slots**: on every active device, start times every `device.hours.slot_step_minutes` from
//!   `opens` with the collection ending by `closes` (site time zone, staffed days only), net of
//!   every booked or running collection. Day k's slots lie between the previous day's
//!   transfusion and its own (and within one shelf life of it), so no two days share a device
//!   time; a slot is offered only when its stimulations can still be given (not before now).
//! * **Donors**: every active donor (the matching index when there is one), with the dates they
//!   said they cannot come.
//!
//! A repair is a proposal made while a plan is in force: every day whose booking is still live
//! is kept as it is (changing nothing that still holds), and only the days that lost their
//! donor or unit are planned again.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::allocations::FindingView;
use super::candidates;
use super::collections::{self as collection_work, AbortInput, ScheduleInput};
use super::{from_stored_json, stored, to_json, utc};
use crate::domain::compatibility::{Severity, Verdict};
use crate::domain::course;
use crate::domain::course_plan::{self, DayPlan, PlanDay, PlanDonor, PlanInput, PlannedCover, Score, Slot};
use crate::domain::eligibility::Eligibility;
use crate::domain::matching;
use crate::domain::policy::Policy;
use crate::domain::requests::{self as request_rules, RequestStatus};
use crate::domain::scheduling::CollectionStatus;
use crate::domain::stimulation;
use crate::domain::units::UnitStatus;
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::input::Text;
use crate::services::{decisions, donors, patients, requests};
use crate::store::audit::{self, Actor, Change};
use crate::store::course_plans::{self as rows, NewAvailability, NewCoursePlan, PlanDayRow};
use crate::store::matching::{DonorEntry, DonorIndexSlot};
use crate::store::{self, DbConn, allocations as allocation_rows, devices as device_rows};

/// A stretch of time, start inclusive, end exclusive.
type Period = (DateTime<Utc>, DateTime<Utc>);

/// A plan in force (request, plan) and each day's (course day, transfusion, what broke it).
pub type PlanDays = (i64, i64, Vec<(u32, DateTime<Utc>, Option<String>)>);

/// An uncovered day's code when free device time exists before its transfusion but all of it
/// starts too soon to stimulate a donor (the stimulation windows, `donor.*_window_hours`).
pub const NO_TIME_TO_STIMULATE: &str = "no_time_to_stimulate";

/// How a day of the course is covered in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DayKind {
    /// An allocation of the request holds or gave a unit for it.
    Allocated,
    /// A collection already booked for the request (kept as it is).
    Booked,
    /// A unit in stock or made from the request's collection, not yet allocated.
    Unit,
    /// The plan proposes a donor, device and slot.
    Donor,
    /// No donor or unit: `uncovered_reason` says why.
    Uncovered,
}

/// One stimulation to give for a planned collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlannedStimulationView {
    pub agent: String,
    /// The middle of the agent's window (of the window all agents share, when they share one).
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanCollection {
    pub device_id: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UncoveredReason {
    /// `no_device_capacity`, `no_time_to_stimulate`, `no_slot_before_transfusion`,
    /// `no_compatible_donor`, `no_available_donor`, `no_eligible_donor` or `interval_rules`.
    pub code: String,
    pub message: String,
}

/// One course day of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanDayView {
    /// 1-based course day.
    pub day: u32,
    /// A repair that moves this day: the booked collection accepting it aborts.
    pub replaces_collection_id: Option<i64>,
    /// The transfusion's date in the site's time zone.
    pub date: NaiveDate,
    /// When the day's unit is due (the transfusion).
    pub transfuse_at: DateTime<Utc>,
    pub kind: DayKind,
    pub donor_id: Option<i64>,
    pub donor_number: Option<String>,
    pub unit_id: Option<i64>,
    pub din: Option<String>,
    /// The collection booked for the day (kept days; every donor day once accepted).
    pub collection_id: Option<i64>,
    /// The first stimulation to give (the evening before).
    pub stimulation_at: Option<DateTime<Utc>>,
    pub stimulations: Vec<PlannedStimulationView>,
    pub collection: Option<PlanCollection>,
    pub verdict: Option<Verdict>,
    /// The donor's future unit judged for the patient (the same tiers as a unit's).
    pub findings: Vec<FindingView>,
    pub abo_identical: Option<bool>,
    pub cmv_matched: Option<bool>,
    pub minutes_to_transfusion: Option<i64>,
    /// Granulocytes the donor's earlier units held, on average (`null`: none recorded).
    pub expected_granulocytes: Option<f64>,
    /// `expected_granulocytes` per kg of the patient's weight, against
    /// `recipient.dose_target_per_kg`.
    pub expected_dose_per_kg: Option<f64>,
    /// Differs from the plan in force (repairs only).
    pub changed: bool,
    pub uncovered_reason: Option<UncoveredReason>,
}

/// What a proposal holds (stored as proposed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    days: Vec<PlanDayView>,
    score: Score,
    proven_optimal: bool,
    donors_considered: usize,
    planning_ms: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CoursePlanView {
    pub id: i64,
    pub request_id: i64,
    /// The plan in force this one repairs.
    pub repairs_plan_id: Option<i64>,
    /// `proposed`, `accepted` or `superseded` (a later plan was proposed or accepted).
    pub status: String,
    /// The course's remaining days, in order.
    pub days: Vec<PlanDayView>,
    pub score: Score,
    /// False only when the search gave up proving the roster is the best.
    pub proven_optimal: bool,
    pub donors_considered: usize,
    /// Time the optimiser took.
    pub planning_ms: i64,
    pub proposed_by: String,
    pub proposed_at: DateTime<Utc>,
    pub accepted_by: Option<String>,
    pub accepted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"plan_id": 3}))]
pub struct AcceptInput {
    /// The proposal to book (the request's latest).
    #[schema(minimum = 1)]
    pub plan_id: i64,
}

/// Units the bench reports for the patient's weight (per kg).
fn per_kg(granulocytes: Option<f64>, weight_kg: f64) -> Option<f64> {
    granulocytes.filter(|_| weight_kg > 0.0).map(|g| g / weight_kg)
}

fn view_of(row: rows::CoursePlanRow, latest_id: Option<i64>, in_force_id: Option<i64>) -> ApiResult<CoursePlanView> {
    let body: Body = from_stored_json("body", &row.body)?;
    let status = if row.accepted_at.is_some() && in_force_id == Some(row.id) {
        "accepted"
    } else if row.accepted_at.is_none() && latest_id == Some(row.id) {
        "proposed"
    } else {
        "superseded"
    };
    Ok(CoursePlanView {
        id: row.id,
        request_id: row.request_id,
        repairs_plan_id: row.repairs_plan_id,
        status: status.to_owned(),
        days: body.days,
        score: body.score,
        proven_optimal: body.proven_optimal,
        donors_considered: body.donors_considered,
        planning_ms: body.planning_ms,
        proposed_by: row.proposed_by,
        proposed_at: utc(row.proposed_at),
        accepted_by: row.accepted_by,
        accepted_at: row.accepted_at.map(utc),
    })
}

/// The request's latest plan (proposed or accepted), 404 when none was proposed.
pub fn latest(conn: &mut DbConn, request_id: i64) -> ApiResult<CoursePlanView> {
    requests::find(conn, request_id, None)?;
    let row = rows::latest(conn, request_id)?.ok_or_else(|| ApiError::not_found("course plan"))?;
    let in_force = rows::accepted(conn, request_id)?.map(|p| p.id);
    let (id, accepted) = (row.id, row.accepted_at.is_some());
    let mut view = view_of(row, Some(id), in_force)?;
    if accepted {
        // The body is kept as proposed; the collections booked for it are the plan's days.
        let booked: HashMap<u32, i64> = rows::days_of(conn, id)?
            .into_iter()
            .filter_map(|d| Some((u32::try_from(d.day).ok()?, d.collection_id?)))
            .collect();
        for v in &mut view.days {
            if let Some(c) = booked.get(&v.day) {
                v.collection_id = Some(*c);
            }
        }
    }
    Ok(view)
}

/// A live collection of the request and the course day it serves.
struct Held {
    collection_id: i64,
    end: DateTime<Utc>,
    donor_id: i64,
    device_id: i64,
    start: DateTime<Utc>,
    /// The unit made from it, when completed: (id, din).
    unit: Option<(i64, String)>,
}

/// What the request already has for its remaining days, and the inputs of the rest.
struct Prepared {
    request: store::requests::Request,
    patient: crate::domain::compatibility::PatientFacts,
    weight_kg: f64,
    requirements: crate::domain::compatibility::Requirements,
    /// (course day, transfusion time) of every day still to come.
    remaining: Vec<(u32, DateTime<Utc>)>,
    /// Course day → how it is covered already.
    covered: BTreeMap<u32, PlanDayView>,
    /// A repair: course day → the booking of the plan in force that may still move (scheduled,
    /// not started, no stimulation given): planned again, keeping it costs no change.
    movable: BTreeMap<u32, Incumbent>,
}

/// A booking of the plan in force that a repair may keep or move.
#[derive(Debug, Clone)]
struct Incumbent {
    collection_id: i64,
    donor_id: i64,
    slot: Slot,
}

fn blank_day(day: u32, transfuse_at: DateTime<Utc>, tz: chrono_tz::Tz, kind: DayKind) -> PlanDayView {
    PlanDayView {
        day,
        replaces_collection_id: None,
        date: transfuse_at.with_timezone(&tz).date_naive(),
        transfuse_at,
        kind,
        donor_id: None,
        donor_number: None,
        unit_id: None,
        din: None,
        collection_id: None,
        stimulation_at: None,
        stimulations: vec![],
        collection: None,
        verdict: None,
        findings: vec![],
        abo_identical: None,
        cmv_matched: None,
        minutes_to_transfusion: None,
        expected_granulocytes: None,
        expected_dose_per_kg: None,
        changed: false,
        uncovered_reason: None,
    }
}

fn prepare(
    conn: &mut DbConn,
    request_id: i64,
    policy: &Policy,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> ApiResult<Prepared> {
    let r = requests::find(conn, request_id, None)?;
    if !matches!(r.status, RequestStatus::Open | RequestStatus::PendingApproval) {
        return Err(ApiError::new(
            ErrorCode::RequestNotOpen,
            format!("request {request_id} is {}: there is no course to plan", r.status),
        ));
    }
    let patient_view = patients::get(conn, r.patient_id, None, policy)?;
    let patient = patients::facts(&patient_view);
    let requirements = requests::Requirements::of(&r);
    let c = course::course(utc(r.needed_by), u32::try_from(r.units_requested).unwrap_or(0), now);
    let shelf = TimeDelta::hours(i64::from(policy.unit.max_shelf_life_hours));

    // Allocations cover the first days, in the order they were made (domain::course).
    let active = allocation_rows::units_of_request(conn, request_id)?
        .into_iter()
        .filter(|(_, status, _)| request_rules::is_active(*status))
        .count();
    let mut covered: BTreeMap<u32, PlanDayView> = BTreeMap::new();
    for d in c.days.iter().take(active) {
        covered.insert(d.day, blank_day(d.day, d.due_at, tz, DayKind::Allocated));
    }

    // Live collections of the request: each serves the first free day its unit is in date for.
    let collections = rows::collections_of_request(conn, request_id)?;
    let completed: Vec<i64> = collections
        .iter()
        .filter(|c| c.status == CollectionStatus::Completed)
        .map(|c| c.id)
        .collect();
    let made = rows::units_of_collections(conn, &completed)?;
    // The plan in force's bookings that have not started and have no stimulation given.
    let in_force: HashSet<i64> = match rows::accepted(conn, request_id)? {
        Some(plan) => rows::days_of(conn, plan.id)?
            .into_iter()
            .filter_map(|d| d.collection_id)
            .collect(),
        None => HashSet::new(),
    };
    let scheduled: Vec<i64> = collections
        .iter()
        .filter(|c| c.status == CollectionStatus::Scheduled && in_force.contains(&c.id))
        .map(|c| c.id)
        .collect();
    let stimulated: HashSet<i64> = crate::store::collections::stimulations_for_collections(conn, &scheduled)?
        .into_iter()
        .filter_map(|s| s.collection_id)
        .collect();
    let may_move = |id: i64, start: DateTime<Utc>| scheduled.contains(&id) && !stimulated.contains(&id) && start > now;
    let mut held: Vec<Held> = Vec::new();
    for col in &collections {
        let unit = match col.status {
            CollectionStatus::Aborted => continue,
            CollectionStatus::Scheduled | CollectionStatus::InProgress => None,
            CollectionStatus::Completed => {
                // Only a unit still on its way to this patient (allocated ones count above).
                match made.iter().find(|(_, c, _, s)| {
                    *c == Some(col.id) && matches!(s, UnitStatus::Quarantined | UnitStatus::Available)
                }) {
                    Some((id, _, din, _)) => Some((*id, din.clone())),
                    None => continue,
                }
            }
        };
        held.push(Held {
            collection_id: col.id,
            end: utc(col.scheduled_end),
            donor_id: col.donor_id,
            device_id: col.device_id,
            start: utc(col.scheduled_start),
            unit,
        });
    }
    held.sort_by_key(|h| (h.start, h.collection_id));
    let mut movable: BTreeMap<u32, Incumbent> = BTreeMap::new();
    for h in &held {
        let day = c
            .days
            .iter()
            .find(|d| !covered.contains_key(&d.day) && h.end <= d.due_at && d.due_at <= h.end + shelf);
        if let Some(d) = day
            && h.unit.is_none()
            && may_move(h.collection_id, h.start)
        {
            movable.insert(
                d.day,
                Incumbent {
                    collection_id: h.collection_id,
                    donor_id: h.donor_id,
                    slot: Slot {
                        device_id: h.device_id,
                        start: h.start,
                        end: h.end,
                    },
                },
            );
            // Placeholder so no later collection takes the day; removed below.
            covered.insert(d.day, blank_day(d.day, d.due_at, tz, DayKind::Booked));
        } else if let Some(d) = day {
            let mut v = blank_day(
                d.day,
                d.due_at,
                tz,
                if h.unit.is_some() {
                    DayKind::Unit
                } else {
                    DayKind::Booked
                },
            );
            v.collection_id = Some(h.collection_id);
            v.donor_id = Some(h.donor_id);
            v.collection = Some(PlanCollection {
                device_id: h.device_id,
                start: h.start,
                end: h.end,
            });
            if let Some((id, din)) = &h.unit {
                v.unit_id = Some(*id);
                v.din = Some(din.clone());
            }
            covered.insert(d.day, v);
        }
    }

    let remaining: Vec<(u32, DateTime<Utc>)> = c
        .days
        .iter()
        .filter(|d| d.due_at > now)
        .map(|d| (d.day, d.due_at))
        .collect();
    covered.retain(|day, _| remaining.iter().any(|(d, _)| d == day) && !movable.contains_key(day));
    movable.retain(|day, _| remaining.iter().any(|(d, _)| d == day));
    Ok(Prepared {
        movable,
        weight_kg: patient.weight_kg,
        request: r,
        patient,
        requirements,
        remaining,
        covered,
    })
}

/// Compatible units in stock for the first uncovered days, while one is in date at the day's
/// transfusion (best ranked first).
fn stock_units(
    conn: &mut DbConn,
    p: &mut Prepared,
    policy: &Policy,
    index: Option<&DonorIndexSlot>,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let open: Vec<(u32, DateTime<Utc>)> = p
        .remaining
        .iter()
        .filter(|(d, _)| !p.covered.contains_key(d))
        .copied()
        .collect();
    let Some(&(_, first_due)) = open.first() else {
        return Ok(());
    };
    let shelf = TimeDelta::hours(i64::from(policy.unit.max_shelf_life_hours));
    if first_due > now + shelf {
        return Ok(());
    }
    let margin = TimeDelta::hours(i64::from(policy.unit.min_remaining_hours_to_allocate));
    let found = candidates::candidates_at(conn, p.request.id, None, open.len(), policy, index, now)?;
    let mut units = found
        .units
        .into_iter()
        .filter(|u| u.verdict != Verdict::Incompatible)
        .peekable();
    for (day, due) in open {
        let Some(u) = units.next_if(|u| u.expires_at >= due + margin) else {
            break;
        };
        let mut v = blank_day(day, due, tz, DayKind::Unit);
        v.unit_id = Some(u.unit_id);
        v.din = Some(u.din.clone());
        v.verdict = Some(u.verdict);
        v.findings = u.reasons.clone();
        p.covered.insert(day, v);
    }
    Ok(())
}

/// The site-local instant of `date` at `time` (the earlier one when clocks go back; `None` in a
/// gap when they go forward).
fn local(tz: chrono_tz::Tz, date: NaiveDate, time: chrono::NaiveTime) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&date.and_time(time))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Each day's free slots (see the module notes), and whether free device time in the day's
/// window was left out only because it is too soon to stimulate a donor for it.
fn free_slots(
    conn: &mut DbConn,
    windows: &[(DateTime<Utc>, DateTime<Utc>)],
    movable: &HashSet<i64>,
    policy: &Policy,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> ApiResult<(Vec<Vec<Slot>>, Vec<bool>)> {
    let mut out = vec![Vec::new(); windows.len()];
    let mut late = vec![false; windows.len()];
    let Some((opens, closes)) = policy.device.hours.times() else {
        return Ok((out, late));
    };
    let (Some(from), Some(to)) = (windows.iter().map(|w| w.0).min(), windows.iter().map(|w| w.1).max()) else {
        return Ok((out, late));
    };
    let duration = TimeDelta::minutes(i64::from(policy.collection.default_duration_minutes));
    let step = TimeDelta::minutes(i64::from(policy.device.hours.slot_step_minutes.max(1)));
    let devices: Vec<i64> = device_rows::list(conn, None, i64::MAX)?
        .into_iter()
        .filter(|d| d.active)
        .map(|d| d.id)
        .collect();
    let mut taken: HashMap<i64, Vec<Period>> = HashMap::new();
    for c in rows::booked_between(conn, stored(from - TimeDelta::days(2)), stored(to + TimeDelta::days(1)))? {
        if movable.contains(&c.id) {
            continue;
        }
        if let Some(o) = donors::booking(&c)?.occupancy(now) {
            taken.entry(c.device_id).or_default().push(o);
        }
    }
    let agents = stimulation::agents_to_check(&[], policy);
    let mut date = from.with_timezone(&tz).date_naive();
    let last = to.with_timezone(&tz).date_naive();
    while date <= last {
        if policy.device.hours.staffed_on(chrono::Datelike::weekday(&date))
            && let (Some(open_at), Some(close_at)) = (local(tz, date, opens), local(tz, date, closes))
        {
            let mut start = open_at;
            while start + duration <= close_at {
                let end = start + duration;
                let stimulable = start >= now
                    && course_plan::stimulation_times(start, &agents, policy)
                        .iter()
                        .all(|s| s.at.is_none_or(|at| at >= now));
                if let Some(k) = windows.iter().position(|(lo, hi)| start >= *lo && end <= *hi) {
                    for &device_id in &devices {
                        let busy = taken
                            .get(&device_id)
                            .is_some_and(|t| t.iter().any(|&o| crate::domain::scheduling::overlaps((start, end), o)));
                        match (busy, stimulable) {
                            (false, true) => out[k].push(Slot { device_id, start, end }),
                            (false, false) => late[k] = true,
                            _ => {}
                        }
                    }
                }
                start += step;
            }
        }
        let Some(next) = date.succ_opt() else { break };
        date = next;
    }
    Ok((out, late))
}

/// The dates each donor said they cannot come, as periods of site-local days.
fn unavailability(
    conn: &mut DbConn,
    from: NaiveDate,
    until: NaiveDate,
    tz: chrono_tz::Tz,
) -> ApiResult<HashMap<i64, Vec<Period>>> {
    // The latest statement covering a date holds.
    let mut said: HashMap<(i64, NaiveDate), bool> = HashMap::new();
    for s in rows::availability_between(conn, from, until)? {
        let mut d = s.from_date.max(from);
        while d <= s.until_date.min(until) {
            said.insert((s.donor_id, d), s.available);
            let Some(next) = d.succ_opt() else { break };
            d = next;
        }
    }
    let mut out: HashMap<i64, Vec<Period>> = HashMap::new();
    for ((donor, date), available) in said {
        if available {
            continue;
        }
        let start = local(tz, date, chrono::NaiveTime::MIN);
        let end = date.succ_opt().and_then(|n| local(tz, n, chrono::NaiveTime::MIN));
        if let (Some(s), Some(e)) = (start, end) {
            out.entry(donor).or_default().push((s, e));
        }
    }
    Ok(out)
}

/// A roster computed for a request, not yet kept.
pub struct Proposal {
    request_id: i64,
    repairs_plan_id: Option<i64>,
    at: DateTime<Utc>,
    body: Body,
}

/// Plans the request's remaining days at `now` (reads only; see the module notes).
pub fn plan_for(
    conn: &mut DbConn,
    request_id: i64,
    policy: &Policy,
    tz: chrono_tz::Tz,
    index: Option<&DonorIndexSlot>,
    now: DateTime<Utc>,
) -> ApiResult<Proposal> {
    let mut p = prepare(conn, request_id, policy, tz, now)?;
    stock_units(conn, &mut p, policy, index, tz, now)?;
    let shelf = TimeDelta::hours(i64::from(policy.unit.max_shelf_life_hours));

    // The days to plan and the time window each may collect in.
    let mut to_plan: Vec<(u32, DateTime<Utc>)> = Vec::new();
    let mut windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut previous: Option<DateTime<Utc>> = None;
    for &(day, due) in &p.remaining {
        if !p.covered.contains_key(&day) {
            let lo = [Some(due - shelf), previous].into_iter().flatten().max().unwrap_or(now);
            to_plan.push((day, due));
            windows.push((lo, due));
        }
        previous = Some(due);
    }
    let moving: HashSet<i64> = p.movable.values().map(|m| m.collection_id).collect();
    let (slots, late) = free_slots(conn, &windows, &moving, policy, tz, now)?;
    let plan_days: Vec<PlanDay> = to_plan
        .iter()
        .zip(slots)
        .map(|(&(day, due), mut slots)| {
            // A booking of the plan in force keeps its own slot on offer.
            let keep = p.movable.get(&day).map(|m| {
                let at = slots.iter().position(|s| *s == m.slot).unwrap_or_else(|| {
                    slots.push(m.slot.clone());
                    slots.len() - 1
                });
                (m.donor_id, at)
            });
            PlanDay {
                date: due.with_timezone(&tz).date_naive(),
                slots,
                transfuse_at: due,
                unit_id: None,
                keep,
            }
        })
        .collect();

    // Donors: only read when there is a day to plan.
    let mut entries_owned = None;
    let mut guard = None;
    let mut plan_donors: Vec<PlanDonor> = Vec::new();
    let mut numbers: HashMap<i64, String> = HashMap::new();
    // The earliest instant the rules judge a donor at: the index answers from its cut on.
    let earliest = plan_days.iter().flat_map(|d| d.slots.iter().map(|s| s.start)).min();
    if let Some(first) = earliest {
        let indexed = match index {
            Some(slot) => candidates::refresh(conn, slot, policy, first)?,
            None => None,
        };
        if indexed.is_none() {
            entries_owned = Some(candidates::donor_entries(conn)?);
        } else {
            guard = indexed;
        }
        let from = (first - TimeDelta::days(1)).with_timezone(&tz).date_naive();
        let until = p.remaining.last().map_or(now, |d| d.1).with_timezone(&tz).date_naive();
        let mut away = unavailability(conn, from, until, tz)?;
        let entries: Box<dyn Iterator<Item = (&i64, &DonorEntry)>> = match (&guard, &entries_owned) {
            (Some(g), _) => Box::new(g.as_ref().map(|ix| ix.donors.iter()).into_iter().flatten()),
            (None, Some(e)) => Box::new(e.iter()),
            (None, None) => Box::new(std::iter::empty()),
        };
        for (id, e) in entries {
            numbers.insert(*id, e.donor_number.clone());
            let mut record = std::borrow::Cow::Borrowed(&e.record);
            if e.record.bookings.iter().any(|b| moving.contains(&b.id)) {
                // The bookings a repair may move are planned again, not part of the history.
                let r = record.to_mut();
                r.bookings.retain(|b| !moving.contains(&b.id));
                r.stimulations
                    .retain(|s| s.collection_id.is_none_or(|c| !moving.contains(&c)));
            }
            plan_donors.push(PlanDonor {
                id: *id,
                record,
                facts: e.facts.clone(),
                unavailable: away.remove(id).unwrap_or_default(),
            });
        }
    }
    let started = std::time::Instant::now();
    let planned = course_plan::plan(&PlanInput {
        days: &plan_days,
        donors: &plan_donors,
        patient: &p.patient,
        requirements: p.requirements,
        planned_agents: &[],
        policy,
        now,
    });
    let planning_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);

    // Expected dose: the mean of what each chosen donor's earlier units held.
    let chosen: Vec<i64> = planned
        .days
        .iter()
        .filter_map(|d| match d {
            DayPlan::Donor(a) => Some(a.donor_id),
            _ => None,
        })
        .collect();
    let mut yields: HashMap<i64, (f64, u32)> = HashMap::new();
    for (donor, count) in rows::yields_of_donors(conn, &chosen)? {
        if let Some(d) = donor {
            let e = yields.entry(d).or_default();
            e.0 += count;
            e.1 += 1;
        }
    }

    let mut days: BTreeMap<u32, PlanDayView> = p.covered.clone();
    for (k, ((day, due), d)) in to_plan.iter().zip(planned.days.iter()).enumerate() {
        let mut v = blank_day(*day, *due, tz, DayKind::Uncovered);
        let incumbent = p.movable.get(day);
        match d {
            DayPlan::Donor(a)
                if incumbent.is_some_and(|m| {
                    m.donor_id == a.donor_id && m.slot.device_id == a.device_id && m.slot.start == a.slot_start
                }) =>
            {
                // Kept as booked.
                v.kind = DayKind::Booked;
                v.donor_id = Some(a.donor_id);
                v.donor_number = numbers.get(&a.donor_id).cloned();
                v.collection_id = incumbent.map(|m| m.collection_id);
                v.collection = Some(PlanCollection {
                    device_id: a.device_id,
                    start: a.slot_start,
                    end: a.slot_end,
                });
                v.verdict = Some(a.verdict);
                v.findings = a.findings.iter().map(decisions::finding_view).collect();
            }
            DayPlan::Donor(a) => {
                v.replaces_collection_id = incumbent.map(|m| m.collection_id);
                v.kind = DayKind::Donor;
                v.donor_id = Some(a.donor_id);
                v.donor_number = numbers.get(&a.donor_id).cloned();
                v.stimulations = a
                    .stimulations
                    .iter()
                    .map(|s| PlannedStimulationView {
                        agent: s.agent.clone(),
                        at: s.at,
                    })
                    .collect();
                v.stimulation_at = a.stimulations.iter().filter_map(|s| s.at).min();
                v.collection = Some(PlanCollection {
                    device_id: a.device_id,
                    start: a.slot_start,
                    end: a.slot_end,
                });
                v.verdict = Some(a.verdict);
                v.findings = a.findings.iter().map(decisions::finding_view).collect();
                v.abo_identical = Some(a.abo_identical);
                v.cmv_matched = Some(a.cmv_matched);
                v.minutes_to_transfusion = Some(a.minutes_to_transfusion);
                v.expected_granulocytes = yields.get(&a.donor_id).map(|(sum, n)| sum / f64::from(*n));
                v.expected_dose_per_kg = per_kg(v.expected_granulocytes, p.weight_kg);
            }
            DayPlan::Unit { unit_id } => {
                v.kind = DayKind::Unit;
                v.unit_id = Some(*unit_id);
            }
            DayPlan::Uncovered { code, .. }
                if *code == course_plan::codes::NO_DEVICE_CAPACITY && late.get(k).copied().unwrap_or(false) =>
            {
                v.uncovered_reason = Some(UncoveredReason {
                    code: NO_TIME_TO_STIMULATE.to_owned(),
                    message: format!(
                        "every free slot before the transfusion at {} starts too soon to stimulate a donor for it",
                        due.format("%Y-%m-%d %H:%M UTC")
                    ),
                });
            }
            DayPlan::Uncovered { code, message } => {
                v.uncovered_reason = Some(UncoveredReason {
                    code: (*code).to_owned(),
                    message: message.clone(),
                });
            }
        }
        days.insert(*day, v);
    }

    // A repair: mark what differs from the plan in force.
    let in_force = rows::accepted(conn, request_id)?;
    if let Some(plan) = &in_force {
        let before: HashMap<u32, Option<i64>> = rows::days_of(conn, plan.id)?
            .into_iter()
            .map(|d| (u32::try_from(d.day).unwrap_or(0), d.collection_id.or(d.unit_id)))
            .collect();
        for v in days.values_mut() {
            let kept = matches!(v.kind, DayKind::Booked | DayKind::Unit | DayKind::Allocated)
                && before
                    .get(&v.day)
                    .is_some_and(|b| b.is_some() && (*b == v.collection_id || *b == v.unit_id));
            v.changed = !kept && before.contains_key(&v.day) && v.kind != DayKind::Allocated;
        }
    }

    Ok(Proposal {
        request_id,
        repairs_plan_id: in_force.map(|p| p.id),
        at: now,
        body: Body {
            days: days.into_values().collect(),
            score: planned.score,
            proven_optimal: planned.proven_optimal,
            donors_considered: plan_donors.len(),
            planning_ms,
        },
    })
}

/// Keeps a proposal as proposed (a short write: the planning itself only reads, and accepting
/// checks everything again).
pub fn keep(conn: &mut DbConn, actor: &Actor, proposal: Proposal) -> ApiResult<CoursePlanView> {
    let Proposal {
        request_id,
        repairs_plan_id,
        at,
        body,
    } = proposal;
    let text = to_json(&body)?;
    let row = rows::insert(
        conn,
        &NewCoursePlan {
            request_id,
            repairs_plan_id,
            body: &text,
            proposed_by: &actor.name,
            proposed_at: stored(at),
        },
    )?;
    let id = row.id;
    let in_force = rows::accepted(conn, request_id)?.map(|p| p.id);
    let view = view_of(row, Some(id), in_force)?;
    audit::append(
        conn,
        actor,
        Change::created(
            "course_plan.propose",
            "request",
            request_id,
            serde_json::json!({"plan_id": id, "repairs_plan_id": view.repairs_plan_id, "score": view.score,
                "days": view.days.iter().map(|d| serde_json::json!({"day": d.day, "kind": d.kind, "donor_id": d.donor_id, "unit_id": d.unit_id, "collection_id": d.collection_id})).collect::<Vec<_>>()}),
        ),
    )?;
    Ok(view)
}

fn day_reason(v: &PlanDayView, code: &str, message: impl std::fmt::Display) -> Reason {
    Reason {
        code: code.to_owned(),
        message: format!("day {} ({}): {message}", v.day, v.date),
    }
}

/// Books the proposal: one collection per donor day (with the programme's stimulations, so the
/// doses fall due on the stimulation list), each checked again under the donor's and device's
/// locks; the kept days and units still there. Anything changed since the proposal: 409
/// `plan_changed` naming each day, and nothing is written.
pub fn accept(
    conn: &mut DbConn,
    actor: &Actor,
    request_id: i64,
    input: AcceptInput,
    policy: &Policy,
) -> ApiResult<CoursePlanView> {
    let now = utc(store::now());
    // Serialise acceptances of one request, and read its status under the lock.
    if !store::requests::lock(conn, request_id)? {
        return Err(ApiError::not_found("request"));
    }
    let r = requests::find(conn, request_id, None)?;
    let row = rows::find(conn, input.plan_id)?
        .filter(|p| p.request_id == request_id)
        .ok_or_else(|| ApiError::unknown(ErrorCode::UnknownPlan, "course plan", input.plan_id))?;
    let latest = rows::latest(conn, request_id)?.map(|p| p.id);
    if row.accepted_at.is_some() || latest != Some(row.id) {
        return Err(ApiError::new(
            ErrorCode::PlanSuperseded,
            format!(
                "plan {} is not the request's latest proposal (plan {} is); accept that one or propose again",
                row.id,
                latest.unwrap_or(row.id)
            ),
        ));
    }
    if r.status != RequestStatus::Open {
        return Err(ApiError::new(
            ErrorCode::RequestNotOpen,
            format!(
                "request {request_id} is {}: a roster is booked for an open request only",
                r.status
            ),
        ));
    }
    let body: Body = from_stored_json("body", &row.body)?;
    if !body.days.iter().any(|d| d.kind == DayKind::Donor) && row.repairs_plan_id.is_none() {
        return Err(ApiError::new(
            ErrorCode::PlanNotBookable,
            format!("plan {} proposes no donor to book", row.id),
        ));
    }
    let patient = patients::facts(&patients::get(conn, r.patient_id, None, policy)?);
    let requirements = requests::Requirements::of(&r);
    let mut changed: Vec<Reason> = Vec::new();
    let mut booked: HashMap<u32, i64> = HashMap::new();

    // Kept days: their collection still live, their unit still on its way.
    let live: HashMap<i64, CollectionStatus> = rows::collections_of_request(conn, request_id)?
        .into_iter()
        .map(|c| (c.id, c.status))
        .collect();
    let unit_ids: Vec<i64> = body.days.iter().filter_map(|d| d.unit_id).collect();
    let units: HashMap<i64, UnitStatus> = rows::unit_states(conn, &unit_ids)?
        .into_iter()
        .map(|(id, _, s)| (id, s))
        .collect();
    for v in &body.days {
        if let Some(c) = v.collection_id
            && v.kind == DayKind::Booked
            && !matches!(
                live.get(&c),
                Some(CollectionStatus::Scheduled | CollectionStatus::InProgress)
            )
        {
            changed.push(day_reason(
                v,
                "collection_gone",
                format!("collection {c} is no longer booked"),
            ));
        }
        if let Some(u) = v.unit_id
            && v.kind == DayKind::Unit
            && !matches!(units.get(&u), Some(UnitStatus::Quarantined | UnitStatus::Available))
        {
            changed.push(day_reason(v, "unit_gone", format!("unit {u} is no longer in stock")));
        }
    }

    // A repair that moves a day cancels its booking first, so its donor and slot are free; a
    // booking whose donor has been stimulated since the proposal stays.
    let replaced: Vec<i64> = body.days.iter().filter_map(|d| d.replaces_collection_id).collect();
    let stimulated: HashSet<i64> = crate::store::collections::stimulations_for_collections(conn, &replaced)?
        .into_iter()
        .filter_map(|s| s.collection_id)
        .collect();
    for v in body.days.iter().filter(|d| d.kind == DayKind::Donor) {
        let Some(old) = v.replaces_collection_id else {
            continue;
        };
        if live.get(&old) != Some(&CollectionStatus::Scheduled) {
            changed.push(day_reason(
                v,
                "collection_gone",
                format!("collection {old} is no longer booked"),
            ));
            continue;
        }
        if stimulated.contains(&old) {
            changed.push(day_reason(
                v,
                "collection_stimulated",
                format!("the donor of collection {old} has been stimulated for it: it is no longer moved"),
            ));
            continue;
        }
        let reason = Text::new(&format!("moved by course plan {} (repair)", row.id))
            .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
        collection_work::abort(
            conn,
            actor,
            old,
            AbortInput {
                reason,
                aborted_at: None,
                red_cell_loss_ml: None,
                hes_volume_ml: None,
                adverse_events: vec![],
            },
            policy,
        )?;
    }

    // Donor days, in course order, each booked through the same path as POST /collections.
    let agents = stimulation::agents_to_check(&[], policy);
    for v in body.days.iter().filter(|d| d.kind == DayKind::Donor) {
        let (Some(donor_id), Some(slot)) = (v.donor_id, v.collection.as_ref()) else {
            continue;
        };
        if slot.start <= now {
            changed.push(day_reason(
                v,
                "slot_passed",
                format!("the slot at {} has passed", slot.start),
            ));
            continue;
        }
        // The future unit judged again for the patient as now recorded.
        if let Some(d) = crate::store::donors::find(conn, donor_id)? {
            let hla: crate::domain::blood::Hla = from_stored_json("hla", &d.hla)?;
            let facts = matching::DonorMatchFacts {
                abo: d.abo,
                rhd: d.rhd,
                cmv: d.cmv,
                hla: (!hla.is_empty()).then_some(hla),
                last_stimulated_at: None,
            };
            let ok = Eligibility {
                eligible: true,
                reasons: vec![],
            };
            let a = matching::assess_donor(&patient, requirements, &facts, &ok, slot.start, policy);
            let before: HashSet<&str> = v.findings.iter().map(|f| f.code.as_str()).collect();
            let new: Vec<String> = a
                .reasons
                .iter()
                .filter(|f| f.severity != Severity::Info && !before.contains(f.code))
                .map(|f| f.code.to_owned())
                .collect();
            if matching::blocks(&a) || !new.is_empty() {
                changed.push(day_reason(
                    v,
                    "findings_changed",
                    format!("donor {donor_id}'s unit is now judged with {}", new.join(", ")),
                ));
                continue;
            }
        }
        let scheduled = collection_work::schedule(
            conn,
            actor,
            ScheduleInput {
                donor_id,
                device_id: slot.device_id,
                scheduled_start: slot.start,
                duration_minutes: u32::try_from((slot.end - slot.start).num_minutes()).ok(),
                request_id: Some(request_id),
                planned_agents: agents.clone(),
            },
            policy,
        );
        match scheduled {
            Ok(c) => {
                booked.insert(v.day, c.id);
            }
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::DonorIneligible
                        | ErrorCode::DeviceBusy
                        | ErrorCode::DeviceInactive
                        | ErrorCode::UnknownDonor
                        | ErrorCode::UnknownDevice
                ) =>
            {
                let why: Vec<String> = e.reasons().iter().map(|r| r.message.clone()).collect();
                let detail = if why.is_empty() {
                    e.detail().to_owned()
                } else {
                    why.join("; ")
                };
                changed.push(day_reason(v, e.code().as_str(), detail));
            }
            Err(e) => return Err(e),
        }
    }
    if !changed.is_empty() {
        return Err(ApiError::refused(
            ErrorCode::PlanChanged,
            format!(
                "plan {} cannot be booked as proposed: {} day(s) changed since it was made; nothing was booked",
                row.id,
                changed.len()
            ),
            changed,
        ));
    }

    let at = stored(now);
    if !rows::accept(conn, row.id, &actor.name, at)? {
        return Err(ApiError::new(
            ErrorCode::ConcurrentUpdate,
            "the plan was accepted meanwhile",
        ));
    }
    let day_rows: Vec<PlanDayRow> = body
        .days
        .iter()
        .map(|v| PlanDayRow {
            plan_id: row.id,
            day: i32::try_from(v.day).unwrap_or(i32::MAX),
            due_at: stored(v.transfuse_at),
            collection_id: booked.get(&v.day).copied().or(v.collection_id),
            unit_id: v.unit_id,
            uncovered_code: v.uncovered_reason.as_ref().map(|u| u.code.clone()),
        })
        .collect();
    rows::insert_days(conn, &day_rows)?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "course_plan.accept",
            "request",
            request_id,
            serde_json::json!({"plan_id": row.id, "accepted": false}),
            serde_json::json!({"plan_id": row.id, "accepted": true,
                "collections": day_rows.iter().filter_map(|d| d.collection_id.map(|c| serde_json::json!({"day": d.day, "collection_id": c}))).collect::<Vec<_>>()}),
        ),
    )?;
    let mut accepted = rows::find(conn, row.id)?.ok_or_else(|| ApiError::not_found("course plan"))?;
    let mut body = body;
    for v in &mut body.days {
        if let Some(c) = booked.get(&v.day) {
            v.collection_id = Some(*c);
        }
    }
    accepted.body = to_json(&body)?;
    let id = accepted.id;
    view_of(accepted, Some(id), Some(id))
}

/// The plans in force of open requests and, per day, what broke it (for the alert scan):
/// the collection aborted, its donor no longer eligible at its start (`ineligible`: collection →
/// reason codes, from the scan), or the day's unit gone.
pub fn broken_days(
    conn: &mut DbConn,
    request_ids: &[i64],
    ineligible: &HashMap<i64, Vec<&'static str>>,
) -> ApiResult<Vec<PlanDays>> {
    let plans = rows::in_force_of_requests(conn, request_ids)?;
    let collection_ids: Vec<i64> = plans
        .iter()
        .flat_map(|(_, d)| d.iter().filter_map(|x| x.collection_id))
        .collect();
    let mut status: HashMap<i64, (CollectionStatus, Option<String>)> = HashMap::new();
    for c in crate::store::collections::find_many(conn, &collection_ids)? {
        status.insert(c.id, (c.status, c.abort_reason));
    }
    let made = rows::units_of_collections(conn, &collection_ids)?;
    let plain: Vec<i64> = plans
        .iter()
        .flat_map(|(_, d)| d.iter().filter(|x| x.collection_id.is_none()).filter_map(|x| x.unit_id))
        .collect();
    let units: HashMap<i64, (String, UnitStatus)> = rows::unit_states(conn, &plain)?
        .into_iter()
        .map(|(id, din, s)| (id, (din, s)))
        .collect();
    let mut out = Vec::new();
    for (plan, days) in plans {
        let mut list = Vec::new();
        for d in days {
            let cover = match (d.collection_id, d.unit_id) {
                (Some(c), _) => match status.get(&c) {
                    Some((s, reason)) => PlannedCover::Collection {
                        id: c,
                        status: *s,
                        abort_reason: reason.as_deref(),
                        donor_fails: ineligible.get(&c).map(Vec::as_slice).unwrap_or_default(),
                        unit: made
                            .iter()
                            .find(|(_, col, _, _)| *col == Some(c))
                            .map(|(_, _, din, s)| (din.as_str(), *s)),
                    },
                    None => PlannedCover::Nothing,
                },
                (None, Some(u)) => units
                    .get(&u)
                    .map_or(PlannedCover::Nothing, |(din, s)| PlannedCover::Unit { din, status: *s }),
                (None, None) => PlannedCover::Nothing,
            };
            let broken = course_plan::why_broken(&cover);
            list.push((u32::try_from(d.day).unwrap_or(0), utc(d.due_at), broken));
        }
        out.push((plan.request_id, plan.id, list));
    }
    Ok(out)
}

/// One statement of a donor about when they can come.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "2026-12-10", "until": "2026-12-12", "available": false, "note": "away"}))]
pub struct AvailabilityInput {
    /// First date (site-local), inclusive.
    pub from: NaiveDate,
    /// Last date, inclusive (at most a year after `from`).
    pub until: NaiveDate,
    pub available: bool,
    /// Up to 500 characters.
    pub note: Option<crate::input::Text<0, 500>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AvailabilityView {
    pub id: i64,
    pub donor_id: i64,
    pub from: NaiveDate,
    pub until: NaiveDate,
    pub available: bool,
    pub note: Option<String>,
    pub stated_by: String,
    pub stated_at: DateTime<Utc>,
}

fn availability_view(a: rows::AvailabilityRow) -> AvailabilityView {
    AvailabilityView {
        id: a.id,
        donor_id: a.donor_id,
        from: a.from_date,
        until: a.until_date,
        available: a.available,
        note: a.note,
        stated_by: a.stated_by,
        stated_at: utc(a.stated_at),
    }
}

const AVAILABILITY_SPAN_DAYS: i64 = 366;

/// Records what a donor said (appended; the latest statement for a date holds); audited.
pub fn state_availability(
    conn: &mut DbConn,
    actor: &Actor,
    donor_id: i64,
    input: AvailabilityInput,
) -> ApiResult<AvailabilityView> {
    let today = utc(store::now()).date_naive();
    let mut v = Validator::new();
    v.check(input.from <= input.until, "until", "must not be before from");
    v.check(
        (input.until - input.from).num_days() < AVAILABILITY_SPAN_DAYS,
        "until",
        "must be within a year of from",
    );
    v.check(
        (input.from - today).num_days().abs() <= 2 * AVAILABILITY_SPAN_DAYS,
        "from",
        "must be within two years of today",
    );
    v.finish()?;
    if !crate::store::donors::lock(conn, donor_id)? {
        return Err(ApiError::not_found("donor"));
    }
    let note = input.note.map(|n| n.into_inner());
    let row = rows::insert_availability(
        conn,
        &NewAvailability {
            donor_id,
            from_date: input.from,
            until_date: input.until,
            available: input.available,
            note: note.as_deref(),
            stated_by: &actor.name,
            stated_at: store::now(),
        },
    )?;
    let view = availability_view(row);
    audit::append(
        conn,
        actor,
        Change::created(
            "donor.availability",
            "donor",
            donor_id,
            serde_json::json!({"statement_id": view.id, "from": view.from, "until": view.until, "available": view.available, "note": view.note}),
        ),
    )?;
    Ok(view)
}

pub fn availability_of(conn: &mut DbConn, donor_id: i64) -> ApiResult<Vec<AvailabilityView>> {
    if crate::store::donors::find(conn, donor_id)?.is_none() {
        return Err(ApiError::not_found("donor"));
    }
    Ok(rows::availability_of(conn, donor_id)?
        .into_iter()
        .map(availability_view)
        .collect())
}
