//! The append-only, hash-chained audit trail (architecture §4.3).
//!
//! Every row stores the hash of the row before it in its chain (`prev_hash`) and its own `hash`,
//! a SHA-256 over the previous hash and the row's content. Rows are appended inside the
//! transaction of the change they describe.
//!
//! The trail is made of [`LANES`] chains ("lanes"). On PostgreSQL a transaction holds one lane's
//! advisory lock from its first append until it ends, so a lane never forks, while transactions
//! in different lanes commit side by side and can share a WAL flush (one lock for the whole
//! trail made every commit wait for the previous one's flush). Within a lane, ids follow commit
//! order. SQLite has one writer at a time (`BEGIN IMMEDIATE`) and appends to lane 0 only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::DbConn;
use super::schema::audit_log;

/// The hash a chain starts from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How many chains PostgreSQL appends to. More lanes than pooled connections gain nothing.
pub const LANES: usize = 8;

/// Advisory-lock key of lane 0 on PostgreSQL ("granulo audit"); lane `l` locks this + `l`.
const AUDIT_LOCK_KEY: i64 = 0x6772_616e_6175_6474;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<i64>,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Client,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Client => "client",
            Self::System => "system",
        }
    }
}

impl Actor {
    pub fn system(name: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
            name: name.to_owned(),
        }
    }
}

/// One change to record.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl<'a> Change<'a> {
    pub fn created(action: &'a str, entity_type: &'a str, entity_id: impl ToString, after: serde_json::Value) -> Self {
        Self {
            action,
            entity_type,
            entity_id: entity_id.to_string(),
            before: None,
            after: Some(after),
        }
    }

    pub fn updated(
        action: &'a str,
        entity_type: &'a str,
        entity_id: impl ToString,
        before: serde_json::Value,
        after: serde_json::Value,
    ) -> Self {
        Self {
            action,
            entity_type,
            entity_id: entity_id.to_string(),
            before: Some(before),
            after: Some(after),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub id: i64,
    pub occurred_at: NaiveDateTime,
    pub actor_kind: String,
    pub actor_id: Option<i64>,
    pub actor_name: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub lane: i32,
}

#[derive(Insertable)]
#[diesel(table_name = audit_log)]
struct NewAuditRow<'a> {
    occurred_at: NaiveDateTime,
    actor_kind: &'a str,
    actor_id: Option<i64>,
    actor_name: &'a str,
    action: &'a str,
    entity_type: &'a str,
    entity_id: String,
    before_json: Option<String>,
    after_json: Option<String>,
    prev_hash: String,
    hash: String,
    lane: i32,
}

