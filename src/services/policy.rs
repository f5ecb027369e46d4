//! The stored policy table. Until a medical director first saves it, the documented defaults
//! apply (version 0). A stored document is read over the defaults, so a key added by a later
//! release takes its default instead of making the stored table unreadable.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{from_stored_json, to_json, to_value, utc};
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::store::audit::{self, Actor, Change};
use crate::store::{self, DbConn, policy as rows};

pub struct CurrentPolicy {
    pub policy: Policy,
    /// 0 while the defaults apply; then 1, 2, … per saved change.
    pub version: i64,
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: Option<String>,
}

pub fn current(conn: &mut DbConn) -> ApiResult<CurrentPolicy> {
    let Some(row) = rows::load(conn)? else {
        return Ok(CurrentPolicy {
            policy: Policy::default(),
            version: 0,
            updated_at: None,
            updated_by: None,
        });
    };
    let stored: Value = from_stored_json("policy", &row.document)?;
    let mut merged = to_value(&Policy::default())?;
    overlay(&mut merged, stored);
    let policy: Policy = serde_json::from_value(merged)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored policy does not fit this release: {e}")))?;
    Ok(CurrentPolicy {
        policy,
        version: row.version,
        updated_at: Some(utc(row.updated_at)),
        updated_by: Some(row.updated_by),
    })
}

/// Objects merge key by key; anything else (numbers, lists) replaces the default.
fn overlay(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(base), Value::Object(top)) => {
            // A key this release no longer knows is dropped.
            for (key, value) in top {
                if let Some(slot) = base.get_mut(&key) {
                    overlay(slot, value);
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Replaces the whole table after validating it. `expected_version` (from `If-Match`) guards
/// against overwriting a change made since the caller read the table.
pub fn replace(
    conn: &mut DbConn,
    actor: &Actor,
    new: Policy,
    expected_version: Option<i64>,
) -> ApiResult<CurrentPolicy> {
    if let Err(problems) = new.validate() {
        return Err(ApiError::validation(
            problems
                .into_iter()
                .map(|p| FieldError {
                    field: p.key,
                    message: p.message,
                })
                .collect(),
        ));
    }
    let before = current(conn)?;
    if let Some(expected) = expected_version
        && expected != before.version
    {
        return Err(policy_changed(before.version));
    }
    let version = before.version + 1;
    let at = store::now();
    if !rows::save(conn, version, &to_json(&new)?, at, &actor.name)? {
        return Err(policy_changed(before.version));
    }
    audit::append(
        conn,
        actor,
        Change::updated(
            "policy.update",
            "policy",
            1,
            serde_json::json!({"version": before.version, "policy": to_value(&before.policy)?}),
            serde_json::json!({"version": version, "policy": to_value(&new)?}),
        ),
    )?;
    Ok(CurrentPolicy {
        policy: new,
        version,
        updated_at: Some(utc(at)),
        updated_by: Some(actor.name.clone()),
    })
}

fn policy_changed(version: i64) -> ApiError {
    ApiError::new(
        ErrorCode::PolicyChanged,
        format!("the policy was changed meanwhile (now version {version}); read it again and reapply"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_table_missing_a_new_key_reads_with_its_default() {
        let mut stored = to_value(&Policy::default()).expect("json");
        stored["donor"]
            .as_object_mut()
            .expect("object")
            .remove("weeks_after_red_cell_loss_not_returned");
        stored["donor"]["age_max"] = Value::from(70);
        stored["gone"] = Value::from(1);
        let mut merged = to_value(&Policy::default()).expect("json");
        overlay(&mut merged, stored);
        let policy: Policy = serde_json::from_value(merged).expect("readable");
        assert_eq!(policy.donor.age_max, 70);
        assert_eq!(policy.donor.weeks_after_red_cell_loss_not_returned, 8);
    }

    #[test]
    fn lists_replace_rather_than_merge() {
        let mut base = serde_json::json!({"alerts": {"expiry_thresholds_hours": [8, 4, 2]}});
        overlay(
            &mut base,
            serde_json::json!({"alerts": {"expiry_thresholds_hours": [6]}}),
        );
        assert_eq!(base["alerts"]["expiry_thresholds_hours"], serde_json::json!([6]));
    }
}
