//! The single-row policy table: the rule document and its version.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::policy;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = policy)]
pub struct PolicyRow {
    pub id: i64,
    pub version: i64,
    pub document: String,
    pub updated_at: NaiveDateTime,
    pub updated_by: String,
}

pub fn load(conn: &mut DbConn) -> QueryResult<Option<PolicyRow>> {
    policy::table
        .find(1_i64)
        .select(PolicyRow::as_select())
        .first(conn)
        .optional()
}

/// Writes version `version` of the document. The first write inserts; later ones update only
/// from `version - 1`, so a concurrent writer gets `false` instead of overwriting.
pub fn save(conn: &mut DbConn, version: i64, document: &str, at: NaiveDateTime, by: &str) -> QueryResult<bool> {
    let changed = if version == 1 {
        let inserted = diesel::insert_into(policy::table)
            .values((
                policy::id.eq(1_i64),
                policy::version.eq(version),
                policy::document.eq(document),
                policy::updated_at.eq(at),
                policy::updated_by.eq(by),
            ))
            .execute(conn);
        match inserted {
            // Another writer saved the first version meanwhile.
            Err(e) if super::is_unique_violation(&e) => 0,
            other => other?,
        }
    } else {
        diesel::update(policy::table.find(1_i64).filter(policy::version.eq(version - 1)))
            .set((
                policy::version.eq(version),
                policy::document.eq(document),
                policy::updated_at.eq(at),
                policy::updated_by.eq(by),
            ))
            .execute(conn)?
    };
    Ok(changed == 1)
}