/// The content a row's hash covers, in a fixed order, serialised as a JSON array so that no
/// two different rows can produce the same input.
#[expect(clippy::too_many_arguments)]
fn row_hash(
    prev_hash: &str,
    occurred_at: NaiveDateTime,
    actor_kind: &str,
    actor_id: Option<i64>,
    actor_name: &str,
    action: &str,
    entity_type: &str,
    entity_id: &str,
    before_json: Option<&str>,
    after_json: Option<&str>,
) -> String {
    let canonical = serde_json::json!([
        prev_hash,
        occurred_at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        actor_kind,
        actor_id,
        actor_name,
        action,
        entity_type,
        entity_id,
        before_json,
        after_json,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

fn hash_of(row: &AuditRow) -> String {
    row_hash(
        &row.prev_hash,
        row.occurred_at,
        &row.actor_kind,
        row.actor_id,
        &row.actor_name,
        &row.action,
        &row.entity_type,
        &row.entity_id,
        row.before_json.as_deref(),
        row.after_json.as_deref(),
    )
}

/// Append one audit row. Call inside the transaction that makes the change.
pub fn append(conn: &mut DbConn, actor: &Actor, change: Change<'_>) -> QueryResult<i64> {
    let lane = hold_lane(conn)?;
    let prev_hash = tail(conn, lane)?;
    let row = new_row(actor, change, prev_hash, super::now(), lane);
    diesel::insert_into(audit_log::table)
        .values(row)
        .returning(audit_log::id)
        .get_result(conn)
}

/// Append several audit rows, in order, with one lock, one tail read and one insert. Call
/// inside the transaction that makes the changes.
pub fn append_all(conn: &mut DbConn, actor: &Actor, changes: Vec<Change<'_>>) -> QueryResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let lane = hold_lane(conn)?;
    let mut prev_hash = tail(conn, lane)?;
    let occurred_at = super::now();
    let mut rows = Vec::with_capacity(changes.len());
    for change in changes {
        let row = new_row(actor, change, prev_hash, occurred_at, lane);
        prev_hash = row.hash.clone();
        rows.push(row);
    }
    match conn {
        // A multi-row INSERT numbers its rows in the order given, so ids follow the chain.
        DbConn::Postgres(pg) => diesel::insert_into(audit_log::table).values(rows).execute(pg)?,
        // SQLite runs in-process: one statement per row costs no round trip.
        DbConn::Sqlite(lite) => {
            for row in rows {
                diesel::insert_into(audit_log::table).values(row).execute(lite)?;
            }
            0
        }
    };
    Ok(())
}

/// Round-robin start for the rare blocking wait when every lane is busy.
static NEXT_WAIT: AtomicUsize = AtomicUsize::new(0);

/// The lane query's answer.
#[derive(QueryableByName)]
struct HeldLane {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    lane: i32,
}

/// The lane this transaction appends to, its lock held until the transaction ends. On
/// PostgreSQL: the first lane whose lock is free or already ours (advisory locks are reentrant,
/// so a second append in the same transaction gets a lane it holds when it is the first free
/// one), else a wait for one lane. A transaction waits only while it holds no lane, so lanes
/// cannot deadlock. Each lock is taken in its own statement: the tail read that follows gets
/// a snapshot that sees the commit of the lane's previous holder.
fn hold_lane(conn: &mut DbConn) -> QueryResult<i32> {
    let DbConn::Postgres(pg) = conn else { return Ok(0) };
    let last = LANES as i32 - 1;
    let free: Option<HeldLane> = diesel::sql_query(
        "SELECT lane FROM generate_series(0, $1) AS lane \
         WHERE pg_try_advisory_xact_lock($2 + lane) LIMIT 1",
    )
    .bind::<diesel::sql_types::Integer, _>(last)
    .bind::<diesel::sql_types::BigInt, _>(AUDIT_LOCK_KEY)
    .get_result(pg)
    .optional()?;
    if let Some(held) = free {
        return Ok(held.lane);
    }
    let lane = (NEXT_WAIT.fetch_add(1, Ordering::Relaxed) % LANES) as i32;
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(AUDIT_LOCK_KEY + i64::from(lane))
        .execute(pg)?;
    Ok(lane)
}

/// The hash of a lane's newest row (the genesis hash for an empty lane).
fn tail(conn: &mut DbConn, lane: i32) -> QueryResult<String> {
    Ok(audit_log::table
        .filter(audit_log::lane.eq(lane))
        .order(audit_log::id.desc())
        .select(audit_log::hash)
        .first(conn)
        .optional()?
        .unwrap_or_else(|| GENESIS_HASH.to_owned()))
}

fn new_row<'a>(
    actor: &'a Actor,
    change: Change<'a>,
    prev_hash: String,
    occurred_at: NaiveDateTime,
    lane: i32,
) -> NewAuditRow<'a> {
    let before_json = change.before.map(|v| v.to_string());
    let after_json = change.after.map(|v| v.to_string());
    let hash = row_hash(
        &prev_hash,
        occurred_at,
        actor.kind.as_str(),
        actor.id,
        &actor.name,
        change.action,
        change.entity_type,
        &change.entity_id,
        before_json.as_deref(),
        after_json.as_deref(),
    );
    NewAuditRow {
        occurred_at,
        actor_kind: actor.kind.as_str(),
        actor_id: actor.id,
        actor_name: &actor.name,
        action: change.action,
        entity_type: change.entity_type,
        entity_id: change.entity_id,
        before_json,
        after_json,
        prev_hash,
        hash,
        lane,
    }
}

/// Filters for reading the trail, newest first.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub fn list(conn: &mut DbConn, filter: &AuditFilter) -> QueryResult<Vec<AuditRow>> {
    let mut query = audit_log::table
        .select(AuditRow::as_select())
        .order(audit_log::id.desc())
        .limit(filter.limit)
        .into_boxed();
    if let Some(t) = &filter.entity_type {
        query = query.filter(audit_log::entity_type.eq(t.clone()));
    }
    if let Some(e) = &filter.entity_id {
        query = query.filter(audit_log::entity_id.eq(e.clone()));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(audit_log::id.lt(before));
    }
    query.load(conn)
}

/// Outcome of walking every lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub rows_checked: u64,
    /// Each lane's newest verified hash, by lane (lane 0 holds the genesis hash when empty).
    pub heads: BTreeMap<i32, String>,
    pub first_bad: Option<BadRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub id: i64,
    pub problem: &'static str,
}

