//! Sign-in flows: password login, client credentials, refresh-token rotation with reuse
//! detection, and logout. Throttling state lives in the database so every instance agrees.

use chrono::{Duration, NaiveDateTime};

use super::jwt::{AUDIENCE, Claims, ISSUER, JwtKeys};
use super::{Principal, Role, tokens};
use crate::config::Settings;
use crate::error::{ApiError, ApiResult};
use crate::store::{DbConn, api_clients, sessions, throttle, users};

/// Tokens handed to a client after sign-in.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<String>,
}

pub fn user_throttle_key(username: &str) -> String {
    format!("user:{username}")
}

pub fn client_throttle_key(client_id: &str) -> String {
    format!("client:{client_id}")
}

pub fn address_throttle_key(address: &str) -> String {
    format!("addr:{address}")
}

/// `Some(seconds to wait)` when any key has used up its failures in the window.
pub fn throttled(
    conn: &mut DbConn,
    settings: &Settings,
    account_key: &str,
    address_key: &str,
    at: NaiveDateTime,
) -> ApiResult<Option<u64>> {
    let window = Duration::minutes(settings.login_window_minutes);
    let since = at - window;
    let mut wait: Option<u64> = None;
    for (key, limit) in [
        (account_key, settings.login_max_failures),
        (address_key, settings.login_max_failures_per_address),
    ] {
        let (count, oldest) = throttle::failures_since(conn, key, since)?;
        if count >= limit {
            let reopens = oldest.map_or(at + window, |o| o + window);
            let secs = (reopens - at).num_seconds().max(1) as u64;
            wait = Some(wait.map_or(secs, |w| w.max(secs)));
        }
    }
    Ok(wait)
}

pub fn record_failure(conn: &mut DbConn, settings: &Settings, keys: &[&str], at: NaiveDateTime) -> ApiResult<()> {
    for key in keys {
        throttle::record_failure(conn, key, at)?;
    }
    throttle::prune(conn, at - Duration::minutes(settings.login_window_minutes))?;
    Ok(())
}

fn access_token(
    jwt: &JwtKeys,
    settings: &Settings,
    principal: Principal,
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

/// Open a session for a user whose password was verified. Runs in a write transaction.
pub fn start_user_session(
    conn: &mut DbConn,
    jwt: &JwtKeys,
    settings: &Settings,
    user: &users::User,
    at: NaiveDateTime,
) -> ApiResult<Issued> {
    let role: Role = user.role.parse().map_err(ApiError::internal)?;
    let session_id = tokens::new_session_id();
    sessions::create(conn, &session_id, Some(user.id), None, at)?;
    let refresh = new_refresh(conn, settings, &session_id, at)?;
    let (access, expires_in) = access_token(
        jwt,
        settings,
        Principal::User(user.id),
        role,
        user.hospital_id,
        &session_id,
        at,
    )?;
    Ok(Issued {
        access_token: access,
        expires_in,
        refresh_token: Some(refresh),
    })
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
    let (access, expires_in) = access_token(
        jwt,
        settings,
        Principal::Client(client.id),
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
    let invalid = || ApiError::unauthorized("invalid_refresh_token", "the refresh token is not valid");
    let token = sessions::find_refresh_token(conn, &tokens::sha256_hex(presented))?.ok_or_else(invalid)?;
    let session = sessions::find(conn, &token.session_id)?.ok_or_else(invalid)?;
    if session.revoked_at.is_some() {
        return Err(ApiError::unauthorized(
            "session_revoked",
            "this session has ended; sign in again",
        ));
    }
    if token.used_at.is_some() || !sessions::spend_refresh_token(conn, token.id, at)? {
        sessions::revoke(conn, &session.id, "refresh_token_reuse", at)?;
        tracing::warn!(session = %session.id, "spent refresh token presented again; session revoked");
        return Ok(RefreshOutcome::Reused);
    }
    if token.expires_at <= at {
        return Err(ApiError::unauthorized(
            "refresh_token_expired",
            "the refresh token has expired; sign in again",
        ));
    }
    let user_id = session.user_id.ok_or_else(invalid)?;
    let user = users::find(conn, user_id)?.ok_or_else(invalid)?;
    if !user.active {
        return Err(ApiError::unauthorized(
            "account_inactive",
            "this account has been deactivated",
        ));
    }
    let role: Role = user.role.parse().map_err(ApiError::internal)?;
    let refresh = new_refresh(conn, settings, &session.id, at)?;
    let (access, expires_in) = access_token(
        jwt,
        settings,
        Principal::User(user.id),
        role,
        user.hospital_id,
        &session.id,
        at,
    )?;
    Ok(RefreshOutcome::Rotated(
        Issued {
            access_token: access,
            expires_in,
            refresh_token: Some(refresh),
        },
        user,
    ))
}
