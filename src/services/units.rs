//! Granulocyte units: creation (from a collection or a supplier, pooled or not), DIN
//! assignment, irradiation, test results, release, discard, storage readings, inventory and
//! labels. Status changes go through `domain::units::transition` at the moment of the action.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{from_stored_json, is_past, stored, stored_enum, to_value, utc};
use crate::domain::blood::{Abo, Cmv, Rhd, UnitRhd};
use crate::domain::isbt128::{self, Din};
use crate::domain::policy::{Policy, is_marker_name};
use crate::domain::scheduling::CollectionStatus;
use crate::domain::text_enum;
use crate::domain::units::{
    self as rules, Holds, InspectionOutcome, MarkerResult, QuarantineReason, ReleaseRequest, TestResult, UnitAction,
    UnitStatus,
};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason, Validator};
use crate::store::alerts::NewAlert;
use crate::store::audit::{self, Actor, Change};
use crate::store::units::{self as rows, Unit, UnitData, UnitFilter};
use crate::store::{self, DbConn, collections as collection_rows, donors as donor_rows};

text_enum!(
    UnitSource {
        Collection => "collection",
        External => "external",
    }
);

text_enum!(
    ReleaseKind {
        Tested => "tested",
        Emergency => "emergency",
    }
);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Irradiation {
    pub dose_gy: f64,
    pub irradiated_at: DateTime<Utc>,
    #[schema(max_length = 100)]
    pub device: Option<String>,
    /// Operator.
    pub irradiated_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Physician {
    /// The physician who authorised the emergency release.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub name: String,
    /// When they acknowledged that the unit is not fully tested.
    pub acknowledged_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Release {
    pub kind: ReleaseKind,
    pub released_at: DateTime<Utc>,
    pub released_by: String,
    /// Emergency releases only.
    pub physician: Option<Physician>,
    /// Emergency releases: the only request the unit may be allocated to.
    pub request_id: Option<i64>,
    /// Emergency releases: the required markers still pending or missing when it was released.
    pub pending_markers: Vec<String>,
    /// Emergency releases: when those results are expected.
    pub results_expected_at: Option<DateTime<Utc>>,
}

/// One contributing donation of a pooled unit.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PoolMemberView {
    pub din: String,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub collected_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestView {
    #[schema(pattern = r"^[a-z][a-z0-9_]{1,39}$")]
    pub marker: String,
    pub result: TestResult,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: String,
}

/// A unit as the API shows it. `status` is as of now: a unit in the bank past `expires_at` is
/// `expired` even before the sweep job records it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnitView {
    pub id: i64,
    pub din: String,
    /// ISO/IEC 7064 MOD 37-2 check character of the DIN.
    pub check_character: String,
    pub product_code: String,
    pub source: UnitSource,
    pub collection_id: Option<i64>,
    pub donor_id: Option<i64>,
    pub supplier: Option<String>,
    pub pooled: bool,
    /// DINs of every contributing donation of a pooled unit.
    pub pooled_from: Vec<String>,
    /// The contributing donations with what the supplier said of them.
    pub pool_members: Vec<PoolMemberView>,
    pub abo: Abo,
    /// For selection: a pooled RhD group counts as RhD-positive.
    pub rhd: Rhd,
    /// The pool's RhD is mixed (ISBT 128 "pooled RhD").
    pub rhd_pooled: bool,
    pub cmv: Cmv,
    pub volume_ml: i32,
    pub granulocyte_count: f64,
    #[schema(minimum = 0, maximum = 500)]
    pub red_cell_volume_ml: Option<f64>,
    /// End of collection.
    pub collected_at: DateTime<Utc>,
    /// Computed by the server from the policy (never later than a supplier's labelled expiry).
    pub expires_at: DateTime<Utc>,
    /// The expiry printed on a supplier's label, when given.
    pub labelled_expires_at: Option<DateTime<Utc>>,
    /// Hours until expiry, 0 once expired.
    pub hours_remaining: f64,
    pub status: UnitStatus,
    /// Why it was last quarantined or discarded.
    pub status_reason: Option<String>,
    /// Where it is kept (location readings apply to the units kept there).
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub storage_location: Option<String>,
    pub irradiated: bool,
    pub irradiation: Option<Irradiation>,
    pub release: Option<Release>,
    /// Per marker, the result that stands: a positive one if any was ever recorded (a later
    /// negative never clears it), otherwise the latest.
    pub tests: Vec<TestView>,
    /// Why the unit is quarantined, when it is.
    pub quarantine_reason: Option<QuarantineReason>,
    /// Everything that keeps the unit from going back to stock, from the recorded facts:
    /// `marker_positive`, `donor_reactive_marker`, `inspection_required`, `excursion_review`.
    pub holds: Vec<String>,
    /// Every storage reading out of range recorded against the unit, oldest first.
    pub excursions: Vec<ExcursionView>,
    pub discarded_at: Option<DateTime<Utc>>,
    pub discarded_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A storage reading out of range, kept on the unit whatever its status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExcursionView {
    pub id: i64,
    pub storage_reading_id: i64,
    #[schema(minimum = -80, maximum = 80)]
    pub temperature_c: f64,
    pub measured_at: DateTime<Utc>,
    /// A medical director's disposition covers it.
    pub dispositioned: bool,
}

pub fn status_of_unit(u: &Unit) -> ApiResult<UnitStatus> {
    status_of(u)
}

fn status_of(u: &Unit) -> ApiResult<UnitStatus> {
    stored_enum("unit status", &u.status, UnitStatus::parse)
}

/// The recorded facts that decide whether a unit may go back into stock.
#[derive(Debug, Clone, Default)]
pub struct UnitRecord {
    /// Every marker result, oldest first.
    pub results: Vec<MarkerResult>,
    /// The standing result per marker, in marker order.
    pub tests: Vec<TestView>,
    pub holds: Holds,
    pub excursions: Vec<ExcursionView>,
    /// The highest excursion id, for a disposition to cover.
    pub last_excursion_id: Option<i64>,
    /// The returned allocation still waiting for its inspection.
    pub returned_allocation: Option<crate::store::allocations::Allocation>,
    /// The latest emergency release: it binds the unit to its request.
    pub emergency: Option<rows::EmergencyRelease>,
    pub supply: Option<rows::Supply>,
    pub pool_members: Vec<rows::PoolMember>,
}

impl UnitRecord {
    /// The request an emergency release binds the unit to.
    pub fn reserved_for(&self) -> Option<i64> {
        self.emergency.as_ref().map(|e| e.request_id)
    }

    pub fn reactive(&self) -> bool {
        !rules::reactive_markers(&self.results).is_empty()
    }

    /// Hold codes, in the order the release gate reports them.
    pub fn hold_codes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.reactive() {
            out.push(rules::codes::MARKER_POSITIVE.to_owned());
        }
        if self.holds.donor_reactive {
            out.push(rules::codes::DONOR_REACTIVE_MARKER.to_owned());
        }
        if self.holds.inspection_pending {
            out.push(rules::codes::INSPECTION_REQUIRED.to_owned());
        }
        if self.holds.excursion_pending {
            out.push(rules::codes::EXCURSION_REVIEW.to_owned());
        }
        out
    }

    /// The main reason a quarantined unit is held (the first hold, or awaiting release).
    fn quarantine_reason(&self) -> QuarantineReason {
        if self.reactive() {
            QuarantineReason::ReactiveMarker
        } else if self.holds.donor_reactive {
            QuarantineReason::DonorReactiveMarker
        } else if self.holds.inspection_pending {
            QuarantineReason::Returned
        } else if self.holds.excursion_pending {
            QuarantineReason::Excursion
        } else {
            QuarantineReason::AwaitingRelease
        }
    }
}

pub fn record(conn: &mut DbConn, u: &Unit) -> ApiResult<UnitRecord> {
    Ok(records(conn, std::slice::from_ref(u))?
        .remove(&u.id)
        .unwrap_or_default())
}

/// The facts of several units in a fixed number of queries.
pub fn records(conn: &mut DbConn, list: &[Unit]) -> ApiResult<HashMap<i64, UnitRecord>> {
    let ids: Vec<i64> = list.iter().map(|u| u.id).collect();
    let mut out: HashMap<i64, UnitRecord> = ids.iter().map(|id| (*id, UnitRecord::default())).collect();
    let mut standing: HashMap<i64, BTreeMap<String, TestView>> = HashMap::new();
    for t in rows::tests_of_units(conn, &ids)? {
        let result = stored_enum("test result", &t.result, TestResult::parse)?;
        if let Some(r) = out.get_mut(&t.unit_id) {
            r.results.push(MarkerResult {
                marker: t.marker.clone(),
                result,
            });
        }
        let by_marker = standing.entry(t.unit_id).or_default();
        // A positive result stands; a later one of any kind does not replace it.
        if by_marker
            .get(&t.marker)
            .is_some_and(|v| v.result == TestResult::Positive)
        {
            continue;
        }
        by_marker.insert(
            t.marker.clone(),
            TestView {
                marker: t.marker,
                result,
                recorded_at: utc(t.recorded_at),
                recorded_by: t.recorded_by,
            },
        );
    }
    for (id, by_marker) in standing {
        if let Some(r) = out.get_mut(&id) {
            r.tests = by_marker.into_values().collect();
        }
    }
    let mut covered: HashMap<i64, i64> = HashMap::new();
    for d in rows::dispositions_of_units(conn, &ids)? {
        let through = covered.entry(d.unit_id).or_default();
        *through = (*through).max(d.through_excursion_id);
    }
    for e in rows::excursions_of_units(conn, &ids)? {
        let dispositioned = covered.get(&e.unit_id).is_some_and(|through| e.id <= *through);
        if let Some(r) = out.get_mut(&e.unit_id) {
            r.holds.excursion_pending |= !dispositioned;
            r.last_excursion_id = Some(e.id);
            r.excursions.push(ExcursionView {
                id: e.id,
                storage_reading_id: e.storage_reading_id,
                temperature_c: e.temperature_c,
                measured_at: utc(e.measured_at),
                dispositioned,
            });
        }
    }
    // A unit held in quarantine whose latest allocation came back is waiting for its inspection.
    let quarantined: Vec<i64> = list
        .iter()
        .filter(|u| u.status == UnitStatus::Quarantined.as_str())
        .map(|u| u.id)
        .collect();
    if !quarantined.is_empty() {
        let inspected: Vec<i64> = rows::inspections_of_units(conn, &quarantined)?
            .into_iter()
            .map(|i| i.allocation_id)
            .collect();
        let mut latest: HashMap<i64, crate::store::allocations::Allocation> = HashMap::new();
        for a in crate::store::allocations::of_units(conn, &quarantined)? {
            latest.insert(a.unit_id, a);
        }
        for (unit_id, a) in latest {
            if a.status == "returned"
                && !inspected.contains(&a.id)
                && let Some(r) = out.get_mut(&unit_id)
            {
                r.holds.inspection_pending = true;
                r.returned_allocation = Some(a);
            }
        }
    }
    for e in rows::emergency_releases_of(conn, &ids)? {
        if let Some(r) = out.get_mut(&e.unit_id) {
            r.emergency = Some(e);
        }
    }
    let external: Vec<i64> = list
        .iter()
        .filter(|u| u.source == UnitSource::External.as_str())
        .map(|u| u.id)
        .collect();
    if !external.is_empty() {
        for supply in rows::supply_of(conn, &external)? {
            if let Some(r) = out.get_mut(&supply.unit_id) {
                r.supply = Some(supply);
            }
        }
    }
    let pooled: Vec<i64> = list.iter().filter(|u| u.pooled).map(|u| u.id).collect();
    if !pooled.is_empty() {
        for m in rows::pool_members_of(conn, &pooled)? {
            if let Some(r) = out.get_mut(&m.unit_id) {
                r.pool_members.push(m);
            }
        }
    }
    let donors: Vec<i64> = list.iter().filter_map(|u| u.donor_id).collect();
    if !donors.is_empty() {
        let now = utc(store::now());
        let reactive: Vec<i64> = donor_rows::deferrals_of(conn, &donors)?
            .iter()
            .filter(|d| d.source_unit_id.is_some() && super::donors::deferral(d).is_active_at(now))
            .map(|d| d.donor_id)
            .collect();
        for u in list {
            if let (Some(d), Some(r)) = (u.donor_id, out.get_mut(&u.id)) {
                r.holds.donor_reactive = reactive.contains(&d);
            }
        }
    }
    Ok(out)
}

pub fn view(conn: &mut DbConn, u: Unit, now: DateTime<Utc>) -> ApiResult<UnitView> {
    views(conn, vec![u], now)?
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a unit view went missing")))
}

/// Views of several units with their facts and pool members in a fixed number of queries
/// (members and supply are only read for the units that can have them).
pub fn views(conn: &mut DbConn, list: Vec<Unit>, now: DateTime<Utc>) -> ApiResult<Vec<UnitView>> {
    let mut facts = records(conn, &list)?;
    list.into_iter()
        .map(|u| {
            let record = facts.remove(&u.id).unwrap_or_default();
            view_of(u, record, now)
        })
        .collect()
}

fn member_view(m: &rows::PoolMember) -> ApiResult<PoolMemberView> {
    Ok(PoolMemberView {
        din: m.din.clone(),
        abo: m
            .abo
            .as_deref()
            .map(|a| stored_enum("abo", a, Abo::parse))
            .transpose()?,
        rhd: m
            .rhd
            .as_deref()
            .map(|r| stored_enum("rhd", r, Rhd::parse))
            .transpose()?,
        collected_at: m.collected_at.map(utc),
    })
}

fn view_of(u: Unit, record: UnitRecord, now: DateTime<Utc>) -> ApiResult<UnitView> {
    let expires_at = utc(u.expires_at);
    let status = rules::effective_status(status_of(&u)?, expires_at, now);
    let remaining = expires_at.signed_duration_since(now).num_seconds().max(0) as f64 / 3600.0;
    let irradiation = match (u.irradiated_at, u.irradiation_dose_gy) {
        (Some(at), Some(dose)) => Some(Irradiation {
            dose_gy: dose,
            irradiated_at: utc(at),
            device: u.irradiation_device.clone(),
            irradiated_by: u.irradiated_by.clone().unwrap_or_default(),
        }),
        _ => None,
    };
    let release = match (&u.release_kind, u.released_at) {
        (Some(kind), Some(at)) => Some(Release {
            kind: stored_enum("release kind", kind, ReleaseKind::parse)?,
            released_at: utc(at),
            released_by: u.released_by.clone().unwrap_or_default(),
            physician: match (&u.emergency_physician, u.emergency_acknowledged_at) {
                (Some(name), Some(ack)) => Some(Physician {
                    name: name.clone(),
                    acknowledged_at: utc(ack),
                }),
                _ => None,
            },
            request_id: record.emergency.as_ref().map(|e| e.request_id),
            pending_markers: match &record.emergency {
                Some(e) => from_stored_json("pending markers", &e.pending_markers)?,
                None => Vec::new(),
            },
            results_expected_at: record.emergency.as_ref().map(|e| utc(e.results_expected_at)),
        }),
        _ => None,
    };
    let pool_members = record
        .pool_members
        .iter()
        .map(member_view)
        .collect::<ApiResult<Vec<_>>>()?;
    let pooled_from = pool_members.iter().map(|m| m.din.clone()).collect();
    let holds = record.hold_codes();
    let quarantine_reason = (status == UnitStatus::Quarantined).then(|| record.quarantine_reason());
    Ok(UnitView {
        check_character: isbt128::check_character(&u.din).unwrap_or('*').to_string(),
        pooled_from,
        pool_members,
        rhd_pooled: record.supply.as_ref().is_some_and(|s| s.rhd_pooled),
        labelled_expires_at: record.supply.as_ref().and_then(|s| s.labelled_expires_at).map(utc),
        tests: record.tests,
        quarantine_reason,
        holds,
        excursions: record.excursions,
        source: stored_enum("unit source", &u.source, UnitSource::parse)?,
        abo: stored_enum("abo", &u.abo, Abo::parse)?,
        rhd: stored_enum("rhd", &u.rhd, Rhd::parse)?,
        cmv: stored_enum("cmv", &u.cmv, Cmv::parse)?,
        id: u.id,
        din: u.din,
        product_code: u.product_code,
        collection_id: u.collection_id,
        donor_id: u.donor_id,
        supplier: u.supplier,
        pooled: u.pooled,
        volume_ml: u.volume_ml,
        granulocyte_count: u.granulocyte_count,
        red_cell_volume_ml: u.red_cell_volume_ml,
        collected_at: utc(u.collected_at),
        expires_at,
        hours_remaining: remaining,
        status,
        status_reason: u.status_reason,
        storage_location: u.storage_location,
        irradiated: irradiation.is_some(),
        irradiation,
        release,
        discarded_at: u.discarded_at.map(utc),
        discarded_by: u.discarded_by,
        created_at: utc(u.created_at),
        updated_at: utc(u.updated_at),
    })
}

/// Audit snapshot: the unit's own fields (without the derived time remaining).
fn snapshot(v: &UnitView) -> ApiResult<serde_json::Value> {
    let mut value = to_value(v)?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("hours_remaining");
    }
    Ok(value)
}

