//! Webhook subscriptions (admin) and their delivery log.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::input::parse_id;
use crate::services::webhooks::{self as work, DeliveryView, SubscriptionInput, SubscriptionView};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    pub items: Vec<SubscriptionView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// Subscribe a URL to alert events. Deliveries are signed `X-Granulo-Signature:
/// sha256=<hex HMAC-SHA256 of the body with the secret>`, carry `X-Granulo-Timestamp`, and are
/// retried with exponential backoff. A subscription with `hospital_id` receives only events about
/// that hospital's patients and units.
#[utoipa::path(
    post, path = "/api/v1/webhooks", operation_id = "create_webhook", tag = "alerts", security(("bearer" = [])), request_body = SubscriptionInput,
    responses(
        (status = 201, description = "the subscription created (its secret is never shown)", body = SubscriptionView),
        (status = 422, description = "`unknown_hospital`; `webhook_destination_refused` (the URL's host is or resolves to a loopback, private, link-local, multicast, unique-local or other special address, or is `http://`, and `GRANULO_WEBHOOK_ALLOW` does not list it)", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<SubscriptionInput>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let (actor, input) = (caller.actor(), body.into_inner());
    let destination = work::check_destination(&state.settings, input.url.trim()).await;
    let ring = state.secrets.clone();
    let created = state
        .write(move |conn| work::create(conn, &actor, &ring, input, destination))
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Subscriptions (secrets are never shown).
#[utoipa::path(
    get, path = "/api/v1/webhooks", operation_id = "list_webhooks", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, description = "the subscriptions, without secrets", body = SubscriptionList))
)]
pub async fn list(state: web::Data<AppState>, caller: AuthUser) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let items = state.db(work::list).await?;
    Ok(HttpResponse::Ok().json(SubscriptionList {
        items,
        next_cursor: None,
    }))
}

/// The delivery log of a subscription, newest first.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}/deliveries", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the subscription's deliveries, newest first", body = DeliveryList))
)]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let id = parse_id(&id, "webhook")?;
    let items = state.db(move |conn| work::deliveries(conn, id)).await?;
    Ok(HttpResponse::Ok().json(DeliveryList {
        items,
        next_cursor: None,
    }))
}
