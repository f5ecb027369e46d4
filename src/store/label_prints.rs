//! Printed labels (`label_prints`): one row per print, oldest first by id.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::label_prints;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = label_prints)]
pub struct LabelPrint {
    pub id: i64,
    pub unit_id: i64,
    pub version: i32,
    pub format: String,
    pub dpi: Option<i32>,
    pub content_sha256: String,
    pub printed_by: String,
    pub printed_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = label_prints)]
pub struct NewLabelPrint<'a> {
    pub unit_id: i64,
    pub version: i32,
    pub format: &'a str,
    pub dpi: Option<i32>,
    pub content_sha256: &'a str,
    pub printed_by: &'a str,
    pub printed_at: NaiveDateTime,
}

/// The unit's most recent print.
pub fn latest(conn: &mut DbConn, unit_id: i64) -> QueryResult<Option<LabelPrint>> {
    label_prints::table
        .filter(label_prints::unit_id.eq(unit_id))
        .order(label_prints::id.desc())
        .select(LabelPrint::as_select())
        .first(conn)
        .optional()
}

/// Every print of the unit, oldest first.
pub fn list(conn: &mut DbConn, unit_id: i64) -> QueryResult<Vec<LabelPrint>> {
    label_prints::table
        .filter(label_prints::unit_id.eq(unit_id))
        .order(label_prints::id.asc())
        .select(LabelPrint::as_select())
        .load(conn)
}

pub fn insert(conn: &mut DbConn, row: &NewLabelPrint<'_>) -> QueryResult<LabelPrint> {
    let id: i64 = diesel::insert_into(label_prints::table)
        .values(row)
        .returning(label_prints::id)
        .get_result(conn)?;
    label_prints::table.find(id).select(LabelPrint::as_select()).first(conn)
}
