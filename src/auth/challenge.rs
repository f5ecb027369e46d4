//! The gate between a right password and a session: whether the account needs a second factor
//! (`security.mfa_required_roles`, or one it enrolled), and the challenge that carries the
//! sign-in to its second step (`auth::mfa`). Apart from `mfa` so that `session`, which opens
//! sessions, and `mfa`, which answers challenges with them, do not import each other.

use chrono::{Duration, NaiveDateTime};

use super::tokens;
use crate::error::ApiResult;
use crate::store::{DbConn, mfa, users};

/// How long a sign-in challenge may be answered.
pub const CHALLENGE_SECS: i64 = 300;

/// What a right password leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No second factor: the session opens.
    Nothing,
    /// A code from the enrolled factor (or a recovery code).
    Code,
    /// The role requires a factor the account does not have: enrol first.
    Enrolment,
}

/// A challenge just issued: the value goes to the client once.
#[derive(Debug, Clone)]
pub struct Issued {
    pub challenge: String,
    pub expires_in: i64,
    pub enrolment_required: bool,
}

/// `required_roles`: `policy.security.mfa_required_roles`, read in the sign-in's transaction.
pub fn need(conn: &mut DbConn, user: &users::User, required_roles: &[String]) -> ApiResult<Need> {
    if mfa::is_enrolled(conn, user.id)? {
        return Ok(Need::Code);
    }
    if required_roles.contains(&user.role) {
        return Ok(Need::Enrolment);
    }
    Ok(Need::Nothing)
}

/// Issue a challenge for a user whose password was right.
pub fn issue_challenge(conn: &mut DbConn, user: &users::User, need: Need, at: NaiveDateTime) -> ApiResult<Issued> {
    let challenge = format!("gmc_{}", tokens::new_refresh_token().trim_start_matches("grt_"));
    mfa::insert_challenge(
        conn,
        &tokens::sha256_hex(&challenge),
        user.id,
        at,
        at + Duration::seconds(CHALLENGE_SECS),
    )?;
    Ok(Issued {
        challenge,
        expires_in: CHALLENGE_SECS,
        enrolment_required: need == Need::Enrolment,
    })
}
