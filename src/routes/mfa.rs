//! The second factor over HTTP: the second sign-in step, enrolment, recovery codes and an
//! admin's reset. The rules live in `auth::mfa`; these answers carry secrets, so they are
//! never cached.

use actix_web::{FromRequest as _, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{TokenResponse, client_address, token_response};
use crate::auth::mfa::{self, Factor};
use crate::auth::{AuthUser, Principal, session, totp};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::extract::JsonBody;
use crate::input::parse_id;
use crate::state::AppState;
use crate::store::{now, users};

/// The second step: the challenge with either the app's current code or a recovery code (the
/// document says "exactly one": a body with both, or neither, is refused).
#[derive(Deserialize, ToSchema)]
#[serde(untagged, try_from = "MfaLoginFields")]
#[schema(example = json!({"challenge": "the challenge from POST /api/v1/auth/login", "code": "492039"}))]
pub enum MfaLoginRequest {
    Code(MfaCodeLogin),
    Recovery(MfaRecoveryLogin),
}

/// The body as sent, so that a wrong combination is refused in words, not as "no variant".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaLoginFields {
    challenge: String,
    code: Option<String>,
    recovery_code: Option<String>,
}

impl TryFrom<MfaLoginFields> for MfaLoginRequest {
    type Error = &'static str;

    fn try_from(f: MfaLoginFields) -> Result<Self, Self::Error> {
        match (f.code, f.recovery_code) {
            (Some(code), None) => Ok(Self::Code(MfaCodeLogin {
                challenge: f.challenge,
                code,
            })),
            (None, Some(recovery_code)) => Ok(Self::Recovery(MfaRecoveryLogin {
                challenge: f.challenge,
                recovery_code,
            })),
            _ => Err("give either code or recovery_code, not both"),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaCodeLogin {
    pub challenge: String,
    /// The 6-digit code the authenticator app shows now.
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaRecoveryLogin {
    pub challenge: String,
    /// One of the recovery codes shown at enrolment, instead of `code`; each works once.
    pub recovery_code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"challenge": "the challenge from POST /api/v1/auth/login"}))]
pub struct MfaEnrolRequest {
    /// The sign-in challenge of an account that must enrol before it gets tokens; omit it
    /// when signed in (Bearer token).
    pub challenge: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "492039", "challenge": "the challenge from POST /api/v1/auth/login"}))]
pub struct MfaConfirmRequest {
    /// The current code from the app the secret was entered into.
    pub code: String,
    /// As at `/auth/mfa/enrol`: with it, confirming also completes the sign-in.
    pub challenge: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "492039"}))]
pub struct MfaCodeRequest {
    pub code: String,
}

/// What to enter in an authenticator app (no QR code: most apps take the URI or the secret).
#[derive(Serialize, ToSchema)]
pub struct MfaEnrolmentResponse {
    /// The seed in base32 (160 bits).
    pub secret: String,
    /// `otpauth://totp/granulo:<username>?secret=…&issuer=granulo…`
    pub otpauth_uri: String,
    /// `SHA1`.
    pub algorithm: &'static str,
    pub digits: usize,
    /// Seconds per code.
    pub period: u64,
}

#[derive(Serialize, ToSchema)]
pub struct MfaConfirmResponse {
    /// Shown this once: each signs in once instead of a code. Keep them offline.
    pub recovery_codes: Vec<String>,
    /// The session, when the enrolment was made with a sign-in challenge.
    pub session: Option<TokenResponse>,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    /// Shown this once; the previous codes no longer work.
    pub recovery_codes: Vec<String>,
}

