//! Receipt of a supplier unit from the scanned data strings of its label (ISBT 128, interop.md
//! §1): which structures it needs, which blood groups a unit can be received with, and every
//! disagreement between the bag and what was typed. Each scan is one data string as a scanner
//! sends it (one barcode per read, or several concatenated).

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

use super::blood::{Abo, Rhd, UnitRhd};
use super::isbt128::{self, BloodGroup, Din, Element, IsbtError};
use super::wall_clock::earliest_instant;

/// A structure a received unit's label gives, each either scanned or typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Structure {
    Din,
    BloodGroup,
    Product,
    Expiry,
    Collection,
}

impl Structure {
    pub const ALL: [Self; 5] = [
        Self::Din,
        Self::BloodGroup,
        Self::Product,
        Self::Expiry,
        Self::Collection,
    ];

    /// As people call it, with its data identifiers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Din => "DIN (=)",
            Self::BloodGroup => "blood group (=%)",
            Self::Product => "product code (=<)",
            Self::Expiry => "expiry (&> or =>)",
            Self::Collection => "collection date (&* or =*)",
        }
    }

    /// The typed field that can stand in for it.
    pub fn typed_field(self) -> &'static str {
        match self {
            Self::Din => "din",
            Self::BloodGroup => "abo and rhd",
            Self::Product => "product_code",
            Self::Expiry => "expires_at",
            Self::Collection => "collected_at",
        }
    }

    /// The structure a data string starts with, by its identifier (for naming what failed).
    fn of_data(data: &str) -> Option<Self> {
        let data = data.trim();
        let id = data.get(..2)?;
        match id {
            "=%" => Some(Self::BloodGroup),
            "=<" => Some(Self::Product),
            "=>" | "&>" => Some(Self::Expiry),
            "=*" | "&*" => Some(Self::Collection),
            _ if id.starts_with('=') && id.as_bytes()[1].is_ascii_alphanumeric() => Some(Self::Din),
            _ => None,
        }
    }
}

/// A value read from `scans[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned<T> {
    pub index: usize,
    /// The structure's data string as scanned (`=%6200`).
    pub data: String,
    pub value: T,
}

/// A scanned date: the instant it stands for, and its day on the facility's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelTime {
    /// A date-only expiry ends at 23:59 of its day (ST-001 §2.4.5); a date-only collection is
    /// taken at the start of its day, the reading that never lengthens the unit's life.
    pub at: DateTime<Utc>,
    pub day: NaiveDate,
    /// The label gives the day only (`=>`, `=*`).
    pub date_only: bool,
}

/// What the scans say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScannedLabel {
    pub din: Option<Scanned<Din>>,
    pub group: Option<Scanned<(Abo, UnitRhd)>>,
    pub product: Option<Scanned<String>>,
    pub expiry: Option<Scanned<LabelTime>>,
    pub collection: Option<Scanned<LabelTime>>,
}

/// Why the scans cannot be received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanProblem {
    /// `scans[index]` is not ISBT 128 this service reads (unknown identifier, malformed content,
    /// wrong check character).
    Unreadable {
        index: usize,
        data: String,
        error: IsbtError,
    },
    /// Two scans of one structure say different things.
    Repeated {
        structure: Structure,
        first: usize,
        second: usize,
    },
    /// The structure was neither scanned nor typed.
    Missing { structure: Structure },
    /// A valid `=%` code that does not give a group a unit can be received with.
    GroupNotAccepted {
        index: usize,
        code: String,
        why: &'static str,
    },
}

impl ScanProblem {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreadable { error, .. } => error.code(),
            Self::Repeated { .. } => "structure_repeated",
            Self::Missing { .. } => "structure_missing",
            Self::GroupNotAccepted { .. } => "blood_group_not_accepted",
        }
    }

    /// The request field it is about.
    pub fn field(&self) -> String {
        match self {
            Self::Unreadable { index, .. } | Self::GroupNotAccepted { index, .. } => format!("scans[{index}]"),
            Self::Repeated { second, .. } => format!("scans[{second}]"),
            Self::Missing { .. } => "scans".to_owned(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Unreadable { index, data, error } => {
                let what = Structure::of_data(data).map_or("unknown structure", Structure::name);
                format!("scans[{index}] ({what}, {data:?}): {error}")
            }
            Self::Repeated {
                structure,
                first,
                second,
            } => format!(
                "scans[{first}] and scans[{second}] give different {}s",
                structure.name()
            ),
            Self::Missing { structure } => format!(
                "no {} was scanned and {} was not typed",
                structure.name(),
                structure.typed_field()
            ),
            Self::GroupNotAccepted { index, code, why } => {
                format!("scans[{index}] (blood group (=%), code {code:?}) {why}")
            }
        }
    }
}

