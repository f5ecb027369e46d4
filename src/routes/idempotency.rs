//! The `Idempotency-Key` middleware for every honouring POST (see [`honours`]): it reserves the
//! key before the handler runs and stores the answer after, so that a retry, on this instance or
//! another, gets the first answer instead of writing twice.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use super::with_policy;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::services::idempotency::{self as work, Answer, Attempt, Claim};
use crate::state::AppState;

/// Headers a replay repeats with the body.
const REPLAYED_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::ETAG,
    header::LAST_MODIFIED,
];

/// Whether a POST to `path` honours `Idempotency-Key` through this middleware. Not:
/// * `/api/v1/auth/…`: the answers carry tokens (secrets are never stored);
/// * `/api/v1/hospitals/{id}/clients`: the answer shows the client secret once;
/// * `/api/v1/users` and `/api/v1/webhooks`: the body carries a password or the signing secret,
///   and a stored hash of it could be guessed offline; a retry of the first is refused by the
///   unique username anyway;
/// * `/api/v1/isbt128/decode`: it changes nothing;
/// * `/api/v1/requests`: the handler stores the key in its own transaction (stronger).
///
/// The console (`/console`) is not under this middleware: cookie forms with CSRF tokens.
pub fn honours(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    if path.starts_with("/fhir/R5/") {
        return true;
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return false;
    };
    let client_secret = rest
        .strip_prefix("hospitals/")
        .is_some_and(|r| r.split('/').nth(1) == Some("clients") && r.split('/').count() == 2);
    !(rest.starts_with("auth/")
        || client_secret
        || matches!(rest, "users" | "webhooks" | "isbt128/decode" | "requests"))
}

pub async fn idempotency_key(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !honours(req.method(), req.path()) || !req.headers().contains_key("Idempotency-Key") {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let key = match work::parse_key(req.headers().get("Idempotency-Key")) {
        Ok(Some(key)) => key,
        Ok(None) => return next.call(req).await.map(ServiceResponse::map_into_boxed_body),
        Err(e) => return Err(e.into()),
    };
    // Without a caller there is no account to keep the key for: the handler answers 401.
    let Ok(caller) = req.extract::<AuthUser>().await else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(ApiError::internal(anyhow::anyhow!("AppState missing")).into());
    };
    let body = read_body(&mut req).await?;
    let attempt = Attempt {
        account: work::account(&caller.actor()),
        key,
        method: req.method().to_string(),
        path: req.path().to_owned(),
        body_hash: work::body_hash(&body),
    };
    req.set_payload(actix_web::dev::Payload::from(body));
    let claim = state
        .write(with_policy(move |conn, policy| work::claim(conn, &attempt, policy)))
        .await?;
    let id = match claim {
        Claim::Replay(answer) => {
            let (http, _) = req.into_parts();
            return Ok(ServiceResponse::new(http, replayed(answer)));
        }
        Claim::Reserved(id) => id,
    };
    let res = next.call(req).await;
    let res = match res {
        Ok(res) => res,
        Err(e) => {
            // The handler never produced an answer; whether it wrote is unknown: the key stays
            // reserved until it expires.
            tracing::warn!(reservation = id, "a POST under an Idempotency-Key failed: {e}");
            return Err(e);
        }
    };
    let status = res.status();
    if status.is_client_error() {
        // Refused: the unit of work rolled back (no partial writes), so a retry may run.
        if let Err(e) = state.db(move |conn| work::release(conn, id)).await {
            tracing::warn!(reservation = id, "an idempotency key could not be released: {e}");
        }
        return Ok(res.map_into_boxed_body());
    }
    if !status.is_success() {
        // A 5xx may follow a commit (a lost connection at COMMIT): the answer is unknown, so
        // the key stays reserved and a retry is told so rather than writing again.
        return Ok(res.map_into_boxed_body());
    }
    let (http, res) = res.into_parts();
    let headers: Vec<(String, String)> = REPLAYED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = res.headers().get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    let (res, body) = res.into_parts();
    let bytes = match actix_web::body::to_bytes(body).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(ApiError::internal(anyhow::anyhow!("the answer could not be read")).into());
        }
    };
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => {
            let answer = Answer {
                status: status.as_u16(),
                headers,
                body: text,
            };
            if let Err(e) = state.db(move |conn| work::complete(conn, id, &answer)).await {
                tracing::warn!(
                    reservation = id,
                    "the answer for an idempotency key was not stored: {e}"
                );
            }
        }
        Err(_) => tracing::warn!(reservation = id, "an answer that is not UTF-8 was not stored"),
    }
    Ok(ServiceResponse::new(http, res.set_body(BoxBody::new(bytes))))
}

async fn read_body(req: &mut ServiceRequest) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut payload = actix_web::HttpMessage::take_payload(req);
    crate::extract::read_limited(declared, &mut payload).await
}

/// A replayed first answer, marked as such.
pub fn replayed(answer: Answer) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(answer.status).unwrap_or(actix_web::http::StatusCode::OK);
    let mut res = HttpResponse::build(status);
    for (name, value) in answer.headers {
        res.insert_header((name, value));
    }
    res.insert_header(("Idempotent-Replayed", "true")).body(answer.body)
}
