//! Apheresis collections and the stimulations given for them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::{collections, stimulations};
use crate::domain::scheduling::CollectionStatus;
use crate::domain::stimulation::DoseUnit;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = collections)]
pub struct Collection {
    pub id: i64,
    pub donor_id: i64,
    pub device_id: i64,
    pub request_id: Option<i64>,
    pub status: CollectionStatus,
    pub scheduled_start: NaiveDateTime,
    pub scheduled_end: NaiveDateTime,
    /// JSON array of agent names.
    pub planned_agents: String,
    pub started_at: Option<NaiveDateTime>,
    pub ended_at: Option<NaiveDateTime>,
    pub volume_processed_ml: Option<i32>,
    pub hes_used: Option<bool>,
    pub pre_count_wbc: Option<f64>,
    pub pre_count_anc: Option<f64>,
    pub abort_reason: Option<String>,
    /// JSON array of adverse events.
    pub adverse_events: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Red cells lost other than in the product (an aborted run's), recorded at its end.
    pub red_cell_loss_ml: Option<i32>,
    /// The red cells of the unit made from it, recorded when the unit is created.
    pub product_red_cell_ml: Option<f64>,
    /// Hydroxyethyl starch the donor received, recorded at its end.
    pub hes_volume_ml: Option<i32>,
}

/// Every mutable column; a transition loads the row, changes it and writes it back.
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = collections, treat_none_as_null = true)]
pub struct CollectionData {
    pub donor_id: i64,
    pub device_id: i64,
    pub request_id: Option<i64>,
    pub status: CollectionStatus,
    pub scheduled_start: NaiveDateTime,
    pub scheduled_end: NaiveDateTime,
    pub planned_agents: String,
    pub started_at: Option<NaiveDateTime>,
    pub ended_at: Option<NaiveDateTime>,
    pub volume_processed_ml: Option<i32>,
    pub hes_used: Option<bool>,
    pub pre_count_wbc: Option<f64>,
    pub pre_count_anc: Option<f64>,
    pub abort_reason: Option<String>,
    pub adverse_events: String,
    pub updated_at: NaiveDateTime,
    pub red_cell_loss_ml: Option<i32>,
    pub product_red_cell_ml: Option<f64>,
    pub hes_volume_ml: Option<i32>,
}

impl From<Collection> for CollectionData {
    fn from(c: Collection) -> Self {
        Self {
            donor_id: c.donor_id,
            device_id: c.device_id,
            request_id: c.request_id,
            status: c.status,
            scheduled_start: c.scheduled_start,
            scheduled_end: c.scheduled_end,
            planned_agents: c.planned_agents,
            started_at: c.started_at,
            ended_at: c.ended_at,
            volume_processed_ml: c.volume_processed_ml,
            hes_used: c.hes_used,
            pre_count_wbc: c.pre_count_wbc,
            pre_count_anc: c.pre_count_anc,
            abort_reason: c.abort_reason,
            adverse_events: c.adverse_events,
            updated_at: c.updated_at,
            red_cell_loss_ml: c.red_cell_loss_ml,
            product_red_cell_ml: c.product_red_cell_ml,
            hes_volume_ml: c.hes_volume_ml,
        }
    }
}

