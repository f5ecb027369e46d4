//! The label of a unit: eye-readable text and the ISBT 128 data structures.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use super::view::{Release, view};
use super::{ReleaseKind, find};
use crate::domain::blood::Rhd;
use crate::domain::isbt128::{self, Din};
use crate::domain::policy::Policy;
use crate::domain::units::UnitStatus;
use crate::error::{ApiError, ApiResult};
use crate::input::UnitKey;
use crate::services::utc;
use crate::store::label_prints as print_rows;
use crate::store::{self, DbConn};

pub use crate::labels::{Label, LabelBarcodes, QUARANTINE};

/// A time as printed on a label: the facility's wall clock with the zone's abbreviation.
fn local_text(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%d %b %Y %H:%M %Z")
        .to_string()
        .to_uppercase()
}

/// The unit's label now, with its version (a preview: nothing is recorded).
pub fn label(conn: &mut DbConn, key: &UnitKey, facility_name: &str, tz: Tz, policy: &Policy) -> ApiResult<Label> {
    let (unit, _, mut label) = content(conn, key, facility_name, tz, policy)?;
    label.version = version(conn, unit, &label)?.0;
    Ok(label)
}

/// The label's content (`version` 0), the unit's id and its status now.
pub(super) fn content(
    conn: &mut DbConn,
    key: &UnitKey,
    facility_name: &str,
    tz: Tz,
    policy: &Policy,
) -> ApiResult<(i64, UnitStatus, Label)> {
    let u = find(conn, key)?;
    let v = view(conn, u, utc(store::now()))?;
    let din = Din::parse(&v.din).map_err(|e| ApiError::internal(anyhow::anyhow!("stored DIN: {e}")))?;
    let rhd = match (v.rhd_pooled, v.rhd) {
        (true, _) => "RhD pooled",
        (false, Rhd::Positive) => "RhD positive",
        (false, Rhd::Negative) => "RhD negative",
    };
    let group_code = if v.rhd_pooled {
        isbt128::pooled_rhd_code(v.abo)
    } else {
        isbt128::blood_group_code(v.abo, v.rhd)
    };
    let quarantined = v.status == UnitStatus::Quarantined;
    let mut statements = vec!["Do not agitate".to_owned()];
    if quarantined {
        statements.push(QUARANTINE.to_owned());
    }
    if v.irradiated {
        statements.push("Irradiated".to_owned());
    }
    if let Some(Release {
        kind: ReleaseKind::Emergency,
        physician: Some(p),
        ..
    }) = &v.release
    {
        statements.push(format!(
            "EMERGENCY RELEASE: not fully tested for infectious markers; released on the authority of {} ({})",
            p.name,
            local_text(p.acknowledged_at, tz)
        ));
    }
    statements.extend(
        [
            "Always check patient/component compatibility/identity",
            "Inspect pack and contents for signs of deterioration or damage",
            "Risk of adverse reaction/infection, including vCJD",
        ]
        .map(str::to_owned),
    );
    let label = Label {
        version: 0,
        product_name: if v.pooled {
            "Granulocytes, Pooled"
        } else {
            "Granulocytes, Apheresis"
        }
        .to_owned(),
        producer: v.supplier.clone().unwrap_or_else(|| facility_name.to_owned()),
        din: format!("{} {:02} {:06}", din.fin, din.year, din.sequence),
        check_character: v.check_character.clone(),
        blood_group: format!("{} {rhd}", v.abo),
        cmv: v.cmv,
        volume_ml: v.volume_ml,
        granulocyte_count: v.granulocyte_count,
        collected_at: v.collected_at,
        expires_at: v.expires_at,
        expiry_text: local_text(v.expires_at, tz),
        time_zone: tz.name().to_owned(),
        storage: format!(
            "Store at {}–{} °C",
            policy.unit.storage_temp_min_c, policy.unit.storage_temp_max_c
        ),
        irradiated: v.irradiated,
        quarantined,
        emergency_release: matches!(
            v.release,
            Some(Release {
                kind: ReleaseKind::Emergency,
                ..
            })
        ),
        pooled_from: v.pooled_from.clone(),
        statements,
        isbt128: LabelBarcodes {
            din: format!("={}{}", din.as_text(), din.type3_flags()),
            blood_group: format!("=%{group_code}00"),
            product: format!("=<{}", v.product_code),
            expiry: format!(
                "&>{}",
                isbt128::format_date_time(v.expires_at.with_timezone(&tz).naive_local())
            ),
        },
    };
    Ok((v.id, v.status, label))
}

/// SHA-256 of the label's content, `version` left out.
pub(super) fn digest(label: &Label) -> ApiResult<String> {
    let mut value = serde_json::to_value(label).map_err(ApiError::internal)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("version");
    }
    // serde_json's maps are sorted by key: the same content always gives the same text.
    let text = serde_json::to_string(&value).map_err(ApiError::internal)?;
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

/// The label's version and whether that version has been printed already.
pub(super) fn version(conn: &mut DbConn, unit_id: i64, label: &Label) -> ApiResult<(i32, bool)> {
    let sha = digest(label)?;
    Ok(match print_rows::latest(conn, unit_id)? {
        None => (1, false),
        Some(last) if last.content_sha256 == sha => (last.version, true),
        Some(last) => (last.version + 1, false),
    })
}
