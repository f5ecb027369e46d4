//! Storage: excursion dispositions, inspection after a return, discard, and storage readings
//! (of a unit or of a location) with the excursions and quarantines they cause.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::view::{UnitView, record, view};
use super::{begin, find, save};
use crate::domain::alerts::AlertKind;
use crate::domain::policy::Policy;
use crate::domain::text_enum;
use crate::domain::units::{self as rules, InspectionOutcome, UnitAction, UnitStatus};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::input::{Text, UnitKey};
use crate::services::alerts::{self, Raise};
use crate::services::{is_past, stored, to_value, utc};
use crate::store::audit::{self, Actor, Change};
use crate::store::units::{self as rows, Unit, UnitData};
use crate::store::{self, DbConn};

/// A medical director's disposition of every storage excursion of a unit in the bank so far,
/// without a release (for a unit that is not quarantined, such as one released before
/// excursions needed a disposition). Audited.
pub fn disposition_excursions(
    conn: &mut DbConn,
    actor: &Actor,
    key: &UnitKey,
    reason: &Text<1, 500>,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let reason = reason.as_str();
    let u = find(conn, key)?;
    rows::lock(conn, u.id)?;
    let facts = record(conn, &u)?;
    let (true, Some(through)) = (facts.holds.excursion_pending, facts.last_excursion_id) else {
        return Err(ApiError::new(
            ErrorCode::NoExcursionPending,
            format!("unit {} has no storage excursion waiting for a disposition", u.din),
        ));
    };
    rows::insert_disposition(conn, u.id, through, reason, &actor.name, stored(now))?;
    audit::append(
        conn,
        actor,
        Change::created(
            "unit.excursion_disposition",
            "unit",
            u.id,
            serde_json::json!({"reason": reason, "through_excursion_id": through,
                               "excursions": to_value(&facts.excursions)?}),
        ),
    )?;
    view(conn, u, now)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"acceptable": true, "notes": "bag intact, kept at 22 °C on the ward"}))]
pub struct InspectionInput {
    /// The inspector finds the unit fit to go back to stock.
    pub acceptable: bool,
    /// What was seen, up to 500 characters.
    pub notes: Option<Text<0, 500>>,
}

text_enum!(
    InspectionResult {
        Available => "available",
        Held => "held",
        Discarded => "discarded",
    }
);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InspectionView {
    pub id: i64,
    pub unit_id: i64,
    /// The allocation the unit came back from.
    pub allocation_id: i64,
    pub acceptable: bool,
    pub notes: Option<String>,
    /// From issue to return.
    pub minutes_out_of_storage: i32,
    pub outcome: InspectionResult,
    /// Why it was discarded or is still held.
    pub reasons: Vec<Reason>,
    pub inspected_by: String,
    pub inspected_at: DateTime<Utc>,
    pub unit: UnitView,
}

/// The inspection of a unit that came back after issue: back to `available` when acceptable,
/// unexpired, out of controlled storage no longer than the policy allows and not reactive;
/// still quarantined while an excursion or a reactive donor holds it; otherwise discarded.
pub fn inspect(
    conn: &mut DbConn,
    actor: &Actor,
    key: &UnitKey,
    input: InspectionInput,
    policy: &Policy,
) -> ApiResult<InspectionView> {
    let now = utc(store::now());
    let notes = input.notes.map(Text::into_inner).filter(|n| !n.is_empty());
    let u = find(conn, key)?;
    rows::lock(conn, u.id)?;
    let facts = record(conn, &u)?;
    let Some(returned) = facts
        .returned_allocation
        .clone()
        .filter(|_| facts.holds.inspection_pending)
    else {
        return Err(ApiError::new(
            ErrorCode::NoInspectionDue,
            format!("unit {} is not waiting for an inspection after a return", u.din),
        ));
    };
    let out = match (returned.issued_at, returned.ended_at) {
        (Some(issued), Some(back)) => back.signed_duration_since(issued).num_minutes().max(0),
        _ => i64::MAX,
    };
    let expired = now >= utc(u.expires_at);
    let outcome = rules::inspection_outcome(input.acceptable, expired, out, facts.reactive(), facts.holds, policy);
    let (result, reasons, action, why) = match &outcome {
        InspectionOutcome::Available => (InspectionResult::Available, Vec::new(), Some(UnitAction::Inspect), None),
        InspectionOutcome::StillHeld(r) => (InspectionResult::Held, r.clone(), None, None),
        InspectionOutcome::Discard(r) => {
            let codes: Vec<&str> = r.iter().map(|x| x.code).collect();
            (
                InspectionResult::Discarded,
                r.clone(),
                Some(UnitAction::Discard),
                Some(format!("discarded at inspection after return: {}", codes.join(", "))),
            )
        }
    };
    let row = rows::insert_inspection(
        conn,
        &rows::NewInspection {
            unit_id: u.id,
            allocation_id: returned.id,
            acceptable: input.acceptable,
            notes: notes.as_deref(),
            minutes_out_of_storage: i32::try_from(out).unwrap_or(i32::MAX),
            outcome: result.as_str(),
            inspected_by: &actor.name,
            inspected_at: stored(now),
        },
    )?;
    let mut data = UnitData::from(u.clone());
    data.updated_at = stored(now);
    if let Some(action) = action {
        let to = rules::transition(u.status, action, utc(u.expires_at), now)
            .map_err(|r| ApiError::new(r.into(), format!("unit {} cannot {action}", u.din)))?;
        data.status = to;
        data.status_reason = why;
        if action == UnitAction::Discard {
            data.discarded_at = Some(stored(now));
            data.discarded_by = Some(actor.name.clone());
        }
    }
    let reasons = crate::services::reasons(reasons);
    let unit = save(conn, actor, "unit.inspect", u, data, now)?;
    let created = InspectionView {
        id: row.id,
        unit_id: row.unit_id,
        allocation_id: row.allocation_id,
        acceptable: row.acceptable,
        notes: row.notes,
        minutes_out_of_storage: row.minutes_out_of_storage,
        outcome: result,
        reasons,
        inspected_by: row.inspected_by,
        inspected_at: utc(row.inspected_at),
        unit,
    };
    audit::append(
        conn,
        actor,
        Change::created(
            "unit.inspection",
            "unit",
            created.unit_id,
            serde_json::json!({"inspection_id": created.id, "allocation_id": created.allocation_id,
                               "acceptable": created.acceptable, "notes": created.notes,
                               "minutes_out_of_storage": created.minutes_out_of_storage,
                               "outcome": created.outcome, "reasons": to_value(&created.reasons)?}),
        ),
    )?;
    Ok(created)
}

