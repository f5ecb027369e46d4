//! Unit → patient compatibility of a granulocyte transfusion (domain.md §3), and a ranking score
//! for choosing among units. Pure functions over plain facts: every rule that fails is reported
//! with a stable code and a severity; thresholds and switches come from [`Policy`].
//!
//! Conventions and interpretations:
//! * `planned_at` is the request's `needed_by` at allocation and the planned transfusion time at
//!   issue. A crossmatch sample must be valid at the transfusion, which cannot happen before
//!   `now`: the sample is checked at `max(planned_at, now)`, valid up to and including
//!   `sample_valid_until`.
//! * A unit is expired from `expires_at` on (`now >= expires_at`). At allocation it must expire
//!   strictly after `planned_at` and have at least `unit.min_remaining_hours_to_allocate` hours
//!   left. An expired unit reports every expiry rule it fails (they are all true).
//! * `anti_d_prophylaxis` says that giving this unit to this patient needs an anti-D prophylaxis
//!   task: an RhD-positive unit for an RhD-negative `Sex::Female` patient with childbearing
//!   potential. It is set whatever the RhD severity, since a blocked unit may still be given on a
//!   documented override.
//! * HLA: antibodies and donor alleles match at antigen level, locus + first field: `A2`,
//!   `A*02`, `A*02:01` and `anti-HLA-A2` all mean A*02; `Cw7` is C*07, `DR15` is DRB1*15. A
//!   serological name is mapped by its number only, so splits, broads and antigens whose number
//!   differs from the allele group (for example `A203`, `A9`, `B62`, `Cw10`) do not match their
//!   alleles; the lab should report antibodies as allele groups (`B*15`) for those. Antibody
//!   strings that do not parse (`Bw4`, `DQ2`, `DP1`, free text) are ignored in matching but still
//!   make the patient alloimmunised. Donor alleles that do not parse are ignored; null alleles
//!   (`N` suffix) are treated as expressed (conservative). A donor typing with no allele at all
//!   counts as not typed.
//! * Dose = granulocyte_count / weight_kg, checked only when both are finite and the weight is
//!   positive; a dose exactly at `recipient.dose_target_per_kg` meets the target.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::text_enum;
use crate::domain::blood::{Abo, Cmv, Hla, Rhd, Sex};
use crate::domain::policy::{CmvMismatch, Policy, RhdMismatch};

/// Stable finding codes.
pub mod codes {
    pub const ABO_INCOMPATIBLE: &str = "abo_incompatible";
    pub const MINOR_ABO_INCOMPATIBLE: &str = "minor_abo_incompatible";
    pub const RHD_MISMATCH: &str = "rhd_mismatch";
    pub const CMV_MISMATCH: &str = "cmv_mismatch";
    pub const HLA_ANTIBODY_MATCH: &str = "hla_antibody_match";
    pub const HLA_UNTYPED_DONOR: &str = "hla_untyped_donor";
    pub const CROSSMATCH_INCOMPATIBLE: &str = "crossmatch_incompatible";
    pub const CROSSMATCH_MISSING: &str = "crossmatch_missing";
    pub const SAMPLE_EXPIRED: &str = "sample_expired";
    pub const UNIT_EXPIRED: &str = "unit_expired";
    pub const EXPIRES_BEFORE_NEEDED: &str = "expires_before_needed";
    pub const INSUFFICIENT_SHELF_LIFE: &str = "insufficient_shelf_life";
    pub const NOT_IRRADIATED: &str = "not_irradiated";
    pub const NOT_RELEASED: &str = "not_released";
    pub const DOSE_BELOW_TARGET: &str = "dose_below_target";
}

text_enum!(
    /// `Block` forbids the unit; `Warn` allows it with the warning shown.
    Severity { Block => "block", Warn => "warn" }
);
text_enum!(
    Verdict {
        Compatible => "compatible",
        CompatibleWithWarnings => "compatible_with_warnings",
        Incompatible => "incompatible",
    }
);
text_enum!(
    /// Which checks apply: allocation (reserving a unit for a request) or issue (handing it out
    /// for transfusion).
    Stage { Allocation => "allocation", Issue => "issue" }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assessment {
    pub verdict: Verdict,
    pub reasons: Vec<Finding>,
    /// An RhD-positive unit for an RhD-negative female of childbearing potential: giving it
    /// needs an anti-D prophylaxis task.
    pub anti_d_prophylaxis: bool,
}

impl Assessment {
    pub fn codes(&self) -> Vec<&'static str> {
        self.reasons.iter().map(|r| r.code).collect()
    }

    pub fn has(&self, code: &str) -> bool {
        self.reasons.iter().any(|r| r.code == code)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientFacts {
    pub abo: Abo,
    pub rhd: Rhd,
    pub sex: Sex,
    pub childbearing_potential: bool,
    pub cmv: Cmv,
    pub weight_kg: f64,
    /// Specificities such as `A2`, `B7`, `A*02`, `DRB1*15`.
    pub hla_antibodies: Vec<String>,
    pub granulocyte_antibodies: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossmatchFacts {
    pub compatible: bool,
    pub sample_valid_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitFacts {
    pub abo: Abo,
    pub rhd: Rhd,
    pub cmv: Cmv,
    /// `None`: the donor is not HLA-typed.
    pub donor_hla: Option<Hla>,
    pub irradiated: bool,
    pub released: bool,
    pub expires_at: DateTime<Utc>,
    pub granulocyte_count: f64,
}

fn has_a(abo: Abo) -> bool {
    matches!(abo, Abo::A | Abo::Ab)
}

fn has_b(abo: Abo) -> bool {
    matches!(abo, Abo::B | Abo::Ab)
}

/// Major side: the unit's red cells against the patient's plasma. The unit may carry only ABO
/// antigens the patient has (O → O; A → A, O; B → B, O; AB → all).
pub fn red_cells_compatible(patient: Abo, unit: Abo) -> bool {
    (!has_a(unit) || has_a(patient)) && (!has_b(unit) || has_b(patient))
}

/// Minor side: the unit's plasma against the patient's red cells. The donor's plasma has
/// antibodies to the antigens the donor lacks, so the patient may carry only antigens the donor
/// has (AB plasma to all; A plasma to A, O; B plasma to B, O; O plasma to O only).
pub fn plasma_compatible(patient: Abo, unit: Abo) -> bool {
    red_cells_compatible(unit, patient)
}

/// `Incompatible` with any block, `CompatibleWithWarnings` with only warnings.
pub fn verdict_of(findings: &[Finding]) -> Verdict {
    if findings.iter().any(|f| f.severity == Severity::Block) {
        Verdict::Incompatible
    } else if findings.is_empty() {
        Verdict::Compatible
    } else {
        Verdict::CompatibleWithWarnings
    }
}

/// HLA loci typed for donors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HlaLocus {
    A,
    B,
    C,
    Drb1,
}

impl HlaLocus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
            Self::C => "C",
            Self::Drb1 => "DRB1",
        }
    }
}

/// An antigen-level HLA specificity: locus and allele group (first field), shown as `A*02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HlaAntigen {
    pub locus: HlaLocus,
    pub group: u16,
}

impl std::fmt::Display for HlaAntigen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}*{:02}", self.locus.as_str(), self.group)
    }
}

fn digits(text: &str, lengths: std::ops::RangeInclusive<usize>) -> Option<u16> {
    if lengths.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

/// `*NN[:NN[:NN[:NN]]][suffix]` (WHO nomenclature, 2–3 digits a field) → the first field.
fn molecular_group(rest: &str) -> Option<u16> {
    let rest = rest.strip_prefix('*')?;
    let rest = rest.strip_suffix(['N', 'L', 'S', 'C', 'A', 'Q']).unwrap_or(rest);
    let fields: Vec<&str> = rest.split(':').collect();
    if !(1..=4).contains(&fields.len()) || fields.iter().any(|f| digits(f, 2..=3).is_none()) {
        return None;
    }
    digits(fields.first()?, 2..=3)
}

/// A serological number (`2` of `A2`), never 0.
fn serological_group(rest: &str) -> Option<u16> {
    digits(rest, 1..=3).filter(|&n| n > 0)
}

/// The antigen an antibody specificity targets, or `None` when it is not a specificity at a
/// typed locus (see the module notes). Accepts optional `anti-` and `HLA-` prefixes, any case.
pub fn antibody_antigen(specificity: &str) -> Option<HlaAntigen> {
    let upper = specificity.trim().to_ascii_uppercase();
    let text = upper.strip_prefix("ANTI-").unwrap_or(&upper);
    let text = text.strip_prefix("HLA-").unwrap_or(text);
    let antigen = |locus, group: Option<u16>| group.map(|group| HlaAntigen { locus, group });
    if let Some(rest) = text.strip_prefix("DRB1") {
        return antigen(HlaLocus::Drb1, molecular_group(rest));
    }
    if let Some(rest) = text.strip_prefix("DR") {
        return antigen(HlaLocus::Drb1, serological_group(rest));
    }
    if let Some(rest) = text.strip_prefix("CW") {
        return antigen(HlaLocus::C, serological_group(rest));
    }
    for locus in [HlaLocus::A, HlaLocus::B, HlaLocus::C] {
        if let Some(rest) = text.strip_prefix(locus.as_str()) {
            let group = if rest.starts_with('*') {
                molecular_group(rest)
            } else {
                serological_group(rest)
            };
            return antigen(locus, group);
        }
    }
    None
}

/// The antigen of one donor allele typed at `locus` (`A*02:01` → A*02), or `None` when the
/// allele is not a valid allele of that locus.
pub fn allele_antigen(locus: HlaLocus, allele: &str) -> Option<HlaAntigen> {
    let upper = allele.trim().to_ascii_uppercase();
    let group = molecular_group(upper.strip_prefix(locus.as_str())?)?;
    Some(HlaAntigen { locus, group })
}

/// One antibody that targets one donor allele.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlaMatch {
    pub antibody: String,
    pub antigen: HlaAntigen,
    pub donor_allele: String,
}

