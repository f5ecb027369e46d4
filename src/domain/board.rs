//! What the board says about a unit at a glance: its time-to-expiry band against the policy's
//! alert thresholds (`alerts.expiry_thresholds_hours`), and where its infectious-marker testing
//! stands. The console's countdown (`assets/console/console.js`) decides the band the same way
//! in the browser; a test runs both over the same table.

use chrono::{DateTime, TimeDelta, Utc};

use super::units::{MarkerResult, TestResult, UnitAction, UnitStatus, marker_standing, next_status, reactive_markers};

/// The board shows a unit until the end of its life: while the state machine still lets
/// something happen to it. Transfused and discarded units are done; an expired unit stays (it
/// must be taken off the shelf and discarded), and so does an issued one (not yet transfused).
pub fn on_board(status: UnitStatus) -> bool {
    UnitAction::ALL
        .iter()
        .any(|&action| next_status(status, action).is_some())
}

/// How close a unit is to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpiryBand {
    /// The number of thresholds the remaining time is at or under (0: none yet).
    Band(usize),
    /// At or past its expiry.
    Expired,
}

impl ExpiryBand {
    /// The CSS class the page colours it with (`band-N` or `expired`).
    pub fn class(self) -> String {
        match self {
            Self::Band(n) => format!("band-{n}"),
            Self::Expired => "expired".to_owned(),
        }
    }
}

/// The band of a unit with `remaining_secs` to live: `Expired` at or under 0, otherwise the
/// number of thresholds it is at or under (the alert scan's rule: a unit with exactly 4 h left
/// has passed the 4 h threshold). The thresholds' order does not matter.
pub fn expiry_band(remaining_secs: i64, thresholds_hours: &[u32]) -> ExpiryBand {
    if remaining_secs <= 0 {
        return ExpiryBand::Expired;
    }
    ExpiryBand::Band(thresholds_hours.iter().filter(|&&h| remaining_secs <= secs(h)).count())
}

/// The band in words, so colour never carries it alone: `expired`, `4 h or less left` (the
/// tightest threshold passed), `more than 8 h left` (none passed yet), or `not expired` when the
/// policy lists no threshold.
pub fn expiry_label(remaining_secs: i64, thresholds_hours: &[u32]) -> String {
    if remaining_secs <= 0 {
        return "expired".to_owned();
    }
    let tightest = thresholds_hours
        .iter()
        .copied()
        .filter(|&h| remaining_secs <= secs(h))
        .min();
    match (tightest, thresholds_hours.iter().copied().max()) {
        (Some(h), _) => format!("{h} h or less left"),
        (None, Some(widest)) => format!("more than {widest} h left"),
        (None, None) => "not expired".to_owned(),
    }
}

fn secs(hours: u32) -> i64 {
    i64::from(hours) * 3600
}

