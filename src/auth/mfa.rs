//! The second sign-in step (TOTP, RFC 6238): enrolment, codes, recovery codes and the
//! short-lived challenge that links a right password to its second factor.
//!
//! A right password for an account with a second factor, or whose role the policy
//! (`security.mfa_required_roles`) requires one for, yields a challenge instead of a session.
//! The challenge is random, stored hashed, bound to the user, valid [`CHALLENGE_SECS`] and
//! spent by the step that completes the sign-in. An account that must have a factor but has
//! none may use its challenge only to enrol; confirming the enrolment completes the sign-in,
//! so a freshly created admin can still get in. Every code check counts in the sign-in
//! throttle under a key of its own (a right password does not forgive wrong codes).

use chrono::NaiveDateTime;
use serde_json::json;

pub use super::challenge::{CHALLENGE_SECS, Issued, Need, issue_challenge, need};
use super::session::{self, Attempt, Committed};
use super::{tokens, totp};
use crate::config::Settings;
use crate::credentials::sealed::Keyring;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::audit::{self, Actor, Change};
use crate::store::{self, DbConn, mfa, sessions, users};

/// The sealing context of TOTP seeds.
pub use crate::store::mfa::SEED_CONTEXT;
pub const RECOVERY_CODES: usize = 10;

/// A second factor presented at sign-in.
#[derive(Debug, Clone)]
pub enum Factor {
    Code(String),
    Recovery(String),
}

/// What an authenticator app is given at enrolment.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

pub fn throttle_key(user_id: i64) -> String {
    format!("mfa:user:{user_id}")
}

fn unix(at: NaiveDateTime) -> u64 {
    u64::try_from(at.and_utc().timestamp()).unwrap_or(0)
}

fn challenge_invalid() -> ApiError {
    ApiError::new(
        ErrorCode::MfaChallengeInvalid,
        "the sign-in challenge is unknown, already used or expired; sign in again with your password",
    )
}

fn code_invalid() -> ApiError {
    ApiError::new(
        ErrorCode::MfaCodeInvalid,
        "the code is wrong or was already used; wait for the next code from your authenticator app",
    )
}

/// The open challenge and its (active) user.
pub fn open_challenge(
    conn: &mut DbConn,
    presented: &str,
    at: NaiveDateTime,
) -> ApiResult<(mfa::Challenge, users::User)> {
    let challenge = mfa::find_challenge(conn, &tokens::sha256_hex(presented.trim()))?
        .filter(|c| c.used_at.is_none() && c.expires_at > at)
        .ok_or_else(challenge_invalid)?;
    let user = users::find(conn, challenge.user_id)?.ok_or_else(challenge_invalid)?;
    if let Some(refusal) = session::user_refusal(conn, &user)? {
        return Err(refusal);
    }
    Ok((challenge, user))
}

fn seed_of(keyring: &Keyring, row: &mfa::UserMfa) -> ApiResult<Vec<u8>> {
    keyring
        .open(&row.seed_sealed, SEED_CONTEXT)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("a TOTP seed cannot be opened: {e}")))
}

/// Start (or restart) enrolment: a new seed, sealed, waiting for its first code.
pub fn start_enrolment(
    conn: &mut DbConn,
    keyring: &Keyring,
    actor: &Actor,
    user: &users::User,
    at: NaiveDateTime,
) -> ApiResult<Enrolment> {
    if mfa::is_enrolled(conn, user.id)? {
        return Err(ApiError::new(
            ErrorCode::MfaAlreadyEnrolled,
            "this account already has a second factor; an admin can reset it if the device is lost",
        ));
    }
    let seed = totp::new_seed();
    let (secret, otpauth_uri) = totp::provisioning(&seed, &user.username)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("TOTP provisioning failed")))?;
    mfa::put_pending(conn, user.id, &keyring.seal(&seed, SEED_CONTEXT), at)?;
    audit::append(
        conn,
        actor,
        Change::created("user.mfa_enrolment_start", "user", user.id, json!({"user_id": user.id})),
    )?;
    Ok(Enrolment { secret, otpauth_uri })
}

/// A fresh set of recovery codes (shown once; their hashes replace the old set).
fn new_recovery_codes(conn: &mut DbConn, user_id: i64, at: NaiveDateTime) -> ApiResult<Vec<String>> {
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| tokens::sha256_hex(&normalize_recovery(c)))
        .collect();
    mfa::replace_recovery_codes(conn, user_id, &hashes, at)?;
    Ok(codes)
}

/// 80 random bits as four groups of four base32 characters.
fn new_recovery_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    let chars: Vec<char> = bytes.iter().map(|b| ALPHABET[usize::from(b % 32)] as char).collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

