//! Webhook subscriptions and the delivery outbox.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::{alert_events, webhook_outbox, webhook_subscriptions};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_subscriptions)]
pub struct Subscription {
    pub id: i64,
    pub url: String,
    /// JSON array of event names (`*` = all).
    pub events: String,
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