pub fn discard(conn: &mut DbConn, actor: &Actor, key: &UnitKey, reason: &Text<1, 500>) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let reason = reason.as_str();
    let (u, to) = begin(conn, key, UnitAction::Discard, now)?;
    let mut data = UnitData::from(u.clone());
    data.status = to;
    data.status_reason = Some(reason.to_owned());
    data.discarded_at = Some(stored(now));
    data.discarded_by = Some(actor.name.clone());
    data.updated_at = stored(now);
    save(conn, actor, "unit.discard", u, data, now)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"temperature_c": 22.5, "location": "Incubator 2"}))]
pub struct ReadingInput {
    #[schema(minimum = -80, maximum = 80)]
    pub temperature_c: f64,
    /// Default: now.
    pub at: Option<DateTime<Utc>>,
    /// Where the unit is kept, up to 100 characters; becomes the unit's storage location.
    pub location: Option<Text<0, 100>>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"location": "Incubator 2", "temperature_c": 22.5}))]
pub struct LocationReadingInput {
    /// The storage location read (incubator, cabinet), up to 100 characters.
    pub location: Text<1, 100>,
    #[schema(minimum = -80, maximum = 80)]
    pub temperature_c: f64,
    /// Default: now.
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadingView {
    pub id: i64,
    /// Absent for a reading of a location.
    pub unit_id: Option<i64>,
    #[schema(minimum = -80, maximum = 80)]
    pub temperature_c: f64,
    pub at: DateTime<Utc>,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub location: Option<String>,
    /// Inside the policy's storage range.
    pub in_range: bool,
    pub recorded_by: String,
    /// Per-unit readings: the unit's status after the reading (an excursion quarantines it).
    pub unit_status: Option<UnitStatus>,
    /// Location readings: the units quarantined by this reading.
    pub quarantined_units: Vec<i64>,
}

const PLAUSIBLE_TEMPERATURE_C: (f64, f64) = (-80.0, 80.0);
/// A storage location as kept: blank is none.
pub(super) fn clean_location(raw: Option<Text<0, 100>>) -> Option<String> {
    raw.map(Text::into_inner).filter(|l| !l.is_empty())
}

fn check_reading(v: &mut Validator, temperature_c: f64, at: DateTime<Utc>, now: DateTime<Utc>) {
    v.check(
        temperature_c.is_finite() && (PLAUSIBLE_TEMPERATURE_C.0..=PLAUSIBLE_TEMPERATURE_C.1).contains(&temperature_c),
        "temperature_c",
        "must be a temperature in °C between -80 and 80",
    );
    v.check(is_past(at, now), "at", "must not be in the future");
}

/// What a reading does to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadingEffect {
    /// In range, or the unit is no longer in the bank.
    None,
    /// Out of range: kept on the unit as an excursion (it was already quarantined).
    Recorded,
    /// Out of range: kept on the unit, which moved to quarantine.
    Quarantined,
}

