//! Sign-in flows: password login, client credentials, refresh-token rotation with reuse
//! detection, and logout. Throttling state lives in the database so every instance agrees.

use chrono::{Duration, NaiveDateTime};

use super::jwt::{AUDIENCE, Claims, ISSUER, JwtKeys};
use super::{Principal, Role, challenge, tokens};
use crate::config::Settings;
use crate::domain::policy::SecurityPolicy;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{self, DbConn, api_clients, hospitals, sessions, throttle, users};

/// Tokens handed to a client after sign-in.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<String>,
}

/// Throttle keys hold what was typed up to this many characters: no real username or client id
/// is longer, and a 256 KiB name must not become a 256 KiB row.
const MAX_KEY_NAME_CHARS: usize = 128;

fn key_name(typed: &str) -> String {
    typed.chars().take(MAX_KEY_NAME_CHARS).collect()
}

pub fn user_throttle_key(username: &str) -> String {
    format!("user:{}", key_name(username))
}

pub fn client_throttle_key(client_id: &str) -> String {
    format!("client:{}", key_name(client_id))
}

pub fn address_throttle_key(address: &str) -> String {
    format!("addr:{address}")
}

/// A sign-in attempt, recorded as a failure against its account and address keys before the
/// credentials are checked and withdrawn if they turn out right. Counting first means that
/// concurrent guesses see each other: a burst gets no more tries than the limit.
#[derive(Debug)]
pub struct Attempt {
    account_key: String,
    address_row: i64,
}

/// Record an attempt and decide whether it may proceed: `Err` (429) when the account or the
/// address already used up its failures in the window, and then the attempt is withdrawn.
/// Runs its own transactions: the attempt commits before the count, so each attempt counts
/// every one committed before it on PostgreSQL too.
pub fn begin_attempt(
    conn: &mut DbConn,
    settings: &Settings,
    account_key: &str,
    address_key: &str,
    at: NaiveDateTime,
) -> ApiResult<Committed<Attempt>> {
    let rows = store::write_tx(conn, |c| -> ApiResult<[i64; 2]> {
        Ok([
            throttle::record_failure(c, account_key, at)?,
            throttle::record_failure(c, address_key, at)?,
        ])
    })?;
    let window = Duration::minutes(settings.login_window_minutes);
    let mut wait: Option<u64> = None;
    for (key, limit) in [
        (account_key, settings.login_max_failures),
        (address_key, settings.login_max_failures_per_address),
    ] {
        let (count, oldest) = throttle::failures_since(conn, key, at - window)?;
        // `count` includes this attempt.
        if count > limit {
            let reopens = oldest.map_or(at + window, |o| o + window);
            let secs = (reopens - at).num_seconds().max(1) as u64;
            wait = Some(wait.map_or(secs, |w| w.max(secs)));
        }
    }
    if let Some(secs) = wait {
        store::write_tx(conn, |c| throttle::remove(c, &rows))?;
        return Ok(Err(throttled_error(secs)));
    }
    Ok(Ok(Attempt {
        account_key: account_key.to_owned(),
        address_row: rows[1],
    }))
}

impl Attempt {
    /// The credentials were right: the account's failures are forgiven, and this attempt does
    /// not count against the address.
    pub fn succeeded(&self, conn: &mut DbConn) -> ApiResult<()> {
        throttle::clear(conn, &self.account_key)?;
        throttle::remove(conn, &[self.address_row])?;
        Ok(())
    }

    /// The credentials were wrong: the attempt stays recorded; failures older than the window
    /// are forgotten.
    pub fn failed(&self, conn: &mut DbConn, settings: &Settings, at: NaiveDateTime) -> ApiResult<()> {
        throttle::prune(conn, at - Duration::minutes(settings.login_window_minutes))?;
        Ok(())
    }
}

