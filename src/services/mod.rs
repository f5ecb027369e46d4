//! Units of work: each function runs inside one transaction the caller opened, loads what the
//! rules need, asks `domain/`, writes, and appends its audit rows. Also the resource shapes
//! (views) the routes return, since the audit trail records the same shapes.

pub mod alerts;
pub mod allocations;
pub mod candidates;
pub mod changes;
pub mod collections;
pub mod course_plans;
pub mod decisions;
pub mod devices;
pub mod donations;
pub mod donors;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod outcomes;
pub mod patients;
pub mod policy;
pub mod requests;
pub mod secrets;
pub mod stimulations;
pub mod tasks;
pub mod trace;
pub mod units;
pub mod webhooks;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use crate::error::{ApiError, ApiResult, Reason};

/// How far in the future a "this happened at" time may be, for clocks that are slightly off.
/// Not a clinical threshold.
pub const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// A client time as stored (microsecond precision, naive UTC).
pub fn stored(t: DateTime<Utc>) -> NaiveDateTime {
    crate::store::truncate_micros(t.naive_utc())
}

pub fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// True when `t` is no later than now (plus clock skew).
pub fn is_past(t: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    t <= now + CLOCK_SKEW
}

/// Refuses a time that lies in the future ("started at", "given at" are facts, not plans).
pub fn not_future(field: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> ApiResult<()> {
    if !is_past(t, now) {
        Err(ApiError::field(field, "must not be in the future"))
    } else {
        Ok(())
    }
}

/// Domain reasons as problem reasons.
pub fn reasons(list: Vec<crate::domain::eligibility::Reason>) -> Vec<Reason> {
    list.into_iter()
        .map(|r| Reason {
            code: r.code.to_owned(),
            message: r.message,
        })
        .collect()
}

/// A stored JSON column that the service itself wrote; unreadable means a bug, not bad input.
pub fn from_stored_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> ApiResult<T> {
    serde_json::from_str(text).map_err(|e| ApiError::internal(anyhow::anyhow!("stored {column} is not readable: {e}")))
}

pub fn to_json<T: serde::Serialize>(value: &T) -> ApiResult<String> {
    serde_json::to_string(value).map_err(|e| ApiError::internal(anyhow::anyhow!("cannot serialise: {e}")))
}

pub fn to_value<T: serde::Serialize>(value: &T) -> ApiResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(anyhow::anyhow!("cannot serialise: {e}")))
}
