//! Units, their pool members, test results, storage readings, and the DIN sequence.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::{
    din_sequences, donors, emergency_releases, excursion_dispositions, storage_readings, unit_excursions,
    unit_inspections, unit_pool_members, unit_supply, unit_tests, units,
};
use crate::domain::blood::{Abo, Cmv, Rhd};
use crate::domain::units::UnitStatus;
use crate::domain::units::{ReleaseKind, TestResult, UnitSource};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = units)]
pub struct Unit {
    pub id: i64,
    pub din: String,
    pub product_code: String,
    pub source: UnitSource,
    pub collection_id: Option<i64>,
    pub donor_id: Option<i64>,
    pub supplier: Option<String>,
    pub pooled: bool,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub volume_ml: i32,
    pub granulocyte_count: f64,
    pub red_cell_volume_ml: Option<f64>,
    pub collected_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub status: UnitStatus,
    pub status_reason: Option<String>,
    pub storage_location: Option<String>,
    pub irradiated_at: Option<NaiveDateTime>,
    pub irradiation_dose_gy: Option<f64>,
    pub irradiation_device: Option<String>,
    pub irradiated_by: Option<String>,
    pub release_kind: Option<ReleaseKind>,
    pub released_at: Option<NaiveDateTime>,
    pub released_by: Option<String>,
    pub emergency_physician: Option<String>,
    pub emergency_acknowledged_at: Option<NaiveDateTime>,
    pub discarded_at: Option<NaiveDateTime>,
    pub discarded_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Every column but the id and creation time; changes load the row, edit it, write it back.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = units, treat_none_as_null = true)]
pub struct UnitData {
    pub din: String,
    pub product_code: String,
    pub source: UnitSource,
    pub collection_id: Option<i64>,
    pub donor_id: Option<i64>,
    pub supplier: Option<String>,
    pub pooled: bool,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub volume_ml: i32,
    pub granulocyte_count: f64,
    pub red_cell_volume_ml: Option<f64>,
    pub collected_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub status: UnitStatus,
    pub status_reason: Option<String>,
    pub storage_location: Option<String>,
    pub irradiated_at: Option<NaiveDateTime>,
    pub irradiation_dose_gy: Option<f64>,
    pub irradiation_device: Option<String>,
    pub irradiated_by: Option<String>,
    pub release_kind: Option<ReleaseKind>,
    pub released_at: Option<NaiveDateTime>,
    pub released_by: Option<String>,
    pub emergency_physician: Option<String>,
    pub emergency_acknowledged_at: Option<NaiveDateTime>,
    pub discarded_at: Option<NaiveDateTime>,
    pub discarded_by: Option<String>,
    pub updated_at: NaiveDateTime,
}

impl From<Unit> for UnitData {
    fn from(u: Unit) -> Self {
        Self {
            din: u.din,
            product_code: u.product_code,
            source: u.source,
            collection_id: u.collection_id,
            donor_id: u.donor_id,
            supplier: u.supplier,
            pooled: u.pooled,
            abo: u.abo,
            rhd: u.rhd,
            cmv: u.cmv,
            volume_ml: u.volume_ml,
            granulocyte_count: u.granulocyte_count,
            red_cell_volume_ml: u.red_cell_volume_ml,
            collected_at: u.collected_at,
            expires_at: u.expires_at,
            status: u.status,
            status_reason: u.status_reason,
            storage_location: u.storage_location,
            irradiated_at: u.irradiated_at,
            irradiation_dose_gy: u.irradiation_dose_gy,
            irradiation_device: u.irradiation_device,
            irradiated_by: u.irradiated_by,
            release_kind: u.release_kind,
            released_at: u.released_at,
            released_by: u.released_by,
            emergency_physician: u.emergency_physician,
            emergency_acknowledged_at: u.emergency_acknowledged_at,
            discarded_at: u.discarded_at,
            discarded_by: u.discarded_by,
            updated_at: u.updated_at,
        }
    }
}

