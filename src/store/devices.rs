//! Apheresis devices: collection slots are booked per device.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::devices;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = devices)]
pub struct Device {
    pub id: i64,
    pub name: String,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConn, name: &str, at: NaiveDateTime) -> QueryResult<Device> {
    let id: i64 = diesel::insert_into(devices::table)
        .values((
            devices::name.eq(name),
            devices::active.eq(true),
            devices::created_at.eq(at),
            devices::updated_at.eq(at),
        ))
        .returning(devices::id)
        .get_result(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Device>> {
    devices::table
        .find(id)
        .select(Device::as_select())
        .first(conn)
        .optional()
}

/// Takes the device's row lock (PostgreSQL) so overlapping bookings are decided in turn.
pub fn lock(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    let n = diesel::update(devices::table.find(id))
        .set(devices::updated_at.eq(devices::updated_at))
        .execute(conn)?;
    Ok(n == 1)
}

pub fn set_active(conn: &mut DbConn, id: i64, active: bool, at: NaiveDateTime) -> QueryResult<Device> {
    diesel::update(devices::table.find(id))
        .set((devices::active.eq(active), devices::updated_at.eq(at)))
        .execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn list(conn: &mut DbConn, after_id: Option<i64>, limit: i64) -> QueryResult<Vec<Device>> {
    let mut query = devices::table
        .select(Device::as_select())
        .order(devices::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after_id {
        query = query.filter(devices::id.gt(after));
    }
    query.load(conn)
}
