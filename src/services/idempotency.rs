//! `Idempotency-Key`: a retried POST with the same key, method, path and body gets the first
//! answer; the same key on another route or with another body is refused. Keys belong to one
//! account (a user or a hospital system's client) and live `policy.security.idempotency_key_hours`.
//!
//! Two ways in: `POST /api/v1/requests` stores its answer in the transaction that creates the
//! request ([`insert_answer`]); every other honouring route reserves the key before its handler
//! runs ([`claim`]) and stores the answer afterwards ([`complete`]). A reservation whose answer
//! never got stored (a crash between the handler's commit and [`complete`]) stays reserved until
//! it expires: a retry is told the key is in progress and never runs the handler again.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::Connection as _;
use sha2::{Digest, Sha256};

use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::audit::Actor;
use crate::store::idempotency::{self as rows, KeyRow, NewKey, PENDING};
use crate::store::{self, DbConn};

/// How long a client should wait before retrying a key that is in progress.
pub const IN_PROGRESS_RETRY_SECS: u64 = 1;

/// The account a key belongs to: `user:<id>` or `client:<id>`.
pub fn account(actor: &Actor) -> String {
    format!("{}:{}", actor.kind.as_str(), actor.id.unwrap_or_default())
}

/// The `Idempotency-Key` header: 1 to 255 printable ASCII characters.
pub fn parse_key(value: Option<&actix_web::http::header::HeaderValue>) -> ApiResult<Option<String>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let key = value.to_str().map(str::trim).unwrap_or("");
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// SHA-256 of the body as canonical JSON (object keys sorted), so formatting does not matter;
/// of the bytes themselves when they are not JSON (the handler refuses those).
pub fn body_hash(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => hex::encode(Sha256::digest(value.to_string().as_bytes())),
        Err(_) => format!("raw:{}", hex::encode(Sha256::digest(body))),
    }
}

/// What a POST was: the route and the body's hash.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub account: String,
    pub key: String,
    pub method: String,
    pub path: String,
    pub body_hash: String,
}

/// A stored first answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub enum Claim {
    /// The key is this POST's: run the handler, then [`complete`] or [`release`] row `id`.
    Reserved(i64),
    Replay(Answer),
}

fn cutoff(now: NaiveDateTime, policy: &Policy) -> NaiveDateTime {
    now - TimeDelta::hours(i64::from(policy.security.idempotency_key_hours))
}

/// The account's live row for the key; an expired one is deleted first, so the key is free.
pub fn find_live(conn: &mut DbConn, account: &str, key: &str, policy: &Policy) -> ApiResult<Option<KeyRow>> {
    rows::delete_expired_key(conn, account, key, cutoff(store::now(), policy))?;
    Ok(rows::find(conn, account, key)?)
}

/// The first answer for a matching attempt; 422 `idempotency_key_reused` for another route or
/// body; 409 `idempotency_key_in_progress` while the first attempt's answer is not known.
pub fn replay(row: &KeyRow, a: &Attempt) -> ApiResult<Answer> {
    if row.method != a.method || row.path != a.path {
        return Err(ApiError::refused(
            ErrorCode::IdempotencyKeyReused,
            format!(
                "this Idempotency-Key was used on {} {}; use a new key for each operation",
                row.method, row.path
            ),
            vec![],
        ));
    }
    if row.request_hash != a.body_hash {
        return Err(ApiError::refused(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different body",
            vec![],
        ));
    }
    if row.status_code == PENDING {
        return Err(in_progress());
    }
    let headers = serde_json::from_str::<Vec<(String, String)>>(&row.response_headers).unwrap_or_default();
    Ok(Answer {
        status: u16::try_from(row.status_code).unwrap_or(200),
        headers,
        body: row.response_body.clone(),
    })
}

fn in_progress() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyInProgress,
        "a request with this Idempotency-Key has not finished (or its answer was lost); \
         retry later, and read the resource to see whether it was done",
    )
    .with_retry_after(IN_PROGRESS_RETRY_SECS)
}

/// Reserve the key for this attempt, or answer from the row already there. Two instances
/// reserving at once meet on the unique index: the later one is told the key is in progress.
pub fn claim(conn: &mut DbConn, a: &Attempt, policy: &Policy) -> ApiResult<Claim> {
    if let Some(row) = find_live(conn, &a.account, &a.key, policy)? {
        return replay(&row, a).map(Claim::Replay);
    }
    // A savepoint, so that losing the race leaves the surrounding transaction usable.
    let inserted = conn.transaction(|conn| {
        rows::insert(
            conn,
            &NewKey {
                account: &a.account,
                key: &a.key,
                request_hash: &a.body_hash,
                method: &a.method,
                path: &a.path,
                status_code: PENDING,
                response_headers: "[]",
                response_body: "",
                at: store::now(),
            },
        )
    });
    match inserted {
        Ok(()) => {}
        Err(e) if store::is_unique_violation(&e) => {
            return match rows::find(conn, &a.account, &a.key)? {
                Some(row) => replay(&row, a).map(Claim::Replay),
                None => Err(in_progress()),
            };
        }
        Err(e) => return Err(e.into()),
    }
    let row = rows::find(conn, &a.account, &a.key)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the reserved idempotency key vanished")))?;
    Ok(Claim::Reserved(row.id))
}

/// Store the answer of reservation `id`.
pub fn complete(conn: &mut DbConn, id: i64, answer: &Answer) -> ApiResult<()> {
    let headers = serde_json::to_string(&answer.headers).map_err(ApiError::internal)?;
    rows::complete(conn, id, i32::from(answer.status), &headers, &answer.body)?;
    Ok(())
}

/// Free reservation `id`: its POST was refused or failed and wrote nothing.
pub fn release(conn: &mut DbConn, id: i64) -> ApiResult<()> {
    Ok(rows::release(conn, id)?)
}

/// Store a key with its answer in the caller's transaction (`POST /requests`).
pub fn insert_answer(conn: &mut DbConn, a: &Attempt, answer: &Answer) -> Result<(), diesel::result::Error> {
    let headers = serde_json::to_string(&answer.headers).unwrap_or_else(|_| "[]".to_owned());
    rows::insert(
        conn,
        &NewKey {
            account: &a.account,
            key: &a.key,
            request_hash: &a.body_hash,
            method: &a.method,
            path: &a.path,
            status_code: i32::from(answer.status),
            response_headers: &headers,
            response_body: &answer.body,
            at: store::now(),
        },
    )
}

/// Delete every key older than the policy period; the number deleted.
pub fn purge(conn: &mut DbConn, now: NaiveDateTime, policy: &Policy) -> ApiResult<usize> {
    Ok(rows::purge(conn, cutoff(now, policy))?)
}
