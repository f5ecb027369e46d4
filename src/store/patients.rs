//! Patients (per hospital) and their crossmatch samples.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use super::DbConn;
use super::schema::{patients, sample_typings, samples};
use crate::domain::blood::{Abo, Cmv, Rhd, Sex};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = patients)]
pub struct Patient {
    pub id: i64,
    pub hospital_id: i64,
    pub mrn: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    /// JSON array of antibody specificities.
    pub hla_antibodies: String,
    pub granulocyte_antibodies: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// As the record states it; `None`: derived from sex and age.
    pub childbearing_potential_stated: Option<bool>,
}

#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = patients, treat_none_as_null = true)]
pub struct PatientData {
    pub hospital_id: i64,
    pub mrn: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub childbearing_potential_stated: Option<bool>,
    pub hla_antibodies: String,
    pub granulocyte_antibodies: bool,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConn, data: &PatientData, created_at: NaiveDateTime) -> QueryResult<Patient> {
    let id: i64 = diesel::insert_into(patients::table)
        .values((data, patients::created_at.eq(created_at)))
        .returning(patients::id)
        .get_result(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn update(conn: &mut DbConn, id: i64, data: &PatientData) -> QueryResult<Patient> {
    diesel::update(patients::table.find(id)).set(data).execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Patient>> {
    patients::table
        .find(id)
        .select(Patient::as_select())
        .first(conn)
        .optional()
}

/// The patients with these ids (those that exist), by id.
pub fn find_many(conn: &mut DbConn, ids: &[i64]) -> QueryResult<Vec<Patient>> {
    patients::table
        .filter(patients::id.eq_any(ids))
        .order(patients::id.asc())
        .select(Patient::as_select())
        .load(conn)
}

pub fn list(
    conn: &mut DbConn,
    hospital_id: Option<i64>,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Patient>> {
    let filter = PatientFilter {
        hospital_ids: hospital_id.map(|h| vec![h]),
        mrn: None,
    };
    search(conn, &filter, after_id, limit)
}

/// Which patients a search matches: in these hospitals (all when `None`), with this MRN.
#[derive(Debug, Clone, Default)]
pub struct PatientFilter {
    pub hospital_ids: Option<Vec<i64>>,
    pub mrn: Option<String>,
}

/// A page of the patients `filter` matches, ascending id after `after_id`.
pub fn search(
    conn: &mut DbConn,
    filter: &PatientFilter,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Patient>> {
    let mut query = patients::table
        .select(Patient::as_select())
        .order(patients::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(ids) = &filter.hospital_ids {
        query = query.filter(patients::hospital_id.eq_any(ids.clone()));
    }
    if let Some(mrn) = &filter.mrn {
        query = query.filter(patients::mrn.eq(mrn.clone()));
    }
    if let Some(after) = after_id {
        query = query.filter(patients::id.gt(after));
    }
    query.load(conn)
}

/// How many patients `filter` matches.
pub fn count(conn: &mut DbConn, filter: &PatientFilter) -> QueryResult<i64> {
    let mut query = patients::table.count().into_boxed();
    if let Some(ids) = &filter.hospital_ids {
        query = query.filter(patients::hospital_id.eq_any(ids.clone()));
    }
    if let Some(mrn) = &filter.mrn {
        query = query.filter(patients::mrn.eq(mrn.clone()));
    }
    query.get_result(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = samples)]
pub struct Sample {
    pub id: i64,
    pub patient_id: i64,
    pub drawn_at: NaiveDateTime,
    pub transfused_or_pregnant_within_3_months: bool,
    pub valid_until: NaiveDateTime,
    pub recorded_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = samples)]
pub struct NewSample<'a> {
    pub patient_id: i64,
    pub drawn_at: NaiveDateTime,
    pub transfused_or_pregnant_within_3_months: bool,
    pub valid_until: NaiveDateTime,
    pub recorded_by: &'a str,
    pub created_at: NaiveDateTime,
}

pub fn insert_sample(conn: &mut DbConn, new: &NewSample<'_>) -> QueryResult<Sample> {
    let id: i64 = diesel::insert_into(samples::table)
        .values(new)
        .returning(samples::id)
        .get_result(conn)?;
    samples::table.find(id).select(Sample::as_select()).first(conn)
}

pub fn find_sample(conn: &mut DbConn, id: i64) -> QueryResult<Option<Sample>> {
    samples::table
        .find(id)
        .select(Sample::as_select())
        .first(conn)
        .optional()
}

pub fn samples_of(conn: &mut DbConn, patient_id: i64) -> QueryResult<Vec<Sample>> {
    samples::table
        .filter(samples::patient_id.eq(patient_id))
        .order(samples::id.asc())
        .select(Sample::as_select())
        .load(conn)
}

/// The samples of several patients.
pub fn samples_of_patients(conn: &mut DbConn, patient_ids: &[i64]) -> QueryResult<Vec<Sample>> {
    samples::table
        .filter(samples::patient_id.eq_any(patient_ids))
        .order(samples::id.asc())
        .select(Sample::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sample_typings)]
pub struct TypingRow {
    pub id: i64,
    pub sample_id: i64,
    pub patient_id: i64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub typed_by: String,
    pub typed_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = sample_typings)]
pub struct NewTyping<'a> {
    pub sample_id: i64,
    pub patient_id: i64,
    pub abo: &'a str,
    pub rhd: &'a str,
    pub typed_by: &'a str,
    pub typed_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

pub fn insert_typing(conn: &mut DbConn, new: &NewTyping<'_>) -> QueryResult<TypingRow> {
    let id: i64 = diesel::insert_into(sample_typings::table)
        .values(new)
        .returning(sample_typings::id)
        .get_result(conn)?;
    sample_typings::table
        .find(id)
        .select(TypingRow::as_select())
        .first(conn)
}

/// Every typing of the given patients with the draw time of its sample, oldest first.
pub fn typings_of(conn: &mut DbConn, patient_ids: &[i64]) -> QueryResult<Vec<(TypingRow, NaiveDateTime)>> {
    sample_typings::table
        .inner_join(samples::table)
        .filter(sample_typings::patient_id.eq_any(patient_ids))
        .order(sample_typings::id.asc())
        .select((TypingRow::as_select(), samples::drawn_at))
        .load(conn)
}
