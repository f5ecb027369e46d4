//! Unit → patient compatibility of a granulocyte transfusion (domain.md §3), and a ranking score
//! for choosing among units. Pure functions over plain facts: every rule that fails is reported
//! with a stable code and a severity; thresholds and switches come from [`Policy`]. The one
//! [`assess`] serves the compatibility view, candidates, allocation and issue.
//!
//! Conventions and interpretations:
//! * The patient's ABO/RhD is the blood group of record ([`crate::domain::group`]), never the
//!   group a hospital declares. Until the ABO group is confirmed (or while typings disagree)
//!   only group O units are ABO-eligible (`abo_unconfirmed`, `abo_discordant`). Until the RhD
//!   type is confirmed the patient is treated as RhD-negative.
//! * `planned_at` is the request's `needed_by` at allocation and now at issue. A crossmatch
//!   sample must be valid at the transfusion, which cannot happen before `now`: the sample is
//!   checked at `max(planned_at, now)`, valid up to and including `sample_valid_until`.
//! * Crossmatches are facts: every result recorded for the unit against the patient's samples
//!   is passed in. An incompatible one blocks until a medical director resolves it, whatever was
//!   recorded after it. The compatible red-cell crossmatch on the longest-valid sample counts.
//! * A unit is expired from `expires_at` on (`now >= expires_at`). At allocation it must expire
//!   strictly after `planned_at` and still have `unit.min_remaining_hours_to_allocate` hours left
//!   at `max(now, planned_at)`; at issue it must have `unit.min_remaining_minutes_at_issue`
//!   minutes left. An expired unit reports every expiry rule it fails (they are all true).
//! * `anti_d_prophylaxis` says that giving this unit to this patient needs an anti-D prophylaxis
//!   task: an RhD-positive unit for an RhD-negative (or unconfirmed) `Sex::Female` patient with
//!   childbearing potential. It is set whatever the RhD severity.
//! * HLA: antibodies and donor alleles match at antigen level, locus + first field: `A2`,
//!   `A*02`, `A*02:01` and `anti-HLA-A2` all mean A*02; `Cw7` is C*07, `DR15` is DRB1*15, `DQ2`
//!   is DQB1*02 (DQ7–9 are DQB1*03), `DP1`/`DPw1` is DPB1*01. Other serological names are
//!   mapped by their number only, so splits and broads whose number differs from the allele
//!   group (`A9`, `B62`, `Cw10`) do not match: report those as allele groups (`B*15`). An
//!   antibody is checked at its locus: a donor untyped at that locus is `hla_untyped_locus`; an
//!   antibody whose locus or antigen cannot be read (`Bw4`, `DR51`, `DQA1*05`, free text) is
//!   `hla_antibody_unresolved`; neither is ever silent. Donor alleles that do not parse are
//!   ignored; null alleles (`N` suffix) are treated as expressed (conservative).
//! * Granulocyte (HNA) antibodies are a finding unless a compatible leukocyte crossmatch on a
//!   sample valid at the transfusion is recorded.
//! * Dose = granulocyte_count / weight_kg, checked only when both are finite and the weight is
//!   positive; a dose exactly at `recipient.dose_target_per_kg` meets the target.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

mod abo;
mod hla;
mod ranking;

pub use abo::{plasma_compatible, red_cells_compatible};
pub use hla::{
    HlaAntigen, HlaCheck, HlaLocus, HlaMatch, allele_antigen, antibody_antigen, antibody_locus, check_hla,
    hla_antibody_matches, typed_at,
};
pub use ranking::{UnitCandidate, rank_units, unit_score};

use super::text_enum;
use crate::domain::blood::{Abo, Cmv, Hla, Rhd, Sex};
use crate::domain::group::Typed;
use crate::domain::policy::{AuthoriseOrBlock, CmvMismatch, Policy, RhdMismatch};

/// Stable finding codes.
pub mod codes {
    pub const ABO_INCOMPATIBLE: &str = "abo_incompatible";
    pub const ABO_UNCONFIRMED: &str = "abo_unconfirmed";
    pub const ABO_DISCORDANT: &str = "abo_discordant";
    pub const MINOR_ABO_INCOMPATIBLE: &str = "minor_abo_incompatible";
    pub const RHD_MISMATCH: &str = "rhd_mismatch";
    pub const CMV_MISMATCH: &str = "cmv_mismatch";
    pub const CMV_NEGATIVE_REQUIRED: &str = "cmv_negative_required";
    pub const HLA_ANTIBODY_MATCH: &str = "hla_antibody_match";
    pub const HLA_UNTYPED_LOCUS: &str = "hla_untyped_locus";
    pub const HLA_ANTIBODY_UNRESOLVED: &str = "hla_antibody_unresolved";
    pub const HLA_TYPING_REQUIRED: &str = "hla_typing_required";
    pub const HNA_ANTIBODIES: &str = "hna_antibodies";
    pub const CROSSMATCH_INCOMPATIBLE: &str = "crossmatch_incompatible";
    pub const CROSSMATCH_MISSING: &str = "crossmatch_missing";
    pub const SAMPLE_EXPIRED: &str = "sample_expired";
    pub const UNIT_EXPIRED: &str = "unit_expired";
    pub const EXPIRES_BEFORE_NEEDED: &str = "expires_before_needed";
    pub const INSUFFICIENT_SHELF_LIFE: &str = "insufficient_shelf_life";
    pub const NOT_IRRADIATED: &str = "not_irradiated";
    pub const NOT_RELEASED: &str = "not_released";
    pub const REACTIVE_MARKER: &str = "reactive_marker";
    pub const EXCURSION_REVIEW: &str = "excursion_review";
    pub const DOSE_BELOW_TARGET: &str = "dose_below_target";
    pub const RESERVED_FOR_REQUEST: &str = "reserved_for_request";
}

text_enum!(
    /// The tier of a finding (domain.md, "Every finding has a tier"): `info` is shown and stored,
    /// never in the way; `acknowledge` needs any staff member's explicit acknowledgement of its
    /// code; `authorise` needs a record of who authorised it (name, role, time, reason — usually
    /// the on-call haematologist by phone) and a medical director's later sign-off; `block`
    /// refuses.
    Severity {
        Info => "info",
        Acknowledge => "acknowledge",
        Authorise => "authorise",
        Block => "block",
    }
);

impl Severity {
    /// Strictness, for comparing tiers.
    pub fn rank(self) -> u8 {
        match self {
            Self::Info => 0,
            Self::Acknowledge => 1,
            Self::Authorise => 2,
            Self::Block => 3,
        }
    }
}
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
text_enum!(
    /// A red-cell crossmatch (patient plasma against the unit's red cells) or a leukocyte
    /// crossmatch (patient serum against the donor's granulocytes, for HNA antibodies).
    CrossmatchKind { RedCell => "red_cell", Leukocyte => "leukocyte" }
);

text_enum!(
    CrossmatchResult {
        Compatible => "compatible",
        Incompatible => "incompatible",
    }
);

text_enum!(
    /// Red-cell crossmatches: indirect antiglobulin test, immediate spin, or electronic
    /// (computer) issue. Leukocyte crossmatches: granulocyte immunofluorescence or
    /// agglutination, or flow cytometry.
    CrossmatchMethod {
        Iat => "iat",
        ImmediateSpin => "immediate_spin",
        Electronic => "electronic",
        Gift => "granulocyte_immunofluorescence",
        Gat => "granulocyte_agglutination",
        FlowCytometry => "flow_cytometry",
    }
);

impl CrossmatchMethod {
    pub fn kind(self) -> CrossmatchKind {
        match self {
            Self::Iat | Self::ImmediateSpin | Self::Electronic => CrossmatchKind::RedCell,
            Self::Gift | Self::Gat | Self::FlowCytometry => CrossmatchKind::Leukocyte,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub verdict: Verdict,
    pub reasons: Vec<Finding>,
    /// An RhD-positive unit for an RhD-negative female of childbearing potential: giving it
    /// needs an anti-D prophylaxis task.
    pub anti_d_prophylaxis: bool,
    /// Granulocytes per kg of this unit (when the count and weight are usable).
    pub dose_per_kg: Option<f64>,
    /// With the other units of the request due the same day.
    pub day_dose_per_kg: Option<f64>,
}

impl Assessment {
    /// The findings of one tier.
    pub fn of_tier(&self, tier: Severity) -> Vec<&Finding> {
        self.reasons.iter().filter(|f| f.severity == tier).collect()
    }

    pub fn codes(&self) -> Vec<&'static str> {
        self.reasons.iter().map(|r| r.code).collect()
    }

    pub fn has(&self, code: &str) -> bool {
        self.reasons.iter().any(|r| r.code == code)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatientFacts {
    /// The blood group of record, not the declared one.
    pub abo: Typed<Abo>,
    pub rhd: Typed<Rhd>,
    pub sex: Sex,
    pub childbearing_potential: bool,
    pub cmv: Cmv,
    pub weight_kg: f64,
    /// Specificities such as `A2`, `B7`, `A*02`, `DRB1*15`.
    pub hla_antibodies: Vec<String>,
    pub granulocyte_antibodies: bool,
}

/// A request's explicit requirements, which block units that violate them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requirements {
    pub cmv_negative: bool,
    pub hla_compatible: bool,
}

/// One crossmatch recorded for the unit against one of the patient's samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossmatchFacts {
    pub id: i64,
    pub kind: CrossmatchKind,
    pub compatible: bool,
    /// An incompatible result a medical director has resolved no longer blocks.
    pub resolved: bool,
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
    /// Any infectious-disease marker ever reported positive for the unit.
    pub reactive: bool,
    /// A storage temperature excursion no medical director has dispositioned.
    pub excursion_pending: bool,
    /// Released in an emergency for this request only.
    pub reserved_for: Option<i64>,
    pub expires_at: DateTime<Utc>,
    pub granulocyte_count: f64,
}

/// What [`assess`] judges besides the patient and the unit.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub crossmatches: &'a [CrossmatchFacts],
    /// The request the unit is judged for, if any.
    pub request_id: Option<i64>,
    /// Granulocytes of the request's other units due the same day (for the day's dose).
    pub day_granulocytes: f64,
    pub requirements: Requirements,
    pub planned_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub stage: Stage,
}

