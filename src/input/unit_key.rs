//! A unit named in a URL path: its numeric id or its DIN, told apart once at the edge.

use crate::domain::isbt128::Din;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitKey {
    Id(i64),
    Din(Din),
}

impl UnitKey {
    /// A DIN may be all digits (its FIN can start with 1–9), but it is 13 or more characters,
    /// so shorter digit strings are ids. A DIN that is not valid ISBT 128 is a 422.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let key = raw.trim();
        if (1..13).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_digit())
            && let Ok(id) = key.parse::<i64>()
        {
            return Ok(Self::Id(id));
        }
        parse_din_reference(key).map(Self::Din)
    }
}

/// A DIN as people and scanners give it: 13 characters, 14 with the check character, the
/// scanned `=` data structure with flags, or the eye-readable label typed in full
/// (`Din::parse_reference`).
pub fn parse_din_reference(raw: &str) -> ApiResult<Din> {
    Din::parse_reference(raw).map_err(|e| ApiError::isbt(&e, "the DIN is not valid ISBT 128"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::error::ErrorCode;

    #[test]
    fn short_digit_strings_are_ids_and_the_rest_dins() {
        assert_eq!(UnitKey::parse(" 42 ").expect("id"), UnitKey::Id(42));
        assert_eq!(
            UnitKey::parse("123456789012").expect("id"),
            UnitKey::Id(123_456_789_012)
        );
        let din = UnitKey::parse("W000026000001").expect("din");
        assert!(matches!(din, UnitKey::Din(_)), "{din:?}");
        assert!(!matches!(UnitKey::parse("1234567890123"), Ok(UnitKey::Id(_))));
        assert_eq!(
            UnitKey::parse("nonsense").expect_err("not a DIN").code(),
            ErrorCode::InvalidIsbt128
        );
    }

    proptest! {
        #[test]
        fn din_references_never_panic_and_every_form_names_the_same_unit(
            text in prop_oneof![any::<String>(), "[ =A-Z0-9a-zé*+]{12,17}"],
            fin in "[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{2}",
            year in 0u8..=99,
            sequence in 0u32..=Din::MAX_SEQUENCE,
            flags in prop_oneof![(0u8..=59).prop_map(|f| format!("{f:02}")), Just(String::new())],
        ) {
            let _ = parse_din_reference(&text);
            let din = Din::new(&fin, year, sequence).expect("valid DIN");
            let plain = din.as_text();
            let flags = if flags.is_empty() { din.type3_flags() } else { flags };
            for form in [
                plain.clone(),
                format!("{plain}{}", din.check_character()),
                format!(" ={}{flags} ", plain.to_ascii_lowercase()),
            ] {
                prop_assert_eq!(parse_din_reference(&form).ok(), Some(din.clone()), "{}", form);
            }
        }
    }
}
