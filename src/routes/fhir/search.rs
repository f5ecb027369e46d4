//! FHIR search parameters: parsing the query string against what a resource supports (anything
//! else is refused, never ignored), tokens, references, date ranges and paging.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{ApiError, ApiResult, ErrorCode};

/// `_count` when the client sends none, and the most a page holds.
pub const DEFAULT_COUNT: i64 = 50;
pub const MAX_COUNT: i64 = 200;

/// Parameters every search takes besides the resource's own.
const COMMON: &[&str] = &["_count", "_cursor", "_format", "_pretty", "_summary", "_elements"];

/// A parsed search: the resource's parameters (repeats allowed: they AND together), the page
/// size and the keyset position.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub params: Vec<(String, String)>,
    pub count: i64,
    /// The id after which this page starts (the `_cursor` of a `next` link).
    pub after: Option<String>,
}

impl Search {
    /// Parses `query` for a resource supporting `supported` (its own parameter names).
    pub fn parse(query: &str, supported: &[&str]) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, format!("the query string is invalid: {e}")))?;
        let mut search = Self {
            params: Vec::new(),
            count: DEFAULT_COUNT,
            after: None,
        };
        for (name, value) in pairs {
            if name.contains(':') {
                return Err(ApiError::new(
                    ErrorCode::UnknownSearchParameter,
                    format!("search parameter modifiers are not supported ({name})"),
                ));
            }
            match name.as_str() {
                "_count" => {
                    let n: i64 = value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| invalid("_count", "must be a whole number ≥ 0"))?;
                    search.count = n.min(MAX_COUNT);
                }
                "_cursor" => {
                    let id_like = (1..=64).contains(&value.len())
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                    if !id_like {
                        return Err(invalid("_cursor", "must be the value of a `next` link"));
                    }
                    search.after = Some(value);
                }
                "_summary" | "_elements" => {
                    return Err(ApiError::new(
                        ErrorCode::UnknownSearchParameter,
                        format!("{name} is not supported; results are always whole resources"),
                    ));
                }
                n if COMMON.contains(&n) => {}
                n if supported.contains(&n) => {
                    if value.is_empty() {
                        return Err(invalid(n, "must not be empty"));
                    }
                    search.params.push((name, value));
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::UnknownSearchParameter,
                        format!(
                            "unknown search parameter {name}; this resource supports {}",
                            if supported.is_empty() {
                                "none".to_owned()
                            } else {
                                supported.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        Ok(search)
    }

    /// The cursor of a resource whose ids are numbers.
    pub fn after_id(&self) -> ApiResult<Option<i64>> {
        self.after
            .as_deref()
            .map(|a| {
                a.parse()
                    .map_err(|_| invalid("_cursor", "must be the value of a `next` link"))
            })
            .transpose()
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`; given twice it is refused (these parameters do not combine).
    pub fn one<'a>(&'a self, name: &'a str) -> ApiResult<Option<&'a str>> {
        let mut it = self.all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(invalid(name, "may be given once"));
        }
        Ok(first)
    }

    /// Each value of `name` split on commas (FHIR's OR); repeated parameters AND together, so
    /// the result is one OR-list per occurrence.
    pub fn any_of(&self, name: &str) -> Vec<Vec<String>> {
        self.all(name)
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .collect()
    }
}

pub fn invalid(name: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, format!("search parameter {name} {message}"))
}

/// A token: `system|code`, `|code` (no system), `code` (any system) or `system|` (any code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `None`: any system; `Some("")`: no system.
    pub system: Option<String>,
    /// `None`: any code.
    pub code: Option<String>,
}

impl Token {
    pub fn parse(value: &str) -> Self {
        match value.split_once('|') {
            None => Self {
                system: None,
                code: Some(value.to_owned()),
            },
            Some((system, code)) => Self {
                system: Some(system.to_owned()),
                code: (!code.is_empty()).then(|| code.to_owned()),
            },
        }
    }

    /// Whether an identifier or coding `(system, code)` matches.
    pub fn matches(&self, system: &str, code: &str) -> bool {
        self.system.as_deref().is_none_or(|s| s == system) && self.code.as_deref().is_none_or(|c| c == code)
    }
}

/// The id in a reference parameter: `Patient/12` or `12`. An absolute URL is refused: it may
/// name a resource on another server.
pub fn reference_id(name: &str, value: &str, resource_type: &str) -> ApiResult<i64> {
    let id = match value.split_once('/') {
        Some((ty, id)) if ty == resource_type => id,
        Some(_) => return Err(invalid(name, &format!("must be {resource_type}/<id> or <id>"))),
        None => value,
    };
    id.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid(name, &format!("must be {resource_type}/<id> or <id>")))
}

/// A date search as a half-open UTC interval `[from, to)` (either side open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateBound {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl DateBound {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }

    /// The intersection of several bounds (repeated parameters AND together).
    pub fn all(bounds: &[DateBound]) -> DateBound {
        DateBound {
            from: bounds.iter().filter_map(|b| b.from).max(),
            to: bounds.iter().filter_map(|b| b.to).min(),
        }
    }
}

/// `[prefix]value` with prefix `eq` (default), `ge`, `gt`, `le`, `lt`; the value a year, month,
/// date (in the facility's time zone, as a person means a day) or a date-time with its offset.
/// A value stands for the whole interval of its precision: `gt2026-11-28` starts on the 29th.
pub fn date_bound(name: &str, value: &str, tz: Tz) -> ApiResult<DateBound> {
    let (prefix, rest) = match value.get(..2) {
        Some(p @ ("eq" | "ge" | "gt" | "le" | "lt")) => (p, &value[2..]),
        Some(p @ ("ne" | "sa" | "eb" | "ap")) => {
            return Err(invalid(
                name,
                &format!("takes the prefixes eq, ge, gt, le and lt, not {p}"),
            ));
        }
        _ => ("eq", value),
    };
    let (start, end) = interval(rest, tz).ok_or_else(|| {
        invalid(
            name,
            "must be a date (YYYY, YYYY-MM, YYYY-MM-DD) or a date-time with its offset, after an optional eq/ge/gt/le/lt",
        )
    })?;
    Ok(match prefix {
        "ge" => DateBound {
            from: Some(start),
            to: None,
        },
        "gt" => DateBound {
            from: Some(end),
            to: None,
        },
        "le" => DateBound {
            from: None,
            to: Some(end),
        },
        "lt" => DateBound {
            from: None,
            to: Some(start),
        },
        _ => DateBound {
            from: Some(start),
            to: Some(end),
        },
    })
}

/// The UTC interval a FHIR date or date-time value stands for.
fn interval(value: &str, tz: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        let t = t.with_timezone(&Utc);
        // A date-time to the second (or finer) is an instant; the interval is that second.
        return Some((t, t + chrono::Duration::seconds(1)));
    }
    let local = |d: NaiveDate| -> Option<DateTime<Utc>> {
        tz.from_local_datetime(&NaiveDateTime::new(d, NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    let (start, end) = match value.len() {
        4 => {
            let y: i32 = value.parse().ok()?;
            (NaiveDate::from_ymd_opt(y, 1, 1)?, NaiveDate::from_ymd_opt(y + 1, 1, 1)?)
        }
        7 => {
            let d = NaiveDate::parse_from_str(&format!("{value}-01"), "%Y-%m-%d").ok()?;
            (d, d.checked_add_months(chrono::Months::new(1))?)
        }
        10 => {
            let d = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
            (d, d.succ_opt()?)
        }
        _ => return None,
    };
    if !value.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return None;
    }
    Some((local(start)?, local(end)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn only_supported_parameters_pass() {
        let s = Search::parse(
            "patient=Patient/3&status=active,on-hold&_count=500&_cursor=9",
            &["patient", "status"],
        )
        .expect("parses");
        assert_eq!(s.count, MAX_COUNT);
        assert_eq!(s.after_id().expect("number"), Some(9));
        assert_eq!(s.one("patient").expect("once"), Some("Patient/3"));
        assert_eq!(
            s.any_of("status"),
            vec![vec!["active".to_owned(), "on-hold".to_owned()]]
        );
        for (query, code) in [
            ("name=x", ErrorCode::UnknownSearchParameter),
            ("patient:missing=true", ErrorCode::UnknownSearchParameter),
            ("_summary=count", ErrorCode::UnknownSearchParameter),
            ("_count=-1", ErrorCode::InvalidQuery),
            ("_count=many", ErrorCode::InvalidQuery),
            ("_cursor=x%2Fy", ErrorCode::InvalidQuery),
            ("patient=", ErrorCode::InvalidQuery),
        ] {
            let err = Search::parse(query, &["patient"]).expect_err(query);
            assert_eq!(err.code(), code, "{query}");
        }
        assert_eq!(Search::parse("", &[]).expect("empty").count, DEFAULT_COUNT);
        let twice = Search::parse("patient=1&patient=2", &["patient"]).expect("parses");
        assert!(twice.one("patient").is_err());
    }

    #[test]
    fn tokens_read_system_and_code() {
        let any = Token::parse("MRN-1");
        assert!(any.matches("urn:a", "MRN-1") && !any.matches("urn:a", "MRN-2"));
        let exact = Token::parse("urn:a|MRN-1");
        assert!(exact.matches("urn:a", "MRN-1") && !exact.matches("urn:b", "MRN-1"));
        let no_system = Token::parse("|MRN-1");
        assert!(no_system.matches("", "MRN-1") && !no_system.matches("urn:a", "MRN-1"));
        let any_code = Token::parse("urn:a|");
        assert!(any_code.matches("urn:a", "whatever") && !any_code.matches("urn:b", "x"));
    }

    #[test]
    fn references_give_their_id() {
        assert_eq!(reference_id("patient", "Patient/7", "Patient").expect("ok"), 7);
        assert_eq!(reference_id("patient", "7", "Patient").expect("ok"), 7);
        for bad in [
            "Specimen/7",
            "Patient/0",
            "Patient/x",
            "-3",
            "",
            "http://h/fhir/R5/Patient/7",
        ] {
            assert!(reference_id("patient", bad, "Patient").is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_stand_for_their_interval_in_the_facility_time_zone() {
        let ny: Tz = "America/New_York".parse().expect("tz");
        let utc = chrono_tz::UTC;
        let day = date_bound("d", "2026-11-28", ny).expect("day");
        assert_eq!(day.from, Some(t("2026-11-28T05:00:00Z")));
        assert_eq!(day.to, Some(t("2026-11-29T05:00:00Z")));
        let cases = [
            ("ge2026-11-28", Some(t("2026-11-28T00:00:00Z")), None),
            ("gt2026-11-28", Some(t("2026-11-29T00:00:00Z")), None),
            ("le2026-11-28", None, Some(t("2026-11-29T00:00:00Z"))),
            ("lt2026-11-28", None, Some(t("2026-11-28T00:00:00Z"))),
            ("2026", Some(t("2026-01-01T00:00:00Z")), Some(t("2027-01-01T00:00:00Z"))),
            (
                "2026-02",
                Some(t("2026-02-01T00:00:00Z")),
                Some(t("2026-03-01T00:00:00Z")),
            ),
            ("ge2026-11-28T10:00:00+01:00", Some(t("2026-11-28T09:00:00Z")), None),
        ];
        for (value, from, to) in cases {
            assert_eq!(
                date_bound("d", value, utc).expect(value),
                DateBound { from, to },
                "{value}"
            );
        }
        for bad in [
            "ne2026-01-01",
            "2026-13",
            "26-11-28",
            "2026-11-28T10:00",
            "ge",
            "tomorrow",
        ] {
            assert!(date_bound("d", bad, utc).is_err(), "{bad}");
        }
        let both = DateBound::all(&[
            date_bound("d", "ge2026-11-01", utc).expect("ge"),
            date_bound("d", "lt2026-12-01", utc).expect("lt"),
        ]);
        assert!(both.contains(t("2026-11-15T00:00:00Z")));
        assert!(!both.contains(t("2026-12-01T00:00:00Z")));
    }
}
