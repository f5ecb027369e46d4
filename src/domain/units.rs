//! Granulocyte units (domain.md §1): the status machine, server-side expiry, release gates,
//! irradiation dose and storage temperature. Expiry is enforced whenever an action happens, not
//! only by the sweep job: a unit past `expires_at` is treated as expired everywhere.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::text_enum;
use crate::domain::blood::{Abo, Rhd, UnitRhd};
use crate::domain::eligibility::Reason;
use crate::domain::policy::{Policy, PooledExpiry};
use crate::domain::requests::AllocationStatus;

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
        Inspect => "inspect",
    }
);

text_enum!(
    /// Why a unit is (or was last) quarantined. Stored with the status for people reading it;
    /// the gates themselves are decided from the recorded facts ([`Holds`]).
    QuarantineReason {
        AwaitingRelease => "awaiting_release",
        ReactiveMarker => "reactive_marker",
        DonorReactiveMarker => "donor_reactive_marker",
        Returned => "returned",
        Excursion => "excursion",
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
    pub const MARKER_MISSING: &str = "marker_missing";
    pub const MARKER_PENDING: &str = "marker_pending";
    pub const MARKER_POSITIVE: &str = "marker_positive";
    pub const NOT_IRRADIATED: &str = "not_irradiated";
    pub const IRRADIATION_DOSE_OUT_OF_RANGE: &str = "irradiation_dose_out_of_range";
    pub const DONOR_REACTIVE_MARKER: &str = "donor_reactive_marker";
    pub const EXCURSION_REVIEW: &str = "excursion_review";
    pub const INSPECTION_REQUIRED: &str = "inspection_required";
    pub const INSPECTION_FAILED: &str = "inspection_failed";
    pub const OUT_OF_STORAGE_TOO_LONG: &str = "out_of_storage_too_long";
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
        // A unit that left the bank comes back into quarantine until it is inspected.
        (Issued, A::Return) => Some(Quarantined),
        (Quarantined, A::Inspect) => Some(Available),
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

/// Why the unit state machine refuses an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The unit has expired (or expires at this moment).
    Expired,
    /// The action is not possible from the unit's status.
    InvalidTransition,
}

/// Checks `action` on a unit at `now`; `Err` says why it is refused ([`Refusal::Expired`] when
/// expiry is what forbids it). A unit that comes back into the
/// bank at or past its expiry (a return) comes back expired.
pub fn transition(
    stored: UnitStatus,
    action: UnitAction,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<UnitStatus, Refusal> {
    let from = if action == UnitAction::Expire {
        stored
    } else {
        effective_status(stored, expires_at, now)
    };
    match next_status(from, action) {
        Some(to) => Ok(effective_status(to, expires_at, now)),
        None if from == UnitStatus::Expired => Err(Refusal::Expired),
        None => Err(Refusal::InvalidTransition),
    }
}

/// Server-side expiry: `unit.max_shelf_life_hours` after the end of collection. A pooled
/// supplier unit under `midnight_day_after_collection` expires at 23:59 on the day after its
/// collection (the earliest contributing collection), on the facility's wall clock `tz`: the
/// pool's "day" is the bank's day, not UTC's. Where 23:59 does not exist or exists twice that
/// day (a daylight-saving change), the earlier instant is taken.
pub fn expires_at(collection_end: DateTime<Utc>, pooled: bool, tz: Tz, policy: &Policy) -> DateTime<Utc> {
    if pooled && policy.unit.pooled_expiry == PooledExpiry::MidnightDayAfterCollection {
        let day_after = collection_end.with_timezone(&tz).date_naive() + TimeDelta::days(1);
        let end_of_day = NaiveTime::from_hms_opt(23, 59, 0).unwrap_or(NaiveTime::MIN);
        return super::wall_clock::earliest_instant(tz, day_after.and_time(end_of_day));
    }
    collection_end + TimeDelta::hours(i64::from(policy.unit.max_shelf_life_hours))
}

/// The earlier of the computed expiry and a supplier's labelled one.
pub fn capped_expiry(computed: DateTime<Utc>, labelled: Option<DateTime<Utc>>) -> DateTime<Utc> {
    labelled.map_or(computed, |l| l.min(computed))
}

/// What a supplier says about one contributing donation of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMemberFacts {
    pub din: String,
    pub abo: Option<Abo>,
    pub rhd: Option<Rhd>,
}

pub mod pool_codes {
    pub const POOL_ABO_INCONSISTENT: &str = "pool_abo_inconsistent";
    pub const POOL_RHD_INCONSISTENT: &str = "pool_rhd_inconsistent";
}

/// A pool is made of ABO-matched donations: every member whose group is given must have the
/// pool's ABO group, and, unless the pool's RhD is `pooled`, its RhD. Empty when consistent.
pub fn pool_inconsistencies(abo: Abo, rhd: UnitRhd, members: &[PoolMemberFacts]) -> Vec<Reason> {
    let mut out = Vec::new();
    for m in members {
        if let Some(member) = m.abo
            && member != abo
        {
            out.push(Reason {
                code: pool_codes::POOL_ABO_INCONSISTENT,
                message: format!("member {} is group {member}; the pool is labelled group {abo}", m.din),
            });
        }
        let labelled = match rhd {
            UnitRhd::Positive => Some(Rhd::Positive),
            UnitRhd::Negative => Some(Rhd::Negative),
            UnitRhd::Pooled => None,
        };
        if let (Some(member), Some(labelled)) = (m.rhd, labelled)
            && member != labelled
        {
            out.push(Reason {
                code: pool_codes::POOL_RHD_INCONSISTENT,
                message: format!(
                    "member {} is RhD {member}; the pool is labelled RhD {labelled} (label mixed RhD as pooled)",
                    m.din
                ),
            });
        }
    }
    out
}

/// One recorded result of one marker. Results are facts: every one is kept, in the order
/// recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerResult {
    pub marker: String,
    pub result: TestResult,
}