fn no_store(body: impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

/// A wrong code from someone already signed in is no failed authentication of the request
/// (401 would tell the client to sign in again): 422.
fn signed_in_refusal(err: ApiError) -> ApiError {
    if err.code() == ErrorCode::MfaCodeInvalid {
        ApiError::new(
            ErrorCode::MfaCodeRejected,
            "the code is wrong or was already used; wait for the next code from your authenticator app",
        )
    } else {
        err
    }
}

fn address_key(req: &HttpRequest, state: &AppState) -> String {
    session::address_throttle_key(&client_address(req, state))
}

/// The person behind a Bearer token (hospital systems have no second factor).
async fn bearer_user(req: &HttpRequest, state: &AppState) -> ApiResult<users::User> {
    person(state, AuthUser::extract(req).await?).await
}

async fn person(state: &AppState, caller: AuthUser) -> ApiResult<users::User> {
    let Principal::User(id) = caller.principal else {
        return Err(ApiError::forbidden(
            "a hospital system signs in with its client secret; second factors are for people",
        ));
    };
    state
        .db(move |conn| users::find(conn, id)?.ok_or_else(|| ApiError::not_found("user")))
        .await
}

/// Answer a sign-in challenge with a code or a recovery code.
#[utoipa::path(
    post, path = "/api/v1/auth/login/mfa", tag = "auth", request_body = MfaLoginRequest,
    responses(
        (status = 200, description = "signed in: an access and a refresh token", body = TokenResponse),
        (status = 400, description = "`validation_failed`: give a code or a recovery code", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "`mfa_challenge_invalid`, `mfa_code_invalid`, `account_inactive`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`mfa_enrolment_required`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many wrong codes for this account or address", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login_mfa(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<MfaLoginRequest>,
) -> ApiResult<HttpResponse> {
    let (challenge, factor) = match body.into_inner() {
        MfaLoginRequest::Code(b) => (b.challenge, Factor::Code(b.code)),
        MfaLoginRequest::Recovery(b) => (b.challenge, Factor::Recovery(b.recovery_code)),
    };
    let address = address_key(&req, &state);
    let (keyring, settings, jwt) = (state.secrets.clone(), state.settings.clone(), state.jwt.clone());
    let (issued, user) = state
        .db(move |conn| {
            mfa::answer_challenge(
                conn,
                &keyring,
                &settings,
                &challenge,
                &factor,
                &address,
                now(),
                |conn, user| session::start_user_session(conn, &jwt, &settings, user, now()),
            )
        })
        .await??;
    tracing::info!(user = %user.username, "signed in with a second factor");
    Ok(no_store(token_response(issued, &user)?))
}

/// Start enrolling an authenticator app: a new secret, waiting for its first code at
/// `/auth/mfa/confirm`. Signed in (Bearer), or with the sign-in challenge of an account that
/// must enrol before it gets tokens.
#[utoipa::path(
    post, path = "/api/v1/auth/mfa/enrol", tag = "auth", request_body = MfaEnrolRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the secret for the app, shown once", body = MfaEnrolmentResponse),
        (status = 401, description = "`mfa_challenge_invalid`, or no valid token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`mfa_already_enrolled`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn enrol(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<MfaEnrolRequest>,
) -> ApiResult<HttpResponse> {
    let challenge = body.into_inner().challenge;
    let bearer = match challenge {
        Some(_) => None,
        None => Some(bearer_user(&req, &state).await?),
    };
    let keyring = state.secrets.clone();
    let enrolment = state
        .write(move |conn| {
            let user = match (bearer, challenge) {
                (Some(user), _) => user,
                (None, Some(challenge)) => mfa::open_challenge(conn, &challenge, now())?.1,
                (None, None) => return Err(ApiError::not_found("user")),
            };
            mfa::start_enrolment(conn, &keyring, &mfa::user_actor(&user), &user, now())
        })
        .await?;
    Ok(no_store(MfaEnrolmentResponse {
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauth_uri,
        algorithm: "SHA1",
        digits: totp::DIGITS,
        period: totp::STEP_SECS,
    }))
}

/// Confirm an enrolment with the app's current code: the second factor is on from now, and
/// ten recovery codes are returned once. With the sign-in challenge, this completes the
/// sign-in (`session`).
#[utoipa::path(
    post, path = "/api/v1/auth/mfa/confirm", tag = "auth", request_body = MfaConfirmRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "the factor is on; recovery codes (once) and, with a challenge, the session", body = MfaConfirmResponse),
        (status = 401, description = "`mfa_code_invalid` (with a challenge), `mfa_challenge_invalid`, or no valid token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`mfa_code_rejected` (signed in)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`mfa_not_enrolled` (no enrolment started), `mfa_already_enrolled`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many wrong codes for this account or address", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<MfaConfirmRequest>,
) -> ApiResult<HttpResponse> {
    let MfaConfirmRequest { code, challenge } = body.into_inner();
    let bearer = match challenge {
        Some(_) => None,
        None => Some(bearer_user(&req, &state).await?),
    };
    let address = address_key(&req, &state);
    let (keyring, settings, jwt) = (state.secrets.clone(), state.settings.clone(), state.jwt.clone());
    let (codes, session, user) = state
        .db(move |conn| {
            let (user, challenge_id) = match (bearer, challenge) {
                (Some(user), _) => (user, None),
                (None, Some(challenge)) => {
                    let (found, user) = mfa::open_challenge(conn, &challenge, now())?;
                    (user, Some(found.id))
                }
                (None, None) => return Err(ApiError::not_found("user")),
            };
            let confirmed = mfa::confirm_enrolment(
                conn,
                &keyring,
                &settings,
                &user,
                challenge_id,
                &code,
                &address,
                now(),
                |conn, user| match challenge_id {
                    Some(_) => session::start_user_session(conn, &jwt, &settings, user, now()).map(Some),
                    None => Ok(None),
                },
            )?;
            let signed_in = challenge_id.is_none();
            Ok(confirmed
                .map(|(codes, session)| (codes, session, user))
                .map_err(|e| if signed_in { signed_in_refusal(e) } else { e }))
        })
        .await??;
    tracing::info!(user = %user.username, "second factor enrolled");
    let session = session.map(|issued| token_response(issued, &user)).transpose()?;
    Ok(no_store(MfaConfirmResponse {
        recovery_codes: codes,
        session,
    }))
}

/// New recovery codes, with a current code; the previous ones stop working.
#[utoipa::path(
    post, path = "/api/v1/auth/mfa/recovery-codes", tag = "auth", request_body = MfaCodeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "ten new recovery codes, shown once", body = RecoveryCodesResponse),
        (status = 403, description = "`forbidden`: a hospital system has no second factor", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`mfa_code_rejected`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`mfa_not_enrolled`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many wrong codes for this account or address", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn recovery_codes(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<MfaCodeRequest>,
) -> ApiResult<HttpResponse> {
    let code = body.into_inner().code;
    let user = person(&state, caller).await?;
    let address = address_key(&req, &state);
    let (keyring, settings) = (state.secrets.clone(), state.settings.clone());
    let codes = state
        .db(move |conn| mfa::regenerate_recovery_codes(conn, &keyring, &settings, &user, &code, &address, now()))
        .await?
        .map_err(signed_in_refusal)?;
    Ok(no_store(RecoveryCodesResponse { recovery_codes: codes }))
}

/// Remove a user's second factor (a lost device). The user's sessions end; a role that
/// requires a factor enrols again at its next sign-in. Audited.
#[utoipa::path(
    post, path = "/api/v1/users/{id}/mfa/reset", operation_id = "reset_user_mfa", tag = "users",
    security(("bearer" = [])), params(("id" = i64, Path, minimum = 1)),
    responses((status = 204, description = "the second factor is removed"))
)]
pub async fn reset(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let id = parse_id(&id, "user")?;
    let actor = caller.actor();
    state.write(move |conn| mfa::reset(conn, &actor, id, now())).await?;
    Ok(HttpResponse::NoContent().finish())
}
