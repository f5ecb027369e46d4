//! The gate at the moment of issue (matching.md): the bag scanned at the bench must be the unit
//! allocated, and the unit must still be held for the allocation. The compatibility assessment
//! at issue runs beside it; every refusal is reported, not only the first.

use chrono::{DateTime, Utc};

use crate::domain::isbt128::{Din, IsbtError};
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
            Self::UnreadableScan(e) => e.code(),
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
}
