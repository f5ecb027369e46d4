//! The alert rules (domain.md §1, §3, §7): which conditions hold for a unit, an allocation, a
//! request or a collection at `now`, and what raising one does to the alert already open for the
//! same entity (issue 13, alert episodes).
//!
//! An alert is an *episode*: at most one is open per (kind, entity). Raising a condition while
//! its episode is open escalates it when the condition got worse (higher severity, or a tighter
//! expiry threshold), is recorded on it as a repeat when it is a new event of a kind the scan
//! does not own, and otherwise does nothing. An episode ends when its condition clears (kinds
//! the scan owns) or when staff acknowledge it (event kinds, which never clear by themselves);
//! the next occurrence opens a new episode.

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

text_enum!(
    /// A change of an alert, as the stream and the webhooks report it.
    AlertTransition {
        Raised => "raised",
        Escalated => "escalated",
        Repeated => "repeated",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
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

impl AlertSeverity {
    /// Higher is more severe.
    pub fn rank(self) -> u8 {
        match self {
            Self::Info => 0,
            Self::Warning => 1,
            Self::Urgent => 2,
        }
    }
}

/// One condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSpec {
    pub kind: &'static str,
    pub severity: AlertSeverity,
    /// For `unit.expiring`: the tightest expiry threshold passed, in hours.
    pub threshold_hours: Option<u32>,
    /// The condition key (`unit.expiring:<unit>:<h>h`, `request.unallocated:<request>`, …):
    /// which condition this is, kept on the alert as its latest occurrence.
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
    /// For a unit `allocated` (not yet issued): the `needed_by` of the request it is allocated
    /// to, when the transfusion is planned.
    pub transfusion_planned_at: Option<DateTime<Utc>>,
}

/// Where a unit stands against the expiry thresholds of the policy (any order; the policy
/// keeps them strictly decreasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryStage {
    /// The tightest threshold passed, in hours.
    pub threshold_hours: u32,
    /// The next (lower) threshold the unit will cross, if any: none once the tightest is passed.
    pub next_threshold_hours: Option<u32>,
    /// `urgent` at the tightest threshold of the policy, `warning` before.
    pub severity: AlertSeverity,
}

/// The expiry stage of a unit with `left` before its expiry; `None` before the first threshold.
pub fn expiry_stage(left: TimeDelta, thresholds: &[u32]) -> Option<ExpiryStage> {
    let passed = thresholds.iter().copied().filter(|&h| left <= hours(h)).min()?;
    let next = thresholds.iter().copied().filter(|&h| h < passed).max();
    Some(ExpiryStage {
        threshold_hours: passed,
        next_threshold_hours: next,
        severity: if next.is_none() {
            AlertSeverity::Urgent
        } else {
            AlertSeverity::Warning
        },
    })
}

/// A unit allocated to a request is spared a `warning` when its transfusion is still ahead and
/// comes before the unit would cross the next (lower) threshold: it will be used in time. An
/// `urgent` stage (the tightest threshold) is never spared, and neither is a unit whose planned
/// transfusion time has passed (the plan slipped).
pub fn spared_as_allocated(
    stage: &ExpiryStage,
    expires_at: DateTime<Utc>,
    planned_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match (stage.severity, stage.next_threshold_hours, planned_at) {
        (AlertSeverity::Warning, Some(next), Some(planned)) => planned >= now && planned < expires_at - hours(next),
        _ => false,
    }
}

