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

text_enum!(
    /// Where an alert stands: `resolved` once its condition cleared.
    AlertStatus {
        Open => "open",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
    }
);

text_enum!(
    /// What an alert is about.
    AlertEntity {
        Unit => "unit",
        Allocation => "allocation",
        Request => "request",
        Task => "task",
        Collection => "collection",
        Patient => "patient",
    }
);

text_enum!(
    /// An alert kind, which is also its webhook event name.
    AlertKind {
        UnitExpiring => "unit.expiring",
        UnitExpired => "unit.expired",
        UnitQuarantined => "unit.quarantined",
        UnitPositiveResultAfterRelease => "unit.positive_result_after_release",
        SampleExpiring => "sample.expiring",
        StimulationWindowMissed => "stimulation.window_missed",
        CollectionDonorIneligible => "collection.donor_ineligible",
        CollectionUnstimulated => "collection.unstimulated",
        RequestUnallocated => "request.unallocated",
        TransfusionOutcomeMissing => "transfusion.outcome_missing",
        AllocationAntiDProphylaxis => "allocation.anti_d_prophylaxis",
        PatientGroupDiscordant => "patient.group_discordant",
        TaskOverdue => "task.overdue",
        CoursePlanBroken => "course.plan_broken",
    }
);

impl AlertKind {
    /// The entity an alert of this kind is about.
    pub fn entity(self) -> AlertEntity {
        use AlertKind::*;
        match self {
            UnitExpiring | UnitExpired | UnitQuarantined | UnitPositiveResultAfterRelease => AlertEntity::Unit,
            SampleExpiring | TransfusionOutcomeMissing | AllocationAntiDProphylaxis => AlertEntity::Allocation,
            StimulationWindowMissed | CollectionDonorIneligible | CollectionUnstimulated => AlertEntity::Collection,
            RequestUnallocated | CoursePlanBroken => AlertEntity::Request,
            PatientGroupDiscordant => AlertEntity::Patient,
            TaskOverdue => AlertEntity::Task,
        }
    }

