//! Which request holds each unit (read-only, for lists such as the console's board).

use std::collections::HashMap;

use crate::domain::requests::AllocationStatus;
use crate::error::ApiResult;
use crate::store::DbConn;
use crate::store::allocations as rows;

/// The allocation that holds a unit: allocated to, or issued for, a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub allocation_id: i64,
    pub request_id: i64,
    pub status: AllocationStatus,
}

/// The allocated or issued allocation of each of `unit_ids` that has one, in one query (a unit
/// is never allocated twice at once; should the records say otherwise, the latest wins).
pub fn holders(conn: &mut DbConn, unit_ids: &[i64]) -> ApiResult<HashMap<i64, Holder>> {
    if unit_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for a in rows::of_units(conn, unit_ids)? {
        if matches!(a.status, AllocationStatus::Allocated | AllocationStatus::Issued) {
            out.insert(
                a.unit_id,
                Holder {
                    allocation_id: a.id,
                    request_id: a.request_id,
                    status: a.status,
                },
            );
        }
    }
    Ok(out)
}