/// What a marker stands at: positive if it was ever reported positive (a later negative never
/// clears a reactive result), otherwise its latest result.
pub fn marker_standing(results: &[MarkerResult], marker: &str) -> Option<TestResult> {
    let mine = results.iter().filter(|r| r.marker == marker);
    let mut latest = None;
    for r in mine {
        if r.result == TestResult::Positive {
            return Some(TestResult::Positive);
        }
        latest = Some(r.result);
    }
    latest
}

/// Where the follow-up of an emergency release stands, given the markers pending at the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp<'a> {
    /// A pending marker has no result yet (or only `pending`).
    Waiting,
    /// Every pending marker came back negative: the follow-up is done.
    AllNegative,
    /// These pending markers are reactive: the look-forward takes over, whatever is still out.
    Reactive(Vec<&'a str>),
}

pub fn emergency_follow_up<'a>(pending: &'a [String], results: &[MarkerResult]) -> FollowUp<'a> {
    let standing: Vec<(&str, Option<TestResult>)> = pending
        .iter()
        .map(|m| (m.as_str(), marker_standing(results, m)))
        .collect();
    let reactive: Vec<&str> = standing
        .iter()
        .filter(|(_, r)| *r == Some(TestResult::Positive))
        .map(|(m, _)| *m)
        .collect();
    if !reactive.is_empty() {
        FollowUp::Reactive(reactive)
    } else if standing.iter().all(|(_, r)| *r == Some(TestResult::Negative)) {
        FollowUp::AllNegative
    } else {
        FollowUp::Waiting
    }
}

/// The markers ever reported positive, in first-reported order.
pub fn reactive_markers(results: &[MarkerResult]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in results.iter().filter(|r| r.result == TestResult::Positive) {
        if !out.contains(&r.marker.as_str()) {
            out.push(&r.marker);
        }
    }
    out
}

/// Facts about a unit beyond its own marker results that hold it in quarantine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holds {
    /// The unit's donor is deferred pending confirmatory testing of a reactive result (on this
    /// or another of their units).
    pub donor_reactive: bool,
    /// A storage reading out of range that no medical director has dispositioned.
    pub excursion_pending: bool,
    /// Returned after issue and not yet inspected.
    pub inspection_pending: bool,
}

/// Who releases, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// A physician-acknowledged release before the markers are back.
    pub emergency: bool,
    /// The caller is a medical director.
    pub director: bool,
    /// A disposition of the storage excursions accompanies the release.
    pub excursion_disposition: bool,
}