    /// The severities an alert of this kind may take, least severe first.
    pub fn ladder(self) -> &'static [AlertSeverity] {
        use AlertKind::*;
        use AlertSeverity::{Urgent, Warning};
        match self {
            UnitExpiring | RequestUnallocated => &[Warning, Urgent],
            SampleExpiring
            | StimulationWindowMissed
            | CollectionUnstimulated
            | TransfusionOutcomeMissing
            | AllocationAntiDProphylaxis => &[Warning],
            UnitExpired
            | UnitQuarantined
            | UnitPositiveResultAfterRelease
            | CollectionDonorIneligible
            | PatientGroupDiscordant
            | TaskOverdue
            | CoursePlanBroken => &[Urgent],
        }
    }

    /// What ends an episode: the scan owns the kinds whose condition it checks; the others are
    /// events raised by the services.
    pub fn episode_end(self) -> EpisodeEnd {
        use AlertKind::*;
        match self {
            UnitExpiring
            | UnitExpired
            | SampleExpiring
            | StimulationWindowMissed
            | CollectionDonorIneligible
            | CollectionUnstimulated
            | RequestUnallocated
            | TransfusionOutcomeMissing
            | TaskOverdue
            | CoursePlanBroken => EpisodeEnd::ConditionClears,
            UnitQuarantined | UnitPositiveResultAfterRelease | AllocationAntiDProphylaxis | PatientGroupDiscordant => {
                EpisodeEnd::Acknowledged
            }
        }
    }

    /// When it is raised, for the README's table (policy keys in backquotes).
    pub fn meaning(self) -> &'static str {
        use AlertKind::*;
        match self {
            UnitExpiring => {
                "a unit in the bank passed an expiry threshold (`alerts.expiry_thresholds_hours`, 8/4/2 h; urgent at the tightest)"
            }
            UnitExpired => "a unit is past expiry (the scan also moves it to `expired`)",
            UnitQuarantined => "a unit was quarantined (a reactive marker, a storage excursion)",
            UnitPositiveResultAfterRelease => "a marker came back reactive after the unit was released",
            SampleExpiring => "the crossmatch sample of an allocation expires before the planned transfusion",
            StimulationWindowMissed => {
                "a stimulation's window passed without the collection starting (`donor.gcsf_window_hours` / `dexamethasone_window_hours`)"
            }
            CollectionDonorIneligible => {
                "the donor of a scheduled collection is not eligible at its start (every eligibility rule, contraindications checked against `stimulation.default_agents` and the collection's agents)"
            }
            CollectionUnstimulated => "a collection is about to start and no stimulation is recorded for it",
            RequestUnallocated => {
                "an open request is due (`alerts.request_unallocated_hours`, 6 h) with nothing allocated; urgent once past due"
            }
            TransfusionOutcomeMissing => {
                "an issued allocation has no transfusion outcome (`alerts.outcome_missing_hours`, 24 h)"
            }
            AllocationAntiDProphylaxis => {
                "an RhD-positive unit was transfused to an RhD-negative patient of childbearing potential"
            }
            PatientGroupDiscordant => {
                "the blood bank's typings of a patient disagree, or the declared group differs from them"
            }
            TaskOverdue => "an open task is past its due time",
            CoursePlanBroken => {
                "a day of a request's accepted course plan lost its donor or unit (collection aborted, donor no longer eligible, unit discarded); names the first day at risk until a repair is accepted"
            }
        }
    }

    /// The kinds the scan owns: they resolve when their condition no longer holds.
    pub fn scanned() -> impl Iterator<Item = AlertKind> {
        Self::ALL
            .iter()
            .copied()
            .filter(|k| k.episode_end() == EpisodeEnd::ConditionClears)
    }

    /// A condition key of this kind: `<kind>:<rest>`.
    pub fn condition_key(self, rest: impl std::fmt::Display) -> String {
        format!("{self}:{rest}")
    }

    /// The README's table of alert kinds.
    pub fn markdown_table() -> String {
        let mut out = String::from("| kind | about | severity | ends when | raised when |\n|---|---|---|---|---|\n");
        for k in Self::ALL {
            let ladder: Vec<String> = k.ladder().iter().map(|s| format!("`{s}`")).collect();
            let ends = match k.episode_end() {
                EpisodeEnd::ConditionClears => "it clears (the scan)",
                EpisodeEnd::Acknowledged => "acknowledged",
            };
            out.push_str(&format!(
                "| `{k}` | {} | {} | {ends} | {} |\n",
                k.entity(),
                ladder.join(" → "),
                k.meaning()
            ));
        }
        out
    }
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
    /// Its entity type is the kind's.
    pub kind: AlertKind,
    pub severity: AlertSeverity,
    /// For `unit.expiring`: the tightest expiry threshold passed, in hours.
    pub threshold_hours: Option<u32>,
    /// The condition key (`unit.expiring:<unit>:<h>h`, `request.unallocated:<request>`, …):
    /// which condition this is, kept on the alert as its latest occurrence.
    pub dedup_key: String,
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
            kind: AlertKind::UnitExpired,
            severity: AlertSeverity::Urgent,
            threshold_hours: None,
            dedup_key: AlertKind::UnitExpired.condition_key(u.id),
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
        kind: AlertKind::UnitExpiring,
        severity: stage.severity,
        threshold_hours: Some(h),
        dedup_key: AlertKind::UnitExpiring.condition_key(format_args!("{}:{h}h", u.id)),
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
            kind: AlertKind::SampleExpiring,
            severity: AlertSeverity::Warning,
            threshold_hours: None,
            dedup_key: AlertKind::SampleExpiring.condition_key(a.id),
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
            kind: AlertKind::TransfusionOutcomeMissing,
            severity: AlertSeverity::Warning,
            threshold_hours: None,
            dedup_key: AlertKind::TransfusionOutcomeMissing.condition_key(a.id),
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
        kind: AlertKind::RequestUnallocated,
        severity: if due <= TimeDelta::zero() {
            AlertSeverity::Urgent
        } else {
            AlertSeverity::Warning
        },
        threshold_hours: None,
        dedup_key: AlertKind::RequestUnallocated.condition_key(r.id),
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
        kind: AlertKind::TaskOverdue,
        severity: AlertSeverity::Urgent,
        threshold_hours: None,
        dedup_key: AlertKind::TaskOverdue.condition_key(t.id),
        entity_id: t.id,
        message: format!(
            "task {} is overdue by {}: {}",
            t.id,
            fmt_left(now.signed_duration_since(t.due_at)),
            t.title
        ),
    }]
}

/// One day of an accepted course plan, and what broke it, if anything.
pub struct PlanDayState<'a> {
    /// 1-based course day.
    pub day: u32,
    pub due_at: DateTime<Utc>,
    /// Why the day lost its donor or unit; `None` while it holds.
    pub broken: Option<&'a str>,
}

/// The accepted course plan of an open request.
pub struct CoursePlanState<'a> {
    pub request_id: i64,
    pub plan_id: i64,
    pub days: &'a [PlanDayState<'a>],
}