#[expect(clippy::too_many_arguments)]
fn access_token(
    jwt: &JwtKeys,
    settings: &Settings,
    principal: Principal,
    name: &str,
    role: Role,
    hospital_id: Option<i64>,
    session_id: &str,
    at: NaiveDateTime,
) -> ApiResult<(String, i64)> {
    let ttl = settings.access_token_minutes * 60;
    let iat = at.and_utc().timestamp();
    let claims = Claims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: principal.subject(),
        exp: iat + ttl,
        nbf: iat,
        iat,
        jti: uuid::Uuid::new_v4().to_string(),
        sid: session_id.to_owned(),
        role,
        hospital_id,
        name: Some(name.to_owned()),
    };
    let token = jwt.sign(&claims).map_err(ApiError::internal)?;
    Ok((token, ttl))
}

fn new_refresh(conn: &mut DbConn, settings: &Settings, session_id: &str, at: NaiveDateTime) -> ApiResult<String> {
    let token = tokens::new_refresh_token();
    let expires = at + Duration::hours(settings.refresh_token_hours);
    sessions::insert_refresh_token(conn, session_id, &tokens::sha256_hex(&token), at, expires)?;
    Ok(token)
}

/// A session's tokens for a user: a fresh refresh token and an access token with the user's
/// current role and hospital.
fn issue_user_tokens(
    conn: &mut DbConn,
    jwt: &JwtKeys,
    settings: &Settings,
    user: &users::User,
    session_id: &str,
    at: NaiveDateTime,
) -> ApiResult<Issued> {
    let role: Role = user.role.parse().map_err(ApiError::internal)?;
    let refresh = new_refresh(conn, settings, session_id, at)?;
    // Sign with the signer in the database, which `granulo keys rotate` may have replaced.
    crate::store::signing_keys::refresh(conn, jwt)?;
    let (access, expires_in) = access_token(
        jwt,
        settings,
        Principal::User(user.id),
        &user.username,
        role,
        user.hospital_id,
        session_id,
        at,
    )?;
    Ok(Issued {
        access_token: access,
        expires_in,
        refresh_token: Some(refresh),
    })
}

/// Open a session for a user whose password was verified. Runs in a write transaction.
pub fn start_user_session(
    conn: &mut DbConn,
    jwt: &JwtKeys,
    settings: &Settings,
    user: &users::User,
    at: NaiveDateTime,
) -> ApiResult<Issued> {
    let session_id = tokens::new_session_id();
    sessions::create(conn, &session_id, Some(user.id), None, at)?;
    issue_user_tokens(conn, jwt, settings, user, &session_id, at)
}

/// Open a session for a hospital system (no refresh token: it asks again with its secret).
pub fn start_client_session(
    conn: &mut DbConn,
    jwt: &JwtKeys,
    settings: &Settings,
    client: &api_clients::ApiClient,
    at: NaiveDateTime,
) -> ApiResult<Issued> {
    let session_id = tokens::new_session_id();
    sessions::create(conn, &session_id, None, Some(client.id), at)?;
    // Sign with the signer in the database, which `granulo keys rotate` may have replaced.
    crate::store::signing_keys::refresh(conn, jwt)?;
    let (access, expires_in) = access_token(
        jwt,
        settings,
        Principal::Client(client.id),
        &client.client_id,
        Role::Hospital,
        Some(client.hospital_id),
        &session_id,
        at,
    )?;
    Ok(Issued {
        access_token: access,
        expires_in,
        refresh_token: None,
    })
}

/// An attempt whose refusal must still be committed (the recorded failure, the cleared
/// throttle): the outer `Err` aborts the transaction, the inner one is answered after commit.
pub type Committed<T> = Result<T, ApiError>;

