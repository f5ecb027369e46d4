//! Second factors: a user's sealed TOTP seed, hashed recovery codes and sign-in challenges.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{mfa_challenges, mfa_recovery_codes, user_mfa};
use super::{DbConn, StoreError};
use crate::credentials::sealed::Keyring;

/// The context TOTP seeds are sealed under.
pub const SEED_CONTEXT: &str = "totp-seed";

/// Re-seals under the current key every seed sealed under another (`granulo secrets rotate`).
pub fn reseal(conn: &mut DbConn, ring: &Keyring) -> Result<usize, StoreError> {
    let rows: Vec<(i64, String)> = user_mfa::table
        .select((user_mfa::user_id, user_mfa::seed_sealed))
        .load(conn)?;
    let mut count = 0;
    for (user_id, sealed) in rows {
        if ring.is_current(&sealed) {
            continue;
        }
        let seed = ring.open(&sealed, SEED_CONTEXT).map_err(|e| {
            StoreError::Unsealable(format!(
                "the TOTP seed of user {user_id}: {e} (set the key it was sealed under as GRANULO_SECRETS_KEY_PREVIOUS)"
            ))
        })?;
        diesel::update(user_mfa::table.find(user_id))
            .set(user_mfa::seed_sealed.eq(ring.seal(&seed, SEED_CONTEXT)))
            .execute(conn)?;
        count += 1;
    }
    Ok(count)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_mfa)]
pub struct UserMfa {
    pub user_id: i64,
    pub seed_sealed: String,
    pub created_at: NaiveDateTime,
    /// `None` while the enrolment waits for its first code.
    pub confirmed_at: Option<NaiveDateTime>,
    pub last_step: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mfa_recovery_codes)]
pub struct RecoveryCode {
    pub id: i64,
    pub user_id: i64,
    pub code_hash: String,
    pub created_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mfa_challenges)]
pub struct Challenge {
    pub id: i64,
    pub challenge_hash: String,
    pub user_id: i64,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

pub fn find(conn: &mut DbConn, user_id: i64) -> QueryResult<Option<UserMfa>> {
    user_mfa::table
        .find(user_id)
        .select(UserMfa::as_select())
        .first(conn)
        .optional()
}

/// Whether the user has a confirmed second factor.
pub fn is_enrolled(conn: &mut DbConn, user_id: i64) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        user_mfa::table
            .filter(user_mfa::user_id.eq(user_id))
            .filter(user_mfa::confirmed_at.is_not_null()),
    ))
    .get_result(conn)
}

/// Start (or restart) an enrolment: a new seed waiting for its first code.
pub fn put_pending(conn: &mut DbConn, user_id: i64, seed_sealed: &str, at: NaiveDateTime) -> QueryResult<()> {
    remove(conn, user_id)?;
    diesel::insert_into(user_mfa::table)
        .values((
            user_mfa::user_id.eq(user_id),
            user_mfa::seed_sealed.eq(seed_sealed),
            user_mfa::created_at.eq(at),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn confirm(conn: &mut DbConn, user_id: i64, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(user_mfa::table.find(user_id).filter(user_mfa::confirmed_at.is_null()))
        .set(user_mfa::confirmed_at.eq(Some(at)))
        .execute(conn)
}

/// Record `step` as the last accepted one; `false` when a concurrent sign-in took this step
/// or a later one first (the code is then a replay).
pub fn accept_step(conn: &mut DbConn, user_id: i64, step: i64) -> QueryResult<bool> {
    let changed = diesel::update(
        user_mfa::table
            .find(user_id)
            .filter(user_mfa::last_step.is_null().or(user_mfa::last_step.lt(step))),
    )
    .set(user_mfa::last_step.eq(Some(step)))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Remove a user's second factor, recovery codes and open challenges.
pub fn remove(conn: &mut DbConn, user_id: i64) -> QueryResult<usize> {
    diesel::delete(mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user_id))).execute(conn)?;
    diesel::delete(user_mfa::table.filter(user_mfa::user_id.eq(user_id))).execute(conn)
}

pub fn replace_recovery_codes(
    conn: &mut DbConn,
    user_id: i64,
    hashes: &[String],
    at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::delete(mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user_id))).execute(conn)?;
    for hash in hashes {
        diesel::insert_into(mfa_recovery_codes::table)
            .values((
                mfa_recovery_codes::user_id.eq(user_id),
                mfa_recovery_codes::code_hash.eq(hash),
                mfa_recovery_codes::created_at.eq(at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn unused_recovery_codes(conn: &mut DbConn, user_id: i64) -> QueryResult<Vec<RecoveryCode>> {
    mfa_recovery_codes::table
        .filter(mfa_recovery_codes::user_id.eq(user_id))
        .filter(mfa_recovery_codes::used_at.is_null())
        .order(mfa_recovery_codes::id.asc())
        .select(RecoveryCode::as_select())
        .load(conn)
}

/// Spend a recovery code; `false` when it was spent concurrently.
pub fn spend_recovery_code(conn: &mut DbConn, id: i64, at: NaiveDateTime) -> QueryResult<bool> {
    let changed = diesel::update(
        mfa_recovery_codes::table
            .find(id)
            .filter(mfa_recovery_codes::used_at.is_null()),
    )
    .set(mfa_recovery_codes::used_at.eq(Some(at)))
    .execute(conn)?;
    Ok(changed == 1)
}

pub fn insert_challenge(
    conn: &mut DbConn,
    challenge_hash: &str,
    user_id: i64,
    at: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> QueryResult<()> {
    // Spent and expired challenges serve no purpose any more.
    diesel::delete(mfa_challenges::table.filter(mfa_challenges::expires_at.lt(at))).execute(conn)?;
    diesel::insert_into(mfa_challenges::table)
        .values((
            mfa_challenges::challenge_hash.eq(challenge_hash),
            mfa_challenges::user_id.eq(user_id),
            mfa_challenges::created_at.eq(at),
            mfa_challenges::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn find_challenge(conn: &mut DbConn, challenge_hash: &str) -> QueryResult<Option<Challenge>> {
    mfa_challenges::table
        .filter(mfa_challenges::challenge_hash.eq(challenge_hash))
        .select(Challenge::as_select())
        .first(conn)
        .optional()
}

/// Spend a challenge; `false` when it was spent concurrently.
pub fn spend_challenge(conn: &mut DbConn, id: i64, at: NaiveDateTime) -> QueryResult<bool> {
    let changed = diesel::update(mfa_challenges::table.find(id).filter(mfa_challenges::used_at.is_null()))
        .set(mfa_challenges::used_at.eq(Some(at)))
        .execute(conn)?;
    Ok(changed == 1)
}

pub fn remove_challenges(conn: &mut DbConn, user_id: i64) -> QueryResult<usize> {
    diesel::delete(mfa_challenges::table.filter(mfa_challenges::user_id.eq(user_id))).execute(conn)
}
