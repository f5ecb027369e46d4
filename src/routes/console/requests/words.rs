//! The request facts both request pages say in words: the group of record and its
//! confirmation, where samples and crossmatches stand, the units and the daily course.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{Markup, html};

use super::super::page;
use crate::domain::compatibility::{CrossmatchFacts, CrossmatchResult, Severity};
use crate::domain::course::{self, Course, CrossmatchState};
use crate::domain::group::GroupStatus;
use crate::domain::requests::{AllocationStatus, Priority, RequestStatus};
use crate::services::allocations::CrossmatchView;
use crate::services::decisions::FindingView;
use crate::services::patients::{GroupOfRecordView, PatientView, SampleView};
use crate::services::requests::RequestView;

/// An ABO/RhD pair as staff write it ("A RhD negative"); a part not known says so.
pub fn group_text(abo: Option<&str>, rhd: Option<&str>) -> String {
    format!("{} RhD {}", abo.unwrap_or("ABO unknown"), rhd.unwrap_or("unknown"))
}

fn status_word(s: GroupStatus) -> &'static str {
    match s {
        GroupStatus::Confirmed => "confirmed",
        GroupStatus::Unconfirmed => "not confirmed",
        GroupStatus::Untyped => "not typed",
        GroupStatus::Discordant => "typings disagree",
    }
}

/// The patient's blood group of record with its confirmation, in words (never colour alone).
pub fn group_of_record(g: &GroupOfRecordView) -> Markup {
    let typings = g.typings.len();
    let plural = if typings == 1 { "" } else { "s" };
    let group = group_text(g.abo.map(|a| a.as_str()), g.rhd.map(|r| r.as_str()));
    html! {
        span.group data-group-status=(g.status.as_str()) {
            @match g.status {
                GroupStatus::Confirmed => {
                    strong { (group) } " — "
                    span.badge.group-confirmed { "confirmed" }
                    " by two concordant typings of samples drawn at different times"
                }
                GroupStatus::Unconfirmed => {
                    strong { (group) } " — "
                    span.badge.group-unconfirmed { "not confirmed" }
                    " (" (typings) " typing" (plural) "; ABO " (status_word(g.abo_status)) ", RhD "
                    (status_word(g.rhd_status)) "): until a second sample confirms it, only group O units "
                    "are eligible and the patient counts as RhD negative"
                }
                GroupStatus::Untyped => {
                    span.badge.group-untyped { "not typed" }
                    " — the blood bank has not typed a sample yet: only group O units are eligible and "
                    "the patient counts as RhD negative"
                }
                GroupStatus::Discordant => {
                    span.badge.group-discordant { "typings disagree" }
                    " — ABO " (status_word(g.abo_status)) ", RhD " (status_word(g.rhd_status))
                    " over " (typings) " typing" (plural) ": only group O units until it is resolved"
                }
            }
        }
    }
}

/// The group the hospital declared, shown beside the group of record and never used.
pub fn declared_group(p: &PatientView) -> Markup {
    html! {
        span.declared {
            "Declared by the hospital: " (group_text(Some(p.abo.as_str()), Some(p.rhd.as_str())))
            " (shown only, never used to select units)"
        }
    }
}

/// When the transfusion is planned, as allocation judges it: `needed_by`, or now when later.
pub fn transfusion_at(r: &RequestView, now: DateTime<Utc>) -> DateTime<Utc> {
    r.needed_by.max(now)
}

/// The crossmatch facts of a patient's recorded crossmatches, as the rules read them.
pub fn crossmatch_facts(list: &[&CrossmatchView]) -> Vec<CrossmatchFacts> {
    list.iter()
        .map(|x| CrossmatchFacts {
            id: x.id,
            kind: x.kind,
            compatible: x.result == CrossmatchResult::Compatible,
            resolved: x.resolution.is_some(),
            sample_valid_until: x.valid_until,
        })
        .collect()
}

/// Where samples and crossmatches stand for the request's transfusion.
pub fn crossmatch_state(
    r: &RequestView,
    samples: &[&SampleView],
    crossmatches: &[&CrossmatchView],
    now: DateTime<Utc>,
) -> CrossmatchState {
    let valid: Vec<DateTime<Utc>> = samples.iter().map(|s| s.valid_until).collect();
    course::crossmatch_state(&valid, &crossmatch_facts(crossmatches), transfusion_at(r, now))
}