fn normalize_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Check a TOTP code against the user's seed (confirmed or, with `pending`, waiting) and
/// spend its step.
fn check_totp(
    conn: &mut DbConn,
    keyring: &Keyring,
    user_id: i64,
    code: &str,
    pending: bool,
    at: NaiveDateTime,
) -> ApiResult<bool> {
    let Some(row) = mfa::find(conn, user_id)? else {
        return Ok(false);
    };
    if row.confirmed_at.is_none() != pending {
        return Ok(false);
    }
    let seed = seed_of(keyring, &row)?;
    let last = row.last_step.and_then(|s| u64::try_from(s).ok());
    let Some(step) = totp::verify(&seed, totp::DIGITS, code, unix(at), last) else {
        return Ok(false);
    };
    let step = i64::try_from(step).map_err(ApiError::internal)?;
    Ok(mfa::accept_step(conn, user_id, step)?)
}

fn check_factor(
    conn: &mut DbConn,
    keyring: &Keyring,
    user: &users::User,
    factor: &Factor,
    at: NaiveDateTime,
) -> ApiResult<bool> {
    match factor {
        Factor::Code(code) => check_totp(conn, keyring, user.id, code, false, at),
        Factor::Recovery(code) => {
            let presented = tokens::sha256_hex(&normalize_recovery(code));
            // Every stored hash is compared, in constant time, so timing tells nothing.
            let mut found = None;
            for stored in mfa::unused_recovery_codes(conn, user.id)? {
                if tokens::secret_matches_hash(&presented, &stored.code_hash) && found.is_none() {
                    found = Some(stored.id);
                }
            }
            let Some(id) = found else { return Ok(false) };
            if !mfa::spend_recovery_code(conn, id, at)? {
                return Ok(false);
            }
            let left = mfa::unused_recovery_codes(conn, user.id)?.len();
            audit::append(
                conn,
                &user_actor(user),
                Change::created(
                    "user.mfa_recovery_code_used",
                    "user",
                    user.id,
                    json!({"user_id": user.id, "recovery_codes_left": left}),
                ),
            )?;
            Ok(true)
        }
    }
}

pub fn user_actor(user: &users::User) -> Actor {
    Actor {
        kind: audit::ActorKind::User,
        id: Some(user.id),
        name: user.username.clone(),
    }
}

/// Run a code check under the throttle: the attempt is counted first (its own transaction),
/// then `check` runs in a write transaction; a wrong code stays counted.
fn throttled<T>(
    conn: &mut DbConn,
    settings: &Settings,
    user_id: i64,
    address_key: &str,
    at: NaiveDateTime,
    check: impl FnOnce(&mut DbConn) -> ApiResult<Option<T>>,
) -> ApiResult<Committed<T>> {
    let attempt: Attempt = match session::begin_attempt(conn, settings, &throttle_key(user_id), address_key, at)? {
        Ok(attempt) => attempt,
        Err(refusal) => return Ok(Err(refusal)),
    };
    store::write_tx(conn, |conn| match check(conn)? {
        Some(done) => {
            attempt.succeeded(conn)?;
            Ok(Ok(done))
        }
        None => {
            attempt.failed(conn, settings, at)?;
            Ok(Err(code_invalid()))
        }
    })
}

/// The second step of a sign-in: the challenge and a code (or recovery code). On success the
/// challenge is spent and `open` starts the session in the same transaction.
#[allow(clippy::too_many_arguments)]
pub fn answer_challenge<T>(
    conn: &mut DbConn,
    keyring: &Keyring,
    settings: &Settings,
    challenge: &str,
    factor: &Factor,
    address_key: &str,
    at: NaiveDateTime,
    open: impl FnOnce(&mut DbConn, &users::User) -> ApiResult<T>,
) -> ApiResult<Committed<(T, users::User)>> {
    let (found, user) = match open_challenge(conn, challenge, at) {
        Ok(found) => found,
        Err(refusal) if refusal.code().status().is_client_error() => return Ok(Err(refusal)),
        Err(e) => return Err(e),
    };
    if !mfa::is_enrolled(conn, user.id)? {
        return Ok(Err(ApiError::new(
            ErrorCode::MfaEnrolmentRequired,
            "this account must set up a second factor first: POST /api/v1/auth/mfa/enrol with the challenge",
        )));
    }
    throttled(conn, settings, user.id, address_key, at, |conn| {
        if !check_factor(conn, keyring, &user, factor, at)? {
            return Ok(None);
        }
        if !mfa::spend_challenge(conn, found.id, at)? {
            return Err(challenge_invalid());
        }
        let opened = open(conn, &user)?;
        Ok(Some((opened, user.clone())))
    })
}

