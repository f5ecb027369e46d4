//! Printing a unit's label (PDF or ZPL) and the record of every print.
//!
//! A label's *version* is one content of it: the SHA-256 of the label's JSON without
//! `version`. While the content equals the last printed one, the version stays; once the unit
//! changed (irradiation, release, emergency release, …) it is the next number. Each print is a
//! `label_prints` row and an audit entry on the unit, `unit.label_printed` or, when that version
//! was printed before, `unit.label_reprinted`, in the print's one transaction.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::Label;
use super::labels::{content, digest, version};
use crate::domain::policy::Policy;
use crate::domain::units::UnitStatus;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::input::UnitKey;
use crate::labels;
use crate::services::utc;
use crate::store::audit::{self, Actor, Change};
use crate::store::label_prints::{self as rows, NewLabelPrint};
use crate::store::{self, DbConn};

/// How a label is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelFormat {
    Pdf,
    /// ZPL II at this many dots per inch (one of [`labels::zpl::DPIS`]).
    Zpl(u16),
}

impl LabelFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Zpl(_) => "zpl",
        }
    }

    fn dpi(self) -> Option<u16> {
        match self {
            Self::Pdf => None,
            Self::Zpl(dpi) => Some(dpi),
        }
    }
}

/// One printed label.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelPrintView {
    pub id: i64,
    pub version: i32,
    /// `pdf` or `zpl`.
    pub format: String,
    /// ZPL only: the printer's resolution.
    pub dpi: Option<i32>,
    /// SHA-256 (hex) of the label's content; equal digests are the same version.
    pub content_sha256: String,
    pub printed_by: String,
    pub printed_at: DateTime<Utc>,
    /// This version had been printed before.
    pub reprint: bool,
}

/// The prints of one unit, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelPrints {
    pub unit_id: i64,
    /// The version the label has now (what the next print would be).
    pub current_version: i32,
    pub items: Vec<LabelPrintView>,
}

/// A print: the file and its record.
pub struct Printed {
    pub body: Vec<u8>,
    pub label: Label,
    pub print: LabelPrintView,
}

fn print_view(row: rows::LabelPrint, reprint: bool) -> LabelPrintView {
    LabelPrintView {
        id: row.id,
        version: row.version,
        format: row.format,
        dpi: row.dpi,
        content_sha256: row.content_sha256,
        printed_by: row.printed_by,
        printed_at: utc(row.printed_at),
        reprint,
    }
}

/// Renders the unit's label now and records the print (run inside one write transaction).
/// A unit that has expired, been discarded or transfused gets no new label.
pub fn print(
    conn: &mut DbConn,
    actor: &Actor,
    key: &UnitKey,
    format: LabelFormat,
    facility_name: &str,
    tz: Tz,
    policy: &Policy,
) -> ApiResult<Printed> {
    // Locked before the label is read: a change committing meanwhile (an irradiation, a second
    // print taking the next version) waits for this print.
    let unit = super::find(conn, key)?;
    store::units::lock(conn, unit.id)?;
    let (unit_id, status, mut label) = content(conn, key, facility_name, tz, policy)?;
    if matches!(
        status,
        UnitStatus::Expired | UnitStatus::Discarded | UnitStatus::Transfused
    ) {
        return Err(ApiError::new(
            ErrorCode::LabelNotPrintable,
            format!("unit {} is {status}: no label is printed for it", label.din),
        ));
    }
    let (version, reprint) = version(conn, unit_id, &label)?;
    label.version = version;
    let items = labels::layout(&label)?;
    let body = match format {
        LabelFormat::Pdf => labels::pdf::render(&items, &format!("Label {} v{version}", label.din)),
        LabelFormat::Zpl(dpi) => labels::zpl::render(&items, dpi)
            .ok_or_else(|| ApiError::new(ErrorCode::UnsupportedDpi, format!("no ZPL for {dpi} dpi")))?
            .into_bytes(),
    };
    let sha = digest(&label)?;
    let row = rows::insert(
        conn,
        &NewLabelPrint {
            unit_id,
            version,
            format: format.name(),
            dpi: format.dpi().map(i32::from),
            content_sha256: &sha,
            printed_by: &actor.name,
            printed_at: store::now(),
        },
    )?;
    let print = print_view(row, reprint);
    let action = if reprint {
        "unit.label_reprinted"
    } else {
        "unit.label_printed"
    };
    let after = serde_json::to_value(&print).map_err(ApiError::internal)?;
    audit::append(conn, actor, Change::created(action, "unit", unit_id, after))?;
    Ok(Printed { body, label, print })
}

/// Every print of the unit, oldest first, with the version its label has now.
pub fn prints(
    conn: &mut DbConn,
    key: &UnitKey,
    facility_name: &str,
    tz: Tz,
    policy: &Policy,
) -> ApiResult<LabelPrints> {
    let (unit_id, _, label) = content(conn, key, facility_name, tz, policy)?;
    let (current_version, _) = version(conn, unit_id, &label)?;
    let mut seen = std::collections::BTreeSet::new();
    let items = rows::list(conn, unit_id)?
        .into_iter()
        .map(|row| {
            let reprint = !seen.insert(row.version);
            print_view(row, reprint)
        })
        .collect();
    Ok(LabelPrints {
        unit_id,
        current_version,
        items,
    })
}
