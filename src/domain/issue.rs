//! The gate at the moment of issue (matching.md): the bag scanned at the bench must be the unit
//! allocated, and the unit must still be held for the allocation. The compatibility assessment
//! at issue runs beside it; every refusal is reported, not only the first.

use chrono::{DateTime, Utc};

use crate::domain::blood::{Abo, Rhd, UnitRhd};
use crate::domain::isbt128::{self, BloodGroup, Din, Element, IsbtError};
use crate::domain::units::{UnitStatus, effective_status};

/// The allocated unit as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct IssuedUnit<'a> {
    pub din: &'a str,
    /// As stored; expiry is applied here.
    pub status: UnitStatus,
    /// Why it was last quarantined or discarded, to tell the person at the bench.
    pub status_reason: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
}

/// A status in which a unit is no longer held for its allocation. An expired unit is not among
/// them: the assessment reports expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// A storage excursion or a reactive result since allocation.
    Quarantined,
    Available,
    Issued,
    Transfused,
    Discarded,
}

impl NotHeld {
    fn of(status: UnitStatus) -> Option<Self> {
        match status {
            UnitStatus::Allocated | UnitStatus::Expired => None,
            UnitStatus::Quarantined => Some(Self::Quarantined),
            UnitStatus::Available => Some(Self::Available),
            UnitStatus::Issued => Some(Self::Issued),
            UnitStatus::Transfused => Some(Self::Transfused),
            UnitStatus::Discarded => Some(Self::Discarded),
        }
    }

    pub fn status(self) -> UnitStatus {
        match self {
            Self::Quarantined => UnitStatus::Quarantined,
            Self::Available => UnitStatus::Available,
            Self::Issued => UnitStatus::Issued,
            Self::Transfused => UnitStatus::Transfused,
            Self::Discarded => UnitStatus::Discarded,
        }
    }
}

/// Why the gate refuses the issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueRefusal {
    /// The scan is a valid DIN, of another unit.
    DinMismatch { scanned: String, allocated: String },
    /// The scan is not a valid DIN.
    UnreadableScan(IsbtError),
    /// The bag's scanned `=%` group is not the unit's group.
    GroupMismatch { scanned: String, unit: String },
    /// The group scan is not a valid `=%` structure.
    UnreadableGroupScan(IsbtError),
    /// The unit left `allocated` since it was allocated.
    UnitNotHeld {
        din: String,
        status: NotHeld,
        reason: Option<String>,
    },
}

impl IssueRefusal {
    /// The stable API code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DinMismatch { .. } => "din_mismatch",
            Self::UnreadableScan(e) | Self::UnreadableGroupScan(e) => e.code(),
            Self::GroupMismatch { .. } => "label_group_mismatch",
            Self::UnitNotHeld { status, .. } => match status {
                NotHeld::Quarantined => "unit_quarantined",
                NotHeld::Available => "unit_available",
                NotHeld::Issued => "unit_issued",
                NotHeld::Transfused => "unit_transfused",
                NotHeld::Discarded => "unit_discarded",
            },
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::DinMismatch { scanned, allocated } => {
                format!("scanned {scanned} but the allocation is for {allocated}")
            }
            Self::UnreadableScan(_) => "the scan is not a valid DIN: the DIN is not valid ISBT 128".to_owned(),
            Self::GroupMismatch { scanned, unit } => {
                format!("the bag's blood group (=%) reads {scanned} but the unit is {unit}")
            }
            Self::UnreadableGroupScan(e) => format!("the blood group scan (=%) is not valid: {e}"),
            Self::UnitNotHeld { din, status, reason } => format!(
                "unit {din} is {}{}",
                status.status(),
                reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ),
        }
    }
}

/// The scan and status checks at issue, at `now`; empty when the unit may go.
pub fn issue_gate(scanned: &str, unit: IssuedUnit<'_>, now: DateTime<Utc>) -> Vec<IssueRefusal> {
    let mut refusals = Vec::new();
    match Din::parse_reference(scanned) {
        Ok(din) if din.as_text() == unit.din => {}
        Ok(din) => refusals.push(IssueRefusal::DinMismatch {
            scanned: din.as_text(),
            allocated: unit.din.to_owned(),
        }),
        Err(e) => refusals.push(IssueRefusal::UnreadableScan(e)),
    }
    if let Some(status) = NotHeld::of(effective_status(unit.status, unit.expires_at, now)) {
        refusals.push(IssueRefusal::UnitNotHeld {
            din: unit.din.to_owned(),
            status,
            reason: unit.status_reason.map(str::to_owned),
        });
    }
    refusals
}