/// Everything that stops a release. A standard release needs every required marker negative;
/// an emergency release goes ahead with pending or missing results but never with a positive
/// one, ever (results are sticky). A reactive donor, an inspection still due and an excursion
/// without a medical director's disposition stop both. With `unit.irradiation_before_release`
/// the irradiation is needed too.
pub fn release_blockers(
    results: &[MarkerResult],
    holds: Holds,
    irradiated: bool,
    request: ReleaseRequest,
    policy: &Policy,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if !request.emergency {
        for marker in &policy.unit.required_markers {
            match marker_standing(results, marker) {
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
    for marker in reactive_markers(results) {
        reasons.push(Reason {
            code: codes::MARKER_POSITIVE,
            message: format!("{marker} is reactive; the unit can only be discarded"),
        });
    }
    if holds.donor_reactive {
        reasons.push(Reason {
            code: codes::DONOR_REACTIVE_MARKER,
            message: "the donor is deferred pending confirmatory testing of a reactive result".to_owned(),
        });
    }
    if holds.inspection_pending {
        reasons.push(Reason {
            code: codes::INSPECTION_REQUIRED,
            message: "the unit came back after issue: record its inspection instead".to_owned(),
        });
    }
    if holds.excursion_pending && !(request.director && request.excursion_disposition) {
        reasons.push(Reason {
            code: codes::EXCURSION_REVIEW,
            message: "a storage temperature excursion needs a medical director's release with an excursion_disposition"
                .to_owned(),
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

/// What an inspection of a returned unit decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InspectionOutcome {
    /// Back to stock.
    Available,
    /// Passed, but other holds keep it quarantined (an excursion to disposition, a reactive
    /// donor).
    StillHeld(Vec<Reason>),
    /// Discarded, with every reason.
    Discard(Vec<Reason>),
}

/// A returned unit goes back to `available` only when the inspector finds it acceptable, it is
/// unexpired, it was out of controlled storage no longer than `unit.max_minutes_out_of_storage`
/// and no reactive result is recorded; otherwise it is discarded.
pub fn inspection_outcome(
    acceptable: bool,
    expired: bool,
    minutes_out_of_storage: i64,
    reactive: bool,
    holds: Holds,
    policy: &Policy,
) -> InspectionOutcome {
    let mut discard = Vec::new();
    if !acceptable {
        discard.push(Reason {
            code: codes::INSPECTION_FAILED,
            message: "the inspection found the unit unacceptable".to_owned(),
        });
    }
    if expired {
        discard.push(Reason {
            code: codes::UNIT_EXPIRED,
            message: "the unit has expired".to_owned(),
        });
    }
    let limit = policy.unit.max_minutes_out_of_storage;
    if minutes_out_of_storage > i64::from(limit) {
        discard.push(Reason {
            code: codes::OUT_OF_STORAGE_TOO_LONG,
            message: format!("out of controlled storage for {minutes_out_of_storage} min; at most {limit} min"),
        });
    }
    if reactive {
        discard.push(Reason {
            code: codes::MARKER_POSITIVE,
            message: "a marker of the unit is reactive".to_owned(),
        });
    }
    if !discard.is_empty() {
        return InspectionOutcome::Discard(discard);
    }
    let mut held = Vec::new();
    if holds.donor_reactive {
        held.push(Reason {
            code: codes::DONOR_REACTIVE_MARKER,
            message: "the donor is deferred pending confirmatory testing of a reactive result".to_owned(),
        });
    }
    if holds.excursion_pending {
        held.push(Reason {
            code: codes::EXCURSION_REVIEW,
            message: "a storage temperature excursion still needs a medical director's disposition".to_owned(),
        });
    }
    if held.is_empty() {
        InspectionOutcome::Available
    } else {
        InspectionOutcome::StillHeld(held)
    }
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

/// An allocation reached a patient: it was issued and not cancelled (a returned unit went out).
pub fn reached_patient(status: AllocationStatus, issued: bool) -> bool {
    issued
        && match status {
            AllocationStatus::Issued | AllocationStatus::Transfused | AllocationStatus::Returned => true,
            AllocationStatus::Allocated | AllocationStatus::Cancelled => false,
        }
}

/// What is known when a reactive (positive) result is recorded on a unit.
#[derive(Debug, Clone, Copy)]
pub struct ReactiveResultFacts {
    /// As stored.
    pub status: UnitStatus,
    pub expires_at: DateTime<Utc>,
    /// It was released, tested or in an emergency.
    pub released: bool,
    /// An emergency release binds it to a request.
    pub emergency: bool,
    /// An allocation of one of the donor's units (this one included) reached a patient whose
    /// record is found: the look-forward names them.
    pub patient_reached: bool,
    /// An allocation of this unit itself reached a patient.
    pub unit_reached: bool,
}

/// The alert a reactive result raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactiveAlert {
    /// `unit.positive_result_after_release`: the unit was released, or one of its donor's units
    /// reached a patient.
    PositiveAfterRelease,
    /// `unit.quarantined`: the unit never left quarantine and nothing of its donor's reached
    /// anyone.
    Quarantined,
}

/// What a reactive result does beyond being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactiveDecision {
    /// The unit's new status, when the result moves it (into quarantine).
    pub status: Option<UnitStatus>,
    /// The unit is held in quarantine for good: only a discard remains.
    pub discard_only: bool,
    /// An emergency-released unit that reached no one: a look-forward task makes sure it is not
    /// given.
    pub unreached_emergency_look_forward: bool,
    pub alert: ReactiveAlert,
}

/// The decision on a reactive result (the donor's deferral and their other units follow in any
/// case). A unit in the bank is quarantined; one already issued or transfused keeps its status,
/// and the alert asks to look forward.
pub fn reactive_result(facts: ReactiveResultFacts, now: DateTime<Utc>) -> ReactiveDecision {
    let status = transition(facts.status, UnitAction::Quarantine, facts.expires_at, now).ok();
    ReactiveDecision {
        status,
        discard_only: facts.status == UnitStatus::Quarantined || status == Some(UnitStatus::Quarantined),
        unreached_emergency_look_forward: facts.emergency && !facts.unit_reached,
        alert: if facts.released || facts.patient_reached {
            ReactiveAlert::PositiveAfterRelease
        } else {
            ReactiveAlert::Quarantined
        },
    }
}

text_enum!(
    UnitSource {
        Collection => "collection",
        External => "external",
    }
);

text_enum!(
    ReleaseKind {
        Tested => "tested",
        Emergency => "emergency",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emergency_follow_up_ends_when_the_last_pending_result_arrives() {
        let pending = vec!["anti_hiv".to_owned(), "hbsag".to_owned()];
        let r = |marker: &str, result| MarkerResult {
            marker: marker.to_owned(),
            result,
        };
        use TestResult::{Negative, Pending, Positive};
        let cases = [
            (vec![], FollowUp::Waiting),
            (vec![r("anti_hiv", Negative)], FollowUp::Waiting),
            (vec![r("anti_hiv", Negative), r("hbsag", Pending)], FollowUp::Waiting),
            (
                vec![r("anti_hiv", Negative), r("hbsag", Negative)],
                FollowUp::AllNegative,
            ),
            // A marker that was not pending at the release does not count either way.
            (
                vec![r("anti_hiv", Negative), r("hbsag", Negative), r("syphilis", Positive)],
                FollowUp::AllNegative,
            ),
            (vec![r("hbsag", Positive)], FollowUp::Reactive(vec!["hbsag"])),
            // Reactive, then negative: still reactive.
            (
                vec![r("hbsag", Positive), r("hbsag", Negative), r("anti_hiv", Negative)],
                FollowUp::Reactive(vec!["hbsag"]),
            ),
            (
                vec![r("hbsag", Positive), r("anti_hiv", Positive)],
                FollowUp::Reactive(vec!["anti_hiv", "hbsag"]),
            ),
        ];
        for (results, expected) in cases {
            assert_eq!(emergency_follow_up(&pending, &results), expected, "{results:?}");
        }
        assert_eq!(
            emergency_follow_up(&[], &[]),
            FollowUp::AllNegative,
            "nothing was pending"
        );
    }
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
        (Issued, UnitAction::Return, Quarantined),
        (Quarantined, UnitAction::Inspect, Available),
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
            Err(Refusal::Expired)
        );
        assert_eq!(
            transition(Available, A::Allocate, expires, expires),
            Err(Refusal::Expired)
        );
        assert_eq!(transition(Allocated, A::Issue, expires, expires), Err(Refusal::Expired));
        assert_eq!(
            transition(Available, A::Irradiate, expires, expires),
            Err(Refusal::Expired)
        );
        assert_eq!(transition(Available, A::Discard, expires, expires), Ok(Discarded));
        assert_eq!(transition(Available, A::Expire, expires, expires), Ok(Expired));
        assert_eq!(transition(Expired, A::Release, expires, expires), Err(Refusal::Expired));
        // Issued units have left the bank: they do not turn into expired.
        assert_eq!(effective_status(Issued, expires, expires), Issued);
        assert_eq!(transition(Issued, A::Transfuse, expires, expires), Ok(Transfused));
        // Returned: quarantined for inspection while fresh, expired from its expiry on.
        assert_eq!(transition(Issued, A::Return, expires, before), Ok(Quarantined));
        assert_eq!(transition(Issued, A::Return, expires, expires), Ok(Expired));
        assert_eq!(transition(Quarantined, A::Inspect, expires, before), Ok(Available));
        assert_eq!(
            transition(Quarantined, A::Inspect, expires, expires),
            Err(Refusal::Expired)
        );
        assert_eq!(
            transition(Discarded, A::Release, expires, before),
            Err(Refusal::InvalidTransition)
        );
        assert_eq!(
            transition(Available, A::Release, expires, before),
            Err(Refusal::InvalidTransition)
        );
    }

    #[test]
    fn expiry_arithmetic() {
        let mut p = Policy::default();
        let end = t(2026, 11, 25, 14, 30);
        let utc_tz = chrono_tz::UTC;
        assert_eq!(expires_at(end, false, utc_tz, &p), t(2026, 11, 26, 14, 30));
        // Across a year end and a leap day; UTC has no DST jumps.
        assert_eq!(
            expires_at(t(2026, 12, 31, 23, 59), false, utc_tz, &p),
            t(2027, 1, 1, 23, 59)
        );
        assert_eq!(
            expires_at(t(2028, 2, 28, 12, 0), false, utc_tz, &p),
            t(2028, 2, 29, 12, 0)
        );
        assert_eq!(
            expires_at(t(2026, 3, 29, 0, 30), false, utc_tz, &p),
            t(2026, 3, 30, 0, 30)
        );
        // Pooled supplier units: 23:59 on the day after collection.
        assert_eq!(expires_at(end, true, utc_tz, &p), t(2026, 11, 26, 23, 59));
        assert_eq!(
            expires_at(t(2028, 2, 28, 1, 0), true, utc_tz, &p),
            t(2028, 2, 29, 23, 59)
        );
        p.unit.pooled_expiry = PooledExpiry::MaxShelfLife;
        assert_eq!(expires_at(end, true, utc_tz, &p), t(2026, 11, 26, 14, 30));
        p.unit.max_shelf_life_hours = 8;
        assert_eq!(expires_at(end, false, utc_tz, &p), t(2026, 11, 25, 22, 30));
    }

    #[test]
    fn pool_members_are_abo_matched_to_the_pool() {
        let member = |din: &str, abo, rhd| PoolMemberFacts {
            din: din.to_owned(),
            abo,
            rhd,
        };
        let codes = |abo, rhd, members: &[PoolMemberFacts]| {
            pool_inconsistencies(abo, rhd, members)
                .into_iter()
                .map(|r| r.code)
                .collect::<Vec<_>>()
        };
        let mixed = [
            member("A", Some(Abo::O), Some(Rhd::Positive)),
            member("B", Some(Abo::O), Some(Rhd::Negative)),
            member("C", None, None),
        ];
        assert!(codes(Abo::O, UnitRhd::Pooled, &mixed).is_empty());
        assert_eq!(
            codes(Abo::O, UnitRhd::Positive, &mixed),
            vec![pool_codes::POOL_RHD_INCONSISTENT]
        );
        assert_eq!(
            codes(Abo::O, UnitRhd::Negative, &mixed),
            vec![pool_codes::POOL_RHD_INCONSISTENT]
        );
        assert_eq!(
            codes(Abo::A, UnitRhd::Pooled, &mixed),
            vec![pool_codes::POOL_ABO_INCONSISTENT, pool_codes::POOL_ABO_INCONSISTENT]
        );
        assert!(codes(Abo::A, UnitRhd::Positive, &[member("D", None, None)]).is_empty());
    }

    /// Pooled expiry is the bank's wall-clock midnight, across daylight-saving changes.
    #[test]
    fn pooled_expiry_in_the_facility_time_zone() {
        let p = Policy::default();
        let ny = chrono_tz::America::New_York;
        let london = chrono_tz::Europe::London;
        // (zone, end of collection UTC, expiry UTC)
        let cases = [
            // 22:00 UTC on 25 Nov is 17:00 in New York: the day after is 26 Nov, 23:59 EST = 04:59 UTC.
            (ny, t(2026, 11, 25, 22, 0), t(2026, 11, 27, 4, 59)),
            // 03:00 UTC on 26 Nov is still 25 Nov (22:00) in New York.
            (ny, t(2026, 11, 26, 3, 0), t(2026, 11, 27, 4, 59)),
            // Collected on Saturday 7 March 2026 (EST); the day after is Sunday 8 March, when New
            // York springs forward at 02:00: 23:59 EDT = 03:59 UTC on 9 March.
            (ny, t(2026, 3, 7, 15, 0), t(2026, 3, 9, 3, 59)),
            // Collected on Saturday 31 October 2026 (EDT); 1 November falls back: 23:59 EST.
            (ny, t(2026, 10, 31, 15, 0), t(2026, 11, 2, 4, 59)),
            // London: collected 28 March 2026 (GMT), 29 March is BST: 23:59 BST = 22:59 UTC.
            (london, t(2026, 3, 28, 10, 0), t(2026, 3, 29, 22, 59)),
            // 23:30 UTC on 28 March is still 28 March in London (GMT).
            (london, t(2026, 3, 28, 23, 30), t(2026, 3, 29, 22, 59)),
            // 23:30 UTC on 24 October 2026 is 00:30 BST on 25 October in London.
            (london, t(2026, 10, 24, 23, 30), t(2026, 10, 26, 23, 59)),
        ];
        for (tz, end, expected) in cases {
            assert_eq!(expires_at(end, true, tz, &p), expected, "{tz} {end}");
            assert_eq!(
                expires_at(end, false, tz, &p),
                end + TimeDelta::hours(24),
                "{tz} {end}: not pooled"
            );
        }
        // The supplier's labelled expiry wins when it is earlier.
        let computed = t(2026, 11, 27, 4, 59);
        assert_eq!(
            capped_expiry(computed, Some(computed - TimeDelta::hours(3))),
            computed - TimeDelta::hours(3)
        );
        assert_eq!(capped_expiry(computed, Some(computed + TimeDelta::hours(3))), computed);
        assert_eq!(capped_expiry(computed, None), computed);
    }

    fn results(list: &[(&str, TestResult)]) -> Vec<MarkerResult> {
        list.iter()
            .map(|(m, r)| MarkerResult {
                marker: (*m).to_owned(),
                result: *r,
            })
            .collect()
    }

    fn standard() -> ReleaseRequest {
        ReleaseRequest::default()
    }

    fn emergency() -> ReleaseRequest {
        ReleaseRequest {
            emergency: true,
            ..ReleaseRequest::default()
        }
    }

    #[test]
    fn release_gates() {
        let mut p = Policy::default();
        p.unit.required_markers = vec!["anti_hiv".into(), "hbsag".into()];
        use TestResult::*;
        let codes_of = |r: Vec<Reason>| r.into_iter().map(|x| x.code).collect::<Vec<_>>();
        let none = Holds::default();
        assert_eq!(
            codes_of(release_blockers(
                &results(&[("anti_hiv", Negative), ("hbsag", Negative)]),
                none,
                false,
                standard(),
                &p
            )),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes_of(release_blockers(
                &results(&[("anti_hiv", Pending)]),
                none,
                false,
                standard(),
                &p
            )),
            vec![codes::MARKER_PENDING, codes::MARKER_MISSING]
        );
        // A later result replaces a pending one.
        assert!(
            release_blockers(
                &results(&[("anti_hiv", Pending), ("anti_hiv", Negative), ("hbsag", Negative)]),
                none,
                false,
                standard(),
                &p
            )
            .is_empty()
        );
        // Emergency release: pending and missing results are accepted, positives never.
        assert!(release_blockers(&results(&[("anti_hiv", Pending)]), none, false, emergency(), &p).is_empty());
        assert_eq!(
            codes_of(release_blockers(
                &results(&[("syphilis", Positive)]),
                none,
                false,
                emergency(),
                &p
            )),
            vec![codes::MARKER_POSITIVE]
        );
        p.unit.irradiation_before_release = true;
        let ok = results(&[("anti_hiv", Negative), ("hbsag", Negative)]);
        assert_eq!(
            codes_of(release_blockers(&ok, none, false, standard(), &p)),
            vec![codes::NOT_IRRADIATED]
        );
        assert!(release_blockers(&ok, none, true, standard(), &p).is_empty());
    }

    /// Path 1 of the safety review: a positive result followed by a negative one for the same
    /// marker must not make the unit releasable.
    #[test]
    fn a_reactive_result_is_never_cleared_by_a_later_one() {
        use TestResult::*;
        let mut p = Policy::default();
        p.unit.required_markers = vec!["anti_hiv".into()];
        let history = results(&[("anti_hiv", Positive), ("anti_hiv", Negative)]);
        assert_eq!(marker_standing(&history, "anti_hiv"), Some(Positive));
        assert_eq!(reactive_markers(&history), vec!["anti_hiv"]);
        for request in [standard(), emergency()] {
            let codes: Vec<&str> = release_blockers(&history, Holds::default(), true, request, &p)
                .into_iter()
                .map(|r| r.code)
                .collect();
            assert_eq!(codes, vec![codes::MARKER_POSITIVE], "{request:?}");
        }
        assert_eq!(
            marker_standing(&results(&[("hbsag", Pending), ("hbsag", Negative)]), "hbsag"),
            Some(Negative)
        );
        assert_eq!(marker_standing(&history, "hbsag"), None);
    }

    #[test]
    fn holds_stop_a_release_until_lifted() {
        use TestResult::*;
        let mut p = Policy::default();
        p.unit.required_markers = vec!["anti_hiv".into()];
        let ok = results(&[("anti_hiv", Negative)]);
        let codes = |holds: Holds, request: ReleaseRequest| {
            release_blockers(&ok, holds, true, request, &p)
                .into_iter()
                .map(|r| r.code)
                .collect::<Vec<_>>()
        };
        let excursion = Holds {
            excursion_pending: true,
            ..Holds::default()
        };
        let director = |disposition| ReleaseRequest {
            director: true,
            excursion_disposition: disposition,
            ..ReleaseRequest::default()
        };
        let technologist_with_reason = ReleaseRequest {
            excursion_disposition: true,
            ..ReleaseRequest::default()
        };
        assert_eq!(codes(excursion, standard()), vec![codes::EXCURSION_REVIEW]);
        assert_eq!(
            codes(excursion, technologist_with_reason),
            vec![codes::EXCURSION_REVIEW]
        );
        assert_eq!(codes(excursion, director(false)), vec![codes::EXCURSION_REVIEW]);
        assert!(codes(excursion, director(true)).is_empty());
        let returned = Holds {
            inspection_pending: true,
            ..Holds::default()
        };
        assert_eq!(codes(returned, director(true)), vec![codes::INSPECTION_REQUIRED]);
        let donor = Holds {
            donor_reactive: true,
            ..Holds::default()
        };
        assert_eq!(codes(donor, emergency()), vec![codes::DONOR_REACTIVE_MARKER]);
    }

    #[test]
    fn inspection_of_a_returned_unit() {
        let p = Policy::default();
        let limit = i64::from(p.unit.max_minutes_out_of_storage);
        let none = Holds::default();
        let codes = |o: InspectionOutcome| match o {
            InspectionOutcome::Available => ("available", vec![]),
            InspectionOutcome::StillHeld(r) => ("held", r.into_iter().map(|x| x.code).collect()),
            InspectionOutcome::Discard(r) => ("discard", r.into_iter().map(|x| x.code).collect::<Vec<_>>()),
        };
        assert_eq!(
            codes(inspection_outcome(true, false, limit, false, none, &p)),
            ("available", vec![])
        );
        assert_eq!(
            codes(inspection_outcome(true, false, limit + 1, false, none, &p)),
            ("discard", vec![codes::OUT_OF_STORAGE_TOO_LONG])
        );
        assert_eq!(
            codes(inspection_outcome(false, true, limit + 1, true, none, &p)),
            (
                "discard",
                vec![
                    codes::INSPECTION_FAILED,
                    codes::UNIT_EXPIRED,
                    codes::OUT_OF_STORAGE_TOO_LONG,
                    codes::MARKER_POSITIVE
                ]
            )
        );
        let excursion = Holds {
            excursion_pending: true,
            ..Holds::default()
        };
        assert_eq!(
            codes(inspection_outcome(true, false, 0, false, excursion, &p)),
            ("held", vec![codes::EXCURSION_REVIEW])
        );
        assert_eq!(
            codes(inspection_outcome(false, false, 0, false, excursion, &p)),
            ("discard", vec![codes::INSPECTION_FAILED])
        );
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
                        let expected = if from == Expired { Refusal::Expired } else { Refusal::InvalidTransition };
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
            let at = expires_at(end, pooled, chrono_tz::UTC, &policy);
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
            history in prop::collection::vec(
                (0usize..4, prop::sample::select(vec![TestResult::Negative, TestResult::Positive, TestResult::Pending])),
                0..10,
            ),
            irradiated in any::<bool>(),
            (emergency, director, disposition) in (any::<bool>(), any::<bool>(), any::<bool>()),
            (donor_reactive, excursion_pending, inspection_pending) in (any::<bool>(), any::<bool>(), any::<bool>()),
            before_release in any::<bool>(),
        ) {
            const MARKERS: [&str; 4] = ["anti_hiv", "hbsag", "hcv_nat", "syphilis"];
            let mut p = Policy::default();
            p.unit.required_markers = MARKERS[..3].iter().map(|m| (*m).to_owned()).collect();
            p.unit.irradiation_before_release = before_release;
            let recorded: Vec<MarkerResult> = history
                .iter()
                .map(|&(i, result)| MarkerResult { marker: MARKERS[i].to_owned(), result })
                .collect();
            // Positive once, positive for ever; otherwise the latest result counts.
            let standing = |i: usize| {
                let mine: Vec<TestResult> = history.iter().filter(|(m, _)| *m == i).map(|(_, r)| *r).collect();
                if mine.contains(&TestResult::Positive) { Some(TestResult::Positive) } else { mine.last().copied() }
            };
            let mut expected = Vec::new();
            if !emergency {
                for i in 0..3 {
                    match standing(i) {
                        None => expected.push(codes::MARKER_MISSING),
                        Some(TestResult::Pending) => expected.push(codes::MARKER_PENDING),
                        _ => {}
                    }
                }
            }
            let mut first_positive: Vec<usize> = Vec::new();
            for (i, r) in &history {
                if *r == TestResult::Positive && !first_positive.contains(i) {
                    first_positive.push(*i);
                }
            }
            expected.extend(first_positive.iter().map(|_| codes::MARKER_POSITIVE));
            if donor_reactive {
                expected.push(codes::DONOR_REACTIVE_MARKER);
            }
            if inspection_pending {
                expected.push(codes::INSPECTION_REQUIRED);
            }
            if excursion_pending && !(director && disposition) {
                expected.push(codes::EXCURSION_REVIEW);
            }
            if before_release && !irradiated {
                expected.push(codes::NOT_IRRADIATED);
            }
            let holds = Holds { donor_reactive, excursion_pending, inspection_pending };
            let request = ReleaseRequest { emergency, director, excursion_disposition: disposition };
            let blockers = release_blockers(&recorded, holds, irradiated, request, &p);
            let got: Vec<&str> = blockers.into_iter().map(|r| r.code).collect();
            prop_assert_eq!(got, expected);
        }

        /// The unit's life driven as the services drive it: releases through the gates, results,
        /// excursions, returns and inspections. No sequence puts a unit with a reactive result
        /// back into stock, and a returned unit reaches stock only through an inspection.
        #[test]
        fn no_sequence_reaches_stock_after_a_reactive_result_or_skips_an_inspection(
            steps in prop::collection::vec((0u8..9, any::<bool>(), any::<bool>(), 0i64..90), 0..40),
        ) {
            let mut p = Policy::default();
            p.unit.required_markers = vec!["anti_hiv".into()];
            let t0 = t(2026, 11, 25, 8, 0);
            let expires = t0 + TimeDelta::hours(24);
            let (mut status, mut now) = (Quarantined, t0);
            let mut results: Vec<MarkerResult> = Vec::new();
            let mut holds = Holds::default();
            let mut reactive_seen = false;
            let mut returned_at: Option<DateTime<Utc>> = None;
            for (event, a, b, wait) in steps {
                now += TimeDelta::minutes(wait);
                let apply = |status: &mut UnitStatus, action: UnitAction| match transition(*status, action, expires, now) {
                    Ok(to) => { *status = to; true }
                    Err(_) => false,
                };
                match event {
                    0 => {
                        let request = ReleaseRequest { emergency: a, director: b, excursion_disposition: b };
                        let ok = release_blockers(&results, holds, true, request, &p).is_empty();
                        if ok && apply(&mut status, UnitAction::Release) && request.excursion_disposition {
                            holds.excursion_pending = false;
                        }
                    }
                    1 | 2 => {
                        let result = if event == 1 { TestResult::Positive } else { TestResult::Negative };
                        results.push(MarkerResult { marker: "anti_hiv".into(), result });
                        if result == TestResult::Positive {
                            reactive_seen = true;
                            apply(&mut status, UnitAction::Quarantine);
                        }
                    }
                    3 => {
                        holds.excursion_pending = true;
                        apply(&mut status, UnitAction::Quarantine);
                    }
                    4 => { apply(&mut status, UnitAction::Allocate); }
                    5 => {
                        // Issue re-assesses: a unit with a reactive result never leaves.
                        if reactive_markers(&results).is_empty() {
                            apply(&mut status, UnitAction::Issue);
                        }
                    }
                    6 => {
                        if apply(&mut status, UnitAction::Return) {
                            holds.inspection_pending = true;
                            returned_at = Some(now);
                        }
                    }
                    7 => {
                        if holds.inspection_pending && status == Quarantined {
                            let out = returned_at.map_or(0, |r| now.signed_duration_since(r).num_minutes());
                            let outcome = inspection_outcome(a, now >= expires, out, !reactive_markers(&results).is_empty(), holds, &p);
                            holds.inspection_pending = false;
                            match outcome {
                                InspectionOutcome::Available => { apply(&mut status, UnitAction::Inspect); }
                                InspectionOutcome::StillHeld(_) => {}
                                InspectionOutcome::Discard(_) => { apply(&mut status, UnitAction::Discard); }
                            }
                        }
                    }
                    _ => { apply(&mut status, UnitAction::Deallocate); }
                }
                let in_stock = matches!(effective_status(status, expires, now), Available | Allocated);
                prop_assert!(!(reactive_seen && in_stock), "{} after a reactive result", status);
                prop_assert!(!(holds.inspection_pending && in_stock), "{} before its inspection", status);
                prop_assert!(!(holds.excursion_pending && in_stock), "{} with an excursion pending", status);
            }
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

    #[test]
    fn an_allocation_reached_a_patient_once_issued_and_not_cancelled() {
        use AllocationStatus::*;
        let cases = [
            (Allocated, false, false),
            (Cancelled, false, false),
            (Issued, true, true),
            (Transfused, true, true),
            (Returned, true, true),
            // An issue time is what says it left the bank.
            (Issued, false, false),
            (Returned, false, false),
            (Cancelled, true, false),
            (Allocated, true, false),
        ];
        for (status, issued, expected) in cases {
            assert_eq!(reached_patient(status, issued), expected, "{status} issued={issued}");
        }
    }

    #[test]
    fn a_reactive_result_holds_a_unit_in_the_bank_and_looks_forward_after_release() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let facts = |status, expires_in: i64, released, emergency, patient_reached, unit_reached| ReactiveResultFacts {
            status,
            expires_at: now + TimeDelta::hours(expires_in),
            released,
            emergency,
            patient_reached,
            unit_reached,
        };
        use ReactiveAlert::{PositiveAfterRelease as AfterRelease, Quarantined as Held};
        use UnitStatus::*;
        // (facts, new status, discard only, emergency look-forward, alert)
        let cases = [
            // Never released: held where it is, quarantined alert.
            (
                facts(Quarantined, 4, false, false, false, false),
                None,
                true,
                false,
                Held,
            ),
            (
                facts(Quarantined, -1, false, false, false, false),
                None,
                true,
                false,
                Held,
            ),
            // Another unit of the donor reached a patient: look forward even so.
            (
                facts(Quarantined, 4, false, false, true, false),
                None,
                true,
                false,
                AfterRelease,
            ),
            // Released, in stock or allocated: back into quarantine for good.
            (
                facts(Available, 4, true, false, false, false),
                Some(Quarantined),
                true,
                false,
                AfterRelease,
            ),
            (
                facts(Allocated, 4, true, false, false, false),
                Some(Quarantined),
                true,
                false,
                AfterRelease,
            ),
            (
                facts(Allocated, 4, true, true, false, false),
                Some(Quarantined),
                true,
                true,
                AfterRelease,
            ),
            // Past its expiry it stays as stored (the sweep expires it).
            (
                facts(Available, -1, true, false, false, false),
                None,
                false,
                false,
                AfterRelease,
            ),
            (
                facts(Allocated, -1, true, true, false, false),
                None,
                false,
                true,
                AfterRelease,
            ),
            // Gone out: nothing to hold; the alert names who received it.
            (
                facts(Issued, 4, true, false, true, true),
                None,
                false,
                false,
                AfterRelease,
            ),
            (
                facts(Issued, 4, true, true, true, true),
                None,
                false,
                false,
                AfterRelease,
            ),
            // Issued in an emergency, the patient's record not found: still reached.
            (
                facts(Issued, 4, true, true, false, true),
                None,
                false,
                false,
                AfterRelease,
            ),
            (
                facts(Transfused, 4, true, false, true, true),
                None,
                false,
                false,
                AfterRelease,
            ),
            // Returned and awaiting inspection: already held.
            (
                facts(Quarantined, 4, true, false, true, true),
                None,
                true,
                false,
                AfterRelease,
            ),
            (
                facts(Expired, -1, true, false, false, false),
                None,
                false,
                false,
                AfterRelease,
            ),
            (
                facts(Discarded, 4, true, false, false, false),
                None,
                false,
                false,
                AfterRelease,
            ),
            (
                facts(Discarded, 4, false, false, false, false),
                None,
                false,
                false,
                Held,
            ),
        ];
        for (facts, status, discard_only, look_forward, alert) in cases {
            assert_eq!(
                reactive_result(facts, now),
                ReactiveDecision {
                    status,
                    discard_only,
                    unreached_emergency_look_forward: look_forward,
                    alert,
                },
                "{facts:?}"
            );
        }
    }
}
