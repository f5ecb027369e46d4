//! ISBT 128 (ICCBBA ST-001) for the structures a granulocyte unit carries: the Donation
//! Identification Number with its ISO/IEC 7064 MOD 37-2 check character and flags (`=`), blood
//! groups (`=%`), product code (`=<`), and dates (`=>` / `&>` expiry, `=*` / `&*` collection).
//! References are to interop.md §1. Product description codes are licensed: they are validated
//! for shape only and never invented here.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde::Serialize;

use crate::domain::blood::{Abo, Rhd};

/// Why data could not be read. `code()` is the stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsbtError {
    #[error("check character {found:?} does not match the DIN (expected {expected:?})")]
    InvalidCheckCharacter { expected: char, found: char },
    #[error("{what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("unknown or unsupported data identifier at {at:?}")]
    UnsupportedIdentifier { at: String },
}

impl IsbtError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidCheckCharacter { .. } => "invalid_check_character",
            Self::Malformed { .. } => "invalid_isbt128",
            Self::UnsupportedIdentifier { .. } => "unsupported_data_structure",
        }
    }
}

fn malformed(what: &'static str, message: impl Into<String>) -> IsbtError {
    IsbtError::Malformed {
        what,
        message: message.into(),
    }
}

/// ISO/IEC 7064 MOD 37-2 alphabet: 0–9, A–Z, `*` (values 0–36).
const ALPHABET: &[u8; 37] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*";

fn value_of(c: u8) -> Option<u32> {
    ALPHABET
        .iter()
        .position(|&a| a == c)
        .and_then(|p| u32::try_from(p).ok())
}

/// The MOD 37-2 checksum (0–36) of `data` (upper-case alphanumerics).
pub fn checksum(data: &str) -> Option<u32> {
    let mut p = 0u32;
    for b in data.bytes() {
        p = ((p + value_of(b)?) * 2) % 37;
    }
    Some((38 - p) % 37)
}

/// The keyboard check character K printed boxed after the DIN.
pub fn check_character(din: &str) -> Option<char> {
    checksum(din).map(|c| char::from(ALPHABET[c as usize]))
}

/// A 13-character Donation Identification Number `αppppyynnnnnn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Din {
    /// Facility Identification Number `αpppp`.
    pub fin: String,
    /// Last two digits of the nominal year of assignment.
    pub year: u8,
    /// Sequence number within the year for the FIN.
    pub sequence: u32,
}

impl Din {
    pub const MAX_SEQUENCE: u32 = 999_999;

    pub fn new(fin: &str, year: u8, sequence: u32) -> Result<Self, IsbtError> {
        validate_fin(fin)?;
        if year > 99 {
            return Err(malformed("DIN", "year must be two digits"));
        }
        if sequence > Self::MAX_SEQUENCE {
            return Err(malformed("DIN", "sequence number must be at most 999999"));
        }
        Ok(Self {
            fin: fin.to_owned(),
            year,
            sequence,
        })
    }

    /// Parses the 13 characters (no identifier, flags or check character).
    pub fn parse(text: &str) -> Result<Self, IsbtError> {
        if text.len() != 13 || !text.is_ascii() {
            return Err(malformed("DIN", format!("must be 13 characters, got {:?}", text)));
        }
        let (fin, rest) = text.split_at(5);
        let (yy, nnnnnn) = rest.split_at(2);
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits(yy) || !digits(nnnnnn) {
            return Err(malformed("DIN", "year and sequence number must be digits"));
        }
        Self::new(
            fin,
            yy.parse().map_err(|_| malformed("DIN", "bad year"))?,
            nnnnnn.parse().map_err(|_| malformed("DIN", "bad sequence"))?,
        )
    }

    /// Parses a DIN followed by its check character (14 characters, as keyed or printed).
    pub fn parse_keyed(text: &str) -> Result<Self, IsbtError> {
        let text = text.trim().to_ascii_uppercase();
        // ASCII first: a 14-byte string with multi-byte characters must not be split at byte 13.
        if text.len() != 14 || !text.is_ascii() {
            return Err(malformed("DIN", "must be 13 characters and the check character"));
        }
        let (din, k) = text.split_at(13);
        let parsed = Self::parse(din)?;
        let expected = parsed.check_character();
        let found = k.chars().next().unwrap_or(' ');
        if found != expected {
            return Err(IsbtError::InvalidCheckCharacter { expected, found });
        }
        Ok(parsed)
    }

    /// A DIN as people and scanners give it: 13 characters, 14 with the check character, the
    /// scanned `=` data structure with flags, or the eye-readable text of the label typed in
    /// full: DIN, flags and check character (`A9999 26 123456 00 X`). Spaces do not count.
    pub fn parse_reference(raw: &str) -> Result<Self, IsbtError> {
        let text: String = raw.split_whitespace().collect::<String>().to_ascii_uppercase();
        match text.len() {
            14 => Self::parse_keyed(&text),
            16 if text.starts_with('=') => decode(&text).and_then(|elements| match elements.first() {
                Some(Element::Din { din, .. }) => Self::parse(din),
                _ => Self::parse(""),
            }),
            16 => Self::parse_printed(&text),
            _ => Self::parse(&text),
        }
    }

