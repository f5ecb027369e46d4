//! The change clock of donors' matching inputs (kept by the triggers of migration 000020) and
//! the per-process index of those inputs that `services::candidates` keeps current from it.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;

use super::DbConn;
use super::schema::{donor_matching_versions, matching_clock};
use crate::domain::matching::DonorMatchFacts;
use crate::domain::scheduling::DonorRecord;

/// The latest change's seq (0 before any).
pub fn clock(conn: &mut DbConn) -> QueryResult<i64> {
    matching_clock::table
        .filter(matching_clock::id.eq(1))
        .select(matching_clock::seq)
        .first(conn)
}

/// The donors changed after `seq`, with the seq of their latest change.
pub fn changed_since(conn: &mut DbConn, seq: i64) -> QueryResult<Vec<(i64, i64)>> {
    donor_matching_versions::table
        .filter(donor_matching_versions::seq.gt(seq))
        .select((donor_matching_versions::donor_id, donor_matching_versions::seq))
        .load(conn)
}

/// One active donor's matching inputs, read from the database (no verdict).
#[derive(Debug, Clone)]
pub struct DonorEntry {
    pub donor_number: String,
    pub facts: DonorMatchFacts,
    /// The history, without what no rule can look at from `DonorIndex::valid_from` on.
    pub record: DonorRecord,
}

/// Every active donor's inputs as of change `seq`.
#[derive(Debug, Clone)]
pub struct DonorIndex {
    pub seq: i64,
    /// The records answer as the full history would for any instant from here on.
    pub valid_from: DateTime<Utc>,
    /// What was cut (`None`: nothing), and the policy's lookback it was cut for.
    pub horizon: Option<DateTime<Utc>>,
    pub lookback: Option<TimeDelta>,
    pub donors: BTreeMap<i64, DonorEntry>,
}

/// The index of one process: readers judge under the read lock; `refresh` serialises the
/// refreshes so that each reads the changes after the last one applied.
#[derive(Debug, Default)]
pub struct DonorIndexSlot {
    pub index: RwLock<Option<DonorIndex>>,
    pub refresh: Mutex<()>,
}
