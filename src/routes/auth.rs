//! Sign-in, token refresh, logout and the caller's own account.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::session::{self, Issued, RefreshOutcome, SignIn};
use crate::auth::{AuthUser, Principal, Role, password};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::JsonBody;
use crate::state::{AppState, cpu};
use crate::store::{now, users};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "j.smith", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"client_id": "gc_2fad927b5b5722a6fab16c2e", "client_secret": "the secret shown once at creation"}))]
pub struct ClientTokenRequest {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"refresh_token": "the refresh_token from sign-in"}))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// The signed-in account as tokens describe it.
#[derive(Serialize, ToSchema)]
pub struct SessionUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub hospital_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single use: each refresh returns a new one. Present a spent one and the session ends.
    pub refresh_token: String,
    pub user: SessionUser,
}

/// The second sign-in step is needed: answer with a code at `/auth/login/mfa`, or enrol
/// first when `enrolment_required`.
#[derive(Serialize, ToSchema)]
pub struct MfaChallengeResponse {
    /// Always `true`.
    pub mfa_required: bool,
    /// Single use, bound to the account; valid `expires_in` seconds.
    pub challenge: String,
    pub expires_in: i64,
    /// The role requires a second factor the account does not have yet: the challenge only
    /// serves `/auth/mfa/enrol` and `/auth/mfa/confirm`.
    pub enrolment_required: bool,
}

/// Tokens, or the second step's challenge.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(TokenResponse),
    Mfa(MfaChallengeResponse),
}

#[derive(Serialize, ToSchema)]
pub struct ClientTokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub role: Role,
    pub hospital_id: i64,
}

/// The caller.
#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    /// `user` or `client`.
    pub kind: &'static str,
    pub id: i64,
    /// Username, or the client id of a hospital system.
    pub name: String,
    pub role: Role,
    pub hospital_id: Option<i64>,
}

/// The client's address: the peer, or behind a trusted proxy the last `X-Forwarded-For` entry.
pub fn client_address(req: &HttpRequest, state: &AppState) -> String {
    let forwarded = if state.settings.trust_forwarded_for {
        last_forwarded_for(req)
    } else {
        None
    };
    let addr = forwarded.or_else(|| req.peer_addr().map(|a| a.ip().to_string()));
    // Strip a port if the forwarded value carries one.
    addr.map(|a| match a.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => a,
    })
    .unwrap_or_else(|| "unknown".to_owned())
}

/// The address our proxy saw: the last `X-Forwarded-For` entry (proxies append). The entries
/// before it came from the client, which can write anything there.
fn last_forwarded_for(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .last()
        .map(str::to_owned)
}

pub fn token_response(issued: Issued, user: &users::User) -> ApiResult<TokenResponse> {
    let role: Role = user.role.parse().map_err(ApiError::internal)?;
    Ok(TokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        refresh_token: issued.refresh_token.unwrap_or_default(),
        user: SessionUser {
            id: user.id,
            username: user.username.clone(),
            role,
            hospital_id: user.hospital_id,
        },
    })
}

