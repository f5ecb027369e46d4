//! Granulocyte units (domain.md §1): the status machine, server-side expiry, release gates,
//! irradiation dose and storage temperature. Expiry is enforced whenever an action happens, not
//! only by the sweep job: a unit past `expires_at` is treated as expired everywhere.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};

use super::text_enum;
use crate::domain::eligibility::Reason;
use crate::domain::policy::{Policy, PooledExpiry};

text_enum!(
    UnitStatus {
        Quarantined => "quarantined",
        Available => "available",
        Allocated => "allocated",
        Issued => "issued",
        Transfused => "transfused",
        Expired => "expired",
        Discarded => "discarded",
    }
);

text_enum!(
    /// What can happen to a unit.
    UnitAction {
        Release => "release",
        Quarantine => "quarantine",
        Allocate => "allocate",
        Deallocate => "deallocate",
        Issue => "issue",
        Return => "return",
        Transfuse => "transfuse",
        Expire => "expire",
        Discard => "discard",
        Irradiate => "irradiate",
    }
);

text_enum!(
    TestResult {
        Negative => "negative",
        Positive => "positive",
        Pending => "pending",
    }
);

pub mod codes {
    pub const UNIT_EXPIRED: &str = "unit_expired";
    pub const INVALID_TRANSITION: &str = "invalid_transition";
    pub const MARKER_MISSING: &str = "marker_missing";
    pub const MARKER_PENDING: &str = "marker_pending";
    pub const MARKER_POSITIVE: &str = "marker_positive";
    pub const NOT_IRRADIATED: &str = "not_irradiated";
    pub const IRRADIATION_DOSE_OUT_OF_RANGE: &str = "irradiation_dose_out_of_range";
}

/// The status after `action`, or `None` when the machine does not allow it.
pub fn next_status(from: UnitStatus, action: UnitAction) -> Option<UnitStatus> {
    use UnitAction as A;
    use UnitStatus::*;
    match (from, action) {
        (Quarantined, A::Release) => Some(Available),
        (Available | Allocated, A::Quarantine) => Some(Quarantined),
        (Available, A::Allocate) => Some(Allocated),
        (Allocated, A::Deallocate) => Some(Available),
        (Allocated, A::Issue) => Some(Issued),
        (Issued, A::Return) => Some(Available),
        (Issued, A::Transfuse) => Some(Transfused),
        (Quarantined | Available | Allocated, A::Expire) => Some(Expired),
        (Quarantined | Available | Allocated | Expired, A::Discard) => Some(Discarded),
        // Irradiation records a fact and keeps the status; only units still in the bank.
        (s @ (Quarantined | Available | Allocated), A::Irradiate) => Some(s),
        _ => None,
    }
}

/// Statuses whose units are still in the bank and therefore age into `expired`.
fn ages(status: UnitStatus) -> bool {
    matches!(
        status,
        UnitStatus::Quarantined | UnitStatus::Available | UnitStatus::Allocated
    )
}

/// The status as of `now`: a unit in the bank at or past its expiry is expired, whatever the
/// stored status says (the sweep job may not have run yet).
pub fn effective_status(stored: UnitStatus, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> UnitStatus {
    if ages(stored) && now >= expires_at {
        UnitStatus::Expired
    } else {
        stored
    }
}

/// Checks `action` on a unit at `now`; `Err` carries the refusal code (`unit_expired` when
/// expiry is what forbids it, `invalid_transition` otherwise). A unit that comes back into the
/// bank at or past its expiry (a return) comes back expired.
pub fn transition(
    stored: UnitStatus,
    action: UnitAction,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<UnitStatus, &'static str> {
    let from = if action == UnitAction::Expire {
        stored
    } else {
        effective_status(stored, expires_at, now)
    };
    match next_status(from, action) {
        Some(to) => Ok(effective_status(to, expires_at, now)),
        None if from == UnitStatus::Expired => Err(codes::UNIT_EXPIRED),
        None => Err(codes::INVALID_TRANSITION),
    }
}

/// Server-side expiry: `unit.max_shelf_life_hours` after the end of collection; a pooled
/// supplier unit under `midnight_day_after_collection` expires at 23:59 UTC on the day after.
pub fn expires_at(collection_end: DateTime<Utc>, pooled: bool, policy: &Policy) -> DateTime<Utc> {
    if pooled && policy.unit.pooled_expiry == PooledExpiry::MidnightDayAfterCollection {
        let day_after = collection_end.date_naive() + TimeDelta::days(1);
        let end_of_day = NaiveTime::from_hms_opt(23, 59, 0).unwrap_or(NaiveTime::MIN);
        return day_after.and_time(end_of_day).and_utc();
    }
    collection_end + TimeDelta::hours(i64::from(policy.unit.max_shelf_life_hours))
}

/// The latest result of one marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerResult {
    pub marker: String,
    pub result: TestResult,
}

