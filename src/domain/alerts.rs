//! The alert rules (domain.md §1, §3, §7): which conditions hold for a unit, an allocation, a
//! request or a collection at `now`. Each condition has a deduplication key; the scan raises the
//! keys that hold and are new, and resolves open alerts whose key no longer holds.

use chrono::{DateTime, TimeDelta, Utc};

use super::text_enum;
use crate::domain::eligibility::Eligibility;
use crate::domain::policy::Policy;
use crate::domain::stimulation;
use crate::domain::units::UnitStatus;

text_enum!(
    AlertSeverity {
        Info => "info",
        Warning => "warning",
        Urgent => "urgent",
    }
);

pub mod kinds {
    pub const UNIT_EXPIRING: &str = "unit.expiring";
    pub const UNIT_EXPIRED: &str = "unit.expired";
    pub const SAMPLE_EXPIRING: &str = "sample.expiring";
    pub const STIMULATION_WINDOW_MISSED: &str = "stimulation.window_missed";
    pub const COLLECTION_DONOR_INELIGIBLE: &str = "collection.donor_ineligible";
    pub const COLLECTION_UNSTIMULATED: &str = "collection.unstimulated";
    pub const REQUEST_UNALLOCATED: &str = "request.unallocated";
    pub const TRANSFUSION_OUTCOME_MISSING: &str = "transfusion.outcome_missing";
    pub const TASK_OVERDUE: &str = "task.overdue";
    /// Kinds the scan owns: they resolve when their condition no longer holds.
    pub const SCANNED: &[&str] = &[
        UNIT_EXPIRING,
        UNIT_EXPIRED,
        SAMPLE_EXPIRING,
        STIMULATION_WINDOW_MISSED,
        COLLECTION_DONOR_INELIGIBLE,
        COLLECTION_UNSTIMULATED,
        REQUEST_UNALLOCATED,
        TRANSFUSION_OUTCOME_MISSING,
        TASK_OVERDUE,
    ];
}

/// One condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSpec {
    pub kind: &'static str,
    pub severity: AlertSeverity,
    pub dedup_key: String,
    pub entity_type: &'static str,
    pub entity_id: i64,
    pub message: String,
}

fn hours(n: u32) -> TimeDelta {
    TimeDelta::hours(i64::from(n))
}

fn fmt_left(d: TimeDelta) -> String {
    let m = d.num_minutes().max(0);
    format!("{} h {} min", m / 60, m % 60)
}

pub struct UnitState<'a> {
    pub id: i64,
    pub din: &'a str,
    /// As stored (the scan moves units past expiry to `expired`).
    pub status: UnitStatus,
    pub expires_at: DateTime<Utc>,
}

/// `true` in the second value: the unit is past expiry and must be moved to `expired`.
pub fn unit_alerts(u: &UnitState<'_>, now: DateTime<Utc>, policy: &Policy) -> (Vec<AlertSpec>, bool) {
    let in_bank = matches!(
        u.status,
        UnitStatus::Quarantined | UnitStatus::Available | UnitStatus::Allocated
    );
    let expired = u.status == UnitStatus::Expired || (in_bank && now >= u.expires_at);
    if expired {
        let spec = AlertSpec {
            kind: kinds::UNIT_EXPIRED,
            severity: AlertSeverity::Urgent,
            dedup_key: format!("{}:{}", kinds::UNIT_EXPIRED, u.id),
            entity_type: "unit",
            entity_id: u.id,
            message: format!(
                "unit {} expired at {}; discard it",
                u.din,
                u.expires_at.format("%Y-%m-%d %H:%M UTC")
            ),
        };
        return (vec![spec], in_bank);
    }
    if !in_bank {
        return (Vec::new(), false);
    }
    let left = u.expires_at.signed_duration_since(now);
    let tightest = policy.alerts.expiry_thresholds_hours.iter().min().copied();
    let specs = policy
        .alerts
        .expiry_thresholds_hours
        .iter()
        .filter(|&&h| left <= hours(h))
        .map(|&h| AlertSpec {
            kind: kinds::UNIT_EXPIRING,
            severity: if Some(h) == tightest {
                AlertSeverity::Urgent
            } else {
                AlertSeverity::Warning
            },
            dedup_key: format!("{}:{}:{h}h", kinds::UNIT_EXPIRING, u.id),
            entity_type: "unit",
            entity_id: u.id,
            message: format!(
                "unit {} ({}) expires in {} (threshold {h} h)",
                u.din,
                u.status,
                fmt_left(left)
            ),
        })
        .collect();
    (specs, false)
}

