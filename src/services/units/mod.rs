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
mod storage;
mod testing;
mod view;

pub use creation::{CreateUnitInput, IrradiationInput, PoolMemberInput, SourceInput, create, irradiate};
pub use labels::{Label, LabelBarcodes, label};
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

use chrono::{DateTime, Utc};

use super::{stored, utc};
use crate::domain::blood::{Abo, Rhd};
use crate::domain::isbt128::{self, Din};
use crate::domain::text_enum;
use crate::domain::units::{self as rules, UnitAction, UnitStatus};
use crate::error::{ApiError, ApiResult, ErrorCode, Reason};
use crate::store::audit::{self, Actor, Change};
use crate::store::units::{self as rows, Unit, UnitData, UnitFilter};
use crate::store::{self, DbConn};

text_enum!(
    UnitSource {
        Collection => "collection",
        External => "external",
    }
);

text_enum!(
    ReleaseKind {
        Tested => "tested",
        Emergency => "emergency",
    }
);

/// Finds a unit by numeric id, DIN, or DIN followed by its check character.
pub fn find(conn: &mut DbConn, key: &str) -> ApiResult<Unit> {
    let key = key.trim();
    // A DIN may be all digits (its FIN can start with 1–9), but it is 13 or more characters.
    let found = if (1..13).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit()) {
        key.parse::<i64>()
            .ok()
            .map(|id| rows::find(conn, id))
            .transpose()?
            .flatten()
    } else {
        let din = parse_din_reference(key)?;
        rows::find_by_din(conn, &din.as_text())?
    };
    found.ok_or_else(|| ApiError::not_found("unit"))
}

fn isbt_refusal(e: isbt128::IsbtError) -> ApiError {
    ApiError::refused(
        ErrorCode::from(&e),
        "the DIN is not valid ISBT 128",
        vec![Reason {
            code: e.code().to_owned(),
            message: e.to_string(),
        }],
    )
}

/// A DIN as people and scanners give it: 13 characters, 14 with the check character, or the
/// scanned `=` data structure with flags.
pub fn parse_din_reference(raw: &str) -> ApiResult<Din> {
    Din::parse_reference(raw).map_err(isbt_refusal)
}

/// The unit; a hospital account (`scope`) sees only units issued to one of its requests.
pub fn get(conn: &mut DbConn, key: &str, scope: Option<i64>) -> ApiResult<UnitView> {
    let u = find(conn, key)?;
    if let Some(hospital_id) = scope {
        let mut issued_to_it = false;
        for a in crate::store::allocations::of_unit(conn, u.id)? {
            if a.issued_at.is_none() {
                continue;
            }
            if crate::store::requests::find(conn, a.request_id)?.is_some_and(|r| r.hospital_id == hospital_id) {
                issued_to_it = true;
            }
        }
        if !issued_to_it {
            return Err(ApiError::not_found("unit"));
        }
    }
    view(conn, u, utc(store::now()))
}

// ---------------------------------------------------------------------------------------------
// Changes

/// Loads and locks the unit and checks `action` at this moment.
fn begin(conn: &mut DbConn, key: &str, action: UnitAction, now: DateTime<Utc>) -> ApiResult<(Unit, UnitStatus)> {
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

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn din_references_never_panic_and_every_form_names_the_same_unit(
            text in prop_oneof![any::<String>(), "[ =A-Z0-9a-zé*+]{12,17}"],
            fin in "[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}",
            year in 0u8..=99,
            sequence in 0u32..=Din::MAX_SEQUENCE,
            flags in prop_oneof![(0u8..=59).prop_map(|f| format!("{f:02}")), Just(String::new())],
        ) {
            let _ = parse_din_reference(&text);
            let din = Din::new(&fin, year, sequence).expect("valid DIN");
            let plain = din.as_text();
            let flags = if flags.is_empty() { din.type3_flags() } else { flags };
            for form in [
                plain.clone(),
                format!("{plain}{}", din.check_character()),
                format!(" ={}{flags} ", plain.to_ascii_lowercase()),
            ] {
                prop_assert_eq!(parse_din_reference(&form).ok(), Some(din.clone()), "{}", form);
            }
        }
    }
}