/// Everything that stops a release. A standard release needs every required marker negative;
/// an emergency release (physician-acknowledged) goes ahead with pending or missing results but
/// never with a positive one. With `unit.irradiation_before_release` the irradiation is needed
/// too.
pub fn release_blockers(latest: &[MarkerResult], irradiated: bool, emergency: bool, policy: &Policy) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let result_of = |m: &str| latest.iter().find(|r| r.marker == m).map(|r| r.result);
    if !emergency {
        for marker in &policy.unit.required_markers {
            match result_of(marker) {
                None => reasons.push(Reason {
                    code: codes::MARKER_MISSING,
                    message: format!("no {marker} result recorded"),
                }),
                Some(TestResult::Pending) => reasons.push(Reason {
                    code: codes::MARKER_PENDING,
                    message: format!("{marker} result is pending"),
                }),
                _ => {}
            }
        }
    }
    for r in latest.iter().filter(|r| r.result == TestResult::Positive) {
        reasons.push(Reason {
            code: codes::MARKER_POSITIVE,
            message: format!("{} is positive", r.marker),
        });
    }
    if policy.unit.irradiation_before_release && !irradiated {
        reasons.push(Reason {
            code: codes::NOT_IRRADIATED,
            message: "the policy requires irradiation before release".to_owned(),
        });
    }
    reasons
}

/// `None` when the dose is within the policy range.
pub fn irradiation_dose_problem(dose_gy: f64, policy: &Policy) -> Option<Reason> {
    let (min, max) = (policy.unit.irradiation_min_gy, policy.unit.irradiation_max_gy);
    if dose_gy.is_finite() && dose_gy >= min && dose_gy <= max {
        None
    } else {
        Some(Reason {
            code: codes::IRRADIATION_DOSE_OUT_OF_RANGE,
            message: format!("{dose_gy} Gy is outside {min}–{max} Gy"),
        })
    }
}

/// True when a storage reading is inside the policy range (both ends inclusive).
pub fn temperature_ok(celsius: f64, policy: &Policy) -> bool {
    celsius.is_finite() && celsius >= policy.unit.storage_temp_min_c && celsius <= policy.unit.storage_temp_max_c
}

#[cfg(test)]
mod tests {
    use super::*;
    use UnitStatus::*;
    use chrono::{TimeZone, Timelike};
    use proptest::prelude::*;

