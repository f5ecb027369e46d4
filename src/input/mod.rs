//! Parsed input: the shapes a client's text takes once it is checked, shared by routes and
//! services. Below both layers (it imports only `domain` and `error`), so neither reaches up.

mod page;
mod text;
mod unit_key;

pub use page::{DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor, page_limit, paginate};
pub use text::Text;
pub use unit_key::{UnitKey, parse_din_reference};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// A positive id from a URL path; anything else is 400 `invalid_path`.
pub fn parse_id(raw: &str, what: &str) -> ApiResult<i64> {
    integral::parse(raw)
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidPath, format!("{raw:?} is not a valid {what} id")))
}

/// The schema pattern of an identifier system: an absolute URI (`urn:oid:1.2.3`,
/// `https://hospital.example/mrn`) of printable ASCII.
pub const SYSTEM_URI_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9+.\-]*:[!-~]{1,250}$";

/// An identifier system (FHIR `Identifier.system`): an absolute URI, at most 250 characters
/// after the scheme, no spaces. A bad one is reported on `v`.
pub fn check_system_uri(v: &mut crate::error::Validator, field: &str, raw: &str) -> Option<String> {
    if is_system_uri(raw) {
        Some(raw.to_owned())
    } else {
        v.push(
            field,
            "must be an absolute URI such as urn:oid:2.16.840.1.113883.3.1 or https://hospital.example/mrn",
        );
        None
    }
}

fn is_system_uri(raw: &str) -> bool {
    raw.split_once(':').is_some_and(|(scheme, rest)| {
        let mut s = scheme.bytes();
        s.next().is_some_and(|b| b.is_ascii_alphabetic())
            && s.all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
            && (1..=250).contains(&rest.len())
            && rest.bytes().all(|b| (b'!'..=b'~').contains(&b))
    })
}

/// A PATCH field: `None` when absent, `Some(None)` when `null`, `Some(Some(v))` when set.
pub type DoubleOption<T> = Option<Option<T>>;

/// Deserialises a [`DoubleOption`] (with `#[serde(default, deserialize_with = ...)]`).
pub fn double_option<'de, T, D>(de: D) -> Result<DoubleOption<T>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(de).map(Some)
}

#[cfg(test)]
mod system_uri_tests {
    #[test]
    fn systems_are_absolute_uris() {
        for ok in ["urn:oid:1.2.3", "https://h.example/mrn", "urn:granulo:hospital:STE:mrn"] {
            assert!(super::is_system_uri(ok), "{ok}");
        }
        for bad in ["", "mrn", "1urn:x", "urn:", "https://h.example/a b", "urn:x\u{e9}"] {
            assert!(!super::is_system_uri(bad), "{bad}");
        }
    }
}

/// Integers in paths and query strings as JSON Schema reads them: `7` and `7.0` are the same.
pub mod integral {
    use serde::{Deserialize, Deserializer, de::Error as _};

    pub fn parse(raw: &str) -> Option<i64> {
        let digits = match raw.split_once('.') {
            Some((int, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => int,
            Some(_) => return None,
            None => raw,
        };
        digits.parse().ok()
    }

    fn convert<'de, D: Deserializer<'de>, T: TryFrom<i64>>(raw: &str) -> Result<T, D::Error> {
        parse(raw)
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| D::Error::custom(format!("{raw:?} is not an integer in range")))
    }

    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(de: D) -> Result<T, D::Error> {
        convert::<D, T>(&String::deserialize(de)?)
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(de: D) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(de)?
            .map(|raw| convert::<D, T>(&raw))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn patch_fields_tell_absent_from_null() {
        #[derive(serde::Deserialize)]
        struct Patch {
            #[serde(default, deserialize_with = "double_option")]
            phone: DoubleOption<String>,
        }
        let parse = |s: &str| serde_json::from_str::<Patch>(s).expect("parses").phone;
        assert_eq!(parse("{}"), None);
        assert_eq!(parse(r#"{"phone":null}"#), Some(None));
        assert_eq!(parse(r#"{"phone":"1"}"#), Some(Some("1".to_owned())));
    }

    proptest! {
        #[test]
        fn ids_are_positive_integers(text in any::<String>(), raw in "[0-9]{0,20}|[ -~]{0,24}", n in any::<i64>()) {
            for id in [text.as_str(), raw.as_str(), &n.to_string(), &format!("{n}.00")] {
                // An integer, optionally written with a fraction of zeros.
                let (int, zeros) = id.split_once('.').unwrap_or((id, "0"));
                let whole = !zeros.is_empty() && zeros.bytes().all(|b| b == b'0');
                let expected = whole.then(|| int.parse::<i64>().ok()).flatten().filter(|v| *v > 0);
                prop_assert_eq!(parse_id(id, "unit").ok(), expected);
            }
        }
    }
}
