//! HLA antibodies against the donor's typing at antigen level (the module notes of
//! [`super`] say how specificities and alleles are read).

use crate::domain::blood::Hla;

/// HLA loci typed for donors and named by antibodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HlaLocus {
    A,
    B,
    C,
    Drb1,
    Dqb1,
    Dpb1,
}

impl HlaLocus {
    pub const ALL: [Self; 6] = [Self::A, Self::B, Self::C, Self::Drb1, Self::Dqb1, Self::Dpb1];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
            Self::C => "C",
            Self::Drb1 => "DRB1",
            Self::Dqb1 => "DQB1",
            Self::Dpb1 => "DPB1",
        }
    }

    /// The donor's alleles at this locus.
    pub fn of(self, hla: &Hla) -> &[String] {
        match self {
            Self::A => &hla.a,
            Self::B => &hla.b,
            Self::C => &hla.c,
            Self::Drb1 => &hla.drb1,
            Self::Dqb1 => &hla.dqb1,
            Self::Dpb1 => &hla.dpb1,
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

/// Serological DR antigens coded by DRB3/4/5, not DRB1.
const DR_OUTSIDE_DRB1: [&str; 3] = ["51", "52", "53"];

/// How an antibody specificity names its target: the locus (when known) and the text after the
/// locus name, with whether that text is molecular (`*NN`) or serological (`NN`).
fn antibody_parts(specificity: &str) -> Option<(HlaLocus, String)> {
    let upper = specificity.trim().to_ascii_uppercase();
    let text = upper.strip_prefix("ANTI-").unwrap_or(&upper);
    let text = text.strip_prefix("HLA-").unwrap_or(text);
    let digit_or_star = |rest: &str| rest.starts_with('*') || rest.starts_with(|c: char| c.is_ascii_digit());
    let molecular = [
        ("DRB1", HlaLocus::Drb1),
        ("DQB1", HlaLocus::Dqb1),
        ("DPB1", HlaLocus::Dpb1),
    ];
    for (name, locus) in molecular {
        if let Some(rest) = text.strip_prefix(name) {
            return rest.starts_with('*').then(|| (locus, rest.to_owned()));
        }
    }
    // DRB3/4/5, DQA1, DPA1 and the like are outside the typed loci.
    if ["DRB", "DQA", "DPA"].iter().any(|p| text.starts_with(p)) {
        return None;
    }
    let serological = [
        ("DPW", HlaLocus::Dpb1),
        ("DP", HlaLocus::Dpb1),
        ("DQ", HlaLocus::Dqb1),
        ("DR", HlaLocus::Drb1),
        ("CW", HlaLocus::C),
    ];
    for (name, locus) in serological {
        if let Some(rest) = text.strip_prefix(name) {
            let outside = locus == HlaLocus::Drb1 && DR_OUTSIDE_DRB1.contains(&rest);
            return (rest.starts_with(|c: char| c.is_ascii_digit()) && !outside).then(|| (locus, rest.to_owned()));
        }
    }
    for locus in [HlaLocus::A, HlaLocus::B, HlaLocus::C] {
        if let Some(rest) = text.strip_prefix(locus.as_str()) {
            return digit_or_star(rest).then(|| (locus, rest.to_owned()));
        }
    }
    None
}

/// The locus an antibody specificity targets, or `None` when it names none of the typed loci
/// (`Bw4`, `DR51`, `DQA1*05`, free text).
pub fn antibody_locus(specificity: &str) -> Option<HlaLocus> {
    antibody_parts(specificity).map(|(locus, _)| locus)
}

/// The antigen an antibody specificity targets, or `None` when its locus or antigen cannot be
/// read (see the module notes). Accepts optional `anti-` and `HLA-` prefixes, any case.
pub fn antibody_antigen(specificity: &str) -> Option<HlaAntigen> {
    let (locus, rest) = antibody_parts(specificity)?;
    let group = if rest.starts_with('*') {
        molecular_group(&rest)?
    } else {
        match (locus, serological_group(&rest)?) {
            // DQ7, DQ8 and DQ9 are splits of DQ3: all DQB1*03.
            (HlaLocus::Dqb1, 7..=9) => 3,
            (_, n) => n,
        }
    };
    Some(HlaAntigen { locus, group })
}

/// The antigen of one donor allele typed at `locus` (`A*02:01` → A*02), or `None` when the
/// allele is not a valid allele of that locus.
pub fn allele_antigen(locus: HlaLocus, allele: &str) -> Option<HlaAntigen> {
    let upper = allele.trim().to_ascii_uppercase();
    let group = molecular_group(upper.strip_prefix(locus.as_str())?)?;
    Some(HlaAntigen { locus, group })
}

/// True when the donor has at least one readable allele at `locus`.
pub fn typed_at(donor: &Hla, locus: HlaLocus) -> bool {
    locus.of(donor).iter().any(|a| allele_antigen(locus, a).is_some())
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
    let typed: Vec<(HlaAntigen, &String)> = HlaLocus::ALL
        .into_iter()
        .flat_map(|locus| {
            locus
                .of(donor)
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

/// The patient's HLA antibodies against what the donor typing can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HlaCheck {
    pub matches: Vec<HlaMatch>,
    /// Loci of the patient's antibodies at which the donor is not typed, with those antibodies.
    pub untyped: Vec<(HlaLocus, Vec<String>)>,
    /// Antibodies whose locus or antigen cannot be read, so no typing can clear them.
    pub unresolved: Vec<String>,
}

impl HlaCheck {
    /// The donor is typed at every locus the antibodies name, and every antibody was read.
    pub fn fully_checked(&self) -> bool {
        self.untyped.is_empty() && self.unresolved.is_empty()
    }
}

/// Checks every antibody at its own locus (see the module notes).
pub fn check_hla(antibodies: &[String], donor: Option<&Hla>) -> HlaCheck {
    let empty = Hla::default();
    let donor = donor.unwrap_or(&empty);
    let mut check = HlaCheck {
        matches: hla_antibody_matches(antibodies, donor),
        ..HlaCheck::default()
    };
    for antibody in antibodies.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        match antibody_locus(antibody) {
            Some(locus) if !typed_at(donor, locus) => match check.untyped.iter_mut().find(|(l, _)| *l == locus) {
                Some((_, list)) => list.push(antibody.to_owned()),
                None => check.untyped.push((locus, vec![antibody.to_owned()])),
            },
            Some(_) if antibody_antigen(antibody).is_some() => {}
            _ => check.unresolved.push(antibody.to_owned()),
        }
    }
    check.untyped.sort_by_key(|(locus, _)| *locus);
    check
}
