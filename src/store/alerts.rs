//! Alert episodes and their events. At most one alert is open per (kind, entity): the partial
//! unique index `alerts_open_episode` over rows with `closed_at IS NULL`. Every change of an
//! alert is appended to `alert_events`, whose `seq` is assigned in commit order (a deferred
//! trigger on PostgreSQL, serialised writers on SQLite): readers follow `seq`, never ids.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::{alert_events, alerts};
use crate::domain::alerts::{AlertEntity, AlertKind, AlertSeverity, AlertStatus, AlertTransition};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = alerts)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    pub status: AlertStatus,
    /// The condition key of the episode's latest occurrence.
    pub dedup_key: String,
    pub entity_type: AlertEntity,
    pub entity_id: String,
    pub message: String,
    pub details: String,
    pub created_at: NaiveDateTime,
    pub acknowledged_at: Option<NaiveDateTime>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<NaiveDateTime>,
    pub episode: i32,
    pub threshold_hours: Option<i32>,
    pub occurrences: i32,
    pub last_occurred_at: NaiveDateTime,
    pub escalated_at: Option<NaiveDateTime>,
    pub closed_at: Option<NaiveDateTime>,
}

/// An alert to open (built by `services::alerts::raise` only). `dedup_key` is the condition
/// key (which condition this is, e.g. `unit.quarantined:<unit>:reading:<reading>`); the episode
/// it joins is that of (`kind`, its entity type, `entity_id`).
#[derive(Debug)]
pub struct NewAlert<'a> {
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    pub dedup_key: &'a str,
    pub entity_id: &'a str,
    pub message: &'a str,
    pub details: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = alert_events)]
pub struct AlertEvent {
    pub id: i64,
    /// `None` only inside the transaction that wrote it (PostgreSQL numbers it at commit).
    pub seq: Option<i64>,
    pub alert_id: i64,
    pub transition: AlertTransition,
    pub severity: AlertSeverity,
    pub previous_severity: Option<AlertSeverity>,
    pub condition_key: String,
    pub message: String,
    pub details: String,
    pub actor: Option<String>,
    pub occurred_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = alert_events)]
pub struct NewEvent<'a> {
    pub alert_id: i64,
    pub transition: AlertTransition,
    pub severity: AlertSeverity,
    pub previous_severity: Option<AlertSeverity>,
    pub condition_key: &'a str,
    pub message: &'a str,
    pub details: &'a str,
    pub actor: Option<&'a str>,
    pub occurred_at: NaiveDateTime,
}

/// Appends an event; returns its id (its `seq` comes at commit).
pub fn record_event(conn: &mut DbConn, new: &NewEvent<'_>) -> QueryResult<i64> {
    diesel::insert_into(alert_events::table)
        .values(new)
        .returning(alert_events::id)
        .get_result(conn)
}

pub fn find_event(conn: &mut DbConn, id: i64) -> QueryResult<Option<AlertEvent>> {
    alert_events::table
        .find(id)
        .select(AlertEvent::as_select())
        .first(conn)
        .optional()
}

/// The open episode of (kind, entity), its row locked on PostgreSQL until the transaction ends
/// (a no-op update takes the lock; SQLite writers are serialised anyway).
pub fn lock_open_episode(conn: &mut DbConn, kind: AlertKind, entity_id: &str) -> QueryResult<Option<Alert>> {
    let open = || {
        alerts::table
            .filter(alerts::kind.eq(kind))
            .filter(alerts::entity_type.eq(kind.entity()))
            .filter(alerts::entity_id.eq(entity_id.to_owned()))
            .filter(alerts::closed_at.is_null())
    };
    let locked = diesel::update(open())
        .set(alerts::kind.eq(alerts::kind))
        .execute(conn)?;
    if locked == 0 {
        return Ok(None);
    }
    open().select(Alert::as_select()).first(conn).optional()
}

