//! Webhook subscriptions: which alert kinds go to which receiver, and what was delivered to it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::delivery::SECRET_CONTEXT;
use crate::credentials::sealed::Keyring;
use crate::domain::alerts::AlertKind;
use crate::domain::destinations::Refusal;
use crate::error::{ApiError, ApiResult, ErrorCode, Validator};
use crate::services::{from_stored_json, to_json, to_value, utc};
use crate::store::audit::{self, Actor, Change};
use crate::store::webhooks::{self as rows, Subscription};
use crate::store::{self, DbConn};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://interface.example-hospital.org/granulo", "events": ["unit.expiring", "unit.quarantined"], "secret": "a long random shared secret", "hospital_id": 3}))]
pub struct SubscriptionInput {
    /// `https://…`. Loopback, private, link-local, multicast, unique-local and other special
    /// addresses are refused (`webhook_destination_refused`), as is `http://`, unless the
    /// operator allowed the host or network (`GRANULO_WEBHOOK_ALLOW`).
    pub url: String,
    /// Alert kinds (`AlertKind`), or `["*"]` for all.
    pub events: Vec<String>,
    /// Shared secret for the signature, 16–256 characters.
    #[schema(min_length = 16, max_length = 256)]
    pub secret: String,
    /// Limit deliveries to events about this hospital's patients and units.
    #[schema(minimum = 1)]
    pub hospital_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    #[schema(minimum = 1)]
    pub hospital_id: Option<i64>,
    pub active: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub alert_id: i64,
    /// The alert event delivered.
    pub alert_event_id: i64,
    /// The alert kind.
    pub event: String,
    /// What happened to the alert: `raised`, `escalated` or `repeated`.
    pub transition: String,
    /// `pending`, `delivered`, or `failed` (gave up).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

fn view(s: Subscription) -> ApiResult<SubscriptionView> {
    Ok(SubscriptionView {
        events: from_stored_json("events", &s.events)?,
        id: s.id,
        url: s.url,
        hospital_id: s.hospital_id,
        active: s.active,
        created_by: s.created_by,
        created_at: utc(s.created_at),
    })
}

/// Creates a subscription; `destination` is the outcome of `check_destination` on its URL (which
/// resolves names, so the route runs it before the transaction). The secret is stored sealed.
pub fn create(
    conn: &mut DbConn,
    actor: &Actor,
    ring: &Keyring,
    input: SubscriptionInput,
    destination: Result<(), Refusal>,
) -> ApiResult<SubscriptionView> {
    let mut v = Validator::new();
    let url = input.url.trim().to_owned();
    v.check(
        (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 2000
            && !url.chars().any(char::is_whitespace),
        "url",
        "must be an http(s) URL",
    );
    v.check(!input.events.is_empty(), "events", "must name at least one event or *");
    let mut events: Vec<String> = Vec::new();
    for (i, e) in input.events.iter().enumerate() {
        let e = e.trim();
        if e == "*" || AlertKind::parse(e).is_some() {
            if !events.iter().any(|x| x == e) {
                events.push(e.to_owned());
            }
        } else {
            v.push(
                &format!("events[{i}]"),
                format!("{e:?} is not an event (see the documentation)"),
            );
        }
    }
    v.check(
        (16..=256).contains(&input.secret.chars().count()),
        "secret",
        "must be 16 to 256 characters",
    );
    if destination == Err(Refusal::NotHttp) {
        v.push("url", "must be an http(s) URL with a host");
    }
    v.finish()?;
    if let Err(refusal) = destination {
        return Err(ApiError::new(ErrorCode::WebhookDestinationRefused, refusal.to_string()));
    }
    if let Some(h) = input.hospital_id
        && store::hospitals::find(conn, h)?.is_none()
    {
        return Err(ApiError::unknown(ErrorCode::UnknownHospital, "hospital", h));
    }
    let sealed = ring.seal_str(&input.secret, SECRET_CONTEXT);
    let row = rows::insert(
        conn,
        &rows::NewSubscription {
            url: &url,
            events: to_json(&events)?,
            secret: &sealed,
            hospital_id: input.hospital_id,
            active: true,
            created_by: &actor.name,
            created_at: store::now(),
        },
    )?;
    let created = view(row)?;
    audit::append(
        conn,
        actor,
        Change::created("webhook.create", "webhook", created.id, to_value(&created)?),
    )?;
    Ok(created)
}

pub fn list(conn: &mut DbConn) -> ApiResult<Vec<SubscriptionView>> {
    rows::list(conn)?.into_iter().map(view).collect()
}

pub fn deliveries(conn: &mut DbConn, id: i64) -> ApiResult<Vec<DeliveryView>> {
    rows::find(conn, id)?.ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(rows::of_subscription(conn, id)?
        .into_iter()
        .map(|(d, transition)| DeliveryView {
            id: d.id,
            alert_id: d.alert_id,
            alert_event_id: d.alert_event_id,
            event: d.event,
            transition,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: utc(d.next_attempt_at),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(utc),
        })
        .collect())
}