pub fn insert(conn: &mut DbConn, data: &CollectionData, created_at: NaiveDateTime) -> QueryResult<Collection> {
    let id: i64 = diesel::insert_into(collections::table)
        .values((data, collections::created_at.eq(created_at)))
        .returning(collections::id)
        .get_result(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn update(conn: &mut DbConn, id: i64, data: &CollectionData) -> QueryResult<Collection> {
    diesel::update(collections::table.find(id)).set(data).execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Collection>> {
    collections::table
        .find(id)
        .select(Collection::as_select())
        .first(conn)
        .optional()
}

/// Collections of every active donor (a join, for whole-register matching).
pub fn of_active_donors(conn: &mut DbConn) -> QueryResult<Vec<Collection>> {
    use super::schema::donors;
    collections::table
        .inner_join(donors::table)
        .filter(donors::active.eq(true))
        .order((collections::scheduled_start.asc(), collections::id.asc()))
        .select(Collection::as_select())
        .load(conn)
}

pub fn scheduled(conn: &mut DbConn) -> QueryResult<Vec<Collection>> {
    collections::table
        .filter(collections::status.eq(CollectionStatus::Scheduled))
        .order(collections::id.asc())
        .select(Collection::as_select())
        .load(conn)
}

pub fn of_donors(conn: &mut DbConn, donor_ids: &[i64]) -> QueryResult<Vec<Collection>> {
    collections::table
        .filter(collections::donor_id.eq_any(donor_ids))
        .order((collections::scheduled_start.asc(), collections::id.asc()))
        .select(Collection::as_select())
        .load(conn)
}

/// The device's collections planned to start between `from` and `to`, plus any procedure
/// running on it; the caller widens the window by the longest procedure and decides which of
/// them occupy the device when.
pub fn on_device_near(
    conn: &mut DbConn,
    device_id: i64,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> QueryResult<Vec<Collection>> {
    collections::table
        .filter(collections::device_id.eq(device_id))
        .filter(
            collections::status
                .eq(CollectionStatus::InProgress)
                .or(collections::scheduled_start
                    .gt(from)
                    .and(collections::scheduled_start.lt(to))),
        )
        .select(Collection::as_select())
        .load(conn)
}

#[derive(Debug, Default, Clone)]
pub struct CollectionFilter {
    pub status: Option<String>,
    pub donor_id: Option<i64>,
    pub device_id: Option<i64>,
    pub from: Option<NaiveDateTime>,
    pub to: Option<NaiveDateTime>,
    pub after_id: Option<i64>,
}

pub fn list(conn: &mut DbConn, f: &CollectionFilter, limit: i64) -> QueryResult<Vec<Collection>> {
    let mut query = collections::table
        .select(Collection::as_select())
        .order(collections::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(s) = &f.status {
        query = query.filter(collections::status.eq(s.clone()));
    }
    if let Some(d) = f.donor_id {
        query = query.filter(collections::donor_id.eq(d));
    }
    if let Some(d) = f.device_id {
        query = query.filter(collections::device_id.eq(d));
    }
    if let Some(from) = f.from {
        query = query.filter(collections::scheduled_start.ge(from));
    }
    if let Some(to) = f.to {
        query = query.filter(collections::scheduled_start.lt(to));
    }
    if let Some(after) = f.after_id {
        query = query.filter(collections::id.gt(after));
    }
    query.load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stimulations)]
pub struct Stimulation {
    pub id: i64,
    pub donor_id: i64,
    pub collection_id: Option<i64>,
    pub agent: String,
    pub dose: f64,
    pub dose_unit: DoseUnit,
    pub administered_at: NaiveDateTime,
    pub adverse_effects: Option<String>,
    pub recorded_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = stimulations)]
pub struct NewStimulation<'a> {
    pub donor_id: i64,
    pub collection_id: Option<i64>,
    pub agent: &'a str,
    pub dose: f64,
    pub dose_unit: DoseUnit,
    pub administered_at: NaiveDateTime,
    pub adverse_effects: Option<&'a str>,
    pub recorded_by: &'a str,
    pub created_at: NaiveDateTime,
}

pub fn insert_stimulation(conn: &mut DbConn, new: &NewStimulation<'_>) -> QueryResult<Stimulation> {
    let id: i64 = diesel::insert_into(stimulations::table)
        .values(new)
        .returning(stimulations::id)
        .get_result(conn)?;
    stimulations::table
        .find(id)
        .select(Stimulation::as_select())
        .first(conn)
}

pub fn stimulations_for_collection(conn: &mut DbConn, collection_id: i64) -> QueryResult<Vec<Stimulation>> {
    stimulations::table
        .filter(stimulations::collection_id.eq(collection_id))
        .order((stimulations::administered_at.asc(), stimulations::id.asc()))
        .select(Stimulation::as_select())
        .load(conn)
}

/// The stimulations given for any of these collections.
pub fn stimulations_for_collections(conn: &mut DbConn, collection_ids: &[i64]) -> QueryResult<Vec<Stimulation>> {
    stimulations::table
        .filter(stimulations::collection_id.eq_any(collection_ids))
        .order((stimulations::administered_at.asc(), stimulations::id.asc()))
        .select(Stimulation::as_select())
        .load(conn)
}

pub fn stimulations_of_donor(conn: &mut DbConn, donor_id: i64) -> QueryResult<Vec<Stimulation>> {
    stimulations::table
        .filter(stimulations::donor_id.eq(donor_id))
        .order((stimulations::administered_at.asc(), stimulations::id.asc()))
        .select(Stimulation::as_select())
        .load(conn)
}

/// One stimulation as the exposure rules read it.
#[derive(Debug, Clone, Queryable)]
pub struct GivenRow {
    pub donor_id: i64,
    pub collection_id: Option<i64>,
    pub agent: String,
    pub administered_at: NaiveDateTime,
}

/// The stimulations of these donors.
pub fn given_to_donors(conn: &mut DbConn, donor_ids: &[i64]) -> QueryResult<Vec<GivenRow>> {
    stimulations::table
        .filter(stimulations::donor_id.eq_any(donor_ids))
        .order((stimulations::administered_at.asc(), stimulations::id.asc()))
        .select((
            stimulations::donor_id,
            stimulations::collection_id,
            stimulations::agent,
            stimulations::administered_at,
        ))
        .load(conn)
}

/// The stimulations of every active donor (a join, for whole-register matching).
pub fn given_to_active_donors(conn: &mut DbConn) -> QueryResult<Vec<GivenRow>> {
    use super::schema::donors;
    stimulations::table
        .inner_join(donors::table)
        .filter(donors::active.eq(true))
        .order((stimulations::administered_at.asc(), stimulations::id.asc()))
        .select((
            stimulations::donor_id,
            stimulations::collection_id,
            stimulations::agent,
            stimulations::administered_at,
        ))
        .load(conn)
}

/// The collections `ids`, in id order.
pub fn find_many(conn: &mut DbConn, ids: &[i64]) -> QueryResult<Vec<Collection>> {
    collections::table
        .filter(collections::id.eq_any(ids))
        .order(collections::id.asc())
        .select(Collection::as_select())
        .load(conn)
}