pub struct AllocationState {
    pub id: i64,
    /// Allocated but not issued.
    pub allocated: bool,
    /// Issued, outcome not recorded.
    pub issued_at: Option<DateTime<Utc>>,
    /// The planned transfusion (the request's `needed_by`).
    pub planned_at: DateTime<Utc>,
    /// Validity of the longest-valid sample with a compatible red-cell crossmatch, if any.
    pub sample_valid_until: Option<DateTime<Utc>>,
}

pub fn allocation_alerts(a: &AllocationState, now: DateTime<Utc>, policy: &Policy) -> Vec<AlertSpec> {
    let mut out = Vec::new();
    if a.allocated
        && let Some(valid_until) = a.sample_valid_until
        && valid_until < a.planned_at.max(now)
    {
        out.push(AlertSpec {
            kind: kinds::SAMPLE_EXPIRING,
            severity: AlertSeverity::Warning,
            dedup_key: format!("{}:{}", kinds::SAMPLE_EXPIRING, a.id),
            entity_type: "allocation",
            entity_id: a.id,
            message: format!(
                "the crossmatch sample of allocation {} is valid until {}, before the planned transfusion; draw a new sample",
                a.id,
                valid_until.format("%Y-%m-%d %H:%M UTC")
            ),
        });
    }
    if let Some(issued) = a.issued_at
        && now >= issued + hours(policy.alerts.outcome_missing_hours)
    {
        out.push(AlertSpec {
            kind: kinds::TRANSFUSION_OUTCOME_MISSING,
            severity: AlertSeverity::Warning,
            dedup_key: format!("{}:{}", kinds::TRANSFUSION_OUTCOME_MISSING, a.id),
            entity_type: "allocation",
            entity_id: a.id,
            message: format!(
                "allocation {} was issued {} ago and has no transfusion outcome",
                a.id,
                fmt_left(now.signed_duration_since(issued))
            ),
        });
    }
    out
}

pub struct RequestState {
    pub id: i64,
    pub needed_by: DateTime<Utc>,
    /// Active allocations (allocated or issued) or transfused units.
    pub covered: usize,
}

/// An open request due within `alerts.request_unallocated_hours` with nothing allocated.
pub fn request_alerts(r: &RequestState, now: DateTime<Utc>, policy: &Policy) -> Vec<AlertSpec> {
    if r.covered > 0 || r.needed_by.signed_duration_since(now) > hours(policy.alerts.request_unallocated_hours) {
        return Vec::new();
    }
    let due = r.needed_by.signed_duration_since(now);
    vec![AlertSpec {
        kind: kinds::REQUEST_UNALLOCATED,
        severity: if due <= TimeDelta::zero() {
            AlertSeverity::Urgent
        } else {
            AlertSeverity::Warning
        },
        dedup_key: format!("{}:{}", kinds::REQUEST_UNALLOCATED, r.id),
        entity_type: "request",
        entity_id: r.id,
        message: if due <= TimeDelta::zero() {
            format!(
                "request {} was needed {} ago and has nothing allocated",
                r.id,
                fmt_left(-due)
            )
        } else {
            format!(
                "request {} is needed in {} and has nothing allocated",
                r.id,
                fmt_left(due)
            )
        },
    }]
}