/// `true` in the second value: the unit is past expiry and must be moved to `expired`. At most
/// one `unit.expiring` condition per unit: the tightest threshold passed.
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
            threshold_hours: None,
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
    let Some(stage) = expiry_stage(left, &policy.alerts.expiry_thresholds_hours) else {
        return (Vec::new(), false);
    };
    let planned = u.transfusion_planned_at.filter(|_| u.status == UnitStatus::Allocated);
    if spared_as_allocated(&stage, u.expires_at, planned, now) {
        return (Vec::new(), false);
    }
    let h = stage.threshold_hours;
    let spec = AlertSpec {
        kind: kinds::UNIT_EXPIRING,
        severity: stage.severity,
        threshold_hours: Some(h),
        dedup_key: format!("{}:{}:{h}h", kinds::UNIT_EXPIRING, u.id),
        entity_type: "unit",
        entity_id: u.id,
        message: format!(
            "unit {} ({}) expires in {} (threshold {h} h)",
            u.din,
            u.status,
            fmt_left(left)
        ),
    };
    (vec![spec], false)
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
            threshold_hours: None,
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
            threshold_hours: None,
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
        threshold_hours: None,
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
        threshold_hours: None,
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
            threshold_hours: None,
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
            threshold_hours: None,
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
                threshold_hours: None,
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

/// The conditions of one scan, one per episode: when several hold for the same (kind, entity)
/// (two stimulations of one collection past their window), the most severe is kept (the
/// tighter threshold at equal severity, the first one at a tie).
pub fn fold_episodes(specs: Vec<AlertSpec>) -> Vec<AlertSpec> {
    let mut out: Vec<AlertSpec> = Vec::with_capacity(specs.len());
    for spec in specs {
        match out
            .iter_mut()
            .find(|s| s.kind == spec.kind && s.entity_type == spec.entity_type && s.entity_id == spec.entity_id)
        {
            Some(kept) => {
                if worse(spec.severity, spec.threshold_hours, kept.severity, kept.threshold_hours) {
                    *kept = spec;
                }
            }
            None => out.push(spec),
        }
    }
    out
}

/// What ends an episode of this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeEnd {
    /// The scan owns the kind: the episode resolves when the condition no longer holds;
    /// acknowledging it only says someone is on it.
    ConditionClears,
    /// An event (a quarantine, a positive result, an anti-D task, a group discordance) that
    /// never clears by itself: acknowledging the alert ends the episode.
    Acknowledged,
}

pub fn episode_end(kind: &str) -> EpisodeEnd {
    if kinds::SCANNED.contains(&kind) {
        EpisodeEnd::ConditionClears
    } else {
        EpisodeEnd::Acknowledged
    }
}

/// `true` when (severity, threshold) is worse than the other: a higher severity, or the same
/// severity at a tighter (lower) expiry threshold.
pub fn worse(
    severity: AlertSeverity,
    threshold_hours: Option<u32>,
    than_severity: AlertSeverity,
    than_threshold_hours: Option<u32>,
) -> bool {
    match severity.rank().cmp(&than_severity.rank()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => matches!((threshold_hours, than_threshold_hours), (Some(h), Some(was)) if h < was),
    }
}

/// The open episode of a (kind, entity), as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenEpisode<'a> {
    pub severity: AlertSeverity,
    pub threshold_hours: Option<u32>,
    /// The condition key and message of its latest occurrence.
    pub condition_key: &'a str,
    pub message: &'a str,
}

/// A condition being raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence<'a> {
    pub kind: &'a str,
    pub severity: AlertSeverity,
    pub threshold_hours: Option<u32>,
    pub condition_key: &'a str,
    pub message: &'a str,
}

/// What raising an occurrence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaiseDecision {
    /// No open episode: open one (a new alert; webhooks `raised`).
    Open,
    /// Worse than the open episode: raise its severity (and threshold), take the new message,
    /// re-open it if it was acknowledged (webhooks `escalated`).
    Escalate,
    /// An event kind happened again while its episode is open: counted on the open alert and
    /// recorded (stream and webhooks `repeated`); the alert's text becomes the latest
    /// occurrence's when that is as severe as the alert, otherwise it keeps the more severe one.
    Repeat { take_text: bool },
    /// Nothing new: the scan finding the same condition again, or a lower or equal stage of
    /// it, or an event that is exactly the occurrence the open alert already shows.
    Nothing,
}

