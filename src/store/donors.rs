//! Donors, their deferrals and their donation history from other programmes.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use super::DbConn;
use super::schema::{deferrals, donations, donors, stimulations};
use crate::domain::blood::{Abo, Cmv, DonorType, Rhd, Sex};
use crate::domain::eligibility::ProcedureKind;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = donors)]
pub struct Donor {
    pub id: i64,
    pub donor_number: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    /// JSON `{a, b, c, drb1}`.
    pub hla: String,
    pub donor_type: DonorType,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// JSON `[{agent, item}]`: the policy checklist items the donor is flagged on.
    pub contraindications: String,
    pub active: bool,
    pub search_text: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Every column but the id, number and creation time: used to insert and to update.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = donors, treat_none_as_null = true)]
pub struct DonorData {
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: Sex,
    pub weight_kg: f64,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub hla: String,
    pub donor_type: DonorType,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub contraindications: String,
    pub active: bool,
    pub search_text: String,
    pub updated_at: NaiveDateTime,
}

/// Inserts the donor and assigns its number (`GD` and the zero-padded id).
pub fn insert(conn: &mut DbConn, data: &DonorData, created_at: NaiveDateTime) -> QueryResult<Donor> {
    // A unique placeholder until the id is known, replaced in the same transaction.
    let placeholder = format!("pending-{}", uuid::Uuid::new_v4().simple());
    let id: i64 = diesel::insert_into(donors::table)
        .values((
            data,
            donors::donor_number.eq(&placeholder),
            donors::created_at.eq(created_at),
        ))
        .returning(donors::id)
        .get_result(conn)?;
    let number = donor_number(id);
    let search_text = format!("{} {}", data.search_text.trim_end(), number.to_lowercase());
    diesel::update(donors::table.find(id))
        .set((donors::donor_number.eq(number), donors::search_text.eq(search_text)))
        .execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn donor_number(id: i64) -> String {
    format!("GD{id:06}")
}

/// The columns matching needs, for every active donor (one light query).
#[derive(Debug, Clone, Queryable)]
pub struct DonorMatchRow {
    pub id: i64,
    pub donor_number: String,
    pub date_of_birth: NaiveDate,
    pub active: bool,
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    pub hla: String,
    pub contraindications: String,
}

pub fn active_for_matching(conn: &mut DbConn) -> QueryResult<Vec<DonorMatchRow>> {
    matching_rows(conn, None)
}

/// Those of `ids` that are active, as [`active_for_matching`] reads them.
pub fn matching_rows_of(conn: &mut DbConn, ids: &[i64]) -> QueryResult<Vec<DonorMatchRow>> {
    matching_rows(conn, Some(ids))
}

fn matching_rows(conn: &mut DbConn, ids: Option<&[i64]>) -> QueryResult<Vec<DonorMatchRow>> {
    let mut query = donors::table
        .filter(donors::active.eq(true))
        .order(donors::id.asc())
        .select((
            donors::id,
            donors::donor_number,
            donors::date_of_birth,
            donors::active,
            donors::abo,
            donors::rhd,
            donors::cmv,
            donors::hla,
            donors::contraindications,
        ))
        .into_boxed();
    if let Some(ids) = ids {
        query = query.filter(donors::id.eq_any(ids));
    }
    query.load(conn)
}

pub fn find_many(conn: &mut DbConn, ids: &[i64]) -> QueryResult<Vec<Donor>> {
    donors::table
        .filter(donors::id.eq_any(ids))
        .select(Donor::as_select())
        .load(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Donor>> {
    donors::table.find(id).select(Donor::as_select()).first(conn).optional()
}

/// Takes the donor's row lock (PostgreSQL) so that concurrent bookings for one donor are
/// decided one after the other; SQLite write transactions are serial already. False if absent.
pub fn lock(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    let n = diesel::update(donors::table.find(id))
        .set(donors::updated_at.eq(donors::updated_at))
        .execute(conn)?;
    Ok(n == 1)
}

pub fn update(conn: &mut DbConn, id: i64, data: &DonorData) -> QueryResult<Donor> {
    diesel::update(donors::table.find(id)).set(data).execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

#[derive(Debug, Default, Clone)]
pub struct DonorFilter {
    pub abo: Option<String>,
    pub rhd: Option<String>,
    pub cmv: Option<String>,
    pub active: Option<bool>,
    /// Lower-case text matched anywhere in the name or donor number.
    pub q: Option<String>,
    pub after_id: Option<i64>,
}

pub fn list(conn: &mut DbConn, filter: &DonorFilter, limit: i64) -> QueryResult<Vec<Donor>> {
    let mut query = donors::table
        .select(Donor::as_select())
        .order(donors::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(abo) = &filter.abo {
        query = query.filter(donors::abo.eq(abo.clone()));
    }
    if let Some(rhd) = &filter.rhd {
        query = query.filter(donors::rhd.eq(rhd.clone()));
    }
    if let Some(cmv) = &filter.cmv {
        query = query.filter(donors::cmv.eq(cmv.clone()));
    }
    if let Some(active) = filter.active {
        query = query.filter(donors::active.eq(active));
    }
    if let Some(q) = &filter.q {
        let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        query = query.filter(donors::search_text.like(format!("%{escaped}%")).escape('\\'));
    }
    if let Some(after) = filter.after_id {
        query = query.filter(donors::id.gt(after));
    }
    query.load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = deferrals)]
pub struct DeferralRow {
    pub id: i64,
    pub donor_id: i64,
    pub reason: String,
    pub permanent: bool,
    pub starts_at: NaiveDateTime,
    pub until: Option<NaiveDateTime>,
    pub set_by: String,
    pub created_at: NaiveDateTime,
    /// Raised by a reactive result on this unit (pending confirmatory testing).
    pub source_unit_id: Option<i64>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = deferrals)]
pub struct NewDeferral<'a> {
    pub donor_id: i64,
    pub reason: &'a str,
    pub permanent: bool,
    pub starts_at: NaiveDateTime,
    pub until: Option<NaiveDateTime>,
    pub set_by: &'a str,
    pub created_at: NaiveDateTime,
    pub source_unit_id: Option<i64>,
}

pub fn insert_deferral(conn: &mut DbConn, new: &NewDeferral<'_>) -> QueryResult<DeferralRow> {
    let id: i64 = diesel::insert_into(deferrals::table)
        .values(new)
        .returning(deferrals::id)
        .get_result(conn)?;
    deferrals::table.find(id).select(DeferralRow::as_select()).first(conn)
}

/// Deferrals of every active donor (a join, for whole-register matching).
pub fn deferrals_of_active(conn: &mut DbConn) -> QueryResult<Vec<DeferralRow>> {
    deferrals::table
        .inner_join(donors::table)
        .filter(donors::active.eq(true))
        .order(deferrals::id.asc())
        .select(DeferralRow::as_select())
        .load(conn)
}

pub fn deferrals_of(conn: &mut DbConn, donor_ids: &[i64]) -> QueryResult<Vec<DeferralRow>> {
    deferrals::table
        .filter(deferrals::donor_id.eq_any(donor_ids))
        .order(deferrals::id.asc())
        .select(DeferralRow::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = donations)]
pub struct DonationRow {
    pub id: i64,
    pub donor_id: i64,
    pub kind: ProcedureKind,
    pub donated_at: NaiveDateTime,
    pub red_cell_loss_ml: Option<i32>,
    pub red_cells_returned: bool,
    pub site: Option<String>,
    pub recorded_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = donations)]
pub struct NewDonation<'a> {
    pub donor_id: i64,
    pub kind: ProcedureKind,
    pub donated_at: NaiveDateTime,
    pub red_cell_loss_ml: Option<i32>,
    pub red_cells_returned: bool,
    pub site: Option<&'a str>,
    pub recorded_by: &'a str,
    pub created_at: NaiveDateTime,
}

