//! The bank's wall clock: what people and scanners read (labels, ISBT 128 dates) is local time
//! in the facility's IANA zone; everything stored and sent over the API is UTC.

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The earliest instant that shows `local` on the wall clock of `tz`; inside a gap (the clocks
/// went forward), the last instant before it. For an expiry both are the safe reading.
pub fn earliest_instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    use chrono::offset::LocalResult;
    let mut t = local;
    // A gap is at most a few hours; step back a minute at a time until the clock shows a time.
    for _ in 0..(24 * 60) {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => return x.with_timezone(&Utc),
            LocalResult::None => t -= TimeDelta::minutes(1),
        }
    }
    local.and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use chrono_tz::America::New_York;

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, min, 0))
            .expect("valid")
    }

    #[test]
    fn gaps_and_repeats_take_the_earlier_instant() {
        for (wall, utc) in [
            // Ordinary winter and summer times.
            (local(2026, 1, 15, 12, 0), "2026-01-15T17:00:00Z"),
            (local(2026, 7, 15, 12, 0), "2026-07-15T16:00:00Z"),
            // 8 March: 02:00–02:59 does not exist; 02:30 reads as 01:59 EST.
            (local(2026, 3, 8, 2, 30), "2026-03-08T06:59:00Z"),
            (local(2026, 3, 8, 3, 0), "2026-03-08T07:00:00Z"),
            // 1 November: 01:00–01:59 happens twice; the first (EDT) is taken.
            (local(2026, 11, 1, 1, 30), "2026-11-01T05:30:00Z"),
            (local(2026, 11, 1, 2, 0), "2026-11-01T07:00:00Z"),
        ] {
            assert_eq!(
                earliest_instant(New_York, wall).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                utc,
                "{wall}"
            );
        }
        assert_eq!(
            earliest_instant(chrono_tz::UTC, local(2026, 3, 8, 2, 30)),
            local(2026, 3, 8, 2, 30).and_utc()
        );
    }
}
