//! Authentication and authorisation.
//!
//! A handler states who may call it by what it takes: [`AuthUser`] authenticates (Bearer JWT,
//! then the session and account are checked in the database so that logout, deactivation and
//! role changes take effect at once), and its `require_*` methods are the explicit role checks
//! on the handler's first lines. Hospital accounts carry their hospital for scoping.
//!
//! The database check shares the handler's blocking hop: the extractor registers it with the
//! request's `state::SessionGate`, the handler's first `state.db`/`state.write` runs it on the
//! same connection before the handler's closure, and `routes::session_gate` runs it for a
//! handler that answered without the database. No answer leaves before it passed.

pub mod challenge;
pub mod mfa;
pub mod session;

pub use crate::credentials::{jwt, password, role, tokens, totp};

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

pub use role::Role;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::{AppState, SessionCheck, SessionGate};
use crate::store::audit::{Actor, ActorKind};
use crate::store::{api_clients, hospitals, sessions};

/// Who is signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    User(i64),
    Client(i64),
}

impl Principal {
    pub fn subject(self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::Client(id) => format!("client:{id}"),
        }
    }

    pub fn parse_subject(sub: &str) -> Option<Self> {
        let (kind, id) = sub.split_once(':')?;
        let id: i64 = id.parse().ok()?;
        match kind {
            "user" => Some(Self::User(id)),
            "client" => Some(Self::Client(id)),
            _ => None,
        }
    }
}

/// An authenticated caller, with role and hospital as they are in the database now.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub principal: Principal,
    /// Username, or the client id of a hospital system.
    pub name: String,
    pub role: Role,
    pub hospital_id: Option<i64>,
    pub session_id: String,
}

impl AuthUser {
    pub fn actor(&self) -> Actor {
        match self.principal {
            Principal::User(id) => Actor {
                kind: ActorKind::User,
                id: Some(id),
                name: self.name.clone(),
            },
            Principal::Client(id) => Actor {
                kind: ActorKind::Client,
                id: Some(id),
                name: self.name.clone(),
            },
        }
    }

    /// Refuse with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> ApiResult<()> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "this action requires the role {}; you are {}",
                names.join(" or "),
                self.role
            )))
        }
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        self.require(&[Role::Admin])
    }

    pub fn require_staff(&self) -> ApiResult<()> {
        self.require(&Role::STAFF)
    }

    /// Staff see every hospital's records; a hospital account only its own.
    pub fn may_access_hospital(&self, hospital_id: i64) -> bool {
        self.role.is_staff() || self.hospital_id == Some(hospital_id)
    }

    /// The hospital a hospital account is limited to; `None` for staff (who see all).
    pub fn scope(&self) -> ApiResult<Option<i64>> {
        if self.role.is_staff() {
            return Ok(None);
        }
        self.hospital_id
            .map(Some)
            .ok_or_else(|| ApiError::forbidden("this account has no hospital"))
    }
}

fn bearer_token(req: &HttpRequest) -> ApiResult<String> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(ErrorCode::MissingToken, "an Authorization: Bearer token is required"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::InvalidToken, "the Authorization header is not valid text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "expected 'Authorization: Bearer <token>'"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "expected 'Authorization: Bearer <token>'",
        ));
    }
    Ok(token.trim().to_owned())
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    /// A token that carries its account's name, role and hospital is taken at its word here, with
    /// no database read: the session check is registered with the request's [`SessionGate`] and
    /// runs on the connection of the handler's unit of work, which does not run unless it
    /// passes (the gate middleware runs it for a handler that never reaches the database).
    /// This happens before the future is returned, so before any later extractor can refuse
    /// the request. Without a gate, or for an older token, the check is a hop of its own.
    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
            return Box::pin(async { Err(ApiError::internal(anyhow::anyhow!("AppState missing"))) });
        };
        let token = match bearer_token(req) {
            Ok(token) => token,
            Err(e) => return Box::pin(async { Err(e) }),
        };
        let gate = SessionGate::current();
        if let Some(gate) = &gate
            && let Some(verified) = verify_without_reload(&state, &token)
        {
            let result = verified.and_then(|claims| {
                let user = from_claims(&claims)?;
                gate.require(session_check(&user));
                Ok(user)
            });
            return Box::pin(async move { result });
        }
        if let Some(gate) = &gate {
            // The hop below checks; should a later extractor refuse the request first, the gate
            // middleware still does.
            gate.require(token_check(state.jwt.clone(), token.clone()));
        }
        // One hop: the keys re-read if due, the token verified, the session and account read.
        // Inside a gate the registered check runs first in it and does the re-read.
        let jwt = state.jwt.clone();
        Box::pin(async move { state.db(move |conn| authenticate(conn, &jwt, &token)).await })
    }
}

