//! Apheresis collections as bookings: the lifecycle, when a booking occupies its device, when
//! it counts as a procedure in the donor's history, and whether a new or moved booking can go
//! ahead (domain.md §2).
//!
//! A collection counts in the donor's history at its **end** (the actual end when completed,
//! the planned end otherwise), so "48 h between leukaphereses" is measured from the end of the
//! previous procedure to the start of the next — the conservative reading.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};

use super::text_enum;
use crate::domain::eligibility::{
    self, Deferral, DonorFacts, Eligibility, GivenStimulation, PastProcedure, ProcedureKind, Reason,
};
use crate::domain::policy::Policy;

text_enum!(
    /// `scheduled → in_progress → completed | aborted`; a scheduled booking may also be aborted.
    CollectionStatus {
        Scheduled => "scheduled",
        InProgress => "in_progress",
        Completed => "completed",
        Aborted => "aborted",
    }
);

text_enum!(
    Transition {
        Start => "start",
        Complete => "complete",
        Abort => "abort",
        Reschedule => "reschedule",
    }
);

/// The status after `transition`, or `None` when it is not allowed from `from`.
pub fn next_status(from: CollectionStatus, transition: Transition) -> Option<CollectionStatus> {
    use CollectionStatus::*;
    match (from, transition) {
        (Scheduled, Transition::Start) => Some(InProgress),
        (Scheduled, Transition::Reschedule) => Some(Scheduled),
        (Scheduled | InProgress, Transition::Abort) => Some(Aborted),
        (InProgress, Transition::Complete) => Some(Completed),
        _ => None,
    }
}

pub mod codes {
    pub const DONOR_ALREADY_BOOKED: &str = "donor_already_booked";
}

/// One collection as the scheduling rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub id: i64,
    pub status: CollectionStatus,
    pub scheduled_start: DateTime<Utc>,
    pub scheduled_end: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Red cells the procedure removed, mL: its product's plus any other loss recorded (an
    /// aborted run's); `None` while nothing is recorded.
    pub red_cell_loss_ml: Option<u32>,
    /// Hydroxyethyl starch the donor received, mL, as recorded at its end.
    pub hes_ml: Option<u32>,
}

impl Booking {
    pub fn planned_duration(&self) -> TimeDelta {
        self.scheduled_end.signed_duration_since(self.scheduled_start)
    }

    /// When the procedure starts (or started).
    pub fn start(&self) -> DateTime<Utc> {
        self.started_at.unwrap_or(self.scheduled_start)
    }

    /// The interval the donor and the device are taken; `None` for a booking aborted before it
    /// started. A procedure still running at `now` past its planned end keeps them until `now`.
    pub fn occupancy(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match (self.status, self.started_at) {
            (CollectionStatus::Scheduled, _) => Some((self.scheduled_start, self.scheduled_end)),
            (CollectionStatus::InProgress, Some(s)) => Some((s, (s + self.planned_duration()).max(now))),
            (CollectionStatus::InProgress, None) => Some((self.scheduled_start, self.scheduled_end.max(now))),
            (CollectionStatus::Completed | CollectionStatus::Aborted, Some(s)) => Some((s, self.ended_at.unwrap_or(s))),
            (CollectionStatus::Completed, None) => Some((self.scheduled_start, self.scheduled_end)),
            (CollectionStatus::Aborted, None) => None,
        }
    }

    /// When this collection counts in the donor's history (see the module notes); `None` when it
    /// never took place.
    pub fn procedure_time(&self) -> Option<DateTime<Utc>> {
        match self.status {
            CollectionStatus::Scheduled => Some(self.scheduled_end),
            CollectionStatus::InProgress => Some(self.start() + self.planned_duration()),
            CollectionStatus::Completed => Some(self.ended_at.unwrap_or(self.scheduled_end)),
            CollectionStatus::Aborted => self.started_at.map(|s| self.ended_at.unwrap_or(s)),
        }
    }

    fn as_procedure(&self) -> Option<PastProcedure> {
        self.procedure_time().map(|at| PastProcedure {
            kind: ProcedureKind::Leukapheresis,
            at,
            red_cell_loss_ml: self.red_cell_loss_ml,
            red_cells_returned: true,
            hes_ml: self.hes_ml,
        })
    }
}