    /// The DIN, its two flag characters and its check character (16 characters), as printed.
    fn parse_printed(text: &str) -> Result<Self, IsbtError> {
        // ASCII first: the split below is by bytes.
        if text.len() != 16 || !text.is_ascii() {
            return Err(malformed(
                "DIN",
                "must be 13 characters, the flags and the check character",
            ));
        }
        let (din, rest) = text.split_at(13);
        let (flags, k) = rest.split_at(2);
        let parsed = Self::parse_keyed(&format!("{din}{k}"))?;
        parse_flags(&parsed, flags)?;
        Ok(parsed)
    }

    pub fn as_text(&self) -> String {
        format!("{}{:02}{:06}", self.fin, self.year, self.sequence)
    }

    pub fn check_character(&self) -> char {
        check_character(&self.as_text()).unwrap_or('*')
    }

    /// Type 3 flag digits: 60 + the checksum.
    pub fn type3_flags(&self) -> String {
        format!("{}", 60 + checksum(&self.as_text()).unwrap_or(0))
    }
}

/// `αpppp`: α in A–N, P–Z, 1–9; then two of A–N, P–Z, 0–9; then two digits.
pub fn validate_fin(fin: &str) -> Result<(), IsbtError> {
    let b = fin.as_bytes();
    let letter_or = |c: u8, digits_from: u8| (c.is_ascii_uppercase() && c != b'O') || (digits_from..=b'9').contains(&c);
    let ok = b.len() == 5
        && letter_or(b[0], b'1')
        && letter_or(b[1], b'0')
        && letter_or(b[2], b'0')
        && b[3].is_ascii_digit()
        && b[4].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(malformed(
            "FIN",
            format!("{fin:?} is not a facility identification number (e.g. A9999)"),
        ))
    }
}

/// What the two flag characters after a DIN say (Table 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Flags {
    /// `00`.
    NotUsed,
    /// `01`–`19`: container, label and sample kinds.
    Type1 { value: u8 },
    /// `20`–`59`: facility-specific.
    Local { value: u8 },
    /// `60`–`96`: checksum, verified.
    Type3 { value: u8 },
}

fn parse_flags(din: &Din, ff: &str) -> Result<Flags, IsbtError> {
    // `u8::from_str` also takes a sign (`+1`), which is not a flag.
    let value: u8 = Some(ff)
        .filter(|f| f.len() == 2 && f.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| malformed("DIN flags", format!("{ff:?} is reserved or not numeric")))?;
    match value {
        0 => Ok(Flags::NotUsed),
        1..=19 => Ok(Flags::Type1 { value }),
        20..=59 => Ok(Flags::Local { value }),
        60..=96 => {
            let expected = 60 + checksum(&din.as_text()).unwrap_or(0);
            if u32::from(value) == expected {
                Ok(Flags::Type3 { value })
            } else {
                Err(IsbtError::InvalidCheckCharacter {
                    expected: din.check_character(),
                    found: char::from(ALPHABET[usize::from(value - 60).min(36)]),
                })
            }
        }
        _ => Err(malformed("DIN flags", format!("{ff} is reserved"))),
    }
}

/// Table 4: the default-use column and the other use columns, by ABO/RhD.
const BLOOD_GROUP_CODES: &[(Abo, Rhd, [&str; 8])] = &[
    (Abo::O, Rhd::Negative, ["95", "91", "92", "93", "94", "96", "97", "98"]),
    (Abo::O, Rhd::Positive, ["51", "47", "48", "49", "50", "52", "53", "54"]),
    (Abo::A, Rhd::Negative, ["06", "02", "03", "04", "05", "07", "08", "09"]),
    (Abo::A, Rhd::Positive, ["62", "58", "59", "60", "61", "63", "64", "65"]),
    (Abo::B, Rhd::Negative, ["17", "13", "14", "15", "16", "18", "19", "20"]),
    (Abo::B, Rhd::Positive, ["73", "69", "70", "71", "72", "74", "75", "76"]),
    (Abo::Ab, Rhd::Negative, ["28", "24", "25", "26", "27", "29", "30", "31"]),
    (Abo::Ab, Rhd::Positive, ["84", "80", "81", "82", "83", "85", "86", "87"]),
];

const USES: [&str; 8] = [
    "default",
    "directed",
    "emergency",
    "directed_biohazardous",
    "directed_crossover",
    "autologous_crossover",
    "autologous",
    "autologous_biohazardous",
];

/// The default-use code of a blood group (`=%` label data).
pub fn blood_group_code(abo: Abo, rhd: Rhd) -> &'static str {
    BLOOD_GROUP_CODES
        .iter()
        .find(|(a, r, _)| *a == abo && *r == rhd)
        .map_or("00", |(_, _, codes)| codes[0])
}

/// ABO and RhD of a Table 4 `gg` code (any intended-use column); `None` for codes that are
/// not a blood group (special messages, unknown codes).
pub fn group_of_code(gg: &str) -> Option<(Option<Abo>, Option<Rhd>)> {
    let g = parse_blood_group(&format!("{gg}00")).ok()?;
    (g.abo.is_some() || g.rhd.is_some()).then_some((g.abo, g.rhd))
}