/// A reading outside the range is kept on the unit as an excursion whatever its status; a unit
/// in the bank available or allocated is quarantined, and one in the bank raises an urgent
/// `unit.quarantined` alert. Returns the unit's data to save and what happened.
fn excursion(
    conn: &mut DbConn,
    u: &Unit,
    reading: &rows::StorageReading,
    policy: &Policy,
    now: DateTime<Utc>,
) -> ApiResult<(UnitData, ReadingEffect)> {
    let mut data = UnitData::from(u.clone());
    data.updated_at = stored(now);
    if reading.in_range {
        return Ok((data, ReadingEffect::None));
    }
    rows::insert_excursion(conn, u.id, reading, stored(now))?;
    let in_bank = matches!(
        u.status,
        UnitStatus::Quarantined | UnitStatus::Available | UnitStatus::Allocated
    );
    if !in_bank {
        return Ok((data, ReadingEffect::Recorded));
    }
    let place = reading
        .location
        .as_deref()
        .map(|l| format!(" in {l}"))
        .unwrap_or_default();
    let why = format!(
        "storage temperature {} °C{place} outside {}–{} °C at {}: a medical director must disposition it",
        reading.temperature_c,
        policy.unit.storage_temp_min_c,
        policy.unit.storage_temp_max_c,
        utc(reading.measured_at).format("%Y-%m-%d %H:%M UTC")
    );
    let effect = match rules::transition(u.status, UnitAction::Quarantine, utc(u.expires_at), now) {
        Ok(to) => {
            data.status = to;
            data.status_reason = Some(why.clone());
            ReadingEffect::Quarantined
        }
        Err(_) => ReadingEffect::Recorded,
    };
    let message = match effect {
        ReadingEffect::Quarantined => format!("unit {} quarantined: {why}", u.din),
        _ => format!("unit {} (held in quarantine) had an excursion: {why}", u.din),
    };
    alerts::raise(
        conn,
        Raise {
            message,
            details: serde_json::json!({"unit_id": u.id, "din": u.din, "reading_id": reading.id,
                                        "temperature_c": reading.temperature_c, "excursion": true}),
            ..Raise::event(
                AlertKind::UnitQuarantined,
                u.id,
                format_args!("{}:reading:{}", u.id, reading.id),
                now,
            )
        },
    )?;
    Ok((data, effect))
}

pub fn record_reading(
    conn: &mut DbConn,
    actor: &Actor,
    key: &UnitKey,
    input: ReadingInput,
    policy: &Policy,
) -> ApiResult<ReadingView> {
    let now = utc(store::now());
    let at = utc(stored(input.at.unwrap_or(now)));
    let mut v = Validator::new();
    check_reading(&mut v, input.temperature_c, at, now);
    let location = clean_location(input.location);
    v.finish()?;
    let u = find(conn, key)?;
    rows::lock(conn, u.id)?;
    let reading = rows::insert_reading(
        conn,
        &rows::NewStorageReading {
            unit_id: Some(u.id),
            temperature_c: input.temperature_c,
            measured_at: stored(at),
            location: location.as_deref(),
            in_range: rules::temperature_ok(input.temperature_c, policy),
            recorded_by: &actor.name,
            created_at: stored(now),
        },
    )?;
    let (mut data, _) = excursion(conn, &u, &reading, policy, now)?;
    if location.is_some() {
        data.storage_location = location;
    }
    let after = save(conn, actor, "unit.storage_reading", u, data, now)?;
    Ok(reading_view(reading, Some(after.status), Vec::new()))
}

fn reading_view(r: rows::StorageReading, unit_status: Option<UnitStatus>, quarantined_units: Vec<i64>) -> ReadingView {
    ReadingView {
        id: r.id,
        unit_id: r.unit_id,
        temperature_c: r.temperature_c,
        at: utc(r.measured_at),
        location: r.location,
        in_range: r.in_range,
        recorded_by: r.recorded_by,
        unit_status,
        quarantined_units,
    }
}

/// A reading of a storage location; outside the range it is kept on every unit in the bank
/// there as an excursion, and quarantines those available or allocated.
pub fn record_location_reading(
    conn: &mut DbConn,
    actor: &Actor,
    input: LocationReadingInput,
    policy: &Policy,
) -> ApiResult<ReadingView> {
    let now = utc(store::now());
    let at = utc(stored(input.at.unwrap_or(now)));
    let mut v = Validator::new();
    check_reading(&mut v, input.temperature_c, at, now);
    v.finish()?;
    let location = input.location.into_inner();
    let reading = rows::insert_reading(
        conn,
        &rows::NewStorageReading {
            unit_id: None,
            temperature_c: input.temperature_c,
            measured_at: stored(at),
            location: Some(&location),
            in_range: rules::temperature_ok(input.temperature_c, policy),
            recorded_by: &actor.name,
            created_at: stored(now),
        },
    )?;
    audit::append(
        conn,
        actor,
        Change::created(
            "storage.reading",
            "storage_location",
            &location,
            serde_json::json!({"reading_id": reading.id, "temperature_c": reading.temperature_c,
                               "at": utc(reading.measured_at), "in_range": reading.in_range}),
        ),
    )?;
    let mut quarantined = Vec::new();
    for u in rows::in_bank_at(conn, &location)? {
        rows::lock(conn, u.id)?;
        let (data, effect) = excursion(conn, &u, &reading, policy, now)?;
        if effect == ReadingEffect::Quarantined {
            quarantined.push(u.id);
        }
        if effect != ReadingEffect::None {
            save(conn, actor, "unit.storage_reading", u, data, now)?;
        }
    }
    Ok(reading_view(reading, None, quarantined))
}
