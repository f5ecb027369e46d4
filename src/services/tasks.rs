//! Tasks: follow-up work with a due time, an owner role and a "done" — anti-D prophylaxis after
//! an RhD-positive unit reaches an RhD-negative female of childbearing potential, the
//! look-forward after a reactive result, and the follow-up of an emergency release. Overdue
//! open tasks raise `task.overdue` (the alert scan).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{from_stored_json, stored, to_json, to_value, utc};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::input::Text;
use crate::store::audit::{self, Actor, Change};
use crate::store::tasks::{self as rows, NewTask, Task, TaskFilter};
use crate::store::{self, DbConn};

pub use crate::domain::tasks::{OwnerRole, TaskKind, TaskStatus};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskView {
    pub id: i64,
    pub kind: TaskKind,
    pub status: TaskStatus,
    /// What it is about: `allocation`, `unit`, …
    pub subject_type: String,
    pub subject_id: i64,
    pub title: String,
    /// Who and what it concerns (patient, hospital, unit, pending markers…).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The role that owns it (a `medical_director` task is completed by a medical director).
    pub owner_role: OwnerRole,
    pub due_at: DateTime<Utc>,
    /// Open and past its due time.
    pub overdue: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub completed_by: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

pub fn view(t: Task, now: DateTime<Utc>) -> ApiResult<TaskView> {
    let status = t.status;
    let due_at = utc(t.due_at);
    Ok(TaskView {
        kind: t.kind,
        owner_role: t.owner_role,
        details: from_stored_json("task details", &t.details)?,
        overdue: status == TaskStatus::Open && now > due_at,
        status,
        id: t.id,
        subject_type: t.subject_type,
        subject_id: t.subject_id,
        title: t.title,
        due_at,
        created_by: t.created_by,
        created_at: utc(t.created_at),
        completed_by: t.completed_by,
        completed_at: t.completed_at.map(utc),
        note: t.note,
    })
}

/// A task to create.
pub struct NewTaskSpec<'a> {
    pub kind: TaskKind,
    pub subject_type: &'a str,
    pub subject_id: i64,
    pub title: String,
    pub details: serde_json::Value,
    pub owner_role: OwnerRole,
    pub due_at: DateTime<Utc>,
}

/// Creates the task (once per kind and subject) with its audit row; `None` if it existed.
pub fn create(conn: &mut DbConn, actor: &Actor, spec: NewTaskSpec<'_>) -> ApiResult<Option<TaskView>> {
    let now = utc(store::now());
    let key = format!("{}:{}:{}", spec.kind, spec.subject_type, spec.subject_id);
    let Some(row) = rows::insert(
        conn,
        &NewTask {
            kind: spec.kind,
            status: TaskStatus::Open,
            subject_type: spec.subject_type,
            subject_id: spec.subject_id,
            title: &spec.title,
            details: &to_json(&spec.details)?,
            owner_role: spec.owner_role,
            due_at: stored(spec.due_at),
            dedup_key: &key,
            created_by: &actor.name,
            created_at: stored(now),
        },
    )?
    else {
        return Ok(None);
    };
    let created = view(row, now)?;
    audit::append(
        conn,
        actor,
        Change::created("task.create", "task", created.id, to_value(&created)?),
    )?;
    Ok(Some(created))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// Named apart from the collection's `CompleteInput`, which would otherwise replace it in the
// OpenAPI components.
#[schema(as = TaskCompleteInput, example = json!({"note": "500 IU anti-D given on ward 4B at 14:20"}))]
pub struct CompleteInput {
    /// What was done, 1–500 characters.
    pub note: Text<1, 500>,
}

fn finish(conn: &mut DbConn, actor: &Actor, t: Task, note: &str) -> ApiResult<TaskView> {
    let now = utc(store::now());
    let id = t.id;
    let before = view(t, now)?;
    if !rows::complete(conn, id, &actor.name, stored(now), Some(note))? {
        return Err(ApiError::new(
            ErrorCode::TaskNotOpen,
            format!("task {id} is {}; only an open task is completed", before.status),
        ));
    }
    let after = view(rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("task"))?, now)?;
    audit::append(
        conn,
        actor,
        Change::updated("task.complete", "task", id, to_value(&before)?, to_value(&after)?),
    )?;
    Ok(after)
}

/// A staff member completes a task with a note; a task owned by the medical director role only
/// by a medical director (`director`; 403 otherwise).
pub fn complete(
    conn: &mut DbConn,
    actor: &Actor,
    director: bool,
    id: i64,
    input: CompleteInput,
) -> ApiResult<TaskView> {
    let note = input.note.as_str();
    let t = rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("task"))?;
    rows::lock(conn, id)?;
    if t.owner_role == OwnerRole::MedicalDirector && !director {
        return Err(ApiError::forbidden("this task is a medical director's to complete"));
    }
    finish(conn, actor, t, note)
}

/// Completes the open tasks of a kind about a subject (the service closing its own follow-up).
pub fn complete_about(
    conn: &mut DbConn,
    actor: &Actor,
    kind: TaskKind,
    subject_type: &str,
    subject_id: i64,
    note: &str,
) -> ApiResult<Vec<TaskView>> {
    let mut done = Vec::new();
    for t in rows::open_about(conn, kind.as_str(), subject_type, subject_id)? {
        rows::lock(conn, t.id)?;
        done.push(finish(conn, actor, t, note)?);
    }
    Ok(done)
}

pub struct ListRequest {
    pub status: Option<TaskStatus>,
    pub kind: Option<TaskKind>,
    pub after_id: Option<i64>,
    pub limit: i64,
}

pub fn list(conn: &mut DbConn, req: ListRequest) -> ApiResult<(Vec<TaskView>, Option<String>)> {
    let now = utc(store::now());
    let found = rows::list(
        conn,
        &TaskFilter {
            status: req.status.map(TaskStatus::as_str),
            kind: req.kind.map(TaskKind::as_str),
            after_id: req.after_id,
            limit: req.limit + 1,
        },
    )?;
    let (found, next) = crate::input::paginate(found, req.limit, |t| t.id);
    let items = found.into_iter().map(|t| view(t, now)).collect::<ApiResult<Vec<_>>>()?;
    Ok((items, next))
}

/// Hours from `from`, from the policy.
pub fn due(from: DateTime<Utc>, hours: u32) -> DateTime<Utc> {
    from + TimeDelta::hours(i64::from(hours))
}