/// The code of a group with pooled RhD (Table 4, pooled products): O `D0`, A `A0`, B `B0`,
/// AB `C0`.
pub fn pooled_rhd_code(abo: Abo) -> &'static str {
    match abo {
        Abo::O => "D0",
        Abo::A => "A0",
        Abo::B => "B0",
        Abo::Ab => "C0",
    }
}

/// The default-use code of an ABO group whose RhD is not specified (Table 4): O `55`, A `66`,
/// B `77`, AB `88`.
pub fn rhd_not_specified_code(abo: Abo) -> &'static str {
    match abo {
        Abo::O => "55",
        Abo::A => "66",
        Abo::B => "77",
        Abo::Ab => "88",
    }
}

/// A decoded `=%ggre`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BloodGroup {
    pub code: String,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
    /// Intended use column of Table 4, or a special message / pooled group.
    pub meaning: &'static str,
    /// Rh/Kell phenotype character (Table 6), `0` = no information.
    pub phenotype: char,
}

fn parse_blood_group(content: &str) -> Result<BloodGroup, IsbtError> {
    if content.len() != 4 || !content.is_ascii() {
        return Err(malformed("blood group", "must be 4 characters (ggre)"));
    }
    let (gg, re) = content.split_at(2);
    let mut chars = re.chars();
    let phenotype = chars.next().unwrap_or('0');
    if chars.next() != Some('0') {
        return Err(malformed("blood group", "the reserved last character must be 0"));
    }
    if !(phenotype.is_ascii_digit() || phenotype.is_ascii_uppercase()) {
        return Err(malformed(
            "blood group",
            format!("phenotype {phenotype:?} is not a Table 6 code"),
        ));
    }
    let found = BLOOD_GROUP_CODES.iter().find_map(|(abo, rhd, codes)| {
        codes
            .iter()
            .position(|c| *c == gg)
            .map(|i| (Some(*abo), Some(*rhd), USES[i]))
    });
    let (abo, rhd, meaning) = match (found, gg) {
        (Some(f), _) => f,
        (None, "55") => (Some(Abo::O), None, "rhd_not_specified"),
        (None, "66") => (Some(Abo::A), None, "rhd_not_specified"),
        (None, "77") => (Some(Abo::B), None, "rhd_not_specified"),
        (None, "88") => (Some(Abo::Ab), None, "rhd_not_specified"),
        (None, "D0") => (Some(Abo::O), None, "pooled_rhd"),
        (None, "A0") => (Some(Abo::A), None, "pooled_rhd"),
        (None, "B0") => (Some(Abo::B), None, "pooled_rhd"),
        (None, "C0") => (Some(Abo::Ab), None, "pooled_rhd"),
        (None, "E0") => (None, Some(Rhd::Positive), "pooled_abo"),
        (None, "F0") => (None, Some(Rhd::Negative), "pooled_abo"),
        (None, "G0" | "H0") => (None, None, "pooled_abo"),
        (None, "00") => (None, None, "no_information"),
        (None, "Md") => (None, None, "discard"),
        (None, "Mq") => (None, None, "quarantine"),
        (None, "Mx") => (None, None, "not_for_transfusion"),
        (None, "Ma" | "Mb" | "Mf" | "Mr") => (None, None, "special_message"),
        _ => {
            return Err(malformed(
                "blood group",
                format!("{gg:?} is not a blood group code this service handles"),
            ));
        }
    };
    Ok(BloodGroup {
        code: gg.to_owned(),
        abo,
        rhd,
        meaning,
        phenotype,
    })
}

/// Table 7 type-of-collection characters.
const COLLECTION_TYPES: &str = "0VRSTPrsA1XDd2LEQ3456FC78BHJG";

/// A decoded `=<αooootds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductCode {
    /// Product Description Code (licensed database; opaque here).
    pub description_code: String,
    pub collection_type: char,
    /// `00` when not divided.
    pub division: String,
}

/// A Product Description Code: `[A-Z][A-Z0-9]{4}`.
pub fn validate_description_code(pdc: &str) -> Result<(), IsbtError> {
    let b = pdc.as_bytes();
    let ok = b.len() == 5
        && b[0].is_ascii_uppercase()
        && b[1..].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(malformed(
            "product code",
            format!("{pdc:?} is not a product description code"),
        ))
    }
}

fn parse_product(content: &str) -> Result<ProductCode, IsbtError> {
    if content.len() != 8 || !content.is_ascii() {
        return Err(malformed("product code", "must be 8 characters (αooootds)"));
    }
    let (pdc, rest) = content.split_at(5);
    validate_description_code(pdc)?;
    let (t, ds) = rest.split_at(1);
    let t = t.chars().next().unwrap_or(' ');
    if !COLLECTION_TYPES.contains(t) {
        return Err(malformed("product code", format!("{t:?} is not a type of collection")));
    }
    let d = ds.as_bytes();
    if ds != "00" && !(d[0].is_ascii_uppercase() && d[1].is_ascii_lowercase()) {
        return Err(malformed("product code", format!("{ds:?} is not a division code")));
    }
    Ok(ProductCode {
        description_code: pdc.to_owned(),
        collection_type: t,
        division: ds.to_owned(),
    })
}

