//! The blood group of record (domain.md §3): the blood bank's own ABO/RhD typings of the
//! patient's samples. Two concordant typings of two samples drawn at different times confirm a
//! group; any disagreement makes it discordant. The group a hospital declares on the patient
//! record is compared against it and shown beside it, never used for selection.
//!
//! ABO and RhD are judged separately: a patient can have a confirmed ABO group and a discordant
//! RhD type. Compatibility treats anything but a confirmed ABO group as "group O units only" and
//! anything but a confirmed RhD type as RhD-negative.

use chrono::{DateTime, Utc};

use super::text_enum;
use crate::domain::blood::{Abo, Rhd};
use crate::domain::eligibility::Reason;

/// One dimension (ABO or RhD) of the group of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typed<T> {
    /// No typing recorded.
    Untyped,
    /// Every typing agrees, but not yet on two samples drawn at different times.
    Unconfirmed(T),
    /// Two samples drawn at different times typed the same, and no typing disagrees.
    Confirmed(T),
    /// Two typings disagree.
    Discordant,
}

impl<T: Copy> Typed<T> {
    /// The value when confirmed.
    pub fn confirmed(&self) -> Option<T> {
        match self {
            Self::Confirmed(v) => Some(*v),
            _ => None,
        }
    }

    /// The value every typing agrees on, confirmed or not.
    pub fn concordant(&self) -> Option<T> {
        match self {
            Self::Confirmed(v) | Self::Unconfirmed(v) => Some(*v),
            _ => None,
        }
    }

    pub fn status(&self) -> GroupStatus {
        match self {
            Self::Untyped => GroupStatus::Untyped,
            Self::Unconfirmed(_) => GroupStatus::Unconfirmed,
            Self::Confirmed(_) => GroupStatus::Confirmed,
            Self::Discordant => GroupStatus::Discordant,
        }
    }
}

text_enum!(
    /// Where the typings of a patient stand.
    GroupStatus {
        Untyped => "untyped",
        Unconfirmed => "unconfirmed",
        Confirmed => "confirmed",
        Discordant => "discordant",
    }
);

/// One ABO/RhD typing of one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typing {
    pub sample_id: i64,
    /// When the sample was drawn (two typings of one draw do not confirm each other).
    pub drawn_at: DateTime<Utc>,
    pub abo: Abo,
    pub rhd: Rhd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOfRecord {
    pub abo: Typed<Abo>,
    pub rhd: Typed<Rhd>,
}

impl GroupOfRecord {
    pub const UNTYPED: Self = Self {
        abo: Typed::Untyped,
        rhd: Typed::Untyped,
    };

    /// A confirmed group (tests and fixtures).
    pub fn confirmed_as(abo: Abo, rhd: Rhd) -> Self {
        Self {
            abo: Typed::Confirmed(abo),
            rhd: Typed::Confirmed(rhd),
        }
    }

    /// Both ABO and RhD confirmed.
    pub fn is_confirmed(&self) -> bool {
        self.abo.confirmed().is_some() && self.rhd.confirmed().is_some()
    }

    /// Discordant if either dimension is; confirmed if both are; untyped if neither is typed.
    pub fn status(&self) -> GroupStatus {
        use GroupStatus::*;
        match (self.abo.status(), self.rhd.status()) {
            (Discordant, _) | (_, Discordant) => Discordant,
            (Confirmed, Confirmed) => Confirmed,
            (Untyped, Untyped) => Untyped,
            _ => Unconfirmed,
        }
    }
}

fn dimension<T: Copy + PartialEq>(typings: &[Typing], value: fn(&Typing) -> T) -> Typed<T> {
    let Some(first) = typings.first() else {
        return Typed::Untyped;
    };
    let v = value(first);
    if typings.iter().any(|t| value(t) != v) {
        return Typed::Discordant;
    }
    let confirmed = typings.iter().enumerate().any(|(i, a)| {
        typings[i + 1..]
            .iter()
            .any(|b| a.sample_id != b.sample_id && a.drawn_at != b.drawn_at)
    });
    if confirmed {
        Typed::Confirmed(v)
    } else {
        Typed::Unconfirmed(v)
    }
}

/// The group of record from every typing recorded for the patient, in any order.
pub fn group_of_record(typings: &[Typing]) -> GroupOfRecord {
    GroupOfRecord {
        abo: dimension(typings, |t| t.abo),
        rhd: dimension(typings, |t| t.rhd),
    }
}