/// A typed field that disagrees with the bag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub field: &'static str,
    pub scanned: String,
    pub typed: String,
}

impl Discrepancy {
    /// `abo_mismatch`, `rhd_mismatch`, `din_mismatch`, `product_code_mismatch`,
    /// `expires_at_mismatch`, `collected_at_mismatch`.
    pub fn code(&self) -> &'static str {
        match self.field {
            "din" => "din_mismatch",
            "abo" => "abo_mismatch",
            "rhd" => "rhd_mismatch",
            "product_code" => "product_code_mismatch",
            "expires_at" => "expires_at_mismatch",
            _ => "collected_at_mismatch",
        }
    }

    pub fn message(&self) -> String {
        format!(
            "{}: the label says {}, {} was typed",
            self.field, self.scanned, self.typed
        )
    }
}

/// What was typed beside the scans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypedLabel {
    pub din: Option<Din>,
    pub abo: Option<Abo>,
    pub rhd: Option<UnitRhd>,
    /// `αooootds`, without `=<`.
    pub product_code: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub collected_at: Option<DateTime<Utc>>,
}

/// The label as received: every structure, scanned or typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedLabel {
    pub din: Din,
    pub abo: Abo,
    pub rhd: UnitRhd,
    pub product_code: String,
    pub expires_at: DateTime<Utc>,
    pub collected_at: DateTime<Utc>,
}

/// Why a label is refused: unreadable or incomplete scans, or typed fields that disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRefusal {
    Problems(Vec<ScanProblem>),
    Mismatch(Vec<Discrepancy>),
}

/// The unit group a `=%` code gives, or why a unit cannot be received with it.
pub fn unit_group(group: &BloodGroup) -> Result<(Abo, UnitRhd), &'static str> {
    let rhd = |r: Rhd| match r {
        Rhd::Positive => UnitRhd::Positive,
        Rhd::Negative => UnitRhd::Negative,
    };
    match (group.abo, group.rhd, group.meaning) {
        (Some(abo), None, "pooled_rhd") => Ok((abo, UnitRhd::Pooled)),
        (Some(abo), Some(r), "default" | "emergency" | "directed_crossover" | "autologous_crossover") => {
            Ok((abo, rhd(r)))
        }
        (_, _, "directed") => Err("restricts the unit to directed use; it cannot join the bank's stock"),
        (_, _, "autologous") => Err("restricts the unit to autologous use; it cannot join the bank's stock"),
        (_, _, "directed_biohazardous" | "autologous_biohazardous") => {
            Err("marks the unit biohazardous, for its own recipient only")
        }
        (_, _, "rhd_not_specified") => Err("gives the ABO group with RhD not specified; a unit needs its RhD"),
        (_, _, "pooled_abo") => Err("is a pooled-ABO code; a unit needs its ABO group"),
        (_, _, "no_information") => Err("carries no ABO or RhD information"),
        (_, _, "discard") => Err("is the special message 'discard (to be destroyed)'"),
        (_, _, "quarantine") => Err("is the special message 'quarantine / hold for further testing'"),
        (_, _, "not_for_transfusion") => Err("is the special message 'not for transfusion'"),
        _ => Err("is a special message, not a blood group"),
    }
}

/// Keeps the first reading of a structure; a later one with different content is a problem.
fn keep<T: PartialEq>(
    slot: &mut Option<Scanned<T>>,
    new: Scanned<T>,
    structure: Structure,
    problems: &mut Vec<ScanProblem>,
) {
    if let Some(old) = slot.as_ref() {
        if old.value != new.value {
            problems.push(ScanProblem::Repeated {
                structure,
                first: old.index,
                second: new.index,
            });
        }
    } else {
        *slot = Some(new);
    }
}