/// `Incompatible` with any block, `CompatibleWithWarnings` with a finding to acknowledge or
/// authorise, `Compatible` otherwise (info findings never stand in the way).
pub fn verdict_of(findings: &[Finding]) -> Verdict {
    let strictest = findings.iter().map(|f| f.severity.rank()).max().unwrap_or(0);
    match strictest {
        3 => Verdict::Incompatible,
        1 | 2 => Verdict::CompatibleWithWarnings,
        _ => Verdict::Compatible,
    }
}

fn tier_of(setting: AuthoriseOrBlock) -> Severity {
    match setting {
        AuthoriseOrBlock::Authorise => Severity::Authorise,
        AuthoriseOrBlock::Block => Severity::Block,
    }
}

/// Any HLA antibody (readable or not) or granulocyte antibodies.
pub fn alloimmunised(patient: &PatientFacts) -> bool {
    patient.granulocyte_antibodies || has_hla_antibodies(patient)
}

fn has_hla_antibodies(patient: &PatientFacts) -> bool {
    patient.hla_antibodies.iter().any(|s| !s.trim().is_empty())
}

/// Cells per kg, when both the count and a positive weight are finite numbers.
pub fn dose_per_kg(granulocyte_count: f64, weight_kg: f64) -> Option<f64> {
    (granulocyte_count.is_finite() && weight_kg.is_finite() && weight_kg > 0.0).then(|| granulocyte_count / weight_kg)
}

fn hours(n: u32) -> TimeDelta {
    TimeDelta::try_hours(i64::from(n)).unwrap_or(TimeDelta::MAX)
}

fn minutes(n: u32) -> TimeDelta {
    TimeDelta::try_minutes(i64::from(n)).unwrap_or(TimeDelta::MAX)
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

/// The patient counts as CMV-negative (unknown counts under `compat.cmv_unknown_as_negative`).
pub fn cmv_negative_patient(cmv: Cmv, policy: &Policy) -> bool {
    cmv == Cmv::Negative || (cmv == Cmv::Unknown && policy.compat.cmv_unknown_as_negative)
}

/// The patient counts as RhD-negative: typed negative, or not confirmed positive.
pub fn rhd_negative_patient(rhd: Typed<Rhd>) -> bool {
    rhd.confirmed() != Some(Rhd::Positive)
}

/// Whether the pair stands crossmatched: a compatible result is on record and no incompatible
/// one stands unresolved (what a dispense reports as its match status).
pub fn crossmatched(crossmatches: &[CrossmatchFacts]) -> bool {
    crossmatches.iter().any(|x| x.compatible) && !crossmatches.iter().any(|x| !x.compatible && !x.resolved)
}

/// The best compatible crossmatch of `kind`: the one whose sample is valid longest.
fn best_compatible(crossmatches: &[CrossmatchFacts], kind: CrossmatchKind) -> Option<DateTime<Utc>> {
    crossmatches
        .iter()
        .filter(|x| x.kind == kind && x.compatible)
        .map(|x| x.sample_valid_until)
        .max()
}

/// Evaluates every rule that applies at `ctx.stage` (see the module notes for the conventions).
pub fn assess(patient: &PatientFacts, unit: &UnitFacts, ctx: &Context<'_>, policy: &Policy) -> Assessment {
    use Severity::{Acknowledge, Authorise, Block, Info};
    let (now, stage) = (ctx.now, ctx.stage);
    let mut reasons = Vec::new();
    let mut find = |code: &'static str, severity: Severity, message: String| {
        reasons.push(Finding {
            code,
            severity,
            message,
        })
    };

    match patient.abo {
        Typed::Confirmed(group) => {
            if !red_cells_compatible(group, unit.abo) {
                find(
                    codes::ABO_INCOMPATIBLE,
                    Block,
                    format!(
                        "group {} unit red cells are incompatible with group {group} patient plasma",
                        unit.abo
                    ),
                );
            }
            if policy.compat.minor_abo_check && !plasma_compatible(group, unit.abo) {
                find(
                    codes::MINOR_ABO_INCOMPATIBLE,
                    Acknowledge,
                    format!(
                        "group {} unit plasma is incompatible with group {group} patient red cells (minor ABO)",
                        unit.abo
                    ),
                );
            }
        }
        Typed::Discordant if unit.abo != Abo::O => find(
            codes::ABO_DISCORDANT,
            Block,
            format!(
                "the patient's ABO typings disagree: only group O units until it is resolved (unit is group {})",
                unit.abo
            ),
        ),
        Typed::Untyped | Typed::Unconfirmed(_) if unit.abo != Abo::O => find(
            codes::ABO_UNCONFIRMED,
            Block,
            format!(
                "the patient's ABO group is not confirmed by two typings: only group O units until it is (unit is group {})",
                unit.abo
            ),
        ),
        _ => {}
    }

    let rhd_mismatch = rhd_negative_patient(patient.rhd) && unit.rhd == Rhd::Positive;
    let anti_d_prophylaxis = rhd_mismatch && patient.sex == Sex::Female && patient.childbearing_potential;
    if rhd_mismatch {
        let severity = match policy.compat.rhd_mismatch {
            RhdMismatch::Acknowledge if anti_d_prophylaxis => Authorise,
            RhdMismatch::Acknowledge => Acknowledge,
            RhdMismatch::Authorise => Authorise,
            RhdMismatch::Block => Block,
        };
        let mut message = match patient.rhd {
            Typed::Confirmed(_) => "RhD-positive unit for an RhD-negative patient".to_owned(),
            Typed::Discordant => {
                "RhD-positive unit; the patient's RhD typings disagree (treated as RhD-negative)".to_owned()
            }
            Typed::Untyped | Typed::Unconfirmed(_) => {
                "RhD-positive unit; the patient's RhD type is not confirmed (treated as RhD-negative)".to_owned()
            }
        };
        if anti_d_prophylaxis {
            message.push_str(
                "; the patient is a female of childbearing potential: giving this unit creates an anti-D prophylaxis task",
            );
        }
        find(codes::RHD_MISMATCH, severity, message);
    }

    if cmv_negative_patient(patient.cmv, policy) && unit.cmv != Cmv::Negative {
        let severity = match policy.compat.cmv_mismatch {
            CmvMismatch::Authorise => Some(Authorise),
            CmvMismatch::Acknowledge => Some(Acknowledge),
            CmvMismatch::Block => Some(Block),
            CmvMismatch::Off => None,
        };
        if let Some(severity) = severity {
            let whose = if patient.cmv == Cmv::Unknown {
                "patient of unknown CMV serostatus (treated as seronegative)"
            } else {
                "CMV-seronegative patient"
            };
            find(
                codes::CMV_MISMATCH,
                severity,
                format!("{whose}; unit CMV serostatus is {}", unit.cmv),
            );
        }
    }
    if ctx.requirements.cmv_negative && unit.cmv != Cmv::Negative {
        find(
            codes::CMV_NEGATIVE_REQUIRED,
            Block,
            format!("the request requires CMV-negative units; this unit is CMV {}", unit.cmv),
        );
    }

    let donor = unit.donor_hla.as_ref().filter(|h| !h.is_empty());
    let hla = check_hla(&patient.hla_antibodies, donor);
    if !hla.matches.is_empty() {
        let list: Vec<String> = hla
            .matches
            .iter()
            .map(|m| format!("anti-{} → {} ({})", m.antibody, m.antigen, m.donor_allele))
            .collect();
        find(
            codes::HLA_ANTIBODY_MATCH,
            Block,
            format!("patient HLA antibodies target donor antigens: {}", list.join(", ")),
        );
    }
    if !hla.untyped.is_empty() {
        let list: Vec<String> = hla
            .untyped
            .iter()
            .map(|(locus, abs)| format!("{} (anti-{})", locus.as_str(), abs.join(", anti-")))
            .collect();
        find(
            codes::HLA_UNTYPED_LOCUS,
            tier_of(policy.compat.hla_untyped),
            format!(
                "the donor is not HLA-typed at the loci of the patient's antibodies: {}",
                list.join("; ")
            ),
        );
    }
    if !hla.unresolved.is_empty() {
        find(
            codes::HLA_ANTIBODY_UNRESOLVED,
            tier_of(policy.compat.hla_untyped),
            format!(
                "patient HLA antibodies that cannot be checked against a donor typing: {}",
                hla.unresolved.join(", ")
            ),
        );
    }
    // A typing none of whose alleles can be read is no typing.
    let typed = donor.is_some_and(|d| HlaLocus::ALL.iter().any(|&l| typed_at(d, l)));
    if ctx.requirements.hla_compatible && (!typed || !hla.fully_checked()) {
        let why = if !typed {
            "the donor is not HLA-typed".to_owned()
        } else {
            "the donor typing cannot clear every antibody of the patient".to_owned()
        };
        find(
            codes::HLA_TYPING_REQUIRED,
            Block,
            format!("the request requires HLA-compatible units; {why}"),
        );
    }

    let transfusion = ctx.planned_at.max(now);
    if patient.granulocyte_antibodies
        && best_compatible(ctx.crossmatches, CrossmatchKind::Leukocyte).is_none_or(|v| v < transfusion)
    {
        find(
            codes::HNA_ANTIBODIES,
            tier_of(policy.compat.hna_antibodies),
            "the patient has granulocyte (HNA) antibodies and no compatible leukocyte crossmatch valid at the transfusion is recorded"
                .to_owned(),
        );
    }

    let standing: Vec<String> = ctx
        .crossmatches
        .iter()
        .filter(|x| !x.compatible && !x.resolved)
        .map(|x| format!("{} crossmatch {}", x.kind.as_str().replace('_', "-"), x.id))
        .collect();
    if !standing.is_empty() {
        find(
            codes::CROSSMATCH_INCOMPATIBLE,
            Block,
            format!(
                "incompatible {} stands until a medical director resolves it",
                standing.join(", ")
            ),
        );
    }
    match best_compatible(ctx.crossmatches, CrossmatchKind::RedCell) {
        Some(valid_until) if valid_until < transfusion => {
            let when = if valid_until < now {
                "it has already expired".to_owned()
            } else {
                format!("transfusion is planned at {}", fmt_time(ctx.planned_at))
            };
            find(
                codes::SAMPLE_EXPIRED,
                Block,
                format!("the crossmatch sample is valid until {}; {when}", fmt_time(valid_until)),
            );
        }
        None if stage == Stage::Issue => find(
            codes::CROSSMATCH_MISSING,
            Block,
            "no compatible red-cell crossmatch against a patient sample".to_owned(),
        ),
        _ => {}
    }

    if now >= unit.expires_at {
        find(
            codes::UNIT_EXPIRED,
            Block,
            format!("unit expired at {}", fmt_time(unit.expires_at)),
        );
    }
    match stage {
        Stage::Allocation => {
            if unit.expires_at <= ctx.planned_at {
                find(
                    codes::EXPIRES_BEFORE_NEEDED,
                    Block,
                    format!(
                        "unit expires at {}, not after it is needed at {}",
                        fmt_time(unit.expires_at),
                        fmt_time(ctx.planned_at)
                    ),
                );
            }
            let minimum = policy.unit.min_remaining_hours_to_allocate;
            let left = unit.expires_at.signed_duration_since(transfusion);
            if left < hours(minimum) {
                find(
                    codes::INSUFFICIENT_SHELF_LIFE,
                    Block,
                    format!(
                        "unit has {} of shelf life left at the transfusion ({}); at least {minimum} h are needed to allocate",
                        fmt_span(left),
                        fmt_time(transfusion)
                    ),
                );
            }
        }
        Stage::Issue => {
            let minimum = policy.unit.min_remaining_minutes_at_issue;
            let left = unit.expires_at.signed_duration_since(now);
            if left < minutes(minimum) {
                find(
                    codes::INSUFFICIENT_SHELF_LIFE,
                    Block,
                    format!(
                        "unit has {} of shelf life left; at least {minimum} min are needed to issue",
                        fmt_span(left)
                    ),
                );
            }
            if !unit.irradiated {
                find(codes::NOT_IRRADIATED, Block, "unit has not been irradiated".to_owned());
            }
            if !unit.released {
                find(codes::NOT_RELEASED, Block, "unit has not been released".to_owned());
            }
        }
    }
    if unit.reactive {
        find(
            codes::REACTIVE_MARKER,
            Block,
            "an infectious-disease marker of the unit is reactive".to_owned(),
        );
    }
    if unit.excursion_pending {
        find(
            codes::EXCURSION_REVIEW,
            Block,
            "a storage temperature excursion of the unit awaits a medical director's disposition".to_owned(),
        );
    }
    if let Some(reserved) = unit.reserved_for
        && ctx.request_id != Some(reserved)
    {
        find(
            codes::RESERVED_FOR_REQUEST,
            Block,
            format!("the unit was released in an emergency for request {reserved} only"),
        );
    }

    let target = policy.recipient.dose_target_per_kg;
    let dose = dose_per_kg(unit.granulocyte_count, patient.weight_kg);
    let day_dose = (ctx.day_granulocytes > 0.0)
        .then(|| dose_per_kg(unit.granulocyte_count + ctx.day_granulocytes, patient.weight_kg))
        .flatten();
    if let Some(dose) = dose
        && dose < target
    {
        let day = match day_dose {
            Some(d) => format!("; {d:.2e} cells/kg with the other units due that day"),
            None => String::new(),
        };
        find(
            codes::DOSE_BELOW_TARGET,
            Info,
            format!(
                "dose {dose:.2e} cells/kg ({:.2e} granulocytes for {} kg) is below the target of {target:.2e} cells/kg{day}",
                unit.granulocyte_count, patient.weight_kg
            ),
        );
    }

    Assessment {
        verdict: verdict_of(&reasons),
        reasons,
        anti_d_prophylaxis,
        dose_per_kg: dose,
        day_dose_per_kg: day_dose.or(dose),
    }
}

