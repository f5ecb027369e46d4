//! Sign-in sessions and their rotating refresh tokens.
//!
//! A session is one sign-in (a token "family"). Access tokens carry the session id, so
//! revoking the session ends them at once; refresh tokens are stored only as SHA-256 hashes
//! and each may be spent once.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::{refresh_tokens, sessions, users};
use super::users::User;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub id: String,
    pub user_id: Option<i64>,
    pub api_client_id: Option<i64>,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_reason: Option<String>,
    /// SHA-256 (hex) of a console session's cookie; `None` for token sessions.
    pub cookie_hash: Option<String>,
    /// When a console session ends at the latest.
    pub expires_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub id: i64,
    pub session_id: String,
    pub token_hash: String,
    pub issued_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

pub fn create(
    conn: &mut DbConn,
    id: &str,
    user_id: Option<i64>,
    api_client_id: Option<i64>,
    at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(id),
            sessions::user_id.eq(user_id),
            sessions::api_client_id.eq(api_client_id),
            sessions::created_at.eq(at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Open a console session: a person's browser holds the cookie whose hash is stored.
pub fn create_console(
    conn: &mut DbConn,
    id: &str,
    user_id: i64,
    cookie_hash: &str,
    at: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(id),
            sessions::user_id.eq(Some(user_id)),
            sessions::created_at.eq(at),
            sessions::cookie_hash.eq(Some(cookie_hash)),
            sessions::expires_at.eq(Some(expires_at)),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The console session holding a cookie with this hash, and its user.
pub fn find_by_cookie_hash(conn: &mut DbConn, cookie_hash: &str) -> QueryResult<Option<(Session, Option<User>)>> {
    sessions::table
        .left_join(users::table.on(sessions::user_id.eq(users::id.nullable())))
        .filter(sessions::cookie_hash.eq(cookie_hash))
        .select((Session::as_select(), Option::<User>::as_select()))
        .first(conn)
        .optional()
}

pub fn find(conn: &mut DbConn, id: &str) -> QueryResult<Option<Session>> {
    sessions::table
        .find(id)
        .select(Session::as_select())
        .first(conn)
        .optional()
}

/// The session and, when it is a user's, that user.
pub fn find_with_user(conn: &mut DbConn, id: &str) -> QueryResult<Option<(Session, Option<User>)>> {
    sessions::table
        .left_join(users::table.on(sessions::user_id.eq(users::id.nullable())))
        .filter(sessions::id.eq(id))
        .select((Session::as_select(), Option::<User>::as_select()))
        .first(conn)
        .optional()
}

/// Revoke one session (no-op when already revoked).
pub fn revoke(conn: &mut DbConn, id: &str, reason: &str, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(sessions::table.find(id).filter(sessions::revoked_at.is_null()))
        .set((
            sessions::revoked_at.eq(Some(at)),
            sessions::revoked_reason.eq(Some(reason)),
        ))
        .execute(conn)
}

pub fn revoke_all_for_user(conn: &mut DbConn, user_id: i64, reason: &str, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(Some(at)),
        sessions::revoked_reason.eq(Some(reason)),
    ))
    .execute(conn)
}

pub fn revoke_all_for_client(
    conn: &mut DbConn,
    api_client_id: i64,
    reason: &str,
    at: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        sessions::table
            .filter(sessions::api_client_id.eq(api_client_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(Some(at)),
        sessions::revoked_reason.eq(Some(reason)),
    ))
    .execute(conn)
}

pub fn insert_refresh_token(
    conn: &mut DbConn,
    session_id: &str,
    token_hash: &str,
    issued_at: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::session_id.eq(session_id),
            refresh_tokens::token_hash.eq(token_hash),
            refresh_tokens::issued_at.eq(issued_at),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn find_refresh_token(conn: &mut DbConn, token_hash: &str) -> QueryResult<Option<RefreshToken>> {
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select(RefreshToken::as_select())
        .first(conn)
        .optional()
}

/// Spend a refresh token; `false` when it was already spent (a concurrent or replayed use).
pub fn spend_refresh_token(conn: &mut DbConn, id: i64, at: NaiveDateTime) -> QueryResult<bool> {
    let changed = diesel::update(refresh_tokens::table.find(id).filter(refresh_tokens::used_at.is_null()))
        .set(refresh_tokens::used_at.eq(Some(at)))
        .execute(conn)?;
    Ok(changed == 1)
}
