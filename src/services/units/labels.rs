//! The label of a unit: eye-readable text and the ISBT 128 data structures.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::view::{Release, view};
use super::{ReleaseKind, find};
use crate::domain::blood::{Cmv, Rhd};
use crate::domain::isbt128::{self, Din};
use crate::domain::policy::Policy;
use crate::domain::units::UnitStatus;
use crate::error::{ApiError, ApiResult};
use crate::input::UnitKey;
use crate::services::utc;
use crate::store::{self, DbConn};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LabelBarcodes {
    /// `=` + DIN + Type 3 flags (the flags carry the check character).
    pub din: String,
    /// `=%` + blood group code + `00`.
    pub blood_group: String,
    /// `=<` + product code.
    pub product: String,
    /// `&>` + `cyyjjjhhmm`, on the facility's wall clock (scanners read it as local time).
    pub expiry: String,
}

/// What the label must carry (domain-reference §5.1), eye-readable, plus the ISBT 128 data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Label {
    /// Which version of this unit's label this content is: the last printed version while the
    /// content is unchanged, the next one once the unit changed (irradiation, release, …).
    /// 1 before any print.
    pub version: i32,
    pub product_name: String,
    pub producer: String,
    /// DIN printed in groups (`A9999 26 000001`), with the boxed check character separately.
    pub din: String,
    pub check_character: String,
    pub blood_group: String,
    /// Printed as special testing ("CMV NEGATIVE") when negative.
    pub cmv: Cmv,
    pub volume_ml: i32,
    pub granulocyte_count: f64,
    pub collected_at: DateTime<Utc>,
    /// With the hour: the unit lives 24 h.
    pub expires_at: DateTime<Utc>,
    /// The expiry on the facility's wall clock, with its zone (`26 NOV 2026 06:04 EST`).
    pub expiry_text: String,
    /// The facility's IANA time zone (`GRANULO_TIMEZONE`).
    pub time_zone: String,
    pub storage: String,
    pub irradiated: bool,
    /// Not released (or back in quarantine): the label says it is not for transfusion.
    pub quarantined: bool,
    pub emergency_release: bool,
    pub pooled_from: Vec<String>,
    /// Statements to print, in order.
    pub statements: Vec<String>,
    pub isbt128: LabelBarcodes,
}

/// What a label printed before release says.
pub const QUARANTINE: &str = "QUARANTINE: not for transfusion";

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
    label.version = super::prints::version(conn, unit, &label)?.0;
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