/// A broken day of an accepted plan that is still to come names the first such day (the day at
/// risk); past days are the business of `request.unallocated` and the outcome alerts.
pub fn course_plan_alerts(p: &CoursePlanState<'_>, now: DateTime<Utc>) -> Vec<AlertSpec> {
    let broken: Vec<&PlanDayState<'_>> = p.days.iter().filter(|d| d.broken.is_some() && d.due_at > now).collect();
    let Some(first) = broken.first() else {
        return Vec::new();
    };
    let others = match broken.len() - 1 {
        0 => String::new(),
        n => format!(" ({n} more day{} broken)", if n == 1 { "" } else { "s" }),
    };
    vec![AlertSpec {
        kind: AlertKind::CoursePlanBroken,
        severity: AlertSeverity::Urgent,
        threshold_hours: None,
        dedup_key: AlertKind::CoursePlanBroken.condition_key(format!("{}:{}:{}", p.request_id, p.plan_id, first.day)),
        entity_id: p.request_id,
        message: format!(
            "day {} of request {}'s course (due {}) is at risk: {}{others}; propose a repair with POST /api/v1/requests/{}/plan",
            first.day,
            p.request_id,
            first.due_at.format("%Y-%m-%d %H:%M UTC"),
            first.broken.unwrap_or_default(),
            p.request_id
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
            kind: AlertKind::CollectionDonorIneligible,
            severity: AlertSeverity::Urgent,
            threshold_hours: None,
            dedup_key: AlertKind::CollectionDonorIneligible.condition_key(c.id),
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
            kind: AlertKind::CollectionUnstimulated,
            severity: AlertSeverity::Warning,
            threshold_hours: None,
            dedup_key: AlertKind::CollectionUnstimulated.condition_key(c.id),
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
                kind: AlertKind::StimulationWindowMissed,
                severity: AlertSeverity::Warning,
                threshold_hours: None,
                dedup_key: AlertKind::StimulationWindowMissed.condition_key(s.id),
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
            .find(|s| s.kind == spec.kind && s.entity_id == spec.entity_id)
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
    pub kind: AlertKind,
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
    match new.kind.episode_end() {
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

    fn spec(kind: AlertKind, entity: i64, severity: AlertSeverity, threshold: Option<u32>, key: &str) -> AlertSpec {
        AlertSpec {
            kind,
            severity,
            threshold_hours: threshold,
            dedup_key: key.to_owned(),
            entity_id: entity,
            message: key.to_owned(),
        }
    }

    #[test]
    fn one_condition_per_episode_the_worst_kept() {
        let (w, u) = (AlertSeverity::Warning, AlertSeverity::Urgent);
        let folded = fold_episodes(vec![
            spec(AlertKind::StimulationWindowMissed, 5, w, None, "s:11"),
            spec(AlertKind::StimulationWindowMissed, 5, w, None, "s:12"),
            spec(AlertKind::UnitExpiring, 5, w, Some(8), "e:8"),
            spec(AlertKind::UnitExpiring, 5, w, Some(4), "e:4"),
            spec(AlertKind::UnitExpiring, 6, u, Some(2), "e6:2"),
            spec(AlertKind::UnitExpiring, 6, w, Some(4), "e6:4"),
            spec(AlertKind::UnitExpired, 5, u, None, "x"),
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
        let scanned = AlertKind::UnitExpiring;
        let event = AlertKind::UnitQuarantined;
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
                occ(AlertKind::RequestUnallocated, i, None, "k2", "m2"),
                Nothing,
            ),
            // The next threshold, or a higher severity: escalate.
            (Some(open(w, Some(8))), occ(scanned, w, Some(4), "k2", "m2"), Escalate),
            (Some(open(w, Some(4))), occ(scanned, u, Some(2), "k2", "m2"), Escalate),
            (
                Some(open(w, None)),
                occ(AlertKind::RequestUnallocated, u, None, "k1", "m1"),
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
        for kind in AlertKind::scanned() {
            assert_eq!(kind.episode_end(), EpisodeEnd::ConditionClears, "{kind}");
        }
        for kind in [
            AlertKind::UnitQuarantined,
            AlertKind::UnitPositiveResultAfterRelease,
            AlertKind::AllocationAntiDProphylaxis,
            AlertKind::PatientGroupDiscordant,
        ] {
            assert_eq!(kind.episode_end(), EpisodeEnd::Acknowledged, "{kind}");
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

    /// Every (kind, severity) the scan rules produce over a sweep of states.
    fn scan_produces() -> std::collections::BTreeSet<(&'static str, &'static str)> {
        let p = Policy::default();
        let mut specs = Vec::new();
        for minutes in (-120..=600).step_by(15) {
            let left = TimeDelta::minutes(minutes);
            for status in UnitStatus::ALL {
                specs.extend(unit_alerts(&unit(*status, left, None), now(), &p).0);
            }
            specs.extend(allocation_alerts(
                &AllocationState {
                    id: 3,
                    allocated: true,
                    issued_at: None,
                    planned_at: now() + left,
                    sample_valid_until: Some(now()),
                },
                now(),
                &p,
            ));
            specs.extend(allocation_alerts(
                &AllocationState {
                    id: 3,
                    allocated: false,
                    issued_at: Some(now() - left * 10),
                    planned_at: now(),
                    sample_valid_until: None,
                },
                now(),
                &p,
            ));
            specs.extend(request_alerts(
                &RequestState {
                    id: 9,
                    needed_by: now() + left,
                    covered: 0,
                },
                now(),
                &p,
            ));
            specs.extend(task_alerts(
                &TaskState {
                    id: 4,
                    title: "t",
                    due_at: now() + left,
                },
                now(),
            ));
            let plan_days = [PlanDayState {
                day: 1,
                due_at: now() + left,
                broken: Some("collection 5 was aborted"),
            }];
            specs.extend(course_plan_alerts(
                &CoursePlanState {
                    request_id: 9,
                    plan_id: 2,
                    days: &plan_days,
                },
                now(),
            ));
            let bad = Eligibility {
                eligible: minutes < 0,
                reasons: vec![],
            };
            let stimulations = if minutes % 2 == 0 {
                vec![]
            } else {
                vec![StimulationState {
                    id: 11,
                    agent: "gcsf",
                    administered_at: now() - left * 10,
                }]
            };
            specs.extend(collection_alerts(
                &CollectionState {
                    id: 5,
                    start: now() + left,
                    eligibility: &bad,
                    stimulations,
                },
                now(),
                &p,
            ));
        }
        specs.iter().map(|s| (s.kind.as_str(), s.severity.as_str())).collect()
    }

    #[test]
    fn every_kind_has_a_ladder_an_entity_and_the_scan_owns_what_it_raises() {
        for kind in AlertKind::ALL {
            let ladder = kind.ladder();
            assert!(!ladder.is_empty(), "{kind}");
            assert!(ladder.windows(2).all(|w| w[0].rank() < w[1].rank()), "{kind}");
            // Services raise events at the kind's one severity (`services::alerts::Raise::event`).
            if kind.episode_end() == EpisodeEnd::Acknowledged {
                assert_eq!(ladder.len(), 1, "{kind}");
            }
            assert_eq!(AlertEntity::parse(kind.entity().as_str()), Some(kind.entity()));
            assert!(!kind.meaning().is_empty(), "{kind}");
            assert_eq!(kind.condition_key(7), format!("{kind}:7"));
        }
        // The scan raises exactly the kinds it owns, each at every step of its ladder and no
        // other severity.
        let produced = scan_produces();
        let expected: std::collections::BTreeSet<(&str, &str)> = AlertKind::scanned()
            .flat_map(|k| k.ladder().iter().map(move |s| (k.as_str(), s.as_str())))
            .collect();
        assert_eq!(produced, expected);
    }

    #[test]
    fn readme_lists_every_alert_kind() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let (begin, end) = ("<!-- alert-kinds:begin -->\n", "<!-- alert-kinds:end -->");
        let start = readme.find(begin).expect("alert-kinds markers in README.md") + begin.len();
        let stop = readme[start..].find(end).expect("end marker") + start;
        let table = AlertKind::markdown_table();
        if readme[start..stop] != table {
            if std::env::var_os("GRANULO_BLESS").is_some() {
                let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
                std::fs::write(path, updated).expect("write README.md");
            } else {
                panic!(
                    "README.md's table of alert kinds differs from AlertKind; regenerate it with GRANULO_BLESS=1 cargo test --lib readme_lists_every_alert_kind:\n{table}"
                );
            }
        }
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

    #[test]
    fn a_broken_plan_day_still_to_come_names_the_first_day_at_risk() {
        let day = |day: u32, in_hours: i64, broken: Option<&'static str>| PlanDayState {
            day,
            due_at: now() + TimeDelta::hours(in_hours),
            broken,
        };
        let cases: Vec<(Vec<PlanDayState<'static>>, Vec<String>)> = vec![
            (vec![day(1, 2, None), day(2, 26, None)], vec![]),
            // A past broken day is not at risk any more.
            (vec![day(1, -2, Some("collection 4 aborted")), day(2, 22, None)], vec![]),
            (
                vec![
                    day(1, 2, None),
                    day(2, 26, Some("collection 5 aborted")),
                    day(3, 50, Some("x")),
                ],
                vec!["course.plan_broken:9:3:2".to_owned()],
            ),
        ];
        for (days, expected) in cases {
            let specs = course_plan_alerts(
                &CoursePlanState {
                    request_id: 9,
                    plan_id: 3,
                    days: &days,
                },
                now(),
            );
            assert_eq!(keys(&specs), expected);
            for s in &specs {
                assert_eq!(
                    (s.kind, s.severity, s.entity_id),
                    (AlertKind::CoursePlanBroken, AlertSeverity::Urgent, 9)
                );
                assert!(
                    s.message.contains("day 2") && s.message.contains("collection 5 aborted"),
                    "{}",
                    s.message
                );
                assert!(s.message.contains("1 more day broken"), "{}", s.message);
            }
        }
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