/// Finds a unit by numeric id, DIN, or DIN followed by its check character.
pub fn find(conn: &mut DbConn, key: &str) -> ApiResult<Unit> {
    let key = key.trim();
    // A DIN may be all digits (its FIN can start with 1–9), but it is 13 or more characters.
    let found = if (1..13).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit()) {
        key.parse::<i64>()
            .ok()
            .map(|id| rows::find(conn, id))
            .transpose()?
            .flatten()
    } else {
        let din = parse_din_reference(key)?;
        rows::find_by_din(conn, &din.as_text())?
    };
    found.ok_or_else(|| ApiError::not_found("unit"))
}

fn isbt_refusal(e: isbt128::IsbtError) -> ApiError {
    ApiError::refused(
        ErrorCode::from(&e),
        "the DIN is not valid ISBT 128",
        vec![Reason {
            code: e.code().to_owned(),
            message: e.to_string(),
        }],
    )
}

/// A DIN as people and scanners give it: 13 characters, 14 with the check character, or the
/// scanned `=` data structure with flags.
pub fn parse_din_reference(raw: &str) -> ApiResult<Din> {
    let text = raw.trim().to_ascii_uppercase();
    let parsed = match text.len() {
        13 => Din::parse(&text),
        14 => Din::parse_keyed(&text),
        16 if text.starts_with('=') => isbt128::decode(&text).and_then(|elements| match elements.first() {
            Some(isbt128::Element::Din { din, .. }) => Din::parse(din),
            _ => Din::parse(""),
        }),
        _ => Din::parse(&text),
    };
    parsed.map_err(isbt_refusal)
}