/// The crossmatch state in words.
pub fn crossmatch_words(s: &CrossmatchState, tz: Tz) -> Markup {
    let ready = s.sample_valid_until.is_some();
    html! {
        span.crossmatch data-valid-sample=(if ready { "yes" } else { "no" })
            data-compatible=(s.compatible) data-incompatible=(s.incompatible_standing) {
            @if let Some(until) = s.sample_valid_until {
                "Valid sample until " (page::local_time(until.naive_utc(), tz)) ". "
            } @else {
                span.badge.tier-block { "no valid sample" }
                " No sample valid at the transfusion time: a new sample is needed to crossmatch. "
            }
            (s.compatible) " compatible red-cell crossmatch" (if s.compatible == 1 { "" } else { "es" })
            " valid at the transfusion"
            @if s.leukocyte_compatible > 0 {
                ", " (s.leukocyte_compatible) " compatible leukocyte"
            }
            @if s.incompatible_standing > 0 {
                "; " span.badge.tier-block { (s.incompatible_standing) " incompatible standing" }
                " (blocks its unit until a medical director resolves it)"
            }
            "."
        }
    }
}

/// Units of the request by where they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitCounts {
    /// Allocated and not yet issued.
    pub allocated: u32,
    /// Issued or transfused.
    pub given: u32,
}

impl UnitCounts {
    pub fn of(r: &RequestView) -> Self {
        let mut c = Self::default();
        for entry in &r.course {
            match AllocationStatus::parse(&entry.status) {
                Some(AllocationStatus::Allocated) => c.allocated += 1,
                Some(AllocationStatus::Issued | AllocationStatus::Transfused) => c.given += 1,
                _ => {}
            }
        }
        c
    }

    /// Units that cover course days (allocated, issued or transfused).
    pub fn covering(self) -> u32 {
        self.allocated + self.given
    }
}

pub fn units_words(r: &RequestView, c: UnitCounts) -> Markup {
    html! {
        span.units data-requested=(r.units_requested) data-allocated=(c.allocated) data-issued=(c.given) {
            (r.units_requested) " requested · " (c.allocated) " allocated · " (c.given) " issued"
        }
    }
}

/// The request's daily course at `now`.
pub fn course_of(r: &RequestView, now: DateTime<Utc>) -> Course {
    course::course(r.needed_by, u32::try_from(r.units_requested).unwrap_or(0), now)
}

/// The course in one line: units due per course day, where the course stands, what is short.
pub fn course_words(c: &Course, counts: UnitCounts, tz: Tz) -> Markup {
    let days = c.days.len();
    html! {
        span.course data-days=(days) data-due=(c.due_by_now) {
            (course::UNITS_PER_DAY) " unit a day for " (days) " day" (if days == 1 { "" } else { "s" })
            @match c.today {
                Some(day) => { "; course day " (day) " of " (days) " now" }
                None if days > 0 && c.due_by_now > 0 => { "; every day is past" }
                None => {}
            }
            ". Due so far: " (c.due_by_now)
            @let short = c.short_by(counts.given);
            @if short > 0 {
                " · " span.badge.tier-authorise { (short) " due and not issued" }
            }
            @if let Some(next) = c.next_uncovered(counts.covering()) {
                " · next to cover: day " (next.day) ", " (page::local_time(next.due_at.naive_utc(), tz))
            } @else if days > 0 {
                " · every day covered"
            }
        }
    }
}

pub fn priority_word(p: Priority) -> &'static str {
    match p {
        Priority::Stat => "STAT",
        Priority::Asap => "ASAP",
        Priority::Routine => "Routine",
        Priority::Scheduled => "Scheduled",
    }
}

pub fn status_words(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::PendingApproval => "waiting for a medical director's approval",
        RequestStatus::Open => "open",
        RequestStatus::Fulfilled => "fulfilled",
        RequestStatus::Cancelled => "cancelled",
        RequestStatus::Declined => "declined",
    }
}

pub fn tier_word(s: Severity) -> &'static str {
    match s {
        Severity::Info => "information",
        Severity::Acknowledge => "needs acknowledgement",
        Severity::Authorise => "needs authorisation",
        Severity::Block => "blocks",
    }
}

/// Findings with their tier, code and message, as every request-page table lists them.
pub fn findings_list(list: &[FindingView]) -> Markup {
    html! {
        @if list.is_empty() {
            span.muted { "none" }
        } @else {
            ul.findings {
                @for f in list {
                    li class=(format!("finding tier-{}", f.severity.as_str())) data-code=(f.code) data-tier=(f.severity.as_str()) {
                        strong.tier { (f.severity.as_str()) } " "
                        code { (f.code) } " " (f.message)
                        " " span.tier-meaning { "(" (tier_word(f.severity)) ")" }
                    }
                }
            }
        }
    }
}