/// Confirm an enrolment with its first code: the factor is on and ten recovery codes are
/// returned (once). With a challenge (`Some`), the challenge is spent and `open` completes the
/// sign-in in the same transaction.
#[allow(clippy::too_many_arguments)]
pub fn confirm_enrolment<T>(
    conn: &mut DbConn,
    keyring: &Keyring,
    settings: &Settings,
    user: &users::User,
    challenge: Option<i64>,
    code: &str,
    address_key: &str,
    at: NaiveDateTime,
    open: impl FnOnce(&mut DbConn, &users::User) -> ApiResult<T>,
) -> ApiResult<Committed<(Vec<String>, T)>> {
    match mfa::find(conn, user.id)? {
        Some(row) if row.confirmed_at.is_none() => {}
        Some(_) => {
            return Ok(Err(ApiError::new(
                ErrorCode::MfaAlreadyEnrolled,
                "this account already has a second factor",
            )));
        }
        None => {
            return Ok(Err(ApiError::new(
                ErrorCode::MfaNotEnrolled,
                "no enrolment is waiting: start one with POST /api/v1/auth/mfa/enrol",
            )));
        }
    }
    throttled(conn, settings, user.id, address_key, at, |conn| {
        if !check_totp(conn, keyring, user.id, code, true, at)? {
            return Ok(None);
        }
        if let Some(id) = challenge
            && !mfa::spend_challenge(conn, id, at)?
        {
            return Err(challenge_invalid());
        }
        mfa::confirm(conn, user.id, at)?;
        let codes = new_recovery_codes(conn, user.id, at)?;
        audit::append(
            conn,
            &user_actor(user),
            Change::created("user.mfa_enrol", "user", user.id, json!({"user_id": user.id})),
        )?;
        let opened = open(conn, user)?;
        Ok(Some((codes, opened)))
    })
}

/// New recovery codes for a signed-in user with a current code; the old ones stop working.
pub fn regenerate_recovery_codes(
    conn: &mut DbConn,
    keyring: &Keyring,
    settings: &Settings,
    user: &users::User,
    code: &str,
    address_key: &str,
    at: NaiveDateTime,
) -> ApiResult<Committed<Vec<String>>> {
    if !mfa::is_enrolled(conn, user.id)? {
        return Ok(Err(ApiError::new(
            ErrorCode::MfaNotEnrolled,
            "this account has no second factor",
        )));
    }
    throttled(conn, settings, user.id, address_key, at, |conn| {
        if !check_totp(conn, keyring, user.id, code, false, at)? {
            return Ok(None);
        }
        let codes = new_recovery_codes(conn, user.id, at)?;
        audit::append(
            conn,
            &user_actor(user),
            Change::created(
                "user.mfa_recovery_codes",
                "user",
                user.id,
                json!({"user_id": user.id, "recovery_codes": RECOVERY_CODES}),
            ),
        )?;
        Ok(Some(codes))
    })
}

/// An admin removes a user's second factor (a lost device): the user's sessions end, and a
/// role that requires a factor enrols again at the next sign-in. Runs in the caller's write
/// transaction.
pub fn reset(conn: &mut DbConn, actor: &Actor, user_id: i64, at: NaiveDateTime) -> ApiResult<()> {
    let user = users::find(conn, user_id)?.ok_or_else(|| ApiError::not_found("user"))?;
    let had = mfa::find(conn, user.id)?.is_some_and(|r| r.confirmed_at.is_some());
    mfa::remove(conn, user.id)?;
    mfa::remove_challenges(conn, user.id)?;
    sessions::revoke_all_for_user(conn, user.id, "mfa_reset", at)?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "user.mfa_reset",
            "user",
            user.id,
            json!({"user_id": user.id, "mfa": had}),
            json!({"user_id": user.id, "mfa": false}),
        ),
    )?;
    Ok(())
}

/// The secret and URI of an enrolment still waiting for its first code (to show the form
/// again after a wrong code).
pub fn pending_enrolment(conn: &mut DbConn, keyring: &Keyring, user: &users::User) -> ApiResult<Option<Enrolment>> {
    let Some(row) = mfa::find(conn, user.id)?.filter(|r| r.confirmed_at.is_none()) else {
        return Ok(None);
    };
    let seed = seed_of(keyring, &row)?;
    Ok(totp::provisioning(&seed, &user.username).map(|(secret, otpauth_uri)| Enrolment { secret, otpauth_uri }))
}
