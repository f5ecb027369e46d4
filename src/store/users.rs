//! Staff and hospital user accounts.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::DbConn;
use super::schema::users;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub hospital_id: Option<i64>,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// What the audit trail records of a user (never the password hash).
#[derive(Debug, Serialize)]
pub struct UserAuditView<'a> {
    pub id: i64,
    pub username: &'a str,
    pub role: &'a str,
    pub hospital_id: Option<i64>,
    pub active: bool,
}

impl User {
    pub fn audit_view(&self) -> serde_json::Value {
        serde_json::to_value(UserAuditView {
            id: self.id,
            username: &self.username,
            role: &self.role,
            hospital_id: self.hospital_id,
            active: self.active,
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub hospital_id: Option<i64>,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub password_hash: Option<String>,
    pub role: Option<String>,
    pub hospital_id: Option<Option<i64>>,
    pub active: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn insert(conn: &mut DbConn, new: &NewUser<'_>) -> QueryResult<User> {
    // RETURNING of a whole row is not dispatched by MultiConnection; the id is.
    let id: i64 = diesel::insert_into(users::table)
        .values(new)
        .returning(users::id)
        .get_result(conn)?;
    users::table.find(id).select(User::as_select()).first(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<User>> {
    users::table.find(id).select(User::as_select()).first(conn).optional()
}

pub fn find_by_username(conn: &mut DbConn, username: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::username.eq(username))
        .select(User::as_select())
        .first(conn)
        .optional()
}

pub fn list(conn: &mut DbConn, after_id: Option<i64>, limit: i64) -> QueryResult<Vec<User>> {
    let mut query = users::table
        .select(User::as_select())
        .order(users::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after_id {
        query = query.filter(users::id.gt(after));
    }
    query.load(conn)
}

pub fn update(conn: &mut DbConn, id: i64, changes: &UserChanges) -> QueryResult<User> {
    diesel::update(users::table.find(id)).set(changes).execute(conn)?;
    users::table.find(id).select(User::as_select()).first(conn)
}

pub fn count(conn: &mut DbConn) -> QueryResult<i64> {
    users::table.count().get_result(conn)
}

pub fn count_active_admins(conn: &mut DbConn) -> QueryResult<i64> {
    users::table
        .filter(users::role.eq("admin"))
        .filter(users::active.eq(true))
        .count()
        .get_result(conn)
}