/// Client-credentials sign-in: throttle, constant-time secret check, session. Runs its own
/// transactions (see [`begin_attempt`]).
pub fn client_sign_in(
    conn: &mut DbConn,
    jwt: &JwtKeys,
    settings: &Settings,
    client_id: &str,
    client_secret: &str,
    address_key: &str,
    at: NaiveDateTime,
) -> ApiResult<Committed<(Issued, api_clients::ApiClient)>> {
    let attempt = match begin_attempt(conn, settings, &client_throttle_key(client_id), address_key, at)? {
        Ok(attempt) => attempt,
        Err(refusal) => return Ok(Err(refusal)),
    };
    store::write_tx(conn, |conn| {
        let client = api_clients::find_by_client_id(conn, client_id)?;
        // Compare even for unknown clients so timing does not reveal which ids exist.
        let stored = client
            .as_ref()
            .map_or_else(|| tokens::sha256_hex("unknown-client"), |c| c.secret_hash.clone());
        let matches = tokens::secret_matches(client_secret, &stored);
        match client {
            Some(client) if matches && client.active => {
                attempt.succeeded(conn)?;
                if !hospitals::is_active(conn, client.hospital_id)? {
                    return Ok(Err(hospital_inactive()));
                }
                let issued = start_client_session(conn, jwt, settings, &client, at)?;
                Ok(Ok((issued, client)))
            }
            _ => {
                attempt.failed(conn, settings, at)?;
                Ok(Err(ApiError::new(
                    ErrorCode::InvalidClient,
                    "the client id or secret is wrong, or the client was revoked",
                )))
            }
        }
    })
}

pub fn throttled_error(secs: u64) -> ApiError {
    ApiError::too_many_requests(
        format!("too many failed sign-in attempts; try again in {secs} seconds"),
        secs,
    )
}

/// Why a user account may not hold a session now, if it may not: deactivated, or a hospital
/// account whose hospital is inactive. Checked at sign-in, refresh and on every request.
pub fn user_refusal(conn: &mut DbConn, user: &users::User) -> ApiResult<Option<ApiError>> {
    if !user.active {
        return Ok(Some(ApiError::new(
            ErrorCode::AccountInactive,
            "this account has been deactivated",
        )));
    }
    if let Some(hid) = user.hospital_id
        && !hospitals::is_active(conn, hid)?
    {
        return Ok(Some(hospital_inactive()));
    }
    Ok(None)
}

/// The user a password sign-in is for, once the (slow) password check ran outside the
/// transaction: the attempt is kept as a failure, or withdrawn when the password was right.
fn verified_user(
    conn: &mut DbConn,
    settings: &Settings,
    user: Option<users::User>,
    verified: bool,
    attempt: &Attempt,
    at: NaiveDateTime,
) -> ApiResult<Committed<users::User>> {
    match user {
        Some(user) if verified => {
            attempt.succeeded(conn)?;
            if let Some(refusal) = user_refusal(conn, &user)? {
                return Ok(Err(refusal));
            }
            Ok(Ok(user))
        }
        _ => {
            attempt.failed(conn, settings, at)?;
            Ok(Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "the username or password is wrong",
            )))
        }
    }
}

/// What a right password leads to: a session, or a second step (`auth::mfa`).
#[derive(Debug)]
pub enum SignIn<T> {
    Open(T),
    Challenge(challenge::Issued),
}

/// A session, or a challenge when the account has (or its role requires) a second factor.
fn open_or_challenge<T>(
    conn: &mut DbConn,
    security: &SecurityPolicy,
    user: &users::User,
    at: NaiveDateTime,
    open: impl FnOnce(&mut DbConn) -> ApiResult<T>,
) -> ApiResult<SignIn<T>> {
    match challenge::need(conn, user, &security.mfa_required_roles)? {
        challenge::Need::Nothing => Ok(SignIn::Open(open(conn)?)),
        need => Ok(SignIn::Challenge(challenge::issue_challenge(conn, user, need, at)?)),
    }
}

