//! The middleware that makes every answer to a bearer caller wait for its session check
//! (`state::SessionGate`): the handler's first unit of work normally runs the check on its own
//! connection; when the handler answered without one (a 403 from the role check, a 422 from
//! its input, a route that reads nothing) the check runs here, in one hop, and a refusal
//! replaces the answer. So a revoked token gets 401 whatever the handler would have said.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::error::ApiError;
use crate::state::{AppState, GateOutcome, SessionGate};

pub async fn session_gate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Not a clone of the request: routing needs it unshared.
    let path = req.path().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let gate = Arc::new(SessionGate::default());
    let res = SessionGate::scope(Arc::clone(&gate), next.call(req)).await;
    let refusal = match gate.outcome() {
        GateOutcome::Clear => None,
        GateOutcome::Refused(err) => Some(err),
        GateOutcome::Pending(check) => {
            let checked = match state {
                // Outside the scope: this hop runs only the check.
                Some(state) => state.db(move |conn| check(conn)).await,
                None => Err(ApiError::internal(anyhow::anyhow!("AppState missing"))),
            };
            checked.err()
        }
    };
    let Some(err) = refusal else {
        return res.map(ServiceResponse::map_into_left_body);
    };
    let mut response = super::limits::refusal_at(&path, &err);
    if response.status() == actix_web::http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer realm=\"granulo\""),
        );
    }
    match res {
        Ok(answered) => {
            let (http, _) = answered.into_parts();
            Ok(ServiceResponse::new(http, response).map_into_right_body())
        }
        Err(_) => Err(actix_web::error::InternalError::from_response(err, response).into()),
    }
}