/// Half-open intervals `[start, end)` overlap: back-to-back bookings do not.
pub fn overlaps(a: (DateTime<Utc>, DateTime<Utc>), b: (DateTime<Utc>, DateTime<Utc>)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// What the rules know about a donor.
#[derive(Debug, Clone)]
pub struct DonorRecord {
    pub facts: DonorFacts,
    pub deferrals: Vec<Deferral>,
    /// Donations from other programmes.
    pub donations: Vec<PastProcedure>,
    /// The donor's collections.
    pub bookings: Vec<Booking>,
    /// Every stimulation the donor was given.
    pub stimulations: Vec<GivenStimulation>,
}

impl DonorRecord {
    /// Donations plus every collection that took or will take place, except `exclude`.
    pub fn history(&self, exclude: Option<i64>) -> Vec<PastProcedure> {
        self.donations
            .iter()
            .cloned()
            .chain(
                self.bookings
                    .iter()
                    .filter(|b| Some(b.id) != exclude)
                    .filter_map(Booking::as_procedure),
            )
            .collect()
    }

    /// Stimulations, except those given for the collection `exclude`.
    pub fn stimulations_given(&self, exclude: Option<i64>) -> Vec<GivenStimulation> {
        self.stimulations
            .iter()
            .filter(|s| exclude.is_none() || s.collection_id != exclude)
            .cloned()
            .collect()
    }

    /// Eligibility for a leukapheresis at `at`, leaving out the collection `exclude` (and the
    /// stimulations given for it).
    pub fn eligibility_at(
        &self,
        at: DateTime<Utc>,
        exclude: Option<i64>,
        planned_agents: &[String],
        policy: &Policy,
    ) -> Eligibility {
        eligibility::evaluate(
            &self.facts,
            &self.deferrals,
            &self.history(exclude),
            &self.stimulations_given(exclude),
            planned_agents,
            at,
            policy,
        )
    }
}

impl DonorRecord {
    /// The record without what [`eligibility::evaluate`] cannot look at from `horizon + lookback`
    /// on ([`eligibility::lookback`]): procedures, and stimulations at or before `horizon`,
    /// deferrals that ended by then, collections that never took place. Judged at any such
    /// instant it gives the full record's verdicts.
    pub fn without_before(&self, horizon: DateTime<Utc>) -> DonorRecord {
        DonorRecord {
            facts: self.facts.clone(),
            deferrals: self
                .deferrals
                .iter()
                .filter(|d| d.permanent || d.until.is_none_or(|until| until > horizon))
                .cloned()
                .collect(),
            donations: self.donations.iter().filter(|p| p.at > horizon).cloned().collect(),
            bookings: self
                .bookings
                .iter()
                .filter(|b| b.procedure_time().is_some_and(|t| t > horizon))
                .cloned()
                .collect(),
            stimulations: self.stimulations.iter().filter(|s| s.at > horizon).cloned().collect(),
        }
    }
}

impl DonorRecord {
    /// The donor's latest procedure that took place by `now` (another programme's donation, or a
    /// collection that started), for display.
    pub fn last_procedure(&self, now: DateTime<Utc>) -> Option<PastProcedure> {
        self.donations
            .iter()
            .cloned()
            .chain(
                self.bookings
                    .iter()
                    .filter(|b| b.status != CollectionStatus::Scheduled)
                    .filter_map(Booking::as_procedure),
            )
            .filter(|p| p.at <= now)
            .max_by_key(|p| p.at)
    }

    /// The earliest instant in `[from, until]` at which the donor is eligible
    /// ([`DonorRecord::eligibility_at`], nothing excluded), or `None`. The rules are judged at
    /// `from` and at each instant where one of their inputs changes: a deferral's end, a
    /// procedure or stimulation leaving one of the rules' windows, a birthday. Each answer is a
    /// verdict of the rules themselves.
    pub fn eligible_from(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        planned_agents: &[String],
        policy: &Policy,
    ) -> Option<DateTime<Utc>> {
        let d = &policy.donor;
        let hours = |n: u32| TimeDelta::try_hours(i64::from(n));
        let weeks = |n: u32| TimeDelta::try_weeks(i64::from(n));
        let windows: Vec<TimeDelta> = [
            // The counting windows of the rules themselves.
            Some(crate::domain::eligibility::TWELVE_MONTHS),
            Some(crate::domain::eligibility::EIGHT_WEEKS),
            Some(crate::domain::eligibility::SEVEN_DAYS),
            hours(d.min_hours_between_leukapheresis),
            weeks(d.weeks_after_whole_blood),
            weeks(d.red_cell_loss_weeks()),
            weeks(d.weeks_after_red_cell_loss_not_returned),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut instants = vec![from];
        instants.extend(self.deferrals.iter().filter_map(|x| x.until));
        for p in self.history(None) {
            instants.extend(windows.iter().filter_map(|w| p.at.checked_add_signed(*w)));
        }
        for s in &self.stimulations {
            instants.extend(s.at.checked_add_signed(crate::domain::eligibility::TWELVE_MONTHS));
        }
        // The UTC midnight on which the donor reaches the minimum age (29 February: 1 March).
        let dob = self.facts.date_of_birth;
        let year = dob.year().saturating_add(i32::try_from(d.age_min).unwrap_or(i32::MAX));
        let birthday = NaiveDate::from_ymd_opt(year, dob.month(), dob.day())
            .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
            .and_then(|day| day.and_hms_opt(0, 0, 0));
        instants.extend(birthday.map(|b| b.and_utc()));
        instants.retain(|t| *t >= from && *t <= until);
        instants.sort();
        instants.dedup();
        instants
            .into_iter()
            .find(|t| self.eligibility_at(*t, None, planned_agents, policy).eligible)
    }
}

/// Can `candidate` (new, moved or starting) go ahead? Checks the donor at its start against
/// every other booking, that it does not overlap another of the donor's bookings, and that it
/// does not make a later booking of the donor ineligible. `now` bounds running procedures.
pub fn check_booking(
    donor: &DonorRecord,
    candidate: &Booking,
    planned_agents: &[String],
    policy: &Policy,
    now: DateTime<Utc>,
) -> Eligibility {
    let mut result = donor.eligibility_at(candidate.start(), Some(candidate.id), planned_agents, policy);
    let others = || donor.bookings.iter().filter(|b| b.id != candidate.id);
    if let Some(slot) = candidate.occupancy(now) {
        for other in others() {
            if other.occupancy(now).is_some_and(|o| overlaps(slot, o)) {
                result.reasons.push(Reason {
                    code: codes::DONOR_ALREADY_BOOKED,
                    message: format!(
                        "donor already has collection {} at {}",
                        other.id,
                        other.start().format("%Y-%m-%d %H:%M UTC")
                    ),
                });
            }
        }
    }
    // A later booking may only gain failures from this one: report what it would newly break.
    let mut with_candidate = donor.clone();
    with_candidate.bookings.retain(|b| b.id != candidate.id);
    with_candidate.bookings.push(candidate.clone());
    for later in others().filter(|b| b.status == CollectionStatus::Scheduled && b.start() >= candidate.start()) {
        let without: Vec<&'static str> = donor.eligibility_at(later.start(), Some(later.id), &[], policy).codes();
        let with = with_candidate.eligibility_at(later.start(), Some(later.id), &[], policy);
        for reason in with.reasons.into_iter().filter(|r| !without.contains(&r.code)) {
            result.reasons.push(Reason {
                code: reason.code,
                message: format!(
                    "would make collection {} at {} ineligible: {}",
                    later.id,
                    later.start().format("%Y-%m-%d %H:%M UTC"),
                    reason.message
                ),
            });
        }
    }
    result.eligible = result.reasons.is_empty();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use eligibility::codes::*;
    use proptest::prelude::*;

    fn t(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).single().expect("valid")
    }

    fn booking(id: i64, day: u32, hour: u32) -> Booking {
        Booking {
            id,
            status: CollectionStatus::Scheduled,
            scheduled_start: t(day, hour),
            scheduled_end: t(day, hour + 3),
            started_at: None,
            ended_at: None,
            red_cell_loss_ml: None,
            hes_ml: None,
        }
    }

    fn donor(bookings: Vec<Booking>) -> DonorRecord {
        DonorRecord {
            facts: DonorFacts {
                date_of_birth: NaiveDate::from_ymd_opt(1980, 5, 5).expect("date"),
                active: true,
                flagged_contraindications: vec![],
            },
            deferrals: vec![],
            donations: vec![],
            bookings,
            stimulations: vec![],
        }
    }

    #[test]
    fn every_transition() {
        use CollectionStatus::*;
        use Transition::*;
        let expected: &[(CollectionStatus, Transition, Option<CollectionStatus>)] = &[
            (Scheduled, Start, Some(InProgress)),
            (Scheduled, Complete, None),
            (Scheduled, Abort, Some(Aborted)),
            (Scheduled, Reschedule, Some(Scheduled)),
            (InProgress, Start, None),
            (InProgress, Complete, Some(Completed)),
            (InProgress, Abort, Some(Aborted)),
            (InProgress, Reschedule, None),
            (Completed, Start, None),
            (Completed, Complete, None),
            (Completed, Abort, None),
            (Completed, Reschedule, None),
            (Aborted, Start, None),
            (Aborted, Complete, None),
            (Aborted, Abort, None),
            (Aborted, Reschedule, None),
        ];
        assert_eq!(expected.len(), CollectionStatus::ALL.len() * Transition::ALL.len());
        for (from, tr, to) in expected {
            assert_eq!(next_status(*from, *tr), *to, "{from} --{tr}-->");
        }
    }

    #[test]
    fn occupancy_and_procedure_time_by_status() {
        let now = t(20, 0);
        let mut b = booking(1, 10, 8);
        assert_eq!(b.occupancy(now), Some((t(10, 8), t(10, 11))));
        assert_eq!(b.procedure_time(), Some(t(10, 11)));

        b.status = CollectionStatus::InProgress;
        b.started_at = Some(t(10, 9));
        assert_eq!(b.procedure_time(), Some(t(10, 12)));
        assert_eq!(b.occupancy(t(10, 10)), Some((t(10, 9), t(10, 12))));
        // Overrunning: the device stays taken until it is completed.
        assert_eq!(b.occupancy(t(10, 14)), Some((t(10, 9), t(10, 14))));

        b.status = CollectionStatus::Completed;
        b.ended_at = Some(t(10, 13));
        assert_eq!(b.occupancy(now), Some((t(10, 9), t(10, 13))));
        assert_eq!(b.procedure_time(), Some(t(10, 13)));

        let mut aborted = booking(2, 11, 8);
        aborted.status = CollectionStatus::Aborted;
        assert_eq!(aborted.occupancy(now), None);
        assert_eq!(aborted.procedure_time(), None);
        aborted.started_at = Some(t(11, 8));
        aborted.ended_at = Some(t(11, 9));
        assert_eq!(aborted.procedure_time(), Some(t(11, 9)), "a started procedure counts");
    }

    #[test]
    fn overlap_is_half_open() {
        assert!(overlaps((t(1, 8), t(1, 11)), (t(1, 10), t(1, 13))));
        assert!(overlaps((t(1, 8), t(1, 11)), (t(1, 9), t(1, 10))));
        assert!(!overlaps((t(1, 8), t(1, 11)), (t(1, 11), t(1, 14))));
        assert!(!overlaps((t(1, 11), t(1, 14)), (t(1, 8), t(1, 11))));
    }

    #[test]
    fn interval_is_measured_from_the_previous_end() {
        let p = Policy::default();
        let d = donor(vec![booking(1, 10, 8)]); // ends 10th 11:00
        let exactly_48h = Booking {
            scheduled_start: t(12, 11),
            scheduled_end: t(12, 14),
            ..booking(2, 12, 11)
        };
        assert!(check_booking(&d, &exactly_48h, &[], &p, t(1, 0)).eligible);
        let early = booking(2, 12, 10);
        assert_eq!(
            check_booking(&d, &early, &[], &p, t(1, 0)).codes(),
            vec![LEUKAPHERESIS_INTERVAL]
        );
    }

    #[test]
    fn double_booking_and_later_conflicts_are_refused() {
        let p = Policy::default();
        let d = donor(vec![booking(1, 10, 8)]);
        // Overlaps the existing booking.
        let overlapping = booking(2, 10, 10);
        let codes = check_booking(&d, &overlapping, &[], &p, t(1, 0)).codes();
        assert!(codes.contains(&codes::DONOR_ALREADY_BOOKED), "{codes:?}");
        // Earlier than the existing one by a day: the new one is fine at its own time, but it
        // would break the 48 h interval of the later one.
        let before = booking(2, 9, 8);
        let e = check_booking(&d, &before, &[], &p, t(1, 0));
        assert_eq!(e.codes(), vec![LEUKAPHERESIS_INTERVAL]);
        assert!(
            e.reasons[0].message.contains("would make collection 1"),
            "{:?}",
            e.reasons
        );
        // Moving a booking does not conflict with itself.
        let moved = booking(1, 11, 8);
        assert!(check_booking(&d, &moved, &[], &p, t(1, 0)).eligible);
    }

    #[test]
    fn aborted_before_start_does_not_count() {
        let p = Policy::default();
        let mut cancelled = booking(1, 10, 8);
        cancelled.status = CollectionStatus::Aborted;
        let d = donor(vec![cancelled]);
        assert!(check_booking(&d, &booking(2, 10, 9), &[], &p, t(1, 0)).eligible);
    }

    #[test]
    fn a_later_booking_already_ineligible_is_not_blamed_on_the_candidate() {
        let p = Policy::default();
        let mut d = donor(vec![booking(1, 20, 8)]);
        d.deferrals.push(Deferral {
            reason: "travel".into(),
            permanent: false,
            starts_at: t(15, 0),
            until: Some(t(25, 0)),
        });
        let e = check_booking(&d, &booking(2, 5, 8), &[], &p, t(1, 0));
        assert!(e.eligible, "{:?}", e.reasons);
    }

    #[test]
    fn a_collection_counts_its_red_cells_and_hes() {
        let mut p = Policy::default();
        p.donor.max_hes_ml_per_12_months = 1000;
        let mut done = booking(1, 1, 8);
        done.status = CollectionStatus::Completed;
        done.started_at = Some(t(1, 8));
        done.ended_at = Some(t(1, 10));
        done.red_cell_loss_ml = Some(150);
        done.hes_ml = Some(500);
        let mut aborted = booking(2, 4, 8);
        aborted.status = CollectionStatus::Aborted;
        aborted.started_at = Some(t(4, 8));
        aborted.ended_at = Some(t(4, 9));
        aborted.red_cell_loss_ml = Some(60);
        aborted.hes_ml = Some(499);
        let mut d = donor(vec![done.clone(), aborted]);
        let history = d.history(None);
        assert_eq!(history[1].red_cell_loss_ml, Some(60), "an aborted run's loss counts");
        assert_eq!(
            d.eligibility_at(t(10, 8), None, &[], &p).codes(),
            vec![RED_CELL_LOSS_8_WEEKS]
        );
        // One more mL of HES reaches the limit.
        d.bookings[1].hes_ml = Some(500);
        assert_eq!(
            d.eligibility_at(t(10, 8), None, &[], &p).codes(),
            vec![RED_CELL_LOSS_8_WEEKS, HES_LIMIT_12_MONTHS]
        );
        // The collection being judged is left out, with its own loss.
        assert_eq!(d.eligibility_at(t(10, 8), Some(2), &[], &p).codes(), Vec::<&str>::new());
    }

    #[test]
    fn the_stimulations_of_the_collection_judged_are_not_a_past_course() {
        let mut p = Policy::default();
        p.donor.max_steroid_courses_per_12_months = 2;
        let dex = |collection_id, day| GivenStimulation {
            agent: "dexamethasone".into(),
            at: t(day, 20),
            collection_id,
        };
        let mut d = donor(vec![booking(3, 20, 8)]);
        d.stimulations = vec![dex(Some(1), 1), dex(Some(3), 19)];
        // Its own dose the evening before is not a past course: one course, eligible.
        assert!(d.eligibility_at(t(20, 8), Some(3), &[], &p).eligible);
        // Judged as another collection, both courses count.
        assert_eq!(
            d.eligibility_at(t(25, 8), None, &[], &p).codes(),
            vec![STEROID_COURSE_LIMIT_12_MONTHS]
        );
        // A dose given without a collection counts whatever is judged.
        d.stimulations.push(dex(None, 2));
        assert_eq!(
            d.eligibility_at(t(20, 8), Some(3), &[], &p).codes(),
            vec![STEROID_COURSE_LIMIT_12_MONTHS]
        );
    }

    fn minute(m: i64) -> DateTime<Utc> {
        t(1, 0) + TimeDelta::minutes(m)
    }

    /// A booking in any status with times consistent with it: starts at or after its schedule
    /// shifted by up to an hour either way, ends at or after its start.
    fn arb_booking(id: i64, statuses: &'static [CollectionStatus]) -> impl Strategy<Value = Booking> {
        (
            prop::sample::select(statuses),
            0i64..20_000,
            1i64..400,
            any::<bool>(),
            -60i64..60,
            0i64..400,
        )
            .prop_map(move |(status, start, length, started, shift, ran)| {
                let started_at = match status {
                    CollectionStatus::Scheduled => None,
                    CollectionStatus::InProgress | CollectionStatus::Completed => Some(minute(start + shift)),
                    CollectionStatus::Aborted => started.then(|| minute(start + shift)),
                };
                let ended_at = match status {
                    CollectionStatus::Completed | CollectionStatus::Aborted => {
                        started_at.map(|s| s + TimeDelta::minutes(ran))
                    }
                    _ => None,
                };
                Booking {
                    id,
                    status,
                    scheduled_start: minute(start),
                    scheduled_end: minute(start + length),
                    started_at,
                    ended_at,
                    red_cell_loss_ml: None,
                    hes_ml: None,
                }
            })
    }

    fn done(id: i64, day: u32, hour: u32) -> Booking {
        Booking {
            status: CollectionStatus::Completed,
            started_at: Some(t(day, hour)),
            ended_at: Some(t(day, hour + 2)),
            ..booking(id, day, hour)
        }
    }

    /// (name, record, from, until, expected)
    type Case = (
        &'static str,
        DonorRecord,
        DateTime<Utc>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );

    #[test]
    fn eligible_from_is_the_first_instant_the_rules_allow() {
        let p = Policy::default();
        let deferred = |until: DateTime<Utc>| Deferral {
            reason: "travel".into(),
            permanent: false,
            starts_at: t(1, 0),
            until: Some(until),
        };
        let whole_blood = |at: DateTime<Utc>| PastProcedure {
            kind: ProcedureKind::WholeBlood,
            at,
            red_cell_loss_ml: Some(450),
            red_cells_returned: false,
            hes_ml: None,
        };
        let young = NaiveDate::from_ymd_opt(2008, 12, 11).expect("date");
        let cases: Vec<Case> = vec![
            ("nothing in the way", donor(vec![]), t(10, 6), t(11, 8), Some(t(10, 6))),
            // Ended the 9th at 12:00: 48 h later.
            (
                "interval",
                donor(vec![done(1, 9, 10)]),
                t(10, 6),
                t(11, 13),
                Some(t(11, 12)),
            ),
            (
                "interval past until",
                donor(vec![done(1, 9, 10)]),
                t(10, 6),
                t(11, 8),
                None,
            ),
            (
                "deferral ends",
                DonorRecord {
                    deferrals: vec![deferred(t(10, 20))],
                    ..donor(vec![])
                },
                t(10, 6),
                t(11, 8),
                Some(t(10, 20)),
            ),
            (
                "whole blood eight weeks ago",
                DonorRecord {
                    donations: vec![whole_blood(t(10, 15) - TimeDelta::weeks(8))],
                    ..donor(vec![])
                },
                t(10, 6),
                t(11, 8),
                Some(t(10, 15)),
            ),
            (
                "turns 18 at midnight",
                DonorRecord {
                    facts: DonorFacts {
                        date_of_birth: young,
                        ..donor(vec![]).facts
                    },
                    ..donor(vec![])
                },
                t(10, 6),
                t(12, 8),
                Some(t(11, 0)),
            ),
            (
                "inactive",
                DonorRecord {
                    facts: DonorFacts {
                        active: false,
                        ..donor(vec![]).facts
                    },
                    ..donor(vec![])
                },
                t(10, 6),
                t(12, 8),
                None,
            ),
        ];
        for (name, record, from, until, expected) in cases {
            assert_eq!(record.eligible_from(from, until, &[], &p), expected, "{name}");
        }
    }

    #[test]
    fn last_procedure_is_the_latest_that_took_place() {
        let mut cancelled = booking(3, 8, 8);
        cancelled.status = CollectionStatus::Aborted;
        let d = donor(vec![done(1, 2, 8), booking(2, 20, 8), cancelled]);
        let last = d.last_procedure(t(10, 0)).expect("one");
        assert_eq!((last.kind, last.at), (ProcedureKind::Leukapheresis, t(2, 10)));
        assert_eq!(d.last_procedure(t(2, 9)), None, "not ended yet");
        assert_eq!(
            donor(vec![booking(1, 1, 8)]).last_procedure(t(10, 0)),
            None,
            "only booked"
        );
    }

    proptest! {
        /// On whole hours, where every rule's window begins and ends: no hour before the answer
        /// is eligible, and the answer is.
        #[test]
        fn eligible_from_misses_no_earlier_hour(
            collections in prop::collection::vec((1u32..28, 0u32..20), 0..4),
            blood in prop::collection::vec(1i64..2000, 0..3),
            deferral in prop::option::of((0i64..100, 1i64..60)),
            until_hours in 1i64..60,
        ) {
            let p = Policy::default();
            let from = t(28, 6);
            let mut d = donor(collections.iter().enumerate().map(|(i, (day, hour))| done(i as i64 + 1, *day, *hour)).collect());
            d.donations = blood.iter().map(|h| PastProcedure {
                kind: ProcedureKind::WholeBlood,
                at: from - TimeDelta::hours(*h),
                red_cell_loss_ml: Some(450),
                red_cells_returned: false,
                hes_ml: None,
            }).collect();
            if let Some((ago, lasts)) = deferral {
                d.deferrals.push(Deferral {
                    reason: "r".into(),
                    permanent: false,
                    starts_at: from - TimeDelta::hours(ago),
                    until: Some(from - TimeDelta::hours(ago) + TimeDelta::hours(lasts + ago)),
                });
            }
            let until = from + TimeDelta::hours(until_hours);
            let brute = (0..=until_hours)
                .map(|h| from + TimeDelta::hours(h))
                .find(|at| d.eligibility_at(*at, None, &[], &p).eligible);
            prop_assert_eq!(d.eligible_from(from, until, &[], &p), brute);
        }
    }

    proptest! {
        #[test]
        fn no_sequence_of_transitions_leaves_a_finished_collection(
            steps in prop::collection::vec(prop::sample::select(Transition::ALL), 0..12),
        ) {
            use CollectionStatus::*;
            let mut status = Scheduled;
            for step in steps {
                match next_status(status, step) {
                    Some(to) => {
                        prop_assert!(!matches!(status, Completed | Aborted), "{} left", status);
                        prop_assert!(to != Completed || status == InProgress);
                        prop_assert!(to != InProgress || (status == Scheduled && step == Transition::Start));
                        status = to;
                    }
                    None => prop_assert!(matches!(
                        (status, step),
                        (Completed | Aborted, _)
                            | (Scheduled, Transition::Complete)
                            | (InProgress, Transition::Start | Transition::Reschedule)
                    )),
                }
            }
        }

        #[test]
        fn overlap_is_shared_minutes_of_half_open_intervals(
            a in (0i64..300, 1i64..200),
            b in (0i64..300, 1i64..200),
        ) {
            let (x, y) = ((minute(a.0), minute(a.0 + a.1)), (minute(b.0), minute(b.0 + b.1)));
            let shared = (a.0..a.0 + a.1).any(|m| (b.0..b.0 + b.1).contains(&m));
            prop_assert_eq!(overlaps(x, y), shared);
            prop_assert_eq!(overlaps(x, y), overlaps(y, x));
        }

        #[test]
        fn bookings_occupy_and_count_consistently(
            b in arb_booking(1, CollectionStatus::ALL),
            now_minute in 0i64..21_000,
        ) {
            let now = minute(now_minute);
            match b.occupancy(now) {
                None => prop_assert!(b.status == CollectionStatus::Aborted && b.started_at.is_none()),
                Some((from, to)) => {
                    prop_assert!(from <= to);
                    prop_assert_eq!(from, b.start());
                    if b.status == CollectionStatus::InProgress {
                        prop_assert!(to >= now, "a running procedure holds the device up to now");
                    }
                }
            }
            // A collection is in the history exactly when it took or will take place.
            prop_assert_eq!(b.procedure_time().is_some(), b.occupancy(now).is_some());
            let d = donor(vec![b.clone()]);
            prop_assert_eq!(d.history(None).len(), usize::from(b.procedure_time().is_some()));
            prop_assert!(d.history(Some(b.id)).is_empty());
        }

        #[test]
        fn a_booking_is_refused_when_it_overlaps_another_of_the_donor(
            others in prop::collection::vec((0i64..40_000, 1i64..400), 0..4),
            candidate in arb_booking(100, &[CollectionStatus::Scheduled]),
        ) {
            let bookings: Vec<Booking> = others
                .iter()
                .enumerate()
                .map(|(i, &(start, length))| Booking {
                    scheduled_start: minute(start),
                    scheduled_end: minute(start + length),
                    ..booking(i as i64 + 1, 1, 0)
                })
                .collect();
            let d = donor(bookings.clone());
            let (now, policy) = (t(1, 0), Policy::default());
            let e = check_booking(&d, &candidate, &[], &policy, now);
            prop_assert_eq!(e.eligible, e.reasons.is_empty());
            let slot = candidate.occupancy(now).expect("scheduled");
            let clashes = bookings.iter().filter(|b| b.occupancy(now).is_some_and(|o| overlaps(slot, o))).count();
            let booked = e.codes().iter().filter(|c| **c == codes::DONOR_ALREADY_BOOKED).count();
            prop_assert_eq!(booked, clashes);
            // Re-checking a booking the record already holds where it is: it does not clash with
            // itself and breaks nothing new, so only its own eligibility and real clashes remain.
            let mut with = d.clone();
            with.bookings.push(candidate.clone());
            let again = check_booking(&with, &candidate, &[], &policy, now);
            let mut expected = with.eligibility_at(candidate.start(), Some(candidate.id), &[], &policy).codes();
            expected.extend(vec![codes::DONOR_ALREADY_BOOKED; clashes]);
            prop_assert_eq!(again.codes(), expected);
            // What it accepts breaks no other scheduled booking of the donor, earlier or later.
            if e.eligible {
                for b in &bookings {
                    let before = d.eligibility_at(b.start(), Some(b.id), &[], &policy).codes();
                    for code in with.eligibility_at(b.start(), Some(b.id), &[], &policy).codes() {
                        prop_assert!(before.contains(&code), "{} breaks collection {}", code, b.id);
                    }
                }
            }
        }
    }

    #[test]
    fn lookback_is_the_longest_window_of_the_policy() {
        let mut p = Policy::default();
        let base = eligibility::lookback(&p).expect("fits");
        // The default intervals (weeks) are all shorter than the 12-month limits.
        assert_eq!(base, TimeDelta::days(365));
        type Case = (&'static str, fn(&mut Policy), TimeDelta);
        let cases: &[Case] = &[
            (
                "whole blood 60 weeks",
                |p| p.donor.weeks_after_whole_blood = 60,
                TimeDelta::weeks(60),
            ),
            (
                "red-cell loss 70 weeks",
                |p| p.donor.weeks_after_red_cell_loss = Some(70),
                TimeDelta::weeks(70),
            ),
            (
                "not returned 80 weeks",
                |p| p.donor.weeks_after_red_cell_loss_not_returned = 80,
                TimeDelta::weeks(80),
            ),
            (
                "leukapheresis interval 10 000 h",
                |p| p.donor.min_hours_between_leukapheresis = 10_000,
                TimeDelta::hours(10_000),
            ),
        ];
        for (name, change, expected) in cases {
            p = Policy::default();
            change(&mut p);
            assert_eq!(eligibility::lookback(&p), Some(*expected), "{name}");
        }
    }

    proptest! {
        /// The record cut at `horizon` answers exactly as the full one at any instant from
        /// `horizon + lookback` on, whatever the policy's intervals.
        #[test]
        fn a_record_cut_at_the_lookback_judges_as_the_full_one(
            donations in prop::collection::vec((0i64..20_000, 0usize..5, prop::option::of(0u32..600), any::<bool>()), 0..12),
            collections in prop::collection::vec((0i64..20_000, 0usize..4, prop::option::of(0u32..400), prop::option::of(0u32..2000)), 0..8),
            steroids in prop::collection::vec((0i64..20_000, prop::option::of(0i64..4), any::<bool>()), 0..8),
            deferrals in prop::collection::vec((0i64..20_000, any::<bool>(), prop::option::of(1i64..20_000)), 0..4),
            weeks_whole_blood in 1u32..90,
            hours_between in 1u32..12_000,
            at_after in 0i64..3_000,
        ) {
            let mut p = Policy::default();
            p.donor.weeks_after_whole_blood = weeks_whole_blood;
            p.donor.min_hours_between_leukapheresis = hours_between;
            let lookback = eligibility::lookback(&p).expect("fits");
            // Histories over ~2 years before `valid_from`, some events after it.
            let valid_from = t(15, 12);
            let start = valid_from - TimeDelta::hours(17_000);
            let hours = TimeDelta::hours;
            let kinds = [ProcedureKind::WholeBlood, ProcedureKind::Platelets, ProcedureKind::Plasma, ProcedureKind::RedCells, ProcedureKind::Leukapheresis];
            let statuses = [CollectionStatus::Scheduled, CollectionStatus::InProgress, CollectionStatus::Completed, CollectionStatus::Aborted];
            let mut d = donor(collections.iter().enumerate().map(|(i, (h, st, loss, hes))| {
                let begin = start + hours(*h);
                Booking {
                    id: i as i64 + 1,
                    status: statuses[*st],
                    scheduled_start: begin,
                    scheduled_end: begin + hours(3),
                    started_at: (*st > 0 && h % 2 == 0).then_some(begin),
                    ended_at: (*st > 1).then_some(begin + hours(2)),
                    red_cell_loss_ml: *loss,
                    hes_ml: *hes,
                }
            }).collect());
            d.donations = donations.iter().map(|(h, k, loss, returned)| PastProcedure {
                kind: kinds[*k],
                at: start + hours(*h),
                red_cell_loss_ml: *loss,
                red_cells_returned: *returned,
                hes_ml: None,
            }).collect();
            d.stimulations = steroids.iter().map(|(h, collection, steroid)| GivenStimulation {
                agent: if *steroid { "dexamethasone".into() } else { "G-CSF".into() },
                at: start + hours(*h),
                collection_id: *collection,
            }).collect();
            d.deferrals = deferrals.iter().map(|(h, permanent, lasts)| Deferral {
                reason: "r".into(),
                permanent: *permanent,
                starts_at: start + hours(*h),
                until: if *permanent { None } else { lasts.map(|l| start + hours(*h + l)) },
            }).collect();
            let cut = d.without_before(valid_from - lookback);
            let at = valid_from + hours(at_after);
            let agents = vec!["G-CSF".to_owned(), "dexamethasone".to_owned()];
            prop_assert_eq!(cut.eligibility_at(at, None, &agents, &p), d.eligibility_at(at, None, &agents, &p));
        }
    }
}