/// The token verified when that needs no database read: `None` when the keys are due a re-read or the
/// token is a kind (older, without the `name` claim) that is checked by its own hop.
fn verify_without_reload(state: &AppState, token: &str) -> Option<ApiResult<jwt::Claims>> {
    let jwt = &state.jwt;
    if jwt.reload_due(std::time::Instant::now()) {
        return None;
    }
    match jwt.verify(token, chrono::Utc::now().timestamp()) {
        Err(jwt::TokenError::UnknownKey) => None,
        Ok(claims) if claims.name.is_none() => None,
        other => Some(other.map_err(token_refusal)),
    }
}

fn token_refusal(e: jwt::TokenError) -> ApiError {
    match e {
        jwt::TokenError::Expired => ApiError::new(ErrorCode::TokenExpired, "the access token has expired; refresh it"),
        jwt::TokenError::Invalid | jwt::TokenError::UnknownKey => {
            ApiError::new(ErrorCode::InvalidToken, "the access token is not valid")
        }
    }
}

/// The caller as a verified token states it (role, hospital and name as they were at issue).
fn from_claims(claims: &jwt::Claims) -> ApiResult<AuthUser> {
    let invalid = || ApiError::new(ErrorCode::InvalidToken, "the access token is not valid");
    let principal = Principal::parse_subject(&claims.sub).ok_or_else(invalid)?;
    let name = claims.name.clone().ok_or_else(invalid)?;
    if matches!(principal, Principal::Client(_)) && (claims.role != Role::Hospital || claims.hospital_id.is_none()) {
        return Err(invalid());
    }
    Ok(AuthUser {
        principal,
        name,
        role: claims.role,
        hospital_id: claims.hospital_id,
        session_id: claims.sid.clone(),
    })
}

/// The check that makes a token stated caller good: the session open and the account active
/// (`load_principal`), and the account still the name, role and hospital the token states. A
/// change of role or hospital revokes the account's sessions (`accounts::update_user`), so a
/// mismatch is a race with that change and is answered as the revocation it is.
pub fn session_check(stated: &AuthUser) -> SessionCheck {
    let stated = stated.clone();
    Arc::new(move |conn: &mut crate::store::DbConn| {
        let now = load_principal(conn, stated.principal, &stated.session_id)?;
        if now.name != stated.name || now.role != stated.role || now.hospital_id != stated.hospital_id {
            return Err(ApiError::new(
                ErrorCode::SessionRevoked,
                "this account changed since the token was issued; sign in again",
            ));
        }
        Ok(())
    })
}

/// The whole check of a token that states nothing to trust before it (see [`authenticate`]).
fn token_check(jwt: jwt::JwtKeys, token: String) -> SessionCheck {
    Arc::new(move |conn: &mut crate::store::DbConn| authenticate(conn, &jwt, &token).map(|_| ()))
}