/// Sign in with username and password. An account with a second factor, or whose role the
/// policy requires one for (`security.mfa_required_roles`), gets a challenge instead of
/// tokens: answer it at `POST /api/v1/auth/login/mfa`, or, when `enrolment_required`, enrol
/// with it (`/auth/mfa/enrol`, then `/auth/mfa/confirm`, which completes the sign-in).
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "signed in (an access and a refresh token), or a second step is needed (`mfa_required`)", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`, `account_inactive`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many failures for this username or address", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<LoginRequest>,
) -> ApiResult<HttpResponse> {
    let LoginRequest { username, password } = body.into_inner();
    let (attempt, user, verified) = check_password(&req, &state, &username, password).await?;
    let settings = state.settings.clone();
    let jwt = state.jwt.clone();
    let (outcome, user) = state
        .write(super::with_policy(move |conn, policy| {
            session::finish_password_sign_in(conn, &policy.security, &jwt, &settings, user, verified, &attempt, now())
        }))
        .await??;
    let answer = match outcome {
        SignIn::Open(issued) => {
            tracing::info!(user = %user.username, "signed in");
            LoginResponse::Tokens(token_response(issued, &user)?)
        }
        SignIn::Challenge(issued) => {
            tracing::info!(user = %user.username, enrolment = issued.enrolment_required, "password right; second step asked");
            LoginResponse::Mfa(MfaChallengeResponse {
                mfa_required: true,
                challenge: issued.challenge,
                expires_in: issued.expires_in,
                enrolment_required: issued.enrolment_required,
            })
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(answer))
}

/// The throttled password check both sign-in doors (API and console) share: the attempt is
/// counted first, and an unknown username is checked against a dummy hash so that it costs the
/// same time. Finish with `session::finish_password_sign_in` or `finish_console_sign_in`.
pub async fn check_password(
    req: &HttpRequest,
    state: &AppState,
    username: &str,
    password: String,
) -> ApiResult<(session::Attempt, Option<users::User>, bool)> {
    let username = username.trim().to_lowercase();
    let user_key = session::user_throttle_key(&username);
    let addr_key = session::address_throttle_key(&client_address(req, state));
    let settings = state.settings.clone();
    let (attempt, user) = state
        .db(move |conn| {
            let attempt = session::begin_attempt(conn, &settings, &user_key, &addr_key, now())?;
            let user = if attempt.is_ok() {
                users::find_by_username(conn, &username)?
            } else {
                None
            };
            Ok((attempt, user))
        })
        .await?;
    let attempt = attempt?;
    let stored = user
        .as_ref()
        .map_or_else(|| state.dummy_password_hash.to_string(), |u| u.password_hash.clone());
    let verified = cpu(move || password::verify(&password, &stored)).await?;
    Ok((attempt, user, verified))
}

/// Client-credentials sign-in for a hospital system; the token is scoped to its hospital.
#[utoipa::path(
    post, path = "/api/v1/auth/token", tag = "auth", request_body = ClientTokenRequest,
    responses(
        (status = 200, description = "an access token scoped to the client's hospital", body = ClientTokenResponse),
        (status = 401, description = "`invalid_client`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many failures for this client or address", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn client_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<ClientTokenRequest>,
) -> ApiResult<HttpResponse> {
    let ClientTokenRequest {
        client_id,
        client_secret,
    } = body.into_inner();
    let addr_key = session::address_throttle_key(&client_address(&req, &state));
    let settings = state.settings.clone();
    let jwt = state.jwt.clone();
    let (issued, client) = state
        .db(move |conn| {
            session::client_sign_in(
                conn,
                &jwt,
                &settings,
                client_id.trim(),
                &client_secret,
                &addr_key,
                now(),
            )
        })
        .await??;
    let outcome = ClientTokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        role: Role::Hospital,
        hospital_id: client.hospital_id,
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(outcome))
}

/// Exchange a refresh token for a new pair. Each refresh token works once; presenting a
/// spent one ends the whole session (token theft is assumed).
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "a new access and refresh token pair", body = TokenResponse),
        (status = 401, description = "`invalid_refresh_token`, `refresh_token_reused`, `refresh_token_expired`, `session_revoked`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(state: web::Data<AppState>, body: JsonBody<RefreshRequest>) -> ApiResult<HttpResponse> {
    let presented = body.into_inner().refresh_token;
    let settings = state.settings.clone();
    let jwt = state.jwt.clone();
    let outcome = state
        .write(move |conn| session::refresh(conn, &jwt, &settings, &presented, now()))
        .await?;
    match outcome {
        RefreshOutcome::Rotated(issued, user) => Ok(HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(token_response(issued, &user)?)),
        RefreshOutcome::Reused => Err(ApiError::new(
            ErrorCode::RefreshTokenReused,
            "this refresh token was already used; the session has been ended, sign in again",
        )),
    }
}

/// End the caller's session: its refresh tokens and access tokens stop working.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "signed out"))
)]
pub async fn logout(state: web::Data<AppState>, user: AuthUser) -> ApiResult<HttpResponse> {
    let sid = user.session_id.clone();
    state
        .write(move |conn| crate::store::sessions::revoke(conn, &sid, "logout", now()).map_err(Into::into))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's account.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])), responses((status = 200, description = "the caller's account", body = MeResponse)))]
pub async fn me(user: AuthUser) -> HttpResponse {
    let (kind, id) = match user.principal {
        Principal::User(id) => ("user", id),
        Principal::Client(id) => ("client", id),
    };
    HttpResponse::Ok().json(MeResponse {
        kind,
        id,
        name: user.name,
        role: user.role,
        hospital_id: user.hospital_id,
    })
}