/// The unit; a hospital account (`scope`) sees only units issued to one of its requests.
pub fn get(conn: &mut DbConn, key: &str, scope: Option<i64>) -> ApiResult<UnitView> {
    let u = find(conn, key)?;
    if let Some(hospital_id) = scope {
        let mut issued_to_it = false;
        for a in crate::store::allocations::of_unit(conn, u.id)? {
            if a.issued_at.is_none() {
                continue;
            }
            if crate::store::requests::find(conn, a.request_id)?.is_some_and(|r| r.hospital_id == hospital_id) {
                issued_to_it = true;
            }
        }
        if !issued_to_it {
            return Err(ApiError::not_found("unit"));
        }
    }
    view(conn, u, utc(store::now()))
}

// ---------------------------------------------------------------------------------------------
// Creation

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceInput {
    /// From one of our completed collections: blood group, CMV and donor come from the donor,
    /// the collection end from the collection; the DIN is assigned.
    Collection { collection_id: i64 },
    /// From a supplier: the supplier's DIN (13 characters, 14 with check character, or the
    /// scanned `=` structure), blood group and collection time.
    External {
        #[schema(
            pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
        )]
        supplier: String,
        din: String,
        abo: Abo,
        /// `pooled` for a pool of mixed RhD (ISBT 128 pooled RhD); selection counts it positive.
        rhd: UnitRhd,
        /// End of collection (of a pool: of its latest donation, as the supplier labels it).
        collected_at: DateTime<Utc>,
        cmv: Option<Cmv>,
        /// The expiry printed on the supplier's label; the unit expires at the earlier of this
        /// and the server's own computation.
        expires_at: Option<DateTime<Utc>>,
    },
}