/// Recompute every hash in id order, each row against the row before it in its lane; stop at
/// the first row that does not fit. The walk reads one snapshot: a lane's rows may commit out
/// of id order with other lanes', so batches read at different moments could skip a row.
pub fn verify(conn: &mut DbConn) -> QueryResult<VerifyReport> {
    super::snapshot_tx(conn, walk)
}

fn walk(conn: &mut DbConn) -> QueryResult<VerifyReport> {
    const BATCH: i64 = 1000;
    let mut heads = BTreeMap::from([(0, GENESIS_HASH.to_owned())]);
    let mut after_id = i64::MIN;
    let mut rows_checked = 0u64;
    loop {
        let batch: Vec<AuditRow> = audit_log::table
            .select(AuditRow::as_select())
            .filter(audit_log::id.gt(after_id))
            .order(audit_log::id.asc())
            .limit(BATCH)
            .load(conn)?;
        let Some(last) = batch.last() else { break };
        after_id = last.id;
        for row in batch {
            let expected_prev = heads.get(&row.lane).map_or(GENESIS_HASH, String::as_str);
            let problem = if row.prev_hash != expected_prev {
                Some(
                    "prev_hash does not match the hash of the row before it in its lane \
                     (a row was removed, inserted, reordered or moved to another lane)",
                )
            } else if hash_of(&row) != row.hash {
                Some("hash does not match the row's content (the row was altered)")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Ok(VerifyReport {
                    rows_checked,
                    heads,
                    first_bad: Some(BadRow { id: row.id, problem }),
                });
            }
            heads.insert(row.lane, row.hash);
            rows_checked += 1;
        }
    }
    Ok(VerifyReport {
        rows_checked,
        heads,
        first_bad: None,
    })
}

/// Where a reader of the trail stands: the newest id it has seen in each lane.
pub type Position = [i64; LANES];

/// The id of each lane's newest row (0 for an empty lane).
pub fn position(conn: &mut DbConn) -> QueryResult<Position> {
    let mut at = [0; LANES];
    for (lane, id) in at.iter_mut().enumerate() {
        *id = audit_log::table
            .filter(audit_log::lane.eq(lane as i32))
            .select(diesel::dsl::max(audit_log::id))
            .first::<Option<i64>>(conn)?
            .unwrap_or_default();
    }
    Ok(at)
}

/// Audit rows after `at` (lane, id, entity type), in id order, up to `limit`. Within a lane ids
/// follow commit order, so a reader that remembers the newest id it saw in each lane misses
/// none; a single newest id would skip a row of one lane committed after a later id of another.
pub fn entity_types_after(conn: &mut DbConn, at: &Position, limit: i64) -> QueryResult<Vec<(i32, i64, String)>> {
    let mut query = audit_log::table
        .select((audit_log::lane, audit_log::id, audit_log::entity_type))
        .order(audit_log::id.asc())
        .limit(limit)
        .into_boxed();
    for (lane, after) in at.iter().enumerate() {
        query = query.or_filter(audit_log::lane.eq(lane as i32).and(audit_log::id.gt(*after)));
    }
    query.load(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000)
            .expect("time")
            .naive_utc();
        let base = row_hash(
            GENESIS_HASH,
            t,
            "user",
            Some(1),
            "alice",
            "user.create",
            "user",
            "7",
            None,
            Some("{}"),
        );
        let variants = [
            row_hash(
                "1",
                t,
                "user",
                Some(1),
                "alice",
                "user.create",
                "user",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t + chrono::Duration::microseconds(1),
                "user",
                Some(1),
                "alice",
                "user.create",
                "user",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "client",
                Some(1),
                "alice",
                "user.create",
                "user",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                Some(2),
                "alice",
                "user.create",
                "user",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                None,
                "alice",
                "user.create",
                "user",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                Some(1),
                "bob",
                "user.create",
                "user",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                Some(1),
                "alice",
                "user.update",
                "user",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                Some(1),
                "alice",
                "user.create",
                "hospital",
                "7",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                Some(1),
                "alice",
                "user.create",
                "user",
                "8",
                None,
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                Some(1),
                "alice",
                "user.create",
                "user",
                "7",
                Some("{}"),
                Some("{}"),
            ),
            row_hash(
                GENESIS_HASH,
                t,
                "user",
                Some(1),
                "alice",
                "user.create",
                "user",
                "7",
                None,
                None,
            ),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let t = chrono::NaiveDateTime::default();
        let a = row_hash(GENESIS_HASH, t, "user", None, "ab", "c", "x", "1", None, None);
        let b = row_hash(GENESIS_HASH, t, "user", None, "a", "bc", "x", "1", None, None);
        assert_ne!(a, b);
    }
}
