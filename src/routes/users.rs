//! User accounts (admin only).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::utc;
use crate::accounts::{self, AccountPatch, NewAccount};
use crate::auth::{AuthUser, Role, password};
use crate::error::{ApiError, ApiResult, Validator};
use crate::extract::JsonBody;
use crate::input::{decode_cursor, double_option, page_limit, parse_id};
use crate::state::{AppState, cpu};
use crate::store::users::User;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "j.smith", "password": "correct horse battery staple", "role": "technologist"}))]
pub struct CreateUserRequest {
    /// 3–64 characters of a-z 0-9 . _ @ - (stored lower-case).
    #[schema(pattern = r"^[^\S\x1c-\x1f]*[A-Za-z0-9._@-]{3,64}[^\S\x1c-\x1f]*$")]
    pub username: String,
    /// At least 12 characters, not containing the username.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
    pub role: Role,
    /// Required for role `hospital`, refused for staff roles.
    #[schema(minimum = 1)]
    pub hospital_id: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "medical_director"}))]
pub struct UpdateUserRequest {
    pub role: Option<Role>,
    /// `null` removes the hospital (when changing to a staff role).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub hospital_id: Option<Option<i64>>,
    /// `false` deactivates the account and ends its sessions.
    pub active: Option<bool>,
    /// Sets a new password and ends the account's sessions.
    #[schema(min_length = 12, max_length = 256)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub id: i64,
    #[schema(pattern = r"^[^\S\x1c-\x1f]*[A-Za-z0-9._@-]{3,64}[^\S\x1c-\x1f]*$")]
    pub username: String,
    pub role: Role,
    #[schema(minimum = 1)]
    pub hospital_id: Option<i64>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::integral::optional")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

impl TryFrom<User> for UserResponse {
    type Error = ApiError;

    fn try_from(u: User) -> ApiResult<Self> {
        Ok(Self {
            id: u.id,
            role: u.role.parse().map_err(ApiError::internal)?,
            username: u.username,
            hospital_id: u.hospital_id,
            active: u.active,
            created_at: utc(u.created_at),
            updated_at: utc(u.updated_at),
        })
    }
}

/// Create an account.
#[utoipa::path(
    post, path = "/api/v1/users", operation_id = "create_user", tag = "users", security(("bearer" = [])), request_body = CreateUserRequest,
    responses(
        (status = 201, description = "the account created", body = UserResponse),
        (status = 409, description = "`username_taken`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_hospital`, `hospital_inactive`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<CreateUserRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let req = body.into_inner();
    let mut v = Validator::new();
    let username = match accounts::normalize_username(&req.username) {
        Ok(u) => u,
        Err(m) => {
            v.push("username", m);
            String::new()
        }
    };
    if let Some(m) = password::policy_violation(&req.password, &username) {
        v.push("password", m);
    }
    v.finish()?;
    let password_hash = cpu(move || password::hash(&req.password))
        .await?
        .map_err(ApiError::internal)?;
    let actor = caller.actor();
    let account = NewAccount {
        username,
        password_hash,
        role: req.role,
        hospital_id: req.hospital_id,
    };
    let user = state
        .write(move |conn| accounts::create_user(conn, &actor, &account))
        .await?;
    Ok(HttpResponse::Created().json(UserResponse::try_from(user)?))
}

/// List accounts.
#[utoipa::path(
    get, path = "/api/v1/users", operation_id = "list_users", tag = "users", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "a page of accounts", body = UserList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let limit = page_limit(query.limit)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let (rows, next_cursor) = state.db(move |conn| accounts::list_users(conn, after, limit)).await?;
    let items = rows.into_iter().map(UserResponse::try_from).collect::<ApiResult<_>>()?;
    Ok(HttpResponse::Ok().json(UserList { items, next_cursor }))
}

/// One account.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", operation_id = "get_user", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the account", body = UserResponse))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let id = parse_id(&id, "user")?;
    let user = state.db(move |conn| accounts::user(conn, id)).await?;
    Ok(HttpResponse::Ok().json(UserResponse::try_from(user)?))
}

/// Change role, hospital, password or active flag.
#[utoipa::path(
    patch, path = "/api/v1/users/{id}", operation_id = "update_user", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "the account, changed", body = UserResponse),
        (status = 409, description = "`last_admin`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_hospital`, `hospital_inactive`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<UpdateUserRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let id = parse_id(&id, "user")?;
    let req = body.into_inner();
    let password_hash = match req.password {
        Some(pw) => {
            let name = state.db(move |conn| accounts::user(conn, id)).await?.username;
            if let Some(m) = password::policy_violation(&pw, &name) {
                return Err(ApiError::field("password", m));
            }
            Some(cpu(move || password::hash(&pw)).await?.map_err(ApiError::internal)?)
        }
        None => None,
    };
    let patch = AccountPatch {
        role: req.role,
        hospital_id: req.hospital_id,
        active: req.active,
        password_hash,
    };
    let actor = caller.actor();
    let user = state
        .write(move |conn| accounts::update_user(conn, &actor, id, patch))
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::try_from(user)?))
}
