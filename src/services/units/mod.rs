//! Granulocyte units: creation (from a collection or a supplier, pooled or not), DIN
//! assignment, irradiation, test results, release, discard, storage readings, inventory and
//! labels. Status changes go through `domain::units::transition` at the moment of the action.
//!
//! Here: lookup by id or DIN, the shared load-and-lock (`begin`) and audited `save`, unit
//! alerts, and the inventory list. `view`: what the API shows and the facts it is read from;
//! `creation`; `testing` (results and release); `storage` (inspection, discard, readings);
//! `labels`.

mod creation;
mod labels;
mod prints;
mod receipt;
mod storage;
mod testing;
mod view;
mod ward;

pub use creation::{CreateUnitInput, IrradiationInput, PoolMemberInput, SourceInput, create, irradiate};
pub use labels::{Label, LabelBarcodes, QUARANTINE, label};
pub use prints::{LabelFormat, LabelPrintView, LabelPrints, Printed, print, prints};
pub use receipt::{ReceiveUnitInput, receive};
pub use storage::{
    InspectionInput, InspectionResult, InspectionView, LocationReadingInput, ReadingInput, ReadingView, discard,
    disposition_excursions, inspect, record_location_reading, record_reading,
};
pub use testing::{ReleaseInput, TestInput, record_test, release};
use view::snapshot;
pub use view::{
    ExcursionView, Irradiation, Physician, PoolMemberView, Release, TestView, UnitRecord, UnitView, record, records,
    view, views,
};
pub use ward::{HospitalUnitView, UnitRead, read};

use chrono::{DateTime, Utc};

use super::{stored, utc};
use crate::domain::blood::{Abo, Rhd};

use crate::domain::units::{self as rules, UnitAction, UnitStatus};
pub use crate::domain::units::{ReleaseKind, UnitSource};
use crate::error::{ApiError, ApiResult};
use crate::input::UnitKey;
use crate::store::audit::{self, Actor, Change};
use crate::store::units::{self as rows, Unit, UnitData, UnitFilter};
use crate::store::{self, DbConn};

/// Finds a unit by numeric id or DIN.
pub fn find(conn: &mut DbConn, key: &UnitKey) -> ApiResult<Unit> {
    let found = match key {
        UnitKey::Id(id) => rows::find(conn, *id)?,
        UnitKey::Din(din) => rows::find_by_din(conn, &din.as_text())?,
    };
    found.ok_or_else(|| ApiError::not_found("unit"))
}

// ---------------------------------------------------------------------------------------------
// Changes

/// Loads and locks the unit and checks `action` at this moment.
fn begin(conn: &mut DbConn, key: &UnitKey, action: UnitAction, now: DateTime<Utc>) -> ApiResult<(Unit, UnitStatus)> {
    let u = find(conn, key)?;
    rows::lock(conn, u.id)?;
    let to = rules::transition(u.status, action, utc(u.expires_at), now).map_err(|code| {
        let status = rules::effective_status(u.status, utc(u.expires_at), now);
        ApiError::new(code.into(), format!("unit {} is {status}; it cannot {action}", u.din))
    })?;
    Ok((u, to))
}

fn save(
    conn: &mut DbConn,
    actor: &Actor,
    action: &str,
    before: Unit,
    data: UnitData,
    now: DateTime<Utc>,
) -> ApiResult<UnitView> {
    let id = before.id;
    let before = view(conn, before, now)?;
    let row = rows::update(conn, id, &data)?;
    let after = view(conn, row, now)?;
    audit::append(
        conn,
        actor,
        Change::updated(action, "unit", id, snapshot(&before)?, snapshot(&after)?),
    )?;
    Ok(after)
}

// Inventory

/// Keyset position in the inventory: (expires_at, id) of the last unit of a page.
pub type UnitCursor = (chrono::NaiveDateTime, i64);

pub struct ListRequest {
    pub status: Option<UnitStatus>,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    pub expiring_within_hours: Option<u32>,
    pub after: Option<UnitCursor>,
    pub limit: i64,
}

/// First-expiring first; `status` is matched as of now (see [`UnitView::status`]).
pub fn list(conn: &mut DbConn, req: ListRequest) -> ApiResult<(Vec<UnitView>, Option<UnitCursor>)> {
    let now = utc(store::now());
    let in_bank = ["quarantined", "available", "allocated"];
    let mut filter = UnitFilter {
        abo: req.abo.map(|a| a.as_str().to_owned()),
        rhd: req.rhd.map(|r| r.as_str().to_owned()),
        expires_before: req
            .expiring_within_hours
            .map(|h| stored(now + chrono::TimeDelta::hours(i64::from(h)))),
        after: req.after,
        ..UnitFilter::default()
    };
    if req.expiring_within_hours.is_some() {
        // "Expiring within" means still in the bank and not yet expired.
        filter.unexpired_at = Some(stored(now));
        filter.statuses = Some(in_bank.map(str::to_owned).to_vec());
    }
    match req.status {
        None => {}
        Some(UnitStatus::Expired) => {
            filter.statuses = Some(
                ["expired", "quarantined", "available", "allocated"]
                    .map(str::to_owned)
                    .to_vec(),
            );
            filter.expired_at = Some(stored(now));
        }
        Some(s) if in_bank.contains(&s.as_str()) => {
            filter.statuses = Some(vec![s.as_str().to_owned()]);
            filter.unexpired_at = Some(stored(now));
        }
        Some(s) => filter.statuses = Some(vec![s.as_str().to_owned()]),
    }
    let mut found = rows::list(conn, &filter, req.limit + 1)?;
    let next = if found.len() as i64 > req.limit {
        found.truncate(usize::try_from(req.limit).unwrap_or(0));
        found.last().map(|u| (u.expires_at, u.id))
    } else {
        None
    };
    Ok((views(conn, found, now)?, next))
}

/// The units the console's board shows (`domain::board::on_board`: not transfused, not
/// discarded), first-expiring first, read in one statement so that no unit is missed or shown
/// twice while it changes status; `status` of each view is as of now, as in [`list`]. At most
/// `limit`; `true` when more remain.
pub fn on_board(conn: &mut DbConn, abo: Option<Abo>, rhd: Option<Rhd>, limit: i64) -> ApiResult<(Vec<UnitView>, bool)> {
    let now = utc(store::now());
    let filter = UnitFilter {
        statuses: Some(
            UnitStatus::ALL
                .iter()
                .filter(|s| crate::domain::board::on_board(**s))
                .map(|s| s.as_str().to_owned())
                .collect(),
        ),
        abo: abo.map(|a| a.as_str().to_owned()),
        rhd: rhd.map(|r| r.as_str().to_owned()),
        ..UnitFilter::default()
    };
    let mut found = rows::list(conn, &filter, limit.saturating_add(1))?;
    let more = found.len() as i64 > limit;
    found.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((views(conn, found, now)?, more))
}

// ---------------------------------------------------------------------------------------------
