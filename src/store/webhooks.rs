//! Webhook subscriptions and the delivery outbox.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{alert_events, webhook_outbox, webhook_subscriptions};
use super::{DbConn, StoreError};
use crate::credentials::sealed::{self, Keyring};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_subscriptions)]
pub struct Subscription {
    pub id: i64,
    pub url: String,
    /// JSON array of event names (`*` = all).
    pub events: String,
    /// Sealed (`credentials::sealed`, context `webhook-secret`); plain text only in a database
    /// from before sealing, until start-up seals it.
    pub secret: String,
    pub hospital_id: Option<i64>,
    pub active: bool,
    pub created_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = webhook_subscriptions)]
pub struct NewSubscription<'a> {
    pub url: &'a str,
    pub events: String,
    pub secret: &'a str,
    pub hospital_id: Option<i64>,
    pub active: bool,
    pub created_by: &'a str,
    pub created_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConn, new: &NewSubscription<'_>) -> QueryResult<Subscription> {
    let id: i64 = diesel::insert_into(webhook_subscriptions::table)
        .values(new)
        .returning(webhook_subscriptions::id)
        .get_result(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Subscription>> {
    webhook_subscriptions::table
        .find(id)
        .select(Subscription::as_select())
        .first(conn)
        .optional()
}

pub fn active(conn: &mut DbConn) -> QueryResult<Vec<Subscription>> {
    webhook_subscriptions::table
        .filter(webhook_subscriptions::active.eq(true))
        .order(webhook_subscriptions::id.asc())
        .select(Subscription::as_select())
        .load(conn)
}

pub fn list(conn: &mut DbConn) -> QueryResult<Vec<Subscription>> {
    webhook_subscriptions::table
        .order(webhook_subscriptions::id.asc())
        .select(Subscription::as_select())
        .load(conn)
}

/// The context sealed webhook secrets are bound to.
pub const SECRET_CONTEXT: &str = "webhook-secret";

fn secrets(conn: &mut DbConn) -> QueryResult<Vec<(i64, String)>> {
    webhook_subscriptions::table
        .select((webhook_subscriptions::id, webhook_subscriptions::secret))
        .order(webhook_subscriptions::id.asc())
        .load(conn)
}

fn set_secret(conn: &mut DbConn, id: i64, value: &str) -> QueryResult<()> {
    diesel::update(webhook_subscriptions::table.find(id))
        .set(webhook_subscriptions::secret.eq(value))
        .execute(conn)?;
    Ok(())
}

/// Seals the secrets still stored in plain text (written before sealing); their ids.
pub fn seal_plaintext(conn: &mut DbConn, ring: &Keyring) -> QueryResult<Vec<i64>> {
    let mut sealed_ids = Vec::new();
    for (id, value) in secrets(conn)? {
        if !sealed::is_sealed(&value) {
            set_secret(conn, id, &ring.seal_str(&value, SECRET_CONTEXT))?;
            sealed_ids.push(id);
        }
    }
    Ok(sealed_ids)
}

/// Re-seals under the current key every secret that is not (sealed under a previous key, or
/// still plain); how many. One that no configured key opens fails the whole call.
pub fn reseal(conn: &mut DbConn, ring: &Keyring) -> Result<usize, StoreError> {
    let mut count = 0;
    for (id, value) in secrets(conn)? {
        if ring.is_current(&value) {
            continue;
        }
        let sealed = if sealed::is_sealed(&value) {
            let opened = ring.open(&value, SECRET_CONTEXT).map_err(|e| {
                StoreError::Unsealable(format!(
                    "webhook subscription {id}: {e} (set the key it was sealed under as GRANULO_SECRETS_KEY_PREVIOUS)"
                ))
            })?;
            ring.seal(&opened, SECRET_CONTEXT)
        } else {
            ring.seal_str(&value, SECRET_CONTEXT)
        };
        set_secret(conn, id, &sealed)?;
        count += 1;
    }
    Ok(count)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_outbox)]
pub struct Delivery {
    pub id: i64,
    pub subscription_id: i64,
    pub alert_id: i64,
    pub event: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
    /// The alert event delivered (its raise, an escalation, a repeat).
    pub alert_event_id: i64,
}

/// Queues the delivery of one alert event to one subscription.
pub fn enqueue(
    conn: &mut DbConn,
    subscription_id: i64,
    alert_id: i64,
    alert_event_id: i64,
    event: &str,
    at: NaiveDateTime,
) -> QueryResult<()> {
    diesel::insert_into(webhook_outbox::table)
        .values((
            webhook_outbox::subscription_id.eq(subscription_id),
            webhook_outbox::alert_id.eq(alert_id),
            webhook_outbox::alert_event_id.eq(alert_event_id),
            webhook_outbox::event.eq(event),
            webhook_outbox::status.eq("pending"),
            webhook_outbox::attempts.eq(0),
            webhook_outbox::next_attempt_at.eq(at),
            webhook_outbox::created_at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn due(conn: &mut DbConn, now: NaiveDateTime, limit: i64) -> QueryResult<Vec<Delivery>> {
    webhook_outbox::table
        .filter(webhook_outbox::status.eq("pending"))
        .filter(webhook_outbox::next_attempt_at.le(now))
        .order(webhook_outbox::id.asc())
        .limit(limit)
        .select(Delivery::as_select())
        .load(conn)
}

/// Records an attempt. `next` is `None` once delivered or given up (`status` says which).
pub fn record_attempt(
    conn: &mut DbConn,
    id: i64,
    status: &str,
    next: NaiveDateTime,
    code: Option<i32>,
    error: Option<&str>,
    delivered_at: Option<NaiveDateTime>,
) -> QueryResult<()> {
    diesel::update(webhook_outbox::table.find(id))
        .set((
            webhook_outbox::status.eq(status),
            webhook_outbox::attempts.eq(webhook_outbox::attempts + 1),
            webhook_outbox::next_attempt_at.eq(next),
            webhook_outbox::last_status_code.eq(code),
            webhook_outbox::last_error.eq(error),
            webhook_outbox::delivered_at.eq(delivered_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// The latest deliveries of a subscription, each with the transition of its alert event.
pub fn of_subscription(conn: &mut DbConn, subscription_id: i64) -> QueryResult<Vec<(Delivery, String)>> {
    webhook_outbox::table
        .inner_join(alert_events::table)
        .filter(webhook_outbox::subscription_id.eq(subscription_id))
        .order(webhook_outbox::id.desc())
        .limit(500)
        .select((Delivery::as_select(), alert_events::transition))
        .load(conn)
}