/// What allocation (or issue) of a unit still needs, given the codes a staff member
/// acknowledged and whether an authorisation is recorded. `Ok` when the findings' tiers are
/// met; `Err` names the missing tier and the findings that need it.
pub fn tiers_met<'a>(
    findings: impl IntoIterator<Item = &'a Finding>,
    acknowledged: &BTreeSet<String>,
    authorised: bool,
) -> Result<(), (Severity, Vec<&'a Finding>)> {
    let mut missing: Vec<&Finding> = Vec::new();
    let mut tier = Severity::Info;
    for f in findings {
        let met = match f.severity {
            Severity::Info => true,
            Severity::Acknowledge => acknowledged.contains(f.code),
            Severity::Authorise => authorised,
            Severity::Block => false,
        };
        if !met {
            if f.severity.rank() > tier.rank() {
                tier = f.severity;
            }
            missing.push(f);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err((tier, missing))
    }
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

    /// The request units are judged for.
    const REQUEST: i64 = 41;

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
            ..Hla::default()
        }
    }

    fn strings(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A confirmed group A RhD-positive CMV-positive man of 70 kg, not alloimmunised.
    fn patient() -> PatientFacts {
        PatientFacts {
            abo: Typed::Confirmed(Abo::A),
            rhd: Typed::Confirmed(Rhd::Positive),
            sex: Sex::Male,
            childbearing_potential: false,
            cmv: Cmv::Positive,
            weight_kg: 70.0,
            hla_antibodies: Vec::new(),
            granulocyte_antibodies: false,
        }
    }

    fn group(abo: Abo, rhd: Rhd) -> PatientFacts {
        PatientFacts {
            abo: Typed::Confirmed(abo),
            rhd: Typed::Confirmed(rhd),
            ..patient()
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
            reactive: false,
            excursion_pending: false,
            reserved_for: None,
            expires_at: now() + TimeDelta::hours(20),
            granulocyte_count: 2.0 * Policy::default().recipient.dose_target_per_kg * 70.0,
        }
    }

    fn xm() -> CrossmatchFacts {
        CrossmatchFacts {
            id: 1,
            kind: CrossmatchKind::RedCell,
            compatible: true,
            resolved: false,
            sample_valid_until: planned() + TimeDelta::hours(24),
        }
    }

    fn run(
        p: &PatientFacts,
        u: &UnitFacts,
        xms: &[CrossmatchFacts],
        requirements: Requirements,
        planned_at: DateTime<Utc>,
        stage: Stage,
        policy: &Policy,
    ) -> Assessment {
        let ctx = Context {
            crossmatches: xms,
            request_id: Some(REQUEST),
            day_granulocytes: 0.0,
            requirements,
            planned_at,
            now: now(),
            stage,
        };
        assess(p, u, &ctx, policy)
    }

    fn at(stage: Stage, p: &PatientFacts, u: &UnitFacts, policy: &Policy) -> Assessment {
        run(p, u, &[xm()], Requirements::default(), planned(), stage, policy)
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

    /// What each tier needs, for every combination of acknowledged codes and an authorisation.
    #[test]
    fn tiers_are_met_exactly_by_what_they_need() {
        use Severity::{Acknowledge, Authorise, Block, Info};
        let f = |code: &'static str, severity| Finding {
            code,
            severity,
            message: String::new(),
        };
        let acked = |codes: &[&str]| codes.iter().map(|c| (*c).to_owned()).collect::<BTreeSet<String>>();
        let (info, ack, auth, block) = (
            f(DOSE_BELOW_TARGET, Info),
            f(RHD_MISMATCH, Acknowledge),
            f(CMV_MISMATCH, Authorise),
            f(ABO_INCOMPATIBLE, Block),
        );
        // (findings, acknowledged, authorised) → None when met, else (tier, codes missing).
        type Missing = Option<(Severity, Vec<&'static str>)>;
        let cases: Vec<(Vec<&Finding>, BTreeSet<String>, bool, Missing)> = vec![
            (vec![], acked(&[]), false, None),
            (vec![&info], acked(&[]), false, None),
            (vec![&ack], acked(&[]), false, Some((Acknowledge, vec![RHD_MISMATCH]))),
            (vec![&ack], acked(&[RHD_MISMATCH]), false, None),
            // Acknowledging another code, or authorising, does not acknowledge this one.
            (
                vec![&ack],
                acked(&[CMV_MISMATCH]),
                true,
                Some((Acknowledge, vec![RHD_MISMATCH])),
            ),
            (vec![&auth], acked(&[]), false, Some((Authorise, vec![CMV_MISMATCH]))),
            (
                vec![&auth],
                acked(&[CMV_MISMATCH]),
                false,
                Some((Authorise, vec![CMV_MISMATCH])),
            ),
            (vec![&auth], acked(&[]), true, None),
            (
                vec![&ack, &auth],
                acked(&[]),
                true,
                Some((Acknowledge, vec![RHD_MISMATCH])),
            ),
            (
                vec![&ack, &auth],
                acked(&[]),
                false,
                Some((Authorise, vec![RHD_MISMATCH, CMV_MISMATCH])),
            ),
            (vec![&info, &ack, &auth], acked(&[RHD_MISMATCH]), true, None),
            (
                vec![&block],
                acked(&[ABO_INCOMPATIBLE]),
                true,
                Some((Block, vec![ABO_INCOMPATIBLE])),
            ),
            (
                vec![&ack, &block],
                acked(&[RHD_MISMATCH]),
                true,
                Some((Block, vec![ABO_INCOMPATIBLE])),
            ),
        ];
        for (findings, acknowledged, authorised, expected) in cases {
            let got = tiers_met(findings.iter().copied(), &acknowledged, authorised)
                .err()
                .map(|(tier, missing)| (tier, missing.iter().map(|m| m.code).collect::<Vec<_>>()));
            assert_eq!(got, expected, "{findings:?} {acknowledged:?} {authorised}");
        }
    }

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
                    anti_d_prophylaxis: false,
                    dose_per_kg: Some(2.0 * Policy::default().recipient.dose_target_per_kg),
                    day_dose_per_kg: Some(2.0 * Policy::default().recipient.dose_target_per_kg),
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

    /// Every confirmed ABO/RhD patient × unit pair. `C` compatible, `W` RhD warning only, `X`
    /// ABO block only, `Y` ABO block and RhD warning.
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
                let p = group(p_abo, p_rhd);
                let u = UnitFacts {
                    abo: u_abo,
                    rhd: u_rhd,
                    ..unit()
                };
                let (codes, verdict): (Vec<(&str, Severity)>, Verdict) = match expected {
                    'C' => (vec![], Verdict::Compatible),
                    'W' => (
                        vec![(RHD_MISMATCH, Severity::Acknowledge)],
                        Verdict::CompatibleWithWarnings,
                    ),
                    'X' => (vec![(ABO_INCOMPATIBLE, Severity::Block)], Verdict::Incompatible),
                    _ => (
                        vec![
                            (ABO_INCOMPATIBLE, Severity::Block),
                            (RHD_MISMATCH, Severity::Acknowledge),
                        ],
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

    /// The group of record (domain.md §3): an ABO group that is not confirmed, or typings that
    /// disagree, leave only group O units; an unconfirmed RhD type counts as negative.
    #[test]
    fn unconfirmed_and_discordant_groups_take_group_o_units_only() {
        let abo_states = [
            (Typed::Untyped, Some(ABO_UNCONFIRMED)),
            (Typed::Unconfirmed(Abo::A), Some(ABO_UNCONFIRMED)),
            (Typed::Unconfirmed(Abo::Ab), Some(ABO_UNCONFIRMED)),
            (Typed::Discordant, Some(ABO_DISCORDANT)),
        ];
        for (abo, code) in abo_states {
            for u_abo in GROUPS {
                let p = PatientFacts { abo, ..patient() };
                let a = alloc(&p, &UnitFacts { abo: u_abo, ..unit() });
                let expected: Vec<(&str, Severity)> = match code {
                    Some(code) if u_abo != Abo::O => vec![(code, Severity::Block)],
                    _ => vec![],
                };
                assert_eq!(severities(&a), expected, "{abo:?} unit {u_abo}");
            }
        }
        // RhD: only a confirmed positive type takes RhD-positive units without a finding.
        let rhd_states = [
            (Typed::Confirmed(Rhd::Positive), false, ""),
            (Typed::Confirmed(Rhd::Negative), true, "RhD-negative patient"),
            (Typed::Unconfirmed(Rhd::Positive), true, "not confirmed"),
            (Typed::Untyped, true, "not confirmed"),
            (Typed::Discordant, true, "typings disagree"),
        ];
        for (rhd, mismatch, text) in rhd_states {
            let p = PatientFacts { rhd, ..patient() };
            let a = alloc(&p, &unit());
            assert_eq!(a.has(RHD_MISMATCH), mismatch, "{rhd:?}");
            if mismatch {
                assert!(finding(&a, RHD_MISMATCH).message.contains(text), "{rhd:?}");
            }
            let neg = alloc(
                &p,
                &UnitFacts {
                    rhd: Rhd::Negative,
                    ..unit()
                },
            );
            assert!(neg.reasons.is_empty(), "{rhd:?}: RhD-negative units always fit");
        }
        // An untyped woman of childbearing potential gets the anti-D flag for an RhD-positive unit.
        let p = PatientFacts {
            abo: Typed::Untyped,
            rhd: Typed::Untyped,
            sex: Sex::Female,
            childbearing_potential: true,
            ..patient()
        };
        let a = alloc(&p, &UnitFacts { abo: Abo::O, ..unit() });
        assert!(a.anti_d_prophylaxis);
        assert_eq!(a.codes(), vec![RHD_MISMATCH]);
        // Ranking prefers ABO-identical only against a confirmed group.
        let u = UnitFacts { abo: Abo::O, ..unit() };
        let confirmed_o = group(Abo::O, Rhd::Positive);
        let unconfirmed_o = PatientFacts {
            abo: Typed::Unconfirmed(Abo::O),
            ..confirmed_o.clone()
        };
        assert!(score_of(&confirmed_o, &u) > score_of(&unconfirmed_o, &u));
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
                let p = group(p_abo, Rhd::Positive);
                let u = UnitFacts { abo: u_abo, ..unit() };
                let (codes, verdict): (Vec<(&str, Severity)>, Verdict) = match expected {
                    'C' => (vec![], Verdict::Compatible),
                    'M' => (
                        vec![(MINOR_ABO_INCOMPATIBLE, Severity::Acknowledge)],
                        Verdict::CompatibleWithWarnings,
                    ),
                    'X' => (vec![(ABO_INCOMPATIBLE, Severity::Block)], Verdict::Incompatible),
                    _ => (
                        vec![
                            (ABO_INCOMPATIBLE, Severity::Block),
                            (MINOR_ABO_INCOMPATIBLE, Severity::Acknowledge),
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
            &group(Abo::A, Rhd::Positive),
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
            rhd: Typed::Confirmed(Rhd::Negative),
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
        let mut always = Policy::default();
        always.compat.rhd_mismatch = RhdMismatch::Authorise;
        for (sex, cbp, flag) in cases {
            let p = neg(sex, cbp);
            let warn = alloc(&p, &pos_unit);
            // A female of childbearing potential needs an authorisation; anyone else an
            // acknowledgement.
            let tier = if flag {
                Severity::Authorise
            } else {
                Severity::Acknowledge
            };
            assert_eq!(severities(&warn), vec![(RHD_MISMATCH, tier)], "{sex} {cbp}");
            let authorised = at(Stage::Allocation, &p, &pos_unit, &always);
            assert_eq!(severities(&authorised), vec![(RHD_MISMATCH, Severity::Authorise)]);
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
    fn cmv_matrix_policy_switches_and_unknown_patients() {
        let policies = [
            (CmvMismatch::Authorise, Some(Severity::Authorise)),
            (CmvMismatch::Acknowledge, Some(Severity::Acknowledge)),
            (CmvMismatch::Block, Some(Severity::Block)),
            (CmvMismatch::Off, None),
        ];
        for unknown_as_negative in [true, false] {
            for (setting, severity) in policies {
                let mut policy = Policy::default();
                policy.compat.cmv_mismatch = setting;
                policy.compat.cmv_unknown_as_negative = unknown_as_negative;
                for p_cmv in Cmv::ALL {
                    for u_cmv in Cmv::ALL {
                        let p = PatientFacts {
                            cmv: *p_cmv,
                            ..patient()
                        };
                        let u = UnitFacts { cmv: *u_cmv, ..unit() };
                        let a = at(Stage::Allocation, &p, &u, &policy);
                        let negative = *p_cmv == Cmv::Negative || (*p_cmv == Cmv::Unknown && unknown_as_negative);
                        let mismatch = negative && *u_cmv != Cmv::Negative;
                        let expected: Vec<(&str, Severity)> = match (mismatch, severity) {
                            (true, Some(s)) => vec![(CMV_MISMATCH, s)],
                            _ => vec![],
                        };
                        let case = format!("{setting:?} {unknown_as_negative} patient {p_cmv} unit {u_cmv}");
                        assert_eq!(severities(&a), expected, "{case}");
                        assert_eq!(a.verdict, verdict_of(&a.reasons));
                    }
                }
            }
        }
        let a = alloc(
            &PatientFacts {
                cmv: Cmv::Unknown,
                ..patient()
            },
            &UnitFacts {
                cmv: Cmv::Positive,
                ..unit()
            },
        );
        assert!(finding(&a, CMV_MISMATCH).message.contains("unknown CMV serostatus"));
    }

    /// A request's requirements block the units that violate them, whatever the patient's data.
    #[test]
    fn request_requirements_bind_the_unit() {
        let strict = Requirements {
            cmv_negative: true,
            hla_compatible: false,
        };
        for u_cmv in Cmv::ALL {
            let u = UnitFacts { cmv: *u_cmv, ..unit() };
            let a = run(
                &patient(),
                &u,
                &[xm()],
                strict,
                planned(),
                Stage::Allocation,
                &Policy::default(),
            );
            let expected: Vec<(&str, Severity)> = if *u_cmv == Cmv::Negative {
                vec![]
            } else {
                vec![(CMV_NEGATIVE_REQUIRED, Severity::Block)]
            };
            assert_eq!(severities(&a), expected, "unit {u_cmv}");
        }
        let hla = Requirements {
            cmv_negative: false,
            hla_compatible: true,
        };
        // (patient antibodies, donor typing, blocked)
        let cases: [(&[&str], Option<Hla>, bool); 7] = [
            (&[], None, true),
            (&[], Some(typed(&["A*01"], &[], &[], &[])), false),
            // A typing that cannot be read clears nothing.
            (&[], Some(typed(&["garbage"], &[], &[], &[])), true),
            (&["A2"], Some(typed(&["A*01"], &["B*08"], &[], &[])), false),
            (&["DRB1*04"], Some(typed(&["A*01"], &["B*08"], &[], &[])), true),
            (&["DRB1*04"], Some(typed(&["A*01"], &[], &[], &["DRB1*15"])), false),
            (&["weak reactivity"], Some(typed(&["A*01"], &[], &[], &[])), true),
        ];
        for (antibodies, donor_hla, blocked) in cases {
            let p = PatientFacts {
                hla_antibodies: strings(antibodies),
                ..patient()
            };
            let u = UnitFacts {
                donor_hla: donor_hla.clone(),
                ..unit()
            };
            let a = run(&p, &u, &[xm()], hla, planned(), Stage::Issue, &Policy::default());
            assert_eq!(
                a.has(HLA_TYPING_REQUIRED),
                blocked,
                "{antibodies:?} {donor_hla:?}: {:?}",
                a.codes()
            );
        }
    }

    #[test]
    fn antibody_specificities_parse_to_loci_and_antigens() {
        use HlaLocus::*;
        let ag = |locus, group| Some(HlaAntigen { locus, group });
        let cases = [
            ("A2", Some(A), ag(A, 2)),
            ("A*02", Some(A), ag(A, 2)),
            ("A*02:01", Some(A), ag(A, 2)),
            ("A*02:01:01:02L", Some(A), ag(A, 2)),
            (" a2 ", Some(A), ag(A, 2)),
            ("HLA-A2", Some(A), ag(A, 2)),
            ("anti-A2", Some(A), ag(A, 2)),
            ("Anti-HLA-A*02", Some(A), ag(A, 2)),
            ("A24", Some(A), ag(A, 24)),
            ("B7", Some(B), ag(B, 7)),
            ("B*07:02", Some(B), ag(B, 7)),
            ("Cw7", Some(C), ag(C, 7)),
            ("C7", Some(C), ag(C, 7)),
            ("C*07", Some(C), ag(C, 7)),
            ("DR15", Some(Drb1), ag(Drb1, 15)),
            ("DRB1*15", Some(Drb1), ag(Drb1, 15)),
            ("drb1*15:01", Some(Drb1), ag(Drb1, 15)),
            ("DRB1*04", Some(Drb1), ag(Drb1, 4)),
            ("DQ2", Some(Dqb1), ag(Dqb1, 2)),
            ("DQ7", Some(Dqb1), ag(Dqb1, 3)),
            ("DQ9", Some(Dqb1), ag(Dqb1, 3)),
            ("DQB1*06:02", Some(Dqb1), ag(Dqb1, 6)),
            ("DP1", Some(Dpb1), ag(Dpb1, 1)),
            ("DPw4", Some(Dpb1), ag(Dpb1, 4)),
            ("DPB1*04:01", Some(Dpb1), ag(Dpb1, 4)),
            ("B*103", Some(B), ag(B, 103)),
            // A locus but no readable antigen.
            ("A*2", Some(A), None),
            ("A*0201", Some(A), None),
            ("A*02:", Some(A), None),
            ("A0", Some(A), None),
            ("A1234", Some(A), None),
            // Outside the typed loci, or no locus at all.
            ("Bw4", None, None),
            ("Bw6", None, None),
            ("DR51", None, None),
            ("DR53", None, None),
            ("DRB3*01", None, None),
            ("DQA1*05", None, None),
            ("DPA1*01", None, None),
            ("DR*15", None, None),
            ("Cw*07", None, None),
            ("DRB115", None, None),
            ("A", None, None),
            ("A2a", Some(A), None),
            ("", None, None),
            ("weak reactivity", None, None),
        ];
        for (text, locus, antigen) in cases {
            assert_eq!(antibody_locus(text), locus, "{text:?} locus");
            assert_eq!(antibody_antigen(text), antigen, "{text:?} antigen");
        }
        assert_eq!(allele_antigen(A, " a*02:01 "), ag(A, 2));
        assert_eq!(allele_antigen(A, "B*07:02"), None);
        assert_eq!(allele_antigen(A, "A2"), None);
        assert_eq!(allele_antigen(Dqb1, "DQB1*03:01"), ag(Dqb1, 3));
        assert_eq!(HlaAntigen { locus: Drb1, group: 4 }.to_string(), "DRB1*04");
    }

    #[test]
    fn hla_antibody_matching_variants() {
        let dq = |x: &[&str]| Hla {
            dqb1: strings(x),
            a: strings(&["A*01"]),
            ..Hla::default()
        };
        let cases: [(&str, Hla, bool); 18] = [
            ("A2", typed(&["A*02:01"], &[], &[], &[]), true),
            ("A*02", typed(&["A*02:01"], &[], &[], &[]), true),
            ("A*02:01", typed(&["A*02:06"], &[], &[], &[]), true),
            ("A2", typed(&["A*03"], &[], &[], &[]), false),
            ("A2", typed(&["A*24:02"], &[], &[], &[]), false),
            ("A24", typed(&["A*02:01", "A*24:02"], &[], &[], &[]), true),
            ("B7", typed(&[], &["B*07:02"], &[], &[]), true),
            ("A7", typed(&["A*01"], &["B*07:02"], &[], &[]), false),
            ("DR15", typed(&[], &[], &[], &["DRB1*15:01"]), true),
            ("DRB1*15", typed(&[], &[], &[], &["drb1*15:01"]), true),
            ("DR15", typed(&[], &[], &[], &["DRB1*01:01"]), false),
            ("Cw7", typed(&[], &[], &["C*07:01"], &[]), true),
            ("C*07", typed(&[], &[], &["C*07:02"], &[]), true),
            ("Cw7", typed(&[], &["B*07:02"], &["C*01"], &[]), false),
            ("A2", typed(&["garbage", "A*02:01N"], &[], &[], &[]), true),
            ("DQ7", dq(&["DQB1*03:01"]), true),
            ("DQ2", dq(&["DQB1*03:01"]), false),
            ("DQB1*06", dq(&["DQB1*06:02"]), true),
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
            hla_antibodies: strings(&["A1", "B8", "DR4", "A*03:01"]),
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

    /// An antibody at a locus where the donor is untyped, or one that cannot be read, is a
    /// finding: never silence.
    #[test]
    fn untyped_loci_and_unresolved_antibodies_are_findings() {
        let a_and_b = typed(&["A*01:01"], &["B*08:01"], &[], &[]);
        // (HLA antibodies, donor typing, expected codes)
        let cases: [(&[&str], Option<Hla>, &[&str]); 9] = [
            (&["DRB1*04"], Some(a_and_b.clone()), &[HLA_UNTYPED_LOCUS]),
            (&["DRB1*04", "A2"], Some(a_and_b.clone()), &[HLA_UNTYPED_LOCUS]),
            (&["A2"], None, &[HLA_UNTYPED_LOCUS]),
            (&["A2"], Some(Hla::default()), &[HLA_UNTYPED_LOCUS]),
            (&["Bw4"], Some(a_and_b.clone()), &[HLA_ANTIBODY_UNRESOLVED]),
            (&["A*2"], Some(a_and_b.clone()), &[HLA_ANTIBODY_UNRESOLVED]),
            (&["DQ2", "Bw4"], None, &[HLA_UNTYPED_LOCUS, HLA_ANTIBODY_UNRESOLVED]),
            (&[], None, &[]),
            (&["  "], None, &[]),
        ];
        for (antibodies, donor_hla, expected) in cases {
            let p = PatientFacts {
                hla_antibodies: strings(antibodies),
                ..patient()
            };
            let u = UnitFacts {
                donor_hla: donor_hla.clone(),
                ..unit()
            };
            let a = alloc(&p, &u);
            assert_eq!(a.codes(), expected.to_vec(), "{antibodies:?} {donor_hla:?}");
            assert!(a.reasons.iter().all(|r| r.severity == Severity::Authorise));
        }
        let p = PatientFacts {
            hla_antibodies: strings(&["DRB1*04", "DQ2", "A2"]),
            ..patient()
        };
        let a = alloc(
            &p,
            &UnitFacts {
                donor_hla: Some(a_and_b),
                ..unit()
            },
        );
        assert_eq!(
            finding(&a, HLA_UNTYPED_LOCUS).message,
            "the donor is not HLA-typed at the loci of the patient's antibodies: DRB1 (anti-DRB1*04); DQB1 (anti-DQ2)"
        );
    }

    #[test]
    fn granulocyte_antibodies_need_a_leukocyte_crossmatch() {
        let p = PatientFacts {
            granulocyte_antibodies: true,
            ..patient()
        };
        let leuko = |compatible, resolved, hours_valid| CrossmatchFacts {
            id: 7,
            kind: CrossmatchKind::Leukocyte,
            compatible,
            resolved,
            sample_valid_until: planned() + TimeDelta::hours(hours_valid),
        };
        let codes = |xms: &[CrossmatchFacts]| {
            run(
                &p,
                &unit(),
                xms,
                Requirements::default(),
                planned(),
                Stage::Allocation,
                &Policy::default(),
            )
            .codes()
        };
        assert_eq!(codes(&[xm()]), vec![HNA_ANTIBODIES], "a red-cell crossmatch is not one");
        assert_eq!(codes(&[xm(), leuko(true, false, 1)]), Vec::<&str>::new());
        assert_eq!(
            codes(&[xm(), leuko(true, false, 0)]),
            Vec::<&str>::new(),
            "valid exactly then"
        );
        assert_eq!(
            codes(&[xm(), leuko(true, false, -1)]),
            vec![HNA_ANTIBODIES],
            "sample expired"
        );
        assert_eq!(
            codes(&[xm(), leuko(false, false, 1)]),
            vec![HNA_ANTIBODIES, CROSSMATCH_INCOMPATIBLE]
        );
        assert_eq!(codes(&[xm(), leuko(false, true, 1)]), vec![HNA_ANTIBODIES]);
    }

    #[test]
    fn only_a_standing_compatible_crossmatch_counts_as_crossmatched() {
        let x = |compatible, resolved| CrossmatchFacts {
            id: 1,
            kind: CrossmatchKind::RedCell,
            compatible,
            resolved,
            sample_valid_until: Utc::now(),
        };
        for (list, expected) in [
            (vec![], false),
            (vec![x(true, false)], true),
            (vec![x(false, false)], false),
            (vec![x(false, true)], false),
            (vec![x(true, false), x(false, false)], false),
            (vec![x(true, false), x(false, true)], true),
        ] {
            assert_eq!(crossmatched(&list), expected, "{list:?}");
        }
    }

    #[test]
    fn crossmatch_rules_by_stage() {
        let (p, u, policy) = (patient(), unit(), Policy::default());
        let bad = CrossmatchFacts {
            id: 2,
            compatible: false,
            ..xm()
        };
        let later_good = CrossmatchFacts { id: 3, ..xm() };
        let resolved = CrossmatchFacts {
            resolved: true,
            ..bad.clone()
        };
        let codes = |xms: &[CrossmatchFacts], stage| {
            run(&p, &u, xms, Requirements::default(), planned(), stage, &policy).codes()
        };
        assert_eq!(codes(&[], Stage::Allocation), Vec::<&str>::new());
        assert_eq!(codes(&[], Stage::Issue), vec![CROSSMATCH_MISSING]);
        for stage in Stage::ALL {
            assert_eq!(codes(std::slice::from_ref(&bad), *stage), {
                let mut c = vec![CROSSMATCH_INCOMPATIBLE];
                if *stage == Stage::Issue {
                    c.push(CROSSMATCH_MISSING);
                }
                c
            });
            // A later compatible result never supersedes an incompatible one.
            assert_eq!(
                codes(&[bad.clone(), later_good.clone()], *stage),
                vec![CROSSMATCH_INCOMPATIBLE],
                "{stage}"
            );
            // Once a medical director resolved it, the compatible one counts.
            assert_eq!(
                codes(&[resolved.clone(), later_good.clone()], *stage),
                Vec::<&str>::new()
            );
        }
        assert_eq!(codes(&[resolved], Stage::Issue), vec![CROSSMATCH_MISSING]);
        assert_eq!(codes(&[xm()], Stage::Issue), Vec::<&str>::new());
        let a = run(
            &p,
            &u,
            &[bad, later_good],
            Requirements::default(),
            planned(),
            Stage::Issue,
            &policy,
        );
        assert!(
            finding(&a, CROSSMATCH_INCOMPATIBLE)
                .message
                .contains("red-cell crossmatch 2")
        );
    }

    #[test]
    fn sample_validity_boundary_at_planned_time() {
        let (p, u, policy) = (patient(), unit(), Policy::default());
        for stage in Stage::ALL {
            let check = |valid_until: DateTime<Utc>, planned_at: DateTime<Utc>| {
                let xm = CrossmatchFacts {
                    sample_valid_until: valid_until,
                    ..xm()
                };
                run(&p, &u, &[xm], Requirements::default(), planned_at, *stage, &policy)
            };
            let a = check(planned(), planned());
            assert!(!a.has(SAMPLE_EXPIRED), "{stage}: valid exactly at planned");
            let a = check(planned() - TimeDelta::seconds(1), planned());
            assert!(a.has(SAMPLE_EXPIRED), "{stage}");
            assert!(
                finding(&a, SAMPLE_EXPIRED)
                    .message
                    .contains("transfusion is planned at 2025-06-15 18:00:00 UTC")
            );
            // A transfusion planned in the past happens now at the earliest.
            let late = now() - TimeDelta::hours(1);
            assert!(!check(now(), late).has(SAMPLE_EXPIRED), "{stage}");
            let a = check(now() - TimeDelta::seconds(1), late);
            assert!(finding(&a, SAMPLE_EXPIRED).message.contains("already expired"));
        }
        // The longest-valid compatible sample counts.
        let short = CrossmatchFacts {
            id: 4,
            sample_valid_until: now(),
            ..xm()
        };
        let a = run(
            &p,
            &u,
            &[short, xm()],
            Requirements::default(),
            planned(),
            Stage::Allocation,
            &policy,
        );
        assert!(a.reasons.is_empty());
    }

    #[test]
    fn unit_expiry_boundary() {
        for stage in Stage::ALL {
            let check = |expires_at: DateTime<Utc>| {
                let u = UnitFacts { expires_at, ..unit() };
                run(
                    &patient(),
                    &u,
                    &[xm()],
                    Requirements::default(),
                    now(),
                    *stage,
                    &Policy::default(),
                )
                .codes()
            };
            assert_eq!(
                check(now()).first(),
                Some(&UNIT_EXPIRED),
                "{stage}: expired exactly at now"
            );
            assert!(!check(now() + TimeDelta::seconds(1)).contains(&UNIT_EXPIRED), "{stage}");
        }
        let u = UnitFacts {
            expires_at: now(),
            ..unit()
        };
        assert_eq!(
            issue(&patient(), &u).codes(),
            vec![UNIT_EXPIRED, INSUFFICIENT_SHELF_LIFE]
        );
        assert_eq!(
            alloc(&patient(), &u).codes(),
            vec![UNIT_EXPIRED, EXPIRES_BEFORE_NEEDED, INSUFFICIENT_SHELF_LIFE]
        );
    }

    /// domain.md §3: allocatable only if `expires_at ≥ max(now, needed_by) + margin`.
    #[test]
    fn allocation_margin_counts_from_the_transfusion() {
        let policy = Policy::default();
        let margin = TimeDelta::hours(i64::from(policy.unit.min_remaining_hours_to_allocate));
        let check = |expires_at: DateTime<Utc>, planned_at: DateTime<Utc>| {
            let u = UnitFacts { expires_at, ..unit() };
            let xm = CrossmatchFacts {
                sample_valid_until: planned_at.max(now()) + TimeDelta::days(2),
                ..xm()
            };
            run(
                &patient(),
                &u,
                &[xm],
                Requirements::default(),
                planned_at,
                Stage::Allocation,
                &policy,
            )
        };
        // Needed in 6 h: the margin counts from then, not from now.
        assert!(check(planned() + margin, planned()).reasons.is_empty(), "exactly met");
        let a = check(planned() + margin - TimeDelta::minutes(1), planned());
        assert_eq!(severities(&a), vec![(INSUFFICIENT_SHELF_LIFE, Severity::Block)]);
        assert!(finding(&a, INSUFFICIENT_SHELF_LIFE).message.contains("1 h 59 min"));
        // Needed already: it counts from now.
        let past = now() - TimeDelta::hours(3);
        let xm_now = |expires_at| {
            let u = UnitFacts { expires_at, ..unit() };
            run(
                &patient(),
                &u,
                &[xm()],
                Requirements::default(),
                past,
                Stage::Allocation,
                &policy,
            )
        };
        assert!(xm_now(now() + margin).reasons.is_empty(), "exactly met from now");
        assert_eq!(
            xm_now(now() + margin - TimeDelta::minutes(1)).codes(),
            vec![INSUFFICIENT_SHELF_LIFE]
        );
        // Expiring at the planned time is also too late to give it.
        let a = check(planned(), planned());
        assert_eq!(a.codes(), vec![EXPIRES_BEFORE_NEEDED, INSUFFICIENT_SHELF_LIFE]);
        assert_eq!(
            finding(&a, EXPIRES_BEFORE_NEEDED).message,
            "unit expires at 2025-06-15 18:00:00 UTC, not after it is needed at 2025-06-15 18:00:00 UTC"
        );
        let mut longer = Policy::default();
        longer.unit.min_remaining_hours_to_allocate = 15;
        let a = at(Stage::Allocation, &patient(), &unit(), &longer);
        assert_eq!(a.codes(), vec![INSUFFICIENT_SHELF_LIFE]);
        assert!(finding(&a, INSUFFICIENT_SHELF_LIFE).message.contains("at least 15 h"));
    }

    #[test]
    fn issue_margin_is_checked_again() {
        let policy = Policy::default();
        let margin = TimeDelta::minutes(i64::from(policy.unit.min_remaining_minutes_at_issue));
        let check = |left: TimeDelta| {
            let u = UnitFacts {
                expires_at: now() + left,
                ..unit()
            };
            run(
                &patient(),
                &u,
                &[xm()],
                Requirements::default(),
                now(),
                Stage::Issue,
                &policy,
            )
        };
        assert!(check(margin).reasons.is_empty(), "exactly met");
        let a = check(margin - TimeDelta::minutes(1));
        assert_eq!(severities(&a), vec![(INSUFFICIENT_SHELF_LIFE, Severity::Block)]);
        assert!(finding(&a, INSUFFICIENT_SHELF_LIFE).message.contains("0 h 29 min"));
        assert!(finding(&a, INSUFFICIENT_SHELF_LIFE).message.contains("30 min"));
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
    fn a_reactive_or_unreviewed_unit_is_blocked_at_every_stage() {
        let reactive = UnitFacts {
            reactive: true,
            ..unit()
        };
        let excursion = UnitFacts {
            excursion_pending: true,
            ..unit()
        };
        for stage in Stage::ALL {
            let a = at(*stage, &patient(), &reactive, &Policy::default());
            assert_eq!(severities(&a), vec![(REACTIVE_MARKER, Severity::Block)], "{stage}");
            let a = at(*stage, &patient(), &excursion, &Policy::default());
            assert_eq!(severities(&a), vec![(EXCURSION_REVIEW, Severity::Block)], "{stage}");
        }
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
            assert_eq!(severities(&below), vec![(DOSE_BELOW_TARGET, Severity::Info)]);
            assert_eq!(below.verdict, Verdict::Compatible, "info never stands in the way");
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
    fn every_reason_is_reported_together() {
        let mut policy = Policy::default();
        policy.compat.minor_abo_check = true;
        let p = PatientFacts {
            rhd: Typed::Confirmed(Rhd::Negative),
            sex: Sex::Female,
            childbearing_potential: true,
            cmv: Cmv::Negative,
            hla_antibodies: strings(&["A1", "DQ2", "Bw4"]),
            granulocyte_antibodies: true,
            ..patient()
        };
        let u = UnitFacts {
            abo: Abo::B,
            rhd: Rhd::Positive,
            cmv: Cmv::Positive,
            irradiated: false,
            released: false,
            reactive: true,
            expires_at: now(),
            granulocyte_count: 1.0,
            ..unit()
        };
        let bad = CrossmatchFacts {
            compatible: false,
            sample_valid_until: now() - TimeDelta::hours(1),
            ..xm()
        };
        let old = CrossmatchFacts {
            id: 9,
            sample_valid_until: now() - TimeDelta::hours(1),
            ..xm()
        };
        let both = Requirements {
            cmv_negative: true,
            hla_compatible: true,
        };
        let head = [
            ABO_INCOMPATIBLE,
            MINOR_ABO_INCOMPATIBLE,
            RHD_MISMATCH,
            CMV_MISMATCH,
            CMV_NEGATIVE_REQUIRED,
            HLA_ANTIBODY_MATCH,
            HLA_UNTYPED_LOCUS,
            HLA_ANTIBODY_UNRESOLVED,
            HLA_TYPING_REQUIRED,
            HNA_ANTIBODIES,
            CROSSMATCH_INCOMPATIBLE,
            SAMPLE_EXPIRED,
            UNIT_EXPIRED,
        ];
        let xms = [bad.clone(), old];
        let a = run(&p, &u, &xms, both, planned(), Stage::Issue, &policy);
        let mut expected = head.to_vec();
        expected.extend([
            INSUFFICIENT_SHELF_LIFE,
            NOT_IRRADIATED,
            NOT_RELEASED,
            REACTIVE_MARKER,
            DOSE_BELOW_TARGET,
        ]);
        assert_eq!(a.codes(), expected);
        assert_eq!(a.verdict, Verdict::Incompatible);
        assert!(a.anti_d_prophylaxis);

        let a = run(&p, &u, &xms, both, planned(), Stage::Allocation, &policy);
        let mut expected = head.to_vec();
        expected.extend([
            EXPIRES_BEFORE_NEEDED,
            INSUFFICIENT_SHELF_LIFE,
            REACTIVE_MARKER,
            DOSE_BELOW_TARGET,
        ]);
        assert_eq!(a.codes(), expected);

        let a = run(&p, &u, &[bad], both, planned(), Stage::Issue, &policy);
        assert!(a.has(CROSSMATCH_MISSING) && !a.has(SAMPLE_EXPIRED));
    }

    #[test]
    fn assessment_serialises_with_text_spellings() {
        let p = PatientFacts {
            rhd: Typed::Confirmed(Rhd::Negative),
            ..patient()
        };
        let json = serde_json::to_value(alloc(&p, &unit())).expect("serialises");
        assert_eq!(json["verdict"], "compatible_with_warnings");
        assert_eq!(json["reasons"][0]["code"], "rhd_mismatch");
        assert_eq!(json["reasons"][0]["severity"], "acknowledge");
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
        for k in CrossmatchKind::ALL {
            assert_eq!(CrossmatchKind::parse(k.as_str()), Some(*k));
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
            expires_at: now() + TimeDelta::hours(9),
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
        // Below the margin at the planned transfusion the unit is incompatible.
        let too_soon = UnitFacts {
            expires_at: planned() + TimeDelta::minutes(90),
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
            rhd: Typed::Confirmed(Rhd::Negative),
            ..patient()
        };
        assert!(score_of(&rh_neg, &UnitFacts { abo: Abo::O, ..unit() }) > score_of(&rh_neg, &low));

        // Donors typed at the antibody loci first for an alloimmunised patient, even against
        // other warnings.
        let immunised = PatientFacts {
            hla_antibodies: strings(&["A2"]),
            rhd: Typed::Confirmed(Rhd::Negative),
            ..patient()
        };
        let untyped = UnitFacts {
            donor_hla: None,
            rhd: Rhd::Negative,
            ..unit()
        };
        let typed_rh_pos_group_o = UnitFacts { abo: Abo::O, ..unit() };
        let (a, b) = (alloc(&immunised, &untyped), alloc(&immunised, &typed_rh_pos_group_o));
        assert_eq!(a.codes(), vec![HLA_UNTYPED_LOCUS]);
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
                expires_at: now() + TimeDelta::hours(9),
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

    fn arb_typed<T: Copy + std::fmt::Debug + 'static>(values: &'static [T]) -> impl Strategy<Value = Typed<T>> {
        let v = prop::sample::select(values);
        prop_oneof![
            3 => v.clone().prop_map(Typed::Confirmed),
            1 => v.prop_map(Typed::Unconfirmed),
            1 => Just(Typed::Untyped),
            1 => Just(Typed::Discordant),
        ]
    }

    fn arb_patient() -> impl Strategy<Value = PatientFacts> {
        (
            arb_typed(Abo::ALL),
            arb_typed(Rhd::ALL),
            prop::sample::select(Sex::ALL),
            any::<bool>(),
            prop::sample::select(Cmv::ALL),
            prop::sample::select(vec![0.0, 3.5, 20.0, 70.0, 120.0]),
            prop::collection::vec(
                prop::sample::select(vec!["A2", "A*01", "B8", "DR15", "Cw7", "Bw4", "DQ2", ""]),
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
            (
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.1),
                prop::sample::select(vec![None, None, None, Some(REQUEST), Some(REQUEST + 1)]),
            ),
            -120i64..2_000,
            prop::sample::select(vec![1e9, 1e10, 4.2e10, 1e11]),
        )
            .prop_map(
                |(
                    abo,
                    rhd,
                    cmv,
                    typed_donor,
                    irradiated,
                    released,
                    (reactive, excursion_pending, reserved_for),
                    minutes,
                    count,
                )| {
                    UnitFacts {
                        abo,
                        rhd,
                        cmv,
                        donor_hla: typed_donor
                            .then(|| typed(&["A*02:01"], &["B*44:02"], &["C*05:01"], &["DRB1*04:01"])),
                        irradiated,
                        released,
                        reactive,
                        excursion_pending,
                        reserved_for,
                        expires_at: now() + TimeDelta::minutes(minutes),
                        granulocyte_count: count,
                    }
                },
            )
    }

    fn arb_crossmatches() -> impl Strategy<Value = Vec<CrossmatchFacts>> {
        prop::collection::vec(
            (
                prop::sample::select(CrossmatchKind::ALL),
                any::<bool>(),
                any::<bool>(),
                arb_minutes(),
            )
                .prop_map(|(kind, compatible, resolved, minutes)| CrossmatchFacts {
                    id: 1,
                    kind,
                    compatible,
                    resolved: resolved && !compatible,
                    sample_valid_until: now() + TimeDelta::minutes(minutes),
                }),
            0..4,
        )
        .prop_map(|mut list| {
            for (i, x) in list.iter_mut().enumerate() {
                x.id = i as i64 + 1;
            }
            list
        })
    }

    fn arb_requirements() -> impl Strategy<Value = Requirements> {
        (any::<bool>(), any::<bool>()).prop_map(|(cmv_negative, hla_compatible)| Requirements {
            cmv_negative,
            hla_compatible,
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            prop::sample::select(vec![
                RhdMismatch::Acknowledge,
                RhdMismatch::Authorise,
                RhdMismatch::Block,
            ]),
            prop::sample::select(vec![
                CmvMismatch::Authorise,
                CmvMismatch::Acknowledge,
                CmvMismatch::Block,
                CmvMismatch::Off,
            ]),
            (any::<bool>(), any::<bool>()),
            (
                prop::sample::select(vec![AuthoriseOrBlock::Authorise, AuthoriseOrBlock::Block]),
                prop::sample::select(vec![AuthoriseOrBlock::Authorise, AuthoriseOrBlock::Block]),
            ),
        )
            .prop_map(|(rhd, cmv, (minor, unknown_cmv), (hla, hna))| {
                let mut policy = Policy::default();
                policy.compat.rhd_mismatch = rhd;
                policy.compat.cmv_mismatch = cmv;
                policy.compat.minor_abo_check = minor;
                policy.compat.cmv_unknown_as_negative = unknown_cmv;
                policy.compat.hla_untyped = hla;
                policy.compat.hna_antibodies = hna;
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
            xms in arb_crossmatches(),
            requirements in arb_requirements(),
            planned_minutes in -60i64..1_200,
            stage in prop::sample::select(Stage::ALL),
            policy in arb_policy(),
        ) {
            let planned_at = now() + TimeDelta::minutes(planned_minutes);
            let a = run(&p, &u, &xms, requirements, planned_at, stage, &policy);
            let blocks = a.reasons.iter().any(|r| r.severity == Severity::Block);
            // Info findings are shown but do not qualify the verdict.
            let to_handle = a.reasons.iter().any(|r| r.severity != Severity::Info);
            let expected = match (blocks, to_handle) {
                (true, _) => Verdict::Incompatible,
                (false, false) => Verdict::Compatible,
                (false, true) => Verdict::CompatibleWithWarnings,
            };
            prop_assert_eq!(a.verdict, expected);
            let mut codes = a.codes();
            let n = codes.len();
            codes.sort_unstable();
            codes.dedup();
            prop_assert_eq!(codes.len(), n);
            prop_assert!(!a.anti_d_prophylaxis || (a.has(RHD_MISMATCH) && p.sex == Sex::Female));
            // Only a confirmed group ever takes a non-O unit.
            if u.abo != Abo::O && p.abo.confirmed().is_none() {
                prop_assert_eq!(a.verdict, Verdict::Incompatible);
            }
            if stage == Stage::Allocation {
                prop_assert!(!a.has(NOT_IRRADIATED) && !a.has(NOT_RELEASED) && !a.has(CROSSMATCH_MISSING));
            } else {
                prop_assert!(!a.has(EXPIRES_BEFORE_NEEDED));
            }
            // An incompatible crossmatch that stands always blocks.
            if xms.iter().any(|x| !x.compatible && !x.resolved) {
                prop_assert!(a.has(CROSSMATCH_INCOMPATIBLE));
            }
        }

        #[test]
        fn score_respects_verdict_tiers(
            p in arb_patient(),
            u1 in arb_unit(),
            u2 in arb_unit(),
            policy in arb_policy(),
        ) {
            let a1 = at(Stage::Allocation, &p, &u1, &policy);
            let a2 = at(Stage::Allocation, &p, &u2, &policy);
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

    /// Antibody specificities with the locus and antigen each targets.
    type Antibody = (&'static str, Option<HlaLocus>, Option<(HlaLocus, u16)>);
    const ANTIBODIES: &[Antibody] = &[
        ("A2", Some(HlaLocus::A), Some((HlaLocus::A, 2))),
        ("anti-A*01", Some(HlaLocus::A), Some((HlaLocus::A, 1))),
        ("HLA-B8", Some(HlaLocus::B), Some((HlaLocus::B, 8))),
        (" b*44:02 ", Some(HlaLocus::B), Some((HlaLocus::B, 44))),
        ("Cw7", Some(HlaLocus::C), Some((HlaLocus::C, 7))),
        ("DR15", Some(HlaLocus::Drb1), Some((HlaLocus::Drb1, 15))),
        ("DRB1*04", Some(HlaLocus::Drb1), Some((HlaLocus::Drb1, 4))),
        ("DQ2", Some(HlaLocus::Dqb1), Some((HlaLocus::Dqb1, 2))),
        ("DPB1*04", Some(HlaLocus::Dpb1), Some((HlaLocus::Dpb1, 4))),
        ("A*2", Some(HlaLocus::A), None),
        ("Bw4", None, None),
        ("DR51", None, None),
        ("", None, None),
        ("  ", None, None),
    ];

    /// An allele as typed and its allele group (`None`: does not parse, ignored).
    type Allele = (&'static str, Option<u16>);

    /// Donor alleles by locus.
    const ALLELES: [(HlaLocus, &[Allele]); 6] = [
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
        (HlaLocus::Dqb1, &[("DQB1*02:01", Some(2)), ("DQB1*06:02", Some(6))]),
        (HlaLocus::Dpb1, &[("DPB1*04:01", Some(4))]),
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
        prop_oneof![
            -180i64..1_800,
            prop::sample::select(vec![-1, 0, 1, 29, 30, 31, 119, 120, 121, 360, 480, 481])
        ]
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
        let typing = prop::option::of((
            (alleles(4), alleles(3), alleles(3)),
            (alleles(2), alleles(2), alleles(1)),
        ));
        (arb_unit(), typing, arb_minutes(), arb_number()).prop_map(|(u, typing, expires, count)| {
            let pick =
                |locus: usize, picks: Vec<usize>| picks.into_iter().map(|i| ALLELES[locus].1[i].0.to_owned()).collect();
            UnitFacts {
                donor_hla: typing.map(|((a, b, c), (drb1, dqb1, dpb1))| Hla {
                    a: pick(0, a),
                    b: pick(1, b),
                    c: pick(2, c),
                    drb1: pick(3, drb1),
                    dqb1: pick(4, dqb1),
                    dpb1: pick(5, dpb1),
                }),
                expires_at: now() + TimeDelta::minutes(expires),
                granulocyte_count: count,
                ..u
            }
        })
    }

    fn arb_any_policy() -> impl Strategy<Value = Policy> {
        (
            arb_policy(),
            1u32..=30,
            1u32..=120,
            prop::sample::select(vec![1e8, 6e8, 1e9, 5e9]),
        )
            .prop_map(|(mut policy, min_remaining, at_issue, dose_target)| {
                policy.unit.min_remaining_hours_to_allocate = min_remaining;
                policy.unit.min_remaining_minutes_at_issue = at_issue;
                policy.recipient.dose_target_per_kg = dose_target;
                policy
            })
    }

    /// Each rule of domain.md §3 and the module notes, evaluated on its own, in report order.
    fn expected_findings(
        p: &PatientFacts,
        u: &UnitFacts,
        xms: &[CrossmatchFacts],
        requirements: Requirements,
        planned_at: DateTime<Utc>,
        stage: Stage,
        policy: &Policy,
    ) -> Vec<(&'static str, Severity)> {
        use Severity::{Acknowledge, Authorise, Block, Info};
        let mut out = Vec::new();
        let mut rule = |holds: bool, code, severity| {
            if holds {
                out.push((code, severity));
            }
        };
        let confirmed = p.abo.confirmed();
        rule(
            confirmed.is_some_and(|g| !in_table(&RED_CELLS, g, u.abo)),
            ABO_INCOMPATIBLE,
            Block,
        );
        rule(p.abo == Typed::Discordant && u.abo != Abo::O, ABO_DISCORDANT, Block);
        rule(
            matches!(p.abo, Typed::Untyped | Typed::Unconfirmed(_)) && u.abo != Abo::O,
            ABO_UNCONFIRMED,
            Block,
        );
        rule(
            policy.compat.minor_abo_check && confirmed.is_some_and(|g| !in_table(&PLASMA, g, u.abo)),
            MINOR_ABO_INCOMPATIBLE,
            Acknowledge,
        );
        let female_cbp = p.sex == Sex::Female && p.childbearing_potential;
        let rhd_severity = match policy.compat.rhd_mismatch {
            RhdMismatch::Acknowledge if female_cbp => Authorise,
            RhdMismatch::Acknowledge => Acknowledge,
            RhdMismatch::Authorise => Authorise,
            RhdMismatch::Block => Block,
        };
        rule(
            p.rhd != Typed::Confirmed(Rhd::Positive) && u.rhd == Rhd::Positive,
            RHD_MISMATCH,
            rhd_severity,
        );
        let cmv = match policy.compat.cmv_mismatch {
            CmvMismatch::Authorise => Some(Authorise),
            CmvMismatch::Acknowledge => Some(Acknowledge),
            CmvMismatch::Block => Some(Block),
            CmvMismatch::Off => None,
        };
        let negative = p.cmv == Cmv::Negative || (p.cmv == Cmv::Unknown && policy.compat.cmv_unknown_as_negative);
        if let Some(severity) = cmv {
            rule(negative && u.cmv != Cmv::Negative, CMV_MISMATCH, severity);
        }
        rule(
            requirements.cmv_negative && u.cmv != Cmv::Negative,
            CMV_NEGATIVE_REQUIRED,
            Block,
        );
        let donor = u.donor_hla.clone().unwrap_or_default();
        let donor_alleles: Vec<(HlaLocus, u16)> = ALLELES
            .iter()
            .flat_map(|(locus, alleles)| alleles.iter().map(move |(text, group)| (*locus, *text, *group)))
            .filter(|(locus, text, _)| locus.of(&donor).iter().any(|a| a == text))
            .filter_map(|(locus, _, group)| group.map(|g| (locus, g)))
            .collect();
        let typed_loci: Vec<HlaLocus> = donor_alleles.iter().map(|(l, _)| *l).collect();
        let antibodies: Vec<&Antibody> = p
            .hla_antibodies
            .iter()
            .filter_map(|ab| ANTIBODIES.iter().find(|(text, _, _)| text == ab))
            .filter(|(text, _, _)| !text.trim().is_empty())
            .collect();
        let targeted = antibodies
            .iter()
            .any(|(_, _, antigen)| antigen.is_some_and(|a| donor_alleles.contains(&a)));
        let untyped = antibodies
            .iter()
            .any(|(_, locus, _)| locus.is_some_and(|l| !typed_loci.contains(&l)));
        let unresolved = antibodies.iter().any(|(_, locus, antigen)| match locus {
            None => true,
            Some(l) => typed_loci.contains(l) && antigen.is_none(),
        });
        rule(targeted, HLA_ANTIBODY_MATCH, Block);
        let hla_tier = match policy.compat.hla_untyped {
            AuthoriseOrBlock::Authorise => Authorise,
            AuthoriseOrBlock::Block => Block,
        };
        rule(untyped, HLA_UNTYPED_LOCUS, hla_tier);
        rule(unresolved, HLA_ANTIBODY_UNRESOLVED, hla_tier);
        rule(
            requirements.hla_compatible && (typed_loci.is_empty() || untyped || unresolved),
            HLA_TYPING_REQUIRED,
            Block,
        );
        let transfusion = planned_at.max(now());
        let best = |kind| {
            xms.iter()
                .filter(|x| x.kind == kind && x.compatible)
                .map(|x| x.sample_valid_until)
                .max()
        };
        rule(
            p.granulocyte_antibodies && best(CrossmatchKind::Leukocyte).is_none_or(|v| v < transfusion),
            HNA_ANTIBODIES,
            match policy.compat.hna_antibodies {
                AuthoriseOrBlock::Authorise => Authorise,
                AuthoriseOrBlock::Block => Block,
            },
        );
        rule(
            xms.iter().any(|x| !x.compatible && !x.resolved),
            CROSSMATCH_INCOMPATIBLE,
            Block,
        );
        let red = best(CrossmatchKind::RedCell);
        rule(red.is_some_and(|v| v < transfusion), SAMPLE_EXPIRED, Block);
        rule(red.is_none() && stage == Stage::Issue, CROSSMATCH_MISSING, Block);
        rule(now() >= u.expires_at, UNIT_EXPIRED, Block);
        let allocation = stage == Stage::Allocation;
        rule(allocation && u.expires_at <= planned_at, EXPIRES_BEFORE_NEEDED, Block);
        let margin = if allocation {
            transfusion + TimeDelta::hours(i64::from(policy.unit.min_remaining_hours_to_allocate))
        } else {
            now() + TimeDelta::minutes(i64::from(policy.unit.min_remaining_minutes_at_issue))
        };
        rule(u.expires_at < margin, INSUFFICIENT_SHELF_LIFE, Block);
        rule(stage == Stage::Issue && !u.irradiated, NOT_IRRADIATED, Block);
        rule(stage == Stage::Issue && !u.released, NOT_RELEASED, Block);
        rule(u.reactive, REACTIVE_MARKER, Block);
        rule(u.excursion_pending, EXCURSION_REVIEW, Block);
        rule(
            u.reserved_for.is_some_and(|r| r != REQUEST),
            RESERVED_FOR_REQUEST,
            Block,
        );
        let dose_known = p.weight_kg.is_finite() && p.weight_kg > 0.0 && u.granulocyte_count.is_finite();
        rule(
            dose_known && u.granulocyte_count / p.weight_kg < policy.recipient.dose_target_per_kg,
            DOSE_BELOW_TARGET,
            Info,
        );
        out
    }

    fn well_formed_allele() -> impl Strategy<Value = (HlaLocus, u16, String)> {
        (
            prop::sample::select(HlaLocus::ALL.to_vec()),
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
            xms in arb_crossmatches(),
            requirements in arb_requirements(),
            planned_minutes in arb_minutes(),
            stage in prop::sample::select(Stage::ALL),
            policy in arb_any_policy(),
        ) {
            let planned_at = now() + TimeDelta::minutes(planned_minutes);
            let a = run(&p, &u, &xms, requirements, planned_at, stage, &policy);
            let expected = expected_findings(&p, &u, &xms, requirements, planned_at, stage, &policy);
            prop_assert_eq!(severities(&a), expected.clone());
            // Info findings never stand in the way: they leave the unit `compatible`.
            let verdict = match expected.iter().map(|(_, s)| *s).max_by_key(|s| s.rank()) {
                Some(Severity::Block) => Verdict::Incompatible,
                Some(Severity::Acknowledge | Severity::Authorise) => Verdict::CompatibleWithWarnings,
                Some(Severity::Info) | None => Verdict::Compatible,
            };
            prop_assert_eq!(a.verdict, verdict);
            let anti_d = p.rhd != Typed::Confirmed(Rhd::Positive)
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
                CmvMismatch::Off => CmvMismatch::Acknowledge,
                _ => CmvMismatch::Block,
            };
            strict.compat.hla_untyped = AuthoriseOrBlock::Block;
            strict.compat.hna_antibodies = AuthoriseOrBlock::Block;
            strict.compat.minor_abo_check = true;
            strict.compat.cmv_unknown_as_negative = true;
            strict.unit.min_remaining_hours_to_allocate += more_hours;
            strict.unit.min_remaining_minutes_at_issue += more_hours;
            strict.recipient.dose_target_per_kg *= dose_factor;
            let lenient = at(stage, &p, &u, &policy);
            let stricter = at(stage, &p, &u, &strict);
            prop_assert!(tier(stricter.verdict) <= tier(lenient.verdict));
            for code in lenient.codes() {
                prop_assert!(stricter.has(code), "{} lost", code);
            }
        }

        #[test]
        fn hla_parsers_never_panic_and_agree_with_typing_validation(
            text in prop_oneof![any::<String>(), "[ aAbBcCdDrRqQpPwW*0-9:NLSQ-]{0,16}"],
        ) {
            let _ = antibody_antigen(&text);
            let _ = antibody_locus(&text);
            for locus in HlaLocus::ALL {
                let mut hla = Hla::default();
                match locus {
                    HlaLocus::A => hla.a.push(text.clone()),
                    HlaLocus::B => hla.b.push(text.clone()),
                    HlaLocus::C => hla.c.push(text.clone()),
                    HlaLocus::Drb1 => hla.drb1.push(text.clone()),
                    HlaLocus::Dqb1 => hla.dqb1.push(text.clone()),
                    HlaLocus::Dpb1 => hla.dpb1.push(text.clone()),
                }
                // A donor allele the engine cannot read is one that registration refuses.
                prop_assert_eq!(hla.normalized().is_ok(), allele_antigen(locus, &text).is_some(), "{:?}", locus);
            }
            // An antigen is always at the locus the antibody names.
            if let Some(antigen) = antibody_antigen(&text) {
                prop_assert_eq!(antibody_locus(&text), Some(antigen.locus));
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
                HlaLocus::Dqb1 => "DQ",
                HlaLocus::Dpb1 => "DP",
            };
            let expected = match (locus, serological) {
                (HlaLocus::Drb1, 51..=53) => None,
                (HlaLocus::Dqb1, 7..=9) => Some(HlaAntigen { locus, group: 3 }),
                _ => Some(HlaAntigen { locus, group: serological }),
            };
            prop_assert_eq!(antibody_antigen(&format!("{name}{serological}")), expected);
        }
    }
}