/// Every (antibody, donor allele) pair at the same antigen, in antibody then typing order.
pub fn hla_antibody_matches(antibodies: &[String], donor: &Hla) -> Vec<HlaMatch> {
    let typed: Vec<(HlaAntigen, &String)> = [
        (HlaLocus::A, &donor.a),
        (HlaLocus::B, &donor.b),
        (HlaLocus::C, &donor.c),
        (HlaLocus::Drb1, &donor.drb1),
    ]
    .into_iter()
    .flat_map(|(locus, alleles)| {
        alleles
            .iter()
            .filter_map(move |allele| allele_antigen(locus, allele).map(|antigen| (antigen, allele)))
    })
    .collect();
    let mut matches = Vec::new();
    for antibody in antibodies {
        let Some(target) = antibody_antigen(antibody) else {
            continue;
        };
        for (antigen, allele) in &typed {
            if *antigen == target {
                matches.push(HlaMatch {
                    antibody: antibody.trim().to_owned(),
                    antigen: target,
                    donor_allele: allele.trim().to_owned(),
                });
            }
        }
    }
    matches
}

/// Any HLA antibody (parseable or not) or granulocyte antibodies.
pub fn alloimmunised(patient: &PatientFacts) -> bool {
    patient.granulocyte_antibodies || patient.hla_antibodies.iter().any(|s| !s.trim().is_empty())
}

/// The donor typing, unless absent or empty.
fn donor_typing(unit: &UnitFacts) -> Option<&Hla> {
    unit.donor_hla.as_ref().filter(|h| !h.is_empty())
}

/// Cells per kg, when both the count and a positive weight are finite numbers.
pub fn dose_per_kg(granulocyte_count: f64, weight_kg: f64) -> Option<f64> {
    (granulocyte_count.is_finite() && weight_kg.is_finite() && weight_kg > 0.0).then(|| granulocyte_count / weight_kg)
}

fn hours(n: u32) -> TimeDelta {
    TimeDelta::try_hours(i64::from(n)).unwrap_or(TimeDelta::MAX)
}

/// "1 h 59 min"; negative spans read "-0 h 5 min".
fn fmt_span(d: TimeDelta) -> String {
    let minutes = d.num_minutes();
    let sign = if minutes < 0 { "-" } else { "" };
    let minutes = minutes.unsigned_abs();
    format!("{sign}{} h {} min", minutes / 60, minutes % 60)
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Until when a crossmatch on a sample drawn at `drawn_at` is valid: `compat.sample_valid_hours`
/// after drawing. The policy has one validity; it applies whether or not the patient was
/// transfused or pregnant in the last 3 months (the safe reading of domain.md §3).
pub fn sample_valid_until(drawn_at: DateTime<Utc>, policy: &Policy) -> DateTime<Utc> {
    drawn_at + hours(policy.compat.sample_valid_hours)
}

/// Evaluates every rule that applies at `stage` (see the module notes for the conventions).
pub fn assess(
    patient: &PatientFacts,
    unit: &UnitFacts,
    crossmatch: Option<&CrossmatchFacts>,
    planned_at: DateTime<Utc>,
    now: DateTime<Utc>,
    stage: Stage,
    policy: &Policy,
) -> Assessment {
    use Severity::{Block, Warn};
    let mut reasons = Vec::new();
    let mut find = |code: &'static str, severity: Severity, message: String| {
        reasons.push(Finding {
            code,
            severity,
            message,
        })
    };

    if !red_cells_compatible(patient.abo, unit.abo) {
        find(
            codes::ABO_INCOMPATIBLE,
            Block,
            format!(
                "group {} unit red cells are incompatible with group {} patient plasma",
                unit.abo, patient.abo
            ),
        );
    }
    if policy.compat.minor_abo_check && !plasma_compatible(patient.abo, unit.abo) {
        find(
            codes::MINOR_ABO_INCOMPATIBLE,
            Warn,
            format!(
                "group {} unit plasma is incompatible with group {} patient red cells (minor ABO)",
                unit.abo, patient.abo
            ),
        );
    }

    let rhd_mismatch = patient.rhd == Rhd::Negative && unit.rhd == Rhd::Positive;
    let anti_d_prophylaxis = rhd_mismatch && patient.sex == Sex::Female && patient.childbearing_potential;
    if rhd_mismatch {
        let severity = match policy.compat.rhd_mismatch {
            RhdMismatch::Warn => Warn,
            RhdMismatch::Block => Block,
        };
        let mut message = "RhD-positive unit for an RhD-negative patient".to_owned();
        if anti_d_prophylaxis {
            message.push_str(
                "; the patient is a female of childbearing potential: giving this unit creates an anti-D prophylaxis task",
            );
        }
        find(codes::RHD_MISMATCH, severity, message);
    }

    if patient.cmv == Cmv::Negative && unit.cmv != Cmv::Negative {
        let severity = match policy.compat.cmv_mismatch {
            CmvMismatch::Warn => Some(Warn),
            CmvMismatch::Block => Some(Block),
            CmvMismatch::Off => None,
        };
        if let Some(severity) = severity {
            find(
                codes::CMV_MISMATCH,
                severity,
                format!("CMV-seronegative patient; unit CMV serostatus is {}", unit.cmv),
            );
        }
    }

    match donor_typing(unit) {
        Some(hla) => {
            let matches = hla_antibody_matches(&patient.hla_antibodies, hla);
            if !matches.is_empty() {
                let list: Vec<String> = matches
                    .iter()
                    .map(|m| format!("anti-{} → {} ({})", m.antibody, m.antigen, m.donor_allele))
                    .collect();
                find(
                    codes::HLA_ANTIBODY_MATCH,
                    Block,
                    format!("patient HLA antibodies target donor antigens: {}", list.join(", ")),
                );
            }
        }
        None if alloimmunised(patient) => {
            let mut what: Vec<String> = Vec::new();
            let antibodies: Vec<&str> = patient
                .hla_antibodies
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect();
            if !antibodies.is_empty() {
                what.push(format!("HLA antibodies {}", antibodies.join(", ")));
            }
            if patient.granulocyte_antibodies {
                what.push("granulocyte antibodies".to_owned());
            }
            find(
                codes::HLA_UNTYPED_DONOR,
                Warn,
                format!(
                    "patient is alloimmunised ({}) but the donor is not HLA-typed",
                    what.join("; ")
                ),
            );
        }
        None => {}
    }

    match crossmatch {
        Some(xm) => {
            if !xm.compatible {
                find(
                    codes::CROSSMATCH_INCOMPATIBLE,
                    Block,
                    "the crossmatch is incompatible".to_owned(),
                );
            }
            let transfusion = planned_at.max(now);
            if xm.sample_valid_until < transfusion {
                let when = if xm.sample_valid_until < now {
                    "it has already expired".to_owned()
                } else {
                    format!("transfusion is planned at {}", fmt_time(planned_at))
                };
                find(
                    codes::SAMPLE_EXPIRED,
                    Block,
                    format!(
                        "the crossmatch sample is valid until {}; {when}",
                        fmt_time(xm.sample_valid_until)
                    ),
                );
            }
        }
        None if stage == Stage::Issue => find(
            codes::CROSSMATCH_MISSING,
            Block,
            "no crossmatch against a patient sample".to_owned(),
        ),
        None => {}
    }

    if now >= unit.expires_at {
        find(
            codes::UNIT_EXPIRED,
            Block,
            format!("unit expired at {}", fmt_time(unit.expires_at)),
        );
    }
    if stage == Stage::Allocation {
        if unit.expires_at <= planned_at {
            find(
                codes::EXPIRES_BEFORE_NEEDED,
                Block,
                format!(
                    "unit expires at {}, not after it is needed at {}",
                    fmt_time(unit.expires_at),
                    fmt_time(planned_at)
                ),
            );
        }
        let remaining = unit.expires_at.signed_duration_since(now);
        let minimum = policy.unit.min_remaining_hours_to_allocate;
        if remaining < hours(minimum) {
            find(
                codes::INSUFFICIENT_SHELF_LIFE,
                Block,
                format!(
                    "unit has {} of shelf life left; at least {minimum} h are needed to allocate",
                    fmt_span(remaining)
                ),
            );
        }
    }

    if stage == Stage::Issue {
        if !unit.irradiated {
            find(codes::NOT_IRRADIATED, Block, "unit has not been irradiated".to_owned());
        }
        if !unit.released {
            find(codes::NOT_RELEASED, Block, "unit has not been released".to_owned());
        }
    }

    let target = policy.recipient.dose_target_per_kg;
    if let Some(dose) = dose_per_kg(unit.granulocyte_count, patient.weight_kg)
        && dose < target
    {
        find(
            codes::DOSE_BELOW_TARGET,
            Warn,
            format!(
                "dose {dose:.2e} cells/kg ({:.2e} granulocytes for {} kg) is below the target of {target:.2e} cells/kg",
                unit.granulocyte_count, patient.weight_kg
            ),
        );
    }

    Assessment {
        verdict: verdict_of(&reasons),
        reasons,
        anti_d_prophylaxis,
    }
}

