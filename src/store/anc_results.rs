//! Absolute neutrophil counts reported for a patient, optionally for one allocation: appended,
//! never changed.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::anc_results;
use crate::domain::outcome::AncStatus;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = anc_results)]
pub struct AncResult {
    pub id: i64,
    pub patient_id: i64,
    pub allocation_id: Option<i64>,
    pub anc_per_ul: i32,
    pub effective_at: NaiveDateTime,
    pub status: AncStatus,
    pub recorded_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = anc_results)]
pub struct NewAncResult<'a> {
    pub patient_id: i64,
    pub allocation_id: Option<i64>,
    pub anc_per_ul: i32,
    pub effective_at: NaiveDateTime,
    pub status: AncStatus,
    pub recorded_by: &'a str,
    pub created_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConn, new: &NewAncResult<'_>) -> QueryResult<AncResult> {
    let id: i64 = diesel::insert_into(anc_results::table)
        .values(new)
        .returning(anc_results::id)
        .get_result(conn)?;
    anc_results::table.find(id).select(AncResult::as_select()).first(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<AncResult>> {
    anc_results::table
        .find(id)
        .select(AncResult::as_select())
        .first(conn)
        .optional()
}

/// The counts of the given patients, in order of recording.
pub fn of_patients(conn: &mut DbConn, patient_ids: &[i64]) -> QueryResult<Vec<AncResult>> {
    anc_results::table
        .filter(anc_results::patient_id.eq_any(patient_ids))
        .order(anc_results::id.asc())
        .select(AncResult::as_select())
        .load(conn)
}

/// The counts reported for the given allocations, by time taken, then order of recording.
pub fn of_allocations(conn: &mut DbConn, allocation_ids: &[i64]) -> QueryResult<Vec<AncResult>> {
    anc_results::table
        .filter(anc_results::allocation_id.eq_any(allocation_ids))
        .order((anc_results::effective_at.asc(), anc_results::id.asc()))
        .select(AncResult::as_select())
        .load(conn)
}
