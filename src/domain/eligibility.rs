//! Donor eligibility for a granulocyte collection (a leukapheresis) at a given instant, per
//! domain.md §2. Every failing rule is reported; every threshold comes from [`Policy`].
//!
//! Conventions:
//! * Only history at or before `at` counts, so past decisions can be re-evaluated. The
//!   procedure being evaluated must not itself be in `history`.
//! * Rolling windows end at `at` inclusive and exclude their start: `(at - 365 d, at]` for
//!   12 months, `(at - 7 d, at]`, `(at - 56 d, at]` for 8 weeks.
//! * Age is in whole years on the UTC date of `at`; someone born on 29 February turns a year
//!   older on 1 March in common years.
//! * A whole-blood donation takes `donor.weeks_after_whole_blood`, whatever its record says
//!   about returned red cells (whole blood never returns them).
//! * "Equivalent red-cell loss" is another procedure (a leukapheresis included) that removed at
//!   least `donor.max_red_cell_loss_ml_per_8_weeks` mL of red cells (200 mL by default, about
//!   one whole-blood donation's worth); it takes `donor.weeks_after_red_cell_loss` (null: the
//!   whole-blood interval), or `donor.weeks_after_red_cell_loss_not_returned` for a red-cell
//!   apheresis whose red cells were not returned.
//! * A leukapheresis's red-cell loss is the red cells of its product plus any other loss
//!   recorded on the collection (an aborted run's); its HES is the volume recorded at its end.
//! * Exposure limits ("reached" blocks, like the yearly procedure count): HES received in
//!   procedures of the last 365 days, and corticosteroid courses begun in the last 365 days. A
//!   course is every corticosteroid dose given for one collection; a dose given without a
//!   collection is a course of its own. Doses given for the collection being evaluated are not
//!   in `stimulations`, as that procedure is not in `history`.
//! * Checklist items match trimmed and ASCII case-insensitively; agent names match on their
//!   letters and digits (`G-CSF` is `gcsf`, see [`same_agent`]).

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::text_enum;
use crate::domain::agents::{is_corticosteroid, same_agent};
use crate::domain::policy::Policy;

/// Stable reason codes.
pub mod codes {
    pub const DONOR_INACTIVE: &str = "donor_inactive";
    pub const TOO_YOUNG: &str = "too_young";
    pub const TOO_OLD: &str = "too_old";
    pub const DEFERRED: &str = "deferred";
    pub const LEUKAPHERESIS_LIMIT_12_MONTHS: &str = "leukapheresis_limit_12_months";
    pub const LEUKAPHERESIS_INTERVAL: &str = "leukapheresis_interval";
    pub const PROCEDURES_PER_7_DAYS: &str = "procedures_per_7_days";
    pub const WHOLE_BLOOD_INTERVAL: &str = "whole_blood_interval";
    pub const RED_CELL_LOSS_8_WEEKS: &str = "red_cell_loss_8_weeks";
    pub const HES_LIMIT_12_MONTHS: &str = "hes_limit_12_months";
    pub const STEROID_COURSE_LIMIT_12_MONTHS: &str = "steroid_course_limit_12_months";
    pub const CONTRAINDICATED_AGENT: &str = "contraindicated_agent";
}

/// A policy checklist item (`agent`, `item`) a donor is flagged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContraindicationFlag {
    pub agent: String,
    pub item: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonorFacts {
    pub date_of_birth: NaiveDate,
    pub active: bool,
    pub flagged_contraindications: Vec<ContraindicationFlag>,
}

/// A temporary deferral without `until` is open-ended and stays active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferral {
    pub reason: String,
    pub permanent: bool,
    pub starts_at: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

impl Deferral {
    pub fn is_active_at(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && (self.permanent || self.until.is_none_or(|until| until > at))
    }
}

text_enum!(
    /// Granulocyte collections are `Leukapheresis`.
    ProcedureKind {
        WholeBlood => "whole_blood",
        Platelets => "platelets",
        Plasma => "plasma",
        RedCells => "red_cells",
        Leukapheresis => "leukapheresis",
    }
);

