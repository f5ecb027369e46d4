//! Matching for a request: donors to recruit for the next collections, assessed with the same
//! rules as units (domain.md §3–§4) plus the donor's eligibility at the collection time.

use chrono::{DateTime, Utc};

use crate::domain::blood::{Cmv, Hla};
use crate::domain::compatibility::{
    self, Assessment, Context, Finding, PatientFacts, Severity, Stage, UnitFacts, Verdict,
};
use crate::domain::eligibility::Eligibility;
use crate::domain::policy::Policy;
use crate::domain::units::expires_at;

pub use crate::domain::compatibility::Requirements;

pub mod codes {
    pub use crate::domain::compatibility::codes::{CMV_NEGATIVE_REQUIRED, HLA_TYPING_REQUIRED};
}

/// What matching needs to know about a donor.
#[derive(Debug, Clone, PartialEq)]
pub struct DonorMatchFacts {
    pub abo: crate::domain::blood::Abo,
    pub rhd: crate::domain::blood::Rhd,
    pub cmv: Cmv,
    /// `None`: not HLA-typed.
    pub hla: Option<Hla>,
    pub last_stimulated_at: Option<DateTime<Utc>>,
}

/// The donor's future unit judged like a unit (ABO, RhD, CMV, HLA, the request's requirements)
/// at `collection_at`, with every eligibility failure as a block. Expiry, crossmatch and dose
/// are questions for the unit once collected, not for the donor.
pub fn assess_donor(
    patient: &PatientFacts,
    requirements: Requirements,
    donor: &DonorMatchFacts,
    eligibility: &Eligibility,
    collection_at: DateTime<Utc>,
    policy: &Policy,
) -> Assessment {
    with_eligibility(
        eligibility,
        assess_future_unit(patient, requirements, donor, collection_at, policy),
    )
}

/// The donor's future unit judged like a unit at `collection_at`: the part of
/// [`assess_donor`] that reads only the donor's ABO, RhD, CMV and HLA (not the history), so
/// donors alike in those judge alike.
pub fn assess_future_unit(
    patient: &PatientFacts,
    requirements: Requirements,
    donor: &DonorMatchFacts,
    collection_at: DateTime<Utc>,
    policy: &Policy,
) -> Assessment {
    let future_unit = UnitFacts {
        abo: donor.abo,
        rhd: donor.rhd,
        cmv: donor.cmv,
        donor_hla: donor.hla.clone(),
        irradiated: true,
        released: true,
        reactive: false,
        excursion_pending: false,
        reserved_for: None,
        expires_at: expires_at(collection_at, false, chrono_tz::UTC, policy),
        granulocyte_count: f64::NAN,
    };
    let ctx = Context {
        crossmatches: &[],
        request_id: None,
        day_granulocytes: 0.0,
        requirements,
        planned_at: collection_at,
        now: collection_at,
        stage: Stage::Allocation,
    };
    compatibility::assess(patient, &future_unit, &ctx, policy)
}

/// [`assess_donor`] from its future unit's assessment: every eligibility failure is a block,
/// ahead of the unit's findings.
pub fn with_eligibility(eligibility: &Eligibility, unit: Assessment) -> Assessment {
    let mut reasons: Vec<Finding> = eligibility
        .reasons
        .iter()
        .map(|r| Finding {
            code: r.code,
            severity: Severity::Block,
            message: r.message.clone(),
        })
        .collect();
    reasons.extend(unit.reasons);
    Assessment {
        verdict: compatibility::verdict_of(&reasons),
        reasons,
        anti_d_prophylaxis: unit.anti_d_prophylaxis,
        dose_per_kg: None,
        day_dose_per_kg: None,
    }
}

/// A block among the future unit's findings makes the donor incompatible (score 0) whatever
/// the eligibility says.
pub fn blocks(unit: &Assessment) -> bool {
    unit.reasons.iter().any(|f| f.severity == Severity::Block)
}