/// Opens a new episode unless one is open for (kind, entity) (a concurrent raise won: `None`).
pub fn open_episode(conn: &mut DbConn, new: &NewAlert<'_>, threshold_hours: Option<i32>) -> QueryResult<Option<Alert>> {
    use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamp};

    #[derive(QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }

    let previous: Option<i32> = alerts::table
        .filter(alerts::kind.eq(new.kind))
        .filter(alerts::entity_type.eq(new.kind.entity()))
        .filter(alerts::entity_id.eq(new.entity_id))
        .select(diesel::dsl::max(alerts::episode))
        .first(conn)?;
    // The same statement on both backends; diesel's upsert DSL is not dispatched by
    // MultiConnection. The conflict target names the partial index of open episodes.
    let inserted: Vec<Inserted> = diesel::sql_query(
        "INSERT INTO alerts (kind, severity, status, dedup_key, entity_type, entity_id, message, details, created_at, \
                             episode, threshold_hours, occurrences, last_occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $9) \
         ON CONFLICT (kind, entity_type, entity_id) WHERE closed_at IS NULL DO NOTHING RETURNING id",
    )
    .bind::<Text, _>(new.kind)
    .bind::<Text, _>(new.severity)
    .bind::<Text, _>(AlertStatus::Open)
    .bind::<Text, _>(new.dedup_key)
    .bind::<Text, _>(new.kind.entity())
    .bind::<Text, _>(new.entity_id)
    .bind::<Text, _>(new.message)
    .bind::<Text, _>(&new.details)
    .bind::<Timestamp, _>(new.created_at)
    .bind::<Integer, _>(previous.unwrap_or(0).saturating_add(1))
    .bind::<Nullable<Integer>, _>(threshold_hours)
    .load(conn)?;
    match inserted.first() {
        Some(row) => find(conn, row.id),
        None => Ok(None),
    }
}

/// What an occurrence changes on an open episode.
pub struct Occurred<'a> {
    pub severity: AlertSeverity,
    pub threshold_hours: Option<i32>,
    /// The occurrence's condition key, message and details, or `None` to keep the alert's.
    pub text: Option<(&'a str, &'a str, &'a str)>,
    pub at: NaiveDateTime,
    /// An escalation: stamps `escalated_at` and re-opens an acknowledged alert (the new stage
    /// needs a new acknowledgement).
    pub escalation: bool,
}