impl ProcedureKind {
    fn label(self) -> &'static str {
        match self {
            Self::WholeBlood => "whole-blood donation",
            Self::Platelets => "platelet apheresis",
            Self::Plasma => "plasma apheresis",
            Self::RedCells => "red-cell apheresis",
            Self::Leukapheresis => "leukapheresis",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastProcedure {
    pub kind: ProcedureKind,
    pub at: DateTime<Utc>,
    pub red_cell_loss_ml: Option<u32>,
    pub red_cells_returned: bool,
    /// Hydroxyethyl starch the donor received in the procedure, mL (`None`: none recorded).
    #[serde(default)]
    pub hes_ml: Option<u32>,
}

/// A stimulation given to the donor (any agent), for the corticosteroid course limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GivenStimulation {
    pub agent: String,
    pub at: DateTime<Utc>,
    /// The collection it prepared: the doses for one collection are one course.
    pub collection_id: Option<i64>,
}

/// The red cells a collection removed, mL: its product's (rounded up to the next mL) plus any
/// other loss recorded for it (an aborted run's); `None` when neither is known.
pub fn collection_red_cell_loss(product_ml: Option<f64>, other_ml: Option<u32>) -> Option<u32> {
    let product = product_ml.filter(|ml| ml.is_finite() && *ml >= 0.0).map(|ml| {
        // Saturates at u32::MAX; recorded volumes are at most 500 mL.
        ml.ceil() as u32
    });
    match (product, other_ml) {
        (None, None) => None,
        (p, o) => Some(p.unwrap_or(0).saturating_add(o.unwrap_or(0))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Eligibility {
    pub eligible: bool,
    pub reasons: Vec<Reason>,
}

impl Eligibility {
    pub fn codes(&self) -> Vec<&'static str> {
        self.reasons.iter().map(|r| r.code).collect()
    }
}

/// Whole years of age on `on` (see the module notes for 29 February).
pub fn age_on(date_of_birth: NaiveDate, on: NaiveDate) -> i32 {
    let years = on.year() - date_of_birth.year();
    // Comparing (month, day) puts a 29 February birthday after 28 February in every year.
    if (on.month(), on.day()) < (date_of_birth.month(), date_of_birth.day()) {
        years - 1
    } else {
        years
    }
}

pub(crate) const TWELVE_MONTHS: TimeDelta = TimeDelta::days(365);
pub(crate) const SEVEN_DAYS: TimeDelta = TimeDelta::days(7);
pub(crate) const EIGHT_WEEKS: TimeDelta = TimeDelta::days(56);

fn hours(n: u32) -> TimeDelta {
    TimeDelta::try_hours(i64::from(n)).unwrap_or(TimeDelta::MAX)
}

fn weeks(n: u32) -> TimeDelta {
    TimeDelta::try_weeks(i64::from(n)).unwrap_or(TimeDelta::MAX)
}

/// How far back from `at` any rule of [`evaluate`] looks under `policy`: a procedure,
/// stimulation or ended deferral at or before `at - lookback` changes no verdict at `at`.
/// `None` when a policy interval does not fit a duration (then nothing may be left out).
pub fn lookback(policy: &Policy) -> Option<TimeDelta> {
    let d = &policy.donor;
    let interval_weeks = d
        .weeks_after_whole_blood
        .max(d.red_cell_loss_weeks())
        .max(d.weeks_after_red_cell_loss_not_returned);
    let intervals = TimeDelta::try_weeks(i64::from(interval_weeks))?;
    let between = TimeDelta::try_hours(i64::from(d.min_hours_between_leukapheresis))?;
    Some(
        TWELVE_MONTHS
            .max(EIGHT_WEEKS)
            .max(SEVEN_DAYS)
            .max(intervals)
            .max(between),
    )
}

/// "47 h 59 min"
fn fmt_hours(d: TimeDelta) -> String {
    let minutes = d.num_minutes().max(0);
    format!("{} h {} min", minutes / 60, minutes % 60)
}

/// "27 d 23 h 59 min"
fn fmt_days(d: TimeDelta) -> String {
    let minutes = d.num_minutes().max(0);
    format!("{} d {} h {} min", minutes / 1440, minutes / 60 % 24, minutes % 60)
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Evaluates every rule for a leukapheresis at `at`; `stimulations` are those given before
/// (for other collections or none), `planned_agents` the stimulation agents to be given
/// (matched against `policy.donor.contraindications`).
pub fn evaluate(
    donor: &DonorFacts,
    deferrals: &[Deferral],
    history: &[PastProcedure],
    stimulations: &[GivenStimulation],
    planned_agents: &[String],
    at: DateTime<Utc>,
    policy: &Policy,
) -> Eligibility {
    let d = &policy.donor;
    let mut reasons = Vec::new();
    let mut fail = |code: &'static str, message: String| reasons.push(Reason { code, message });

    if !donor.active {
        fail(codes::DONOR_INACTIVE, "donor record is inactive".to_owned());
    }

    let age = i64::from(age_on(donor.date_of_birth, at.date_naive()));
    if age < i64::from(d.age_min) {
        fail(
            codes::TOO_YOUNG,
            format!("donor is {age} years old; minimum age is {}", d.age_min),
        );
    }
    if age > i64::from(d.age_max) {
        fail(
            codes::TOO_OLD,
            format!("donor is {age} years old; maximum age is {}", d.age_max),
        );
    }

    for deferral in deferrals.iter().filter(|x| x.is_active_at(at)) {
        let kind = match (deferral.permanent, deferral.until) {
            (true, _) => "permanently deferred".to_owned(),
            (false, Some(until)) => format!("deferred until {}", fmt_time(until)),
            (false, None) => "deferred indefinitely".to_owned(),
        };
        fail(codes::DEFERRED, format!("{kind}: {}", deferral.reason));
    }

    let past: Vec<&PastProcedure> = history.iter().filter(|p| p.at <= at).collect();
    let ago = |p: &PastProcedure| at.signed_duration_since(p.at);
    let within = |p: &PastProcedure, window: TimeDelta| ago(p) < window;
    let leukaphereses = || past.iter().filter(|p| p.kind == ProcedureKind::Leukapheresis);

    let in_12_months = leukaphereses().filter(|p| within(p, TWELVE_MONTHS)).count();
    if in_12_months >= d.max_leukapheresis_per_12_months as usize {
        fail(
            codes::LEUKAPHERESIS_LIMIT_12_MONTHS,
            format!(
                "{in_12_months} leukapheresis procedures in the last 365 days; at most {} allowed in any 12 months",
                d.max_leukapheresis_per_12_months
            ),
        );
    }

    if let Some(since_last) = leukaphereses().map(|p| ago(p)).min()
        && since_last < hours(d.min_hours_between_leukapheresis)
    {
        fail(
            codes::LEUKAPHERESIS_INTERVAL,
            format!(
                "last leukapheresis {} ago; at least {} h required",
                fmt_hours(since_last),
                d.min_hours_between_leukapheresis
            ),
        );
    }

    let in_7_days = past.iter().filter(|p| within(p, SEVEN_DAYS)).count();
    if in_7_days >= d.max_procedures_per_7_days as usize {
        fail(
            codes::PROCEDURES_PER_7_DAYS,
            format!(
                "{in_7_days} procedures in the last 7 days; at most {} allowed in any 7 days",
                d.max_procedures_per_7_days
            ),
        );
    }

    // Of the red-cell losses still inside their interval, report the one that ends last.
    let equivalent_loss_ml = d.max_red_cell_loss_ml_per_8_weeks;
    let mut blocking: Option<(TimeDelta, &PastProcedure, u32, bool)> = None;
    for &p in &past {
        let equivalent = p.red_cell_loss_ml.is_some_and(|ml| ml >= equivalent_loss_ml);
        let (required_weeks, not_returned) = match p.kind {
            ProcedureKind::WholeBlood => (d.weeks_after_whole_blood, false),
            _ if !equivalent => continue,
            ProcedureKind::RedCells if !p.red_cells_returned => (d.weeks_after_red_cell_loss_not_returned, true),
            _ => (d.red_cell_loss_weeks(), false),
        };
        let elapsed = ago(p);
        let required = weeks(required_weeks);
        if elapsed < required {
            let remaining = required.checked_sub(&elapsed).unwrap_or(TimeDelta::MAX);
            if blocking.is_none_or(|(worst, ..)| remaining > worst) {
                blocking = Some((remaining, p, required_weeks, not_returned));
            }
        }
    }
    if let Some((_, p, required_weeks, not_returned)) = blocking {
        let what = match (p.kind, p.red_cell_loss_ml) {
            (ProcedureKind::WholeBlood, _) => p.kind.label().to_owned(),
            (kind, Some(ml)) => format!(
                "{} with {ml} mL red-cell loss (at least {equivalent_loss_ml} mL counts as a whole-blood donation)",
                kind.label()
            ),
            (kind, None) => kind.label().to_owned(),
        };
        let returned = if not_returned { " (red cells not returned)" } else { "" };
        fail(
            codes::WHOLE_BLOOD_INTERVAL,
            format!(
                "{what} {} ago; at least {required_weeks} weeks required{returned}",
                fmt_days(ago(p))
            ),
        );
    }

    let loss_8_weeks: u64 = past
        .iter()
        .filter(|p| within(p, EIGHT_WEEKS))
        .filter_map(|p| p.red_cell_loss_ml)
        .map(u64::from)
        .sum();
    if loss_8_weeks > u64::from(d.max_red_cell_loss_ml_per_8_weeks) {
        fail(
            codes::RED_CELL_LOSS_8_WEEKS,
            format!(
                "{loss_8_weeks} mL red cells removed in the last 8 weeks; at most {} mL allowed",
                d.max_red_cell_loss_ml_per_8_weeks
            ),
        );
    }

    let hes_12_months: u64 = past
        .iter()
        .filter(|p| within(p, TWELVE_MONTHS))
        .filter_map(|p| p.hes_ml)
        .map(u64::from)
        .sum();
    if hes_12_months >= u64::from(d.max_hes_ml_per_12_months) {
        fail(
            codes::HES_LIMIT_12_MONTHS,
            format!(
                "{hes_12_months} mL of hydroxyethyl starch (HES) received in the last 365 days; \
                 the limit is {} mL in any 12 months",
                d.max_hes_ml_per_12_months
            ),
        );
    }

    // One course per collection, one per dose given without a collection.
    let mut courses: Vec<i64> = Vec::new();
    let mut unlinked = 0usize;
    for s in stimulations {
        let elapsed = at.signed_duration_since(s.at);
        if s.at > at || elapsed >= TWELVE_MONTHS || !is_corticosteroid(&s.agent, policy) {
            continue;
        }
        match s.collection_id {
            Some(id) if !courses.contains(&id) => courses.push(id),
            Some(_) => {}
            None => unlinked += 1,
        }
    }
    let steroid_courses = courses.len() + unlinked;
    if steroid_courses >= d.max_steroid_courses_per_12_months as usize {
        fail(
            codes::STEROID_COURSE_LIMIT_12_MONTHS,
            format!(
                "{steroid_courses} corticosteroid courses in the last 365 days; at most {} allowed in any 12 months",
                d.max_steroid_courses_per_12_months
            ),
        );
    }

    for c in &d.contraindications {
        let planned = planned_agents.iter().any(|a| same_agent(a, &c.agent));
        let flagged = donor
            .flagged_contraindications
            .iter()
            .any(|f| same_agent(&f.agent, &c.agent) && same_name(&f.item, &c.item));
        if planned && flagged {
            fail(
                codes::CONTRAINDICATED_AGENT,
                format!(
                    "donor is flagged on contraindication \"{}\" for planned agent {}",
                    c.item, c.agent
                ),
            );
        }
    }

    Eligibility {
        eligible: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::codes::*;
    use super::*;
    use crate::domain::policy::Contraindication;
    use chrono::TimeZone;
    use proptest::prelude::*;

    use ProcedureKind::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 15, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn dt(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, s).single().expect("valid time")
    }

    fn hm(h: i64, m: i64) -> TimeDelta {
        TimeDelta::hours(h) + TimeDelta::minutes(m)
    }

    fn days(n: i64) -> TimeDelta {
        TimeDelta::days(n)
    }

    fn donor() -> DonorFacts {
        DonorFacts {
            date_of_birth: date(1990, 1, 1),
            active: true,
            flagged_contraindications: Vec::new(),
        }
    }

    fn procedure(kind: ProcedureKind, ago: TimeDelta) -> PastProcedure {
        PastProcedure {
            kind,
            at: at() - ago,
            red_cell_loss_ml: None,
            red_cells_returned: true,
            hes_ml: None,
        }
    }

    fn with_loss(kind: ProcedureKind, ago: TimeDelta, ml: u32, returned: bool) -> PastProcedure {
        PastProcedure {
            red_cell_loss_ml: Some(ml),
            red_cells_returned: returned,
            ..procedure(kind, ago)
        }
    }

    type Codes = &'static [&'static str];
    type KindAgo = (ProcedureKind, TimeDelta);

    fn history_codes(history: &[PastProcedure]) -> Vec<&'static str> {
        evaluate(&donor(), &[], history, &[], &[], at(), &Policy::default()).codes()
    }

    fn message(e: &Eligibility, code: &str) -> String {
        e.reasons
            .iter()
            .find(|r| r.code == code)
            .map(|r| r.message.clone())
            .expect("reason present")
    }

    #[test]
    fn clean_donor_is_eligible() {
        let e = evaluate(&donor(), &[], &[], &[], &[], at(), &Policy::default());
        assert_eq!(
            e,
            Eligibility {
                eligible: true,
                reasons: vec![]
            }
        );
    }

    #[test]
    fn inactive_donor_is_ineligible() {
        let facts = DonorFacts {
            active: false,
            ..donor()
        };
        let e = evaluate(&facts, &[], &[], &[], &[], at(), &Policy::default());
        assert!(!e.eligible);
        assert_eq!(e.codes(), vec![DONOR_INACTIVE]);
    }

    #[test]
    fn age_on_handles_birthdays_and_leap_days() {
        let cases = [
            (date(2007, 6, 15), date(2025, 6, 14), 17),
            (date(2007, 6, 15), date(2025, 6, 15), 18),
            (date(2007, 12, 31), date(2025, 1, 1), 17),
            (date(2004, 2, 29), date(2022, 2, 28), 17),
            (date(2004, 2, 29), date(2022, 3, 1), 18),
            (date(2004, 2, 29), date(2024, 2, 28), 19),
            (date(2004, 2, 29), date(2024, 2, 29), 20),
            (date(2004, 2, 29), date(2024, 3, 1), 20),
            (date(2004, 3, 1), date(2022, 2, 28), 17),
            (date(2004, 3, 1), date(2022, 3, 1), 18),
            (date(2004, 2, 28), date(2022, 2, 28), 18),
            (date(2025, 6, 16), date(2025, 6, 15), -1),
        ];
        for (dob, on, expected) in cases {
            assert_eq!(age_on(dob, on), expected, "born {dob}, on {on}");
        }
    }

    #[test]
    fn age_limits_at_the_18th_and_76th_birthdays() {
        let cases: [(NaiveDate, DateTime<Utc>, &[&str]); 10] = [
            // 18th birthday on 2025-06-15.
            (date(2007, 6, 15), dt(2025, 6, 14, 12, 0, 0), &[TOO_YOUNG]),
            (date(2007, 6, 15), dt(2025, 6, 14, 23, 59, 59), &[TOO_YOUNG]),
            (date(2007, 6, 15), dt(2025, 6, 15, 0, 0, 0), &[]),
            // 76th birthday on 2025-06-15: 75 is allowed, 76 is not.
            (date(1949, 6, 15), dt(2025, 6, 14, 23, 59, 59), &[]),
            (date(1949, 6, 15), dt(2025, 6, 15, 0, 0, 0), &[TOO_OLD]),
            (date(1949, 6, 16), dt(2025, 6, 15, 12, 0, 0), &[]),
            // Born on 29 February: 18 on 1 March in a common year, on 29 February in a leap year.
            (date(2004, 2, 29), dt(2022, 2, 28, 23, 59, 59), &[TOO_YOUNG]),
            (date(2004, 2, 29), dt(2022, 3, 1, 0, 0, 0), &[]),
            (date(1948, 2, 29), dt(2024, 2, 28, 12, 0, 0), &[]),
            (date(1948, 2, 29), dt(2024, 2, 29, 0, 0, 0), &[TOO_OLD]),
        ];
        for (dob, when, expected) in cases {
            let facts = DonorFacts {
                date_of_birth: dob,
                ..donor()
            };
            let e = evaluate(&facts, &[], &[], &[], &[], when, &Policy::default());
            assert_eq!(e.codes(), expected, "born {dob}, at {when}");
        }
    }

    #[test]
    fn age_messages_name_the_numbers() {
        let young = DonorFacts {
            date_of_birth: date(2007, 6, 16),
            ..donor()
        };
        let e = evaluate(&young, &[], &[], &[], &[], at(), &Policy::default());
        assert_eq!(message(&e, TOO_YOUNG), "donor is 17 years old; minimum age is 18");
        let old = DonorFacts {
            date_of_birth: date(1949, 6, 15),
            ..donor()
        };
        let e = evaluate(&old, &[], &[], &[], &[], at(), &Policy::default());
        assert_eq!(message(&e, TOO_OLD), "donor is 76 years old; maximum age is 75");
    }

    #[test]
    fn deferral_activity_boundaries() {
        let now = at();
        let second = TimeDelta::seconds(1);
        let deferral = |permanent, starts_at, until| Deferral {
            reason: "recent travel".into(),
            permanent,
            starts_at,
            until,
        };
        let cases = [
            (deferral(false, now - days(30), Some(now)), false),
            (deferral(false, now - days(30), Some(now + second)), true),
            (deferral(false, now - days(30), Some(now - second)), false),
            (deferral(false, now, Some(now + days(1))), true),
            (deferral(false, now + second, Some(now + days(1))), false),
            (deferral(false, now - days(1), None), true),
            (deferral(true, now - days(365), None), true),
            (deferral(true, now - days(365), Some(now - days(1))), true),
            (deferral(true, now + second, None), false),
        ];
        for (d, active) in cases {
            assert_eq!(d.is_active_at(now), active, "{d:?}");
            let e = evaluate(
                &donor(),
                std::slice::from_ref(&d),
                &[],
                &[],
                &[],
                now,
                &Policy::default(),
            );
            let expected: &[&str] = if active { &[DEFERRED] } else { &[] };
            assert_eq!(e.codes(), expected, "{d:?}");
        }
    }

    #[test]
    fn one_reason_per_active_deferral_with_its_text() {
        let now = at();
        let deferrals = [
            Deferral {
                reason: "positive HTLV".into(),
                permanent: true,
                starts_at: now - days(400),
                until: None,
            },
            Deferral {
                reason: "tattoo".into(),
                permanent: false,
                starts_at: now - days(10),
                until: Some(dt(2025, 9, 1, 0, 0, 0)),
            },
            Deferral {
                reason: "expired".into(),
                permanent: false,
                starts_at: now - days(100),
                until: Some(now - days(1)),
            },
            Deferral {
                reason: "awaiting review".into(),
                permanent: false,
                starts_at: now - days(1),
                until: None,
            },
        ];
        let e = evaluate(&donor(), &deferrals, &[], &[], &[], now, &Policy::default());
        let messages: Vec<&str> = e.reasons.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(e.codes(), vec![DEFERRED, DEFERRED, DEFERRED]);
        assert_eq!(
            messages,
            vec![
                "permanently deferred: positive HTLV",
                "deferred until 2025-09-01 00:00 UTC: tattoo",
                "deferred indefinitely: awaiting review",
            ]
        );
    }

    #[test]
    fn leukapheresis_interval_boundaries() {
        let cases: [(&[TimeDelta], &[&str]); 7] = [
            (&[hm(47, 59)], &[LEUKAPHERESIS_INTERVAL]),
            (&[hm(48, 0)], &[]),
            (&[hm(48, 0) - TimeDelta::seconds(1)], &[LEUKAPHERESIS_INTERVAL]),
            (&[hm(0, 0)], &[LEUKAPHERESIS_INTERVAL]),
            (&[hm(72, 0)], &[]),
            // The latest one counts, whatever the order of the history.
            (&[hm(200, 0), hm(10, 0)], &[LEUKAPHERESIS_INTERVAL]),
            (&[hm(10, 0), hm(200, 0)], &[LEUKAPHERESIS_INTERVAL]),
        ];
        for (agos, expected) in cases {
            let history: Vec<_> = agos.iter().map(|&a| procedure(Leukapheresis, a)).collect();
            assert_eq!(history_codes(&history), expected, "{agos:?}");
        }
        let e = evaluate(
            &donor(),
            &[],
            &[procedure(Leukapheresis, hm(47, 59))],
            &[],
            &[],
            at(),
            &Policy::default(),
        );
        assert_eq!(
            message(&e, LEUKAPHERESIS_INTERVAL),
            "last leukapheresis 47 h 59 min ago; at least 48 h required"
        );
    }

    #[test]
    fn other_procedure_kinds_do_not_start_the_leukapheresis_interval() {
        for kind in [Platelets, Plasma] {
            assert_eq!(history_codes(&[procedure(kind, hm(1, 0))]), Vec::<&str>::new());
        }
    }

    #[test]
    fn leukapheresis_limit_in_rolling_12_months() {
        // `n` leukaphereses 20 days apart, the latest 3 days ago, plus one optional older one.
        let run = |n: i64, extra: Option<TimeDelta>| {
            let mut history: Vec<_> = (0..n).map(|i| procedure(Leukapheresis, days(3 + 20 * i))).collect();
            history.extend(extra.map(|ago| procedure(Leukapheresis, ago)));
            history_codes(&history)
        };
        let none: &[&str] = &[];
        assert_eq!(run(11, None), none, "11 done: the 12th is allowed");
        assert_eq!(run(12, None), [LEUKAPHERESIS_LIMIT_12_MONTHS], "12 done: a 13th is not");
        assert_eq!(run(11, Some(days(365))), none, "exactly 365 days ago drops out");
        assert_eq!(
            run(11, Some(days(365) - TimeDelta::minutes(1))),
            [LEUKAPHERESIS_LIMIT_12_MONTHS]
        );
        assert_eq!(run(11, Some(days(366))), none);

        let history: Vec<_> = (0..12).map(|i| procedure(Leukapheresis, days(3 + 20 * i))).collect();
        let e = evaluate(&donor(), &[], &history, &[], &[], at(), &Policy::default());
        assert_eq!(
            message(&e, LEUKAPHERESIS_LIMIT_12_MONTHS),
            "12 leukapheresis procedures in the last 365 days; at most 12 allowed in any 12 months"
        );
    }

    #[test]
    fn other_kinds_do_not_count_towards_the_12_month_limit() {
        let history: Vec<_> = (0..12).map(|i| procedure(Platelets, days(3 + 20 * i))).collect();
        assert_eq!(history_codes(&history), Vec::<&str>::new());
    }

    #[test]
    fn procedures_in_7_days_boundaries() {
        let cases: [(&[KindAgo], Codes); 7] = [
            (&[(Platelets, days(6))], &[]),
            (&[(Platelets, days(6)), (Plasma, days(3))], &[PROCEDURES_PER_7_DAYS]),
            (&[(Platelets, days(7)), (Plasma, days(3))], &[]),
            (
                &[(Platelets, days(7) - TimeDelta::minutes(1)), (Plasma, days(3))],
                &[PROCEDURES_PER_7_DAYS],
            ),
            (&[(Leukapheresis, days(3)), (Plasma, days(5))], &[PROCEDURES_PER_7_DAYS]),
            (
                &[(Leukapheresis, days(3)), (Leukapheresis, days(6))],
                &[PROCEDURES_PER_7_DAYS],
            ),
            (
                &[(Platelets, days(1)), (Plasma, days(2)), (Platelets, days(4))],
                &[PROCEDURES_PER_7_DAYS],
            ),
        ];
        for (procs, expected) in cases {
            let history: Vec<_> = procs.iter().map(|&(k, a)| procedure(k, a)).collect();
            assert_eq!(history_codes(&history), expected, "{procs:?}");
        }
        let e = evaluate(
            &donor(),
            &[],
            &[procedure(Platelets, days(6)), procedure(Plasma, days(3))],
            &[],
            &[],
            at(),
            &Policy::default(),
        );
        assert_eq!(
            message(&e, PROCEDURES_PER_7_DAYS),
            "2 procedures in the last 7 days; at most 2 allowed in any 7 days"
        );
    }

    #[test]
    fn whole_blood_and_equivalent_loss_intervals() {
        let four_weeks = days(28);
        let eight_weeks = days(56);
        let minute = TimeDelta::minutes(1);
        let wb = |ago, returned| PastProcedure {
            red_cells_returned: returned,
            ..procedure(WholeBlood, ago)
        };
        let cases: [(PastProcedure, &[&str]); 17] = [
            // Whole blood takes its own interval (4 weeks), red cells returned or not.
            (wb(four_weeks - minute, true), &[WHOLE_BLOOD_INTERVAL]),
            (wb(four_weeks, true), &[]),
            (wb(four_weeks - minute, false), &[WHOLE_BLOOD_INTERVAL]),
            (wb(four_weeks, false), &[]),
            (wb(eight_weeks - minute, false), &[]),
            (with_loss(WholeBlood, four_weeks, 200, false), &[]),
            // Red-cell apheresis without return takes the 8-week interval.
            (
                with_loss(RedCells, eight_weeks - minute, 200, false),
                &[WHOLE_BLOOD_INTERVAL],
            ),
            (with_loss(RedCells, eight_weeks, 200, false), &[]),
            (with_loss(RedCells, five_weeks(), 200, true), &[]),
            // Other procedures count only as an equivalent loss (>= 200 mL) and take 4 weeks.
            (
                with_loss(Platelets, four_weeks - minute, 200, false),
                &[WHOLE_BLOOD_INTERVAL],
            ),
            (with_loss(Platelets, four_weeks, 200, false), &[]),
            (with_loss(Platelets, days(8), 199, false), &[]),
            (with_loss(Leukapheresis, days(20), 200, true), &[WHOLE_BLOOD_INTERVAL]),
            (
                with_loss(Leukapheresis, four_weeks - minute, 200, false),
                &[WHOLE_BLOOD_INTERVAL],
            ),
            (with_loss(Leukapheresis, four_weeks, 200, false), &[]),
            (procedure(RedCells, days(8)), &[]),
            (wb(days(400), false), &[]),
        ];
        for (p, expected) in cases {
            assert_eq!(history_codes(std::slice::from_ref(&p)), expected, "{p:?}");
        }
    }

    #[test]
    fn whole_blood_and_equivalent_losses_take_their_own_policy_keys() {
        let minute = TimeDelta::minutes(1);
        let wb = |ago| with_loss(WholeBlood, ago, 200, false);
        let platelets = |ago| with_loss(Platelets, ago, 200, true);
        // (weeks after whole blood, weeks after an equivalent loss, procedure, blocked)
        let cases: [(u32, Option<u32>, PastProcedure, bool); 12] = [
            // A US programme: 8 weeks after whole blood, 4 after another equivalent loss.
            (8, Some(4), wb(days(56) - minute), true),
            (8, Some(4), wb(days(56)), false),
            (8, Some(4), platelets(days(28) - minute), true),
            (8, Some(4), platelets(days(28)), false),
            // Whole blood shorter than an equivalent loss.
            (2, Some(6), wb(days(14) - minute), true),
            (2, Some(6), wb(days(14)), false),
            (2, Some(6), platelets(days(42) - minute), true),
            (2, Some(6), platelets(days(42)), false),
            // Unset, the equivalent loss follows whole blood's interval.
            (3, None, platelets(days(21) - minute), true),
            (3, None, platelets(days(21)), false),
            (6, None, wb(days(42) - minute), true),
            (6, None, wb(days(42)), false),
        ];
        for (wb_weeks, loss_weeks, p, blocked) in cases {
            let mut policy = Policy::default();
            policy.donor.weeks_after_whole_blood = wb_weeks;
            policy.donor.weeks_after_red_cell_loss = loss_weeks;
            let e = evaluate(&donor(), &[], std::slice::from_ref(&p), &[], &[], at(), &policy);
            let expected: &[&str] = if blocked { &[WHOLE_BLOOD_INTERVAL] } else { &[] };
            assert_eq!(e.codes(), expected, "{wb_weeks} / {loss_weeks:?}: {p:?}");
        }
        let mut policy = Policy::default();
        policy.donor.weeks_after_whole_blood = 8;
        let e = evaluate(&donor(), &[], &[wb(days(30))], &[], &[], at(), &policy);
        assert_eq!(
            message(&e, WHOLE_BLOOD_INTERVAL),
            "whole-blood donation 30 d 0 h 0 min ago; at least 8 weeks required"
        );
    }

    fn five_weeks() -> TimeDelta {
        days(35)
    }

    #[test]
    fn whole_blood_message_names_the_longest_remaining_interval() {
        let history = [
            procedure(WholeBlood, days(20)),
            with_loss(RedCells, days(30), 400, false),
        ];
        let e = evaluate(&donor(), &[], &history, &[], &[], at(), &Policy::default());
        assert_eq!(e.codes(), vec![WHOLE_BLOOD_INTERVAL, RED_CELL_LOSS_8_WEEKS]);
        assert_eq!(
            message(&e, WHOLE_BLOOD_INTERVAL),
            "red-cell apheresis with 400 mL red-cell loss (at least 200 mL counts as a whole-blood donation) \
             30 d 0 h 0 min ago; at least 8 weeks required (red cells not returned)"
        );
        let e = evaluate(&donor(), &[], &history[..1], &[], &[], at(), &Policy::default());
        assert_eq!(
            message(&e, WHOLE_BLOOD_INTERVAL),
            "whole-blood donation 20 d 0 h 0 min ago; at least 4 weeks required"
        );

        let e = evaluate(
            &donor(),
            &[],
            &[with_loss(Platelets, hm(27 * 24 + 23, 59), 250, false)],
            &[],
            &[],
            at(),
            &Policy::default(),
        );
        assert_eq!(
            message(&e, WHOLE_BLOOD_INTERVAL),
            "platelet apheresis with 250 mL red-cell loss (at least 200 mL counts as a whole-blood donation) \
             27 d 23 h 59 min ago; at least 4 weeks required"
        );
    }

    #[test]
    fn red_cell_loss_in_8_weeks() {
        let minute = TimeDelta::minutes(1);
        let cases: [(&[(TimeDelta, u32)], Codes); 7] = [
            (&[(days(35), 200)], &[]),
            (&[(days(35), 201)], &[RED_CELL_LOSS_8_WEEKS]),
            (&[(days(10), 100), (days(30), 100)], &[]),
            (&[(days(10), 100), (days(30), 101)], &[RED_CELL_LOSS_8_WEEKS]),
            (&[(days(10), 100), (days(56), 150)], &[]),
            (&[(days(10), 100), (days(56) - minute, 150)], &[RED_CELL_LOSS_8_WEEKS]),
            (&[(days(10), 0), (days(20), 0), (days(40), 0)], &[]),
        ];
        for (losses, expected) in cases {
            let history: Vec<_> = losses.iter().map(|&(a, ml)| with_loss(Plasma, a, ml, true)).collect();
            assert_eq!(history_codes(&history), expected, "{losses:?}");
        }
        let e = evaluate(
            &donor(),
            &[],
            &[
                with_loss(Plasma, days(10), 100, true),
                with_loss(Plasma, days(30), 101, true),
            ],
            &[],
            &[],
            at(),
            &Policy::default(),
        );
        assert_eq!(
            message(&e, RED_CELL_LOSS_8_WEEKS),
            "201 mL red cells removed in the last 8 weeks; at most 200 mL allowed"
        );
    }

    #[test]
    fn a_collection_loses_its_product_red_cells_and_any_other_loss() {
        let cases: [(Option<f64>, Option<u32>, Option<u32>); 9] = [
            (None, None, None),
            (Some(20.0), None, Some(20)),
            (Some(15.2), None, Some(16)),
            (Some(0.0), None, Some(0)),
            (None, Some(150), Some(150)),
            (Some(19.5), Some(100), Some(120)),
            (Some(f64::NAN), Some(5), Some(5)),
            (Some(-1.0), None, None),
            (Some(1e12), Some(u32::MAX), Some(u32::MAX)),
        ];
        for (product, other, expected) in cases {
            assert_eq!(
                collection_red_cell_loss(product, other),
                expected,
                "{product:?} {other:?}"
            );
        }
    }

    #[test]
    fn a_leukapheresis_red_cell_loss_counts_like_any_other() {
        let minute = TimeDelta::minutes(1);
        // (loss of a leukapheresis 10 days ago, loss of a plasma donation 30 days ago)
        let cases: [(u32, u32, Codes); 6] = [
            (20, 180, &[]),
            (21, 180, &[RED_CELL_LOSS_8_WEEKS]),
            (0, 200, &[]),
            (199, 0, &[]),
            (200, 0, &[WHOLE_BLOOD_INTERVAL]),
            (201, 0, &[WHOLE_BLOOD_INTERVAL, RED_CELL_LOSS_8_WEEKS]),
        ];
        for (leuka, plasma, expected) in cases {
            let history = [
                with_loss(Leukapheresis, days(10), leuka, true),
                with_loss(Plasma, days(30), plasma, true),
            ];
            assert_eq!(history_codes(&history), expected, "{leuka} + {plasma}");
        }
        // The loss leaves the 8-week sum exactly 56 days after the procedure.
        let at_edge = [
            with_loss(Leukapheresis, days(56) - minute, 30, true),
            with_loss(Plasma, days(30), 180, true),
        ];
        assert_eq!(history_codes(&at_edge), [RED_CELL_LOSS_8_WEEKS]);
        let out = [
            with_loss(Leukapheresis, days(56), 30, true),
            with_loss(Plasma, days(30), 180, true),
        ];
        assert_eq!(history_codes(&out), Vec::<&str>::new());
    }

    fn with_hes(ago: TimeDelta, ml: u32) -> PastProcedure {
        PastProcedure {
            hes_ml: Some(ml),
            ..procedure(Leukapheresis, ago)
        }
    }

    #[test]
    fn hes_limit_in_rolling_12_months() {
        let mut policy = Policy::default();
        policy.donor.max_hes_ml_per_12_months = 1500;
        let minute = TimeDelta::minutes(1);
        // HES of leukaphereses 30, 90 and 150 days ago (and an older one at `old`).
        type Older = Option<(TimeDelta, u32)>;
        let cases: [(&[u32], Older, Codes); 9] = [
            (&[500, 500, 499], None, &[]),
            (&[500, 500, 500], None, &[HES_LIMIT_12_MONTHS]),
            (&[500, 500, 501], None, &[HES_LIMIT_12_MONTHS]),
            (&[1499], None, &[]),
            (&[1500], None, &[HES_LIMIT_12_MONTHS]),
            (&[0, 0, 0], None, &[]),
            (&[1000], Some((days(365), 500)), &[]),
            (&[1000], Some((days(365) - minute, 500)), &[HES_LIMIT_12_MONTHS]),
            // Given after `at`: not yet.
            (&[1000], Some((-minute, 500)), &[]),
        ];
        for (volumes, old, expected) in cases {
            let mut history: Vec<_> = volumes
                .iter()
                .enumerate()
                .map(|(i, &ml)| with_hes(days(30 + 60 * i as i64), ml))
                .collect();
            history.extend(old.map(|(ago, ml)| with_hes(ago, ml)));
            let e = evaluate(&donor(), &[], &history, &[], &[], at(), &policy);
            assert_eq!(e.codes(), expected, "{volumes:?} {old:?}");
        }
        let e = evaluate(
            &donor(),
            &[],
            &[with_hes(days(30), 1000), with_hes(days(90), 600)],
            &[],
            &[],
            at(),
            &policy,
        );
        assert_eq!(
            message(&e, HES_LIMIT_12_MONTHS),
            "1600 mL of hydroxyethyl starch (HES) received in the last 365 days; the limit is 1500 mL in any 12 months"
        );
        // The default limit, 6000 mL: exactly there blocks, just under does not.
        let history: Vec<_> = (0..12).map(|i| with_hes(days(3 + 25 * i), 500)).collect();
        let default = Policy::default();
        let e = evaluate(&donor(), &[], &history, &[], &[], at(), &default);
        assert!(e.codes().contains(&HES_LIMIT_12_MONTHS), "{:?}", e.codes());
        let mut under = history.clone();
        under[11].hes_ml = Some(499);
        let e = evaluate(&donor(), &[], &under, &[], &[], at(), &default);
        assert!(!e.codes().contains(&HES_LIMIT_12_MONTHS), "{:?}", e.codes());
    }

    fn given(agent: &str, ago: TimeDelta, collection_id: Option<i64>) -> GivenStimulation {
        GivenStimulation {
            agent: agent.into(),
            at: at() - ago,
            collection_id,
        }
    }

    #[test]
    fn steroid_course_limit_in_rolling_12_months() {
        let mut policy = Policy::default();
        policy.donor.max_steroid_courses_per_12_months = 3;
        let minute = TimeDelta::minutes(1);
        let dex = |ago, c| given("dexamethasone", ago, c);
        let cases: [(Vec<GivenStimulation>, Codes); 11] = [
            (vec![dex(days(10), Some(1)), dex(days(40), Some(2))], &[]),
            (
                vec![dex(days(10), Some(1)), dex(days(40), Some(2)), dex(days(70), Some(3))],
                &[STEROID_COURSE_LIMIT_12_MONTHS],
            ),
            (
                vec![
                    dex(days(10), Some(1)),
                    dex(days(40), Some(2)),
                    dex(days(70), Some(3)),
                    dex(days(100), Some(4)),
                ],
                &[STEROID_COURSE_LIMIT_12_MONTHS],
            ),
            // Two doses for one collection are one course.
            (
                vec![
                    dex(days(10), Some(1)),
                    dex(days(10) + hm(12, 0), Some(1)),
                    dex(days(40), Some(2)),
                ],
                &[],
            ),
            // A dose without a collection is a course of its own.
            (
                vec![dex(days(10), None), dex(days(11), None), dex(days(40), Some(2))],
                &[STEROID_COURSE_LIMIT_12_MONTHS],
            ),
            // Any corticosteroid of the policy counts; G-CSF does not.
            (
                vec![
                    given("prednisone", days(10), Some(1)),
                    dex(days(40), Some(2)),
                    given("gcsf", days(70), Some(3)),
                ],
                &[],
            ),
            (
                vec![
                    given("prednisone", days(10), Some(1)),
                    dex(days(40), Some(2)),
                    given("Prednisolone", days(70), None),
                ],
                &[STEROID_COURSE_LIMIT_12_MONTHS],
            ),
            // The 365-day edge, and doses after `at`.
            (
                vec![dex(days(10), Some(1)), dex(days(40), Some(2)), dex(days(365), Some(3))],
                &[],
            ),
            (
                vec![
                    dex(days(10), Some(1)),
                    dex(days(40), Some(2)),
                    dex(days(365) - minute, Some(3)),
                ],
                &[STEROID_COURSE_LIMIT_12_MONTHS],
            ),
            (
                vec![dex(days(10), Some(1)), dex(days(40), Some(2)), dex(-minute, Some(3))],
                &[],
            ),
            // A course with one dose inside the window counts.
            (
                vec![
                    dex(days(10), Some(1)),
                    dex(days(40), Some(2)),
                    dex(days(365) - minute, Some(3)),
                    dex(days(366), Some(3)),
                ],
                &[STEROID_COURSE_LIMIT_12_MONTHS],
            ),
        ];
        for (stimulations, expected) in cases {
            let e = evaluate(&donor(), &[], &[], &stimulations, &[], at(), &policy);
            assert_eq!(e.codes(), expected, "{stimulations:?}");
        }
        let stimulations = [dex(days(10), Some(1)), dex(days(40), Some(2)), dex(days(70), None)];
        let e = evaluate(&donor(), &[], &[], &stimulations, &[], at(), &policy);
        assert_eq!(
            message(&e, STEROID_COURSE_LIMIT_12_MONTHS),
            "3 corticosteroid courses in the last 365 days; at most 3 allowed in any 12 months"
        );
        // Which agents are corticosteroids is the policy's.
        policy.stimulation.corticosteroid_agents = vec!["prednisone".into()];
        let e = evaluate(&donor(), &[], &[], &stimulations, &[], at(), &policy);
        assert!(e.eligible);
        // The default limit: 12 courses.
        let twelve: Vec<_> = (0..12).map(|i| dex(days(3 + 25 * i), Some(i))).collect();
        let e = evaluate(&donor(), &[], &[], &twelve, &[], at(), &Policy::default());
        assert_eq!(e.codes(), [STEROID_COURSE_LIMIT_12_MONTHS]);
        let e = evaluate(&donor(), &[], &[], &twelve[..11], &[], at(), &Policy::default());
        assert!(e.eligible);
    }

    #[test]
    fn contraindications_apply_only_to_planned_policy_agents() {
        let mut policy = Policy::default();
        policy.donor.contraindications = vec![
            Contraindication {
                agent: "dexamethasone".into(),
                item: "diabetes".into(),
            },
            Contraindication {
                agent: "G-CSF".into(),
                item: "sickle cell disease".into(),
            },
        ];
        let flag = |agent: &str, item: &str| ContraindicationFlag {
            agent: agent.into(),
            item: item.into(),
        };
        let cases: [(Vec<ContraindicationFlag>, &[&str], usize); 9] = [
            (vec![flag("dexamethasone", "diabetes")], &["g-csf"], 0),
            (vec![flag("dexamethasone", "diabetes")], &["dexamethasone"], 1),
            (vec![flag("dexamethasone", "diabetes")], &[" Dexamethasone "], 1),
            (vec![flag("dexamethasone", "diabetes")], &[], 0),
            (vec![flag("dexamethasone", "hypertension")], &["dexamethasone"], 0),
            (vec![flag("g-csf", "diabetes")], &["dexamethasone", "g-csf"], 0),
            (
                vec![flag("dexamethasone", "diabetes"), flag("g-csf", "Sickle cell disease")],
                &["dexamethasone", "g-csf"],
                2,
            ),
            (
                vec![flag("dexamethasone", "diabetes"), flag("dexamethasone", "diabetes")],
                &["dexamethasone"],
                1,
            ),
            (vec![], &["dexamethasone", "g-csf"], 0),
        ];
        for (flags, planned, count) in cases {
            let facts = DonorFacts {
                flagged_contraindications: flags.clone(),
                ..donor()
            };
            let planned: Vec<String> = planned.iter().map(|s| s.to_string()).collect();
            let e = evaluate(&facts, &[], &[], &[], &planned, at(), &policy);
            assert_eq!(e.codes(), vec![CONTRAINDICATED_AGENT; count], "{flags:?} {planned:?}");
        }

        let facts = DonorFacts {
            flagged_contraindications: vec![flag("dexamethasone", "diabetes")],
            ..donor()
        };
        let e = evaluate(&facts, &[], &[], &[], &["dexamethasone".into()], at(), &policy);
        assert_eq!(
            message(&e, CONTRAINDICATED_AGENT),
            "donor is flagged on contraindication \"diabetes\" for planned agent dexamethasone"
        );
        // Not in the policy list: the flag alone decides nothing.
        let e = evaluate(
            &facts,
            &[],
            &[],
            &[],
            &["dexamethasone".into()],
            at(),
            &Policy::default(),
        );
        assert!(e.eligible);
    }

    #[test]
    fn procedures_after_at_are_ignored() {
        let mut history: Vec<_> = (0..15).map(|i| procedure(Leukapheresis, -hm(1 + i * 24, 0))).collect();
        history.push(with_loss(WholeBlood, -days(1), 450, false));
        history.push(with_loss(Plasma, -TimeDelta::seconds(1), 500, false));
        assert_eq!(history_codes(&history), Vec::<&str>::new());
        // The same history evaluated later fails.
        let later = at() + days(2);
        let e = evaluate(&donor(), &[], &history, &[], &[], later, &Policy::default());
        assert!(!e.eligible);
    }

    #[test]
    fn thresholds_come_from_the_policy() {
        let mut policy = Policy::default();
        policy.donor.age_min = 21;
        policy.donor.min_hours_between_leukapheresis = 24;
        policy.donor.max_procedures_per_7_days = 3;
        policy.donor.weeks_after_whole_blood = 2;
        policy.donor.max_red_cell_loss_ml_per_8_weeks = 300;
        let facts = DonorFacts {
            date_of_birth: date(2005, 1, 1),
            ..donor()
        };
        let history = [
            procedure(Leukapheresis, hm(30, 0)),
            procedure(Plasma, days(4)),
            with_loss(WholeBlood, days(15), 250, true),
        ];
        let e = evaluate(&facts, &[], &history, &[], &[], at(), &policy);
        assert_eq!(e.codes(), vec![TOO_YOUNG]);
        assert_eq!(message(&e, TOO_YOUNG), "donor is 20 years old; minimum age is 21");
        let e = evaluate(&facts, &[], &history, &[], &[], at(), &Policy::default());
        assert_eq!(
            e.codes(),
            vec![
                LEUKAPHERESIS_INTERVAL,
                PROCEDURES_PER_7_DAYS,
                WHOLE_BLOOD_INTERVAL,
                RED_CELL_LOSS_8_WEEKS
            ]
        );
    }

    #[test]
    fn five_failures_are_all_reported() {
        let facts = DonorFacts {
            date_of_birth: date(1940, 1, 1),
            active: false,
            flagged_contraindications: Vec::new(),
        };
        let deferrals = [Deferral {
            reason: "low haemoglobin".into(),
            permanent: false,
            starts_at: at() - days(2),
            until: Some(at() + days(5)),
        }];
        let history = [procedure(Leukapheresis, hm(20, 0)), procedure(Platelets, days(5))];
        let e = evaluate(&facts, &deferrals, &history, &[], &[], at(), &Policy::default());
        assert!(!e.eligible);
        assert_eq!(
            e.codes(),
            vec![
                DONOR_INACTIVE,
                TOO_OLD,
                DEFERRED,
                LEUKAPHERESIS_INTERVAL,
                PROCEDURES_PER_7_DAYS
            ]
        );
    }

    #[test]
    fn every_rule_can_fail_together() {
        let mut policy = Policy::default();
        policy.donor.contraindications = vec![Contraindication {
            agent: "g-csf".into(),
            item: "splenomegaly".into(),
        }];
        let facts = DonorFacts {
            date_of_birth: date(2010, 1, 1),
            active: false,
            flagged_contraindications: vec![ContraindicationFlag {
                agent: "g-csf".into(),
                item: "splenomegaly".into(),
            }],
        };
        let deferrals = [Deferral {
            reason: "travel".into(),
            permanent: true,
            starts_at: at() - days(1),
            until: None,
        }];
        let mut history: Vec<_> = (0..12).map(|i| with_hes(days(1 + 20 * i), 500)).collect();
        history.push(with_loss(WholeBlood, days(3), 250, false));
        let stimulations: Vec<_> = (0..12)
            .map(|i| given("dexamethasone", days(2 + 20 * i), Some(i)))
            .collect();
        // The checklist says g-csf; the plan says gcsf (the same agent).
        let e = evaluate(
            &facts,
            &deferrals,
            &history,
            &stimulations,
            &["gcsf".into()],
            at(),
            &policy,
        );
        assert_eq!(
            e.codes(),
            vec![
                DONOR_INACTIVE,
                TOO_YOUNG,
                DEFERRED,
                LEUKAPHERESIS_LIMIT_12_MONTHS,
                LEUKAPHERESIS_INTERVAL,
                PROCEDURES_PER_7_DAYS,
                WHOLE_BLOOD_INTERVAL,
                RED_CELL_LOSS_8_WEEKS,
                HES_LIMIT_12_MONTHS,
                STEROID_COURSE_LIMIT_12_MONTHS,
                CONTRAINDICATED_AGENT,
            ]
        );
        assert!(e.reasons.iter().all(|r| !r.message.is_empty()));
    }

    #[test]
    fn unvalidated_extreme_policy_does_not_panic() {
        let mut policy = Policy::default();
        policy.donor.min_hours_between_leukapheresis = u32::MAX;
        policy.donor.weeks_after_whole_blood = u32::MAX;
        policy.donor.weeks_after_red_cell_loss_not_returned = u32::MAX;
        policy.donor.max_red_cell_loss_ml_per_8_weeks = 0;
        policy.donor.max_procedures_per_7_days = 0;
        policy.donor.max_leukapheresis_per_12_months = 0;
        policy.donor.max_hes_ml_per_12_months = 0;
        policy.donor.max_steroid_courses_per_12_months = 0;
        policy.donor.weeks_after_red_cell_loss = Some(u32::MAX);
        let history = [
            with_loss(WholeBlood, days(10_000), u32::MAX, false),
            with_loss(Plasma, days(1), u32::MAX, false),
            procedure(Leukapheresis, days(5000)),
            with_hes(days(2), u32::MAX),
            with_hes(days(3), u32::MAX),
        ];
        let e = evaluate(&donor(), &[], &history, &[], &[], at(), &policy);
        assert!(!e.eligible);
        let e = evaluate(&donor(), &[], &[], &[], &[], DateTime::<Utc>::MIN_UTC, &policy);
        assert_eq!(
            e.codes(),
            vec![
                TOO_YOUNG,
                LEUKAPHERESIS_LIMIT_12_MONTHS,
                PROCEDURES_PER_7_DAYS,
                HES_LIMIT_12_MONTHS,
                STEROID_COURSE_LIMIT_12_MONTHS
            ]
        );
    }

    fn arb_kind() -> impl Strategy<Value = ProcedureKind> {
        prop_oneof![
            Just(WholeBlood),
            Just(Platelets),
            Just(Plasma),
            Just(RedCells),
            Just(Leukapheresis)
        ]
    }

    fn arb_procedure() -> impl Strategy<Value = PastProcedure> {
        // From 30 days in the future to 400 days in the past, in minutes.
        (
            arb_kind(),
            -43_200i64..=576_000,
            prop::option::of(0u32..=500),
            any::<bool>(),
        )
            .prop_map(
                |(kind, minutes_ago, red_cell_loss_ml, red_cells_returned)| PastProcedure {
                    kind,
                    at: at() - TimeDelta::minutes(minutes_ago),
                    red_cell_loss_ml,
                    red_cells_returned,
                    hes_ml: (kind == Leukapheresis).then_some(500),
                },
            )
    }

    fn arb_deferral() -> impl Strategy<Value = Deferral> {
        (any::<bool>(), -1000i64..=1000, prop::option::of(-1000i64..=1000)).prop_map(|(permanent, start_h, until_h)| {
            Deferral {
                reason: "test".into(),
                permanent,
                starts_at: at() + TimeDelta::hours(start_h),
                until: until_h.map(|h| at() + TimeDelta::hours(h)),
            }
        })
    }

    const AGENTS: [&str; 2] = ["g-csf", "dexamethasone"];
    const ITEMS: [&str; 2] = ["diabetes", "splenomegaly"];

    fn arb_donor() -> impl Strategy<Value = DonorFacts> {
        (
            0i64..=36_500,
            any::<bool>(),
            prop::collection::vec((0usize..2, 0usize..2), 0..3),
        )
            .prop_map(|(age_days, active, flags)| DonorFacts {
                date_of_birth: at().date_naive() - TimeDelta::days(age_days),
                active,
                flagged_contraindications: flags
                    .into_iter()
                    .map(|(a, i)| ContraindicationFlag {
                        agent: AGENTS[a].into(),
                        item: ITEMS[i].into(),
                    })
                    .collect(),
            })
    }

    fn arb_planned() -> impl Strategy<Value = Vec<String>> {
        prop::sample::subsequence(AGENTS.to_vec(), 0..=2).prop_map(|v| v.into_iter().map(String::from).collect())
    }

    fn prop_policy() -> Policy {
        let mut policy = Policy::default();
        policy.donor.contraindications = vec![
            Contraindication {
                agent: "dexamethasone".into(),
                item: "diabetes".into(),
            },
            Contraindication {
                agent: "g-csf".into(),
                item: "splenomegaly".into(),
            },
        ];
        policy
    }

    /// `after` is at most as favourable: never eligible when `before` is not, no reason lost.
    fn never_better(before: &Eligibility, after: &Eligibility) -> Result<(), TestCaseError> {
        prop_assert!(before.eligible || !after.eligible);
        let after_codes = after.codes();
        for code in before.codes() {
            prop_assert!(after_codes.contains(&code), "{} lost", code);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn eligible_iff_no_reasons(
            facts in arb_donor(),
            deferrals in prop::collection::vec(arb_deferral(), 0..3),
            history in prop::collection::vec(arb_procedure(), 0..10),
            planned in arb_planned(),
        ) {
            let e = evaluate(&facts, &deferrals, &history, &[], &planned, at(), &prop_policy());
            prop_assert_eq!(e.eligible, e.reasons.is_empty());
        }

        #[test]
        fn adding_a_procedure_never_helps(
            facts in arb_donor(),
            deferrals in prop::collection::vec(arb_deferral(), 0..3),
            history in prop::collection::vec(arb_procedure(), 0..10),
            extra in arb_procedure(),
            position in any::<prop::sample::Index>(),
            planned in arb_planned(),
        ) {
            let policy = prop_policy();
            let before = evaluate(&facts, &deferrals, &history, &[], &planned, at(), &policy);
            let mut more = history.clone();
            more.insert(position.index(history.len() + 1), extra);
            let after = evaluate(&facts, &deferrals, &more, &[], &planned, at(), &policy);
            never_better(&before, &after)?;
        }
    }

    /// A birthday in `year`: 29 February falls on 1 March in common years.
    fn birthday_in(dob: NaiveDate, year: i32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, dob.month(), dob.day())
            .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
            .expect("a date")
    }

    fn reference_age(dob: NaiveDate, on: NaiveDate) -> i32 {
        let years = on.year() - dob.year();
        if on < birthday_in(dob, on.year()) {
            years - 1
        } else {
            years
        }
    }

    /// domain.md §2, one rule at a time, in report order (windows `(at - span, at]`).
    fn expected_codes(
        donor: &DonorFacts,
        deferrals: &[Deferral],
        history: &[PastProcedure],
        stimulations: &[GivenStimulation],
        planned: &[String],
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Vec<&'static str> {
        let d = &policy.donor;
        let mut out = Vec::new();
        let mut rule = |holds: bool, code| {
            if holds {
                out.push(code);
            }
        };
        rule(!donor.active, DONOR_INACTIVE);
        let age = reference_age(donor.date_of_birth, at.date_naive());
        rule(age < d.age_min as i32, TOO_YOUNG);
        rule(age > d.age_max as i32, TOO_OLD);
        for x in deferrals {
            let ended = !x.permanent && x.until.is_some_and(|u| u <= at);
            rule(x.starts_at <= at && !ended, DEFERRED);
        }
        let past = || history.iter().filter(|p| p.at <= at);
        let since = |p: &PastProcedure| at - p.at;
        let leuka = || past().filter(|p| p.kind == Leukapheresis);
        let hours = |n: u32| TimeDelta::hours(i64::from(n));
        let weeks = |n: u32| TimeDelta::weeks(i64::from(n));
        rule(
            leuka().filter(|p| since(p) < days(365)).count() >= d.max_leukapheresis_per_12_months as usize,
            LEUKAPHERESIS_LIMIT_12_MONTHS,
        );
        rule(
            leuka().any(|p| since(p) < hours(d.min_hours_between_leukapheresis)),
            LEUKAPHERESIS_INTERVAL,
        );
        rule(
            past().filter(|p| since(p) < days(7)).count() >= d.max_procedures_per_7_days as usize,
            PROCEDURES_PER_7_DAYS,
        );
        let interval = |p: &PastProcedure| {
            let equivalent = p
                .red_cell_loss_ml
                .is_some_and(|ml| ml >= d.max_red_cell_loss_ml_per_8_weeks);
            let required = if p.kind == WholeBlood {
                Some(d.weeks_after_whole_blood)
            } else if !equivalent {
                None
            } else if p.kind == RedCells && !p.red_cells_returned {
                Some(d.weeks_after_red_cell_loss_not_returned)
            } else {
                Some(d.weeks_after_red_cell_loss.unwrap_or(d.weeks_after_whole_blood))
            };
            required.is_some_and(|w| since(p) < weeks(w))
        };
        rule(past().any(interval), WHOLE_BLOOD_INTERVAL);
        let loss: u32 = past()
            .filter(|p| since(p) < days(56))
            .filter_map(|p| p.red_cell_loss_ml)
            .sum();
        rule(loss > d.max_red_cell_loss_ml_per_8_weeks, RED_CELL_LOSS_8_WEEKS);
        let hes: u32 = past().filter(|p| since(p) < days(365)).filter_map(|p| p.hes_ml).sum();
        rule(hes >= d.max_hes_ml_per_12_months, HES_LIMIT_12_MONTHS);
        let steroid = |s: &&GivenStimulation| {
            s.at <= at
                && at - s.at < days(365)
                && policy
                    .stimulation
                    .corticosteroid_agents
                    .iter()
                    .any(|a| a.to_lowercase() == s.agent.to_lowercase())
        };
        let mut linked: Vec<i64> = stimulations
            .iter()
            .filter(steroid)
            .filter_map(|s| s.collection_id)
            .collect();
        linked.sort_unstable();
        linked.dedup();
        let alone = stimulations
            .iter()
            .filter(steroid)
            .filter(|s| s.collection_id.is_none())
            .count();
        rule(
            linked.len() + alone >= d.max_steroid_courses_per_12_months as usize,
            STEROID_COURSE_LIMIT_12_MONTHS,
        );
        let same = |a: &str, b: &str| a.trim().to_lowercase() == b.trim().to_lowercase();
        // Agents also match across punctuation (`G-CSF` is `gcsf`).
        let agent = |a: &str| a.to_lowercase().replace(['-', '_', ' '], "");
        for c in &d.contraindications {
            let flagged = donor
                .flagged_contraindications
                .iter()
                .any(|f| agent(&f.agent) == agent(&c.agent) && same(&f.item, &c.item));
            rule(
                flagged && planned.iter().any(|a| agent(a) == agent(&c.agent)),
                CONTRAINDICATED_AGENT,
            );
        }
        out
    }

    /// Instants around `at` the rules compare against, or anywhere in 400 days.
    fn arb_ago() -> impl Strategy<Value = TimeDelta> {
        let edges = [0, 48 * 60, 7 * 1440, 28 * 1440, 56 * 1440, 365 * 1440];
        let near: Vec<i64> = edges.iter().flat_map(|e| [e - 1, *e, e + 1]).collect();
        prop_oneof![-43_200i64..=576_000, prop::sample::select(near)].prop_map(TimeDelta::minutes)
    }

    fn arb_history() -> impl Strategy<Value = Vec<PastProcedure>> {
        let one = (
            arb_kind(),
            arb_ago(),
            prop::option::of(prop_oneof![0u32..=500, Just(200)]),
            any::<bool>(),
            prop::option::of(prop_oneof![0u32..=1500, Just(500), Just(1000)]),
        )
            .prop_map(
                |(kind, ago, red_cell_loss_ml, red_cells_returned, hes_ml)| PastProcedure {
                    kind,
                    at: at() - ago,
                    red_cell_loss_ml,
                    red_cells_returned,
                    hes_ml,
                },
            );
        prop::collection::vec(one, 0..12)
    }

    /// Stimulations around the 365-day edge, for up to four collections or none.
    fn arb_stimulations() -> impl Strategy<Value = Vec<GivenStimulation>> {
        let one = (
            prop::sample::select(vec!["gcsf", "dexamethasone", "prednisone", "Dexamethasone"]),
            arb_ago(),
            prop::option::of(1i64..=4),
        )
            .prop_map(|(agent, ago, collection_id)| GivenStimulation {
                agent: agent.into(),
                at: at() - ago,
                collection_id,
            });
        prop::collection::vec(one, 0..16)
    }

    /// Birthdays near the 18th and 76th, 29 February, or any age to 100.
    fn arb_birth() -> impl Strategy<Value = NaiveDate> {
        let today = at().date_naive();
        prop_oneof![
            (prop::sample::select(vec![17, 18, 19, 75, 76, 77]), -2i64..=2).prop_map(move |(years, days)| birthday_in(
                today,
                today.year() - years
            )
                + TimeDelta::days(days)),
            prop::sample::select(vec![
                date(2004, 2, 29),
                date(2008, 2, 29),
                date(1952, 2, 29),
                date(1948, 2, 29)
            ]),
            (0i64..=36_500).prop_map(move |d| today - TimeDelta::days(d)),
        ]
    }

    fn arb_any_donor() -> impl Strategy<Value = DonorFacts> {
        (arb_donor(), arb_birth()).prop_map(|(d, date_of_birth)| DonorFacts { date_of_birth, ..d })
    }

    fn arb_any_deferrals(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Deferral>> {
        let edge = prop_oneof![Just(0i64), Just(-1), Just(1), -100_000i64..100_000].prop_map(TimeDelta::seconds);
        let one =
            (any::<bool>(), edge.clone(), prop::option::of(edge)).prop_map(|(permanent, start, until)| Deferral {
                reason: "test".into(),
                permanent,
                starts_at: at() + start,
                until: until.map(|u| at() + u),
            });
        prop::collection::vec(one, count)
    }

    fn arb_at() -> impl Strategy<Value = DateTime<Utc>> {
        // Across 29 February 2024 and a year either side of the fixed instant.
        (-500i64..=400).prop_map(|d| at() + TimeDelta::days(d))
    }

    /// Thresholds anywhere in the ranges `Policy::validate` accepts.
    fn arb_donor_policy() -> impl Strategy<Value = Policy> {
        (
            (16u32..=30, 60u32..=100, 1u32..=15, 1u32..=96),
            (1u32..=4, 1u32..=8, 0u32..=4, 50u32..=500),
            (prop::option::of(1u32..=8), 1u32..=8000, 1u32..=8),
        )
            .prop_map(
                |((age_min, age_max, per_year, gap), (per_week, wb_weeks, extra, ml), (loss_weeks, hes, courses))| {
                    let mut policy = prop_policy();
                    let d = &mut policy.donor;
                    d.age_min = age_min;
                    d.age_max = age_max;
                    d.max_leukapheresis_per_12_months = per_year;
                    d.min_hours_between_leukapheresis = gap;
                    d.max_procedures_per_7_days = per_week;
                    d.weeks_after_whole_blood = wb_weeks;
                    d.weeks_after_red_cell_loss_not_returned = wb_weeks + extra;
                    // Set, the equivalent-loss interval frees whole blood's from the ordering.
                    if let Some(w) = loss_weeks {
                        d.weeks_after_red_cell_loss = Some(w.min(wb_weeks + extra));
                        d.weeks_after_whole_blood = w;
                    }
                    d.max_red_cell_loss_ml_per_8_weeks = ml;
                    d.max_hes_ml_per_12_months = hes;
                    d.max_steroid_courses_per_12_months = courses;
                    policy
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn agrees_with_the_rule_table(
            facts in arb_any_donor(),
            deferrals in arb_any_deferrals(0..3),
            history in arb_history(),
            stimulations in arb_stimulations(),
            planned in arb_planned(),
            policy in prop_oneof![Just(prop_policy()), arb_donor_policy()],
        ) {
            prop_assert!(policy.validate().is_ok(), "{:?}", policy.validate());
            let e = evaluate(&facts, &deferrals, &history, &stimulations, &planned, at(), &policy);
            prop_assert_eq!(
                e.codes(),
                expected_codes(&facts, &deferrals, &history, &stimulations, &planned, at(), &policy)
            );
            prop_assert_eq!(e.eligible, e.reasons.is_empty());
            prop_assert!(e.reasons.iter().all(|r| !r.message.is_empty()));
        }

        #[test]
        fn age_is_whole_years_with_inclusive_bounds(dob in arb_birth(), when in arb_at()) {
            let age = age_on(dob, when.date_naive());
            prop_assert_eq!(age, reference_age(dob, when.date_naive()));
            let facts = DonorFacts { date_of_birth: dob, ..donor() };
            let codes = evaluate(&facts, &[], &[], &[], &[], when, &Policy::default()).codes();
            prop_assert_eq!(codes.is_empty(), (18..=75).contains(&age), "age {}: {:?}", age, codes);
            // One day later the donor is never younger.
            prop_assert!(age_on(dob, when.date_naive() + TimeDelta::days(1)) >= age);
        }

        #[test]
        fn a_longer_deferral_never_makes_a_donor_eligible_sooner(
            facts in arb_any_donor(),
            deferrals in arb_any_deferrals(1..4),
            history in arb_history(),
            which in any::<prop::sample::Index>(),
            extra_hours in 1i64..=2_000,
            when in arb_at(),
        ) {
            let policy = prop_policy();
            let mut longer = deferrals.clone();
            let d = &mut longer[which.index(deferrals.len())];
            d.until = d.until.map(|u| u + TimeDelta::hours(extra_hours));
            let before = evaluate(&facts, &deferrals, &history, &[], &[], when, &policy);
            let after = evaluate(&facts, &longer, &history, &[], &[], when, &policy);
            prop_assert!(before.eligible || !after.eligible);
            prop_assert!(after.codes().iter().filter(|c| **c == DEFERRED).count()
                >= before.codes().iter().filter(|c| **c == DEFERRED).count());
            // Open-ended or permanent: active from its start on, whenever evaluated.
            let open = Deferral { until: None, ..longer[which.index(deferrals.len())].clone() };
            prop_assert_eq!(open.is_active_at(when), open.starts_at <= when);
        }

        #[test]
        fn more_deferrals_flags_or_agents_never_help(
            facts in arb_any_donor(),
            deferrals in arb_any_deferrals(0..3),
            extra_deferrals in arb_any_deferrals(0..3),
            history in arb_history(),
            planned in arb_planned(),
            more_planned in arb_planned(),
            (agent, item) in (0usize..2, 0usize..2),
        ) {
            let policy = prop_policy();
            let before = evaluate(&facts, &deferrals, &history, &[], &planned, at(), &policy);
            let mut flagged = facts.clone();
            flagged.flagged_contraindications.push(ContraindicationFlag {
                agent: AGENTS[agent].into(),
                item: ITEMS[item].into(),
            });
            let all_deferrals: Vec<_> = deferrals.iter().chain(&extra_deferrals).cloned().collect();
            let all_planned: Vec<_> = planned.iter().chain(&more_planned).cloned().collect();
            let after = evaluate(&flagged, &all_deferrals, &history, &[], &all_planned, at(), &policy);
            never_better(&before, &after)?;
        }

        #[test]
        fn a_stricter_policy_never_helps(
            facts in arb_any_donor(),
            deferrals in arb_any_deferrals(0..3),
            history in arb_history(),
            stimulations in arb_stimulations(),
            planned in arb_planned(),
            policy in arb_donor_policy(),
            tighten in (0u32..=3, 0u32..=3, 0u32..=24, 0u32..=2, 0u32..=100, 0u32..=2000),
        ) {
            let (age, count, hours, weeks, ml, hes) = tighten;
            let mut strict = policy.clone();
            let d = &mut strict.donor;
            d.age_min += age;
            d.age_max -= age;
            d.max_leukapheresis_per_12_months = d.max_leukapheresis_per_12_months.saturating_sub(count).max(1);
            d.max_procedures_per_7_days = d.max_procedures_per_7_days.saturating_sub(count).max(1);
            d.min_hours_between_leukapheresis += hours;
            // Lengthening whole blood's interval also lengthens an equivalent loss's that follows it.
            d.weeks_after_whole_blood += weeks;
            d.weeks_after_red_cell_loss = d.weeks_after_red_cell_loss.map(|w| w + weeks);
            d.weeks_after_red_cell_loss_not_returned += weeks;
            // A lower ceiling also makes smaller losses count as a whole-blood donation.
            d.max_red_cell_loss_ml_per_8_weeks = d.max_red_cell_loss_ml_per_8_weeks.saturating_sub(ml).max(1);
            d.max_hes_ml_per_12_months = d.max_hes_ml_per_12_months.saturating_sub(hes).max(1);
            d.max_steroid_courses_per_12_months = d.max_steroid_courses_per_12_months.saturating_sub(count).max(1);
            let before = evaluate(&facts, &deferrals, &history, &stimulations, &planned, at(), &policy);
            let after = evaluate(&facts, &deferrals, &history, &stimulations, &planned, at(), &strict);
            never_better(&before, &after)?;
            // More agents counted as corticosteroids never help either.
            strict.stimulation.corticosteroid_agents.push("gcsf".into());
            let more = evaluate(&facts, &deferrals, &history, &stimulations, &planned, at(), &strict);
            never_better(&after, &more)?;
        }

        #[test]
        fn more_exposure_never_helps(
            facts in arb_any_donor(),
            history in arb_history(),
            stimulations in arb_stimulations(),
            extra in arb_stimulations(),
            which in any::<prop::sample::Index>(),
            hes in 0u32..=2000,
            policy in prop_oneof![Just(prop_policy()), arb_donor_policy()],
        ) {
            let before = evaluate(&facts, &[], &history, &stimulations, &[], at(), &policy);
            let all: Vec<_> = stimulations.iter().chain(&extra).cloned().collect();
            let after = evaluate(&facts, &[], &history, &all, &[], at(), &policy);
            never_better(&before, &after)?;
            if !history.is_empty() {
                let mut more = history.clone();
                let p = &mut more[which.index(history.len())];
                p.hes_ml = Some(p.hes_ml.unwrap_or(0).saturating_add(hes));
                let after = evaluate(&facts, &[], &more, &all, &[], at(), &policy);
                let before = evaluate(&facts, &[], &history, &all, &[], at(), &policy);
                never_better(&before, &after)?;
            }
        }

        #[test]
        fn only_the_windows_matter_not_order_or_old_or_future_history(
            facts in arb_any_donor(),
            history in arb_history(),
            stimulations in arb_stimulations(),
            seed in any::<u64>(),
        ) {
            let policy = prop_policy();
            let e = evaluate(&facts, &[], &history, &stimulations, &[], at(), &policy);
            // The longest look-back is 365 days (8 weeks for red cells not returned is shorter).
            let relevant: Vec<_> =
                history.iter().filter(|p| p.at <= at() && at() - p.at < days(365)).cloned().collect();
            let mut shuffled = relevant.clone();
            let turn = (seed as usize) % shuffled.len().max(1);
            shuffled.rotate_left(turn);
            shuffled.reverse();
            let mut given: Vec<_> =
                stimulations.iter().filter(|s| s.at <= at() && at() - s.at < days(365)).cloned().collect();
            let turn = (seed as usize) % given.len().max(1);
            given.rotate_left(turn);
            prop_assert_eq!(evaluate(&facts, &[], &shuffled, &given, &[], at(), &policy).codes(), e.codes());
        }
    }
}