/// A date as the label gives it, in the facility's zone `tz`.
fn label_time(local: chrono::NaiveDateTime, at: DateTime<Utc>, date_only: bool, tz: Tz, expiry: bool) -> LabelTime {
    let day = local.date();
    let at = if date_only && !expiry {
        earliest_instant(tz, day.and_time(chrono::NaiveTime::MIN))
    } else {
        at
    };
    LabelTime { at, day, date_only }
}

/// Reads every scan; every problem is reported, not only the first.
pub fn read_label(scans: &[String], tz: Tz) -> Result<ScannedLabel, Vec<ScanProblem>> {
    let mut label = ScannedLabel::default();
    let mut problems = Vec::new();
    for (index, data) in scans.iter().enumerate() {
        let elements = match isbt128::decode_in(data, tz) {
            Ok(e) => e,
            Err(error) => {
                problems.push(ScanProblem::Unreadable {
                    index,
                    data: data.trim().to_owned(),
                    error,
                });
                continue;
            }
        };
        for element in elements {
            match element {
                Element::Din { data, din, .. } => match Din::parse(&din) {
                    Ok(din) => keep(
                        &mut label.din,
                        Scanned {
                            index,
                            data,
                            value: din,
                        },
                        Structure::Din,
                        &mut problems,
                    ),
                    Err(error) => problems.push(ScanProblem::Unreadable { index, data, error }),
                },
                Element::BloodGroup { data, group } => match unit_group(&group) {
                    Ok(g) => keep(
                        &mut label.group,
                        Scanned { index, data, value: g },
                        Structure::BloodGroup,
                        &mut problems,
                    ),
                    Err(why) => problems.push(ScanProblem::GroupNotAccepted {
                        index,
                        code: group.code,
                        why,
                    }),
                },
                Element::ProductCode { data, .. } => {
                    let code = data.get(2..).unwrap_or_default().to_owned();
                    keep(
                        &mut label.product,
                        Scanned {
                            index,
                            data,
                            value: code,
                        },
                        Structure::Product,
                        &mut problems,
                    );
                }
                Element::ExpirationDate { data, local, at: t } | Element::ExpirationDateTime { data, local, at: t } => {
                    let date_only = data.starts_with("=>");
                    let time = label_time(local, t, date_only, tz, true);
                    keep_time(
                        &mut label.expiry,
                        Scanned {
                            index,
                            data,
                            value: time,
                        },
                        Structure::Expiry,
                        &mut problems,
                    );
                }
                Element::CollectionDate { data, local, at: t } | Element::CollectionDateTime { data, local, at: t } => {
                    let date_only = data.starts_with("=*");
                    let time = label_time(local, t, date_only, tz, false);
                    keep_time(
                        &mut label.collection,
                        Scanned {
                            index,
                            data,
                            value: time,
                        },
                        Structure::Collection,
                        &mut problems,
                    );
                }
            }
        }
    }
    if problems.is_empty() { Ok(label) } else { Err(problems) }
}

/// A date and a date-and-time of the same day agree (the date-only `=>` and the `&>` of one
/// label); the one with the time is kept.
fn keep_time(
    slot: &mut Option<Scanned<LabelTime>>,
    new: Scanned<LabelTime>,
    structure: Structure,
    problems: &mut Vec<ScanProblem>,
) {
    if let Some(old) = slot.as_ref()
        && old.value.day == new.value.day
        && (old.value.date_only || new.value.date_only)
    {
        if old.value.date_only && !new.value.date_only {
            *slot = Some(new);
        }
        return;
    }
    keep(slot, new, structure, problems);
}

/// Truncated to the minute: labels carry no seconds.
fn to_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(t)
}