/// A unit offered for a patient with its assessment, for ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitCandidate<'a> {
    pub unit_id: i64,
    pub facts: &'a UnitFacts,
    pub assessment: Assessment,
}

// Ranking weights. Each preference outweighs all the ones below it together, so the score
// orders units lexicographically: verdict tier, then typed donor HLA for an alloimmunised
// patient, then adequate dose, then ABO-identical, then sooner expiry. These are ordering
// weights, not clinical thresholds.
/// Base of a unit with no findings.
const TIER_COMPATIBLE: f64 = 10_000.0;
/// Base of a unit with only warnings; incompatible units score 0 whatever else.
const TIER_WARNINGS: f64 = 5_000.0;
/// Alloimmunised patient and an HLA-typed donor (antibody matches were checked).
const HLA_TYPED: f64 = 800.0;
/// Dose at or above `recipient.dose_target_per_kg` (unknown when the weight is unusable).
const DOSE_ADEQUATE: f64 = 400.0;
/// Same ABO group as the patient.
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
    if alloimmunised(patient) && donor_typing(unit).is_some() {
        score += HLA_TYPED;
    }
    if dose_per_kg(unit.granulocyte_count, patient.weight_kg).is_some_and(|d| d >= policy.recipient.dose_target_per_kg)
    {
        score += DOSE_ADEQUATE;
    }
    if patient.abo == unit.abo {
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

#[cfg(test)]
mod tests {
    use super::codes::*;
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 15, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn planned() -> DateTime<Utc> {
        now() + TimeDelta::hours(6)
    }

    fn typed(a: &[&str], b: &[&str], c: &[&str], drb1: &[&str]) -> Hla {
        let v = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect();
        Hla {
            a: v(a),
            b: v(b),
            c: v(c),
            drb1: v(drb1),
        }
    }

    fn strings(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A group A RhD-positive CMV-positive man of 70 kg, not alloimmunised.
    fn patient() -> PatientFacts {
        PatientFacts {
            abo: Abo::A,
            rhd: Rhd::Positive,
            sex: Sex::Male,
            childbearing_potential: false,
            cmv: Cmv::Positive,
            weight_kg: 70.0,
            hla_antibodies: Vec::new(),
            granulocyte_antibodies: false,
        }
    }

    /// A matching unit: typed, irradiated, released, 20 h left, twice the target dose for 70 kg.
    fn unit() -> UnitFacts {
        UnitFacts {
            abo: Abo::A,
            rhd: Rhd::Positive,
            cmv: Cmv::Negative,
            donor_hla: Some(typed(
                &["A*01:01", "A*03:01"],
                &["B*08:01", "B*44:02"],
                &["C*05:01"],
                &["DRB1*03:01"],
            )),
            irradiated: true,
            released: true,
            expires_at: now() + TimeDelta::hours(20),
            granulocyte_count: 2.0 * Policy::default().recipient.dose_target_per_kg * 70.0,
        }
    }

    fn xm() -> CrossmatchFacts {
        CrossmatchFacts {
            compatible: true,
            sample_valid_until: planned() + TimeDelta::hours(24),
        }
    }

    fn at(stage: Stage, p: &PatientFacts, u: &UnitFacts, policy: &Policy) -> Assessment {
        assess(p, u, Some(&xm()), planned(), now(), stage, policy)
    }

    fn alloc(p: &PatientFacts, u: &UnitFacts) -> Assessment {
        at(Stage::Allocation, p, u, &Policy::default())
    }

    fn issue(p: &PatientFacts, u: &UnitFacts) -> Assessment {
        at(Stage::Issue, p, u, &Policy::default())
    }

    fn finding<'a>(a: &'a Assessment, code: &str) -> &'a Finding {
        a.reasons.iter().find(|r| r.code == code).expect("finding present")
    }

    fn severities(a: &Assessment) -> Vec<(&'static str, Severity)> {
        a.reasons.iter().map(|r| (r.code, r.severity)).collect()
    }

    const GROUPS: [Abo; 4] = [Abo::O, Abo::A, Abo::B, Abo::Ab];

    #[test]
    fn samples_are_valid_for_the_policy_hours() {
        let mut p = Policy::default();
        let drawn = Utc.with_ymd_and_hms(2028, 2, 28, 10, 0, 0).single().expect("time");
        assert_eq!(
            sample_valid_until(drawn, &p),
            Utc.with_ymd_and_hms(2028, 3, 2, 10, 0, 0).single().expect("time"),
            "72 h across a leap day"
        );
        p.compat.sample_valid_hours = 24;
        assert_eq!(sample_valid_until(drawn, &p), drawn + TimeDelta::hours(24));
    }

    #[test]
    fn baseline_is_compatible_at_both_stages() {
        for stage in Stage::ALL {
            let a = at(*stage, &patient(), &unit(), &Policy::default());
            assert_eq!(
                a,
                Assessment {
                    verdict: Verdict::Compatible,
                    reasons: vec![],
                    anti_d_prophylaxis: false
                },
                "{stage}"
            );
        }
    }

    // The domain.md §3 tables. Rows: patient O, A, B, AB; columns: unit O, A, B, AB.
    const RED_CELLS: [[bool; 4]; 4] = [
        [true, false, false, false],
        [true, true, false, false],
        [true, false, true, false],
        [true, true, true, true],
    ];
    const PLASMA: [[bool; 4]; 4] = [
        [true, true, true, true],
        [false, true, false, true],
        [false, false, true, true],
        [false, false, false, true],
    ];

    fn in_table(table: &[[bool; 4]; 4], patient: Abo, unit: Abo) -> bool {
        let index = |g| GROUPS.iter().position(|x| *x == g).expect("a group");
        table[index(patient)][index(unit)]
    }

    #[test]
    fn abo_red_cell_and_plasma_tables() {
        for p in GROUPS {
            for u in GROUPS {
                assert_eq!(
                    red_cells_compatible(p, u),
                    in_table(&RED_CELLS, p, u),
                    "red cells {u} → {p}"
                );
                assert_eq!(plasma_compatible(p, u), in_table(&PLASMA, p, u), "plasma {u} → {p}");
            }
        }
    }

    /// Every ABO/RhD patient × unit pair. `C` compatible, `W` RhD warning only, `X` ABO block
    /// only, `Y` ABO block and RhD warning.
    #[test]
    fn abo_rhd_exhaustive_table() {
        const UNITS: [(Abo, Rhd); 8] = [
            (Abo::O, Rhd::Positive),
            (Abo::O, Rhd::Negative),
            (Abo::A, Rhd::Positive),
            (Abo::A, Rhd::Negative),
            (Abo::B, Rhd::Positive),
            (Abo::B, Rhd::Negative),
            (Abo::Ab, Rhd::Positive),
            (Abo::Ab, Rhd::Negative),
        ];
        //                        unit: O+  O-  A+  A-  B+  B-  AB+ AB-
        let table: [(Abo, Rhd, [char; 8]); 8] = [
            (Abo::O, Rhd::Positive, ['C', 'C', 'X', 'X', 'X', 'X', 'X', 'X']),
            (Abo::O, Rhd::Negative, ['W', 'C', 'Y', 'X', 'Y', 'X', 'Y', 'X']),
            (Abo::A, Rhd::Positive, ['C', 'C', 'C', 'C', 'X', 'X', 'X', 'X']),
            (Abo::A, Rhd::Negative, ['W', 'C', 'W', 'C', 'Y', 'X', 'Y', 'X']),
            (Abo::B, Rhd::Positive, ['C', 'C', 'X', 'X', 'C', 'C', 'X', 'X']),
            (Abo::B, Rhd::Negative, ['W', 'C', 'Y', 'X', 'W', 'C', 'Y', 'X']),
            (Abo::Ab, Rhd::Positive, ['C', 'C', 'C', 'C', 'C', 'C', 'C', 'C']),
            (Abo::Ab, Rhd::Negative, ['W', 'C', 'W', 'C', 'W', 'C', 'W', 'C']),
        ];
        let mut checked = 0;
        for (p_abo, p_rhd, row) in table {
            for ((u_abo, u_rhd), expected) in UNITS.into_iter().zip(row) {
                let p = PatientFacts {
                    abo: p_abo,
                    rhd: p_rhd,
                    ..patient()
                };
                let u = UnitFacts {
                    abo: u_abo,
                    rhd: u_rhd,
                    ..unit()
                };
                let (codes, verdict): (Vec<(&str, Severity)>, Verdict) = match expected {
                    'C' => (vec![], Verdict::Compatible),
                    'W' => (vec![(RHD_MISMATCH, Severity::Warn)], Verdict::CompatibleWithWarnings),
                    'X' => (vec![(ABO_INCOMPATIBLE, Severity::Block)], Verdict::Incompatible),
                    _ => (
                        vec![(ABO_INCOMPATIBLE, Severity::Block), (RHD_MISMATCH, Severity::Warn)],
                        Verdict::Incompatible,
                    ),
                };
                for stage in Stage::ALL {
                    let a = at(*stage, &p, &u, &Policy::default());
                    let case = format!("patient {p_abo} {p_rhd}, unit {u_abo} {u_rhd}, {stage}");
                    assert_eq!(severities(&a), codes, "{case}");
                    assert_eq!(a.verdict, verdict, "{case}");
                    assert!(!a.anti_d_prophylaxis, "{case}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 64);
    }

    /// `C` none, `M` minor warning only, `X` major block only, `Z` both.
    #[test]
    fn minor_abo_table_when_enabled_and_silent_when_not() {
        //                   unit: O    A    B    AB
        let table: [(Abo, [char; 4]); 4] = [
            (Abo::O, ['C', 'X', 'X', 'X']),
            (Abo::A, ['M', 'C', 'Z', 'X']),
            (Abo::B, ['M', 'Z', 'C', 'X']),
            (Abo::Ab, ['M', 'M', 'M', 'C']),
        ];
        let mut enabled = Policy::default();
        enabled.compat.minor_abo_check = true;
        for (p_abo, row) in table {
            for (u_abo, expected) in GROUPS.into_iter().zip(row) {
                let p = PatientFacts {
                    abo: p_abo,
                    ..patient()
                };
                let u = UnitFacts { abo: u_abo, ..unit() };
                let (codes, verdict): (Vec<(&str, Severity)>, Verdict) = match expected {
                    'C' => (vec![], Verdict::Compatible),
                    'M' => (
                        vec![(MINOR_ABO_INCOMPATIBLE, Severity::Warn)],
                        Verdict::CompatibleWithWarnings,
                    ),
                    'X' => (vec![(ABO_INCOMPATIBLE, Severity::Block)], Verdict::Incompatible),
                    _ => (
                        vec![
                            (ABO_INCOMPATIBLE, Severity::Block),
                            (MINOR_ABO_INCOMPATIBLE, Severity::Warn),
                        ],
                        Verdict::Incompatible,
                    ),
                };
                let a = at(Stage::Allocation, &p, &u, &enabled);
                assert_eq!(severities(&a), codes, "patient {p_abo}, unit {u_abo}");
                assert_eq!(a.verdict, verdict, "patient {p_abo}, unit {u_abo}");
                assert!(!alloc(&p, &u).has(MINOR_ABO_INCOMPATIBLE), "off by default");
            }
        }
        let a = at(
            Stage::Allocation,
            &PatientFacts {
                abo: Abo::A,
                ..patient()
            },
            &UnitFacts { abo: Abo::O, ..unit() },
            &enabled,
        );
        assert!(
            finding(&a, MINOR_ABO_INCOMPATIBLE)
                .message
                .contains("group O unit plasma")
        );
    }

    #[test]
    fn rhd_policy_switch_and_anti_d_flag() {
        let neg = |sex, childbearing_potential| PatientFacts {
            rhd: Rhd::Negative,
            sex,
            childbearing_potential,
            ..patient()
        };
        let pos_unit = unit();
        let neg_unit = UnitFacts {
            rhd: Rhd::Negative,
            ..unit()
        };
        let cases = [
            (Sex::Female, true, true),
            (Sex::Female, false, false),
            (Sex::Male, true, false),
            (Sex::Male, false, false),
            (Sex::Unknown, true, false),
        ];
        let mut block = Policy::default();
        block.compat.rhd_mismatch = RhdMismatch::Block;
        for (sex, cbp, flag) in cases {
            let p = neg(sex, cbp);
            let warn = alloc(&p, &pos_unit);
            assert_eq!(severities(&warn), vec![(RHD_MISMATCH, Severity::Warn)]);
            assert_eq!(warn.verdict, Verdict::CompatibleWithWarnings);
            assert_eq!(warn.anti_d_prophylaxis, flag, "{sex} {cbp}");
            assert_eq!(finding(&warn, RHD_MISMATCH).message.contains("anti-D"), flag);

            let blocked = at(Stage::Issue, &p, &pos_unit, &block);
            assert_eq!(severities(&blocked), vec![(RHD_MISMATCH, Severity::Block)]);
            assert_eq!(blocked.verdict, Verdict::Incompatible);
            assert_eq!(blocked.anti_d_prophylaxis, flag, "{sex} {cbp}");

            let matched = alloc(&p, &neg_unit);
            assert_eq!(matched.verdict, Verdict::Compatible);
            assert!(!matched.anti_d_prophylaxis);
        }
        // An RhD-positive patient never needs it.
        let p = PatientFacts {
            sex: Sex::Female,
            childbearing_potential: true,
            ..patient()
        };
        assert!(!alloc(&p, &pos_unit).anti_d_prophylaxis);
    }

    #[test]
    fn cmv_matrix_and_policy_switch() {
        let policies = [
            (CmvMismatch::Warn, Some(Severity::Warn)),
            (CmvMismatch::Block, Some(Severity::Block)),
            (CmvMismatch::Off, None),
        ];
        for (setting, severity) in policies {
            let mut policy = Policy::default();
            policy.compat.cmv_mismatch = setting;
            for p_cmv in Cmv::ALL {
                for u_cmv in Cmv::ALL {
                    let p = PatientFacts {
                        cmv: *p_cmv,
                        ..patient()
                    };
                    let u = UnitFacts { cmv: *u_cmv, ..unit() };
                    let a = at(Stage::Allocation, &p, &u, &policy);
                    let mismatch = *p_cmv == Cmv::Negative && *u_cmv != Cmv::Negative;
                    let expected: Vec<(&str, Severity)> = match (mismatch, severity) {
                        (true, Some(s)) => vec![(CMV_MISMATCH, s)],
                        _ => vec![],
                    };
                    assert_eq!(severities(&a), expected, "{setting:?} patient {p_cmv} unit {u_cmv}");
                    assert_eq!(a.verdict, verdict_of(&a.reasons));
                }
            }
        }
        let a = alloc(
            &PatientFacts {
                cmv: Cmv::Negative,
                ..patient()
            },
            &UnitFacts {
                cmv: Cmv::Unknown,
                ..unit()
            },
        );
        assert!(finding(&a, CMV_MISMATCH).message.contains("unknown"));
    }

    #[test]
    fn antibody_specificities_parse_to_antigens() {
        let ag = |locus, group| Some(HlaAntigen { locus, group });
        let cases = [
            ("A2", ag(HlaLocus::A, 2)),
            ("A*02", ag(HlaLocus::A, 2)),
            ("A*02:01", ag(HlaLocus::A, 2)),
            ("A*02:01:01:02L", ag(HlaLocus::A, 2)),
            (" a2 ", ag(HlaLocus::A, 2)),
            ("HLA-A2", ag(HlaLocus::A, 2)),
            ("anti-A2", ag(HlaLocus::A, 2)),
            ("Anti-HLA-A*02", ag(HlaLocus::A, 2)),
            ("A24", ag(HlaLocus::A, 24)),
            ("B7", ag(HlaLocus::B, 7)),
            ("B*07:02", ag(HlaLocus::B, 7)),
            ("Cw7", ag(HlaLocus::C, 7)),
            ("C7", ag(HlaLocus::C, 7)),
            ("C*07", ag(HlaLocus::C, 7)),
            ("DR15", ag(HlaLocus::Drb1, 15)),
            ("DRB1*15", ag(HlaLocus::Drb1, 15)),
            ("drb1*15:01", ag(HlaLocus::Drb1, 15)),
            ("B*103", ag(HlaLocus::B, 103)),
            ("Bw4", None),
            ("Bw6", None),
            ("DQ2", None),
            ("DQB1*02", None),
            ("DP1", None),
            ("DRB3*01", None),
            ("DR*15", None),
            ("Cw*07", None),
            ("DRB115", None),
            ("A*2", None),
            ("A*0201", None),
            ("A*02:", None),
            ("A0", None),
            ("A", None),
            ("A2a", None),
            ("A1234", None),
            ("", None),
            ("weak reactivity", None),
        ];
        for (text, expected) in cases {
            assert_eq!(antibody_antigen(text), expected, "{text:?}");
        }
        assert_eq!(allele_antigen(HlaLocus::A, " a*02:01 "), ag(HlaLocus::A, 2));
        assert_eq!(allele_antigen(HlaLocus::A, "B*07:02"), None);
        assert_eq!(allele_antigen(HlaLocus::A, "A2"), None);
        assert_eq!(
            HlaAntigen {
                locus: HlaLocus::Drb1,
                group: 4
            }
            .to_string(),
            "DRB1*04"
        );
    }

    #[test]
    fn hla_antibody_matching_variants() {
        let cases: [(&str, Hla, bool); 16] = [
            ("A2", typed(&["A*02:01"], &[], &[], &[]), true),
            ("A*02", typed(&["A*02:01"], &[], &[], &[]), true),
            ("A*02:01", typed(&["A*02:06"], &[], &[], &[]), true),
            ("A2", typed(&["A*03"], &[], &[], &[]), false),
            ("A2", typed(&["A*24:02"], &[], &[], &[]), false),
            ("A24", typed(&["A*02:01", "A*24:02"], &[], &[], &[]), true),
            ("B7", typed(&[], &["B*07:02"], &[], &[]), true),
            ("A7", typed(&[], &["B*07:02"], &[], &[]), false),
            ("DR15", typed(&[], &[], &[], &["DRB1*15:01"]), true),
            ("DRB1*15", typed(&[], &[], &[], &["drb1*15:01"]), true),
            ("DR15", typed(&[], &[], &[], &["DRB1*01:01"]), false),
            ("Cw7", typed(&[], &[], &["C*07:01"], &[]), true),
            ("C*07", typed(&[], &[], &["C*07:02"], &[]), true),
            ("Cw7", typed(&[], &["B*07:02"], &[], &[]), false),
            ("Bw4", typed(&[], &["B*44:02"], &[], &[]), false),
            ("A2", typed(&["garbage", "A*02:01N"], &[], &[], &[]), true),
        ];
        for (antibody, donor, matched) in cases {
            let p = PatientFacts {
                hla_antibodies: strings(&[antibody]),
                ..patient()
            };
            let u = UnitFacts {
                donor_hla: Some(donor.clone()),
                ..unit()
            };
            let a = alloc(&p, &u);
            let expected: Vec<(&str, Severity)> = if matched {
                vec![(HLA_ANTIBODY_MATCH, Severity::Block)]
            } else {
                vec![]
            };
            assert_eq!(severities(&a), expected, "{antibody} vs {donor:?}");
        }
    }

    #[test]
    fn every_hla_match_is_listed_in_one_finding() {
        let p = PatientFacts {
            hla_antibodies: strings(&["A1", "B8", "DR4", "Bw4", "A*03:01"]),
            ..patient()
        };
        let a = alloc(&p, &unit());
        assert_eq!(a.codes(), vec![HLA_ANTIBODY_MATCH]);
        assert_eq!(
            finding(&a, HLA_ANTIBODY_MATCH).message,
            "patient HLA antibodies target donor antigens: anti-A1 → A*01 (A*01:01), anti-B8 → B*08 (B*08:01), \
             anti-A*03:01 → A*03 (A*03:01)"
        );
        let m = hla_antibody_matches(&strings(&["A1"]), &typed(&["A*01:01", "A*01:02"], &[], &[], &[]));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn untyped_donor_warns_only_for_alloimmunised_patients() {
        // (HLA antibodies, granulocyte antibodies, donor typing, warning expected)
        let cases: [(&[&str], bool, Option<Hla>, bool); 8] = [
            (&["A2"], false, None, true),
            (&[], true, None, true),
            // Unparseable antibodies still make the patient alloimmunised.
            (&["Bw4"], false, None, true),
            // A typing without any allele is no typing.
            (&["A2"], false, Some(Hla::default()), true),
            (&[], false, None, false),
            (&["  "], false, None, false),
            (&["A2"], true, Some(typed(&["A*01"], &[], &[], &[])), false),
            (&[], true, Some(typed(&["A*02"], &[], &[], &[])), false),
        ];
        for (antibodies, granulocyte, donor_hla, warns) in cases {
            let p = PatientFacts {
                hla_antibodies: strings(antibodies),
                granulocyte_antibodies: granulocyte,
                ..patient()
            };
            let u = UnitFacts {
                donor_hla: donor_hla.clone(),
                ..unit()
            };
            let expected = if warns { vec![HLA_UNTYPED_DONOR] } else { vec![] };
            let a = alloc(&p, &u);
            assert_eq!(a.codes(), expected, "{antibodies:?} {granulocyte} {donor_hla:?}");
            if warns {
                assert_eq!(finding(&a, HLA_UNTYPED_DONOR).severity, Severity::Warn);
                assert_eq!(a.verdict, Verdict::CompatibleWithWarnings);
            }
        }
        let p = PatientFacts {
            hla_antibodies: strings(&["A2", "B7"]),
            granulocyte_antibodies: true,
            ..patient()
        };
        let a = alloc(
            &p,
            &UnitFacts {
                donor_hla: None,
                ..unit()
            },
        );
        assert_eq!(
            finding(&a, HLA_UNTYPED_DONOR).message,
            "patient is alloimmunised (HLA antibodies A2, B7; granulocyte antibodies) but the donor is not HLA-typed"
        );
    }

    #[test]
    fn crossmatch_rules_by_stage() {
        let p = patient();
        let u = unit();
        let policy = Policy::default();
        let bad = CrossmatchFacts {
            compatible: false,
            ..xm()
        };
        let run = |xm: Option<&CrossmatchFacts>, stage| assess(&p, &u, xm, planned(), now(), stage, &policy).codes();
        assert_eq!(run(None, Stage::Allocation), Vec::<&str>::new());
        assert_eq!(run(None, Stage::Issue), vec![CROSSMATCH_MISSING]);
        assert_eq!(run(Some(&bad), Stage::Allocation), vec![CROSSMATCH_INCOMPATIBLE]);
        assert_eq!(run(Some(&bad), Stage::Issue), vec![CROSSMATCH_INCOMPATIBLE]);
        assert_eq!(run(Some(&xm()), Stage::Issue), Vec::<&str>::new());
    }

    #[test]
    fn sample_validity_boundary_at_planned_time() {
        let p = patient();
        let u = unit();
        let policy = Policy::default();
        for stage in Stage::ALL {
            let run = |valid_until: DateTime<Utc>, planned_at: DateTime<Utc>| {
                let xm = CrossmatchFacts {
                    compatible: true,
                    sample_valid_until: valid_until,
                };
                assess(&p, &u, Some(&xm), planned_at, now(), *stage, &policy)
            };
            assert!(
                run(planned(), planned()).reasons.is_empty(),
                "{stage}: valid exactly at planned"
            );
            let a = run(planned() - TimeDelta::seconds(1), planned());
            assert_eq!(severities(&a), vec![(SAMPLE_EXPIRED, Severity::Block)], "{stage}");
            assert!(
                a.reasons[0]
                    .message
                    .contains("transfusion is planned at 2025-06-15 18:00:00 UTC")
            );
            // A transfusion planned in the past happens now at the earliest.
            let late = now() - TimeDelta::hours(1);
            assert!(run(now(), late).reasons.is_empty(), "{stage}");
            let a = run(now() - TimeDelta::seconds(1), late);
            assert_eq!(a.codes(), vec![SAMPLE_EXPIRED], "{stage}");
            assert!(a.reasons[0].message.contains("already expired"));
        }
    }

    #[test]
    fn unit_expiry_boundary() {
        for stage in Stage::ALL {
            let run = |expires_at: DateTime<Utc>, planned_at: DateTime<Utc>| {
                let u = UnitFacts { expires_at, ..unit() };
                assess(
                    &patient(),
                    &u,
                    Some(&xm()),
                    planned_at,
                    now(),
                    *stage,
                    &Policy::default(),
                )
                .codes()
            };
            let expired = run(now(), now());
            assert_eq!(expired.first(), Some(&UNIT_EXPIRED), "{stage}: expired exactly at now");
            assert!(
                !run(now() + TimeDelta::seconds(1), now()).contains(&UNIT_EXPIRED),
                "{stage}"
            );
        }
        // At issue only the unit's own expiry counts.
        let u = UnitFacts {
            expires_at: now(),
            ..unit()
        };
        assert_eq!(issue(&patient(), &u).codes(), vec![UNIT_EXPIRED]);
        assert_eq!(
            alloc(&patient(), &u).codes(),
            vec![UNIT_EXPIRED, EXPIRES_BEFORE_NEEDED, INSUFFICIENT_SHELF_LIFE]
        );
    }

    #[test]
    fn expires_before_needed_boundary() {
        let run = |expires_at, stage| {
            let u = UnitFacts { expires_at, ..unit() };
            at(stage, &patient(), &u, &Policy::default())
        };
        let a = run(planned(), Stage::Allocation);
        assert_eq!(severities(&a), vec![(EXPIRES_BEFORE_NEEDED, Severity::Block)]);
        assert_eq!(
            a.reasons[0].message,
            "unit expires at 2025-06-15 18:00:00 UTC, not after it is needed at 2025-06-15 18:00:00 UTC"
        );
        assert!(
            run(planned() + TimeDelta::seconds(1), Stage::Allocation)
                .reasons
                .is_empty()
        );
        assert!(run(planned(), Stage::Issue).reasons.is_empty(), "allocation only");
    }

    #[test]
    fn remaining_shelf_life_boundary() {
        let policy = Policy::default();
        let minimum = TimeDelta::hours(i64::from(policy.unit.min_remaining_hours_to_allocate));
        let soon = now() + TimeDelta::minutes(30);
        let run = |left: TimeDelta, stage| {
            let u = UnitFacts {
                expires_at: now() + left,
                ..unit()
            };
            let xm = CrossmatchFacts {
                compatible: true,
                sample_valid_until: soon,
            };
            assess(&patient(), &u, Some(&xm), soon, now(), stage, &policy)
        };
        assert!(
            run(minimum, Stage::Allocation).reasons.is_empty(),
            "exactly the minimum"
        );
        let a = run(minimum - TimeDelta::minutes(1), Stage::Allocation);
        assert_eq!(severities(&a), vec![(INSUFFICIENT_SHELF_LIFE, Severity::Block)]);
        assert!(a.reasons[0].message.contains("1 h 59 min"), "{}", a.reasons[0].message);
        assert!(
            run(minimum - TimeDelta::minutes(1), Stage::Issue).reasons.is_empty(),
            "allocation only"
        );

        let mut longer = Policy::default();
        longer.unit.min_remaining_hours_to_allocate = 21;
        let a = at(Stage::Allocation, &patient(), &unit(), &longer);
        assert_eq!(a.codes(), vec![INSUFFICIENT_SHELF_LIFE]);
        assert!(a.reasons[0].message.contains("at least 21 h"));
    }

    #[test]
    fn issue_needs_irradiated_released_unit() {
        let u = UnitFacts {
            irradiated: false,
            released: false,
            ..unit()
        };
        assert!(alloc(&patient(), &u).reasons.is_empty(), "not checked at allocation");
        let a = issue(&patient(), &u);
        assert_eq!(
            severities(&a),
            vec![(NOT_IRRADIATED, Severity::Block), (NOT_RELEASED, Severity::Block)]
        );
        let u = UnitFacts {
            irradiated: false,
            ..unit()
        };
        assert_eq!(issue(&patient(), &u).codes(), vec![NOT_IRRADIATED]);
        let u = UnitFacts {
            released: false,
            ..unit()
        };
        assert_eq!(issue(&patient(), &u).codes(), vec![NOT_RELEASED]);
    }

    #[test]
    fn dose_boundary_and_unusable_weight() {
        let policy = Policy::default();
        let target = policy.recipient.dose_target_per_kg;
        let p = patient();
        let with_count = |count: f64| UnitFacts {
            granulocyte_count: count,
            ..unit()
        };
        for stage in Stage::ALL {
            let exact = at(*stage, &p, &with_count(target * p.weight_kg), &policy);
            assert!(exact.reasons.is_empty(), "{stage}: exactly at target");
            let below = at(*stage, &p, &with_count(target * p.weight_kg - 1.0), &policy);
            assert_eq!(severities(&below), vec![(DOSE_BELOW_TARGET, Severity::Warn)]);
            assert_eq!(below.verdict, Verdict::CompatibleWithWarnings);
        }
        let a = alloc(&p, &with_count(3.5e10));
        assert_eq!(
            finding(&a, DOSE_BELOW_TARGET).message,
            "dose 5.00e8 cells/kg (3.50e10 granulocytes for 70 kg) is below the target of 6.00e8 cells/kg"
        );
        for weight in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let p = PatientFacts {
                weight_kg: weight,
                ..patient()
            };
            assert!(alloc(&p, &with_count(1.0)).reasons.is_empty(), "weight {weight}");
        }
        let mut higher = Policy::default();
        higher.recipient.dose_target_per_kg = target * 3.0;
        assert_eq!(
            at(Stage::Allocation, &p, &unit(), &higher).codes(),
            vec![DOSE_BELOW_TARGET]
        );
    }

    #[test]
    fn four_failing_rules_report_four_codes() {
        let p = PatientFacts {
            abo: Abo::O,
            rhd: Rhd::Negative,
            cmv: Cmv::Negative,
            ..patient()
        };
        let u = UnitFacts {
            cmv: Cmv::Unknown,
            granulocyte_count: 1e9,
            ..unit()
        };
        let a = alloc(&p, &u);
        assert_eq!(
            severities(&a),
            vec![
                (ABO_INCOMPATIBLE, Severity::Block),
                (RHD_MISMATCH, Severity::Warn),
                (CMV_MISMATCH, Severity::Warn),
                (DOSE_BELOW_TARGET, Severity::Warn),
            ]
        );
        assert_eq!(a.verdict, Verdict::Incompatible);
    }

    #[test]
    fn every_reason_is_reported_together() {
        let mut policy = Policy::default();
        policy.compat.minor_abo_check = true;
        let p = PatientFacts {
            abo: Abo::A,
            rhd: Rhd::Negative,
            sex: Sex::Female,
            childbearing_potential: true,
            cmv: Cmv::Negative,
            hla_antibodies: strings(&["A1"]),
            ..patient()
        };
        let u = UnitFacts {
            abo: Abo::B,
            rhd: Rhd::Positive,
            cmv: Cmv::Positive,
            irradiated: false,
            released: false,
            expires_at: now(),
            granulocyte_count: 1.0,
            ..unit()
        };
        let xm = CrossmatchFacts {
            compatible: false,
            sample_valid_until: now() - TimeDelta::hours(1),
        };
        let all_but_stage = [
            ABO_INCOMPATIBLE,
            MINOR_ABO_INCOMPATIBLE,
            RHD_MISMATCH,
            CMV_MISMATCH,
            HLA_ANTIBODY_MATCH,
            CROSSMATCH_INCOMPATIBLE,
            SAMPLE_EXPIRED,
            UNIT_EXPIRED,
        ];
        let a = assess(&p, &u, Some(&xm), planned(), now(), Stage::Issue, &policy);
        let mut expected = all_but_stage.to_vec();
        expected.extend([NOT_IRRADIATED, NOT_RELEASED, DOSE_BELOW_TARGET]);
        assert_eq!(a.codes(), expected);
        assert_eq!(a.verdict, Verdict::Incompatible);
        assert!(a.anti_d_prophylaxis);

        let a = assess(&p, &u, Some(&xm), planned(), now(), Stage::Allocation, &policy);
        let mut expected = all_but_stage.to_vec();
        expected.extend([EXPIRES_BEFORE_NEEDED, INSUFFICIENT_SHELF_LIFE, DOSE_BELOW_TARGET]);
        assert_eq!(a.codes(), expected);

        let u = UnitFacts { donor_hla: None, ..u };
        let a = assess(&p, &u, None, planned(), now(), Stage::Issue, &policy);
        assert_eq!(
            a.codes(),
            vec![
                ABO_INCOMPATIBLE,
                MINOR_ABO_INCOMPATIBLE,
                RHD_MISMATCH,
                CMV_MISMATCH,
                HLA_UNTYPED_DONOR,
                CROSSMATCH_MISSING,
                UNIT_EXPIRED,
                NOT_IRRADIATED,
                NOT_RELEASED,
                DOSE_BELOW_TARGET,
            ]
        );
    }

    #[test]
    fn assessment_serialises_with_text_spellings() {
        let p = PatientFacts {
            rhd: Rhd::Negative,
            ..patient()
        };
        let json = serde_json::to_value(alloc(&p, &unit())).expect("serialises");
        assert_eq!(json["verdict"], "compatible_with_warnings");
        assert_eq!(json["reasons"][0]["code"], "rhd_mismatch");
        assert_eq!(json["reasons"][0]["severity"], "warn");
        assert_eq!(json["anti_d_prophylaxis"], false);
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(*s));
        }
        for v in Verdict::ALL {
            assert_eq!(Verdict::parse(v.as_str()), Some(*v));
        }
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(*s));
        }
    }

    fn score_of(p: &PatientFacts, u: &UnitFacts) -> f64 {
        let a = alloc(p, u);
        unit_score(p, u, &a, now(), &Policy::default())
    }

    #[test]
    fn ranking_preferences() {
        let p = patient();
        let identical = unit();
        let group_o = UnitFacts { abo: Abo::O, ..unit() };
        let incompatible = UnitFacts { abo: Abo::B, ..unit() };
        let warned = UnitFacts {
            cmv: Cmv::Unknown,
            ..unit()
        };
        let cmv_neg = PatientFacts {
            cmv: Cmv::Negative,
            ..patient()
        };

        assert_eq!(score_of(&p, &incompatible), 0.0);
        assert!(
            score_of(&p, &identical) > score_of(&p, &group_o),
            "ABO-identical preferred"
        );
        assert!(
            score_of(&cmv_neg, &group_o) > score_of(&cmv_neg, &warned),
            "no warnings first"
        );
        assert!(score_of(&p, &group_o) > score_of(&p, &incompatible));

        let sooner = UnitFacts {
            expires_at: now() + TimeDelta::hours(8),
            ..unit()
        };
        assert!(
            score_of(&p, &sooner) > score_of(&p, &identical),
            "sooner expiry preferred"
        );
        // ABO identity outweighs expiry.
        let group_o_sooner = UnitFacts {
            abo: Abo::O,
            ..sooner.clone()
        };
        assert!(score_of(&p, &identical) > score_of(&p, &group_o_sooner));
        // Below the allocation minimum the unit is incompatible, however soon it expires.
        let too_soon = UnitFacts {
            expires_at: now() + TimeDelta::minutes(90),
            ..unit()
        };
        assert_eq!(score_of(&p, &too_soon), 0.0);

        // Adequate dose outweighs ABO identity, also within the warnings tier.
        let low = UnitFacts {
            granulocyte_count: 1e9,
            ..unit()
        };
        assert!(score_of(&p, &group_o) > score_of(&p, &low));
        let rh_neg = PatientFacts {
            rhd: Rhd::Negative,
            ..patient()
        };
        assert!(score_of(&rh_neg, &UnitFacts { abo: Abo::O, ..unit() }) > score_of(&rh_neg, &low));

        // Typed donors first for an alloimmunised patient, even against other warnings.
        let immunised = PatientFacts {
            granulocyte_antibodies: true,
            rhd: Rhd::Negative,
            ..patient()
        };
        let untyped = UnitFacts {
            donor_hla: None,
            rhd: Rhd::Negative,
            ..unit()
        };
        let typed_rh_pos_group_o = UnitFacts { abo: Abo::O, ..unit() };
        let (a, b) = (alloc(&immunised, &untyped), alloc(&immunised, &typed_rh_pos_group_o));
        assert_eq!(a.codes(), vec![HLA_UNTYPED_DONOR]);
        assert_eq!(b.codes(), vec![RHD_MISMATCH]);
        assert!(score_of(&immunised, &typed_rh_pos_group_o) > score_of(&immunised, &untyped));
    }

    #[test]
    fn rank_units_orders_best_first() {
        let p = patient();
        let units = [
            UnitFacts { abo: Abo::B, ..unit() },
            UnitFacts { abo: Abo::O, ..unit() },
            unit(),
            UnitFacts {
                expires_at: now() + TimeDelta::hours(8),
                ..unit()
            },
            unit(),
        ];
        let mut candidates: Vec<UnitCandidate<'_>> = units
            .iter()
            .enumerate()
            .map(|(i, u)| UnitCandidate {
                unit_id: 10 - i as i64,
                facts: u,
                assessment: alloc(&p, u),
            })
            .collect();
        rank_units(&p, &mut candidates, now(), &Policy::default());
        let ids: Vec<i64> = candidates.iter().map(|c| c.unit_id).collect();
        assert_eq!(ids, vec![7, 6, 8, 9, 10]);
    }

    fn arb_patient() -> impl Strategy<Value = PatientFacts> {
        (
            prop::sample::select(Abo::ALL),
            prop::sample::select(Rhd::ALL),
            prop::sample::select(Sex::ALL),
            any::<bool>(),
            prop::sample::select(Cmv::ALL),
            prop::sample::select(vec![0.0, 3.5, 20.0, 70.0, 120.0]),
            prop::collection::vec(
                prop::sample::select(vec!["A2", "A*01", "B8", "DR15", "Cw7", "Bw4", ""]),
                0..3,
            ),
            any::<bool>(),
        )
            .prop_map(|(abo, rhd, sex, cbp, cmv, weight_kg, abs, gran)| PatientFacts {
                abo,
                rhd,
                sex,
                childbearing_potential: cbp,
                cmv,
                weight_kg,
                hla_antibodies: abs.into_iter().map(str::to_owned).collect(),
                granulocyte_antibodies: gran,
            })
    }

    fn arb_unit() -> impl Strategy<Value = UnitFacts> {
        (
            prop::sample::select(Abo::ALL),
            prop::sample::select(Rhd::ALL),
            prop::sample::select(Cmv::ALL),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            -120i64..2_000,
            prop::sample::select(vec![1e9, 1e10, 4.2e10, 1e11]),
        )
            .prop_map(
                |(abo, rhd, cmv, typed_donor, irradiated, released, minutes, count)| UnitFacts {
                    abo,
                    rhd,
                    cmv,
                    donor_hla: typed_donor.then(|| typed(&["A*02:01"], &["B*44:02"], &["C*05:01"], &["DRB1*04:01"])),
                    irradiated,
                    released,
                    expires_at: now() + TimeDelta::minutes(minutes),
                    granulocyte_count: count,
                },
            )
    }

    fn arb_crossmatch() -> impl Strategy<Value = Option<CrossmatchFacts>> {
        prop::option::of(
            (any::<bool>(), -120i64..1_000).prop_map(|(compatible, minutes)| CrossmatchFacts {
                compatible,
                sample_valid_until: now() + TimeDelta::minutes(minutes),
            }),
        )
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            prop::sample::select(vec![RhdMismatch::Warn, RhdMismatch::Block]),
            prop::sample::select(vec![CmvMismatch::Warn, CmvMismatch::Block, CmvMismatch::Off]),
            any::<bool>(),
        )
            .prop_map(|(rhd, cmv, minor)| {
                let mut policy = Policy::default();
                policy.compat.rhd_mismatch = rhd;
                policy.compat.cmv_mismatch = cmv;
                policy.compat.minor_abo_check = minor;
                policy
            })
    }

    fn tier(v: Verdict) -> u8 {
        match v {
            Verdict::Incompatible => 0,
            Verdict::CompatibleWithWarnings => 1,
            Verdict::Compatible => 2,
        }
    }

    proptest! {
        #[test]
        fn verdict_follows_severities_and_codes_are_unique(
            p in arb_patient(),
            u in arb_unit(),
            xm in arb_crossmatch(),
            planned_minutes in -60i64..1_200,
            stage in prop::sample::select(Stage::ALL),
            policy in arb_policy(),
        ) {
            let planned_at = now() + TimeDelta::minutes(planned_minutes);
            let a = assess(&p, &u, xm.as_ref(), planned_at, now(), stage, &policy);
            let blocks = a.reasons.iter().any(|r| r.severity == Severity::Block);
            let expected = match (blocks, a.reasons.is_empty()) {
                (true, _) => Verdict::Incompatible,
                (false, true) => Verdict::Compatible,
                (false, false) => Verdict::CompatibleWithWarnings,
            };
            prop_assert_eq!(a.verdict, expected);
            let mut codes = a.codes();
            let n = codes.len();
            codes.sort_unstable();
            codes.dedup();
            prop_assert_eq!(codes.len(), n);
            prop_assert!(!a.anti_d_prophylaxis || (a.has(RHD_MISMATCH) && p.sex == Sex::Female));
            prop_assert_eq!(a.has(ABO_INCOMPATIBLE), !red_cells_compatible(p.abo, u.abo));
            if stage == Stage::Allocation {
                prop_assert!(!a.has(NOT_IRRADIATED) && !a.has(NOT_RELEASED) && !a.has(CROSSMATCH_MISSING));
            } else {
                prop_assert!(!a.has(EXPIRES_BEFORE_NEEDED) && !a.has(INSUFFICIENT_SHELF_LIFE));
            }
        }

        #[test]
        fn score_respects_verdict_tiers(
            p in arb_patient(),
            u1 in arb_unit(),
            u2 in arb_unit(),
            policy in arb_policy(),
        ) {
            let a1 = assess(&p, &u1, Some(&xm()), planned(), now(), Stage::Allocation, &policy);
            let a2 = assess(&p, &u2, Some(&xm()), planned(), now(), Stage::Allocation, &policy);
            let s1 = unit_score(&p, &u1, &a1, now(), &policy);
            let s2 = unit_score(&p, &u2, &a2, now(), &policy);
            prop_assert!(s1.is_finite() && s1 >= 0.0);
            if tier(a1.verdict) > tier(a2.verdict) {
                prop_assert!(s1 > s2, "{:?} {} vs {:?} {}", a1.verdict, s1, a2.verdict, s2);
            }
        }

        #[test]
        fn plasma_is_red_cells_reversed(p in prop::sample::select(Abo::ALL), u in prop::sample::select(Abo::ALL)) {
            prop_assert_eq!(plasma_compatible(p, u), red_cells_compatible(u, p));
            prop_assert!(red_cells_compatible(p, p) && red_cells_compatible(p, Abo::O) && red_cells_compatible(Abo::Ab, u));
        }
    }

    /// Antibody specificities with the antigen each targets (`None`: not at a typed locus).
    const ANTIBODIES: &[(&str, Option<(HlaLocus, u16)>)] = &[
        ("A2", Some((HlaLocus::A, 2))),
        ("anti-A*01", Some((HlaLocus::A, 1))),
        ("HLA-B8", Some((HlaLocus::B, 8))),
        (" b*44:02 ", Some((HlaLocus::B, 44))),
        ("Cw7", Some((HlaLocus::C, 7))),
        ("DR15", Some((HlaLocus::Drb1, 15))),
        ("DRB1*04", Some((HlaLocus::Drb1, 4))),
        ("Bw4", None),
        ("DQ2", None),
        ("", None),
        ("  ", None),
    ];

    /// An allele as typed and its allele group (`None`: does not parse, ignored).
    type Allele = (&'static str, Option<u16>);

    /// Donor alleles by locus.
    const ALLELES: [(HlaLocus, &[Allele]); 4] = [
        (
            HlaLocus::A,
            &[
                ("A*02:01", Some(2)),
                ("a*01:01", Some(1)),
                ("A*03", Some(3)),
                ("garbage", None),
            ],
        ),
        (
            HlaLocus::B,
            &[("B*08:01", Some(8)), ("B*44:02:01:01N", Some(44)), ("B*07", Some(7))],
        ),
        (
            HlaLocus::C,
            &[("C*07:01", Some(7)), ("C*05:01", Some(5)), ("Cw7", None)],
        ),
        (HlaLocus::Drb1, &[("DRB1*15:01", Some(15)), ("DRB1*04:01", Some(4))]),
    ];

    fn arb_number() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            0.0..200.0,
            Just(0.0),
            Just(70.0),
            Just(f64::NAN),
            1e8..1e11,
        ]
    }

    /// Minutes from `now()`, with the instants the rules compare against.
    fn arb_minutes() -> impl Strategy<Value = i64> {
        prop_oneof![-180i64..1_800, prop::sample::select(vec![-1, 0, 1, 119, 120, 121, 360])]
    }

    fn arb_any_patient() -> impl Strategy<Value = PatientFacts> {
        (
            arb_patient(),
            prop::collection::vec(0..ANTIBODIES.len(), 0..4),
            arb_number(),
        )
            .prop_map(|(p, antibodies, weight_kg)| PatientFacts {
                hla_antibodies: antibodies.into_iter().map(|i| ANTIBODIES[i].0.to_owned()).collect(),
                weight_kg,
                ..p
            })
    }

    fn arb_any_unit() -> impl Strategy<Value = UnitFacts> {
        let alleles = |n: usize| prop::collection::vec(0..n, 0..=2);
        let typing = prop::option::of((alleles(4), alleles(3), alleles(3), alleles(2)));
        (arb_unit(), typing, arb_minutes(), arb_number()).prop_map(|(u, typing, expires, count)| {
            let pick =
                |locus: usize, picks: Vec<usize>| picks.into_iter().map(|i| ALLELES[locus].1[i].0.to_owned()).collect();
            UnitFacts {
                donor_hla: typing.map(|(a, b, c, drb1)| Hla {
                    a: pick(0, a),
                    b: pick(1, b),
                    c: pick(2, c),
                    drb1: pick(3, drb1),
                }),
                expires_at: now() + TimeDelta::minutes(expires),
                granulocyte_count: count,
                ..u
            }
        })
    }

    fn arb_any_policy() -> impl Strategy<Value = Policy> {
        (arb_policy(), 1u32..=30, prop::sample::select(vec![1e8, 6e8, 1e9, 5e9])).prop_map(
            |(mut policy, min_remaining, dose_target)| {
                policy.unit.min_remaining_hours_to_allocate = min_remaining;
                policy.recipient.dose_target_per_kg = dose_target;
                policy
            },
        )
    }

    /// Each rule of domain.md §3 and the module notes, evaluated on its own, in report order.
    fn expected_findings(
        p: &PatientFacts,
        u: &UnitFacts,
        xm: Option<&CrossmatchFacts>,
        planned_at: DateTime<Utc>,
        stage: Stage,
        policy: &Policy,
    ) -> Vec<(&'static str, Severity)> {
        use Severity::{Block, Warn};
        let mut out = Vec::new();
        let mut rule = |holds: bool, code, severity| {
            if holds {
                out.push((code, severity));
            }
        };
        rule(!in_table(&RED_CELLS, p.abo, u.abo), ABO_INCOMPATIBLE, Block);
        rule(
            policy.compat.minor_abo_check && !in_table(&PLASMA, p.abo, u.abo),
            MINOR_ABO_INCOMPATIBLE,
            Warn,
        );
        let rhd_severity = match policy.compat.rhd_mismatch {
            RhdMismatch::Warn => Warn,
            RhdMismatch::Block => Block,
        };
        rule(
            p.rhd == Rhd::Negative && u.rhd == Rhd::Positive,
            RHD_MISMATCH,
            rhd_severity,
        );
        let cmv = match policy.compat.cmv_mismatch {
            CmvMismatch::Warn => Some(Warn),
            CmvMismatch::Block => Some(Block),
            CmvMismatch::Off => None,
        };
        if let Some(severity) = cmv {
            rule(p.cmv == Cmv::Negative && u.cmv != Cmv::Negative, CMV_MISMATCH, severity);
        }
        let donor_alleles: Vec<String> = u
            .donor_hla
            .iter()
            .flat_map(|h| [&h.a, &h.b, &h.c, &h.drb1])
            .flatten()
            .cloned()
            .collect();
        let typed = !donor_alleles.is_empty();
        let donor_antigens: Vec<(HlaLocus, u16)> = ALLELES
            .iter()
            .flat_map(|(locus, alleles)| alleles.iter().map(move |(text, group)| (*locus, *text, *group)))
            .filter(|(_, text, _)| donor_alleles.iter().any(|a| a == text))
            .filter_map(|(locus, _, group)| group.map(|g| (locus, g)))
            .collect();
        let targeted = p.hla_antibodies.iter().any(|ab| {
            ANTIBODIES
                .iter()
                .any(|(text, antigen)| text == ab && antigen.is_some_and(|a| donor_antigens.contains(&a)))
        });
        let alloimmunised = p.granulocyte_antibodies || p.hla_antibodies.iter().any(|a| !a.trim().is_empty());
        rule(typed && targeted, HLA_ANTIBODY_MATCH, Block);
        rule(!typed && alloimmunised, HLA_UNTYPED_DONOR, Warn);
        rule(xm.is_some_and(|x| !x.compatible), CROSSMATCH_INCOMPATIBLE, Block);
        rule(
            xm.is_some_and(|x| x.sample_valid_until < planned_at.max(now())),
            SAMPLE_EXPIRED,
            Block,
        );
        rule(xm.is_none() && stage == Stage::Issue, CROSSMATCH_MISSING, Block);
        rule(now() >= u.expires_at, UNIT_EXPIRED, Block);
        let allocation = stage == Stage::Allocation;
        rule(allocation && u.expires_at <= planned_at, EXPIRES_BEFORE_NEEDED, Block);
        let minimum = TimeDelta::hours(i64::from(policy.unit.min_remaining_hours_to_allocate));
        rule(
            allocation && u.expires_at - now() < minimum,
            INSUFFICIENT_SHELF_LIFE,
            Block,
        );
        rule(stage == Stage::Issue && !u.irradiated, NOT_IRRADIATED, Block);
        rule(stage == Stage::Issue && !u.released, NOT_RELEASED, Block);
        let dose_known = p.weight_kg.is_finite() && p.weight_kg > 0.0 && u.granulocyte_count.is_finite();
        rule(
            dose_known && u.granulocyte_count / p.weight_kg < policy.recipient.dose_target_per_kg,
            DOSE_BELOW_TARGET,
            Warn,
        );
        out
    }

    fn well_formed_allele() -> impl Strategy<Value = (HlaLocus, u16, String)> {
        (
            prop::sample::select(vec![HlaLocus::A, HlaLocus::B, HlaLocus::C, HlaLocus::Drb1]),
            0u16..=999,
            "(:[0-9]{2,3}){0,3}[NLSCAQ]?",
        )
            .prop_map(|(locus, group, rest)| {
                let first = if group < 100 {
                    format!("{group:02}")
                } else {
                    group.to_string()
                };
                (locus, group, format!("{}*{first}{rest}", locus.as_str()))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_reason_appears_exactly_when_its_rule_holds(
            p in arb_any_patient(),
            u in arb_any_unit(),
            xm_minutes in prop::option::of((any::<bool>(), arb_minutes())),
            planned_minutes in arb_minutes(),
            stage in prop::sample::select(Stage::ALL),
            policy in arb_any_policy(),
        ) {
            let planned_at = now() + TimeDelta::minutes(planned_minutes);
            let xm = xm_minutes.map(|(compatible, m)| CrossmatchFacts {
                compatible,
                sample_valid_until: now() + TimeDelta::minutes(m),
            });
            let a = assess(&p, &u, xm.as_ref(), planned_at, now(), stage, &policy);
            let expected = expected_findings(&p, &u, xm.as_ref(), planned_at, stage, &policy);
            prop_assert_eq!(severities(&a), expected.clone());
            let blocks = expected.iter().filter(|(_, s)| *s == Severity::Block).count();
            let verdict = match (blocks, expected.len()) {
                (0, 0) => Verdict::Compatible,
                (0, _) => Verdict::CompatibleWithWarnings,
                _ => Verdict::Incompatible,
            };
            prop_assert_eq!(a.verdict, verdict);
            let anti_d = p.rhd == Rhd::Negative
                && u.rhd == Rhd::Positive
                && p.sex == Sex::Female
                && p.childbearing_potential;
            prop_assert_eq!(a.anti_d_prophylaxis, anti_d);
            prop_assert!(a.reasons.iter().all(|r| !r.message.is_empty()));
            let score = unit_score(&p, &u, &a, now(), &policy);
            prop_assert!(score.is_finite() && score >= 0.0);
            prop_assert_eq!(score == 0.0, a.verdict == Verdict::Incompatible);
        }

        #[test]
        fn a_stricter_policy_never_improves_the_verdict(
            p in arb_any_patient(),
            u in arb_any_unit(),
            stage in prop::sample::select(Stage::ALL),
            policy in arb_any_policy(),
            more_hours in 0u32..10,
            dose_factor in 1.0f64..4.0,
        ) {
            let mut strict = policy.clone();
            strict.compat.rhd_mismatch = RhdMismatch::Block;
            strict.compat.cmv_mismatch = match policy.compat.cmv_mismatch {
                CmvMismatch::Off => CmvMismatch::Warn,
                _ => CmvMismatch::Block,
            };
            strict.compat.minor_abo_check = true;
            strict.unit.min_remaining_hours_to_allocate += more_hours;
            strict.recipient.dose_target_per_kg *= dose_factor;
            let lenient = assess(&p, &u, Some(&xm()), planned(), now(), stage, &policy);
            let stricter = assess(&p, &u, Some(&xm()), planned(), now(), stage, &strict);
            prop_assert!(tier(stricter.verdict) <= tier(lenient.verdict));
            for code in lenient.codes() {
                prop_assert!(stricter.has(code), "{} lost", code);
            }
        }

        #[test]
        fn hla_parsers_never_panic_and_agree_with_typing_validation(
            text in prop_oneof![any::<String>(), "[ aAbBcCdDrRwW*0-9:NLSQ-]{0,16}"],
        ) {
            let _ = antibody_antigen(&text);
            let loci = [(HlaLocus::A, "a"), (HlaLocus::B, "b"), (HlaLocus::C, "c"), (HlaLocus::Drb1, "drb1")];
            for (locus, field) in loci {
                let mut hla = Hla::default();
                match field {
                    "a" => hla.a.push(text.clone()),
                    "b" => hla.b.push(text.clone()),
                    "c" => hla.c.push(text.clone()),
                    _ => hla.drb1.push(text.clone()),
                }
                // A donor allele the engine cannot read is one that registration refuses.
                prop_assert_eq!(hla.normalized().is_ok(), allele_antigen(locus, &text).is_some(), "{:?}", locus);
            }
        }

        #[test]
        fn well_formed_specificities_name_their_antigen(
            (locus, group, allele) in well_formed_allele(),
            serological in 1u16..=999,
        ) {
            let antigen = HlaAntigen { locus, group };
            prop_assert_eq!(allele_antigen(locus, &allele), Some(antigen));
            prop_assert_eq!(allele_antigen(locus, &format!(" {} ", allele.to_ascii_lowercase())), Some(antigen));
            prop_assert_eq!(antibody_antigen(&allele), Some(antigen));
            prop_assert_eq!(antibody_antigen(&format!("anti-HLA-{allele}")), Some(antigen));
            let name = match locus {
                HlaLocus::A => "A",
                HlaLocus::B => "B",
                HlaLocus::C => "Cw",
                HlaLocus::Drb1 => "DR",
            };
            let serological_antigen = HlaAntigen { locus, group: serological };
            prop_assert_eq!(antibody_antigen(&format!("{name}{serological}")), Some(serological_antigen));
            prop_assert_eq!(serological_antigen.to_string(), format!("{}*{:02}", locus.as_str(), serological));
        }
    }
}
