//! The delivery worker: sends queued deliveries, signed, and records each attempt.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use utoipa::ToSchema;

use super::destination::{self, Outbound};
use crate::credentials::sealed::Keyring;
use crate::domain::alerts::AlertTransition;
use crate::error::{ApiError, ApiResult};
use crate::services::utc;
use crate::store::alerts;
use crate::store::webhooks::{self as rows, Delivery};
use crate::store::{self, DbConn, Pool};

/// `sha256=` + hex HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Backoff after the `attempt`-th failure: 30 s doubling, at most an hour; give up after
/// `MAX_ATTEMPTS`.
pub const MAX_ATTEMPTS: i32 = 10;

pub fn backoff(attempt: i32) -> TimeDelta {
    let secs = 30_i64.saturating_mul(1_i64 << attempt.clamp(0, 20));
    TimeDelta::seconds(secs.min(3600))
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DeliveryReport {
    pub delivered: i64,
    pub failed: i64,
}

/// A delivery ready to send.
pub struct Outgoing {
    delivery: Delivery,
    transition: AlertTransition,
    url: String,
    /// The opened secret, or why it does not open (the delivery then fails without sending).
    secret: Result<SecretString, String>,
    body: Vec<u8>,
    sent_at: DateTime<Utc>,
}

/// The outcome of one attempt: the HTTP status, or the status and error of a failure.
pub type Attempt = (Delivery, Result<i32, (Option<i32>, String)>);

/// The context of sealed webhook secrets (`credentials::sealed`).
pub use crate::store::webhooks::SECRET_CONTEXT;

/// Opens a subscription's stored secret. A value that does not open (a wrong or missing
/// `GRANULO_SECRETS_KEY`, an altered row) fails that delivery with a logged error; the value
/// itself is never logged.
fn open_secret(ring: &Keyring, subscription_id: i64, stored: &str) -> Result<SecretString, String> {
    ring.open_string(stored, SECRET_CONTEXT).map_err(|e| {
        tracing::error!(
            subscription = subscription_id,
            error = %e,
            "a webhook secret does not open: is GRANULO_SECRETS_KEY (or its _PREVIOUS) the key it was sealed under?"
        );
        format!("the stored secret does not open under the configured secrets key ({e})")
    })
}

/// Every due delivery with its body: `{event, transition, sent_at, alert}`, the alert as the
/// delivered event left it (its severity and message then, the severity before an escalation).
pub fn load_due(conn: &mut DbConn, ring: &Keyring, now: DateTime<Utc>) -> ApiResult<Vec<Outgoing>> {
    let mut out = Vec::new();
    for d in rows::due(conn, store::truncate_micros(now.naive_utc()), 100)? {
        let Some(s) = rows::find(conn, d.subscription_id)? else {
            continue;
        };
        let Some(a) = alerts::find(conn, d.alert_id)? else {
            continue;
        };
        let Some(e) = alerts::find_event(conn, d.alert_event_id)? else {
            continue;
        };
        let body = serde_json::json!({
            "event": d.event,
            "transition": e.transition,
            "sent_at": now,
            "alert": {
                "id": a.id, "kind": a.kind, "severity": e.severity, "previous_severity": e.previous_severity,
                "entity_type": a.entity_type, "entity_id": a.entity_id, "message": e.message,
                "created_at": utc(a.created_at), "episode": a.episode, "occurred_at": utc(e.occurred_at),
            },
        });
        out.push(Outgoing {
            transition: e.transition,
            delivery: d,
            secret: open_secret(ring, s.id, &s.secret),
            url: s.url,
            body: serde_json::to_vec(&body).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?,
            sent_at: now,
        });
    }
    Ok(out)
}

/// Sends each delivery once. Headers: `X-Granulo-Signature: sha256=<hex HMAC of the body>`,
/// `X-Granulo-Timestamp` (= the body's `sent_at`, which the signature covers: receivers reject
/// old ones), `X-Granulo-Event` (the alert kind), `X-Granulo-Transition` (`raised`, `escalated`
/// or `repeated`), `X-Granulo-Delivery`.
/// A delivery whose destination is refused (see `destination`) or whose secret does not open
/// is recorded as a failed attempt with the reason, and nothing is sent.
pub async fn send_all(outbound: &Outbound, outgoing: Vec<Outgoing>) -> Vec<Attempt> {
    let mut results = Vec::with_capacity(outgoing.len());
    for o in outgoing {
        let outcome = send_one(outbound, &o).await;
        if let Err((_, why)) = &outcome {
            tracing::warn!(delivery = o.delivery.id, error = %why, "webhook delivery failed");
        }
        results.push((o.delivery, outcome));
    }
    results
}

async fn send_one(outbound: &Outbound, o: &Outgoing) -> Result<i32, (Option<i32>, String)> {
    let secret = o.secret.as_ref().map_err(|e| (None, e.clone()))?;
    let client = outbound
        .client_for(&o.url)
        .map_err(|refusal| (None, format!("refused: {refusal}")))?;
    let sent = client
        .post(&o.url)
        .header("Content-Type", "application/json")
        .header("X-Granulo-Signature", signature(secret.expose_secret(), &o.body))
        .header("X-Granulo-Timestamp", o.sent_at.to_rfc3339())
        .header("X-Granulo-Event", &o.delivery.event)
        .header("X-Granulo-Transition", o.transition.as_str())
        .header("X-Granulo-Delivery", o.delivery.id.to_string())
        .body(o.body.clone())
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Ok(i32::from(r.status().as_u16())),
        Ok(r) => Err((Some(i32::from(r.status().as_u16())), format!("HTTP {}", r.status()))),
        Err(e) => Err((None, destination::failure_text(&e))),
    }
}

/// Records the attempts: delivered, or retried after the backoff, or given up.
pub fn record(conn: &mut DbConn, results: Vec<Attempt>, now: DateTime<Utc>) -> ApiResult<DeliveryReport> {
    let mut report = DeliveryReport::default();
    let at = store::truncate_micros(now.naive_utc());
    for (d, outcome) in results {
        match outcome {
            Ok(code) => {
                rows::record_attempt(conn, d.id, "delivered", at, Some(code), None, Some(at))?;
                report.delivered += 1;
            }
            Err((code, error)) => {
                let attempts = d.attempts + 1;
                let status = if attempts >= MAX_ATTEMPTS { "failed" } else { "pending" };
                rows::record_attempt(conn, d.id, status, at + backoff(attempts - 1), code, Some(&error), None)?;
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// One delivery pass through the pool (database work off the async threads).
pub async fn deliver_due(
    pool: &Pool,
    outbound: &Outbound,
    secrets: &Arc<Keyring>,
    now: DateTime<Utc>,
) -> ApiResult<DeliveryReport> {
    let (p, ring) = (pool.clone(), secrets.clone());
    let outgoing = actix_web::web::block(move || -> ApiResult<Vec<Outgoing>> {
        let mut conn = p.get().map_err(store::StoreError::from)?;
        load_due(&mut conn, &ring, now)
    })
    .await??;
    let results = send_all(outbound, outgoing).await;
    let p = pool.clone();
    actix_web::web::block(move || -> ApiResult<DeliveryReport> {
        let mut conn = p.get().map_err(store::StoreError::from)?;
        record(&mut conn, results, now)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_backoff() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(backoff(0), TimeDelta::seconds(30));
        assert_eq!(backoff(1), TimeDelta::seconds(60));
        assert_eq!(backoff(6), TimeDelta::seconds(1920));
        assert_eq!(backoff(7), TimeDelta::seconds(3600));
        assert_eq!(backoff(40), TimeDelta::seconds(3600));
    }
}
