//! The request page's "Course plan" section: the request's latest plan (`course_plans::latest`,
//! as `GET /api/v1/requests/{id}/plan`) day by day, and for staff the forms that propose a plan
//! and book the proposal (as `POST /requests/{id}/plan` and `/plan/accept`).

use std::collections::{BTreeSet, HashMap};

use chrono_tz::Tz;
use maud::{Markup, html};

use super::super::ConsoleUser;
use super::super::page;
use super::may_allocate;
use super::words::findings_list;
use crate::domain::requests::RequestStatus;
use crate::domain::scheduling::CollectionStatus;
use crate::error::{ApiResult, ErrorCode};
use crate::services::course_plans::{self as plan_work, CoursePlanView, DayKind, PlanDayView};
use crate::services::donors as donor_work;
use crate::services::requests::RequestView;
use crate::store::{DbConn, devices};

/// The latest plan with the names its days refer to.
pub struct PlanPart {
    pub plan: Option<CoursePlanView>,
    /// Device id → name, for the slots.
    pub devices: HashMap<i64, String>,
    /// Donor id → donor number: the plan names only the donors it proposes, not those of the
    /// collections it keeps.
    pub donors: HashMap<i64, String>,
}

pub fn load(conn: &mut DbConn, request_id: i64) -> ApiResult<PlanPart> {
    let plan = match plan_work::latest(conn, request_id) {
        Ok(plan) => Some(plan),
        // The request exists (the page read it first): no plan was proposed yet.
        Err(err) if err.code() == ErrorCode::NotFound => None,
        Err(err) => return Err(err),
    };
    let days = plan.as_ref().map_or(&[][..], |p| p.days.as_slice());
    let device_ids: BTreeSet<i64> = days
        .iter()
        .filter_map(|d| d.collection.as_ref().map(|c| c.device_id))
        .collect();
    let mut names = HashMap::new();
    for id in device_ids {
        if let Some(d) = devices::find(conn, id)? {
            names.insert(id, d.name);
        }
    }
    let unnamed: Vec<i64> = days
        .iter()
        .filter(|d| d.donor_number.is_none())
        .filter_map(|d| d.donor_id)
        .collect();
    let donors = if unnamed.is_empty() {
        HashMap::new()
    } else {
        donor_work::get_many(conn, &unnamed)?
            .into_iter()
            .map(|d| (d.id, d.donor_number))
            .collect()
    };
    Ok(PlanPart {
        plan,
        devices: names,
        donors,
    })
}

fn status_words(status: &str) -> &'static str {
    match status {
        "proposed" => "not booked yet",
        "accepted" => "booked and in force",
        _ => "a later plan replaced it",
    }
}

fn kind_str(kind: DayKind) -> &'static str {
    match kind {
        DayKind::Allocated => "allocated",
        DayKind::Booked => "booked",
        DayKind::Unit => "unit",
        DayKind::Donor => "donor",
        DayKind::Uncovered => "uncovered",
    }
}

fn collection_status_words(s: CollectionStatus) -> &'static str {
    match s {
        CollectionStatus::Scheduled => "booked",
        CollectionStatus::InProgress => "in progress",
        CollectionStatus::Completed => "completed",
        CollectionStatus::Aborted => "aborted",
    }
}

pub fn render(part: &PlanPart, r: &RequestView, who: &ConsoleUser, tz: Tz) -> Markup {
    let plannable = matches!(r.status, RequestStatus::Open | RequestStatus::PendingApproval);
    html! {
        section #plan-section aria-labelledby="plan-title" {
            h2 #plan-title { "Course plan" }
            @match &part.plan {
                None => { p #no-plan { "No course plan yet." } }
                Some(plan) => { (plan_facts(plan, tz)) (days_table(part, plan, r, tz)) }
            }
            @if may_allocate(who) {
                (forms(part.plan.as_ref(), r, who, plannable))
            }
        }
    }
}

fn plan_facts(plan: &CoursePlanView, tz: Tz) -> Markup {
    let s = &plan.score;
    html! {
        dl.facts #plan-facts data-plan-id=(plan.id) data-status=(plan.status) {
            dt { "Plan" }
            dd {
                (plan.id)
                @if let Some(before) = plan.repairs_plan_id { " (repairs plan " (before) ")" }
            }
            dt { "Status" } dd.status { (plan.status) " — " (status_words(&plan.status)) }
            dt { "Proposed by" } dd { (plan.proposed_by) " · " (page::local_time(plan.proposed_at.naive_utc(), tz)) }
            @if let (Some(by), Some(at)) = (&plan.accepted_by, plan.accepted_at) {
                dt { "Booked by" } dd { (by) " · " (page::local_time(at.naive_utc(), tz)) }
            }
            dt { "Score" }
            dd {
                (s.uncovered_days) " day(s) uncovered; "
                @if plan.repairs_plan_id.is_some() { (s.changed_days) " kept day(s) changed; " }
                (s.findings_above_info) " finding(s) above info; "
                (s.abo_non_identical) " ABO non-identical; " (s.cmv_unmatched) " CMV unmatched; "
                (s.repeat_pairs) " repeated donor(s)"
                @if !plan.proven_optimal { " " span.badge.tier-acknowledge { "best found, not proven optimal" } }
                " (" (plan.donors_considered) " donors considered)"
            }
        }
    }
}