pub fn occur(conn: &mut DbConn, id: i64, o: &Occurred<'_>) -> QueryResult<()> {
    let target = || alerts::table.find(id).filter(alerts::closed_at.is_null());
    diesel::update(target())
        .set((
            alerts::severity.eq(o.severity),
            alerts::threshold_hours.eq(o.threshold_hours),
            alerts::occurrences.eq(alerts::occurrences + 1),
            alerts::last_occurred_at.eq(o.at),
        ))
        .execute(conn)?;
    if let Some((key, message, details)) = o.text {
        diesel::update(target())
            .set((
                alerts::dedup_key.eq(key),
                alerts::message.eq(message),
                alerts::details.eq(details),
            ))
            .execute(conn)?;
    }
    if o.escalation {
        diesel::update(target())
            .set((
                alerts::escalated_at.eq(o.at),
                alerts::status.eq(AlertStatus::Open),
                alerts::acknowledged_at.eq(None::<NaiveDateTime>),
                alerts::acknowledged_by.eq(None::<String>),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn list(
    conn: &mut DbConn,
    status: Option<AlertStatus>,
    kind: Option<AlertKind>,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Alert>> {
    let mut query = alerts::table
        .select(Alert::as_select())
        .order(alerts::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(s) = status {
        query = query.filter(alerts::status.eq(s));
    }
    if let Some(k) = kind {
        query = query.filter(alerts::kind.eq(k));
    }
    if let Some(after) = after_id {
        query = query.filter(alerts::id.gt(after));
    }
    query.load(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Alert>> {
    alerts::table.find(id).select(Alert::as_select()).first(conn).optional()
}

/// Acknowledges an open alert, ending its episode when `end_episode`; false when it was not
/// open.
pub fn acknowledge(conn: &mut DbConn, id: i64, at: NaiveDateTime, by: &str, end_episode: bool) -> QueryResult<bool> {
    let n = diesel::update(alerts::table.find(id).filter(alerts::status.eq(AlertStatus::Open)))
        .set((
            alerts::status.eq(AlertStatus::Acknowledged),
            alerts::acknowledged_at.eq(at),
            alerts::acknowledged_by.eq(by),
        ))
        .execute(conn)?;
    if n == 1 && end_episode {
        diesel::update(alerts::table.find(id).filter(alerts::closed_at.is_null()))
            .set(alerts::closed_at.eq(at))
            .execute(conn)?;
    }
    Ok(n == 1)
}

/// The open episodes of the given kinds (the scan's view of what is already raised).
pub fn open_episodes(conn: &mut DbConn, kinds: &[AlertKind]) -> QueryResult<Vec<Alert>> {
    alerts::table
        .filter(alerts::closed_at.is_null())
        .filter(alerts::kind.eq_any(kinds))
        .select(Alert::as_select())
        .load(conn)
}

/// Alerts not yet resolved, of the given kinds.
pub fn unresolved(conn: &mut DbConn, kinds: &[AlertKind]) -> QueryResult<Vec<Alert>> {
    alerts::table
        .filter(alerts::status.ne(AlertStatus::Resolved))
        .filter(alerts::kind.eq_any(kinds))
        .order(alerts::id.asc())
        .select(Alert::as_select())
        .load(conn)
}

/// Resolves an alert whose condition cleared, ending its episode; false when already resolved.
pub fn resolve(conn: &mut DbConn, id: i64, at: NaiveDateTime) -> QueryResult<bool> {
    let n = diesel::update(alerts::table.find(id).filter(alerts::status.ne(AlertStatus::Resolved)))
        .set((alerts::status.eq(AlertStatus::Resolved), alerts::resolved_at.eq(at)))
        .execute(conn)?;
    if n == 1 {
        diesel::update(alerts::table.find(id).filter(alerts::closed_at.is_null()))
            .set(alerts::closed_at.eq(at))
            .execute(conn)?;
    }
    Ok(n == 1)
}

/// The last committed event number (0 before any): where a stream without `Last-Event-ID`
/// starts. Every event committed later has a higher number.
pub fn last_event_seq(conn: &mut DbConn) -> QueryResult<i64> {
    let seq: Option<i64> = alert_events::table
        .select(diesel::dsl::max(alert_events::seq))
        .first(conn)?;
    Ok(seq.unwrap_or(0))
}

/// Committed events after `after` in commit order, with their alert as it is now: the cursor
/// the live stream follows. An event whose transaction commits after a later-started one was
/// read still gets a higher number than anything read before, so it is never skipped.
pub fn events_after(conn: &mut DbConn, after: i64, limit: i64) -> QueryResult<Vec<(AlertEvent, Alert)>> {
    alert_events::table
        .inner_join(alerts::table)
        .filter(alert_events::seq.gt(after))
        .order(alert_events::seq.asc())
        .limit(limit)
        .select((AlertEvent::as_select(), Alert::as_select()))
        .load(conn)
}

/// The committed events of one alert after `after_seq`, in commit order.
pub fn events_of(conn: &mut DbConn, alert_id: i64, after_seq: Option<i64>, limit: i64) -> QueryResult<Vec<AlertEvent>> {
    alert_events::table
        .filter(alert_events::alert_id.eq(alert_id))
        .filter(alert_events::seq.gt(after_seq.unwrap_or(0)))
        .order(alert_events::seq.asc())
        .limit(limit)
        .select(AlertEvent::as_select())
        .load(conn)
}