/// A contributing donation of a pool: its DIN, or its DIN with what the supplier says of it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PoolMemberInput {
    Din(String),
    Donation {
        din: String,
        /// The donation's group: a pool is made of ABO-matched donations.
        abo: Option<Abo>,
        rhd: Option<Rhd>,
        /// When the donation was collected: the pool's expiry counts from the earliest.
        collected_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"source": {"type": "collection", "collection_id": 42}, "product_code": "E4583V00", "volume_ml": 250, "granulocyte_count": 2.5e10, "red_cell_volume_ml": 15.0, "storage_location": "Incubator 2"}))]
pub struct CreateUnitInput {
    pub source: SourceInput,
    /// ISBT 128 product code `αooootds` (8 characters, from the licensed database).
    pub product_code: String,
    /// 1–1000 mL.
    #[schema(minimum = 1, maximum = 1000)]
    pub volume_ml: u32,
    /// Granulocytes in the unit (e.g. 2.5e10).
    pub granulocyte_count: f64,
    /// 0–500 mL.
    #[schema(minimum = 0, maximum = 500)]
    pub red_cell_volume_ml: Option<f64>,
    /// External pooled units: every contributing donation (2–30), as its DIN or as
    /// `{din, abo?, rhd?, collected_at?}`.
    pub pooled_from: Option<Vec<PoolMemberInput>>,
    /// Where the unit is kept (e.g. "Incubator 2"), up to 100 characters.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub storage_location: Option<String>,
}

const MAX_VOLUME_ML: u32 = 1000;
/// A sanity bound on when an emergency release's pending results are expected (not a clinical
/// threshold: the policy's default is a day).
const RESULTS_EXPECTED_WITHIN: chrono::TimeDelta = chrono::TimeDelta::days(30);
const MAX_GRANULOCYTES: f64 = 1e12;
const MAX_RED_CELLS_ML: f64 = 500.0;
const POOL_SIZE: (usize, usize) = (2, 30);

/// The next free DIN of our FIN. A number already taken (a supplier unit registered with our
/// own FIN) is skipped rather than refused, so one such unit cannot block every creation.
fn assign_din(conn: &mut DbConn, fin: &str, now: DateTime<Utc>) -> ApiResult<Din> {
    let year = now.year() % 100;
    loop {
        let sequence = rows::next_din_sequence(conn, fin, year)?;
        let sequence = u32::try_from(sequence).unwrap_or(u32::MAX);
        if sequence > Din::MAX_SEQUENCE {
            return Err(ApiError::new(
                ErrorCode::DinSequenceExhausted,
                format!("all DIN sequence numbers of {fin} for 20{year:02} are used"),
            ));
        }
        let din = Din::new(fin, u8::try_from(year).unwrap_or(0), sequence)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        if rows::find_by_din(conn, &din.as_text())?.is_none() {
            return Ok(din);
        }
    }
}

