//! Alert instances. One condition raises one alert: the dedup key is unique.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::alerts;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = alerts)]
pub struct Alert {
    pub id: i64,
    pub kind: String,
    pub severity: String,
    pub status: String,
    pub dedup_key: String,
    pub entity_type: String,
    pub entity_id: String,
    pub message: String,
    pub details: String,
    pub created_at: NaiveDateTime,
    pub acknowledged_at: Option<NaiveDateTime>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<NaiveDateTime>,
}

#[derive(Debug)]
pub struct NewAlert<'a> {
    pub kind: &'a str,
    pub severity: &'a str,
    pub status: &'a str,
    pub dedup_key: &'a str,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    pub message: &'a str,
    pub details: String,
    pub created_at: NaiveDateTime,
}

/// Raises the alert unless one with the same key exists; returns it if it is new.
pub fn raise(conn: &mut DbConn, new: &NewAlert<'_>) -> QueryResult<Option<Alert>> {
    use diesel::sql_types::{Text, Timestamp};
    // The same statement on both backends; diesel's upsert DSL is not dispatched by MultiConnection.
    let inserted = diesel::sql_query(
        "INSERT INTO alerts (kind, severity, status, dedup_key, entity_type, entity_id, message, details, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind::<Text, _>(new.kind)
    .bind::<Text, _>(new.severity)
    .bind::<Text, _>(new.status)
    .bind::<Text, _>(new.dedup_key)
    .bind::<Text, _>(new.entity_type)
    .bind::<Text, _>(new.entity_id)
    .bind::<Text, _>(new.message)
    .bind::<Text, _>(&new.details)
    .bind::<Timestamp, _>(new.created_at)
    .execute(conn)?;
    if inserted == 0 {
        return Ok(None);
    }
    alerts::table
        .filter(alerts::dedup_key.eq(new.dedup_key))
        .select(Alert::as_select())
        .first(conn)
        .optional()
}

pub fn list(
    conn: &mut DbConn,
    status: Option<&str>,
    kind: Option<&str>,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Alert>> {
    let mut query = alerts::table
        .select(Alert::as_select())
        .order(alerts::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(s) = status {
        query = query.filter(alerts::status.eq(s.to_owned()));
    }
    if let Some(k) = kind {
        query = query.filter(alerts::kind.eq(k.to_owned()));
    }
    if let Some(after) = after_id {
        query = query.filter(alerts::id.gt(after));
    }
    query.load(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Alert>> {
    alerts::table.find(id).select(Alert::as_select()).first(conn).optional()
}

/// Acknowledges an open alert; false when it was not open.
pub fn acknowledge(conn: &mut DbConn, id: i64, at: NaiveDateTime, by: &str) -> QueryResult<bool> {
    let n = diesel::update(alerts::table.find(id).filter(alerts::status.eq("open")))
        .set((
            alerts::status.eq("acknowledged"),
            alerts::acknowledged_at.eq(at),
            alerts::acknowledged_by.eq(by),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// Which of `keys` an alert already has (raised, acknowledged or resolved).
pub fn existing_keys(conn: &mut DbConn, keys: &[&str]) -> QueryResult<Vec<String>> {
    let mut found = Vec::new();
    // In slices: SQLite caps the number of bound values in one statement.
    for chunk in keys.chunks(1_000) {
        found.extend(
            alerts::table
                .filter(alerts::dedup_key.eq_any(chunk))
                .select(alerts::dedup_key)
                .load::<String>(conn)?,
        );
    }
    Ok(found)
}

/// Alerts not yet resolved, of the given kinds.
pub fn unresolved(conn: &mut DbConn, kinds: &[&str]) -> QueryResult<Vec<Alert>> {
    alerts::table
        .filter(alerts::status.ne("resolved"))
        .filter(alerts::kind.eq_any(kinds))
        .select(Alert::as_select())
        .load(conn)
}

/// Resolves an alert whose condition cleared; false when already resolved.
pub fn resolve(conn: &mut DbConn, id: i64, at: NaiveDateTime) -> QueryResult<bool> {
    let n = diesel::update(alerts::table.find(id).filter(alerts::status.ne("resolved")))
        .set((alerts::status.eq("resolved"), alerts::resolved_at.eq(at)))
        .execute(conn)?;
    Ok(n == 1)
}

pub fn list_newest_id(conn: &mut DbConn) -> QueryResult<Option<i64>> {
    alerts::table.select(diesel::dsl::max(alerts::id)).first(conn)
}