/// `cyyjjj[hhmm]` → a UTC time; without `hhmm` the day ends at 23:59. `c` = 9 means 19yy,
/// otherwise 20yy + 100·c (interop.md §1.6).
pub fn parse_date(content: &str, with_time: bool) -> Result<NaiveDateTime, IsbtError> {
    let len = if with_time { 10 } else { 6 };
    if content.len() != len || !content.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            "date",
            format!("must be {len} digits (cyyjjj{})", if with_time { "hhmm" } else { "" }),
        ));
    }
    let n = |r: std::ops::Range<usize>| content[r].parse::<u32>().unwrap_or(0);
    let (c, yy, jjj) = (n(0..1), n(1..3), n(3..6));
    let year = if c == 9 { 1900 + yy } else { 2000 + 100 * c + yy };
    let date = NaiveDate::from_yo_opt(i32::try_from(year).unwrap_or(0), jjj)
        .ok_or_else(|| malformed("date", format!("day {jjj:03} does not exist in {year}")))?;
    let (hh, mm) = if with_time { (n(6..8), n(8..10)) } else { (23, 59) };
    let time = NaiveTime::from_hms_opt(hh, mm, 0)
        .ok_or_else(|| malformed("date", format!("{hh:02}:{mm:02} is not a time")))?;
    Ok(date.and_time(time))
}

/// A time as `cyyjjjhhmm` (seconds dropped).
pub fn format_date_time(t: NaiveDateTime) -> String {
    let year = t.year();
    let c = if (1900..2000).contains(&year) {
        9
    } else {
        (year - 2000) / 100
    };
    format!("{c}{:02}{:03}{:02}{:02}", year % 100, t.ordinal(), t.hour(), t.minute())
}

/// One decoded data structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "structure", rename_all = "snake_case")]
pub enum Element {
    Din {
        data: String,
        din: String,
        fin: String,
        year: u8,
        sequence: u32,
        check_character: char,
        flags: Flags,
    },
    BloodGroup {
        data: String,
        #[serde(flatten)]
        group: BloodGroup,
    },
    ProductCode {
        data: String,
        #[serde(flatten)]
        product: ProductCode,
    },
    ExpirationDate {
        data: String,
        /// As printed: the wall-clock time of the facility that labelled it.
        local: NaiveDateTime,
        at: DateTime<Utc>,
    },
    ExpirationDateTime {
        data: String,
        /// As printed: the wall-clock time of the facility that labelled it.
        local: NaiveDateTime,
        at: DateTime<Utc>,
    },
    CollectionDate {
        data: String,
        /// As printed: the wall-clock time of the facility that labelled it.
        local: NaiveDateTime,
        at: DateTime<Utc>,
    },
    CollectionDateTime {
        data: String,
        /// As printed: the wall-clock time of the facility that labelled it.
        local: NaiveDateTime,
        at: DateTime<Utc>,
    },
}

/// Decodes one or more concatenated structures (`=A99992112345601=%6200…`), reading dates as UTC.
pub fn decode(data: &str) -> Result<Vec<Element>, IsbtError> {
    decode_in(data, chrono_tz::UTC)
}