pub fn insert(conn: &mut DbConn, data: &UnitData, created_at: NaiveDateTime) -> QueryResult<Unit> {
    let id: i64 = diesel::insert_into(units::table)
        .values((data, units::created_at.eq(created_at)))
        .returning(units::id)
        .get_result(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn update(conn: &mut DbConn, id: i64, data: &UnitData) -> QueryResult<Unit> {
    diesel::update(units::table.find(id)).set(data).execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Unit>> {
    units::table.find(id).select(Unit::as_select()).first(conn).optional()
}

pub fn find_by_collection(conn: &mut DbConn, collection_id: i64) -> QueryResult<Option<Unit>> {
    units::table
        .filter(units::collection_id.eq(collection_id))
        .select(Unit::as_select())
        .first(conn)
        .optional()
}

pub fn find_by_din(conn: &mut DbConn, din: &str) -> QueryResult<Option<Unit>> {
    units::table
        .filter(units::din.eq(din))
        .select(Unit::as_select())
        .first(conn)
        .optional()
}

/// Takes the unit's row lock (PostgreSQL) before a status change; false if absent.
pub fn lock(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    let n = diesel::update(units::table.find(id))
        .set(units::updated_at.eq(units::updated_at))
        .execute(conn)?;
    Ok(n == 1)
}

/// Locks an available unit for a claim without waiting for another claimant: false when the
/// unit is not available or another transaction holds it. PostgreSQL uses `FOR UPDATE SKIP
/// LOCKED`; SQLite has no row locks (`write_tx` takes the writer lock up front), so there it is
/// always true and [`claim_available`] decides.
pub fn lock_available_unless_contended(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    let DbConn::Postgres(pg) = conn else {
        return Ok(true);
    };
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        #[expect(dead_code)]
        id: i64,
    }
    let locked: Vec<Locked> =
        diesel::sql_query("SELECT id FROM units WHERE id = $1 AND status = 'available' FOR UPDATE SKIP LOCKED")
            .bind::<diesel::sql_types::BigInt, _>(id)
            .load(pg)?;
    Ok(!locked.is_empty())
}

/// The guarded claim: `available` and unexpired → `allocated`, or nothing (false).
pub fn claim_available(conn: &mut DbConn, id: i64, now: NaiveDateTime) -> QueryResult<bool> {
    let n = diesel::update(
        units::table
            .find(id)
            .filter(units::status.eq(UnitStatus::Available))
            .filter(units::expires_at.gt(now)),
    )
    .set((units::status.eq(UnitStatus::Allocated), units::updated_at.eq(now)))
    .execute(conn)?;
    Ok(n == 1)
}

/// Units the alert scan looks at: in the bank, or expired and not yet discarded.
pub fn for_alert_scan(conn: &mut DbConn) -> QueryResult<Vec<(i64, String, String, NaiveDateTime)>> {
    units::table
        .filter(units::status.eq_any([
            UnitStatus::Quarantined,
            UnitStatus::Available,
            UnitStatus::Allocated,
            UnitStatus::Expired,
        ]))
        .select((units::id, units::din, units::status, units::expires_at))
        .load(conn)
}

/// The sweep: a unit in the bank past its expiry becomes `expired` (false if it moved meanwhile).
pub fn mark_expired(conn: &mut DbConn, id: i64, now: NaiveDateTime) -> QueryResult<bool> {
    let n = diesel::update(
        units::table
            .find(id)
            .filter(units::status.eq_any([UnitStatus::Quarantined, UnitStatus::Available, UnitStatus::Allocated]))
            .filter(units::expires_at.le(now)),
    )
    .set((
        units::status.eq(UnitStatus::Expired),
        units::status_reason.eq("expired on the shelf"),
        units::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// The columns matching needs, for every available unexpired unit (one light query).
#[derive(Debug, Clone, Queryable)]
pub struct UnitMatchRow {
    pub id: i64,
    pub din: String,
    pub donor_id: Option<i64>,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub irradiated: bool,
    pub released: bool,
    pub expires_at: NaiveDateTime,
    pub granulocyte_count: f64,
}

/// The ids of the units [`available_for_matching`] reads, as a subquery: the reads below take
/// what matching needs of them in one fixed statement each, not a list of thousands of ids.
macro_rules! available_ids {
    ($now:expr) => {
        units::table
            .filter(units::status.eq(UnitStatus::Available))
            .filter(units::expires_at.gt($now))
    };
}

pub fn available_for_matching(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<Vec<UnitMatchRow>> {
    available_ids!(now)
        .select((
            units::id,
            units::din,
            units::donor_id,
            units::abo,
            units::rhd,
            units::cmv,
            units::irradiated_at.is_not_null(),
            units::release_kind.is_not_null(),
            units::expires_at,
            units::granulocyte_count,
        ))
        .load(conn)
}

/// Excursions of the units available at `now`, oldest first.
pub fn excursions_of_available(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<Vec<Excursion>> {
    unit_excursions::table
        .filter(unit_excursions::unit_id.eq_any(available_ids!(now).select(units::id)))
        .order(unit_excursions::id.asc())
        .select(Excursion::as_select())
        .load(conn)
}

/// Excursion dispositions of the units available at `now`, oldest first.
pub fn dispositions_of_available(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<Vec<Disposition>> {
    excursion_dispositions::table
        .filter(excursion_dispositions::unit_id.eq_any(available_ids!(now).select(units::id)))
        .order(excursion_dispositions::id.asc())
        .select(Disposition::as_select())
        .load(conn)
}

/// Emergency releases of the units available at `now`, oldest first.
pub fn emergency_releases_of_available(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<Vec<EmergencyRelease>> {
    emergency_releases::table
        .filter(emergency_releases::unit_id.eq_any(available_ids!(now).select(units::id)))
        .order(emergency_releases::id.asc())
        .select(EmergencyRelease::as_select())
        .load(conn)
}

/// `(donor id, stored HLA)` of the donors of the units available at `now`, leaving out those
/// whose HLA is stored as `untyped`.
pub fn donor_hla_of_available(conn: &mut DbConn, now: NaiveDateTime, untyped: &str) -> QueryResult<Vec<(i64, String)>> {
    donors::table
        .filter(
            donors::id
                .nullable()
                .eq_any(available_ids!(now).select(units::donor_id)),
        )
        .filter(donors::hla.ne(untyped))
        .select((donors::id, donors::hla))
        .load(conn)
}

#[derive(Debug, Default, Clone)]
pub struct UnitFilter {
    pub statuses: Option<Vec<String>>,
    pub abo: Option<String>,
    pub rhd: Option<String>,
    /// Only units expiring strictly before this time.
    pub expires_before: Option<NaiveDateTime>,
    /// Only units not yet expired at this time.
    pub unexpired_at: Option<NaiveDateTime>,
    /// Only units expired at this time: stored `expired`, or still in the bank past their expiry.
    pub expired_at: Option<NaiveDateTime>,
    /// Keyset: units after this (expires_at, id).
    pub after: Option<(NaiveDateTime, i64)>,
}

/// First-expiring first.
pub fn list(conn: &mut DbConn, f: &UnitFilter, limit: i64) -> QueryResult<Vec<Unit>> {
    let mut query = units::table
        .select(Unit::as_select())
        .order((units::expires_at.asc(), units::id.asc()))
        .limit(limit)
        .into_boxed();
    if let Some(statuses) = &f.statuses {
        query = match statuses.as_slice() {
            // PostgreSQL reads one status in index order; `= ANY($1)` would be scanned and sorted.
            [one] => query.filter(units::status.eq(one.clone())),
            _ => query.filter(units::status.eq_any(statuses.clone())),
        };
    }
    if let Some(abo) = &f.abo {
        query = query.filter(units::abo.eq(abo.clone()));
    }
    if let Some(rhd) = &f.rhd {
        query = query.filter(units::rhd.eq(rhd.clone()));
    }
    if let Some(before) = f.expires_before {
        query = query.filter(units::expires_at.lt(before));
    }
    if let Some(t) = f.unexpired_at {
        query = query.filter(units::expires_at.gt(t));
    }
    if let Some(t) = f.expired_at {
        query = query.filter(units::status.eq(UnitStatus::Expired).or(units::expires_at.le(t)));
    }
    if let Some((at, id)) = f.after {
        query = query.filter(
            units::expires_at
                .gt(at)
                .or(units::expires_at.eq(at).and(units::id.gt(id))),
        );
    }
    query.load(conn)
}

/// One contributing donation of a pool, with what the supplier says about it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = unit_pool_members)]
pub struct PoolMember {
    pub unit_id: i64,
    pub din: String,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub collected_at: Option<NaiveDateTime>,
}

pub fn insert_pool_members(conn: &mut DbConn, members: &[PoolMember]) -> QueryResult<()> {
    // One statement per member: multi-row inserts are not dispatched by MultiConnection.
    for m in members {
        diesel::insert_into(unit_pool_members::table)
            .values((
                unit_pool_members::unit_id.eq(m.unit_id),
                unit_pool_members::din.eq(&m.din),
                unit_pool_members::abo.eq(m.abo),
                unit_pool_members::rhd.eq(m.rhd),
                unit_pool_members::collected_at.eq(m.collected_at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The members of the given units, in the order they were recorded.
pub fn pool_members_of(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<PoolMember>> {
    unit_pool_members::table
        .filter(unit_pool_members::unit_id.eq_any(unit_ids))
        .order(unit_pool_members::id.asc())
        .select(PoolMember::as_select())
        .load(conn)
}

/// The pools a donation (by its DIN) went into.
pub fn pools_with_member(conn: &mut DbConn, din: &str) -> QueryResult<Vec<i64>> {
    unit_pool_members::table
        .filter(unit_pool_members::din.eq(din))
        .order(unit_pool_members::unit_id.asc())
        .select(unit_pool_members::unit_id)
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = unit_supply)]
pub struct Supply {
    pub unit_id: i64,
    pub rhd_pooled: bool,
    pub labelled_expires_at: Option<NaiveDateTime>,
}

pub fn insert_supply(conn: &mut DbConn, supply: &Supply) -> QueryResult<()> {
    diesel::insert_into(unit_supply::table).values(supply).execute(conn)?;
    Ok(())
}

pub fn supply_of(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<Supply>> {
    unit_supply::table
        .filter(unit_supply::unit_id.eq_any(unit_ids))
        .select(Supply::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = emergency_releases)]
pub struct EmergencyRelease {
    pub id: i64,
    pub unit_id: i64,
    pub request_id: i64,
    pub physician: String,
    pub acknowledged_at: NaiveDateTime,
    /// JSON array of the required markers still pending or missing at release.
    pub pending_markers: String,
    pub results_expected_at: NaiveDateTime,
    pub released_by: String,
    pub released_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = emergency_releases)]
pub struct NewEmergencyRelease<'a> {
    pub unit_id: i64,
    pub request_id: i64,
    pub physician: &'a str,
    pub acknowledged_at: NaiveDateTime,
    pub pending_markers: &'a str,
    pub results_expected_at: NaiveDateTime,
    pub released_by: &'a str,
    pub released_at: NaiveDateTime,
}

pub fn insert_emergency_release(conn: &mut DbConn, new: &NewEmergencyRelease<'_>) -> QueryResult<()> {
    diesel::insert_into(emergency_releases::table)
        .values(new)
        .execute(conn)?;
    Ok(())
}

/// Emergency releases of the given units, oldest first (the latest one binds the unit).
pub fn emergency_releases_of(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<EmergencyRelease>> {
    emergency_releases::table
        .filter(emergency_releases::unit_id.eq_any(unit_ids))
        .order(emergency_releases::id.asc())
        .select(EmergencyRelease::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = unit_tests)]
pub struct UnitTest {
    pub id: i64,
    pub unit_id: i64,
    pub marker: String,
    pub result: TestResult,
    pub recorded_at: NaiveDateTime,
    pub recorded_by: String,
}

pub fn insert_test(
    conn: &mut DbConn,
    unit_id: i64,
    marker: &str,
    result: &str,
    at: NaiveDateTime,
    by: &str,
) -> QueryResult<UnitTest> {
    let id: i64 = diesel::insert_into(unit_tests::table)
        .values((
            unit_tests::unit_id.eq(unit_id),
            unit_tests::marker.eq(marker),
            unit_tests::result.eq(result),
            unit_tests::recorded_at.eq(at),
            unit_tests::recorded_by.eq(by),
        ))
        .returning(unit_tests::id)
        .get_result(conn)?;
    unit_tests::table.find(id).select(UnitTest::as_select()).first(conn)
}

/// Every result of the given units, oldest first (the latest per marker is the one that counts).
pub fn tests_of_units(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<UnitTest>> {
    let query = unit_tests::table
        .order(unit_tests::id.asc())
        .select(UnitTest::as_select());
    match unit_ids {
        // One unit (a single view) as an equality: a statement diesel keeps prepared.
        [one] => query.filter(unit_tests::unit_id.eq(*one)).load(conn),
        _ => query.filter(unit_tests::unit_id.eq_any(unit_ids)).load(conn),
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = storage_readings)]
pub struct StorageReading {
    pub id: i64,
    pub unit_id: Option<i64>,
    pub temperature_c: f64,
    pub measured_at: NaiveDateTime,
    pub location: Option<String>,
    pub in_range: bool,
    pub recorded_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = storage_readings)]
pub struct NewStorageReading<'a> {
    pub unit_id: Option<i64>,
    pub temperature_c: f64,
    pub measured_at: NaiveDateTime,
    pub location: Option<&'a str>,
    pub in_range: bool,
    pub recorded_by: &'a str,
    pub created_at: NaiveDateTime,
}

pub fn insert_reading(conn: &mut DbConn, new: &NewStorageReading<'_>) -> QueryResult<StorageReading> {
    let id: i64 = diesel::insert_into(storage_readings::table)
        .values(new)
        .returning(storage_readings::id)
        .get_result(conn)?;
    storage_readings::table
        .find(id)
        .select(StorageReading::as_select())
        .first(conn)
}

/// Units still in the bank kept at `location`.
pub fn in_bank_at(conn: &mut DbConn, location: &str) -> QueryResult<Vec<Unit>> {
    units::table
        .filter(units::storage_location.eq(location))
        .filter(units::status.eq_any([UnitStatus::Quarantined, UnitStatus::Available, UnitStatus::Allocated]))
        .order(units::id.asc())
        .select(Unit::as_select())
        .load(conn)
}

/// The next sequence number for `fin` in `year`, in the caller's transaction: the row lock
/// taken by the increment serialises concurrent creations, and a rolled-back creation gives its
/// number back, so there are neither gaps nor duplicates.
pub fn next_din_sequence(conn: &mut DbConn, fin: &str, year: i32) -> QueryResult<i32> {
    // The same statement on both backends; diesel's upsert DSL is not dispatched by MultiConnection.
    diesel::sql_query("INSERT INTO din_sequences (fin, year, last_value) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING")
        .bind::<diesel::sql_types::Text, _>(fin)
        .bind::<diesel::sql_types::Integer, _>(year)
        .execute(conn)?;
    diesel::update(din_sequences::table.find((fin, year)))
        .set(din_sequences::last_value.eq(din_sequences::last_value + 1))
        .returning(din_sequences::last_value)
        .get_result(conn)
}

/// The donor's units still in the bank (quarantined, available or allocated), except one.
pub fn in_bank_of_donor(conn: &mut DbConn, donor_id: i64, except: i64) -> QueryResult<Vec<Unit>> {
    units::table
        .filter(units::donor_id.eq(donor_id))
        .filter(units::id.ne(except))
        .filter(units::status.eq_any([UnitStatus::Quarantined, UnitStatus::Available, UnitStatus::Allocated]))
        .order(units::id.asc())
        .select(Unit::as_select())
        .load(conn)
}

/// Every unit of the donor, in any status.
pub fn of_donor(conn: &mut DbConn, donor_id: i64) -> QueryResult<Vec<Unit>> {
    units::table
        .filter(units::donor_id.eq(donor_id))
        .order(units::id.asc())
        .select(Unit::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = unit_excursions)]
pub struct Excursion {
    pub id: i64,
    pub unit_id: i64,
    pub storage_reading_id: i64,
    pub temperature_c: f64,
    pub measured_at: NaiveDateTime,
    pub recorded_at: NaiveDateTime,
}

/// Records an out-of-range reading against a unit (once per reading and unit).
pub fn insert_excursion(
    conn: &mut DbConn,
    unit_id: i64,
    reading: &StorageReading,
    at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(unit_excursions::table)
        .values((
            unit_excursions::unit_id.eq(unit_id),
            unit_excursions::storage_reading_id.eq(reading.id),
            unit_excursions::temperature_c.eq(reading.temperature_c),
            unit_excursions::measured_at.eq(reading.measured_at),
            unit_excursions::recorded_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn excursions_of_units(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<Excursion>> {
    unit_excursions::table
        .filter(unit_excursions::unit_id.eq_any(unit_ids))
        .order(unit_excursions::id.asc())
        .select(Excursion::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = excursion_dispositions)]
pub struct Disposition {
    pub id: i64,
    pub unit_id: i64,
    pub through_excursion_id: i64,
    pub reason: String,
    pub decided_by: String,
    pub decided_at: NaiveDateTime,
}

pub fn insert_disposition(
    conn: &mut DbConn,
    unit_id: i64,
    through_excursion_id: i64,
    reason: &str,
    by: &str,
    at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(excursion_dispositions::table)
        .values((
            excursion_dispositions::unit_id.eq(unit_id),
            excursion_dispositions::through_excursion_id.eq(through_excursion_id),
            excursion_dispositions::reason.eq(reason),
            excursion_dispositions::decided_by.eq(by),
            excursion_dispositions::decided_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn dispositions_of_units(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<Disposition>> {
    excursion_dispositions::table
        .filter(excursion_dispositions::unit_id.eq_any(unit_ids))
        .order(excursion_dispositions::id.asc())
        .select(Disposition::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = unit_inspections)]
pub struct Inspection {
    pub id: i64,
    pub unit_id: i64,
    pub allocation_id: i64,
    pub acceptable: bool,
    pub notes: Option<String>,
    pub minutes_out_of_storage: i32,
    pub outcome: String,
    pub inspected_by: String,
    pub inspected_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = unit_inspections)]
pub struct NewInspection<'a> {
    pub unit_id: i64,
    pub allocation_id: i64,
    pub acceptable: bool,
    pub notes: Option<&'a str>,
    pub minutes_out_of_storage: i32,
    pub outcome: &'a str,
    pub inspected_by: &'a str,
    pub inspected_at: NaiveDateTime,
}

pub fn insert_inspection(conn: &mut DbConn, new: &NewInspection<'_>) -> QueryResult<Inspection> {
    let id: i64 = diesel::insert_into(unit_inspections::table)
        .values(new)
        .returning(unit_inspections::id)
        .get_result(conn)?;
    unit_inspections::table
        .find(id)
        .select(Inspection::as_select())
        .first(conn)
}

pub fn inspections_of_units(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<Inspection>> {
    unit_inspections::table
        .filter(unit_inspections::unit_id.eq_any(unit_ids))
        .order(unit_inspections::id.asc())
        .select(Inspection::as_select())
        .load(conn)
}

/// The FHIR search of units: every field ANDs; a list inside `dins` or `requests` ORs.
#[derive(Debug, Default, Clone)]
pub struct UnitSearch {
    /// Only units with an allocation that is not `cancelled` to a request of this hospital.
    pub hospital: Option<i64>,
    /// One OR-list of DINs per parameter given.
    pub dins: Vec<Vec<String>>,
    /// One OR-list of request ids per parameter given: units with an allocation that is not
    /// `cancelled` to one of them.
    pub requests: Vec<Vec<i64>>,
    /// Units in one of `statuses` and unexpired at the time (`in_ = true`), or the others.
    pub usable: Option<Usable>,
    /// `expires_at` in `[from, to)`.
    pub expires_from: Option<NaiveDateTime>,
    pub expires_to: Option<NaiveDateTime>,
}

#[derive(Debug, Clone)]
pub struct Usable {
    pub statuses: Vec<UnitStatus>,
    pub at: NaiveDateTime,
    pub in_: bool,
}

fn searched(s: &UnitSearch) -> units::BoxedQuery<'static, super::MultiBackend> {
    use super::schema::{allocations, requests};
    use crate::domain::requests::AllocationStatus;
    use diesel::dsl::exists;
    let mut query = units::table.into_boxed();
    if let Some(h) = s.hospital {
        query = query.filter(exists(
            allocations::table
                .filter(allocations::unit_id.eq(units::id))
                .filter(allocations::status.ne(AllocationStatus::Cancelled))
                .filter(
                    allocations::request_id
                        .eq_any(requests::table.filter(requests::hospital_id.eq(h)).select(requests::id)),
                ),
        ));
    }
    for dins in &s.dins {
        query = query.filter(units::din.eq_any(dins.clone()));
    }
    for ids in &s.requests {
        query = query.filter(exists(
            allocations::table
                .filter(allocations::unit_id.eq(units::id))
                .filter(allocations::status.ne(AllocationStatus::Cancelled))
                .filter(allocations::request_id.eq_any(ids.clone())),
        ));
    }
    if let Some(u) = &s.usable {
        query = if u.in_ {
            query.filter(units::status.eq_any(u.statuses.clone()).and(units::expires_at.gt(u.at)))
        } else {
            query.filter(units::status.ne_all(u.statuses.clone()).or(units::expires_at.le(u.at)))
        };
    }
    if let Some(from) = s.expires_from {
        query = query.filter(units::expires_at.ge(from));
    }
    if let Some(to) = s.expires_to {
        query = query.filter(units::expires_at.lt(to));
    }
    query
}

/// A page of a search, ascending by id after `after_id`.
pub fn search(conn: &mut DbConn, s: &UnitSearch, after_id: Option<i64>, limit: i64) -> QueryResult<Vec<Unit>> {
    let mut query = searched(s).order(units::id.asc()).limit(limit);
    if let Some(after) = after_id {
        query = query.filter(units::id.gt(after));
    }
    query.select(Unit::as_select()).load(conn)
}

/// How many units match in all pages.
pub fn search_count(conn: &mut DbConn, s: &UnitSearch) -> QueryResult<i64> {
    searched(s).count().get_result(conn)
}

/// The ids of the units with these DINs, as (id, din).
pub fn ids_of_dins(conn: &mut DbConn, dins: &[String]) -> QueryResult<Vec<(i64, String)>> {
    units::table
        .filter(units::din.eq_any(dins))
        .order(units::id.asc())
        .select((units::id, units::din))
        .load(conn)
}