// Ranking weights (ordering only, not clinical thresholds): verdict tier, then ABO-identical,
// then the longest time since the donor was last stimulated (never stimulated ranks highest).
const TIER_COMPATIBLE: f64 = 10_000.0;
const TIER_WARNINGS: f64 = 5_000.0;
const ABO_IDENTICAL: f64 = 200.0;
/// `EXPOSURE · d / (1 + d)` for `d` days since the last stimulation; `EXPOSURE` when never.
const EXPOSURE: f64 = 100.0;

/// Higher is better; ineligible or incompatible donors score 0.
pub fn donor_score(patient: &PatientFacts, donor: &DonorMatchFacts, a: &Assessment, now: DateTime<Utc>) -> f64 {
    let tier = match a.verdict {
        Verdict::Incompatible => return 0.0,
        Verdict::CompatibleWithWarnings => TIER_WARNINGS,
        Verdict::Compatible => TIER_COMPATIBLE,
    };
    let abo = if patient.abo.confirmed() == Some(donor.abo) {
        ABO_IDENTICAL
    } else {
        0.0
    };
    let rest = match donor.last_stimulated_at {
        None => EXPOSURE,
        Some(t) => {
            let days = now.signed_duration_since(t).num_hours().max(0) as f64 / 24.0;
            EXPOSURE * days / (1.0 + days)
        }
    };
    tier + abo + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::blood::{Abo, Rhd, Sex};
    use crate::domain::eligibility::Reason;
    use crate::domain::group::Typed;
    use chrono::{TimeDelta, TimeZone};
    use proptest::prelude::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).single().expect("time")
    }

    fn patient(abo: Abo, rhd: Rhd) -> PatientFacts {
        PatientFacts {
            abo: Typed::Confirmed(abo),
            rhd: Typed::Confirmed(rhd),
            sex: Sex::Male,
            childbearing_potential: false,
            cmv: Cmv::Negative,
            weight_kg: 70.0,
            hla_antibodies: vec![],
            granulocyte_antibodies: false,
        }
    }

    fn donor(abo: Abo, rhd: Rhd, cmv: Cmv) -> DonorMatchFacts {
        DonorMatchFacts {
            abo,
            rhd,
            cmv,
            hla: None,
            last_stimulated_at: None,
        }
    }

    fn eligible() -> Eligibility {
        Eligibility {
            eligible: true,
            reasons: vec![],
        }
    }

    #[test]
    fn donors_are_judged_like_their_future_unit() {
        let p = Policy::default();
        let pt = patient(Abo::A, Rhd::Negative);
        let codes = |d: &DonorMatchFacts, r: Requirements| assess_donor(&pt, r, d, &eligible(), at(), &p).codes();
        assert_eq!(
            codes(&donor(Abo::O, Rhd::Negative, Cmv::Negative), Requirements::default()),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes(&donor(Abo::B, Rhd::Negative, Cmv::Negative), Requirements::default()),
            vec!["abo_incompatible"]
        );
        assert_eq!(
            codes(&donor(Abo::A, Rhd::Positive, Cmv::Negative), Requirements::default()),
            vec!["rhd_mismatch"]
        );
        assert_eq!(
            codes(&donor(Abo::A, Rhd::Negative, Cmv::Unknown), Requirements::default()),
            vec!["cmv_mismatch"]
        );
        let strict = Requirements {
            cmv_negative: true,
            hla_compatible: true,
        };
        assert_eq!(
            codes(&donor(Abo::A, Rhd::Negative, Cmv::Positive), strict),
            vec!["cmv_mismatch", "cmv_negative_required", "hla_typing_required"]
        );
        let ineligible = Eligibility {
            eligible: false,
            reasons: vec![Reason {
                code: "leukapheresis_interval",
                message: "too soon".into(),
            }],
        };
        let a = assess_donor(
            &pt,
            Requirements::default(),
            &donor(Abo::O, Rhd::Negative, Cmv::Negative),
            &ineligible,
            at(),
            &p,
        );
        assert_eq!(a.verdict, Verdict::Incompatible);
        assert_eq!(a.codes(), vec!["leukapheresis_interval"]);
    }

    #[test]
    fn ranking_prefers_compatible_identical_and_rested_donors() {
        let p = Policy::default();
        let pt = patient(Abo::A, Rhd::Positive);
        let now = at();
        let score = |d: &DonorMatchFacts| {
            let a = assess_donor(&pt, Requirements::default(), d, &eligible(), now, &p);
            donor_score(&pt, d, &a, now)
        };
        let identical = donor(Abo::A, Rhd::Positive, Cmv::Negative);
        let group_o = donor(Abo::O, Rhd::Positive, Cmv::Negative);
        let warned = donor(Abo::A, Rhd::Positive, Cmv::Unknown);
        let wrong = donor(Abo::B, Rhd::Positive, Cmv::Negative);
        assert!(score(&identical) > score(&group_o));
        assert!(score(&group_o) > score(&warned));
        assert_eq!(score(&wrong), 0.0);
        let recent = DonorMatchFacts {
            last_stimulated_at: Some(now - TimeDelta::days(3)),
            ..identical.clone()
        };
        let long_ago = DonorMatchFacts {
            last_stimulated_at: Some(now - TimeDelta::days(300)),
            ..identical.clone()
        };
        assert!(score(&identical) > score(&long_ago));
        assert!(score(&long_ago) > score(&recent));
        assert!(score(&recent) > score(&group_o));
    }

    fn arb_groups() -> impl Strategy<Value = (Abo, Rhd, Cmv)> {
        (
            prop::sample::select(Abo::ALL),
            prop::sample::select(Rhd::ALL),
            prop::sample::select(Cmv::ALL),
        )
    }

    proptest! {
        #[test]
        fn a_donor_is_judged_by_eligibility_requirements_and_future_unit_only(
            (p_abo, p_rhd, p_cmv) in arb_groups(),
            (d_abo, d_rhd, d_cmv) in arb_groups(),
            hla in prop::option::of(prop::sample::select(vec![vec![], vec!["A*02:01".to_owned()]])),
            failing in prop::sample::subsequence(vec!["deferred", "too_old", "leukapheresis_interval"], 0..=3),
            (cmv_negative, hla_compatible) in (any::<bool>(), any::<bool>()),
            stimulated_days_ago in prop::option::of(0i64..400),
        ) {
            let policy = Policy::default();
            let pt = PatientFacts { cmv: p_cmv, ..patient(p_abo, p_rhd) };
            let d = DonorMatchFacts {
                hla: hla.map(|a| Hla { a, ..Hla::default() }),
                last_stimulated_at: stimulated_days_ago.map(|n| at() - TimeDelta::days(n)),
                ..donor(d_abo, d_rhd, d_cmv)
            };
            let e = Eligibility {
                eligible: failing.is_empty(),
                reasons: failing.iter().map(|c| Reason { code: c, message: "x".into() }).collect(),
            };
            let requirements = Requirements { cmv_negative, hla_compatible };
            let a = assess_donor(&pt, requirements, &d, &e, at(), &policy);
            let codes = a.codes();
            prop_assert_eq!(&codes[..failing.len()], &failing[..]);
            prop_assert!(a.reasons[..failing.len()].iter().all(|r| r.severity == Severity::Block));
            prop_assert_eq!(codes.contains(&codes::CMV_NEGATIVE_REQUIRED), cmv_negative && d_cmv != Cmv::Negative);
            let typed = d.hla.as_ref().is_some_and(|h| !h.is_empty());
            prop_assert_eq!(codes.contains(&codes::HLA_TYPING_REQUIRED), hla_compatible && !typed);
            // Questions for the collected unit, not the donor.
            for unit_only in ["crossmatch_missing", "sample_expired", "unit_expired", "expires_before_needed",
                              "insufficient_shelf_life", "not_irradiated", "not_released", "dose_below_target"] {
                prop_assert!(!codes.contains(&unit_only), "{}", unit_only);
            }
            prop_assert_eq!(a.verdict, compatibility::verdict_of(&a.reasons));
            prop_assert!(e.eligible || a.verdict == Verdict::Incompatible);
            let score = donor_score(&pt, &d, &a, at());
            prop_assert!(score.is_finite() && score >= 0.0);
            prop_assert_eq!(score == 0.0, a.verdict == Verdict::Incompatible);
        }
    }
}
