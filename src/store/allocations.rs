//! Allocations of units to requests, and crossmatches.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::{
    allocation_decisions, allocation_sign_offs, allocations, crossmatch_resolutions, crossmatches, requests, units,
};
use crate::domain::compatibility::Stage;
use crate::domain::compatibility::{CrossmatchKind, CrossmatchResult};
use crate::domain::requests::{AllocationStatus, RequestStatus};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = allocations)]
pub struct Allocation {
    pub id: i64,
    pub request_id: i64,
    pub unit_id: i64,
    pub status: AllocationStatus,
    pub anti_d_task: bool,
    pub allocated_by: String,
    pub allocated_at: NaiveDateTime,
    pub issued_at: Option<NaiveDateTime>,
    pub issued_by: Option<String>,
    pub scanned_din: Option<String>,
    pub ended_at: Option<NaiveDateTime>,
    pub end_reason: Option<String>,
    pub transfusion_started_at: Option<NaiveDateTime>,
    pub transfusion_ended_at: Option<NaiveDateTime>,
    pub reaction: Option<String>,
    pub pre_anc_per_ul: Option<i32>,
    pub post_anc_per_ul: Option<i32>,
    pub anc_increment_per_ul: Option<i32>,
    pub outcome_recorded_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = allocations, treat_none_as_null = true)]
pub struct AllocationData {
    pub request_id: i64,
    pub unit_id: i64,
    pub status: AllocationStatus,
    pub anti_d_task: bool,
    pub allocated_by: String,
    pub allocated_at: NaiveDateTime,
    pub issued_at: Option<NaiveDateTime>,
    pub issued_by: Option<String>,
    pub scanned_din: Option<String>,
    pub ended_at: Option<NaiveDateTime>,
    pub end_reason: Option<String>,
    pub transfusion_started_at: Option<NaiveDateTime>,
    pub transfusion_ended_at: Option<NaiveDateTime>,
    pub reaction: Option<String>,
    pub pre_anc_per_ul: Option<i32>,
    pub post_anc_per_ul: Option<i32>,
    pub anc_increment_per_ul: Option<i32>,
    pub outcome_recorded_by: Option<String>,
    pub updated_at: NaiveDateTime,
}

impl From<Allocation> for AllocationData {
    fn from(a: Allocation) -> Self {
        Self {
            request_id: a.request_id,
            unit_id: a.unit_id,
            status: a.status,
            anti_d_task: a.anti_d_task,
            allocated_by: a.allocated_by,
            allocated_at: a.allocated_at,
            issued_at: a.issued_at,
            issued_by: a.issued_by,
            scanned_din: a.scanned_din,
            ended_at: a.ended_at,
            end_reason: a.end_reason,
            transfusion_started_at: a.transfusion_started_at,
            transfusion_ended_at: a.transfusion_ended_at,
            reaction: a.reaction,
            pre_anc_per_ul: a.pre_anc_per_ul,
            post_anc_per_ul: a.post_anc_per_ul,
            anc_increment_per_ul: a.anc_increment_per_ul,
            outcome_recorded_by: a.outcome_recorded_by,
            updated_at: a.updated_at,
        }
    }
}

