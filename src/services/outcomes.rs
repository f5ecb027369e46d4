//! The transfusion outcome an allocation shows: the neutrophil counts reported for it
//! (`services::allocations::counts` records them) and, where the transfusion record has none,
//! the pre- and post-transfusion counts `domain::outcome` picks from them. Read by the
//! allocation and request views, so it depends on neither.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::utc;
use crate::domain::outcome::{self, Count};
use crate::error::ApiResult;
use crate::store::DbConn;
use crate::store::allocations::Allocation;
use crate::store::anc_results as rows;

/// A count reported for an allocation, as the allocation lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AncResultView {
    pub id: i64,
    #[schema(minimum = 0, maximum = 100000)]
    pub anc_per_ul: i32,
    /// When the sample was taken.
    pub effective_at: DateTime<Utc>,
    /// The account that reported it.
    pub recorded_by: String,
}

/// The counts reported for an allocation, by time taken, and the outcome it shows: the counts
/// recorded with the transfusion first, the reported ones where those are missing.
pub fn of_allocation(conn: &mut DbConn, a: &Allocation) -> ApiResult<(Vec<AncResultView>, outcome::Shown)> {
    let rows = rows::of_allocations(conn, &[a.id])?;
    let counts: Vec<Count> = rows
        .iter()
        .map(|r| Count {
            id: r.id,
            anc_per_ul: r.anc_per_ul,
            effective_at: utc(r.effective_at),
        })
        .collect();
    let reported = a
        .transfusion_started_at
        .map(|start| outcome::pre_and_post(utc(start), a.transfusion_ended_at.map(utc), &counts))
        .unwrap_or_default();
    let shown = outcome::shown(a.pre_anc_per_ul, a.post_anc_per_ul, &reported);
    let list = rows
        .into_iter()
        .map(|r| AncResultView {
            id: r.id,
            anc_per_ul: r.anc_per_ul,
            effective_at: utc(r.effective_at),
            recorded_by: r.recorded_by,
        })
        .collect();
    Ok((list, shown))
}
