//! Tasks: follow-up work with a due time, an owner role and a "done".

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::tasks;
use crate::domain::tasks::{OwnerRole, TaskKind, TaskStatus};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub id: i64,
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub subject_type: String,
    pub subject_id: i64,
    pub title: String,
    /// JSON object.
    pub details: String,
    pub owner_role: OwnerRole,
    pub due_at: NaiveDateTime,
    pub dedup_key: String,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub completed_by: Option<String>,
    pub completed_at: Option<NaiveDateTime>,
    pub note: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = tasks)]
pub struct NewTask<'a> {
    pub kind: TaskKind,
    pub status: TaskStatus,
    pub subject_type: &'a str,
    pub subject_id: i64,
    pub title: &'a str,
    pub details: &'a str,
    pub owner_role: OwnerRole,
    pub due_at: NaiveDateTime,
    pub dedup_key: &'a str,
    pub created_by: &'a str,
    pub created_at: NaiveDateTime,
}

/// Creates the task unless one with the same key exists; returns it when new.
pub fn insert(conn: &mut DbConn, new: &NewTask<'_>) -> QueryResult<Option<Task>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    // The same statement on both backends; diesel's upsert DSL is not dispatched by MultiConnection.
    let inserted = diesel::sql_query(
        "INSERT INTO tasks (kind, status, subject_type, subject_id, title, details, owner_role, due_at, dedup_key, \
         created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind::<Text, _>(new.kind)
    .bind::<Text, _>(new.status)
    .bind::<Text, _>(new.subject_type)
    .bind::<BigInt, _>(new.subject_id)
    .bind::<Text, _>(new.title)
    .bind::<Text, _>(new.details)
    .bind::<Text, _>(new.owner_role)
    .bind::<Timestamp, _>(new.due_at)
    .bind::<Text, _>(new.dedup_key)
    .bind::<Text, _>(new.created_by)
    .bind::<Timestamp, _>(new.created_at)
    .execute(conn)?;
    if inserted == 0 {
        return Ok(None);
    }
    tasks::table
        .filter(tasks::dedup_key.eq(new.dedup_key))
        .select(Task::as_select())
        .first(conn)
        .optional()
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Task>> {
    tasks::table.find(id).select(Task::as_select()).first(conn).optional()
}

/// Takes the task's row lock (PostgreSQL) before it changes; false if absent.
pub fn lock(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    let n = diesel::update(tasks::table.find(id))
        .set(tasks::status.eq(tasks::status))
        .execute(conn)?;
    Ok(n == 1)
}

/// Marks an open task done; false when it was not open.
pub fn complete(conn: &mut DbConn, id: i64, by: &str, at: NaiveDateTime, note: Option<&str>) -> QueryResult<bool> {
    let n = diesel::update(tasks::table.find(id).filter(tasks::status.eq(TaskStatus::Open)))
        .set((
            tasks::status.eq(TaskStatus::Done),
            tasks::completed_by.eq(by),
            tasks::completed_at.eq(at),
            tasks::note.eq(note),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

pub struct TaskFilter<'a> {
    pub status: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub after_id: Option<i64>,
    pub limit: i64,
}

/// Oldest first.
pub fn list(conn: &mut DbConn, f: &TaskFilter<'_>) -> QueryResult<Vec<Task>> {
    let mut query = tasks::table
        .order(tasks::id.asc())
        .limit(f.limit)
        .select(Task::as_select())
        .into_boxed();
    if let Some(status) = f.status {
        query = query.filter(tasks::status.eq(status.to_owned()));
    }
    if let Some(kind) = f.kind {
        query = query.filter(tasks::kind.eq(kind.to_owned()));
    }
    if let Some(after) = f.after_id {
        query = query.filter(tasks::id.gt(after));
    }
    query.load(conn)
}

/// Open tasks of a kind about one subject.
pub fn open_about(conn: &mut DbConn, kind: &str, subject_type: &str, subject_id: i64) -> QueryResult<Vec<Task>> {
    tasks::table
        .filter(tasks::kind.eq(kind))
        .filter(tasks::subject_type.eq(subject_type))
        .filter(tasks::subject_id.eq(subject_id))
        .filter(tasks::status.eq(TaskStatus::Open))
        .order(tasks::id.asc())
        .select(Task::as_select())
        .load(conn)
}

/// Every open task, for the overdue scan.
pub fn open(conn: &mut DbConn) -> QueryResult<Vec<Task>> {
    tasks::table
        .filter(tasks::status.eq(TaskStatus::Open))
        .order(tasks::id.asc())
        .select(Task::as_select())
        .load(conn)
}