pub fn insert(conn: &mut DbConn, data: &AllocationData, created_at: NaiveDateTime) -> QueryResult<Allocation> {
    let id: i64 = diesel::insert_into(allocations::table)
        .values((data, allocations::created_at.eq(created_at)))
        .returning(allocations::id)
        .get_result(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn update(conn: &mut DbConn, id: i64, data: &AllocationData) -> QueryResult<Allocation> {
    diesel::update(allocations::table.find(id)).set(data).execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Allocation>> {
    allocations::table
        .find(id)
        .select(Allocation::as_select())
        .first(conn)
        .optional()
}

/// Takes the allocation's row lock (PostgreSQL); false if absent.
pub fn lock(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    let n = diesel::update(allocations::table.find(id))
        .set(allocations::updated_at.eq(allocations::updated_at))
        .execute(conn)?;
    Ok(n == 1)
}

/// Allocations holding a unit (allocated or issued).
pub fn active(conn: &mut DbConn) -> QueryResult<Vec<Allocation>> {
    allocations::table
        .filter(allocations::status.eq_any([AllocationStatus::Allocated, AllocationStatus::Issued]))
        .order(allocations::id.asc())
        .select(Allocation::as_select())
        .load(conn)
}

/// Active allocations with their request's patient and need time, in one query.
pub fn active_with_requests(conn: &mut DbConn) -> QueryResult<Vec<(Allocation, i64, NaiveDateTime)>> {
    allocations::table
        .inner_join(requests::table)
        .filter(allocations::status.eq_any([AllocationStatus::Allocated, AllocationStatus::Issued]))
        .order(allocations::id.asc())
        .select((Allocation::as_select(), requests::patient_id, requests::needed_by))
        .load(conn)
}

/// The request id of every transfused allocation of an open request.
pub fn transfused_of_open_requests(conn: &mut DbConn) -> QueryResult<Vec<i64>> {
    allocations::table
        .inner_join(requests::table)
        .filter(requests::status.eq(RequestStatus::Open))
        .filter(allocations::status.eq(AllocationStatus::Transfused))
        .select(allocations::request_id)
        .load(conn)
}

pub fn of_request(conn: &mut DbConn, request_id: i64) -> QueryResult<Vec<Allocation>> {
    allocations::table
        .filter(allocations::request_id.eq(request_id))
        .order(allocations::id.asc())
        .select(Allocation::as_select())
        .load(conn)
}

/// `(unit id, allocation status, unit granulocyte count)` of each allocation of the request, in
/// one read (the day's dose adds up the active ones).
pub fn units_of_request(conn: &mut DbConn, request_id: i64) -> QueryResult<Vec<(i64, AllocationStatus, f64)>> {
    allocations::table
        .inner_join(units::table)
        .filter(allocations::request_id.eq(request_id))
        .order(allocations::id.asc())
        .select((allocations::unit_id, allocations::status, units::granulocyte_count))
        .load(conn)
}

pub fn of_unit(conn: &mut DbConn, unit_id: i64) -> QueryResult<Vec<Allocation>> {
    allocations::table
        .filter(allocations::unit_id.eq(unit_id))
        .order(allocations::id.asc())
        .select(Allocation::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = crossmatches)]
pub struct Crossmatch {
    pub id: i64,
    pub unit_id: i64,
    pub sample_id: i64,
    pub result: CrossmatchResult,
    pub method: String,
    pub performed_by: String,
    pub performed_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub kind: CrossmatchKind,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = crossmatches)]
pub struct NewCrossmatch<'a> {
    pub unit_id: i64,
    pub sample_id: i64,
    pub result: CrossmatchResult,
    pub method: &'a str,
    pub performed_by: &'a str,
    pub performed_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub kind: CrossmatchKind,
}

pub fn insert_crossmatch(conn: &mut DbConn, new: &NewCrossmatch<'_>) -> QueryResult<Crossmatch> {
    let id: i64 = diesel::insert_into(crossmatches::table)
        .values(new)
        .returning(crossmatches::id)
        .get_result(conn)?;
    crossmatches::table.find(id).select(Crossmatch::as_select()).first(conn)
}

/// The unit's crossmatches against any of `sample_ids`, newest first.
pub fn crossmatches_for(conn: &mut DbConn, unit_id: i64, sample_ids: &[i64]) -> QueryResult<Vec<Crossmatch>> {
    crossmatches::table
        .filter(crossmatches::unit_id.eq(unit_id))
        .filter(crossmatches::sample_id.eq_any(sample_ids))
        .order(crossmatches::id.desc())
        .select(Crossmatch::as_select())
        .load(conn)
}

/// Every crossmatch against any of `sample_ids`, newest first.
pub fn crossmatches_for_samples(conn: &mut DbConn, sample_ids: &[i64]) -> QueryResult<Vec<Crossmatch>> {
    crossmatches::table
        .filter(crossmatches::sample_id.eq_any(sample_ids))
        .order(crossmatches::id.desc())
        .select(Crossmatch::as_select())
        .load(conn)
}

/// Every crossmatch of the given units, newest first.
pub fn crossmatches_of_units(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<Crossmatch>> {
    crossmatches::table
        .filter(crossmatches::unit_id.eq_any(unit_ids))
        .order(crossmatches::id.desc())
        .select(Crossmatch::as_select())
        .load(conn)
}

pub fn crossmatches_of_unit(conn: &mut DbConn, unit_id: i64) -> QueryResult<Vec<Crossmatch>> {
    crossmatches::table
        .filter(crossmatches::unit_id.eq(unit_id))
        .order(crossmatches::id.asc())
        .select(Crossmatch::as_select())
        .load(conn)
}

pub fn find_crossmatch(conn: &mut DbConn, id: i64) -> QueryResult<Option<Crossmatch>> {
    crossmatches::table
        .find(id)
        .select(Crossmatch::as_select())
        .first(conn)
        .optional()
}

/// Takes the crossmatch's row lock before it is resolved: an append-only row is never
/// updated, so the lock is taken by reading it for update on PostgreSQL.
pub fn lock_crossmatch(conn: &mut DbConn, id: i64) -> QueryResult<()> {
    if let DbConn::Postgres(pg) = conn {
        diesel::sql_query("SELECT id FROM crossmatches WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::BigInt, _>(id)
            .execute(pg)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = crossmatch_resolutions)]
pub struct Resolution {
    pub id: i64,
    pub crossmatch_id: i64,
    pub reason: String,
    pub resolved_by: String,
    pub resolved_at: NaiveDateTime,
}

pub fn insert_resolution(
    conn: &mut DbConn,
    crossmatch_id: i64,
    reason: &str,
    by: &str,
    at: NaiveDateTime,
) -> QueryResult<Resolution> {
    let id: i64 = diesel::insert_into(crossmatch_resolutions::table)
        .values((
            crossmatch_resolutions::crossmatch_id.eq(crossmatch_id),
            crossmatch_resolutions::reason.eq(reason),
            crossmatch_resolutions::resolved_by.eq(by),
            crossmatch_resolutions::resolved_at.eq(at),
        ))
        .returning(crossmatch_resolutions::id)
        .get_result(conn)?;
    crossmatch_resolutions::table
        .find(id)
        .select(Resolution::as_select())
        .first(conn)
}

pub fn resolutions_of(conn: &mut DbConn, crossmatch_ids: &[i64]) -> QueryResult<Vec<Resolution>> {
    crossmatch_resolutions::table
        .filter(crossmatch_resolutions::crossmatch_id.eq_any(crossmatch_ids))
        .order(crossmatch_resolutions::id.asc())
        .select(Resolution::as_select())
        .load(conn)
}

/// Crossmatches by unit and/or sample, oldest first.
pub fn crossmatches_where(
    conn: &mut DbConn,
    unit_id: Option<i64>,
    sample_ids: Option<&[i64]>,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Crossmatch>> {
    let mut query = crossmatches::table
        .order(crossmatches::id.asc())
        .limit(limit)
        .select(Crossmatch::as_select())
        .into_boxed();
    if let Some(u) = unit_id {
        query = query.filter(crossmatches::unit_id.eq(u));
    }
    if let Some(ids) = sample_ids {
        query = query.filter(crossmatches::sample_id.eq_any(ids.to_vec()));
    }
    if let Some(after) = after_id {
        query = query.filter(crossmatches::id.gt(after));
    }
    query.load(conn)
}

/// Allocations of the given units (any status), oldest first.
pub fn of_units(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<Allocation>> {
    allocations::table
        .filter(allocations::unit_id.eq_any(unit_ids))
        .order(allocations::id.asc())
        .select(Allocation::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = allocation_decisions)]
pub struct Decision {
    pub id: i64,
    pub allocation_id: i64,
    pub stage: Stage,
    /// JSON: the findings accepted at this stage, with their tiers.
    pub findings: String,
    /// JSON: the codes acknowledged.
    pub acknowledged: String,
    pub authorised_by: Option<String>,
    pub authoriser_role: Option<String>,
    pub authorised_at: Option<NaiveDateTime>,
    pub authorisation_reason: Option<String>,
    pub recorded_by: String,
    pub recorded_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = allocation_decisions)]
pub struct NewDecision<'a> {
    pub allocation_id: i64,
    pub stage: Stage,
    pub findings: &'a str,
    pub acknowledged: &'a str,
    pub authorised_by: Option<&'a str>,
    pub authoriser_role: Option<&'a str>,
    pub authorised_at: Option<NaiveDateTime>,
    pub authorisation_reason: Option<&'a str>,
    pub recorded_by: &'a str,
    pub recorded_at: NaiveDateTime,
}

pub fn insert_decision(conn: &mut DbConn, new: &NewDecision<'_>) -> QueryResult<Decision> {
    let id: i64 = diesel::insert_into(allocation_decisions::table)
        .values(new)
        .returning(allocation_decisions::id)
        .get_result(conn)?;
    allocation_decisions::table
        .find(id)
        .select(Decision::as_select())
        .first(conn)
}

pub fn decisions_of(conn: &mut DbConn, allocation_ids: &[i64]) -> QueryResult<Vec<Decision>> {
    allocation_decisions::table
        .filter(allocation_decisions::allocation_id.eq_any(allocation_ids))
        .order(allocation_decisions::id.asc())
        .select(Decision::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = allocation_sign_offs)]
pub struct SignOff {
    pub id: i64,
    pub allocation_id: i64,
    pub through_decision_id: i64,
    pub comment: String,
    pub signed_off_by: String,
    pub signed_off_at: NaiveDateTime,
}

pub fn insert_sign_off(
    conn: &mut DbConn,
    allocation_id: i64,
    through_decision_id: i64,
    comment: &str,
    by: &str,
    at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(allocation_sign_offs::table)
        .values((
            allocation_sign_offs::allocation_id.eq(allocation_id),
            allocation_sign_offs::through_decision_id.eq(through_decision_id),
            allocation_sign_offs::comment.eq(comment),
            allocation_sign_offs::signed_off_by.eq(by),
            allocation_sign_offs::signed_off_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn sign_offs_of(conn: &mut DbConn, allocation_ids: &[i64]) -> QueryResult<Vec<SignOff>> {
    allocation_sign_offs::table
        .filter(allocation_sign_offs::allocation_id.eq_any(allocation_ids))
        .order(allocation_sign_offs::id.asc())
        .select(SignOff::as_select())
        .load(conn)
}

/// Allocations with a recorded authorisation, oldest first; with `signed_off`, only those whose
/// every authorisation is (or is not) covered by a medical director's sign-off.
pub fn authorised(
    conn: &mut DbConn,
    signed_off: Option<bool>,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<i64>> {
    use diesel::dsl::{exists, not};
    let unsigned = allocation_decisions::table
        .filter(allocation_decisions::authorised_by.is_not_null())
        .filter(not(exists(
            allocation_sign_offs::table
                .filter(allocation_sign_offs::allocation_id.eq(allocation_decisions::allocation_id))
                .filter(allocation_sign_offs::through_decision_id.ge(allocation_decisions::id)),
        )));
    let mut query = allocations::table
        .filter(exists(
            allocation_decisions::table
                .filter(allocation_decisions::allocation_id.eq(allocations::id))
                .filter(allocation_decisions::authorised_by.is_not_null()),
        ))
        .order(allocations::id.asc())
        .limit(limit)
        .select(allocations::id)
        .into_boxed();
    match signed_off {
        Some(false) => {
            query = query.filter(exists(
                unsigned.filter(allocation_decisions::allocation_id.eq(allocations::id)),
            ))
        }
        Some(true) => {
            query = query.filter(not(exists(
                unsigned.filter(allocation_decisions::allocation_id.eq(allocations::id)),
            )))
        }
        None => {}
    }
    if let Some(after) = after_id {
        query = query.filter(allocations::id.gt(after));
    }
    query.load(conn)
}

/// An allocation that is not `cancelled`, with its request's hospital.
#[derive(Debug, Clone, Queryable)]
pub struct UnitRequest {
    pub allocation_id: i64,
    pub unit_id: i64,
    pub request_id: i64,
    pub hospital_id: i64,
    pub updated_at: NaiveDateTime,
}

/// The allocations of the given units that are not `cancelled`, oldest first, in one query.
pub fn uncancelled_of_units(conn: &mut DbConn, unit_ids: &[i64]) -> QueryResult<Vec<UnitRequest>> {
    allocations::table
        .inner_join(requests::table)
        .filter(allocations::unit_id.eq_any(unit_ids))
        .filter(allocations::status.ne(AllocationStatus::Cancelled))
        .order(allocations::id.asc())
        .select((
            allocations::id,
            allocations::unit_id,
            allocations::request_id,
            requests::hospital_id,
            allocations::updated_at,
        ))
        .load(conn)
}

/// The FHIR search of allocations: every field ANDs; each inner list ORs.
#[derive(Debug, Default, Clone)]
pub struct AllocationSearch {
    /// Only allocations to this hospital's requests.
    pub hospital: Option<i64>,
    pub patients: Vec<Vec<i64>>,
    pub requests: Vec<Vec<i64>>,
    pub statuses: Vec<Vec<AllocationStatus>>,
}

fn searched(s: &AllocationSearch) -> allocations::BoxedQuery<'static, super::MultiBackend> {
    let mut query = allocations::table.into_boxed();
    if let Some(h) = s.hospital {
        query = query.filter(
            allocations::request_id.eq_any(requests::table.filter(requests::hospital_id.eq(h)).select(requests::id)),
        );
    }
    for ids in &s.patients {
        query = query.filter(
            allocations::request_id.eq_any(
                requests::table
                    .filter(requests::patient_id.eq_any(ids.clone()))
                    .select(requests::id),
            ),
        );
    }
    for ids in &s.requests {
        query = query.filter(allocations::request_id.eq_any(ids.clone()));
    }
    for statuses in &s.statuses {
        query = query.filter(allocations::status.eq_any(statuses.clone()));
    }
    query
}

/// A page of a search, ascending by id after `after_id`.
pub fn search(
    conn: &mut DbConn,
    s: &AllocationSearch,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Allocation>> {
    let mut query = searched(s).order(allocations::id.asc()).limit(limit);
    if let Some(after) = after_id {
        query = query.filter(allocations::id.gt(after));
    }
    query.select(Allocation::as_select()).load(conn)
}

/// How many allocations match in all pages.
pub fn search_count(conn: &mut DbConn, s: &AllocationSearch) -> QueryResult<i64> {
    searched(s).count().get_result(conn)
}
