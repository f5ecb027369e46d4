//! List pages: the `limit` a client asks for and the cursor it passes back.

use crate::error::{ApiError, ApiResult};

/// Default and largest page sizes of list routes.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

pub fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

/// A page cursor is the last id of the previous page, in decimal: clients pass back the
/// `next_cursor` they were given (the documented pattern is `^[0-9]{1,18}$`).
pub fn encode_cursor(id: i64) -> String {
    id.to_string()
}

pub fn decode_cursor(cursor: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(cursor) = cursor else { return Ok(None) };
    let digits = (1..=18).contains(&cursor.len()) && cursor.bytes().all(|b| b.is_ascii_digit());
    let id = digits.then(|| cursor.parse::<i64>().ok()).flatten();
    id.map(Some)
        .ok_or_else(|| ApiError::field("cursor", "is not a cursor this server returned"))
}

/// Trim a `limit + 1` fetch to a page and its next cursor.
pub fn paginate<T>(mut rows: Vec<T>, limit: i64, id_of: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|r| encode_cursor(id_of(r)));
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(Some(&encode_cursor(42))).expect("ok"), Some(42));
        assert_eq!(decode_cursor(None).expect("ok"), None);
        assert!(decode_cursor(Some("!!!")).is_err());
        assert!(decode_cursor(Some("djI6NA")).is_err());
        assert!(decode_cursor(Some("-1")).is_err());
        assert!(decode_cursor(Some("1234567890123456789")).is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(page_limit(None).expect("default"), 50);
        assert_eq!(page_limit(Some(500)).expect("max"), 500);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(501)).is_err());
    }

    #[test]
    fn pagination() {
        let (items, next) = paginate(vec![1, 2, 3], 2, |x| *x);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, Some(encode_cursor(2)));
        let (items, next) = paginate(vec![1, 2], 2, |x| *x);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, None);
    }

    proptest! {
        #[test]
        fn client_cursors_and_limits_never_panic(text in any::<String>(), raw in "[0-9]{0,20}|[ -~]{0,24}", n in any::<i64>()) {
            let _ = decode_cursor(Some(&text));
            let _ = decode_cursor(Some(&raw));
            // A cursor is 1 to 18 decimal digits, nothing else.
            let expected = ((1..=18).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()))
                .then(|| raw.parse::<i64>().ok())
                .flatten();
            prop_assert_eq!(decode_cursor(Some(&raw)).ok().flatten(), expected);
            let id = n.rem_euclid(1_000_000_000_000_000_000);
            prop_assert_eq!(decode_cursor(Some(&encode_cursor(id))).ok(), Some(Some(id)));
            prop_assert_eq!(page_limit(Some(n)).is_ok(), (1..=MAX_LIMIT).contains(&n));
        }
    }
}
