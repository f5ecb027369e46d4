//! What a hospital sees of a unit issued to it: what a ward needs to check the bag at the
//! bedside and nothing of the bank's inside (donor, collection, pool members, storage, staff).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{UnitView, find, view};
use crate::domain::blood::{Abo, Cmv, Rhd};
use crate::domain::units::UnitStatus;
use crate::error::{ApiError, ApiResult};
use crate::input::UnitKey;
use crate::services::utc;
use crate::store::{self, DbConn};

/// A unit as a hospital account sees it (a unit issued to one of its requests). No internal
/// ids (donor, collection, pool members), no staff usernames, no storage or test detail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HospitalUnitView {
    pub id: i64,
    pub din: String,
    /// ISO/IEC 7064 MOD 37-2 check character of the DIN.
    pub check_character: String,
    pub product_code: String,
    /// What the product is, in words.
    pub product_name: String,
    pub abo: Abo,
    /// For selection: a pooled RhD group counts as RhD-positive.
    pub rhd: Rhd,
    /// The pool's RhD is mixed (ISBT 128 "pooled RhD").
    pub rhd_pooled: bool,
    pub cmv: Cmv,
    pub irradiated: bool,
    pub pooled: bool,
    pub volume_ml: i32,
    pub granulocyte_count: f64,
    pub collected_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Hours until expiry, 0 once expired.
    pub hours_remaining: f64,
    pub status: UnitStatus,
    /// The hospital's request and allocation the unit was issued for (the latest issue).
    pub request_id: i64,
    pub allocation_id: i64,
    pub issued_at: DateTime<Utc>,
}

/// `GET /units/{id}`: the full view for staff, the ward view for a hospital.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum UnitRead {
    Staff(Box<UnitView>),
    Hospital(Box<HospitalUnitView>),
}

/// The unit for a staff caller (`scope` None), or for a hospital the ward view of a unit issued
/// to one of its requests (404 for any other unit).
pub fn read(conn: &mut DbConn, key: &UnitKey, scope: Option<i64>) -> ApiResult<UnitRead> {
    let u = find(conn, key)?;
    let now = utc(store::now());
    let Some(hospital_id) = scope else {
        return Ok(UnitRead::Staff(Box::new(view(conn, u, now)?)));
    };
    let mut issue: Option<(i64, i64, chrono::NaiveDateTime)> = None;
    for a in store::allocations::of_unit(conn, u.id)? {
        let Some(issued_at) = a.issued_at else { continue };
        let theirs = store::requests::find(conn, a.request_id)?.is_some_and(|r| r.hospital_id == hospital_id);
        if theirs && issue.is_none_or(|(_, _, at)| issued_at > at) {
            issue = Some((a.id, a.request_id, issued_at));
        }
    }
    let (allocation_id, request_id, issued_at) = issue.ok_or_else(|| ApiError::not_found("unit"))?;
    let v = view(conn, u, now)?;
    Ok(UnitRead::Hospital(Box::new(HospitalUnitView {
        id: v.id,
        product_name: product_name(&v),
        din: v.din,
        check_character: v.check_character,
        product_code: v.product_code,
        abo: v.abo,
        rhd: v.rhd,
        rhd_pooled: v.rhd_pooled,
        cmv: v.cmv,
        irradiated: v.irradiated,
        pooled: v.pooled,
        volume_ml: v.volume_ml,
        granulocyte_count: v.granulocyte_count,
        collected_at: v.collected_at,
        expires_at: v.expires_at,
        hours_remaining: v.hours_remaining,
        status: v.status,
        request_id,
        allocation_id,
        issued_at: utc(issued_at),
    })))
}

fn product_name(v: &UnitView) -> String {
    let mut name = String::from("Granulocytes");
    if v.pooled {
        name.push_str(", pooled");
    }
    if v.irradiated {
        name.push_str(", irradiated");
    }
    name
}
