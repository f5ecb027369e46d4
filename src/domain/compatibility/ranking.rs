//! Ranking of the units offered for a patient.

use chrono::{DateTime, Utc};

use super::{Assessment, PatientFacts, UnitFacts, Verdict, alloimmunised, check_hla, dose_per_kg};
use crate::domain::policy::Policy;

/// A unit offered for a patient with its assessment, for ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitCandidate<'a> {
    pub unit_id: i64,
    pub facts: &'a UnitFacts,
    pub assessment: Assessment,
}

// Ranking weights. Each preference outweighs all the ones below it together, so the score
// orders units lexicographically: verdict tier, then a donor typed at every antibody locus for
// an alloimmunised patient, then adequate dose, then ABO-identical, then sooner expiry. These
// are ordering weights, not clinical thresholds.
/// Base of a unit with no findings.
const TIER_COMPATIBLE: f64 = 10_000.0;
/// Base of a unit with only warnings; incompatible units score 0 whatever else.
const TIER_WARNINGS: f64 = 5_000.0;
/// Alloimmunised patient and a donor typed at every locus of the antibodies.
const HLA_TYPED: f64 = 800.0;
/// Dose at or above `recipient.dose_target_per_kg` (unknown when the weight is unusable).
const DOSE_ADEQUATE: f64 = 400.0;
/// Same ABO group as the patient's confirmed group.
const ABO_IDENTICAL: f64 = 200.0;
/// `EXPIRY / (1 + hours left)`: strictly larger the sooner the unit expires, below `EXPIRY`.
const EXPIRY: f64 = 100.0;

/// Higher is better; see the weights above. Incompatible units score 0; the preferences sum to
/// less than the gap between tiers, so a unit with warnings never outranks a compatible one.
pub fn unit_score(
    patient: &PatientFacts,
    unit: &UnitFacts,
    a: &Assessment,
    now: DateTime<Utc>,
    policy: &Policy,
) -> f64 {
    let tier = match a.verdict {
        Verdict::Incompatible => return 0.0,
        Verdict::CompatibleWithWarnings => TIER_WARNINGS,
        Verdict::Compatible => TIER_COMPATIBLE,
    };
    let mut score = tier;
    let donor = unit.donor_hla.as_ref().filter(|h| !h.is_empty());
    if alloimmunised(patient) && donor.is_some() && check_hla(&patient.hla_antibodies, donor).fully_checked() {
        score += HLA_TYPED;
    }
    if dose_per_kg(unit.granulocyte_count, patient.weight_kg).is_some_and(|d| d >= policy.recipient.dose_target_per_kg)
    {
        score += DOSE_ADEQUATE;
    }
    if patient.abo.confirmed() == Some(unit.abo) {
        score += ABO_IDENTICAL;
    }
    let hours_left = unit.expires_at.signed_duration_since(now).num_seconds().max(0) as f64 / 3600.0;
    score + EXPIRY / (1.0 + hours_left)
}

/// Sorts best first by [`unit_score`]; equal scores keep ascending `unit_id`.
pub fn rank_units(patient: &PatientFacts, candidates: &mut [UnitCandidate<'_>], now: DateTime<Utc>, policy: &Policy) {
    let score = |c: &UnitCandidate<'_>| unit_score(patient, c.facts, &c.assessment, now, policy);
    candidates.sort_by(|x, y| score(y).total_cmp(&score(x)).then(x.unit_id.cmp(&y.unit_id)));
}