/// Decodes one or more concatenated structures, reading their dates and times as wall-clock time
/// in `tz` (a label's `&>` is local time). The identifier and the content length are checked
/// before anything is interpreted (ST-001 §2.2).
pub fn decode_in(data: &str, tz: chrono_tz::Tz) -> Result<Vec<Element>, IsbtError> {
    let instant = |local: NaiveDateTime| (local, super::wall_clock::earliest_instant(tz, local));
    let data = data.trim();
    if data.is_empty() || !data.is_ascii() {
        return Err(malformed("data", "must be non-empty ASCII"));
    }
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let take = |n: usize| -> Result<(&str, &str), IsbtError> {
            if rest.len() < n {
                Err(malformed("data", format!("{rest:?} is too short")))
            } else {
                Ok(rest.split_at(n))
            }
        };
        let id = &rest[..rest.len().min(2)];
        let (piece, tail) = match id {
            "=%" | "=<" => take(if id == "=%" { 6 } else { 10 })?,
            "=>" | "=*" => take(8)?,
            "&>" | "&*" => take(12)?,
            _ if id.len() == 2 && id.starts_with('=') && id.as_bytes()[1].is_ascii_alphanumeric() => take(16)?,
            _ => {
                return Err(IsbtError::UnsupportedIdentifier {
                    at: rest.chars().take(8).collect(),
                });
            }
        };
        let content = &piece[2..];
        let element = match id {
            "=%" => Element::BloodGroup {
                data: piece.to_owned(),
                group: parse_blood_group(content)?,
            },
            "=<" => Element::ProductCode {
                data: piece.to_owned(),
                product: parse_product(content)?,
            },
            "=>" => {
                let (local, at) = instant(parse_date(content, false)?);
                Element::ExpirationDate {
                    data: piece.to_owned(),
                    local,
                    at,
                }
            }
            "&>" => {
                let (local, at) = instant(parse_date(content, true)?);
                Element::ExpirationDateTime {
                    data: piece.to_owned(),
                    local,
                    at,
                }
            }
            "=*" => {
                let (local, at) = instant(parse_date(content, false)?);
                Element::CollectionDate {
                    data: piece.to_owned(),
                    local,
                    at,
                }
            }
            "&*" => {
                let (local, at) = instant(parse_date(content, true)?);
                Element::CollectionDateTime {
                    data: piece.to_owned(),
                    local,
                    at,
                }
            }
            _ => {
                let body = &piece[1..];
                let (din_text, ff) = body.split_at(13);
                let din = Din::parse(din_text)?;
                let flags = parse_flags(&din, ff)?;
                Element::Din {
                    data: piece.to_owned(),
                    check_character: din.check_character(),
                    din: din.as_text(),
                    fin: din.fin,
                    year: din.year,
                    sequence: din.sequence,
                    flags,
                }
            }
        };
        out.push(element);
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    #[test]
    fn check_characters_match_the_published_vectors() {
        for (din, k, flags) in [
            ("G123417654321", 'A', "70"),
            ("A999921123456", '3', "63"),
            ("W000009123456", 'G', "76"),
            // Regression values computed from the algorithm (interop.md §1.3).
            ("A999924123457", 'O', "84"),
            ("Z549917123456", 'P', "85"),
            ("G101610840386", '3', "63"),
        ] {
            assert_eq!(check_character(din), Some(k), "{din}");
            let parsed = Din::parse(din).expect("valid");
            assert_eq!(parsed.as_text(), din);
            assert_eq!(parsed.type3_flags(), flags, "{din}");
        }
        assert_eq!(checksum("a"), None, "lower case is outside the alphabet");
    }

    #[test]
    fn keyed_dins_verify_their_check_character() {
        assert!(Din::parse_keyed("G123417654321A").is_ok());
        assert!(Din::parse_keyed("g123417654321a").is_ok());
        assert_eq!(
            Din::parse_keyed("G123417654321B"),
            Err(IsbtError::InvalidCheckCharacter {
                expected: 'A',
                found: 'B'
            })
        );
        assert_eq!(
            Din::parse_keyed("G12341765432").map_err(|e| e.code()),
            Err("invalid_isbt128")
        );
        // 14 bytes with a character across the DIN / check character boundary (it panicked; found
        // by both the property tests and the API fuzzer).
        for text in ["G12341765432é", "\u{46652}\u{5}\u{9d}m0\u{8d}g\u{a6}"] {
            assert_eq!(Din::parse_keyed(text).map_err(|e| e.code()), Err("invalid_isbt128"));
        }
    }

    #[test]
    fn references_as_typed_at_the_bench() {
        // A999921123456: check character 3, Type 3 flags 63 (interop.md §1.3).
        let din = "A999921123456";
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("A999921123456", Ok(din)),
            ("a999921123456", Ok(din)),
            ("A9999 21 123456", Ok(din)),
            ("A9999213", Err("invalid_isbt128")),
            ("A9999211234563", Ok(din)),
            ("A999921123456 3", Ok(din)),
            ("A9999211234564", Err("invalid_check_character")),
            ("=A99992112345601", Ok(din)),
            (" =A99992112345663 ", Ok(din)),
            ("=A99992112345664", Err("invalid_check_character")),
            // The eye-readable label typed in full: DIN, flags, check character.
            ("A999921123456 01 3", Ok(din)),
            ("A9999 21 123456 00 3", Ok(din)),
            ("A999921123456013", Ok(din)),
            ("A999921123456 01 4", Err("invalid_check_character")),
            ("A999921123456 99 3", Err("invalid_isbt128")),
            ("A999921123456 XY 3", Err("invalid_isbt128")),
            ("A999921123456 01 é", Err("invalid_isbt128")),
            ("", Err("invalid_isbt128")),
        ];
        for (text, expected) in cases {
            let got = Din::parse_reference(text).map(|d| d.as_text()).map_err(|e| e.code());
            assert_eq!(got, expected.map(str::to_owned), "{text:?}");
        }
    }

    #[test]
    fn dins_are_validated() {
        for bad in [
            "O123417654321",
            "0123417654321",
            "G12X417654321",
            "G1234176543AB",
            "G12341765432",
            "É12341765432",
        ] {
            assert!(Din::parse(bad).is_err(), "{bad}");
        }
        assert!(Din::new("A9999", 26, 1_000_000).is_err());
        assert_eq!(Din::new("A9999", 26, 42).expect("ok").as_text(), "A999926000042");
    }

    #[test]
    fn din_structures_and_type3_flags() {
        let e = decode("=G12341765432170").expect("valid");
        assert!(matches!(
            &e[0],
            Element::Din {
                flags: Flags::Type3 { value: 70 },
                check_character: 'A',
                ..
            }
        ));
        assert_eq!(
            decode("=G12341765432171").map_err(|e| e.code()),
            Err("invalid_check_character")
        );
        assert!(matches!(
            &decode("=A99992112345601").expect("valid")[0],
            Element::Din {
                flags: Flags::Type1 { value: 1 },
                ..
            }
        ));
        assert!(matches!(
            &decode("=A99992112345600").expect("valid")[0],
            Element::Din {
                flags: Flags::NotUsed,
                ..
            }
        ));
        assert!(decode("=A99992112345698").is_err(), "reserved flag");
        assert!(decode("=A999921123456+1").is_err(), "a sign is not a flag digit");
        assert!(decode("=A999921123456").is_err(), "too short");
    }

    #[test]
    fn group_codes_read_back() {
        for abo in [Abo::O, Abo::A, Abo::B, Abo::Ab] {
            for rhd in [Rhd::Positive, Rhd::Negative] {
                assert_eq!(group_of_code(blood_group_code(abo, rhd)), Some((Some(abo), Some(rhd))));
            }
            assert_eq!(group_of_code(rhd_not_specified_code(abo)), Some((Some(abo), None)));
        }
        assert_eq!(group_of_code("Md"), None);
        assert_eq!(group_of_code("zz"), None);
        assert_eq!(group_of_code("6"), None);
    }

    #[test]
    fn blood_groups_cover_table_4() {
        for (abo, rhd, codes) in BLOOD_GROUP_CODES {
            assert_eq!(blood_group_code(*abo, *rhd), codes[0]);
            for (i, code) in codes.iter().enumerate() {
                let g = parse_blood_group(&format!("{code}00")).expect("known");
                assert_eq!((g.abo, g.rhd, g.meaning), (Some(*abo), Some(*rhd), USES[i]));
            }
        }
        let a_pos = decode("=%6200").expect("valid");
        assert!(
            matches!(&a_pos[0], Element::BloodGroup { group, .. } if group.abo == Some(Abo::A) && group.rhd == Some(Rhd::Positive))
        );
        assert_eq!(parse_blood_group("5100").expect("ok").rhd, Some(Rhd::Positive));
        assert_eq!(parse_blood_group("9500").expect("ok").rhd, Some(Rhd::Negative));
        assert_eq!(parse_blood_group("E200").map_err(|e| e.code()), Err("invalid_isbt128"));
        assert!(parse_blood_group("6201").is_err(), "reserved character");
        assert!(parse_blood_group("62").is_err());
        assert_eq!(parse_blood_group("G000").expect("pooled").meaning, "pooled_abo");
        for abo in Abo::ALL {
            let pooled = parse_blood_group(&format!("{}00", pooled_rhd_code(*abo))).expect("pooled RhD");
            assert_eq!(
                (pooled.abo, pooled.rhd, pooled.meaning),
                (Some(*abo), None, "pooled_rhd")
            );
            let unspecified =
                parse_blood_group(&format!("{}00", rhd_not_specified_code(*abo))).expect("RhD not specified");
            assert_eq!(
                (unspecified.abo, unspecified.rhd, unspecified.meaning),
                (Some(*abo), None, "rhd_not_specified")
            );
        }
    }

    #[test]
    fn product_codes() {
        let p = parse_product("E1234V00").expect("valid");
        assert_eq!(
            (p.description_code.as_str(), p.collection_type, p.division.as_str()),
            ("E1234", 'V', "00")
        );
        assert!(parse_product("E4306VAb").is_ok());
        for bad in ["e1234V00", "E1234Z00", "E1234V0", "E1234Vab", "E12#4V00"] {
            assert!(parse_product(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        let t = |s: &str, time: bool| parse_date(s, time).expect("valid").to_string();
        assert_eq!(t("019031", false), "2019-01-31 23:59:00");
        assert_eq!(t("0183652359", true), "2018-12-31 23:59:00");
        assert_eq!(t("0240602359", true), "2024-02-29 23:59:00");
        assert_eq!(t("9990010000", true), "1999-01-01 00:00:00");
        assert!(parse_date("0253660000", true).is_err(), "2025 has 365 days");
        assert!(parse_date("0243660000", true).is_ok(), "2024 has 366");
        assert!(parse_date("0250002359", true).is_err(), "day 000");
        assert!(parse_date("0250012400", true).is_err());
        assert!(parse_date("0250012360", true).is_err());
        assert!(parse_date("02500123", true).is_err());
        for s in ["0183652359", "0240600805", "0260010000"] {
            assert_eq!(format_date_time(parse_date(s, true).expect("valid")), s);
        }
    }

    #[test]
    fn concatenated_structures() {
        let e = decode("=A99992112345600=%9500=<E1234V00&>0263301200").expect("valid");
        assert_eq!(e.len(), 4);
        assert!(matches!(&e[3], Element::ExpirationDateTime { at, .. } if at.to_string() == "2026-11-26 12:00:00 UTC"));
        assert_eq!(
            decode("=A99992112345600=+05000").map_err(|e| e.code()),
            Err("unsupported_data_structure")
        );
        assert_eq!(decode("").map_err(|e| e.code()), Err("invalid_isbt128"));
        assert_eq!(decode("&>02633012").map_err(|e| e.code()), Err("invalid_isbt128"));
    }

    /// A New York label's `&>` is New York time, on either side of a daylight-saving change.
    #[test]
    fn label_dates_are_the_facilitys_wall_clock() {
        let ny = chrono_tz::America::New_York;
        for (data, utc) in [
            ("&>0263331104", "2026-11-29 16:04:00 UTC"),
            ("&>0260670130", "2026-03-08 06:30:00 UTC"),
            ("&>0260670800", "2026-03-08 12:00:00 UTC"),
            ("&>0263050130", "2026-11-01 05:30:00 UTC"),
            ("=>026067", "2026-03-09 03:59:00 UTC"),
        ] {
            let e = decode_in(data, ny).expect("valid");
            let at = match &e[0] {
                Element::ExpirationDateTime { at, .. } | Element::ExpirationDate { at, .. } => at.to_string(),
                other => panic!("{other:?}"),
            };
            assert_eq!(at, utc, "{data}");
        }
    }

    /// ISO/IEC 7064 value of a character, written out independently of `ALPHABET`.
    fn reference_value(c: char) -> Option<u32> {
        match c {
            '0'..='9' => Some(c as u32 - '0' as u32),
            'A'..='Z' => Some(c as u32 - 'A' as u32 + 10),
            '*' => Some(36),
            _ => None,
        }
    }

    fn reference_char(v: u32) -> char {
        match v {
            0..=9 => char::from(b'0' + v as u8),
            10..=35 => char::from(b'A' + (v - 10) as u8),
            _ => '*',
        }
    }

    /// MOD 37-2 as the standard states it: with the check character at position 1 (rightmost)
    /// and weights 2^(i-1) by position i, the weighted sum is 1 (mod 37).
    fn weighted_sum(with_check: &str) -> Option<u32> {
        let mut sum = 0;
        let mut weight = 1;
        for c in with_check.chars().rev() {
            sum = (sum + reference_value(c)? * weight) % 37;
            weight = weight * 2 % 37;
        }
        Some(sum)
    }

    fn reference_check(data: &str) -> Option<char> {
        (0..37)
            .map(reference_char)
            .find(|&k| weighted_sum(&format!("{data}{k}")) == Some(1))
    }

    fn arb_din() -> impl Strategy<Value = Din> {
        ("[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}", 0u8..=99, 0u32..=Din::MAX_SEQUENCE)
            .prop_map(|(fin, year, sequence)| Din { fin, year, sequence })
    }

    /// Text of every kind: any unicode, control characters, all printable ASCII, long input,
    /// structure identifiers with junk after them, and near-valid lengths with non-ASCII mixed in.
    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\\x7f]{0,20}",
            "[ -~]{0,40}",
            ".{300,700}",
            ("(=|=%|=<|=>|&>|=\\*|&\\*|=[A-Z0-9]|&)", "[ -~]{0,20}").prop_map(|(id, rest)| id + &rest),
            "[A-Z0-9éß€ǅ\u{1F600} ]{10,17}",
            "[0-9]{4,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parsers_return_instead_of_panicking(text in arb_text()) {
            let din = Din::new("A9999", 26, 1).expect("valid");
            let _ = Din::parse(&text);
            let _ = validate_fin(&text);
            let _ = validate_description_code(&text);
            let _ = parse_date(&text, true);
            let _ = parse_date(&text, false);
            let _ = parse_blood_group(&text);
            let _ = parse_product(&text);
            let _ = parse_flags(&din, &text);
            prop_assert_eq!(checksum(&text).is_some(), text.chars().all(|c| reference_value(c).is_some()));
            prop_assert_eq!(check_character(&text).is_some(), checksum(&text).is_some());
            if let Ok(parsed) = Din::parse_keyed(&text) {
                let keyed = text.trim().to_ascii_uppercase();
                prop_assert_eq!(format!("{}{}", parsed.as_text(), parsed.check_character()), keyed);
            }
            if let Ok(elements) = decode(&text) {
                // Every character is accounted for, in order, by exactly one element.
                let data: String = elements.iter().map(element_data).collect();
                prop_assert_eq!(data.as_str(), text.trim());
                for e in &elements {
                    if let Element::Din { din, check_character: k, .. } = e {
                        prop_assert_eq!(Some(*k), reference_check(din));
                    }
                }
            }
        }

        #[test]
        fn valid_dins_round_trip_with_the_reference_check_character(din in arb_din()) {
            let text = din.as_text();
            prop_assert_eq!(text.len(), 13);
            prop_assert_eq!(Din::new(&din.fin, din.year, din.sequence), Ok(din.clone()));
            prop_assert_eq!(Din::parse(&text), Ok(din.clone()));
            let k = din.check_character();
            prop_assert_eq!(Some(k), reference_check(&text));
            prop_assert_eq!(weighted_sum(&format!("{text}{k}")), Some(1));
            prop_assert_eq!(Din::parse_keyed(&format!("{text}{k}")), Ok(din.clone()));
            let typed = format!("  {}\t", format!("{text}{k}").to_ascii_lowercase());
            prop_assert_eq!(Din::parse_keyed(&typed), Ok(din.clone()));
            let flags = din.type3_flags();
            prop_assert_eq!(flags.parse::<u32>().ok(), reference_value(k).map(|v| v + 60));
            let value = flags.parse().expect("two digits");
            let scanned = Element::Din {
                data: format!("={text}{flags}"),
                din: text.clone(),
                fin: din.fin.clone(),
                year: din.year,
                sequence: din.sequence,
                check_character: k,
                flags: Flags::Type3 { value },
            };
            prop_assert_eq!(decode(&format!("={text}{flags}")), Ok(vec![scanned]));
        }

        #[test]
        fn every_single_substitution_is_detected(
            din in arb_din(),
            at in 0usize..14,
            replacement in 0u32..37,
        ) {
            let keyed: Vec<char> = format!("{}{}", din.as_text(), din.check_character()).chars().collect();
            let replacement = reference_char(replacement);
            prop_assume!(keyed[at] != replacement);
            let mut changed = keyed.clone();
            changed[at] = replacement;
            let changed: String = changed.into_iter().collect();
            prop_assert!(Din::parse_keyed(&changed).is_err(), "{} accepted", changed);
        }

        #[test]
        fn every_adjacent_transposition_is_detected(din in arb_din(), at in 0usize..13) {
            let mut keyed: Vec<char> = format!("{}{}", din.as_text(), din.check_character()).chars().collect();
            prop_assume!(keyed[at] != keyed[at + 1]);
            keyed.swap(at, at + 1);
            let changed: String = keyed.into_iter().collect();
            prop_assert!(Din::parse_keyed(&changed).is_err(), "{} accepted", changed);
        }

        #[test]
        fn flags_are_two_digits_of_a_known_range(din in arb_din(), ff in "[ -~]{2}") {
            let expected = match ff.parse::<u32>() {
                Ok(v) if ff.bytes().all(|b| b.is_ascii_digit()) => {
                    v <= 59 || v == 60 + reference_value(din.check_character()).expect("alphabet")
                }
                _ => false,
            };
            let decoded = decode(&format!("={}{ff}", din.as_text()));
            prop_assert_eq!(decoded.is_ok(), expected, "{:?}", decoded);
        }

        #[test]
        fn encoded_structures_decode_to_what_was_encoded(
            din in arb_din(),
            plain_flags in 0u8..=59,
            group in (prop::sample::select(Abo::ALL), prop::sample::select(Rhd::ALL), "[0-9A-Z]"),
            product in ("[A-Z][A-Z0-9]{4}", prop::sample::select(COLLECTION_TYPES.chars().collect::<Vec<_>>()),
                        prop_oneof![Just("00".to_owned()), "[A-Z][a-z]"]),
            expiry in arb_minute(),
            collected in arb_minute(),
        ) {
            let (abo, rhd, phenotype) = group;
            let (pdc, collection_type, division) = product;
            let pieces = [
                format!("={}{plain_flags:02}", din.as_text()),
                format!("=%{}{phenotype}0", blood_group_code(abo, rhd)),
                format!("=<{pdc}{collection_type}{division}"),
                format!("&>{}", encode_date_time(expiry)),
                format!("=>{}", &encode_date_time(expiry)[..6]),
                format!("&*{}", encode_date_time(collected)),
                format!("=*{}", &encode_date_time(collected)[..6]),
            ];
            let end_of_day = |t: NaiveDateTime| t.date().and_hms_opt(23, 59, 0).expect("time");
            let flags = match plain_flags {
                0 => Flags::NotUsed,
                1..=19 => Flags::Type1 { value: plain_flags },
                _ => Flags::Local { value: plain_flags },
            };
            let data = |i: usize| pieces[i].clone();
            let expected = vec![
                Element::Din {
                    data: data(0),
                    din: din.as_text(),
                    fin: din.fin.clone(),
                    year: din.year,
                    sequence: din.sequence,
                    check_character: reference_check(&din.as_text()).expect("check character"),
                    flags,
                },
                Element::BloodGroup {
                    data: data(1),
                    group: BloodGroup {
                        code: pieces[1][2..4].to_owned(),
                        abo: Some(abo),
                        rhd: Some(rhd),
                        meaning: "default",
                        phenotype: phenotype.chars().next().expect("one character"),
                    },
                },
                Element::ProductCode {
                    data: data(2),
                    product: ProductCode { description_code: pdc, collection_type, division },
                },
                Element::ExpirationDateTime { data: data(3), local: expiry, at: expiry.and_utc() },
                Element::ExpirationDate { data: data(4), local: end_of_day(expiry), at: end_of_day(expiry).and_utc() },
                Element::CollectionDateTime { data: data(5), local: collected, at: collected.and_utc() },
                Element::CollectionDate { data: data(6), local: end_of_day(collected), at: end_of_day(collected).and_utc() },
            ];
            prop_assert_eq!(decode(&pieces.concat()), Ok(expected));
            prop_assert_eq!(format_date_time(expiry), encode_date_time(expiry));
        }
    }

    /// A whole minute in 1900–2899, the years `cyyjjjhhmm` can carry.
    fn arb_minute() -> impl Strategy<Value = NaiveDateTime> {
        let first = NaiveDate::from_ymd_opt(1900, 1, 1)
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("time");
        let minutes = (NaiveDate::from_ymd_opt(2900, 1, 1).expect("date") - first.date()).num_minutes();
        (0..minutes).prop_map(move |m| first + Duration::minutes(m))
    }

    /// `cyyjjjhhmm` by interop.md §1.6: `c` = 9 for 19yy, otherwise the hundreds above 2000.
    fn encode_date_time(t: NaiveDateTime) -> String {
        let (century, yy) = (t.year() / 100, t.year() % 100);
        let c = if century == 19 { 9 } else { century - 20 };
        format!("{c}{yy:02}{:03}{:02}{:02}", t.ordinal(), t.hour(), t.minute())
    }

    fn element_data(e: &Element) -> &str {
        match e {
            Element::Din { data, .. }
            | Element::BloodGroup { data, .. }
            | Element::ProductCode { data, .. }
            | Element::ExpirationDate { data, .. }
            | Element::ExpirationDateTime { data, .. }
            | Element::CollectionDate { data, .. }
            | Element::CollectionDateTime { data, .. } => data,
        }
    }
}
