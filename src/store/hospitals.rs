//! Hospital organisations (the consignees that request and receive units).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::DbConn;
use super::schema::hospitals;

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = hospitals)]
pub struct Hospital {
    pub id: i64,
    pub name: String,
    pub code: String,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The system the hospital's MRNs belong to (FHIR `Patient.identifier.system`).
    pub mrn_system: Option<String>,
    /// The system the hospital numbers its orders in (FHIR `ServiceRequest.identifier.system`).
    pub order_system: Option<String>,
}

impl Hospital {
    /// The MRN system: the hospital's own, or granulo's default for it.
    pub fn mrn_system(&self) -> String {
        self.mrn_system
            .clone()
            .unwrap_or_else(|| format!("urn:granulo:hospital:{}:mrn", self.code))
    }

    /// The order-number system: the hospital's own, or granulo's default for it.
    pub fn order_system(&self) -> String {
        self.order_system
            .clone()
            .unwrap_or_else(|| format!("urn:granulo:hospital:{}:order", self.code))
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = hospitals)]
pub struct NewHospital<'a> {
    pub name: &'a str,
    pub code: &'a str,
    pub active: bool,
    pub mrn_system: Option<&'a str>,
    pub order_system: Option<&'a str>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConn, new: &NewHospital<'_>) -> QueryResult<Hospital> {
    // RETURNING of a whole row is not dispatched by MultiConnection; the id is.
    let id: i64 = diesel::insert_into(hospitals::table)
        .values(new)
        .returning(hospitals::id)
        .get_result(conn)?;
    hospitals::table.find(id).select(Hospital::as_select()).first(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Hospital>> {
    hospitals::table
        .find(id)
        .select(Hospital::as_select())
        .first(conn)
        .optional()
}

/// True when the hospital exists and is active.
pub fn is_active(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    Ok(find(conn, id)?.is_some_and(|h| h.active))
}

pub fn find_by_code(conn: &mut DbConn, code: &str) -> QueryResult<Option<Hospital>> {
    hospitals::table
        .filter(hospitals::code.eq(code))
        .select(Hospital::as_select())
        .first(conn)
        .optional()
}

pub fn list(conn: &mut DbConn, after_id: Option<i64>, limit: i64) -> QueryResult<Vec<Hospital>> {
    let mut query = hospitals::table
        .select(Hospital::as_select())
        .order(hospitals::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after_id {
        query = query.filter(hospitals::id.gt(after));
    }
    query.load(conn)
}

/// Every hospital (a short table: identifier systems are matched against it).
pub fn all(conn: &mut DbConn) -> QueryResult<Vec<Hospital>> {
    hospitals::table
        .select(Hospital::as_select())
        .order(hospitals::id.asc())
        .load(conn)
}

/// Sets the hospital's identifier systems (`None`: granulo's default).
pub fn set_systems(
    conn: &mut DbConn,
    id: i64,
    mrn_system: Option<&str>,
    order_system: Option<&str>,
    at: NaiveDateTime,
) -> QueryResult<Hospital> {
    diesel::update(hospitals::table.find(id))
        .set((
            hospitals::mrn_system.eq(mrn_system),
            hospitals::order_system.eq(order_system),
            hospitals::updated_at.eq(at),
        ))
        .execute(conn)?;
    hospitals::table.find(id).select(Hospital::as_select()).first(conn)
}