pub fn create(
    conn: &mut DbConn,
    actor: &Actor,
    fin: &str,
    tz: Tz,
    input: CreateUnitInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    let product_code = input.product_code.trim().trim_start_matches("=<").to_owned();
    if let Err(e) = isbt128::decode(&format!("=<{product_code}")) {
        v.push("product_code", e.to_string());
    }
    v.check(
        (1..=MAX_VOLUME_ML).contains(&input.volume_ml),
        "volume_ml",
        format!("must be between 1 and {MAX_VOLUME_ML}"),
    );
    v.check(
        input.granulocyte_count.is_finite()
            && input.granulocyte_count > 0.0
            && input.granulocyte_count <= MAX_GRANULOCYTES,
        "granulocyte_count",
        "must be a positive cell count (e.g. 2.5e10)",
    );
    v.check(
        input
            .red_cell_volume_ml
            .is_none_or(|ml| ml.is_finite() && (0.0..=MAX_RED_CELLS_ML).contains(&ml)),
        "red_cell_volume_ml",
        format!("must be between 0 and {MAX_RED_CELLS_ML}"),
    );
    let storage_location = clean_location(&mut v, input.storage_location);
    let mut pool: Vec<rows::PoolMember> = Vec::new();
    if let Some(list) = &input.pooled_from {
        if matches!(input.source, SourceInput::Collection { .. }) {
            v.push("pooled_from", "only supplier units are pooled here");
        }
        v.check(
            (POOL_SIZE.0..=POOL_SIZE.1).contains(&list.len()),
            "pooled_from",
            format!("must list {} to {} donations", POOL_SIZE.0, POOL_SIZE.1),
        );
        for (i, member) in list.iter().enumerate() {
            let (raw, abo, rhd, collected_at) = match member {
                PoolMemberInput::Din(din) => (din, None, None, None),
                PoolMemberInput::Donation {
                    din,
                    abo,
                    rhd,
                    collected_at,
                } => (din, *abo, *rhd, *collected_at),
            };
            if collected_at.is_some_and(|t| !is_past(t, now)) {
                v.push(&format!("pooled_from[{i}].collected_at"), "must not be in the future");
            }
            match parse_din_reference(raw) {
                Ok(din) if pool.iter().any(|m| m.din == din.as_text()) => {
                    v.push(&format!("pooled_from[{i}]"), "is listed twice")
                }
                Ok(din) => pool.push(rows::PoolMember {
                    unit_id: 0,
                    din: din.as_text(),
                    abo: abo.map(|a| a.as_str().to_owned()),
                    rhd: rhd.map(|r| r.as_str().to_owned()),
                    collected_at: collected_at.map(stored),
                }),
                Err(e) => v.push(
                    &format!("pooled_from[{i}]"),
                    e.problem()
                        .reasons
                        .first()
                        .map_or_else(String::new, |r| r.message.clone()),
                ),
            }
        }
    }
    let mut labelled_expiry: Option<DateTime<Utc>> = None;
    let mut rhd_pooled = false;
    let (source, din, collection_id, donor_id, supplier, abo, rhd, cmv, collected_at) = match input.source {
        SourceInput::External {
            supplier,
            din,
            abo,
            rhd,
            collected_at,
            cmv,
            expires_at,
        } => {
            labelled_expiry = expires_at.map(|t| utc(stored(t)));
            rhd_pooled = rhd == UnitRhd::Pooled;
            v.check(
                !rhd_pooled || !pool.is_empty(),
                "source.rhd",
                "pooled RhD is for a pool: list its donations in pooled_from",
            );
            let rhd_labelled = rhd;
            let rhd = rhd.for_selection();
            let supplier = supplier.trim().to_owned();
            v.check(
                !supplier.is_empty() && supplier.chars().count() <= 200 && super::printable(&supplier),
                "source.supplier",
                "must be 1 to 200 characters",
            );
            v.check(
                is_past(collected_at, now),
                "source.collected_at",
                "must not be in the future",
            );
            v.finish()?;
            let din = parse_din_reference(&din)?;
            let members: Vec<rules::PoolMemberFacts> = pool
                .iter()
                .map(|m| rules::PoolMemberFacts {
                    din: m.din.clone(),
                    abo: m.abo.as_deref().and_then(Abo::parse),
                    rhd: m.rhd.as_deref().and_then(Rhd::parse),
                })
                .collect();
            let inconsistent = rules::pool_inconsistencies(abo, rhd_labelled, &members);
            if !inconsistent.is_empty() {
                return Err(ApiError::refused(
                    ErrorCode::PoolGroupInconsistent,
                    "the pool's donations do not match its labelled group",
                    super::reasons(inconsistent),
                ));
            }
            (
                UnitSource::External,
                din,
                None,
                None,
                Some(supplier),
                abo,
                rhd,
                cmv.unwrap_or(Cmv::Unknown),
                utc(stored(collected_at)),
            )
        }
        SourceInput::Collection { collection_id } => {
            v.finish()?;
            let c = collection_rows::find(conn, collection_id)?.ok_or_else(|| ApiError::not_found("collection"))?;
            let status = stored_enum("collection status", &c.status, CollectionStatus::parse)?;
            let Some(ended_at) = c.ended_at.filter(|_| status == CollectionStatus::Completed) else {
                return Err(ApiError::new(
                    ErrorCode::CollectionNotCompleted,
                    format!("collection {collection_id} is {status}; units come from completed collections"),
                ));
            };
            let donor = donor_rows::find(conn, c.donor_id)?.ok_or_else(|| ApiError::not_found("donor"))?;
            let din = assign_din(conn, fin, now)?;
            (
                UnitSource::Collection,
                din,
                Some(collection_id),
                Some(donor.id),
                None,
                stored_enum("abo", &donor.abo, Abo::parse)?,
                stored_enum("rhd", &donor.rhd, Rhd::parse)?,
                stored_enum("cmv", &donor.cmv, Cmv::parse)?,
                utc(ended_at),
            )
        }
    };
    let pooled = !pool.is_empty();
    // A pool's day counts from its earliest donation.
    let earliest = pool
        .iter()
        .filter_map(|m| m.collected_at.map(utc))
        .chain([collected_at])
        .min()
        .unwrap_or(collected_at);
    let expires_at = rules::capped_expiry(
        rules::expires_at(if pooled { earliest } else { collected_at }, pooled, tz, policy),
        labelled_expiry,
    );
    if expires_at <= now {
        return Err(ApiError::refused(
            ErrorCode::UnitExpired,
            format!("a unit collected at {collected_at} expired at {expires_at}"),
            vec![Reason {
                code: "unit_expired".to_owned(),
                message: format!("expired at {expires_at}"),
            }],
        ));
    }
    let din_text = din.as_text();
    let row = rows::insert(
        conn,
        &UnitData {
            din: din_text.clone(),
            product_code,
            source: source.as_str().to_owned(),
            collection_id,
            donor_id,
            supplier,
            pooled,
            abo: abo.as_str().to_owned(),
            rhd: rhd.as_str().to_owned(),
            cmv: cmv.as_str().to_owned(),
            volume_ml: i32::try_from(input.volume_ml).unwrap_or(i32::MAX),
            granulocyte_count: input.granulocyte_count,
            red_cell_volume_ml: input.red_cell_volume_ml,
            collected_at: stored(collected_at),
            expires_at: stored(expires_at),
            status: UnitStatus::Quarantined.as_str().to_owned(),
            status_reason: Some("awaiting release".to_owned()),
            storage_location,
            irradiated_at: None,
            irradiation_dose_gy: None,
            irradiation_device: None,
            irradiated_by: None,
            release_kind: None,
            released_at: None,
            released_by: None,
            emergency_physician: None,
            emergency_acknowledged_at: None,
            discarded_at: None,
            discarded_by: None,
            updated_at: stored(now),
        },
        stored(now),
    )
    .map_err(|e| {
        if !store::is_unique_violation(&e) {
            return ApiError::from(e);
        }
        match collection_id {
            Some(c) => ApiError::new(ErrorCode::UnitExists, format!("collection {c} already has a unit")),
            None => ApiError::new(ErrorCode::DinExists, format!("a unit with DIN {din_text} exists")),
        }
    })?;
    for m in &mut pool {
        m.unit_id = row.id;
    }
    rows::insert_pool_members(conn, &pool)?;
    if source == UnitSource::External {
        rows::insert_supply(
            conn,
            &rows::Supply {
                unit_id: row.id,
                rhd_pooled,
                labelled_expires_at: labelled_expiry.map(stored),
            },
        )?;
    }
    let created = view(conn, row, now)?;
    audit::append(
        conn,
        actor,
        Change::created("unit.create", "unit", created.id, snapshot(&created)?),
    )?;
    // The product's red cells were taken from the donor: they count in the donor's exposure.
    if let Some(id) = collection_id {
        super::collections::record_product_red_cells(conn, actor, id, input.red_cell_volume_ml, policy)?;
    }
    Ok(created)
}

// ---------------------------------------------------------------------------------------------
// Changes

/// Loads and locks the unit and checks `action` at this moment.
fn begin(conn: &mut DbConn, key: &str, action: UnitAction, now: DateTime<Utc>) -> ApiResult<(Unit, UnitStatus)> {
    let u = find(conn, key)?;
    rows::lock(conn, u.id)?;
    let to = rules::transition(status_of(&u)?, action, utc(u.expires_at), now).map_err(|code| {
        let status = rules::effective_status(status_of(&u).unwrap_or(UnitStatus::Discarded), utc(u.expires_at), now);
        ApiError::new(code.into(), format!("unit {} is {status}; it cannot {action}", u.din))
    })?;
    Ok((u, to))
}

