//! Receipt of a supplier unit by scanning its label: `domain::label_scan` reads the scans and
//! compares them with what was typed; the unit is then created exactly as `POST /units` creates
//! a supplier unit, its audit entry recording the scans.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use utoipa::ToSchema;

use super::creation::{CreateUnitInput, PoolMemberInput, SourceInput, create_recorded};
use super::view::UnitView;
use crate::domain::blood::{Abo, Cmv, UnitRhd};
use crate::domain::label_scan::{self, LabelRefusal, TypedLabel};
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, Reason, Validator};
use crate::input::{Text, parse_din_reference};
use crate::store::DbConn;
use crate::store::audit::Actor;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"supplier": "NHSBT Filton", "scans": ["=G12341765432170", "=%6200", "=<E9999V00", "&>0263301200", "&*0263291200"],
    "volume_ml": 200, "granulocyte_count": 0.9e10}))]
pub struct ReceiveUnitInput {
    pub supplier: Text<1, 200>,
    /// The label's ISBT 128 data strings as the scanner sent them, one per barcode read (or
    /// several concatenated): DIN `=`, blood group `=%`, product `=<`, expiry `&>` or `=>`,
    /// collection `&*` or `=*`. A structure not scanned must be typed below.
    #[schema(min_items = 1, max_items = 20)]
    pub scans: Vec<String>,
    /// 1–1000 mL.
    #[schema(minimum = 1, maximum = 1000)]
    pub volume_ml: u32,
    pub granulocyte_count: f64,
    /// Typed fields: each must agree with the scans (else 422 `label_mismatch`) and stands in
    /// for a structure not scanned. The DIN as `POST /units` takes it.
    pub din: Option<String>,
    pub abo: Option<Abo>,
    pub rhd: Option<UnitRhd>,
    pub product_code: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub collected_at: Option<DateTime<Utc>>,
    pub cmv: Option<Cmv>,
    /// 0–500 mL.
    pub red_cell_volume_ml: Option<f64>,
    /// A pool (`rhd` pooled): every contributing donation, as `POST /units` takes them.
    pub pooled_from: Option<Vec<PoolMemberInput>>,
    pub storage_location: Option<Text<0, 100>>,
}

const MAX_SCANS: usize = 20;
const MAX_SCAN_LEN: usize = 512;

/// The 422 of a refused label: one reason and one `errors` entry per problem or discrepancy.
fn refusal(r: LabelRefusal) -> ApiError {
    let (code, detail, items): (ErrorCode, &str, Vec<(String, String, String)>) = match r {
        LabelRefusal::Problems(problems) => {
            let code = match problems.first() {
                Some(label_scan::ScanProblem::Unreadable { error, .. }) => ErrorCode::from(error),
                _ => ErrorCode::LabelNotAccepted,
            };
            let items = problems
                .iter()
                .map(|p| (p.code().to_owned(), p.field(), p.message()))
                .collect();
            (code, "the scanned label cannot be received", items)
        }
        LabelRefusal::Mismatch(discrepancies) => {
            let items = discrepancies
                .iter()
                .map(|d| (d.code().to_owned(), d.field.to_owned(), d.message()))
                .collect();
            (
                ErrorCode::LabelMismatch,
                "typed fields disagree with the scanned label",
                items,
            )
        }
    };
    let reasons = items
        .iter()
        .map(|(code, _, message)| Reason {
            code: code.clone(),
            message: message.clone(),
        })
        .collect();
    let errors = items
        .into_iter()
        .map(|(_, field, message)| FieldError { field, message })
        .collect();
    ApiError::refused(code, detail, reasons).with_errors(errors)
}

pub fn receive(
    conn: &mut DbConn,
    actor: &Actor,
    fin: &str,
    tz: Tz,
    input: ReceiveUnitInput,
    policy: &Policy,
) -> ApiResult<UnitView> {
    let mut v = Validator::new();
    v.check(
        (1..=MAX_SCANS).contains(&input.scans.len()),
        "scans",
        format!("must list 1 to {MAX_SCANS} data strings, one per barcode read"),
    );
    for (i, scan) in input.scans.iter().enumerate() {
        v.check(
            scan.len() <= MAX_SCAN_LEN,
            &format!("scans[{i}]"),
            format!("must be at most {MAX_SCAN_LEN} characters"),
        );
    }
    v.finish()?;
    let typed = TypedLabel {
        din: input.din.as_deref().map(parse_din_reference).transpose()?,
        abo: input.abo,
        rhd: input.rhd,
        product_code: input
            .product_code
            .as_deref()
            .map(|p| p.trim().trim_start_matches("=<").to_owned()),
        expires_at: input.expires_at,
        collected_at: input.collected_at,
    };
    let label = label_scan::receive(&input.scans, &typed, tz).map_err(refusal)?;
    let typed_fields: Vec<&str> = [
        ("din", typed.din.is_some()),
        ("abo", typed.abo.is_some()),
        ("rhd", typed.rhd.is_some()),
        ("product_code", typed.product_code.is_some()),
        ("expires_at", typed.expires_at.is_some()),
        ("collected_at", typed.collected_at.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, typed)| typed.then_some(f))
    .collect();
    let receipt = serde_json::json!({
        "received_by": "scanning",
        "scans": input.scans,
        "typed": typed_fields,
    });
    let create = CreateUnitInput {
        source: SourceInput::External {
            supplier: input.supplier.into_inner(),
            din: label.din.as_text(),
            abo: label.abo,
            rhd: label.rhd,
            collected_at: label.collected_at,
            cmv: input.cmv,
            expires_at: Some(label.expires_at),
        },
        product_code: label.product_code,
        volume_ml: input.volume_ml,
        granulocyte_count: input.granulocyte_count,
        red_cell_volume_ml: input.red_cell_volume_ml,
        pooled_from: input.pooled_from,
        storage_location: input.storage_location,
    };
    create_recorded(conn, actor, fin, tz, create, policy, Some(receipt))
}
