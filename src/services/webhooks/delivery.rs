//! The delivery worker: sends queued deliveries, signed, and records each attempt.

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use utoipa::ToSchema;

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
    secret: String,
    body: Vec<u8>,
    sent_at: DateTime<Utc>,
}

/// The outcome of one attempt: the HTTP status, or the status and error of a failure.
pub type Attempt = (Delivery, Result<i32, (Option<i32>, String)>);

/// Every due delivery with its body: `{event, transition, sent_at, alert}`, the alert as the
/// delivered event left it (its severity and message then, the severity before an escalation).
pub fn load_due(conn: &mut DbConn, now: DateTime<Utc>) -> ApiResult<Vec<Outgoing>> {
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
            url: s.url,
            secret: s.secret,
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
pub async fn send_all(client: &reqwest::Client, outgoing: Vec<Outgoing>) -> Vec<Attempt> {
    let mut results = Vec::with_capacity(outgoing.len());
    for o in outgoing {
        let sent = client
            .post(&o.url)
            .header("Content-Type", "application/json")
            .header("X-Granulo-Signature", signature(&o.secret, &o.body))
            .header("X-Granulo-Timestamp", o.sent_at.to_rfc3339())
            .header("X-Granulo-Event", &o.delivery.event)
            .header("X-Granulo-Transition", o.transition.as_str())
            .header("X-Granulo-Delivery", o.delivery.id.to_string())
            .body(o.body)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => Ok(i32::from(r.status().as_u16())),
            Ok(r) => Err((Some(i32::from(r.status().as_u16())), format!("HTTP {}", r.status()))),
            Err(e) => Err((None, e.to_string())),
        };
        results.push((o.delivery, outcome));
    }
    results
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
pub async fn deliver_due(pool: &Pool, client: &reqwest::Client, now: DateTime<Utc>) -> ApiResult<DeliveryReport> {
    let p = pool.clone();
    let outgoing = actix_web::web::block(move || -> ApiResult<Vec<Outgoing>> {
        let mut conn = p.get().map_err(store::StoreError::from)?;
        load_due(&mut conn, now)
    })
    .await??;
    let results = send_all(client, outgoing).await;
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