/// Verify a token on a connection, re-reading the signing keys when this instance's copy is
/// old, and for a `kid` it does not know (another instance may have rotated) at most once per
/// `jwt::UNKNOWN_KID_RELOAD`; then check its session and account.
fn authenticate(conn: &mut crate::store::DbConn, jwt: &jwt::JwtKeys, token: &str) -> ApiResult<AuthUser> {
    if jwt.claim_stale_reload(std::time::Instant::now()) {
        crate::store::signing_keys::refresh(conn, jwt)?;
    }
    let now = chrono::Utc::now().timestamp();
    let claims = match jwt.verify(token, now) {
        Err(jwt::TokenError::UnknownKey) if jwt.claim_unknown_kid_reload(std::time::Instant::now()) => {
            crate::store::signing_keys::refresh(conn, jwt)?;
            jwt.verify(token, now)
        }
        other => other,
    }
    .map_err(token_refusal)?;
    let principal = Principal::parse_subject(&claims.sub)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the access token is not valid"))?;
    load_principal(conn, principal, &claims.sid)
}

/// Check the session and account behind a token; the account's current role is used.
pub fn load_principal(conn: &mut crate::store::DbConn, principal: Principal, sid: &str) -> ApiResult<AuthUser> {
    // The session and its user in one query: this runs before every authenticated request.
    let (session, session_user) = sessions::find_with_user(conn, sid)?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the access token is not valid"))?;
    if session.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::SessionRevoked,
            "this session has ended; sign in again",
        ));
    }
    let matches = match principal {
        Principal::User(id) => session.user_id == Some(id),
        Principal::Client(id) => session.api_client_id == Some(id),
    };
    if !matches {
        return Err(ApiError::new(ErrorCode::InvalidToken, "the access token is not valid"));
    }
    match principal {
        Principal::User(_) => {
            // The session's user, which is the token's (checked above).
            let user =
                session_user.ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the access token is not valid"))?;
            if let Some(refusal) = session::user_refusal(conn, &user)? {
                return Err(refusal);
            }
            let role: Role = user.role.parse().map_err(ApiError::internal)?;
            Ok(AuthUser {
                principal,
                name: user.username,
                role,
                hospital_id: user.hospital_id,
                session_id: session.id,
            })
        }
        Principal::Client(id) => {
            let client = api_clients::find(conn, id)?
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "the access token is not valid"))?;
            if !client.active {
                return Err(ApiError::new(
                    ErrorCode::AccountInactive,
                    "this client credential has been revoked",
                ));
            }
            if !hospitals::is_active(conn, client.hospital_id)? {
                return Err(session::hospital_inactive());
            }
            Ok(AuthUser {
                principal,
                name: client.client_id,
                role: Role::Hospital,
                hospital_id: Some(client.hospital_id),
                session_id: session.id,
            })
        }
    }
}

/// The staff member behind a console cookie, checked like a bearer token on every request:
/// the session must be open and within its shift, the account active and a staff role.
pub fn load_console_user(
    conn: &mut crate::store::DbConn,
    cookie: &str,
    at: chrono::NaiveDateTime,
) -> ApiResult<AuthUser> {
    let not_signed_in = || ApiError::new(ErrorCode::NotSignedIn, "sign in to use the console");
    let (session, user) =
        sessions::find_by_cookie_hash(conn, &tokens::sha256_hex(cookie))?.ok_or_else(not_signed_in)?;
    if session.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::SessionRevoked,
            "this session has ended; sign in again",
        ));
    }
    if session.expires_at.is_none_or(|end| end <= at) {
        return Err(ApiError::new(
            ErrorCode::SessionExpired,
            "this session reached the end of its shift; sign in again",
        ));
    }
    let user = user.ok_or_else(not_signed_in)?;
    if let Some(refusal) = session::user_refusal(conn, &user)? {
        return Err(refusal);
    }
    let role: Role = user.role.parse().map_err(ApiError::internal)?;
    if !role.is_staff() {
        return Err(session::console_not_for(role));
    }
    Ok(AuthUser {
        principal: Principal::User(user.id),
        name: user.username,
        role,
        hospital_id: user.hospital_id,
        session_id: session.id,
    })
}
