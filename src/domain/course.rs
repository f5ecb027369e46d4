//! A request's course as the bench reads it (domain.md §4): granulocytes are given daily, one
//! unit a day from `needed_by` for `units_requested` days (the order's timing, as FHIR shows it:
//! frequency 1, period 1 d, count = units requested; docs/fhir.md). And where the patient's
//! samples and crossmatches stand for the transfusion.
//!
//! Conventions:
//! * Course day `k` (1-based) is due at `needed_by + (k − 1) days` and lasts a day. A unit is
//!   due from its day's due time on.
//! * Allocations that hold or gave a unit (allocated, issued, transfused) cover the course days
//!   in the order they were made; returned and cancelled ones cover none.
//! * The transfusion is planned at `max(needed_by, now)`, as allocation judges it
//!   (`compatibility` module notes): a sample serves it when it is valid at that time, up to and
//!   including its `valid_until`.

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::compatibility::{CrossmatchFacts, CrossmatchKind};

/// Units due on each course day (a daily course: one unit a day).
pub const UNITS_PER_DAY: u32 = 1;

/// One day of the course.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CourseDay {
    /// 1-based.
    pub day: u32,
    pub due_at: DateTime<Utc>,
    pub units: u32,
}

/// The course of a request at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Course {
    pub days: Vec<CourseDay>,
    /// The course day `now` falls in; `None` before the first unit is due and after the last
    /// day.
    pub today: Option<u32>,
    /// Units whose due time has come.
    pub due_by_now: u32,
}

impl Course {
    /// The first day not covered by `covered` units (allocated, issued or transfused).
    pub fn next_uncovered(&self, covered: u32) -> Option<&CourseDay> {
        let mut left = covered;
        self.days.iter().find(|d| {
            if left >= d.units {
                left -= d.units;
                false
            } else {
                true
            }
        })
    }

    /// Units due by now that have not been given (issued or transfused).
    pub fn short_by(&self, given: u32) -> u32 {
        self.due_by_now.saturating_sub(given)
    }

    pub fn total_units(&self) -> u32 {
        self.days.iter().map(|d| d.units).sum()
    }
}

/// The daily course of `units_requested` units from `needed_by`, at `now`.
pub fn course(needed_by: DateTime<Utc>, units_requested: u32, now: DateTime<Utc>) -> Course {
    let days_count = units_requested.div_ceil(UNITS_PER_DAY);
    let mut left = units_requested;
    let days: Vec<CourseDay> = (1..=days_count)
        .map(|day| {
            let units = left.min(UNITS_PER_DAY);
            left -= units;
            CourseDay {
                day,
                due_at: needed_by + TimeDelta::days(i64::from(day - 1)),
                units,
            }
        })
        .collect();
    let today = days
        .iter()
        .find(|d| d.due_at <= now && now < d.due_at + TimeDelta::days(1))
        .map(|d| d.day);
    let due_by_now = days.iter().filter(|d| d.due_at <= now).map(|d| d.units).sum();
    Course {
        days,
        today,
        due_by_now,
    }
}

/// Where the patient's samples and crossmatches stand for a transfusion at `transfusion_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossmatchState {
    /// The latest validity among the samples valid at the transfusion; `None` when none is.
    pub sample_valid_until: Option<DateTime<Utc>>,
    /// Compatible red-cell crossmatches on samples valid at the transfusion.
    pub compatible: u32,
    /// Compatible leukocyte crossmatches on samples valid at the transfusion.
    pub leukocyte_compatible: u32,
    /// Incompatible results no medical director has resolved (each blocks its unit).
    pub incompatible_standing: u32,
}

