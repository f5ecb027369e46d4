//! Free text as the API keeps it: trimmed, MIN..=MAX characters (not bytes), and no control
//! characters (they garble labels, reports and logs).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use utoipa::openapi::RefOr;

use crate::error::{ApiError, ApiResult, Validator};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// Checked free text of `MIN..=MAX` characters after trimming. With `MIN = 0` an all-blank
/// string is accepted as empty text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Text<const MIN: usize, const MAX: usize>(String);

impl<const MIN: usize, const MAX: usize> Text<MIN, MAX> {
    /// Trims `raw` and checks it; the error is the field message a client sees.
    pub fn new(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        let n = text.chars().count();
        if (MIN..=MAX).contains(&n) && !text.chars().any(char::is_control) {
            Ok(Self(text.to_owned()))
        } else {
            Err(Self::rule())
        }
    }

    /// `raw` as the value of `field`, or a 400 naming it.
    pub fn field(field: &str, raw: &str) -> ApiResult<Self> {
        Self::new(raw).map_err(|message| ApiError::field(field, message))
    }

    /// For text inside a shape that is also stored or shown (so stays a `String`): the trimmed
    /// text, or an error on `field` in `v` (and an empty string).
    pub fn check(v: &mut Validator, field: &str, raw: &str) -> String {
        Self::new(raw).map_or_else(
            |message| {
                v.push(field, message);
                String::new()
            },
            Self::into_inner,
        )
    }

    /// What a valid value is, in words.
    pub fn rule() -> String {
        if MIN == 0 {
            format!("must be at most {MAX} characters without control characters")
        } else {
            format!("must be {MIN} to {MAX} characters without control characters")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }

    /// The JSON Schema pattern of the same rule. ECMA-262 `\s` (which also matches
    /// U+001C–U+001F) is narrowed to the whitespace that trimming removes around the text.
    pub fn pattern() -> String {
        const EDGE: &str = r"[^\s\x00-\x1f\x7f-\x9f]";
        const INNER: &str = r"[^\x00-\x1f\x7f-\x9f]";
        const BLANK: &str = r"[^\S\x1c-\x1f]*";
        let core = match MIN {
            0 | 1 => format!("{EDGE}(?:{INNER}{{0,{}}}{EDGE})?", MAX.saturating_sub(2)),
            _ => format!("{EDGE}{INNER}{{{},{}}}{EDGE}", MIN - 2, MAX.saturating_sub(2)),
        };
        if MIN == 0 {
            format!("^{BLANK}(?:{core})?{BLANK}$")
        } else {
            format!("^{BLANK}{core}{BLANK}$")
        }
    }
}

impl<const MIN: usize, const MAX: usize> std::ops::Deref for Text<MIN, MAX> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> AsRef<str> for Text<MIN, MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> From<Text<MIN, MAX>> for String {
    fn from(t: Text<MIN, MAX>) -> Self {
        t.0
    }
}

impl<const MIN: usize, const MAX: usize> fmt::Display for Text<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for Text<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(de)?;
        Self::new(&raw).map_err(D::Error::custom)
    }
}

impl<const MIN: usize, const MAX: usize> Serialize for Text<MIN, MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<const MIN: usize, const MAX: usize> utoipa::PartialSchema for Text<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        // No `maxLength`: it would count the blanks around the text, which are accepted.
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length((MIN > 0).then_some(MIN))
            .pattern(Some(Self::pattern()))
            .into()
    }
}

impl<const MIN: usize, const MAX: usize> utoipa::ToSchema for Text<MIN, MAX> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(if MIN == 0 {
            format!("TextUpTo{MAX}")
        } else {
            format!("Text{MIN}To{MAX}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Name = Text<1, 5>;
    type Note = Text<0, 5>;

    #[test]
    fn trims_counts_characters_and_refuses_control_characters() {
        assert_eq!(Name::new("  Ana \n").expect("ok").as_str(), "Ana");
        assert_eq!(Name::new("ÉÉÉÉÉ").expect("5 chars, 10 bytes").len(), 10);
        for bad in ["", "   ", "abcdef", "a\u{7}b", "a\u{85}b", "a\u{1f}"] {
            assert_eq!(Name::new(bad), Err(Name::rule()), "{bad:?}");
        }
        assert_eq!(Note::new(" ").expect("blank is empty").as_str(), "");
        assert_eq!(Name::rule(), "must be 1 to 5 characters without control characters");
        assert_eq!(Note::rule(), "must be at most 5 characters without control characters");
    }

    #[test]
    fn patterns_are_the_documented_ones() {
        assert_eq!(
            Text::<1, 200>::pattern(),
            r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
        );
        assert_eq!(
            Text::<0, 100>::pattern(),
            r"^[^\S\x1c-\x1f]*(?:[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\s\x00-\x1f\x7f-\x9f])?)?[^\S\x1c-\x1f]*$"
        );
    }

    #[test]
    fn errors_name_the_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Body {
            name: Name,
            note: Option<Note>,
        }
        let err = crate::extract::parse_json::<Body>(br#"{"name":"a\u0007"}"#).expect_err("control");
        let p = err.problem();
        assert_eq!(
            (p.errors[0].field.as_str(), p.errors[0].message.as_str()),
            ("name", Name::rule().as_str())
        );
        let ok = crate::extract::parse_json::<Body>(br#"{"name":" a ","note":null}"#).expect("ok");
        assert_eq!((ok.name.as_str(), ok.note), ("a", None));
    }

    proptest! {
        /// The pattern and the parser agree on text without the whitespace that ECMA-262 and
        /// Rust disagree on (U+0085 is Rust whitespace only, U+FEFF ECMA only).
        #[test]
        fn the_pattern_accepts_what_the_parser_accepts(raw in "[ \t\na-zé\u{7}\u{1c}\u{9f}\u{a0}]{0,8}") {
            for (pattern, parsed) in [(Name::pattern(), Name::new(&raw).is_ok()), (Note::pattern(), Note::new(&raw).is_ok())] {
                let re = regex::Regex::new(&pattern).expect("regex");
                prop_assert_eq!(re.is_match(&raw), parsed, "{}", pattern);
            }
        }
    }
}