fn save(
    conn: &mut DbConn,
    actor: &Actor,
    action: &str,
    before: Unit,
    data: UnitData,
    now: DateTime<Utc>,
) -> ApiResult<UnitView> {
    let id = before.id;
    let before = view(conn, before, now)?;
    let row = rows::update(conn, id, &data)?;
    let after = view(conn, row, now)?;
    audit::append(
        conn,
        actor,
        Change::updated(action, "unit", id, snapshot(&before)?, snapshot(&after)?),
    )?;
    Ok(after)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dose_gy": 25.0, "device": "Gammacell 3000"}))]
pub struct IrradiationInput {
    pub dose_gy: f64,
    /// Default: now.
    pub irradiated_at: Option<DateTime<Utc>>,
    /// Irradiator used, up to 100 characters.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub device: Option<String>,
}

pub fn irradiate(
    conn: &mut DbConn,
    actor: &Actor,
    key: &str,
    input: IrradiationInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let at = utc(stored(input.irradiated_at.unwrap_or(now)));
    let device = input.device.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    let mut v = Validator::new();
    v.check(is_past(at, now), "irradiated_at", "must not be in the future");
    v.check(
        device
            .as_ref()
            .is_none_or(|d| d.chars().count() <= 100 && super::printable(d)),
        "device",
        "must be at most 100 characters",
    );
    v.finish()?;
    let (u, _) = begin(conn, key, UnitAction::Irradiate, now)?;
    if u.irradiated_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::AlreadyIrradiated,
            format!("unit {} is already irradiated", u.din),
        ));
    }
    if at < utc(u.collected_at) {
        return Err(ApiError::field("irradiated_at", "must not be before the collection"));
    }
    if let Some(problem) = rules::irradiation_dose_problem(input.dose_gy, policy) {
        return Err(ApiError::refused(
            ErrorCode::IrradiationDoseOutOfRange,
            "the irradiation dose is outside the policy range",
            super::reasons(vec![problem]),
        ));
    }
    let mut data = UnitData::from(u.clone());
    data.irradiated_at = Some(stored(at));
    data.irradiation_dose_gy = Some(input.dose_gy);
    data.irradiation_device = device;
    data.irradiated_by = Some(actor.name.clone());
    data.updated_at = stored(now);
    save(conn, actor, "unit.irradiate", u, data, now)
}

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
    key: &str,
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
    if let Ok(to) = rules::transition(status_of(&u)?, UnitAction::Quarantine, utc(u.expires_at), now) {
        data.status = to.as_str().to_owned();
    }
    if status_of(&u)? == UnitStatus::Quarantined || data.status == UnitStatus::Quarantined.as_str() {
        data.status_reason = Some(format!("{marker} reactive: the unit can only be discarded"));
    }
    save(conn, actor, "unit.test", u.clone(), data, now)?;
    reactive_result(conn, actor, &u, &marker, facts.emergency.as_ref(), now, policy)?;
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
    super::tasks::complete_about(
        conn,
        actor,
        super::tasks::TaskKind::EmergencyReleaseFollowUp,
        "unit",
        u.id,
        &note,
    )?;
    Ok(())
}

