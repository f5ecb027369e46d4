//! Idempotency keys: one row per (account, key), reserved before a POST runs and holding its
//! first answer afterwards. The unique index on (account, idempotency_key) is what keeps two
//! instances from both running the same POST.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::idempotency_keys;

/// `status_code` of a reserved key whose answer is not known yet.
pub const PENDING: i32 = 0;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys)]
pub struct KeyRow {
    pub id: i64,
    pub account: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub method: String,
    pub path: String,
    /// [`PENDING`] until the answer is stored.
    pub status_code: i32,
    /// JSON object of the headers a replay repeats.
    pub response_headers: String,
    pub response_body: String,
    pub created_at: NaiveDateTime,
}

pub struct NewKey<'a> {
    pub account: &'a str,
    pub key: &'a str,
    pub request_hash: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status_code: i32,
    pub response_headers: &'a str,
    pub response_body: &'a str,
    pub at: NaiveDateTime,
}

pub fn find(conn: &mut DbConn, account: &str, key: &str) -> QueryResult<Option<KeyRow>> {
    idempotency_keys::table
        .filter(idempotency_keys::account.eq(account))
        .filter(idempotency_keys::idempotency_key.eq(key))
        .select(KeyRow::as_select())
        .first(conn)
        .optional()
}

pub fn insert(conn: &mut DbConn, k: &NewKey<'_>) -> QueryResult<()> {
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::account.eq(k.account),
            idempotency_keys::idempotency_key.eq(k.key),
            idempotency_keys::request_hash.eq(k.request_hash),
            idempotency_keys::method.eq(k.method),
            idempotency_keys::path.eq(k.path),
            idempotency_keys::status_code.eq(k.status_code),
            idempotency_keys::response_headers.eq(k.response_headers),
            idempotency_keys::response_body.eq(k.response_body),
            idempotency_keys::created_at.eq(k.at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Store the answer of a reserved key; false when the reservation is gone.
pub fn complete(conn: &mut DbConn, id: i64, status_code: i32, headers: &str, body: &str) -> QueryResult<bool> {
    let n = diesel::update(
        idempotency_keys::table
            .filter(idempotency_keys::id.eq(id))
            .filter(idempotency_keys::status_code.eq(PENDING)),
    )
    .set((
        idempotency_keys::status_code.eq(status_code),
        idempotency_keys::response_headers.eq(headers),
        idempotency_keys::response_body.eq(body),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Drop a reservation whose POST wrote nothing, so that a retry runs it.
pub fn release(conn: &mut DbConn, id: i64) -> QueryResult<()> {
    diesel::delete(
        idempotency_keys::table
            .filter(idempotency_keys::id.eq(id))
            .filter(idempotency_keys::status_code.eq(PENDING)),
    )
    .execute(conn)?;
    Ok(())
}

/// Delete one account's key if it was made before `cutoff`.
pub fn delete_expired_key(conn: &mut DbConn, account: &str, key: &str, cutoff: NaiveDateTime) -> QueryResult<()> {
    diesel::delete(
        idempotency_keys::table
            .filter(idempotency_keys::account.eq(account))
            .filter(idempotency_keys::idempotency_key.eq(key))
            .filter(idempotency_keys::created_at.lt(cutoff)),
    )
    .execute(conn)?;
    Ok(())
}

/// Delete every key made before `cutoff`; the number deleted.
pub fn purge(conn: &mut DbConn, cutoff: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(cutoff))).execute(conn)
}
