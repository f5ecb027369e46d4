//! `/metrics`, the Prometheus text exposition. On the main port it takes the bearer token
//! `GRANULO_METRICS_TOKEN` or an admin's access token; on `GRANULO_METRICS_BIND`, a listener
//! meant for the operator's network that serves nothing else, it is open.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest as _, HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::services::metrics::PoolState;
use crate::state::AppState;

/// The metrics of this instance and of the data it serves, in the Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "health", security(("bearer" = [])),
    description = "Prometheus text exposition (version 0.0.4). The bearer token is GRANULO_METRICS_TOKEN \
                   or an admin's access token. GRANULO_METRICS_BIND serves the same without a token on a \
                   separate address.",
    responses((status = 200, description = "the metrics", content_type = "text/plain", body = String))
)]
pub async fn scrape(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if !holds_metrics_token(&req, &state) {
        AuthUser::from_request(&req, &mut Payload::None)
            .await?
            .require_admin()?;
    }
    exposition(&state).await
}

/// The separate listener's handler: no token (the address is the protection).
pub async fn open_scrape(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    exposition(&state).await
}

async fn exposition(state: &AppState) -> ApiResult<HttpResponse> {
    let pool = PoolState::of(&state.pool);
    let text = state
        .db(move |conn| crate::services::metrics::render(conn, chrono::Utc::now(), pool))
        .await?;
    Ok(HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(text))
}

/// The request's bearer token is the configured metrics token (compared in constant time, as
/// digests so that the length does not show either).
fn holds_metrics_token(req: &HttpRequest, state: &AppState) -> bool {
    let Some(expected) = state.settings.metrics_token.as_ref() else {
        return false;
    };
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    let expected = Sha256::digest(expected.expose_secret().as_bytes());
    let given = Sha256::digest(given.as_bytes());
    expected.ct_eq(&given).into()
}