    fn t(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).single().expect("valid")
    }

    /// The unit machine (domain.md §1, api.md): every allowed (from, action, to).
    const ALLOWED: &[(UnitStatus, UnitAction, UnitStatus)] = &[
        (Quarantined, UnitAction::Release, Available),
        (Available, UnitAction::Quarantine, Quarantined),
        (Allocated, UnitAction::Quarantine, Quarantined),
        (Available, UnitAction::Allocate, Allocated),
        (Allocated, UnitAction::Deallocate, Available),
        (Allocated, UnitAction::Issue, Issued),
        (Issued, UnitAction::Return, Available),
        (Issued, UnitAction::Transfuse, Transfused),
        (Quarantined, UnitAction::Expire, Expired),
        (Available, UnitAction::Expire, Expired),
        (Allocated, UnitAction::Expire, Expired),
        (Quarantined, UnitAction::Discard, Discarded),
        (Available, UnitAction::Discard, Discarded),
        (Allocated, UnitAction::Discard, Discarded),
        (Expired, UnitAction::Discard, Discarded),
        (Quarantined, UnitAction::Irradiate, Quarantined),
        (Available, UnitAction::Irradiate, Available),
        (Allocated, UnitAction::Irradiate, Allocated),
    ];

    fn allowed(from: UnitStatus, action: UnitAction) -> Option<UnitStatus> {
        ALLOWED
            .iter()
            .find(|(f, a, _)| *f == from && *a == action)
            .map(|(_, _, to)| *to)
    }

    #[test]
    fn every_status_and_action() {
        for from in UnitStatus::ALL {
            for action in UnitAction::ALL {
                assert_eq!(
                    next_status(*from, *action),
                    allowed(*from, *action),
                    "{from} --{action}-->"
                );
            }
        }
    }

    #[test]
    fn expiry_is_enforced_at_the_moment_of_the_action() {
        let expires = t(2026, 11, 26, 10, 0);
        let before = expires - TimeDelta::seconds(1);
        use UnitAction as A;
        assert_eq!(transition(Quarantined, A::Release, expires, before), Ok(Available));
        assert_eq!(
            transition(Quarantined, A::Release, expires, expires),
            Err(codes::UNIT_EXPIRED)
        );
        assert_eq!(
            transition(Available, A::Allocate, expires, expires),
            Err(codes::UNIT_EXPIRED)
        );
        assert_eq!(
            transition(Allocated, A::Issue, expires, expires),
            Err(codes::UNIT_EXPIRED)
        );
        assert_eq!(
            transition(Available, A::Irradiate, expires, expires),
            Err(codes::UNIT_EXPIRED)
        );
        assert_eq!(transition(Available, A::Discard, expires, expires), Ok(Discarded));
        assert_eq!(transition(Available, A::Expire, expires, expires), Ok(Expired));
        assert_eq!(
            transition(Expired, A::Release, expires, expires),
            Err(codes::UNIT_EXPIRED)
        );
        // Issued units have left the bank: they do not turn into expired.
        assert_eq!(effective_status(Issued, expires, expires), Issued);
        assert_eq!(transition(Issued, A::Transfuse, expires, expires), Ok(Transfused));
        // Returned: available while fresh, expired from its expiry on (it was `available`).
        assert_eq!(transition(Issued, A::Return, expires, before), Ok(Available));
        assert_eq!(transition(Issued, A::Return, expires, expires), Ok(Expired));
        assert_eq!(
            transition(Discarded, A::Release, expires, before),
            Err(codes::INVALID_TRANSITION)
        );
        assert_eq!(
            transition(Available, A::Release, expires, before),
            Err(codes::INVALID_TRANSITION)
        );
    }

    #[test]
    fn expiry_arithmetic() {
        let mut p = Policy::default();
        let end = t(2026, 11, 25, 14, 30);
        assert_eq!(expires_at(end, false, &p), t(2026, 11, 26, 14, 30));
        // Across a year end and a leap day; UTC has no DST jumps.
        assert_eq!(expires_at(t(2026, 12, 31, 23, 59), false, &p), t(2027, 1, 1, 23, 59));
        assert_eq!(expires_at(t(2028, 2, 28, 12, 0), false, &p), t(2028, 2, 29, 12, 0));
        assert_eq!(expires_at(t(2026, 3, 29, 0, 30), false, &p), t(2026, 3, 30, 0, 30));
        // Pooled supplier units: 23:59 on the day after collection.
        assert_eq!(expires_at(end, true, &p), t(2026, 11, 26, 23, 59));
        assert_eq!(expires_at(t(2028, 2, 28, 1, 0), true, &p), t(2028, 2, 29, 23, 59));
        p.unit.pooled_expiry = PooledExpiry::MaxShelfLife;
        assert_eq!(expires_at(end, true, &p), t(2026, 11, 26, 14, 30));
        p.unit.max_shelf_life_hours = 8;
        assert_eq!(expires_at(end, false, &p), t(2026, 11, 25, 22, 30));
    }

    fn results(list: &[(&str, TestResult)]) -> Vec<MarkerResult> {
        list.iter()
            .map(|(m, r)| MarkerResult {
                marker: (*m).to_owned(),
                result: *r,
            })
            .collect()
    }

    #[test]
    fn release_gates() {
        let mut p = Policy::default();
        p.unit.required_markers = vec!["anti_hiv".into(), "hbsag".into()];
        use TestResult::*;
        let codes_of = |r: Vec<Reason>| r.into_iter().map(|x| x.code).collect::<Vec<_>>();
        assert_eq!(
            codes_of(release_blockers(
                &results(&[("anti_hiv", Negative), ("hbsag", Negative)]),
                false,
                false,
                &p
            )),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes_of(release_blockers(&results(&[("anti_hiv", Pending)]), false, false, &p)),
            vec![codes::MARKER_PENDING, codes::MARKER_MISSING]
        );
        // Emergency release: pending and missing results are accepted, positives never.
        assert!(release_blockers(&results(&[("anti_hiv", Pending)]), false, true, &p).is_empty());
        assert_eq!(
            codes_of(release_blockers(&results(&[("syphilis", Positive)]), false, true, &p)),
            vec![codes::MARKER_POSITIVE]
        );
        p.unit.irradiation_before_release = true;
        let ok = results(&[("anti_hiv", Negative), ("hbsag", Negative)]);
        assert_eq!(
            codes_of(release_blockers(&ok, false, false, &p)),
            vec![codes::NOT_IRRADIATED]
        );
        assert!(release_blockers(&ok, true, false, &p).is_empty());
    }

    #[test]
    fn dose_and_temperature_ranges_are_inclusive() {
        let p = Policy::default();
        for (dose, ok) in [
            (24.9, false),
            (25.0, true),
            (50.0, true),
            (50.1, false),
            (f64::NAN, false),
        ] {
            assert_eq!(irradiation_dose_problem(dose, &p).is_none(), ok, "{dose}");
        }
        for (c, ok) in [(19.9, false), (20.0, true), (22.0, true), (24.0, true), (24.1, false)] {
            assert_eq!(temperature_ok(c, &p), ok, "{c}");
        }
    }

    /// Out of the bank for good: nothing leaves these.
    const TERMINAL: [UnitStatus; 2] = [Transfused, Discarded];
    /// In the bank: these age into expired.
    const IN_BANK: [UnitStatus; 3] = [Quarantined, Available, Allocated];

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (1u32..=120, any::<bool>()).prop_map(|(hours, midnight)| {
            let mut p = Policy::default();
            p.unit.max_shelf_life_hours = hours;
            if !midnight {
                p.unit.pooled_expiry = PooledExpiry::MaxShelfLife;
            }
            p
        })
    }

    proptest! {
        #[test]
        fn no_sequence_of_actions_reaches_a_forbidden_state(
            start in prop::sample::select(UnitStatus::ALL),
            shelf_minutes in 0i64..2_000,
            steps in prop::collection::vec((prop::sample::select(UnitAction::ALL), 0i64..240), 0..40),
        ) {
            let t0 = t(2026, 11, 25, 8, 0);
            let expires = t0 + TimeDelta::minutes(shelf_minutes);
            let (mut stored, mut now) = (start, t0);
            for (action, wait) in steps {
                now += TimeDelta::minutes(wait);
                let past_expiry = now >= expires;
                let effective = effective_status(stored, expires, now);
                // Only a unit in the bank ages, and only into expired.
                let aged = IN_BANK.contains(&stored) && past_expiry;
                prop_assert_eq!(effective, if aged { Expired } else { stored });
                let from = if action == UnitAction::Expire { stored } else { effective };
                match transition(stored, action, expires, now) {
                    Ok(to) => {
                        // The table's move, seen at `now`: back in the bank past expiry is expired.
                        let moved = allowed(from, action).map(|x| effective_status(x, expires, now));
                        prop_assert_eq!(Some(to), moved, "{} --{}--> {}", from, action, to);
                        prop_assert!(!TERMINAL.contains(&from));
                        prop_assert!(to != Issued || (action == UnitAction::Issue && from == Allocated));
                        prop_assert!(to != Transfused || from == Issued);
                        prop_assert!(!(past_expiry && IN_BANK.contains(&to)), "{} in the bank past expiry", to);
                        stored = to;
                    }
                    Err(code) => {
                        prop_assert_eq!(allowed(from, action), None, "{} --{}--> refused", from, action);
                        let expected = if from == Expired { codes::UNIT_EXPIRED } else { codes::INVALID_TRANSITION };
                        prop_assert_eq!(code, expected);
                    }
                }
            }
        }

        #[test]
        fn expiry_is_after_collection_by_the_policy_rule(
            minutes in 0i64..5_000_000,
            pooled in any::<bool>(),
            policy in arb_policy(),
        ) {
            let end = t(2020, 1, 1, 0, 0) + TimeDelta::minutes(minutes);
            let at = expires_at(end, pooled, &policy);
            if pooled && policy.unit.pooled_expiry == PooledExpiry::MidnightDayAfterCollection {
                prop_assert_eq!(at.date_naive(), end.date_naive() + TimeDelta::days(1));
                prop_assert_eq!((at.hour(), at.minute(), at.second()), (23, 59, 0));
                prop_assert!(at > end + TimeDelta::hours(23) && at < end + TimeDelta::hours(48));
            } else {
                prop_assert_eq!(at, end + TimeDelta::hours(i64::from(policy.unit.max_shelf_life_hours)));
            }
        }

        #[test]
        fn release_gates_follow_the_marker_table(
            results in prop::collection::vec(
                prop::sample::select(vec![TestResult::Negative, TestResult::Positive, TestResult::Pending]),
                4,
            ),
            recorded in prop::sample::subsequence(vec![0usize, 1, 2, 3], 0..=4),
            irradiated in any::<bool>(),
            emergency in any::<bool>(),
            before_release in any::<bool>(),
        ) {
            const MARKERS: [&str; 4] = ["anti_hiv", "hbsag", "hcv_nat", "syphilis"];
            let mut p = Policy::default();
            p.unit.required_markers = MARKERS[..3].iter().map(|m| (*m).to_owned()).collect();
            p.unit.irradiation_before_release = before_release;
            let latest: Vec<MarkerResult> = recorded
                .iter()
                .map(|&i| MarkerResult { marker: MARKERS[i].to_owned(), result: results[i] })
                .collect();
            let result_of = |i: usize| recorded.contains(&i).then_some(results[i]);
            let mut expected = Vec::new();
            if !emergency {
                for i in 0..3 {
                    match result_of(i) {
                        None => expected.push(codes::MARKER_MISSING),
                        Some(TestResult::Pending) => expected.push(codes::MARKER_PENDING),
                        _ => {}
                    }
                }
            }
            let positives = recorded.iter().filter(|&&i| results[i] == TestResult::Positive);
            expected.extend(positives.map(|_| codes::MARKER_POSITIVE));
            if before_release && !irradiated {
                expected.push(codes::NOT_IRRADIATED);
            }
            let blockers = release_blockers(&latest, irradiated, emergency, &p);
            let got: Vec<&str> = blockers.into_iter().map(|r| r.code).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn dose_and_temperature_ranges_are_inclusive_and_refuse_non_numbers(x in any::<f64>()) {
            let p = Policy::default();
            let (lo, hi) = (p.unit.irradiation_min_gy, p.unit.irradiation_max_gy);
            prop_assert_eq!(irradiation_dose_problem(x, &p).is_none(), x.is_finite() && lo <= x && x <= hi);
            let (lo, hi) = (p.unit.storage_temp_min_c, p.unit.storage_temp_max_c);
            prop_assert_eq!(temperature_ok(x, &p), x.is_finite() && lo <= x && x <= hi);
        }
    }
}