pub fn decide(open: Option<&OpenEpisode<'_>>, new: &Occurrence<'_>) -> RaiseDecision {
    let Some(open) = open else {
        return RaiseDecision::Open;
    };
    if worse(new.severity, new.threshold_hours, open.severity, open.threshold_hours) {
        return RaiseDecision::Escalate;
    }
    let same_occurrence = new.condition_key == open.condition_key && new.message == open.message;
    match episode_end(new.kind) {
        EpisodeEnd::ConditionClears => RaiseDecision::Nothing,
        EpisodeEnd::Acknowledged if same_occurrence => RaiseDecision::Nothing,
        EpisodeEnd::Acknowledged => RaiseDecision::Repeat {
            take_text: new.severity == open.severity,
        },
    }
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

    fn unit(status: UnitStatus, left: TimeDelta, planned_in: Option<TimeDelta>) -> UnitState<'static> {
        UnitState {
            id: 7,
            din: "A999926000007",
            status,
            expires_at: now() + left,
            transfusion_planned_at: planned_in.map(|d| now() + d),
        }
    }

    /// (condition key, severity, threshold) of each spec.
    fn stages(specs: &[AlertSpec]) -> Vec<(String, AlertSeverity, Option<u32>)> {
        specs
            .iter()
            .map(|s| (s.dedup_key.clone(), s.severity, s.threshold_hours))
            .collect()
    }

    #[test]
    fn one_expiry_condition_per_unit_at_its_tightest_threshold_and_the_sweep() {
        let p = Policy::default();
        let m = TimeDelta::minutes;
        let (w, u) = (AlertSeverity::Warning, AlertSeverity::Urgent);
        type Stage = (&'static str, AlertSeverity, u32);
        let cases: &[(TimeDelta, Option<Stage>)] = &[
            (m(8 * 60 + 1), None),
            (m(8 * 60), Some(("unit.expiring:7:8h", w, 8))),
            (m(4 * 60 + 1), Some(("unit.expiring:7:8h", w, 8))),
            (m(4 * 60), Some(("unit.expiring:7:4h", w, 4))),
            (m(2 * 60 + 1), Some(("unit.expiring:7:4h", w, 4))),
            (m(2 * 60), Some(("unit.expiring:7:2h", u, 2))),
            // First seen 1 h 30 min before expiry: one urgent condition, not three.
            (m(90), Some(("unit.expiring:7:2h", u, 2))),
            (m(1), Some(("unit.expiring:7:2h", u, 2))),
        ];
        for (left, expected) in cases {
            for status in [UnitStatus::Available, UnitStatus::Quarantined, UnitStatus::Allocated] {
                let (specs, sweep) = unit_alerts(&unit(status, *left, None), now(), &p);
                let expected: Vec<_> = expected
                    .iter()
                    .map(|(k, s, h)| ((*k).to_owned(), *s, Some(*h)))
                    .collect();
                assert_eq!(stages(&specs), expected, "{left} {status}");
                assert!(!sweep);
            }
        }
        // At expiry: swept and alerted; once stored as expired it stays alerted (until discarded).
        let (specs, sweep) = unit_alerts(&unit(UnitStatus::Available, m(0), None), now(), &p);
        assert_eq!((keys(&specs), sweep), (vec!["unit.expired:7".to_owned()], true));
        let (specs, sweep) = unit_alerts(&unit(UnitStatus::Expired, m(-60), None), now(), &p);
        assert_eq!((keys(&specs), sweep), (vec!["unit.expired:7".to_owned()], false));
        // Out of the bank: nothing.
        for status in [UnitStatus::Issued, UnitStatus::Transfused, UnitStatus::Discarded] {
            assert_eq!(
                unit_alerts(&unit(status, m(30), None), now(), &p),
                (vec![], false),
                "{status}"
            );
        }
    }

    #[test]
    fn expiry_stages_follow_the_policy_thresholds() {
        let h = TimeDelta::hours;
        let stage =
            |left, t: &[u32]| expiry_stage(left, t).map(|s| (s.threshold_hours, s.next_threshold_hours, s.severity));
        let (w, u) = (AlertSeverity::Warning, AlertSeverity::Urgent);
        assert_eq!(stage(h(9), &[8, 4, 2]), None);
        assert_eq!(stage(h(8), &[8, 4, 2]), Some((8, Some(4), w)));
        assert_eq!(stage(h(3), &[8, 4, 2]), Some((4, Some(2), w)));
        assert_eq!(stage(h(1), &[8, 4, 2]), Some((2, None, u)));
        assert_eq!(stage(h(-1), &[8, 4, 2]), Some((2, None, u)));
        // A single threshold is the tightest: urgent.
        assert_eq!(stage(h(5), &[6]), Some((6, None, u)));
        assert_eq!(stage(h(5), &[]), None);
        // Other thresholds, and in any order.
        assert_eq!(stage(h(10), &[2, 12, 6]), Some((12, Some(6), w)));
        assert_eq!(stage(h(6), &[12, 6, 2]), Some((6, Some(2), w)));
    }

    #[test]
    fn an_allocated_unit_transfused_before_the_next_threshold_is_spared_the_warning() {
        let p = Policy::default();
        let (h, m) = (TimeDelta::hours, TimeDelta::minutes);
        // 7 h left (8 h threshold passed, warning); the 4 h threshold is crossed in 3 h.
        let left = h(7);
        let cases: &[(UnitStatus, Option<TimeDelta>, bool)] = &[
            (UnitStatus::Allocated, Some(h(2)), true),
            (UnitStatus::Allocated, Some(h(3) - m(1)), true),
            // At the crossing itself, or after it: alerted.
            (UnitStatus::Allocated, Some(h(3)), false),
            (UnitStatus::Allocated, Some(h(5)), false),
            // Planned for now: spared; planned in the past (the plan slipped): alerted.
            (UnitStatus::Allocated, Some(h(0)), true),
            (UnitStatus::Allocated, Some(-m(1)), false),
            // Nothing planned, or not allocated: alerted.
            (UnitStatus::Allocated, None, false),
            (UnitStatus::Available, Some(h(2)), false),
            (UnitStatus::Quarantined, Some(h(2)), false),
        ];
        for (status, planned, spared) in cases {
            let (specs, _) = unit_alerts(&unit(*status, left, *planned), now(), &p);
            assert_eq!(specs.is_empty(), *spared, "{status} {planned:?}");
            assert!(specs.iter().all(|s| s.severity == AlertSeverity::Warning));
        }
        // 3 h left (4 h threshold, warning): the 2 h threshold is crossed in 1 h.
        let (specs, _) = unit_alerts(&unit(UnitStatus::Allocated, h(3), Some(m(59))), now(), &p);
        assert!(specs.is_empty());
        let (specs, _) = unit_alerts(&unit(UnitStatus::Allocated, h(3), Some(h(1))), now(), &p);
        assert_eq!(
            stages(&specs),
            vec![("unit.expiring:7:4h".to_owned(), AlertSeverity::Warning, Some(4))]
        );
        // Urgent is never spared, however soon the transfusion.
        let (specs, _) = unit_alerts(&unit(UnitStatus::Allocated, h(2), Some(m(1))), now(), &p);
        assert_eq!(
            stages(&specs),
            vec![("unit.expiring:7:2h".to_owned(), AlertSeverity::Urgent, Some(2))]
        );
    }

    fn spec(kind: &'static str, entity: i64, severity: AlertSeverity, threshold: Option<u32>, key: &str) -> AlertSpec {
        AlertSpec {
            kind,
            severity,
            threshold_hours: threshold,
            dedup_key: key.to_owned(),
            entity_type: "unit",
            entity_id: entity,
            message: key.to_owned(),
        }
    }

    #[test]
    fn one_condition_per_episode_the_worst_kept() {
        let (w, u) = (AlertSeverity::Warning, AlertSeverity::Urgent);
        let folded = fold_episodes(vec![
            spec(kinds::STIMULATION_WINDOW_MISSED, 5, w, None, "s:11"),
            spec(kinds::STIMULATION_WINDOW_MISSED, 5, w, None, "s:12"),
            spec(kinds::UNIT_EXPIRING, 5, w, Some(8), "e:8"),
            spec(kinds::UNIT_EXPIRING, 5, w, Some(4), "e:4"),
            spec(kinds::UNIT_EXPIRING, 6, u, Some(2), "e6:2"),
            spec(kinds::UNIT_EXPIRING, 6, w, Some(4), "e6:4"),
            spec(kinds::UNIT_EXPIRED, 5, u, None, "x"),
        ]);
        assert_eq!(keys(&folded), vec!["s:11", "e:4", "e6:2", "x"]);
    }

    #[test]
    fn raising_against_the_open_episode() {
        use RaiseDecision::{Escalate, Nothing, Open, Repeat};
        let (i, w, u) = (AlertSeverity::Info, AlertSeverity::Warning, AlertSeverity::Urgent);
        let open = |severity, threshold| OpenEpisode {
            severity,
            threshold_hours: threshold,
            condition_key: "k1",
            message: "m1",
        };
        let occ = |kind, severity, threshold, key, message| Occurrence {
            kind,
            severity,
            threshold_hours: threshold,
            condition_key: key,
            message,
        };
        let scanned = kinds::UNIT_EXPIRING;
        let event = "unit.quarantined";
        let cases: &[(Option<OpenEpisode<'_>>, Occurrence<'_>, RaiseDecision)] = &[
            // No open episode: a new one, whatever the kind.
            (None, occ(scanned, w, Some(8), "k1", "m1"), Open),
            (None, occ(event, u, None, "k1", "m1"), Open),
            // The scan finding the same stage again, or a lower one: nothing.
            (Some(open(w, Some(8))), occ(scanned, w, Some(8), "k1", "m2"), Nothing),
            (Some(open(w, Some(4))), occ(scanned, w, Some(8), "k2", "m2"), Nothing),
            (Some(open(u, Some(2))), occ(scanned, w, Some(4), "k2", "m2"), Nothing),
            (
                Some(open(w, None)),
                occ(kinds::REQUEST_UNALLOCATED, i, None, "k2", "m2"),
                Nothing,
            ),
            // The next threshold, or a higher severity: escalate.
            (Some(open(w, Some(8))), occ(scanned, w, Some(4), "k2", "m2"), Escalate),
            (Some(open(w, Some(4))), occ(scanned, u, Some(2), "k2", "m2"), Escalate),
            (
                Some(open(w, None)),
                occ(kinds::REQUEST_UNALLOCATED, u, None, "k1", "m1"),
                Escalate,
            ),
            (Some(open(i, None)), occ(event, w, None, "k1", "m1"), Escalate),
            // An event kind again while open: recorded, unless it is the very same occurrence.
            (Some(open(u, None)), occ(event, u, None, "k1", "m1"), Nothing),
            (
                Some(open(u, None)),
                occ(event, u, None, "k2", "m1"),
                Repeat { take_text: true },
            ),
            (
                Some(open(u, None)),
                occ(event, u, None, "k1", "m2"),
                Repeat { take_text: true },
            ),
            (
                Some(open(u, None)),
                occ(event, w, None, "k2", "m2"),
                Repeat { take_text: false },
            ),
        ];
        for (open, new, expected) in cases {
            assert_eq!(decide(open.as_ref(), new), *expected, "{open:?} {new:?}");
        }
        for kind in kinds::SCANNED {
            assert_eq!(episode_end(kind), EpisodeEnd::ConditionClears, "{kind}");
        }
        for kind in [
            "unit.quarantined",
            "unit.positive_result_after_release",
            "allocation.anti_d_prophylaxis",
            "patient.group_discordant",
        ] {
            assert_eq!(episode_end(kind), EpisodeEnd::Acknowledged, "{kind}");
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
        fn unit_alerts_follow_effective_status_and_the_tightest_threshold(
            status in prop::sample::select(UnitStatus::ALL),
            left_minutes in arb_minutes(),
            planned_minutes in prop::option::of(arb_minutes()),
            thresholds in arb_thresholds(),
        ) {
            let mut p = Policy::default();
            p.alerts.expiry_thresholds_hours = thresholds.clone();
            let expires_at = now() + TimeDelta::minutes(left_minutes);
            let planned_at = planned_minutes.map(|m| now() + TimeDelta::minutes(m));
            let u = UnitState { id: 7, din: "A999926000007", status, expires_at, transfusion_planned_at: planned_at };
            let (specs, sweep) = unit_alerts(&u, now(), &p);
            let effective = crate::domain::units::effective_status(status, expires_at, now());
            let in_bank = matches!(status, UnitStatus::Quarantined | UnitStatus::Available | UnitStatus::Allocated);
            prop_assert_eq!(sweep, in_bank && effective == UnitStatus::Expired);
            let expected: Vec<(String, AlertSeverity)> = if effective == UnitStatus::Expired {
                vec![("unit.expired:7".to_owned(), AlertSeverity::Urgent)]
            } else if in_bank {
                let tightest = thresholds.iter().min().copied();
                let passed = thresholds.iter().copied().filter(|&h| left_minutes <= i64::from(h) * 60).min();
                let next = passed.and_then(|t| thresholds.iter().copied().filter(|&h| h < t).max());
                let spared = status == UnitStatus::Allocated
                    && next.is_some()
                    && planned_minutes.is_some_and(|m| m >= 0 && m < left_minutes - next.map_or(0, |n| i64::from(n) * 60));
                match passed {
                    Some(h) if !spared => {
                        let severity = if Some(h) == tightest { AlertSeverity::Urgent } else { AlertSeverity::Warning };
                        vec![(format!("unit.expiring:7:{h}h"), severity)]
                    }
                    _ => Vec::new(),
                }
            } else {
                Vec::new()
            };
            let got: Vec<(String, AlertSeverity)> = specs.iter().map(|s| (s.dedup_key.clone(), s.severity)).collect();
            prop_assert_eq!(got, expected);
        }

        /// However the scan sees a unit over time, its episode only ever escalates, one stage
        /// at a time or more, and never raises a second alert while open.
        #[test]
        fn an_expiring_unit_escalates_monotonically(
            mut lefts in prop::collection::vec(1i64..(10 * 60), 1..12),
            thresholds in arb_thresholds(),
        ) {
            let mut p = Policy::default();
            p.alerts.expiry_thresholds_hours = thresholds;
            lefts.sort_unstable_by(|a, b| b.cmp(a));
            let mut open: Option<(AlertSeverity, Option<u32>)> = None;
            for left in lefts {
                let u = UnitState {
                    id: 7, din: "A999926000007", status: UnitStatus::Available,
                    expires_at: now() + TimeDelta::minutes(left), transfusion_planned_at: None,
                };
                let (specs, _) = unit_alerts(&u, now(), &p);
                prop_assert!(specs.len() <= 1);
                for s in &specs {
                    let episode = open.map(|(severity, threshold_hours)| OpenEpisode {
                        severity, threshold_hours, condition_key: "k", message: "m",
                    });
                    let new = Occurrence {
                        kind: s.kind, severity: s.severity, threshold_hours: s.threshold_hours,
                        condition_key: &s.dedup_key, message: &s.message,
                    };
                    match decide(episode.as_ref(), &new) {
                        RaiseDecision::Open => prop_assert!(open.is_none()),
                        RaiseDecision::Escalate => {
                            let (was, was_h) = open.unwrap_or((AlertSeverity::Info, None));
                            prop_assert!(s.severity.rank() >= was.rank());
                            prop_assert!(s.threshold_hours < was_h);
                        }
                        RaiseDecision::Nothing => prop_assert_eq!(open.map(|o| o.1), Some(s.threshold_hours)),
                        RaiseDecision::Repeat { .. } => prop_assert!(false, "the scan never repeats"),
                    }
                    if !matches!(decide(episode.as_ref(), &new), RaiseDecision::Nothing) {
                        open = Some((s.severity, s.threshold_hours));
                    }
                }
            }
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