fn time_text(t: &LabelTime) -> String {
    if t.date_only {
        format!("the day {}", t.day)
    } else {
        t.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// Whether a typed instant says what the label says: the same minute, or for a label that
/// gives only the day, a time on that local day.
fn same_time(label: &LabelTime, typed: DateTime<Utc>, tz: Tz) -> bool {
    if label.date_only {
        typed.with_timezone(&tz).date_naive() == label.day
    } else {
        to_minute(label.at) == to_minute(typed)
    }
}

/// Every typed field that disagrees with the scans (fields not typed, or not scanned, are not
/// compared).
pub fn compare(scanned: &ScannedLabel, typed: &TypedLabel, tz: Tz) -> Vec<Discrepancy> {
    let mut out = Vec::new();
    let utc_text = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let (Some(s), Some(t)) = (&scanned.din, &typed.din)
        && s.value != *t
    {
        out.push(Discrepancy {
            field: "din",
            scanned: s.value.as_text(),
            typed: t.as_text(),
        });
    }
    if let Some(s) = &scanned.group {
        let (abo, rhd) = s.value;
        if let Some(t) = typed.abo
            && t != abo
        {
            out.push(Discrepancy {
                field: "abo",
                scanned: abo.as_str().to_owned(),
                typed: t.as_str().to_owned(),
            });
        }
        if let Some(t) = typed.rhd
            && t != rhd
        {
            out.push(Discrepancy {
                field: "rhd",
                scanned: rhd.as_str().to_owned(),
                typed: t.as_str().to_owned(),
            });
        }
    }
    if let (Some(s), Some(t)) = (&scanned.product, &typed.product_code)
        && s.value != *t
    {
        out.push(Discrepancy {
            field: "product_code",
            scanned: s.value.clone(),
            typed: t.clone(),
        });
    }
    for (field, s, t) in [
        ("expires_at", &scanned.expiry, typed.expires_at),
        ("collected_at", &scanned.collection, typed.collected_at),
    ] {
        if let (Some(s), Some(t)) = (s, t)
            && !same_time(&s.value, t, tz)
        {
            out.push(Discrepancy {
                field,
                scanned: time_text(&s.value),
                typed: utc_text(t),
            });
        }
    }
    out
}

/// Reads the scans, fills what was not scanned from what was typed, and refuses when a
/// structure is unreadable, repeated with different content, or missing, or when a typed field
/// disagrees with the bag.
pub fn receive(scans: &[String], typed: &TypedLabel, tz: Tz) -> Result<ReceivedLabel, LabelRefusal> {
    let scanned = read_label(scans, tz).map_err(LabelRefusal::Problems)?;
    let din = scanned
        .din
        .as_ref()
        .map(|s| s.value.clone())
        .or_else(|| typed.din.clone());
    let group = scanned.group.as_ref().map(|s| s.value).or(typed.abo.zip(typed.rhd));
    let product = scanned
        .product
        .as_ref()
        .map(|s| s.value.clone())
        .or_else(|| typed.product_code.clone());
    let expiry = scanned.expiry.as_ref().map(|s| s.value.at).or(typed.expires_at);
    let collection = scanned.collection.as_ref().map(|s| s.value.at).or(typed.collected_at);
    let missing: Vec<ScanProblem> = [
        (Structure::Din, din.is_some()),
        (Structure::BloodGroup, group.is_some()),
        (Structure::Product, product.is_some()),
        (Structure::Expiry, expiry.is_some()),
        (Structure::Collection, collection.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(structure, _)| ScanProblem::Missing { structure })
    .collect();
    let (Some(din), Some((abo, rhd)), Some(product_code), Some(expires_at), Some(collected_at)) =
        (din, group, product, expiry, collection)
    else {
        return Err(LabelRefusal::Problems(missing));
    };
    let discrepancies = compare(&scanned, typed, tz);
    if !discrepancies.is_empty() {
        return Err(LabelRefusal::Mismatch(discrepancies));
    }
    Ok(ReceivedLabel {
        din,
        abo,
        rhd,
        product_code,
        expires_at,
        collected_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const UTC: Tz = chrono_tz::UTC;
    const DIN: &str = "=G12341765432170";
    const GROUP: &str = "=%6200";
    const PRODUCT: &str = "=<E1234V00";
    const EXPIRY: &str = "&>0263301200";
    const COLLECTED: &str = "&*0263291200";

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    fn scans(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn full() -> Vec<String> {
        scans(&[DIN, GROUP, PRODUCT, EXPIRY, COLLECTED])
    }

    fn problems(list: &[&str], typed: &TypedLabel) -> Vec<(String, String)> {
        match receive(&scans(list), typed, UTC) {
            Err(LabelRefusal::Problems(p)) => p.iter().map(|p| (p.code().to_owned(), p.field())).collect(),
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn a_full_label_needs_no_typing() {
        let got = receive(&full(), &TypedLabel::default(), UTC).expect("received");
        assert_eq!(
            got,
            ReceivedLabel {
                din: Din::parse("G123417654321").expect("din"),
                abo: Abo::A,
                rhd: UnitRhd::Positive,
                product_code: "E1234V00".to_owned(),
                expires_at: t("2026-11-26T12:00:00Z"),
                collected_at: t("2026-11-25T12:00:00Z"),
            }
        );
        // One concatenated read (a scanner in concatenation mode) gives the same.
        let concatenated = vec![full().concat()];
        assert_eq!(receive(&concatenated, &TypedLabel::default(), UTC), Ok(got.clone()));
        // The same structure scanned twice is one reading; flags other than Type 3 carry no check.
        let twice = scans(&[DIN, GROUP, PRODUCT, EXPIRY, COLLECTED, DIN, GROUP]);
        assert_eq!(receive(&twice, &TypedLabel::default(), UTC), Ok(got.clone()));
        for din in ["=G12341765432100", "=G12341765432101", "=G12341765432142"] {
            let mut s = full();
            s[0] = din.to_owned();
            assert_eq!(
                receive(&s, &TypedLabel::default(), UTC).map(|l| l.din),
                Ok(got.din.clone()),
                "{din}"
            );
        }
        // Typed fields that agree with the bag are accepted (seconds are not on a label).
        let typed = TypedLabel {
            din: Some(got.din.clone()),
            abo: Some(Abo::A),
            rhd: Some(UnitRhd::Positive),
            product_code: Some("E1234V00".to_owned()),
            expires_at: Some(t("2026-11-26T12:00:40Z")),
            collected_at: Some(t("2026-11-25T12:00:00Z")),
        };
        assert_eq!(receive(&full(), &typed, UTC), Ok(got));
    }

    #[test]
    fn every_malformed_or_unknown_structure_is_named() {
        let cases: &[(&str, &str, &str)] = &[
            // (scan, reason code, structure named in the message)
            ("=+05000", "unsupported_data_structure", "unknown structure"),
            ("&a12345", "unsupported_data_structure", "unknown structure"),
            (
                "=\\620000000000000000",
                "unsupported_data_structure",
                "unknown structure",
            ),
            ("A99992112345600", "unsupported_data_structure", "unknown structure"),
            ("=G123417654321", "invalid_isbt128", "DIN (=)"),
            ("=G12341765432198", "invalid_isbt128", "DIN (=)"),
            ("=G1234176543217X", "invalid_isbt128", "DIN (=)"),
            ("=O12341765432100", "invalid_isbt128", "DIN (=)"),
            ("=G12341765432171", "invalid_check_character", "DIN (=)"),
            ("=G12341765432196", "invalid_check_character", "DIN (=)"),
            ("=%6201", "invalid_isbt128", "blood group (=%)"),
            ("=%ZZ00", "invalid_isbt128", "blood group (=%)"),
            ("=%D600", "invalid_isbt128", "blood group (=%)"),
            ("=%62", "invalid_isbt128", "blood group (=%)"),
            ("=<e1234V00", "invalid_isbt128", "product code (=<)"),
            ("=<E1234Z00", "invalid_isbt128", "product code (=<)"),
            ("=<E1234V0", "invalid_isbt128", "product code (=<)"),
            ("&>0253660000", "invalid_isbt128", "expiry (&> or =>)"),
            ("&>0263302400", "invalid_isbt128", "expiry (&> or =>)"),
            ("=>02633", "invalid_isbt128", "expiry (&> or =>)"),
            ("&*0263290060", "invalid_isbt128", "collection date (&* or =*)"),
            ("=*026000", "invalid_isbt128", "collection date (&* or =*)"),
            ("", "invalid_isbt128", "unknown structure"),
            ("=%62é0", "invalid_isbt128", "blood group (=%)"),
        ];
        for (scan, code, structure) in cases {
            let mut s = full();
            s.push((*scan).to_owned());
            let Err(LabelRefusal::Problems(p)) = receive(&s, &TypedLabel::default(), UTC) else {
                panic!("{scan:?} accepted");
            };
            assert_eq!(p.len(), 1, "{scan:?}: {p:?}");
            assert_eq!((p[0].code(), p[0].field()), (*code, "scans[5]".to_owned()), "{scan:?}");
            assert!(p[0].message().contains(structure), "{scan:?}: {}", p[0].message());
        }
        // Every problem is reported, each with its index.
        let got = problems(
            &["=+05000", GROUP, "=%6201", "=G12341765432171"],
            &TypedLabel::default(),
        );
        assert_eq!(
            got,
            vec![
                ("unsupported_data_structure".to_owned(), "scans[0]".to_owned()),
                ("invalid_isbt128".to_owned(), "scans[2]".to_owned()),
                ("invalid_check_character".to_owned(), "scans[3]".to_owned()),
            ]
        );
    }

    #[test]
    fn a_structure_scanned_twice_must_say_the_same() {
        let repeated = |extra: &str| {
            let mut s = full();
            s.push(extra.to_owned());
            problems(
                &s.iter().map(String::as_str).collect::<Vec<_>>(),
                &TypedLabel::default(),
            )
        };
        let one = |code: &str| vec![(code.to_owned(), "scans[5]".to_owned())];
        assert_eq!(repeated("=A99992112345663"), one("structure_repeated"), "two DINs");
        assert_eq!(repeated("=%5100"), one("structure_repeated"), "two groups");
        assert_eq!(repeated("=<E1234VAb"), one("structure_repeated"), "two products");
        assert_eq!(repeated("&>0263301300"), one("structure_repeated"), "two expiries");
        assert_eq!(
            repeated("=>026331"),
            one("structure_repeated"),
            "expiry date of another day"
        );
        assert_eq!(repeated("&*0263281200"), one("structure_repeated"), "two collections");
        // A date-only structure of the same day as the timed one agrees with it; the time is kept.
        for extra in ["=>026330", "=*026329"] {
            let mut s = full();
            s.push(extra.to_owned());
            assert_eq!(
                receive(&s, &TypedLabel::default(), UTC),
                receive(&full(), &TypedLabel::default(), UTC)
            );
        }
        let mut date_first = scans(&["=>026330"]);
        date_first.extend(full());
        assert_eq!(
            receive(&date_first, &TypedLabel::default(), UTC).map(|l| l.expires_at),
            Ok(t("2026-11-26T12:00:00Z"))
        );
    }

    #[test]
    fn every_structure_is_scanned_or_typed() {
        let typed_all = TypedLabel {
            din: Some(Din::parse("G123417654321").expect("din")),
            abo: Some(Abo::A),
            rhd: Some(UnitRhd::Positive),
            product_code: Some("E1234V00".to_owned()),
            expires_at: Some(t("2026-11-26T12:00:00Z")),
            collected_at: Some(t("2026-11-25T12:00:00Z")),
        };
        let all = full();
        for (i, structure) in Structure::ALL.iter().enumerate() {
            let mut fewer = all.clone();
            fewer.remove(i);
            let list: Vec<&str> = fewer.iter().map(String::as_str).collect();
            let Err(LabelRefusal::Problems(p)) = receive(&fewer, &TypedLabel::default(), UTC) else {
                panic!("{structure:?} not missed");
            };
            assert_eq!(p, vec![ScanProblem::Missing { structure: *structure }]);
            assert!(p[0].message().contains(structure.name()), "{}", p[0].message());
            // Typed instead, it is taken.
            assert!(receive(&fewer, &typed_all, UTC).is_ok(), "{list:?}");
        }
        // Half a blood group typed is no blood group.
        let no_group = scans(&[DIN, PRODUCT, EXPIRY, COLLECTED]);
        let abo_only = TypedLabel {
            abo: Some(Abo::A),
            ..TypedLabel::default()
        };
        assert_eq!(
            receive(&no_group, &abo_only, UTC),
            Err(LabelRefusal::Problems(vec![ScanProblem::Missing {
                structure: Structure::BloodGroup
            }]))
        );
        // Nothing scanned and nothing typed: all five named.
        assert_eq!(problems(&[], &TypedLabel::default()).len(), 5);
    }

    #[test]
    fn every_discrepancy_is_named_with_both_values() {
        let din = |s: &str| Some(Din::parse(s).expect("din"));
        let cases: Vec<(TypedLabel, &str, &str, &str)> = vec![
            (
                TypedLabel {
                    din: din("A999921123456"),
                    ..TypedLabel::default()
                },
                "din",
                "G123417654321",
                "A999921123456",
            ),
            (
                TypedLabel {
                    abo: Some(Abo::B),
                    ..TypedLabel::default()
                },
                "abo",
                "A",
                "B",
            ),
            (
                TypedLabel {
                    abo: Some(Abo::Ab),
                    ..TypedLabel::default()
                },
                "abo",
                "A",
                "AB",
            ),
            (
                TypedLabel {
                    rhd: Some(UnitRhd::Negative),
                    ..TypedLabel::default()
                },
                "rhd",
                "positive",
                "negative",
            ),
            (
                TypedLabel {
                    rhd: Some(UnitRhd::Pooled),
                    ..TypedLabel::default()
                },
                "rhd",
                "positive",
                "pooled",
            ),
            (
                TypedLabel {
                    product_code: Some("E9999V00".to_owned()),
                    ..TypedLabel::default()
                },
                "product_code",
                "E1234V00",
                "E9999V00",
            ),
            (
                TypedLabel {
                    expires_at: Some(t("2026-11-26T13:00:00Z")),
                    ..TypedLabel::default()
                },
                "expires_at",
                "2026-11-26T12:00:00Z",
                "2026-11-26T13:00:00Z",
            ),
            (
                TypedLabel {
                    expires_at: Some(t("2026-11-26T12:01:00Z")),
                    ..TypedLabel::default()
                },
                "expires_at",
                "2026-11-26T12:00:00Z",
                "2026-11-26T12:01:00Z",
            ),
            (
                TypedLabel {
                    collected_at: Some(t("2026-11-25T11:59:00Z")),
                    ..TypedLabel::default()
                },
                "collected_at",
                "2026-11-25T12:00:00Z",
                "2026-11-25T11:59:00Z",
            ),
        ];
        for (typed, field, scanned, typed_text) in &cases {
            let expected = Discrepancy {
                field,
                scanned: (*scanned).to_owned(),
                typed: (*typed_text).to_owned(),
            };
            assert_eq!(
                receive(&full(), typed, UTC),
                Err(LabelRefusal::Mismatch(vec![expected.clone()])),
                "{field}"
            );
            assert_eq!(expected.code(), format!("{field}_mismatch"));
            assert!(expected.message().contains(scanned) && expected.message().contains(typed_text));
        }
        // All at once: every one named, in a fixed order.
        let everything = TypedLabel {
            din: din("A999921123456"),
            abo: Some(Abo::B),
            rhd: Some(UnitRhd::Negative),
            product_code: Some("E9999V00".to_owned()),
            expires_at: Some(t("2026-11-27T12:00:00Z")),
            collected_at: Some(t("2026-11-24T12:00:00Z")),
        };
        let Err(LabelRefusal::Mismatch(all)) = receive(&full(), &everything, UTC) else {
            panic!("accepted");
        };
        let fields: Vec<&str> = all.iter().map(|d| d.field).collect();
        assert_eq!(
            fields,
            ["din", "abo", "rhd", "product_code", "expires_at", "collected_at"]
        );
    }

    #[test]
    fn label_dates_are_compared_as_instants_on_the_facilitys_clock() {
        let ny = chrono_tz::America::New_York;
        // 12:00 in New York on 26 Nov 2026 is 17:00 UTC.
        let typed = |at: &str| TypedLabel {
            expires_at: Some(t(at)),
            ..TypedLabel::default()
        };
        assert!(receive(&full(), &typed("2026-11-26T17:00:00Z"), ny).is_ok());
        assert!(matches!(
            receive(&full(), &typed("2026-11-26T12:00:00Z"), ny),
            Err(LabelRefusal::Mismatch(d)) if d[0].field == "expires_at"
        ));
        // A date-only expiry ends at 23:59 of its day; a typed time that day agrees.
        let date_only = scans(&[DIN, GROUP, PRODUCT, "=>026330", COLLECTED]);
        let got = receive(&date_only, &TypedLabel::default(), ny).expect("received");
        assert_eq!(got.expires_at, t("2026-11-27T04:59:00Z"));
        assert!(receive(&date_only, &typed("2026-11-26T20:00:00Z"), ny).is_ok());
        assert_eq!(
            receive(&date_only, &typed("2026-11-27T06:00:00Z"), ny),
            Err(LabelRefusal::Mismatch(vec![Discrepancy {
                field: "expires_at",
                scanned: "the day 2026-11-26".to_owned(),
                typed: "2026-11-27T06:00:00Z".to_owned(),
            }]))
        );
        // A date-only collection counts from the start of its day, never later.
        let collected_day = scans(&[DIN, GROUP, PRODUCT, EXPIRY, "=*026329"]);
        let got = receive(&collected_day, &TypedLabel::default(), ny).expect("received");
        assert_eq!(got.collected_at, t("2026-11-25T05:00:00Z"));
        assert_eq!(got.collected_at + TimeDelta::hours(19), t("2026-11-26T00:00:00Z"));
    }

    #[test]
    fn pooled_and_refused_blood_group_codes() {
        for (code, abo) in [("D0", Abo::O), ("A0", Abo::A), ("B0", Abo::B), ("C0", Abo::Ab)] {
            assert_eq!(isbt128::pooled_rhd_code(abo), code);
            let s = scans(&[DIN, &format!("=%{code}00"), PRODUCT, EXPIRY, COLLECTED]);
            let got = receive(&s, &TypedLabel::default(), UTC).expect("pooled RhD");
            assert_eq!((got.abo, got.rhd), (abo, UnitRhd::Pooled), "{code}");
            // A pool typed as one RhD disagrees with the bag.
            let typed = TypedLabel {
                rhd: Some(UnitRhd::Positive),
                ..TypedLabel::default()
            };
            assert!(matches!(receive(&s, &typed, UTC), Err(LabelRefusal::Mismatch(d)) if d[0].field == "rhd"));
        }
        // Every ABO/RhD of Table 4 in the columns a bank's stock takes.
        for (gg, abo, rhd) in [
            ("95", Abo::O, UnitRhd::Negative),
            ("51", Abo::O, UnitRhd::Positive),
            ("06", Abo::A, UnitRhd::Negative),
            ("62", Abo::A, UnitRhd::Positive),
            ("17", Abo::B, UnitRhd::Negative),
            ("73", Abo::B, UnitRhd::Positive),
            ("28", Abo::Ab, UnitRhd::Negative),
            ("84", Abo::Ab, UnitRhd::Positive),
            ("92", Abo::O, UnitRhd::Negative),
            ("94", Abo::O, UnitRhd::Negative),
            ("96", Abo::O, UnitRhd::Negative),
        ] {
            let s = scans(&[DIN, &format!("=%{gg}00"), PRODUCT, EXPIRY, COLLECTED]);
            let got = receive(&s, &TypedLabel::default(), UTC).expect("group");
            assert_eq!((got.abo, got.rhd), (abo, rhd), "{gg}");
        }
        // RhD not specified, pooled ABO, no information, special messages, restricted use.
        for gg in [
            "55", "66", "77", "88", "E0", "F0", "G0", "H0", "00", "Md", "Mq", "Mx", "Ma", "Mb", "Mf", "Mr", "91", "93",
            "97", "98",
        ] {
            let s = scans(&[DIN, &format!("=%{gg}00"), PRODUCT, EXPIRY, COLLECTED]);
            let Err(LabelRefusal::Problems(p)) = receive(&s, &TypedLabel::default(), UTC) else {
                panic!("{gg} accepted");
            };
            assert_eq!(p.len(), 1);
            assert_eq!(
                (p[0].code(), p[0].field()),
                ("blood_group_not_accepted", "scans[1]".to_owned()),
                "{gg}"
            );
            assert!(p[0].message().contains(gg), "{}", p[0].message());
        }
    }
}