/// Finish a password sign-in (`POST /auth/login`): tokens, or the second step's challenge.
#[expect(clippy::too_many_arguments)]
pub fn finish_password_sign_in(
    conn: &mut DbConn,
    security: &SecurityPolicy,
    jwt: &JwtKeys,
    settings: &Settings,
    user: Option<users::User>,
    verified: bool,
    attempt: &Attempt,
    at: NaiveDateTime,
) -> ApiResult<Committed<(SignIn<Issued>, users::User)>> {
    let user = match verified_user(conn, settings, user, verified, attempt, at)? {
        Ok(user) => user,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let outcome = open_or_challenge(conn, security, &user, at, |conn| {
        start_user_session(conn, jwt, settings, &user, at)
    })?;
    Ok(Ok((outcome, user)))
}

/// A console session just opened: the cookie value goes to the browser once; only its hash
/// is stored.
#[derive(Debug)]
pub struct ConsoleOpened {
    pub cookie: String,
    pub expires_at: NaiveDateTime,
}

/// Finish a password sign-in at the console: a cookie session that lasts one shift
/// (`GRANULO_REFRESH_TOKEN_HOURS`) at most, or the second step's challenge. Hospital accounts
/// are refused: the console is for blood-bank staff.
pub fn finish_console_sign_in(
    conn: &mut DbConn,
    security: &SecurityPolicy,
    settings: &Settings,
    user: Option<users::User>,
    verified: bool,
    attempt: &Attempt,
    at: NaiveDateTime,
) -> ApiResult<Committed<(SignIn<ConsoleOpened>, users::User)>> {
    let user = match verified_user(conn, settings, user, verified, attempt, at)? {
        Ok(user) => user,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let role: Role = user.role.parse().map_err(ApiError::internal)?;
    if !role.is_staff() {
        return Ok(Err(console_not_for(role)));
    }
    let outcome = open_or_challenge(conn, security, &user, at, |conn| {
        open_console_session(conn, settings, &user, at)
    })?;
    Ok(Ok((outcome, user)))
}

/// Open a console session for a staff member who passed every sign-in step.
pub fn open_console_session(
    conn: &mut DbConn,
    settings: &Settings,
    user: &users::User,
    at: NaiveDateTime,
) -> ApiResult<ConsoleOpened> {
    let role: Role = user.role.parse().map_err(ApiError::internal)?;
    if !role.is_staff() {
        return Err(console_not_for(role));
    }
    let cookie = tokens::new_console_cookie();
    let expires_at = at + Duration::hours(settings.refresh_token_hours);
    sessions::create_console(
        conn,
        &tokens::new_session_id(),
        user.id,
        &tokens::sha256_hex(&cookie),
        at,
        expires_at,
    )?;
    Ok(ConsoleOpened { cookie, expires_at })
}

/// The refusal a non-staff account gets at the console.
pub fn console_not_for(role: Role) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "the console is for blood-bank staff; a {role} account uses the API (/api/v1 or /fhir/R5) through its hospital's system"
        ),
    )
}

pub fn hospital_inactive() -> ApiError {
    ApiError::new(ErrorCode::AccountInactive, "this hospital is not active")
}

/// What a refresh attempt came to. `Reused` is not an `Err` so that the family revocation it
/// causes is committed; the caller turns it into a 401 afterwards.
pub enum RefreshOutcome {
    Rotated(Issued, users::User),
    Reused,
}

pub fn refresh(
    conn: &mut DbConn,
    jwt: &JwtKeys,
    settings: &Settings,
    presented: &str,
    at: NaiveDateTime,
) -> ApiResult<RefreshOutcome> {
    let invalid = || ApiError::new(ErrorCode::InvalidRefreshToken, "the refresh token is not valid");
    let token = sessions::find_refresh_token(conn, &tokens::sha256_hex(presented))?.ok_or_else(invalid)?;
    let session = sessions::find(conn, &token.session_id)?.ok_or_else(invalid)?;
    if session.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::SessionRevoked,
            "this session has ended; sign in again",
        ));
    }
    if token.used_at.is_some() || !sessions::spend_refresh_token(conn, token.id, at)? {
        sessions::revoke(conn, &session.id, "refresh_token_reuse", at)?;
        tracing::warn!(session = %session.id, "spent refresh token presented again; session revoked");
        return Ok(RefreshOutcome::Reused);
    }
    if token.expires_at <= at {
        return Err(ApiError::new(
            ErrorCode::RefreshTokenExpired,
            "the refresh token has expired; sign in again",
        ));
    }
    let user_id = session.user_id.ok_or_else(invalid)?;
    let user = users::find(conn, user_id)?.ok_or_else(invalid)?;
    if let Some(refusal) = user_refusal(conn, &user)? {
        return Err(refusal);
    }
    let issued = issue_user_tokens(conn, jwt, settings, &user, &session.id, at)?;
    Ok(RefreshOutcome::Rotated(issued, user))
}