pub struct TaskState<'a> {
    pub id: i64,
    pub title: &'a str,
    pub due_at: DateTime<Utc>,
}

/// An open task past its due time.
pub fn task_alerts(t: &TaskState<'_>, now: DateTime<Utc>) -> Vec<AlertSpec> {
    if now <= t.due_at {
        return Vec::new();
    }
    vec![AlertSpec {
        kind: kinds::TASK_OVERDUE,
        severity: AlertSeverity::Urgent,
        dedup_key: format!("{}:{}", kinds::TASK_OVERDUE, t.id),
        entity_type: "task",
        entity_id: t.id,
        message: format!(
            "task {} is overdue by {}: {}",
            t.id,
            fmt_left(now.signed_duration_since(t.due_at)),
            t.title
        ),
    }]
}

pub struct StimulationState<'a> {
    pub id: i64,
    pub agent: &'a str,
    pub administered_at: DateTime<Utc>,
}

pub struct CollectionState<'a> {
    pub id: i64,
    pub start: DateTime<Utc>,
    /// The donor at the planned start.
    pub eligibility: &'a Eligibility,
    pub stimulations: Vec<StimulationState<'a>>,
}

/// For a collection still scheduled: donor no longer eligible; no stimulation while the G-CSF
/// window is closing; a stimulation whose window passed without the collection starting.
pub fn collection_alerts(c: &CollectionState<'_>, now: DateTime<Utc>, policy: &Policy) -> Vec<AlertSpec> {
    let mut out = Vec::new();
    if !c.eligibility.eligible {
        let codes: Vec<&str> = c.eligibility.reasons.iter().map(|r| r.code).collect();
        out.push(AlertSpec {
            kind: kinds::COLLECTION_DONOR_INELIGIBLE,
            severity: AlertSeverity::Urgent,
            dedup_key: format!("{}:{}", kinds::COLLECTION_DONOR_INELIGIBLE, c.id),
            entity_type: "collection",
            entity_id: c.id,
            message: format!(
                "the donor of collection {} is not eligible at its start: {}",
                c.id,
                codes.join(", ")
            ),
        });
    }
    let gcsf_min = hours(policy.donor.gcsf_window_hours.min);
    if c.stimulations.is_empty() && now < c.start && c.start.signed_duration_since(now) <= gcsf_min {
        out.push(AlertSpec {
            kind: kinds::COLLECTION_UNSTIMULATED,
            severity: AlertSeverity::Warning,
            dedup_key: format!("{}:{}", kinds::COLLECTION_UNSTIMULATED, c.id),
            entity_type: "collection",
            entity_id: c.id,
            message: format!(
                "collection {} starts in {} and no stimulation is recorded for it",
                c.id,
                fmt_left(c.start.signed_duration_since(now))
            ),
        });
    }
    for s in &c.stimulations {
        if let Some(window) = stimulation::window_for(s.agent, policy)
            && now > s.administered_at + hours(window.max)
        {
            out.push(AlertSpec {
                kind: kinds::STIMULATION_WINDOW_MISSED,
                severity: AlertSeverity::Warning,
                dedup_key: format!("{}:{}", kinds::STIMULATION_WINDOW_MISSED, s.id),
                entity_type: "collection",
                entity_id: c.id,
                message: format!(
                    "{} given {} ago for collection {}, which has not started; its window is {}–{} h",
                    s.agent,
                    fmt_left(now.signed_duration_since(s.administered_at)),
                    c.id,
                    window.min,
                    window.max
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::eligibility::Reason;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).single().expect("time")
    }

    fn keys(specs: &[AlertSpec]) -> Vec<String> {
        specs.iter().map(|s| s.dedup_key.clone()).collect()
    }

    #[test]
    fn expiry_thresholds_each_once_and_the_sweep() {
        let p = Policy::default();
        let unit = |status, left: TimeDelta| UnitState {
            id: 7,
            din: "A999926000007",
            status,
            expires_at: now() + left,
        };
        let m = TimeDelta::minutes;
        let cases: &[(TimeDelta, &[&str])] = &[
            (m(8 * 60 + 1), &[]),
            (m(8 * 60), &["unit.expiring:7:8h"]),
            (m(4 * 60 + 1), &["unit.expiring:7:8h"]),
            (m(4 * 60), &["unit.expiring:7:8h", "unit.expiring:7:4h"]),
            (
                m(119),
                &["unit.expiring:7:8h", "unit.expiring:7:4h", "unit.expiring:7:2h"],
            ),
            (
                m(1),
                &["unit.expiring:7:8h", "unit.expiring:7:4h", "unit.expiring:7:2h"],
            ),
        ];
        for (left, expected) in cases {
            let (specs, sweep) = unit_alerts(&unit(UnitStatus::Available, *left), now(), &p);
            assert_eq!(keys(&specs), *expected, "{left}");
            assert!(!sweep);
        }
        let (specs, _) = unit_alerts(&unit(UnitStatus::Allocated, m(90)), now(), &p);
        assert_eq!(specs.last().map(|s| s.severity), Some(AlertSeverity::Urgent));
        assert_eq!(specs.first().map(|s| s.severity), Some(AlertSeverity::Warning));
        // At expiry: swept and alerted; once stored as expired it stays alerted (until discarded).
        let (specs, sweep) = unit_alerts(&unit(UnitStatus::Available, m(0)), now(), &p);
        assert_eq!((keys(&specs), sweep), (vec!["unit.expired:7".to_owned()], true));
        let (specs, sweep) = unit_alerts(&unit(UnitStatus::Expired, m(-60)), now(), &p);
        assert_eq!((keys(&specs), sweep), (vec!["unit.expired:7".to_owned()], false));
        // Out of the bank: nothing.
        for status in [UnitStatus::Issued, UnitStatus::Transfused, UnitStatus::Discarded] {
            assert_eq!(
                unit_alerts(&unit(status, m(30)), now(), &p),
                (vec![], false),
                "{status}"
            );
        }
    }

    #[test]
    fn allocations_requests_and_collections() {
        let p = Policy::default();
        let alloc = |valid: Option<i64>, issued: Option<i64>| AllocationState {
            id: 3,
            allocated: issued.is_none(),
            issued_at: issued.map(|h| now() - TimeDelta::hours(h)),
            planned_at: now() + TimeDelta::hours(6),
            sample_valid_until: valid.map(|h| now() + TimeDelta::hours(h)),
        };
        assert_eq!(
            keys(&allocation_alerts(&alloc(Some(6), None), now(), &p)),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(&allocation_alerts(&alloc(Some(5), None), now(), &p)),
            vec!["sample.expiring:3"]
        );
        assert_eq!(
            keys(&allocation_alerts(&alloc(None, None), now(), &p)),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(&allocation_alerts(&alloc(None, Some(23)), now(), &p)),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(&allocation_alerts(&alloc(None, Some(24)), now(), &p)),
            vec!["transfusion.outcome_missing:3"]
        );

        let req = |due: i64, covered| RequestState {
            id: 9,
            needed_by: now() + TimeDelta::hours(due),
            covered,
        };
        assert_eq!(keys(&request_alerts(&req(7, 0), now(), &p)), Vec::<String>::new());
        assert_eq!(
            keys(&request_alerts(&req(6, 0), now(), &p)),
            vec!["request.unallocated:9"]
        );
        assert_eq!(
            request_alerts(&req(-1, 0), now(), &p)[0].severity,
            AlertSeverity::Urgent
        );
        assert_eq!(keys(&request_alerts(&req(1, 1), now(), &p)), Vec::<String>::new());

        let ok = Eligibility {
            eligible: true,
            reasons: vec![],
        };
        let bad = Eligibility {
            eligible: false,
            reasons: vec![Reason {
                code: "deferred",
                message: "x".into(),
            }],
        };
        let coll = |start_in: i64, e: &Eligibility, stims: Vec<StimulationState<'static>>| {
            collection_alerts(
                &CollectionState {
                    id: 5,
                    start: now() + TimeDelta::hours(start_in),
                    eligibility: e,
                    stimulations: stims,
                },
                now(),
                &p,
            )
        };
        assert_eq!(keys(&coll(13, &ok, vec![])), Vec::<String>::new());
        assert_eq!(keys(&coll(12, &ok, vec![])), vec!["collection.unstimulated:5"]);
        assert_eq!(keys(&coll(30, &bad, vec![])), vec!["collection.donor_ineligible:5"]);
        let given = |h: i64| StimulationState {
            id: 11,
            agent: "gcsf",
            administered_at: now() - TimeDelta::hours(h),
        };
        assert_eq!(keys(&coll(-1, &ok, vec![given(24)])), Vec::<String>::new());
        assert_eq!(
            keys(&coll(-1, &ok, vec![given(25)])),
            vec!["stimulation.window_missed:11"]
        );
    }

    /// Strictly decreasing thresholds within 1–72 h, as `Policy::validate` requires.
    fn arb_thresholds() -> impl Strategy<Value = Vec<u32>> {
        prop::sample::subsequence((1u32..=72).rev().collect::<Vec<_>>(), 1..5)
    }

    fn arb_minutes() -> impl Strategy<Value = i64> {
        prop_oneof![-600i64..6_000, (0i64..=72).prop_map(|h| h * 60), Just(1), Just(-1)]
    }

    #[test]
    fn a_task_is_overdue_after_its_due_time_only() {
        let t = TaskState {
            id: 4,
            title: "give anti-D",
            due_at: now(),
        };
        assert!(task_alerts(&t, now()).is_empty(), "due exactly now");
        let late = task_alerts(&t, now() + TimeDelta::minutes(1));
        assert_eq!(keys(&late), vec!["task.overdue:4".to_owned()]);
        assert_eq!(late[0].severity, AlertSeverity::Urgent);
    }

    proptest! {
        #[test]
        fn unit_alerts_follow_effective_status_and_each_threshold(
            status in prop::sample::select(UnitStatus::ALL),
            left_minutes in arb_minutes(),
            thresholds in arb_thresholds(),
        ) {
            let mut p = Policy::default();
            p.alerts.expiry_thresholds_hours = thresholds.clone();
            let expires_at = now() + TimeDelta::minutes(left_minutes);
            let u = UnitState { id: 7, din: "A999926000007", status, expires_at };
            let (specs, sweep) = unit_alerts(&u, now(), &p);
            let effective = crate::domain::units::effective_status(status, expires_at, now());
            let in_bank = matches!(status, UnitStatus::Quarantined | UnitStatus::Available | UnitStatus::Allocated);
            prop_assert_eq!(sweep, in_bank && effective == UnitStatus::Expired);
            let expected: Vec<(String, AlertSeverity)> = if effective == UnitStatus::Expired {
                vec![("unit.expired:7".to_owned(), AlertSeverity::Urgent)]
            } else if in_bank {
                let tightest = thresholds.iter().min().copied();
                thresholds
                    .iter()
                    .filter(|&&h| left_minutes <= i64::from(h) * 60)
                    .map(|&h| {
                        let severity = if Some(h) == tightest { AlertSeverity::Urgent } else { AlertSeverity::Warning };
                        (format!("unit.expiring:7:{h}h"), severity)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let got: Vec<(String, AlertSeverity)> = specs.iter().map(|s| (s.dedup_key.clone(), s.severity)).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn sample_alert_agrees_with_the_allocation_check(
            planned in arb_minutes(),
            valid in arb_minutes(),
            allocated in any::<bool>(),
        ) {
            use crate::domain::blood::{Abo, Cmv, Rhd, Sex};
            use crate::domain::compatibility::{
                Context, CrossmatchFacts, CrossmatchKind, PatientFacts, Requirements, Stage, UnitFacts, assess, codes,
            };
            use crate::domain::group::Typed;
            let p = Policy::default();
            let (planned_at, valid_until) = (now() + TimeDelta::minutes(planned), now() + TimeDelta::minutes(valid));
            let a = AllocationState {
                id: 3,
                allocated,
                issued_at: None,
                planned_at,
                sample_valid_until: Some(valid_until),
            };
            let alerted = keys(&allocation_alerts(&a, now(), &p)) == vec!["sample.expiring:3".to_owned()];
            let patient = PatientFacts {
                abo: Typed::Confirmed(Abo::O), rhd: Typed::Confirmed(Rhd::Positive), sex: Sex::Male,
                childbearing_potential: false, cmv: Cmv::Positive, weight_kg: 70.0, hla_antibodies: vec![],
                granulocyte_antibodies: false,
            };
            let unit = UnitFacts {
                abo: Abo::O, rhd: Rhd::Positive, cmv: Cmv::Negative, donor_hla: None, irradiated: true, released: true,
                reactive: false, excursion_pending: false, reserved_for: None, expires_at: now() + TimeDelta::days(1), granulocyte_count: 1e11,
            };
            let xm = [CrossmatchFacts {
                id: 1, kind: CrossmatchKind::RedCell, compatible: true, resolved: false, sample_valid_until: valid_until,
            }];
            let ctx = Context {
                crossmatches: &xm, request_id: None, day_granulocytes: 0.0, requirements: Requirements::default(), planned_at, now: now(), stage: Stage::Allocation,
            };
            let check = assess(&patient, &unit, &ctx, &p);
            prop_assert_eq!(alerted, allocated && check.has(codes::SAMPLE_EXPIRED));
        }

        #[test]
        fn request_and_collection_alerts_follow_their_windows(
            due in arb_minutes(),
            covered in 0usize..3,
            start in arb_minutes(),
            given in prop::option::of((
                prop::sample::select(vec!["gcsf", "dexamethasone", "prednisone"]),
                arb_minutes(),
            )),
            eligible in any::<bool>(),
        ) {
            let p = Policy::default();
            let r = RequestState { id: 9, needed_by: now() + TimeDelta::minutes(due), covered };
            let specs = request_alerts(&r, now(), &p);
            let window = i64::from(p.alerts.request_unallocated_hours) * 60;
            prop_assert_eq!(specs.len(), usize::from(covered == 0 && due <= window));
            prop_assert!(specs.iter().all(|s| (s.severity == AlertSeverity::Urgent) == (due <= 0)));

            let e = Eligibility {
                eligible,
                reasons: if eligible { vec![] } else { vec![Reason { code: "deferred", message: "x".into() }] },
            };
            let stimulations: Vec<StimulationState<'_>> = given
                .iter()
                .map(|&(agent, ago)| StimulationState {
                    id: 11,
                    agent,
                    administered_at: now() - TimeDelta::minutes(ago),
                })
                .collect();
            let c = CollectionState { id: 5, start: now() + TimeDelta::minutes(start), eligibility: &e, stimulations };
            let mut expected = Vec::new();
            if !eligible {
                expected.push("collection.donor_ineligible:5".to_owned());
            }
            let gcsf_min = i64::from(p.donor.gcsf_window_hours.min) * 60;
            if given.is_none() && start > 0 && start <= gcsf_min {
                expected.push("collection.unstimulated:5".to_owned());
            }
            if let Some((agent, ago)) = given {
                let max = crate::domain::stimulation::window_for(agent, &p).map(|w| i64::from(w.max) * 60);
                if max.is_some_and(|max| ago > max) {
                    expected.push("stimulation.window_missed:11".to_owned());
                }
            }
            prop_assert_eq!(keys(&collection_alerts(&c, now(), &p)), expected);
        }
    }
}
