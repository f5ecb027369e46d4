//! The rate limits in front of every route: a token bucket per client address and one per
//! account, this instance's share of each (`state::Limits`). Over either, 429 `rate_limited`
//! with `Retry-After`, answered in the surface's own form (problem+json, a FHIR
//! OperationOutcome, a console page) before anything else runs.
//!
//! The account is known without a database read: the bearer token's `sub` once its signature
//! checks out (an invalid or expired token is left to the handler's 401), or the console
//! session cookie (by its hash). Health probes are not limited.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let exempt = matches!(req.path(), "/healthz" | "/readyz");
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let (false, Some(state)) = (exempt, state) {
        let http = req.request();
        let address = super::auth::client_address(http, &state);
        let refused = match state.limits.take_address(&address) {
            Err(secs) => Some((secs, "address")),
            Ok(()) => account_key(http, &state)
                .and_then(|account| state.limits.take_account(&account).err())
                .map(|secs| (secs, "account")),
        };
        if let Some((secs, per)) = refused {
            tracing::info!(%address, per, retry_after = secs, "rate limited");
            let err = ApiError::retry_after(
                ErrorCode::RateLimited,
                format!("too many requests from this {per}; retry after {secs} s"),
                secs,
            );
            let response = refusal(http, &err);
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The account a request speaks for, as far as can be told without the database.
fn account_key(req: &HttpRequest, state: &AppState) -> Option<String> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if let Some(token) = bearer {
        return state
            .jwt
            .verify(token, chrono::Utc::now().timestamp())
            .ok()
            .map(|claims| claims.sub);
    }
    super::console::session_cookie(req).map(|cookie| {
        let hash = crate::auth::tokens::sha256_hex(&cookie);
        format!("console:{}", hash.get(..32).unwrap_or(&hash))
    })
}

/// `err` in the form of the surface `req` addressed: problem+json, a FHIR OperationOutcome or
/// a console page.
fn refusal(req: &HttpRequest, err: &ApiError) -> HttpResponse {
    refusal_at(req.path(), err)
}

/// `err` in the form of the surface `path` is under.
pub fn refusal_at(path: &str, err: &ApiError) -> HttpResponse {
    if path.starts_with("/console") {
        return super::console::ConsoleError::from(ApiError::retry_after(
            err.code(),
            err.problem().detail,
            err.retry_after_secs().unwrap_or(1),
        ))
        .error_response();
    }
    if path.starts_with("/fhir/") {
        let mut res = super::fhir::outcome::response(&err.problem());
        if let Some(secs) = err.retry_after_secs()
            && let Ok(v) = header::HeaderValue::from_str(&secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    err.error_response()
}