/// Sums up `samples` (their `valid_until`) and the crossmatches recorded on them.
pub fn crossmatch_state(
    samples: &[DateTime<Utc>],
    crossmatches: &[CrossmatchFacts],
    transfusion_at: DateTime<Utc>,
) -> CrossmatchState {
    let valid = |until: DateTime<Utc>| until >= transfusion_at;
    let count = |kind: CrossmatchKind| {
        let n = crossmatches
            .iter()
            .filter(|x| x.kind == kind && x.compatible && valid(x.sample_valid_until))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    let standing = crossmatches.iter().filter(|x| !x.compatible && !x.resolved).count();
    CrossmatchState {
        sample_valid_until: samples.iter().copied().filter(|t| valid(*t)).max(),
        compatible: count(CrossmatchKind::RedCell),
        leukocyte_compatible: count(CrossmatchKind::Leukocyte),
        incompatible_standing: u32::try_from(standing).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    const NEEDED: &str = "2026-11-25T08:00:00Z";

    #[test]
    fn a_course_is_one_unit_a_day_from_needed_by() {
        let c = course(at(NEEDED), 3, at("2026-11-24T20:00:00Z"));
        let due: Vec<(u32, DateTime<Utc>, u32)> = c.days.iter().map(|d| (d.day, d.due_at, d.units)).collect();
        assert_eq!(
            due,
            vec![
                (1, at("2026-11-25T08:00:00Z"), 1),
                (2, at("2026-11-26T08:00:00Z"), 1),
                (3, at("2026-11-27T08:00:00Z"), 1),
            ]
        );
        assert_eq!(c.total_units(), 3);
    }

    #[test]
    fn today_and_units_due_by_now_at_the_boundaries() {
        // (now, today, due by now) for a course of 3 from NEEDED.
        let cases: &[(&str, Option<u32>, u32)] = &[
            ("2026-11-25T07:59:59Z", None, 0),
            ("2026-11-25T08:00:00Z", Some(1), 1),
            ("2026-11-26T07:59:59Z", Some(1), 1),
            ("2026-11-26T08:00:00Z", Some(2), 2),
            ("2026-11-27T08:00:00Z", Some(3), 3),
            ("2026-11-28T07:59:59Z", Some(3), 3),
            ("2026-11-28T08:00:00Z", None, 3),
            ("2026-12-10T00:00:00Z", None, 3),
        ];
        for (now, today, due) in cases {
            let c = course(at(NEEDED), 3, at(now));
            assert_eq!((c.today, c.due_by_now), (*today, *due), "at {now}");
        }
    }

    #[test]
    fn allocations_cover_days_in_order_and_the_shortfall_counts_given_units() {
        let c = course(at(NEEDED), 3, at("2026-11-26T09:00:00Z"));
        let next = |covered| c.next_uncovered(covered).map(|d| d.day);
        assert_eq!(next(0), Some(1));
        assert_eq!(next(1), Some(2));
        assert_eq!(next(2), Some(3));
        assert_eq!(next(3), None);
        assert_eq!(next(7), None);
        // Two units due by day 2; one given leaves one short, three given none.
        assert_eq!(c.due_by_now, 2);
        assert_eq!(c.short_by(0), 2);
        assert_eq!(c.short_by(1), 1);
        assert_eq!(c.short_by(3), 0);
    }

    #[test]
    fn an_empty_course_has_no_days() {
        let c = course(at(NEEDED), 0, at(NEEDED));
        assert!(c.days.is_empty());
        assert_eq!((c.today, c.due_by_now), (None, 0));
        assert_eq!(c.next_uncovered(0), None);
    }

    fn xm(kind: CrossmatchKind, compatible: bool, resolved: bool, valid_until: &str) -> CrossmatchFacts {
        CrossmatchFacts {
            id: 1,
            kind,
            compatible,
            resolved,
            sample_valid_until: at(valid_until),
        }
    }

    #[test]
    fn samples_and_crossmatches_count_when_valid_at_the_transfusion() {
        use CrossmatchKind::{Leukocyte, RedCell};
        let transfusion = at("2026-11-25T08:00:00Z");
        let samples = [
            at("2026-11-25T07:59:59Z"),
            at("2026-11-25T08:00:00Z"),
            at("2026-11-26T08:00:00Z"),
        ];
        let crossmatches = [
            xm(RedCell, true, false, "2026-11-26T08:00:00Z"),
            // Valid up to and including its end.
            xm(RedCell, true, false, "2026-11-25T08:00:00Z"),
            // The sample is no longer valid then.
            xm(RedCell, true, false, "2026-11-25T07:59:59Z"),
            xm(Leukocyte, true, false, "2026-11-26T08:00:00Z"),
            // An incompatible result stands until resolved, whatever its sample.
            xm(RedCell, false, false, "2026-11-20T00:00:00Z"),
            xm(Leukocyte, false, true, "2026-11-26T08:00:00Z"),
        ];
        let s = crossmatch_state(&samples, &crossmatches, transfusion);
        assert_eq!(
            s,
            CrossmatchState {
                sample_valid_until: Some(at("2026-11-26T08:00:00Z")),
                compatible: 2,
                leukocyte_compatible: 1,
                incompatible_standing: 1,
            }
        );
        let none = crossmatch_state(&samples[..1], &[], transfusion);
        assert_eq!(none.sample_valid_until, None);
        assert_eq!((none.compatible, none.incompatible_standing), (0, 0));
    }
}