pub fn insert_donation(conn: &mut DbConn, new: &NewDonation<'_>) -> QueryResult<DonationRow> {
    let id: i64 = diesel::insert_into(donations::table)
        .values(new)
        .returning(donations::id)
        .get_result(conn)?;
    donations::table.find(id).select(DonationRow::as_select()).first(conn)
}

/// Donations of every active donor (a join, for whole-register matching).
pub fn donations_of_active(conn: &mut DbConn) -> QueryResult<Vec<DonationRow>> {
    donations::table
        .inner_join(donors::table)
        .filter(donors::active.eq(true))
        .order((donations::donated_at.asc(), donations::id.asc()))
        .select(DonationRow::as_select())
        .load(conn)
}

pub fn donations_of(conn: &mut DbConn, donor_ids: &[i64]) -> QueryResult<Vec<DonationRow>> {
    donations::table
        .filter(donations::donor_id.eq_any(donor_ids))
        .order((donations::donated_at.asc(), donations::id.asc()))
        .select(DonationRow::as_select())
        .load(conn)
}

/// Cumulative stimulation exposure of one donor to one agent.
#[derive(Debug, Clone, Queryable)]
pub struct ExposureRow {
    pub donor_id: i64,
    pub agent: String,
    pub count: i64,
    pub last_administered_at: Option<NaiveDateTime>,
}

/// The latest stimulation of every active donor who had one.
pub fn last_stimulation_of_active(conn: &mut DbConn) -> QueryResult<Vec<(i64, Option<NaiveDateTime>)>> {
    stimulations::table
        .inner_join(donors::table)
        .filter(donors::active.eq(true))
        .group_by(stimulations::donor_id)
        .select((stimulations::donor_id, diesel::dsl::max(stimulations::administered_at)))
        .load(conn)
}

/// Exposure per donor and agent, ordered by donor then agent.
pub fn exposure_of(conn: &mut DbConn, donor_ids: &[i64]) -> QueryResult<Vec<ExposureRow>> {
    stimulations::table
        .filter(stimulations::donor_id.eq_any(donor_ids))
        .group_by((stimulations::donor_id, stimulations::agent))
        .select((
            stimulations::donor_id,
            stimulations::agent,
            diesel::dsl::count_star(),
            diesel::dsl::max(stimulations::administered_at),
        ))
        .order((stimulations::donor_id.asc(), stimulations::agent.asc()))
        .load(conn)
}
