//! Fan-out of an alert event (`services::alerts::raise`): one queued delivery per matching
//! subscription (outbox), in the caller's transaction.

use crate::domain::alerts::AlertEntity;
use crate::domain::requests::AllocationStatus;
use crate::error::ApiResult;
use crate::services::from_stored_json;
use crate::store::alerts::Alert;
use crate::store::webhooks as rows;
use crate::store::{self, DbConn};

/// The hospital an alert is about, if any: the hospital of the request, of the allocation, or
/// of the allocation holding (or having received) the unit. Donor and collection alerts belong
/// to the blood bank only.
fn hospital_of(conn: &mut DbConn, alert: &Alert) -> ApiResult<Option<i64>> {
    let Ok(id) = alert.entity_id.parse::<i64>() else {
        return Ok(None);
    };
    let request_hospital = |conn: &mut DbConn, request_id: i64| -> ApiResult<Option<i64>> {
        Ok(store::requests::find(conn, request_id)?.map(|r| r.hospital_id))
    };
    match alert.entity_type {
        AlertEntity::Request => request_hospital(conn, id),
        AlertEntity::Patient => Ok(store::patients::find(conn, id)?.map(|p| p.hospital_id)),
        AlertEntity::Allocation => match store::allocations::find(conn, id)? {
            Some(a) => request_hospital(conn, a.request_id),
            None => Ok(None),
        },
        AlertEntity::Unit => {
            let held = store::allocations::of_unit(conn, id)?.into_iter().rev().find(|a| {
                matches!(
                    a.status,
                    AllocationStatus::Allocated | AllocationStatus::Issued | AllocationStatus::Transfused
                )
            });
            match held {
                Some(a) => request_hospital(conn, a.request_id),
                None => Ok(None),
            }
        }
        AlertEntity::Task | AlertEntity::Collection => Ok(None),
    }
}

/// Queues one delivery of the event for every active subscription that wants the alert's kind
/// and may see its hospital.
pub fn fan_out(conn: &mut DbConn, alert: &Alert, event_id: i64) -> ApiResult<()> {
    let subscriptions = rows::active(conn)?;
    if subscriptions.is_empty() {
        return Ok(());
    }
    let hospital = hospital_of(conn, alert)?;
    for s in subscriptions {
        let events: Vec<String> = from_stored_json("events", &s.events)?;
        let wanted = events.iter().any(|e| e == "*" || e == alert.kind.as_str());
        let allowed = s.hospital_id.is_none_or(|h| Some(h) == hospital);
        if wanted && allowed {
            rows::enqueue(conn, s.id, alert.id, event_id, alert.kind.as_str(), store::now())?;
        }
    }
    Ok(())
}