/// Whole seconds until `expires_at`, rounded up: a unit with half a second to live still has
/// 1 s (it is not yet expired), and one at exactly its expiry has 0 (it is).
pub fn seconds_left(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let left = expires_at.signed_duration_since(now);
    let whole = left.num_seconds();
    if left - TimeDelta::seconds(whole) > TimeDelta::zero() {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// `h:mm:ss` left (hours unbounded), `0:00:00` once expired.
pub fn clock_text(remaining_secs: i64) -> String {
    let s = remaining_secs.max(0);
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Where a unit's infectious-marker testing stands against the policy's required markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerState {
    /// Every required marker negative, none reactive.
    Complete,
    /// Required markers still pending or with no result; none reactive.
    Incomplete { pending: Vec<String>, missing: Vec<String> },
    /// A marker (required or not) was ever reported positive: the unit can only be discarded.
    Reactive(Vec<String>),
}

/// `results`: every recorded result (or the standing one per marker), oldest first. A positive
/// result stands whatever follows it ([`marker_standing`]).
pub fn marker_state(results: &[MarkerResult], required: &[String]) -> MarkerState {
    let reactive = reactive_markers(results);
    if !reactive.is_empty() {
        return MarkerState::Reactive(reactive.into_iter().map(str::to_owned).collect());
    }
    let (mut pending, mut missing) = (Vec::new(), Vec::new());
    for marker in required {
        match marker_standing(results, marker) {
            None => missing.push(marker.clone()),
            Some(TestResult::Pending) => pending.push(marker.clone()),
            Some(_) => {}
        }
    }
    if pending.is_empty() && missing.is_empty() {
        MarkerState::Complete
    } else {
        MarkerState::Incomplete { pending, missing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    #[test]
    fn the_board_shows_every_unit_short_of_transfused_or_discarded() {
        use UnitStatus::*;
        for (status, shown) in [
            (Quarantined, true),
            (Available, true),
            (Allocated, true),
            (Issued, true),
            (Expired, true),
            (Transfused, false),
            (Discarded, false),
        ] {
            assert_eq!(on_board(status), shown, "{status}");
        }
        assert_eq!(UnitStatus::ALL.len(), 7);
    }

    #[test]
    fn bands_count_the_thresholds_at_or_under_the_time_left() {
        use ExpiryBand::{Band, Expired};
        let policy = [8, 4, 2];
        let cases: &[(i64, &[u32], ExpiryBand, &str)] = &[
            (24 * H, &policy, Band(0), "more than 8 h left"),
            (8 * H + 1, &policy, Band(0), "more than 8 h left"),
            (8 * H, &policy, Band(1), "8 h or less left"),
            (4 * H + 1, &policy, Band(1), "8 h or less left"),
            (4 * H, &policy, Band(2), "4 h or less left"),
            (2 * H + 1, &policy, Band(2), "4 h or less left"),
            (2 * H, &policy, Band(3), "2 h or less left"),
            (1, &policy, Band(3), "2 h or less left"),
            (0, &policy, Expired, "expired"),
            (-1, &policy, Expired, "expired"),
            (-30 * H, &policy, Expired, "expired"),
            (i64::MIN, &policy, Expired, "expired"),
            (i64::MAX, &policy, Band(0), "more than 8 h left"),
            // A single threshold; other values; any order.
            (6 * H, &[6], Band(1), "6 h or less left"),
            (6 * H + 1, &[6], Band(0), "more than 6 h left"),
            (3 * H, &[2, 12, 6], Band(2), "6 h or less left"),
            (13 * H, &[2, 12, 6], Band(0), "more than 12 h left"),
            (72 * H, &[72, 1], Band(1), "72 h or less left"),
            // No threshold: only expired or not.
            (5 * H, &[], Band(0), "not expired"),
            (1, &[], Band(0), "not expired"),
            (0, &[], Expired, "expired"),
        ];
        for (left, thresholds, band, label) in cases {
            assert_eq!(expiry_band(*left, thresholds), *band, "{left} s {thresholds:?}");
            assert_eq!(expiry_label(*left, thresholds), *label, "{left} s {thresholds:?}");
        }
        assert_eq!(Band(3).class(), "band-3");
        assert_eq!(Expired.class(), "expired");
    }

    #[test]
    fn seconds_left_round_up_so_expiry_is_exact() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let ms = TimeDelta::milliseconds;
        let cases = [
            (ms(0), 0),
            (ms(1), 1),
            (ms(999), 1),
            (ms(1000), 1),
            (ms(1001), 2),
            (ms(4 * 3_600_000), 4 * H),
            (ms(4 * 3_600_000 + 1), 4 * H + 1),
            (ms(-1), 0),
            (ms(-999), 0),
            (ms(-1000), -1),
            (ms(-1500), -1),
            (TimeDelta::microseconds(1), 1),
        ];
        for (left, secs) in cases {
            assert_eq!(seconds_left(at + left, at), secs, "{left:?}");
        }
    }

    #[test]
    fn the_clock_reads_hours_minutes_seconds() {
        for (secs, text) in [
            (0, "0:00:00"),
            (-5, "0:00:00"),
            (59, "0:00:59"),
            (61, "0:01:01"),
            (4 * H, "4:00:00"),
            (23 * H + 59 * 60 + 59, "23:59:59"),
            (30 * H + 5, "30:00:05"),
        ] {
            assert_eq!(clock_text(secs), text);
        }
    }

    #[test]
    fn marker_state_follows_the_standing_results() {
        let required: Vec<String> = ["hiv", "hbv", "hcv"].map(str::to_owned).to_vec();
        let r = |marker: &str, result| MarkerResult {
            marker: marker.to_owned(),
            result,
        };
        use TestResult::{Negative as N, Pending as P, Positive as Pos};
        let strs = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases: Vec<(Vec<MarkerResult>, MarkerState)> = vec![
            (vec![r("hiv", N), r("hbv", N), r("hcv", N)], MarkerState::Complete),
            (
                vec![],
                MarkerState::Incomplete {
                    pending: vec![],
                    missing: strs(&["hiv", "hbv", "hcv"]),
                },
            ),
            (
                vec![r("hiv", N), r("hbv", P)],
                MarkerState::Incomplete {
                    pending: strs(&["hbv"]),
                    missing: strs(&["hcv"]),
                },
            ),
            // The latest result stands; a pending one that came back negative is complete.
            (
                vec![r("hiv", N), r("hbv", P), r("hbv", N), r("hcv", N)],
                MarkerState::Complete,
            ),
            // A positive result stands even after a later negative, and on any marker.
            (
                vec![r("hiv", Pos), r("hiv", N), r("hbv", N), r("hcv", N)],
                MarkerState::Reactive(strs(&["hiv"])),
            ),
            (
                vec![r("htlv", Pos), r("hiv", N)],
                MarkerState::Reactive(strs(&["htlv"])),
            ),
        ];
        for (results, state) in cases {
            assert_eq!(marker_state(&results, &required), state, "{results:?}");
        }
        assert_eq!(marker_state(&[], &[]), MarkerState::Complete);
    }
}
