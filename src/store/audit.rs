//! The append-only, hash-chained audit trail (architecture §4.3).
//!
//! Every row stores the hash of the row before it (`prev_hash`) and its own `hash`, a SHA-256
//! over the previous hash and the row's content. Rows are appended inside the transaction of the
//! change they describe; appends are serialised (SQLite: the writer lock of `BEGIN IMMEDIATE`;
//! PostgreSQL: a transaction-scoped advisory lock) so the chain never forks.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::DbConn;
use super::schema::audit_log;

/// The hash a chain starts from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Advisory-lock key that serialises audit appends on PostgreSQL ("granulo audit").
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
    entity_id: &'a str,
    before_json: Option<String>,
    after_json: Option<String>,
    prev_hash: &'a str,
    hash: String,
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
    if let DbConn::Postgres(pg) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(AUDIT_LOCK_KEY)
            .execute(pg)?;
    }
    let prev_hash: String = audit_log::table
        .order(audit_log::id.desc())
        .select(audit_log::hash)
        .first(conn)
        .optional()?
        .unwrap_or_else(|| GENESIS_HASH.to_owned());
    let occurred_at = super::now();
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
    diesel::insert_into(audit_log::table)
        .values(NewAuditRow {
            occurred_at,
            actor_kind: actor.kind.as_str(),
            actor_id: actor.id,
            actor_name: &actor.name,
            action: change.action,
            entity_type: change.entity_type,
            entity_id: &change.entity_id,
            before_json,
            after_json,
            prev_hash: &prev_hash,
            hash,
        })
        .returning(audit_log::id)
        .get_result(conn)
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

/// Outcome of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub rows_checked: u64,
    pub last_hash: String,
    pub first_bad: Option<BadRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub id: i64,
    pub problem: &'static str,
}

/// Recompute every hash in id order; stop at the first row that does not fit.
pub fn verify(conn: &mut DbConn) -> QueryResult<VerifyReport> {
    const BATCH: i64 = 1000;
    let mut expected_prev = GENESIS_HASH.to_owned();
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
        for row in &batch {
            if row.prev_hash != expected_prev {
                return Ok(VerifyReport {
                    rows_checked,
                    last_hash: expected_prev,
                    first_bad: Some(BadRow {
                        id: row.id,
                        problem: "prev_hash does not match the hash of the row before it \
                                  (a row was removed, inserted or reordered)",
                    }),
                });
            }
            if hash_of(row) != row.hash {
                return Ok(VerifyReport {
                    rows_checked,
                    last_hash: expected_prev,
                    first_bad: Some(BadRow {
                        id: row.id,
                        problem: "hash does not match the row's content (the row was altered)",
                    }),
                });
            }
            expected_prev.clone_from(&row.hash);
            rows_checked += 1;
        }
    }
    Ok(VerifyReport {
        rows_checked,
        last_hash: expected_prev,
        first_bad: None,
    })
}

/// The id and entity type of audit rows after `after_id`, oldest first, up to `limit`. Rows
/// are appended under one lock, so ids follow commit order and a reader that remembers the
/// last id it saw misses none.
pub fn entity_types_after(conn: &mut DbConn, after_id: i64, limit: i64) -> QueryResult<Vec<(i64, String)>> {
    audit_log::table
        .filter(audit_log::id.gt(after_id))
        .order(audit_log::id.asc())
        .select((audit_log::id, audit_log::entity_type))
        .limit(limit)
        .load(conn)
}

/// The id of the newest audit row (0 when there is none).
pub fn last_id(conn: &mut DbConn) -> QueryResult<i64> {
    audit_log::table
        .select(diesel::dsl::max(audit_log::id))
        .first::<Option<i64>>(conn)
        .map(Option::unwrap_or_default)
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