pub mod codes {
    pub const ABO_DISCORDANT: &str = "abo_discordant";
    pub const RHD_DISCORDANT: &str = "rhd_discordant";
    pub const DECLARED_ABO_DIFFERS: &str = "declared_abo_differs";
    pub const DECLARED_RHD_DIFFERS: &str = "declared_rhd_differs";
    pub const GROUP_UNCONFIRMED: &str = "group_unconfirmed";
    pub const ANTIBODIES_RECORDED: &str = "antibodies_recorded";
}

/// Why the patient's group needs a look (the `patient.group_discordant` alert): typings that
/// disagree, or a declared group that differs from what the blood bank typed. Empty when none.
pub fn discrepancies(declared_abo: Abo, declared_rhd: Rhd, group: &GroupOfRecord) -> Vec<Reason> {
    let mut out = Vec::new();
    if group.abo == Typed::Discordant {
        out.push(Reason {
            code: codes::ABO_DISCORDANT,
            message: "the blood bank's ABO typings of this patient disagree".to_owned(),
        });
    }
    if group.rhd == Typed::Discordant {
        out.push(Reason {
            code: codes::RHD_DISCORDANT,
            message: "the blood bank's RhD typings of this patient disagree".to_owned(),
        });
    }
    if let Some(typed) = group.abo.concordant()
        && typed != declared_abo
    {
        out.push(Reason {
            code: codes::DECLARED_ABO_DIFFERS,
            message: format!("the hospital declares group {declared_abo}; the blood bank typed {typed}"),
        });
    }
    if let Some(typed) = group.rhd.concordant()
        && typed != declared_rhd
    {
        out.push(Reason {
            code: codes::DECLARED_RHD_DIFFERS,
            message: format!("the hospital declares RhD {declared_rhd}; the blood bank typed RhD {typed}"),
        });
    }
    out
}

