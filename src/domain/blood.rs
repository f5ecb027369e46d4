//! Blood groups, serostatus and the other enumerations shared by donors, units and patients,
//! plus HLA typing in a recognisable form.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text_enum;

text_enum!(
    /// ABO group, written upper-case as clinically.
    Abo { O => "O", A => "A", B => "B", Ab => "AB" }
);
text_enum!(
    /// RhD type.
    Rhd { Positive => "positive", Negative => "negative" }
);
text_enum!(
    /// The RhD of a unit as labelled: a pool of donations may carry mixed RhD (ISBT 128 "pooled
    /// RhD", Table 4 `A0`/`B0`/`C0`/`D0`).
    UnitRhd { Positive => "positive", Negative => "negative", Pooled => "pooled" }
);

impl UnitRhd {
    /// A unit's RhD as stored: its RhD type, or pooled when the supplier labelled the pool so.
    pub fn of(rhd: Rhd, pooled: bool) -> Self {
        match (pooled, rhd) {
            (true, _) => Self::Pooled,
            (false, Rhd::Positive) => Self::Positive,
            (false, Rhd::Negative) => Self::Negative,
        }
    }

    /// What selection treats it as: pooled RhD counts as RhD-positive (it may contain D-positive
    /// red cells).
    pub fn for_selection(self) -> Rhd {
        match self {
            Self::Negative => Rhd::Negative,
            Self::Positive | Self::Pooled => Rhd::Positive,
        }
    }
}

text_enum!(
    /// CMV serostatus.
    Cmv { Negative => "negative", Positive => "positive", Unknown => "unknown" }
);
text_enum!(
    Sex { Female => "female", Male => "male", Unknown => "unknown" }
);
text_enum!(
    /// Community (volunteer), directed to a named patient, or a relative of the patient.
    DonorType { Community => "community", Directed => "directed", Family => "family" }
);

/// HLA class I (A, B, C) and class II (DRB1, DQB1, DPB1) typing; at most two alleles per locus.
/// A locus left empty is not typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hla {
    #[serde(default)]
    pub a: Vec<String>,
    #[serde(default)]
    pub b: Vec<String>,
    #[serde(default)]
    pub c: Vec<String>,
    #[serde(default)]
    pub drb1: Vec<String>,
    #[serde(default)]
    pub dqb1: Vec<String>,
    #[serde(default)]
    pub dpb1: Vec<String>,
}

/// A problem with one allele: `field` is `hla.a[1]` style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlaError {
    pub field: String,
    pub message: String,
}

impl Hla {
    /// Upper-cases and checks every allele against its locus (`A*02`, `A*02:01`, `B*07:02:01:01`,
    /// optional expression suffix `N L S C A Q`); returns the normalised typing or every problem.
    pub fn normalized(&self) -> Result<Self, Vec<HlaError>> {
        let mut errors = Vec::new();
        let mut locus = |name: &str, prefix: &str, alleles: &[String]| -> Vec<String> {
            if alleles.len() > 2 {
                errors.push(HlaError {
                    field: format!("hla.{name}"),
                    message: format!("at most two alleles per locus, got {}", alleles.len()),
                });
            }
            alleles
                .iter()
                .enumerate()
                .filter_map(|(i, raw)| {
                    let allele = raw.trim().to_ascii_uppercase();
                    if is_allele(&allele, prefix) {
                        Some(allele)
                    } else {
                        errors.push(HlaError {
                            field: format!("hla.{name}[{i}]"),
                            message: format!(
                                "{raw:?} is not an HLA-{prefix} allele such as {prefix}*02 or {prefix}*02:01"
                            ),
                        });
                        None
                    }
                })
                .collect()
        };
        let typed = Self {
            a: locus("a", "A", &self.a),
            b: locus("b", "B", &self.b),
            c: locus("c", "C", &self.c),
            drb1: locus("drb1", "DRB1", &self.drb1),
            dqb1: locus("dqb1", "DQB1", &self.dqb1),
            dpb1: locus("dpb1", "DPB1", &self.dpb1),
        };
        if errors.is_empty() { Ok(typed) } else { Err(errors) }
    }

    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
            && self.b.is_empty()
            && self.c.is_empty()
            && self.drb1.is_empty()
            && self.dqb1.is_empty()
            && self.dpb1.is_empty()
    }
}