fn days_table(part: &PlanPart, plan: &CoursePlanView, r: &RequestView, tz: Tz) -> Markup {
    // For the plan in force, each day's collection as booked and its status now (the stored
    // proposal names only the collections it kept).
    let booked: HashMap<u32, (i64, Option<CollectionStatus>)> = r
        .plan
        .iter()
        .filter(|p| p.plan_id == plan.id)
        .flat_map(|p| p.days.iter())
        .filter_map(|d| Some((d.day, (d.collection_id?, d.collection_status))))
        .collect();
    html! {
        table #plan-days {
            caption { "The course's remaining days and what covers each, in plan " (plan.id) }
            thead {
                tr {
                    th scope="col" { "Day" } th scope="col" { "Date" } th scope="col" { "Covered by" }
                    th scope="col" { "Donor" } th scope="col" { "Device and slot" } th scope="col" { "Stimulation" }
                    th scope="col" { "Findings" } th scope="col" { "Notes" }
                }
            }
            tbody {
                @if plan.days.is_empty() { tr { td colspan="8" { "No day of the course is still to come." } } }
                @for d in &plan.days { (day_row(part, d, booked.get(&d.day).copied(), tz)) }
            }
        }
    }
}

fn day_row(part: &PlanPart, d: &PlanDayView, booked: Option<(i64, Option<CollectionStatus>)>, tz: Tz) -> Markup {
    let collection = booked.map(|b| b.0).or(d.collection_id);
    let status = booked.and_then(|b| b.1);
    let donor = d
        .donor_number
        .as_deref()
        .or_else(|| d.donor_id.and_then(|id| part.donors.get(&id).map(String::as_str)));
    html! {
        tr data-day=(d.day) data-kind=(kind_str(d.kind)) data-changed[d.changed] {
            th scope="row" { "Day " (d.day) }
            td {
                time datetime=(d.date.to_string()) { (d.date.format("%a %d %b").to_string()) }
                " · transfusion " (page::local_clock(d.transfuse_at.naive_utc(), tz))
            }
            td.covered {
                @match d.kind {
                    DayKind::Allocated => { "allocated" }
                    DayKind::Booked => { "booked collection" }
                    DayKind::Unit => {
                        "unit "
                        @if let Some(id) = d.unit_id {
                            a href=(format!("/console/units/{id}")) {
                                @if let Some(din) = &d.din { span.din { (din) } } @else { (id) }
                            }
                        }
                    }
                    DayKind::Donor => { "donor" }
                    DayKind::Uncovered => { span.badge.tier-block { "uncovered" } }
                }
                @if let Some(c) = collection {
                    " · " span.collection data-collection-id=(c) {
                        "collection " (c)
                        @if let Some(s) = status { " (" (collection_status_words(s)) ")" }
                    }
                }
            }
            td.donor { @if let Some(n) = donor { span.din { (n) } } @else { "—" } }
            td.slot {
                @if let Some(c) = &d.collection {
                    @match part.devices.get(&c.device_id) {
                        Some(name) => { (name) }
                        None => { "device " (c.device_id) }
                    }
                    " · " (page::local_time(c.start.naive_utc(), tz)) "–" (page::local_clock(c.end.naive_utc(), tz))
                } @else { "—" }
            }
            td.stimulation {
                @if let Some(at) = d.stimulation_at {
                    (page::local_time(at.naive_utc(), tz))
                    @if !d.stimulations.is_empty() {
                        " " span.muted {
                            "(" @for (i, s) in d.stimulations.iter().enumerate() { @if i > 0 { ", " } (s.agent) } ")"
                        }
                    }
                } @else { "—" }
            }
            td.findings { @if d.verdict.is_some() { (findings_list(&d.findings)) } @else { "—" } }
            td.notes {
                @if d.changed { span.badge.tier-authorise { "changed" } " " }
                @if let Some(old) = d.replaces_collection_id {
                    span.moves data-replaces-collection-id=(old) { "moves collection " (old) " (aborted when booked)" } " "
                }
                @if let Some(u) = &d.uncovered_reason { code { (u.code) } " " (u.message) }
            }
        }
    }
}

fn forms(plan: Option<&CoursePlanView>, r: &RequestView, who: &ConsoleUser, plannable: bool) -> Markup {
    let proposed = plan.filter(|p| p.status == "proposed");
    // The service refuses a plan that books nothing (no donor day, no repair).
    let bookable = proposed.filter(|p| p.repairs_plan_id.is_some() || p.days.iter().any(|d| d.kind == DayKind::Donor));
    html! {
        div.plan-forms {
            @if plannable {
                @if r.plan.is_some() {
                    p.hint {
                        "A plan is in force: a new proposal keeps every day whose booking still holds "
                        "and plans only the days that broke."
                    }
                }
                form.propose-plan.stack method="post" action=(format!("/console/requests/{}/plan", r.id)) {
                    (page::csrf_field(who))
                    button type="submit" { "Propose plan" }
                }
            } @else {
                p.muted { "The request is closed; there is no course to plan." }
            }
            @match (proposed, bookable) {
                (Some(_), None) => { p.hint { "This plan books nothing: no day needs a donor." } }
                (Some(p), Some(_)) if r.status != RequestStatus::Open => {
                    p.hint { "Plan " (p.id) " is booked once the request is open." }
                }
                (Some(p), Some(_)) => {
                    form.book-plan.stack method="post" action=(format!("/console/requests/{}/plan/accept", r.id)) {
                        (page::csrf_field(who))
                        input type="hidden" name="plan_id" value=(p.id);
                        button type="submit" { "Book this plan" }
                    }
                }
                _ => {}
            }
        }
    }
}