/// An electronic (computer) crossmatch stands in for a serological one only for a patient whose
/// group is confirmed and who has no antibodies recorded. Empty when it is allowed.
pub fn electronic_crossmatch_blockers(group: &GroupOfRecord, antibodies_recorded: bool) -> Vec<Reason> {
    let mut out = Vec::new();
    if !group.is_confirmed() {
        out.push(Reason {
            code: codes::GROUP_UNCONFIRMED,
            message: format!(
                "the patient's group of record is {}; an electronic crossmatch needs it confirmed by two concordant typings",
                group.status()
            ),
        });
    }
    if antibodies_recorded {
        out.push(Reason {
            code: codes::ANTIBODIES_RECORDED,
            message: "the patient has antibodies recorded; crossmatch serologically".to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).single().expect("time")
    }

    fn typing(sample_id: i64, hours: i64, abo: Abo, rhd: Rhd) -> Typing {
        Typing {
            sample_id,
            drawn_at: t0() + TimeDelta::hours(hours),
            abo,
            rhd,
        }
    }

    #[test]
    fn none_one_two_concordant_and_two_discordant() {
        use Abo::*;
        use Rhd::*;
        type Case = (Vec<Typing>, Typed<Abo>, Typed<Rhd>, GroupStatus);
        let cases: Vec<Case> = vec![
            (vec![], Typed::Untyped, Typed::Untyped, GroupStatus::Untyped),
            (
                vec![typing(1, 0, A, Positive)],
                Typed::Unconfirmed(A),
                Typed::Unconfirmed(Positive),
                GroupStatus::Unconfirmed,
            ),
            // The same sample typed twice confirms nothing.
            (
                vec![typing(1, 0, A, Positive), typing(1, 0, A, Positive)],
                Typed::Unconfirmed(A),
                Typed::Unconfirmed(Positive),
                GroupStatus::Unconfirmed,
            ),
            // Two samples of one draw confirm nothing either.
            (
                vec![typing(1, 0, A, Positive), typing(2, 0, A, Positive)],
                Typed::Unconfirmed(A),
                Typed::Unconfirmed(Positive),
                GroupStatus::Unconfirmed,
            ),
            (
                vec![typing(1, 0, A, Positive), typing(2, 1, A, Positive)],
                Typed::Confirmed(A),
                Typed::Confirmed(Positive),
                GroupStatus::Confirmed,
            ),
            (
                vec![typing(1, 0, A, Positive), typing(2, 1, O, Positive)],
                Typed::Discordant,
                Typed::Confirmed(Positive),
                GroupStatus::Discordant,
            ),
            (
                vec![typing(1, 0, B, Negative), typing(2, 5, B, Positive)],
                Typed::Confirmed(B),
                Typed::Discordant,
                GroupStatus::Discordant,
            ),
            // A retest of one sample that disagrees is discordant too.
            (
                vec![typing(1, 0, Ab, Negative), typing(1, 0, A, Negative)],
                Typed::Discordant,
                Typed::Unconfirmed(Negative),
                GroupStatus::Discordant,
            ),
            // A first typing sharing its draw with both others does not hide the confirmation.
            (
                vec![
                    typing(1, 0, O, Negative),
                    typing(2, 0, O, Negative),
                    typing(3, 2, O, Negative),
                ],
                Typed::Confirmed(O),
                Typed::Confirmed(Negative),
                GroupStatus::Confirmed,
            ),
        ];
        for (typings, abo, rhd, status) in cases {
            let g = group_of_record(&typings);
            assert_eq!((g.abo, g.rhd, g.status()), (abo, rhd, status), "{typings:?}");
            assert_eq!(g.is_confirmed(), status == GroupStatus::Confirmed);
        }
    }

    #[test]
    fn declared_groups_are_compared_with_what_was_typed() {
        let codes = |abo, rhd, typings: &[Typing]| {
            discrepancies(abo, rhd, &group_of_record(typings))
                .into_iter()
                .map(|r| r.code)
                .collect::<Vec<_>>()
        };
        assert!(codes(Abo::A, Rhd::Positive, &[]).is_empty(), "nothing typed yet");
        assert!(codes(Abo::A, Rhd::Positive, &[typing(1, 0, Abo::A, Rhd::Positive)]).is_empty());
        assert_eq!(
            codes(Abo::A, Rhd::Positive, &[typing(1, 0, Abo::O, Rhd::Negative)]),
            vec![codes::DECLARED_ABO_DIFFERS, codes::DECLARED_RHD_DIFFERS]
        );
        assert_eq!(
            codes(
                Abo::A,
                Rhd::Positive,
                &[typing(1, 0, Abo::A, Rhd::Positive), typing(2, 3, Abo::B, Rhd::Positive)]
            ),
            vec![codes::ABO_DISCORDANT]
        );
    }

    #[test]
    fn electronic_crossmatch_needs_a_confirmed_group_and_no_antibodies() {
        let confirmed = GroupOfRecord::confirmed_as(Abo::O, Rhd::Positive);
        let one = group_of_record(&[typing(1, 0, Abo::O, Rhd::Positive)]);
        let codes = |g: &GroupOfRecord, antibodies| {
            electronic_crossmatch_blockers(g, antibodies)
                .into_iter()
                .map(|r| r.code)
                .collect::<Vec<_>>()
        };
        assert!(codes(&confirmed, false).is_empty());
        assert_eq!(codes(&confirmed, true), vec![codes::ANTIBODIES_RECORDED]);
        assert_eq!(codes(&one, false), vec![codes::GROUP_UNCONFIRMED]);
        assert_eq!(
            codes(&GroupOfRecord::UNTYPED, true),
            vec![codes::GROUP_UNCONFIRMED, codes::ANTIBODIES_RECORDED]
        );
    }

    proptest! {
        #[test]
        fn confirmation_needs_agreement_and_two_draws(
            list in prop::collection::vec(
                (1i64..4, 0i64..3, prop::sample::select(Abo::ALL), prop::sample::select(Rhd::ALL)),
                0..5,
            ),
        ) {
            let typings: Vec<Typing> = list.iter().map(|&(s, h, a, r)| typing(s, h, a, r)).collect();
            let g = group_of_record(&typings);
            let agree_abo = typings.windows(2).all(|w| w[0].abo == w[1].abo);
            let draws = typings.iter().any(|a| typings.iter().any(|b| a.sample_id != b.sample_id && a.drawn_at != b.drawn_at));
            let expected = match typings.first() {
                None => Typed::Untyped,
                Some(_) if !agree_abo => Typed::Discordant,
                Some(t) if draws => Typed::Confirmed(t.abo),
                Some(t) => Typed::Unconfirmed(t.abo),
            };
            prop_assert_eq!(g.abo, expected);
            // Order never matters.
            let mut reversed = typings.clone();
            reversed.reverse();
            prop_assert_eq!(group_of_record(&reversed), g);
        }
    }
}