/// `PREFIX*NN[:NN[:NN[:NN]]][suffix]` with 2–3 digits per field (WHO nomenclature).
fn is_allele(allele: &str, prefix: &str) -> bool {
    let Some(rest) = allele.strip_prefix(prefix).and_then(|r| r.strip_prefix('*')) else {
        return false;
    };
    let rest = rest.strip_suffix(['N', 'L', 'S', 'C', 'A', 'Q']).unwrap_or(rest);
    let fields: Vec<&str> = rest.split(':').collect();
    (1..=4).contains(&fields.len())
        && fields
            .iter()
            .all(|f| (2..=3).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn enumerations_round_trip_their_spelling() {
        for abo in Abo::ALL {
            assert_eq!(Abo::parse(abo.as_str()), Some(*abo));
            assert_eq!(serde_json::to_value(abo).expect("json"), abo.as_str());
        }
        for x in Rhd::ALL {
            assert_eq!(Rhd::parse(x.as_str()), Some(*x));
        }
        for x in Cmv::ALL {
            assert_eq!(Cmv::parse(x.as_str()), Some(*x));
        }
        let selection: Vec<Rhd> = UnitRhd::ALL.iter().map(|r| r.for_selection()).collect();
        assert_eq!(selection, vec![Rhd::Positive, Rhd::Negative, Rhd::Positive]);
        for x in Sex::ALL {
            assert_eq!(Sex::parse(x.as_str()), Some(*x));
        }
        for x in DonorType::ALL {
            assert_eq!(DonorType::parse(x.as_str()), Some(*x));
        }
        assert_eq!(Abo::parse("ab"), None);
        assert_eq!(Abo::parse("AB"), Some(Abo::Ab));
        assert!(serde_json::from_str::<Rhd>("\"Positive\"").is_err());
    }

    #[test]
    fn alleles() {
        let cases: &[(&str, &str, bool)] = &[
            ("A*02", "A", true),
            ("A*02:01", "A", true),
            ("A*02:01:01:01", "A", true),
            ("A*02:01N", "A", true),
            ("A*024:01", "A", true),
            ("DRB1*15:01", "DRB1", true),
            ("A*2", "A", false),
            ("A*02:01:01:01:01", "A", false),
            ("A02", "A", false),
            ("B*07", "A", false),
            ("A*", "A", false),
            ("A*02:", "A", false),
            ("A*0201", "A", false),
            ("A*02:XX", "A", false),
            ("", "A", false),
        ];
        for (allele, prefix, ok) in cases {
            assert_eq!(is_allele(allele, prefix), *ok, "{allele} at {prefix}");
        }
    }

    #[test]
    fn hla_is_normalised_and_every_problem_reported() {
        let hla = Hla {
            a: vec![" a*02:01 ".into(), "A*01".into()],
            b: vec!["B*07".into()],
            c: vec![],
            drb1: vec!["drb1*15:01".into()],
            dqb1: vec!["dqb1*06:02".into()],
            dpb1: vec![],
        };
        let n = hla.normalized().expect("valid");
        assert_eq!(n.a, vec!["A*02:01", "A*01"]);
        assert_eq!(n.drb1, vec!["DRB1*15:01"]);
        assert_eq!(n.dqb1, vec!["DQB1*06:02"]);

        let bad = Hla {
            a: vec!["A*02".into(), "A*03".into(), "A*11".into()],
            b: vec!["A*02".into()],
            ..Hla::default()
        };
        let errors = bad.normalized().expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["hla.a", "hla.b[0]"]);
    }

    fn arb_allele() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ aAbBcCdDrR1*0-9:NLSQX]{0,14}",
            "(A|B|C|DRB1)\\*[0-9]{1,4}(:[0-9]{1,4}){0,4}[NLSCAQ]?",
        ]
    }

    proptest! {
        #[test]
        fn spellings_parse_exactly(text in prop_oneof![any::<String>(), "[a-zA-Z]{1,10}"]) {
            fn check<T: Copy + PartialEq + std::fmt::Debug>(
                text: &str,
                all: &[T],
                spell: fn(T) -> &'static str,
                parse: fn(&str) -> Option<T>,
            ) -> Result<(), TestCaseError> {
                let expected = all.iter().copied().find(|x| spell(*x) == text);
                prop_assert_eq!(parse(text), expected);
                Ok(())
            }
            check(&text, Abo::ALL, Abo::as_str, Abo::parse)?;
            check(&text, Rhd::ALL, Rhd::as_str, Rhd::parse)?;
            check(&text, Cmv::ALL, Cmv::as_str, Cmv::parse)?;
            check(&text, Sex::ALL, Sex::as_str, Sex::parse)?;
            check(&text, DonorType::ALL, DonorType::as_str, DonorType::parse)?;
            let json = serde_json::to_string(&text).expect("a JSON string");
            prop_assert_eq!(serde_json::from_str::<Abo>(&json).ok(), Abo::parse(&text));
        }

        #[test]
        fn typing_is_normalised_or_every_problem_reported(
            a in prop::collection::vec(arb_allele(), 0..4),
            b in prop::collection::vec(arb_allele(), 0..3),
            drb1 in prop::collection::vec(arb_allele(), 0..3),
        ) {
            let hla = Hla { a: a.clone(), b: b.clone(), drb1: drb1.clone(), ..Hla::default() };
            let bad = |alleles: &[String], prefix: &str| {
                alleles.iter().filter(|x| !is_allele(&x.trim().to_ascii_uppercase(), prefix)).count()
                    + usize::from(alleles.len() > 2)
            };
            let problems = bad(&a, "A") + bad(&b, "B") + bad(&drb1, "DRB1");
            match hla.normalized() {
                Ok(n) => {
                    prop_assert_eq!(problems, 0);
                    prop_assert_eq!(n.normalized(), Ok(n.clone()), "normalising twice changes nothing");
                    for (typed, raw) in [(&n.a, &a), (&n.b, &b), (&n.drb1, &drb1)] {
                        let expected: Vec<String> = raw.iter().map(|x| x.trim().to_ascii_uppercase()).collect();
                        prop_assert_eq!(typed, &expected);
                    }
                }
                Err(errors) => {
                    prop_assert_eq!(errors.len(), problems);
                    prop_assert!(errors.iter().all(|e| e.field.starts_with("hla.") && !e.message.is_empty()));
                }
            }
        }
    }
}
