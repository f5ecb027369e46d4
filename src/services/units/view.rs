//! A unit as the API shows it, and the recorded facts (results, holds, excursions, emergency
//! release, supply, pool members) read for many units in a fixed number of queries.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ReleaseKind, UnitSource};
use crate::domain::blood::{Abo, Cmv, Rhd};
use crate::domain::isbt128::{self};
use crate::domain::requests::AllocationStatus;
use crate::domain::units::{self as rules, Holds, MarkerResult, QuarantineReason, TestResult, UnitStatus};
use crate::error::{ApiError, ApiResult};
use crate::services::{from_stored_json, to_value, utc};
use crate::store::units::{self as rows, Unit};
use crate::store::{self, DbConn, donors as donor_rows};

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
        let result = t.result;
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
        .filter(|u| u.status == UnitStatus::Quarantined)
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
            if a.status == AllocationStatus::Returned
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
        .filter(|u| u.source == UnitSource::External)
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
            .filter(|d| d.source_unit_id.is_some() && crate::services::donors::deferral(d).is_active_at(now))
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
        abo: m.abo,
        rhd: m.rhd,
        collected_at: m.collected_at.map(utc),
    })
}

fn view_of(u: Unit, record: UnitRecord, now: DateTime<Utc>) -> ApiResult<UnitView> {
    let expires_at = utc(u.expires_at);
    let status = rules::effective_status(u.status, expires_at, now);
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
    let release = match (u.release_kind, u.released_at) {
        (Some(kind), Some(at)) => Some(Release {
            kind,
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
        source: u.source,
        abo: u.abo,
        rhd: u.rhd,
        cmv: u.cmv,
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
pub(super) fn snapshot(v: &UnitView) -> ApiResult<serde_json::Value> {
    let mut value = to_value(v)?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("hours_remaining");
    }
    Ok(value)
}
