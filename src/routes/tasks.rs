//! Tasks: follow-up work with a due time and an owner (staff).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AuthUser, Role};
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::input::{decode_cursor, page_limit, parse_id};
use crate::services::tasks::{self as work, CompleteInput, TaskKind, TaskStatus, TaskView};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub kind: Option<TaskKind>,
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    pub items: Vec<TaskView>,
    pub next_cursor: Option<String>,
}

/// Follow-up tasks (anti-D prophylaxis, look-forward, emergency-release follow-up), oldest first.
#[utoipa::path(
    get, path = "/api/v1/tasks", operation_id = "list_tasks", tag = "tasks", security(("bearer" = [])), params(TaskQuery),
    responses((status = 200, description = "a page of tasks", body = TaskList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<TaskQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let q = query.into_inner();
    let request = work::ListRequest {
        status: q.status,
        kind: q.kind,
        after_id: decode_cursor(q.cursor.as_deref())?,
        limit: page_limit(q.limit)?,
    };
    let (items, next_cursor) = state.db(move |conn| work::list(conn, request)).await?;
    Ok(HttpResponse::Ok().json(TaskList { items, next_cursor }))
}

/// Complete a task with a note (a medical director's task only by a medical director).
#[utoipa::path(
    post, path = "/api/v1/tasks/{id}/complete", operation_id = "complete_task", tag = "tasks", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = CompleteInput,
    responses(
        (status = 200, description = "the task, completed", body = TaskView),
        (status = 409, description = "`task_not_open`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<CompleteInput>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "task")?;
    let director = caller.role == Role::MedicalDirector;
    let (actor, input) = (caller.actor(), body.into_inner());
    let done = state
        .write(move |conn| work::complete(conn, &actor, director, id, input))
        .await?;
    Ok(HttpResponse::Ok().json(done))
}
