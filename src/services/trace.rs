//! Traceability (domain.md §5): a unit back to its donor and forward to its recipient, and a
//! donor's look-back (every unit, consignee hospital and recipient since a date).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::allocations::{AllocationView, CrossmatchView};
use super::collections::CollectionView;
use super::stimulations::StimulationView;
use super::units::UnitView;
use super::{stored, utc};
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult};
use crate::input::UnitKey;
use crate::store::{
    self, DbConn, allocations as allocation_rows, collections as collection_rows, patients as patient_rows,
};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DonorRef {
    pub donor_id: i64,
    pub donor_number: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecipientRef {
    pub patient_id: i64,
    pub hospital_id: i64,
    pub mrn: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TracedAllocation {
    pub allocation: AllocationView,
    pub recipient: RecipientRef,
}

/// donor → stimulation → collection → unit → irradiation/tests → crossmatch → allocation →
/// issue → outcome → patient.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Trace {
    pub donor: Option<DonorRef>,
    pub collection: Option<CollectionView>,
    pub stimulations: Vec<StimulationView>,
    /// Supplier units: where it came from, and every contributing donation of a pool.
    pub supplier: Option<String>,
    pub pooled_from: Vec<String>,
    /// Includes irradiation, release and test results.
    pub unit: UnitView,
    pub crossmatches: Vec<CrossmatchView>,
    pub allocations: Vec<TracedAllocation>,
    /// Set when the DIN asked for is a donation that went into this pool (a supplier's recall
    /// of one donation reaches the pool's recipients).
    pub matched_member_din: Option<String>,
    /// Every pool the DIN asked for went into, with where each went.
    pub member_of: Vec<PoolRef>,
}

/// A pool a donation went into, and its recipients.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PoolRef {
    pub unit_id: i64,
    pub din: String,
    pub status: crate::domain::units::UnitStatus,
    pub allocations: Vec<TracedAllocation>,
}

fn recipient(conn: &mut DbConn, request_id: i64) -> ApiResult<RecipientRef> {
    let r = store::requests::find(conn, request_id)?.ok_or_else(|| ApiError::not_found("request"))?;
    let p = patient_rows::find(conn, r.patient_id)?.ok_or_else(|| ApiError::not_found("patient"))?;
    Ok(RecipientRef {
        patient_id: p.id,
        hospital_id: p.hospital_id,
        mrn: p.mrn,
    })
}

fn allocations_of(conn: &mut DbConn, unit_id: i64) -> ApiResult<Vec<TracedAllocation>> {
    let mut out = Vec::new();
    for a in allocation_rows::of_unit(conn, unit_id)? {
        let who = recipient(conn, a.request_id)?;
        out.push(TracedAllocation {
            allocation: super::allocations::view(conn, a)?,
            recipient: who,
        });
    }
    Ok(out)
}

/// The trace of a unit by id or DIN. A DIN that is not a unit here but a donation in one or
/// more pools traces the (first) pool and lists every pool in `member_of`.
pub fn unit_trace(conn: &mut DbConn, key: &UnitKey, policy: &Policy) -> ApiResult<Trace> {
    let now = utc(store::now());
    let (u, matched_member_din, member_din) = match super::units::find(conn, key) {
        Ok(u) => {
            let din = u.din.clone();
            (u, None, din)
        }
        Err(not_found) => {
            let UnitKey::Din(din) = key else {
                return Err(not_found);
            };
            let din = din.as_text();
            let Some(first) = store::units::pools_with_member(conn, &din)?.first().copied() else {
                return Err(not_found);
            };
            let pool = store::units::find(conn, first)?.ok_or_else(|| ApiError::not_found("unit"))?;
            (pool, Some(din.clone()), din)
        }
    };
    let mut member_of = Vec::new();
    for pool_id in store::units::pools_with_member(conn, &member_din)? {
        let Some(pool) = store::units::find(conn, pool_id)? else {
            continue;
        };
        let status = super::units::view(conn, pool.clone(), now)?.status;
        member_of.push(PoolRef {
            unit_id: pool.id,
            din: pool.din,
            status,
            allocations: allocations_of(conn, pool_id)?,
        });
    }
    let unit = super::units::view(conn, u.clone(), now)?;
    let donor = match u.donor_id {
        Some(id) => store::donors::find(conn, id)?.map(|d| DonorRef {
            donor_id: d.id,
            donor_number: d.donor_number,
        }),
        None => None,
    };
    let (collection, stimulations) = match u.collection_id {
        Some(cid) => {
            let c = super::collections::get(conn, cid, policy)?;
            let stims = c.stimulations.clone();
            (Some(c), stims)
        }
        None => (None, Vec::new()),
    };
    let (crossmatches, _) = super::allocations::crossmatches(conn, Some(u.id), None, None, i64::from(u16::MAX))?;
    Ok(Trace {
        donor,
        collection,
        stimulations,
        supplier: unit.supplier.clone(),
        pooled_from: unit.pooled_from.clone(),
        allocations: allocations_of(conn, u.id)?,
        crossmatches,
        unit,
        matched_member_din,
        member_of,
    })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LookbackUnit {
    pub unit_id: i64,
    pub din: String,
    pub collection_id: Option<i64>,
    pub collected_at: DateTime<Utc>,
    pub status: crate::domain::units::UnitStatus,
    /// Every hospital and recipient the unit went to.
    pub allocations: Vec<TracedAllocation>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lookback {
    pub donor_id: i64,
    pub donor_number: String,
    pub since: DateTime<Utc>,
    pub units: Vec<LookbackUnit>,
    /// Distinct consignee hospitals.
    pub hospitals: Vec<i64>,
    /// Distinct recipients.
    pub recipients: Vec<RecipientRef>,
}

/// Every unit from the donor's collections ending at or after `since`.
pub fn lookback(conn: &mut DbConn, donor_id: i64, since: DateTime<Utc>) -> ApiResult<Lookback> {
    let donor = super::donors::find(conn, donor_id)?;
    let now = utc(store::now());
    let mut units = Vec::new();
    let mut hospitals: Vec<i64> = Vec::new();
    let mut recipients: Vec<RecipientRef> = Vec::new();
    for c in collection_rows::of_donors(conn, &[donor_id])? {
        let Some(u) = store::units::find_by_collection(conn, c.id)? else {
            continue;
        };
        if u.collected_at < stored(since) {
            continue;
        }
        let allocations = allocations_of(conn, u.id)?;
        for a in &allocations {
            if !hospitals.contains(&a.recipient.hospital_id) {
                hospitals.push(a.recipient.hospital_id);
            }
            if !recipients.iter().any(|r| r.patient_id == a.recipient.patient_id) {
                recipients.push(a.recipient.clone());
            }
        }
        let view = super::units::view(conn, u, now)?;
        units.push(LookbackUnit {
            unit_id: view.id,
            din: view.din,
            collection_id: view.collection_id,
            collected_at: view.collected_at,
            status: view.status,
            allocations,
        });
    }
    Ok(Lookback {
        donor_id,
        donor_number: donor.donor_number,
        since,
        units,
        hospitals,
        recipients,
    })
}