/// Everything a reactive result on `u` sets off beyond the unit itself (see [`record_test`]).
fn reactive_result(
    conn: &mut DbConn,
    actor: &Actor,
    u: &Unit,
    marker: &str,
    emergency: Option<&rows::EmergencyRelease>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> ApiResult<()> {
    let mut affected_units: Vec<Unit> = vec![u.clone()];
    let mut quarantined_units: Vec<String> = Vec::new();
    if let Some(donor_id) = u.donor_id {
        super::donors::defer_for_reactive_result(
            conn,
            actor,
            donor_id,
            u.id,
            &format!("{marker} reactive on unit {}: pending confirmatory testing", u.din),
        )?;
        for other in rows::in_bank_of_donor(conn, donor_id, u.id)? {
            rows::lock(conn, other.id)?;
            let mut data = UnitData::from(other.clone());
            if let Ok(to) = rules::transition(status_of(&other)?, UnitAction::Quarantine, utc(other.expires_at), now) {
                data.status = to.as_str().to_owned();
            }
            if data.status == UnitStatus::Quarantined.as_str() {
                data.status_reason = Some(format!(
                    "donor deferred: {marker} reactive on unit {} (pending confirmatory testing)",
                    u.din
                ));
                data.updated_at = stored(now);
                save(conn, actor, "unit.quarantine", other.clone(), data, now)?;
                quarantined_units.push(other.din.clone());
            }
        }
        affected_units = rows::of_donor(conn, donor_id)?;
    }
    // Look-forward: every allocation of these units that reached a patient.
    let ids: Vec<i64> = affected_units.iter().map(|x| x.id).collect();
    let mut recipients = Vec::new();
    let mut names = Vec::new();
    for a in crate::store::allocations::of_units(conn, &ids)? {
        if a.issued_at.is_none() || !matches!(a.status.as_str(), "issued" | "transfused" | "returned") {
            continue;
        }
        let din = affected_units
            .iter()
            .find(|x| x.id == a.unit_id)
            .map(|x| x.din.clone())
            .unwrap_or_default();
        let r = crate::store::requests::find(conn, a.request_id)?;
        let p = match &r {
            Some(r) => crate::store::patients::find(conn, r.patient_id)?,
            None => None,
        };
        if let Some(p) = &p {
            names.push(format!(
                "allocation {} ({}, unit {din}) for patient {} (MRN {}) of hospital {}",
                a.id, a.status, p.id, p.mrn, p.hospital_id
            ));
            super::tasks::create(
                conn,
                actor,
                super::tasks::NewTaskSpec {
                    kind: super::tasks::TaskKind::LookForward,
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
                    owner_role: super::tasks::OwnerRole::MedicalDirector,
                    due_at: super::tasks::due(now, policy.tasks.look_forward_due_hours),
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
    if let Some(e) = emergency
        && !recipients.iter().any(|r| r["unit_id"] == u.id)
    {
        super::tasks::create(
            conn,
            actor,
            super::tasks::NewTaskSpec {
                kind: super::tasks::TaskKind::LookForward,
                subject_type: "unit",
                subject_id: u.id,
                title: format!(
                    "look forward: {marker} reactive on unit {} released in an emergency for request {}; it has not been given: make sure it is not",
                    u.din, e.request_id
                ),
                details: serde_json::json!({"marker": marker, "unit_id": u.id, "din": u.din,
                                            "request_id": e.request_id}),
                owner_role: super::tasks::OwnerRole::MedicalDirector,
                due_at: super::tasks::due(now, policy.tasks.look_forward_due_hours),
            },
        )?;
    }
    let released = u.release_kind.is_some();
    // This unit's own latest allocation and recipient, first: who to call.
    let own = recipients
        .iter()
        .rev()
        .find(|r| r["unit_id"] == u.id)
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let details = serde_json::json!({
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
    if released || !names.is_empty() {
        let whom = if names.is_empty() {
            "; no allocation of the donor's units reached a patient".to_owned()
        } else {
            format!("; look forward: {}", names.join("; "))
        };
        raise(
            conn,
            "unit.positive_result_after_release",
            "urgent",
            &format!("unit.positive_result_after_release:{}:{marker}", u.id),
            u,
            format!(
                "{marker} reactive on unit {}{}{donor_note}{whom}",
                u.din,
                u.release_kind
                    .as_deref()
                    .map(|k| format!(" after its {k} release"))
                    .unwrap_or_default()
            ),
            details,
            now,
        )?;
    } else {
        raise(
            conn,
            "unit.quarantined",
            "urgent",
            &format!("unit.quarantined:{}:reactive:{marker}", u.id),
            u,
            format!("unit {} quarantined: {marker} reactive{donor_note}", u.din),
            details,
            now,
        )?;
    }
    Ok(())
}

#[expect(clippy::too_many_arguments)]
fn raise(
    conn: &mut DbConn,
    kind: &str,
    severity: &str,
    dedup_key: &str,
    u: &Unit,
    message: String,
    mut details: serde_json::Value,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    if let Some(obj) = details.as_object_mut() {
        obj.insert("unit_id".to_owned(), u.id.into());
        obj.insert("din".to_owned(), u.din.clone().into());
    }
    crate::services::webhooks::raise(
        conn,
        &NewAlert {
            kind,
            severity,
            status: "open",
            dedup_key,
            entity_type: "unit",
            entity_id: &u.id.to_string(),
            message: &message,
            details: details.to_string(),
            created_at: stored(now),
        },
    )?;
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
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,498}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub excursion_disposition: Option<String>,
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
    key: &str,
    input: ReleaseInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let mut v = Validator::new();
    let disposition = input.excursion_disposition.as_deref().map(str::trim).map(str::to_owned);
    v.check(
        disposition
            .as_ref()
            .is_none_or(|d| !d.is_empty() && d.chars().count() <= 500 && super::printable(d)),
        "excursion_disposition",
        "must be 1 to 500 characters",
    );
    let physician = match (input.emergency, input.physician) {
        (true, Some(p)) => {
            let name = p.name.trim().to_owned();
            v.check(
                !name.is_empty() && name.chars().count() <= 200 && super::printable(&name),
                "physician.name",
                "must be 1 to 200 characters",
            );
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
        .unwrap_or_else(|| super::tasks::due(now, policy.unit.marker_results_expected_hours));
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
            if r.status != "open" {
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
            super::reasons(blockers),
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
    data.status = to.as_str().to_owned();
    data.status_reason = None;
    data.release_kind = Some(kind.as_str().to_owned());
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
                pending_markers: &super::to_json(&pending)?,
                results_expected_at: stored(results_expected_at),
                released_by: &actor.name,
                released_at: stored(now),
            },
        )?;
        super::tasks::create(
            conn,
            actor,
            super::tasks::NewTaskSpec {
                kind: super::tasks::TaskKind::EmergencyReleaseFollowUp,
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
                owner_role: super::tasks::OwnerRole::Technologist,
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

/// A medical director's disposition of every storage excursion of a unit in the bank so far,
/// without a release (for a unit that is not quarantined, such as one released before
/// excursions needed a disposition). Audited.
pub fn disposition_excursions(conn: &mut DbConn, actor: &Actor, key: &str, reason: &str) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || !super::printable(reason) {
        return Err(ApiError::field("reason", "must be 1 to 500 characters"));
    }
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
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,498}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub notes: Option<String>,
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
    key: &str,
    input: InspectionInput,
    policy: &Policy,
) -> ApiResult<InspectionView> {
    let now = utc(store::now());
    let notes = input.notes.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if notes
        .as_ref()
        .is_some_and(|n| n.chars().count() > 500 || !super::printable(n))
    {
        return Err(ApiError::field("notes", "must be at most 500 characters"));
    }
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
        let to = rules::transition(status_of(&u)?, action, utc(u.expires_at), now)
            .map_err(|r| ApiError::new(r.into(), format!("unit {} cannot {action}", u.din)))?;
        data.status = to.as_str().to_owned();
        data.status_reason = why;
        if action == UnitAction::Discard {
            data.discarded_at = Some(stored(now));
            data.discarded_by = Some(actor.name.clone());
        }
    }
    let reasons = super::reasons(reasons);
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

pub fn discard(conn: &mut DbConn, actor: &Actor, key: &str, reason: &str) -> ApiResult<UnitView> {
    let now = utc(store::now());
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || !super::printable(reason) {
        return Err(ApiError::field("reason", "must be 1 to 500 characters"));
    }
    let (u, to) = begin(conn, key, UnitAction::Discard, now)?;
    let mut data = UnitData::from(u.clone());
    data.status = to.as_str().to_owned();
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
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
    )]
    pub location: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"location": "Incubator 2", "temperature_c": 22.5}))]
pub struct LocationReadingInput {
    /// The storage location read (incubator, cabinet), up to 100 characters.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub location: String,
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
const LOCATION_CHARS: usize = 100;

fn clean_location(v: &mut Validator, raw: Option<String>) -> Option<String> {
    let location = raw.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
    v.check(
        location
            .as_ref()
            .is_none_or(|l| l.chars().count() <= LOCATION_CHARS && !l.chars().any(char::is_control)),
        "location",
        format!("must be at most {LOCATION_CHARS} characters without control characters"),
    );
    location
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
        status_of(u)?,
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
    let effect = match rules::transition(status_of(u)?, UnitAction::Quarantine, utc(u.expires_at), now) {
        Ok(to) => {
            data.status = to.as_str().to_owned();
            data.status_reason = Some(why.clone());
            ReadingEffect::Quarantined
        }
        Err(_) => ReadingEffect::Recorded,
    };
    let message = match effect {
        ReadingEffect::Quarantined => format!("unit {} quarantined: {why}", u.din),
        _ => format!("unit {} (held in quarantine) had an excursion: {why}", u.din),
    };
    raise(
        conn,
        "unit.quarantined",
        "urgent",
        &format!("unit.quarantined:{}:reading:{}", u.id, reading.id),
        u,
        message,
        serde_json::json!({"reading_id": reading.id, "temperature_c": reading.temperature_c, "excursion": true}),
        now,
    )?;
    Ok((data, effect))
}

pub fn record_reading(
    conn: &mut DbConn,
    actor: &Actor,
    key: &str,
    input: ReadingInput,
    policy: &Policy,
) -> ApiResult<ReadingView> {
    let now = utc(store::now());
    let at = utc(stored(input.at.unwrap_or(now)));
    let mut v = Validator::new();
    check_reading(&mut v, input.temperature_c, at, now);
    let location = clean_location(&mut v, input.location);
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
    let location = clean_location(&mut v, Some(input.location));
    if location.is_none() {
        v.push("location", "is required");
    }
    v.finish()?;
    let location = location.unwrap_or_default();
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

// ---------------------------------------------------------------------------------------------
// Inventory

/// Keyset position in the inventory: (expires_at, id) of the last unit of a page.
pub type UnitCursor = (chrono::NaiveDateTime, i64);

pub struct ListRequest {
    pub status: Option<UnitStatus>,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub expiring_within_hours: Option<u32>,
    pub after: Option<UnitCursor>,
    pub limit: i64,
}

/// First-expiring first; `status` is matched as of now (see [`UnitView::status`]).
pub fn list(conn: &mut DbConn, req: ListRequest) -> ApiResult<(Vec<UnitView>, Option<UnitCursor>)> {
    let now = utc(store::now());
    let in_bank = ["quarantined", "available", "allocated"];
    let mut filter = UnitFilter {
        abo: req.abo.map(|a| a.as_str().to_owned()),
        rhd: req.rhd.map(|r| r.as_str().to_owned()),
        expires_before: req
            .expiring_within_hours
            .map(|h| stored(now + chrono::TimeDelta::hours(i64::from(h)))),
        after: req.after,
        ..UnitFilter::default()
    };
    if req.expiring_within_hours.is_some() {
        // "Expiring within" means still in the bank and not yet expired.
        filter.unexpired_at = Some(stored(now));
        filter.statuses = Some(in_bank.map(str::to_owned).to_vec());
    }
    match req.status {
        None => {}
        Some(UnitStatus::Expired) => {
            filter.statuses = Some(
                ["expired", "quarantined", "available", "allocated"]
                    .map(str::to_owned)
                    .to_vec(),
            );
            filter.expired_at = Some(stored(now));
        }
        Some(s) if in_bank.contains(&s.as_str()) => {
            filter.statuses = Some(vec![s.as_str().to_owned()]);
            filter.unexpired_at = Some(stored(now));
        }
        Some(s) => filter.statuses = Some(vec![s.as_str().to_owned()]),
    }
    let mut found = rows::list(conn, &filter, req.limit + 1)?;
    let next = if found.len() as i64 > req.limit {
        found.truncate(usize::try_from(req.limit).unwrap_or(0));
        found.last().map(|u| (u.expires_at, u.id))
    } else {
        None
    };
    Ok((views(conn, found, now)?, next))
}

// ---------------------------------------------------------------------------------------------
// Label

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelBarcodes {
    /// `=` + DIN + Type 3 flags (the flags carry the check character).
    pub din: String,
    /// `=%` + blood group code + `00`.
    pub blood_group: String,
    /// `=<` + product code.
    pub product: String,
    /// `&>` + `cyyjjjhhmm`, on the facility's wall clock (scanners read it as local time).
    pub expiry: String,
}

/// What the label must carry (domain-reference §5.1), eye-readable, plus the ISBT 128 data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Label {
    pub product_name: String,
    pub producer: String,
    /// DIN printed in groups (`A9999 26 000001`), with the boxed check character separately.
    pub din: String,
    pub check_character: String,
    pub blood_group: String,
    pub volume_ml: i32,
    pub granulocyte_count: f64,
    pub collected_at: DateTime<Utc>,
    /// With the hour: the unit lives 24 h.
    pub expires_at: DateTime<Utc>,
    /// The expiry on the facility's wall clock, with its zone (`26 NOV 2026 06:04 EST`).
    pub expiry_text: String,
    /// The facility's IANA time zone (`GRANULO_TIMEZONE`).
    pub time_zone: String,
    pub storage: String,
    pub irradiated: bool,
    pub emergency_release: bool,
    pub pooled_from: Vec<String>,
    /// Statements to print, in order.
    pub statements: Vec<String>,
    pub isbt128: LabelBarcodes,
}

/// A time as printed on a label: the facility's wall clock with the zone's abbreviation.
fn local_text(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%d %b %Y %H:%M %Z")
        .to_string()
        .to_uppercase()
}

pub fn label(conn: &mut DbConn, key: &str, facility_name: &str, tz: Tz, policy: &Policy) -> ApiResult<Label> {
    let u = find(conn, key)?;
    let v = view(conn, u, utc(store::now()))?;
    let din = Din::parse(&v.din).map_err(|e| ApiError::internal(anyhow::anyhow!("stored DIN: {e}")))?;
    let rhd = match (v.rhd_pooled, v.rhd) {
        (true, _) => "RhD pooled",
        (false, Rhd::Positive) => "RhD positive",
        (false, Rhd::Negative) => "RhD negative",
    };
    let group_code = if v.rhd_pooled {
        isbt128::pooled_rhd_code(v.abo)
    } else {
        isbt128::blood_group_code(v.abo, v.rhd)
    };
    let mut statements = vec!["Do not agitate".to_owned()];
    if v.irradiated {
        statements.push("Irradiated".to_owned());
    }
    if let Some(Release {
        kind: ReleaseKind::Emergency,
        physician: Some(p),
        ..
    }) = &v.release
    {
        statements.push(format!(
            "EMERGENCY RELEASE: not fully tested for infectious markers; released on the authority of {} ({})",
            p.name,
            local_text(p.acknowledged_at, tz)
        ));
    }
    statements.extend(
        [
            "Always check patient/component compatibility/identity",
            "Inspect pack and contents for signs of deterioration or damage",
            "Risk of adverse reaction/infection, including vCJD",
        ]
        .map(str::to_owned),
    );
    Ok(Label {
        product_name: if v.pooled {
            "Granulocytes, Pooled"
        } else {
            "Granulocytes, Apheresis"
        }
        .to_owned(),
        producer: v.supplier.clone().unwrap_or_else(|| facility_name.to_owned()),
        din: format!("{} {:02} {:06}", din.fin, din.year, din.sequence),
        check_character: v.check_character.clone(),
        blood_group: format!("{} {rhd}", v.abo),
        volume_ml: v.volume_ml,
        granulocyte_count: v.granulocyte_count,
        collected_at: v.collected_at,
        expires_at: v.expires_at,
        expiry_text: local_text(v.expires_at, tz),
        time_zone: tz.name().to_owned(),
        storage: format!(
            "Store at {}–{} °C",
            policy.unit.storage_temp_min_c, policy.unit.storage_temp_max_c
        ),
        irradiated: v.irradiated,
        emergency_release: matches!(
            v.release,
            Some(Release {
                kind: ReleaseKind::Emergency,
                ..
            })
        ),
        pooled_from: v.pooled_from.clone(),
        statements,
        isbt128: LabelBarcodes {
            din: format!("={}{}", din.as_text(), din.type3_flags()),
            blood_group: format!("=%{group_code}00"),
            product: format!("=<{}", v.product_code),
            expiry: format!(
                "&>{}",
                isbt128::format_date_time(v.expires_at.with_timezone(&tz).naive_local())
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn din_references_never_panic_and_every_form_names_the_same_unit(
            text in prop_oneof![any::<String>(), "[ =A-Z0-9a-zé*+]{12,17}"],
            fin in "[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}",
            year in 0u8..=99,
            sequence in 0u32..=Din::MAX_SEQUENCE,
            flags in prop_oneof![(0u8..=59).prop_map(|f| format!("{f:02}")), Just(String::new())],
        ) {
            let _ = parse_din_reference(&text);
            let din = Din::new(&fin, year, sequence).expect("valid DIN");
            let plain = din.as_text();
            let flags = if flags.is_empty() { din.type3_flags() } else { flags };
            for form in [
                plain.clone(),
                format!("{plain}{}", din.check_character()),
                format!(" ={}{flags} ", plain.to_ascii_lowercase()),
            ] {
                prop_assert_eq!(parse_din_reference(&form).ok(), Some(din.clone()), "{}", form);
            }
        }
    }
}