/// A group as its label states it (`O RhD pooled`, `A, RhD not specified`, or the Table 5
/// message of a code that is no group).
fn group_text(g: &BloodGroup) -> String {
    match (g.abo, g.rhd, g.meaning) {
        (Some(abo), None, "pooled_rhd") => format!("{abo} RhD pooled"),
        (Some(abo), Some(rhd), _) => format!("{abo} RhD {rhd}"),
        (Some(abo), None, _) => format!("{abo}, RhD not specified"),
        (None, Some(rhd), _) => format!("pooled ABO, RhD {rhd}"),
        (None, None, meaning) => format!("no blood group ({} {meaning:?})", g.code),
    }
}

/// The `=%` group scanned from the bag at issue against the unit's group (`rhd` pooled for a
/// pool labelled RhD pooled). The intended-use column and the phenotype do not count; ABO and
/// RhD must be the unit's, a pooled-RhD pool must read pooled.
pub fn group_gate(scanned: &str, abo: Abo, rhd: UnitRhd) -> Option<IssueRefusal> {
    let group = match isbt128::decode(scanned) {
        Ok(e) => match e.as_slice() {
            [Element::BloodGroup { group, .. }] => group.clone(),
            _ => {
                return Some(IssueRefusal::UnreadableGroupScan(IsbtError::Malformed {
                    what: "blood group",
                    message: "the scan is not one =% blood group structure".to_owned(),
                }));
            }
        },
        Err(e) => return Some(IssueRefusal::UnreadableGroupScan(e)),
    };
    let as_unit = match (group.abo, group.rhd, group.meaning) {
        (Some(a), None, "pooled_rhd") => Some((a, UnitRhd::Pooled)),
        (Some(a), Some(Rhd::Positive), _) => Some((a, UnitRhd::Positive)),
        (Some(a), Some(Rhd::Negative), _) => Some((a, UnitRhd::Negative)),
        _ => None,
    };
    if as_unit == Some((abo, rhd)) {
        return None;
    }
    Some(IssueRefusal::GroupMismatch {
        scanned: group_text(&group),
        unit: format!("{abo} RhD {rhd}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const DIN: &str = "A999926000123";

    fn at(
        status: UnitStatus,
        reason: Option<&'static str>,
        expires_in_hours: i64,
    ) -> (IssuedUnit<'static>, DateTime<Utc>) {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let unit = IssuedUnit {
            din: DIN,
            status,
            status_reason: reason,
            expires_at: now + TimeDelta::hours(expires_in_hours),
        };
        (unit, now)
    }

    fn codes(scanned: &str, status: UnitStatus, expires_in_hours: i64) -> Vec<&'static str> {
        let (unit, now) = at(status, None, expires_in_hours);
        issue_gate(scanned, unit, now).iter().map(IssueRefusal::code).collect()
    }

    #[test]
    fn every_form_of_the_allocated_din_passes_and_anything_else_is_refused() {
        let din = Din::parse(DIN).expect("DIN");
        let keyed = format!("{DIN}{}", din.check_character());
        let flagged = format!("={DIN}{}", din.type3_flags());
        let wrong_check = format!("{DIN}{}", if din.check_character() == 'A' { 'B' } else { 'A' });
        let cases: [(&str, &[&str]); 9] = [
            (DIN, &[]),
            (&keyed, &[]),
            (&flagged, &[]),
            (" a999926000123 ", &[]),
            ("A999926000124", &["din_mismatch"]),
            ("B999926000123", &["din_mismatch"]),
            (&wrong_check, &["invalid_check_character"]),
            ("", &["invalid_isbt128"]),
            ("not a din", &["invalid_isbt128"]),
        ];
        for (scanned, expected) in cases {
            assert_eq!(codes(scanned, UnitStatus::Allocated, 4), expected, "{scanned:?}");
        }
    }

    #[test]
    fn only_a_unit_still_allocated_or_expired_passes_the_status_check() {
        use UnitStatus::*;
        let cases: [(UnitStatus, i64, &[&str]); 14] = [
            (Allocated, 4, &[]),
            // Expiry is the assessment's finding, not the gate's.
            (Allocated, -1, &[]),
            (Expired, -1, &[]),
            (Expired, 4, &[]),
            (Quarantined, 4, &["unit_quarantined"]),
            // A unit in the bank past its expiry is expired, whatever else it is.
            (Quarantined, -1, &[]),
            (Available, 4, &["unit_available"]),
            (Available, -1, &[]),
            (Issued, 4, &["unit_issued"]),
            (Issued, -1, &["unit_issued"]),
            (Transfused, 4, &["unit_transfused"]),
            (Transfused, -1, &["unit_transfused"]),
            (Discarded, 4, &["unit_discarded"]),
            (Discarded, -1, &["unit_discarded"]),
        ];
        for (status, hours, expected) in cases {
            assert_eq!(codes(DIN, status, hours), expected, "{status} expiring in {hours} h");
        }
        assert_eq!(
            codes("A999926000124", UnitStatus::Quarantined, 4),
            ["din_mismatch", "unit_quarantined"],
            "both refusals are reported"
        );
    }

    #[test]
    fn refusals_say_what_was_scanned_and_why_the_unit_is_held() {
        let (unit, now) = at(UnitStatus::Quarantined, Some("hbsag reactive"), 4);
        let messages: Vec<String> = issue_gate("A999926000124", unit, now)
            .iter()
            .map(IssueRefusal::message)
            .collect();
        assert_eq!(
            messages,
            [
                "scanned A999926000124 but the allocation is for A999926000123",
                "unit A999926000123 is quarantined: hbsag reactive",
            ]
        );
        let (unit, now) = at(UnitStatus::Discarded, None, 4);
        assert_eq!(
            issue_gate("?", unit, now)
                .iter()
                .map(IssueRefusal::message)
                .collect::<Vec<_>>(),
            [
                "the scan is not a valid DIN: the DIN is not valid ISBT 128",
                "unit A999926000123 is discarded",
            ]
        );
    }

    #[test]
    fn the_scanned_group_must_be_the_units() {
        use Abo::*;
        use UnitRhd::*;
        let cases: &[(&str, Abo, UnitRhd, Option<&str>)] = &[
            ("=%5100", O, Positive, None),
            ("=%9500", O, Negative, None),
            ("=%6200", A, Positive, None),
            ("=%0600", A, Negative, None),
            ("=%7300", B, Positive, None),
            ("=%1700", B, Negative, None),
            ("=%8400", Ab, Positive, None),
            ("=%2800", Ab, Negative, None),
            // Another intended-use column or a phenotype is still the group.
            ("=%4700", O, Positive, None),
            ("=%62E0", A, Positive, None),
            (" =%9500 ", O, Negative, None),
            // Pools labelled RhD pooled.
            ("=%D000", O, Pooled, None),
            ("=%A000", A, Pooled, None),
            ("=%B000", B, Pooled, None),
            ("=%C000", Ab, Pooled, None),
            // Any other group refuses.
            ("=%9500", O, Positive, Some("label_group_mismatch")),
            ("=%5100", O, Negative, Some("label_group_mismatch")),
            ("=%6200", O, Positive, Some("label_group_mismatch")),
            ("=%6200", Ab, Positive, Some("label_group_mismatch")),
            ("=%5100", O, Pooled, Some("label_group_mismatch")),
            ("=%D000", O, Positive, Some("label_group_mismatch")),
            ("=%D000", A, Pooled, Some("label_group_mismatch")),
            ("=%5500", O, Positive, Some("label_group_mismatch")),
            ("=%E000", O, Positive, Some("label_group_mismatch")),
            ("=%0000", O, Positive, Some("label_group_mismatch")),
            ("=%Md00", O, Positive, Some("label_group_mismatch")),
            // Not a valid group scan.
            ("=%6201", A, Positive, Some("invalid_isbt128")),
            ("=%ZZ00", A, Positive, Some("invalid_isbt128")),
            ("", A, Positive, Some("invalid_isbt128")),
            ("=A99992600012300", A, Positive, Some("invalid_isbt128")),
            ("=%6200=%6200", A, Positive, Some("invalid_isbt128")),
            ("=+05000", A, Positive, Some("unsupported_data_structure")),
        ];
        for (scan, abo, rhd, expected) in cases {
            let got = group_gate(scan, *abo, *rhd);
            assert_eq!(
                got.as_ref().map(IssueRefusal::code),
                *expected,
                "{scan:?} for {abo} {rhd}"
            );
        }
        let refusal = group_gate("=%5500", O, Positive).expect("refused");
        assert_eq!(
            refusal.message(),
            "the bag's blood group (=%) reads O, RhD not specified but the unit is O RhD positive"
        );
        let pooled = group_gate("=%5100", O, Pooled).expect("refused");
        assert_eq!(
            pooled.message(),
            "the bag's blood group (=%) reads O RhD positive but the unit is O RhD pooled"
        );
        assert!(
            group_gate("=%6201", A, Positive)
                .expect("refused")
                .message()
                .starts_with("the blood group scan (=%) is not valid")
        );
    }
}
