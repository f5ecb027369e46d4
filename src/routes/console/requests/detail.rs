//! `GET /console/requests/{id}`: one request with its patient, samples and crossmatches, its
//! allocations (issue by scanning the DIN) and its candidates with their findings (allocate
//! with the acknowledgement or authorisation their tiers need).
//!
//! Read through the same services as `GET /api/v1/requests/{id}`, `/patients/{id}`,
//! `/patients/{id}/samples`, `/crossmatches?patient_id=`, `/allocations/{id}` and
//! `/requests/{id}/candidates` (with the API's default of 20 candidates).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{Markup, html};

use super::super::ConsoleUser;
use super::super::page;
use super::words::{self, UnitCounts, findings_list};
use super::{AUTHORISER_ROLES, may_allocate, may_decide};
use crate::domain::compatibility::{Severity, Verdict};
use crate::domain::policy::Policy;
use crate::domain::requests::{
    AllocationAction, AllocationStatus, RequestAction, RequestStatus, next_allocation_status, next_request_status,
};
use crate::error::{ApiError, ApiResult};
use crate::services::allocations::{self as allocation_work, AllocationView, CrossmatchView, FindingView};
use crate::services::candidates::{self as matching, Candidates, DonorCandidateView, UnitCandidateView};
use crate::services::patients::{self, PatientView, SampleView};
use crate::services::requests::{self as work, RequestView};
use crate::services::utc;
use crate::store::hospitals::Hospital;
use crate::store::{self, DbConn};

/// Candidates shown (the API's default).
const CANDIDATES: usize = 20;
/// Crossmatches of the patient shown (the API's largest page).
const CROSSMATCHES: i64 = 500;

pub struct RequestPage {
    pub request: RequestView,
    pub patient: PatientView,
    pub hospital: Hospital,
    pub samples: Vec<SampleView>,
    pub crossmatches: Vec<CrossmatchView>,
    pub allocations: Vec<AllocationView>,
    /// For requests still to serve (open or waiting for approval).
    pub candidates: Option<Candidates>,
    /// The latest course plan.
    pub plan: super::plan::PlanPart,
    pub now: DateTime<Utc>,
}

pub fn load(conn: &mut DbConn, id: i64, policy: &Policy) -> ApiResult<RequestPage> {
    let now = utc(store::now());
    let request = work::get(conn, id, None, policy)?;
    let patient = patients::get(conn, request.patient_id, None, policy)?;
    let hospital = crate::accounts::hospital(conn, request.hospital_id)?;
    let samples = patients::samples(conn, request.patient_id, None)?;
    let (crossmatches, _) = allocation_work::crossmatches(conn, None, Some(request.patient_id), None, CROSSMATCHES)?;
    let allocations = request
        .course
        .iter()
        .map(|e| allocation_work::get(conn, e.allocation_id, None))
        .collect::<ApiResult<Vec<_>>>()?;
    let candidates = if matches!(request.status, RequestStatus::Open | RequestStatus::PendingApproval) {
        Some(matching::candidates(conn, id, None, CANDIDATES, policy, None)?)
    } else {
        None
    };
    let plan = super::plan::load(conn, id)?;
    Ok(RequestPage {
        request,
        patient,
        hospital,
        samples,
        crossmatches,
        allocations,
        candidates,
        plan,
        now,
    })
}

/// What an authorisation form held when it was posted (shown again after a refusal).
#[derive(Debug, Clone, Default)]
pub struct AuthEcho {
    pub by: String,
    pub role: String,
    pub reason: String,
}

/// The allocate form that was posted.
#[derive(Debug, Clone, Default)]
pub struct AllocateEcho {
    pub unit_id: i64,
    pub acknowledged: Vec<String>,
    pub auth: AuthEcho,
}

/// The issue form that was posted.
#[derive(Debug, Clone, Default)]
pub struct IssueEcho {
    pub allocation_id: i64,
    pub acknowledged: Vec<String>,
    pub auth: AuthEcho,
}

/// What the page shows besides the request: a confirmation, or a refusal with the form that
/// was refused.
#[derive(Debug, Default)]
pub struct Echo {
    pub done: Option<String>,
    pub refusal: Option<ApiError>,
    pub allocate: Option<AllocateEcho>,
    pub issue: Option<IssueEcho>,
}

pub fn title(p: &RequestPage) -> String {
    format!("Request {} · MRN {}", p.request.id, p.patient.mrn)
}

pub fn render(p: &RequestPage, who: &ConsoleUser, tz: Tz, echo: &Echo) -> Markup {
    html! {
        @if let Some(err) = &echo.refusal { (page::refusal(err)) }
        (page::notice(echo.done.as_deref()))
        p { a href="/console/requests" { "All requests" } }
        (request_facts(p, who, tz))
        (patient_facts(p, tz))
        (course_table(p, tz))
        (super::plan::render(&p.plan, &p.request, who, tz))
        (samples_tables(p, tz))
        (allocations_table(p, who, tz, echo))
        (candidates_table(p, who, tz, echo))
        (donors_table(p, tz))
        (page::zone_note(tz))
    }
}

fn request_facts(p: &RequestPage, who: &ConsoleUser, tz: Tz) -> Markup {
    let r = &p.request;
    let counts = UnitCounts::of(r);
    let course = words::course_of(r, p.now);
    html! {
        section #request aria-labelledby="request-title" {
            h2 #request-title { "Request" }
            dl.facts #request-facts data-request-id=(r.id) data-status=(r.status.as_str()) data-priority=(r.priority.as_str()) {
                dt { "Status" } dd.status { (words::status_words(r.status)) }
                dt { "Priority" } dd.priority { (words::priority_word(r.priority)) }
                dt { "Needed by" } dd.needed-by { (page::local_time(r.needed_by.naive_utc(), tz)) }
                dt { "Units" } dd { (words::units_words(r, counts)) }
                dt { "Course" } dd { (words::course_words(&course, counts, tz)) }
                dt { "Indication" }
                dd {
                    (r.indication.infection) "; ANC " (r.indication.anc_per_ul) " /µL; refractory for "
                    (r.indication.refractory_hours) " h"
                    @if r.within_indication { " (within the policy's indication)" } @else { " (outside the policy's indication)" }
                }
                @if !r.approval_reasons.is_empty() {
                    dt { "Why approval is needed" }
                    dd { ul { @for reason in &r.approval_reasons { li { code { (reason.code) } " " (reason.message) } } } }
                }
                dt { "Requirements" }
                dd {
                    "irradiated"
                    @if r.requirements.cmv_negative == Some(true) { "; CMV-negative units only" }
                    @if r.requirements.hla_compatible == Some(true) { "; HLA-compatible units only" }
                }
                dt { "Requested by" } dd { (r.requested_by) " · " (page::local_time(r.created_at.naive_utc(), tz)) }
                @if let Some(order) = &r.order_identifier {
                    dt { "Hospital order" } dd { (order.value) }
                }
                @if let Some(by) = &r.decided_by {
                    dt { "Decided by" }
                    dd {
                        (by)
                        @if let Some(at) = r.decided_at { " · " (page::local_time(at.naive_utc(), tz)) }
                        @if let Some(reason) = &r.decision_reason { " · " (reason) }
                    }
                }
                @if let Some(by) = &r.cancelled_by {
                    dt { "Cancelled by" }
                    dd { (by) @if let Some(reason) = &r.cancel_reason { " · " (reason) } }
                }
            }
            @if next_request_status(r.status, RequestAction::Approve).is_some() {
                @if may_decide(who) {
                    (decision_forms(r, who))
                } @else {
                    p.hint { "A medical director approves or declines this request; units are allocated once it is open." }
                }
            }
        }
    }
}

fn decision_forms(r: &RequestView, who: &ConsoleUser) -> Markup {
    html! {
        div.decisions {
            form.approve.stack method="post" action=(format!("/console/requests/{}/approve", r.id)) {
                (page::csrf_field(who))
                label for="approve-reason" { "Approval note (optional)" }
                textarea #approve-reason name="reason" maxlength="500" rows="2" {}
                button type="submit" { "Approve request " (r.id) }
            }
            form.decline.stack method="post" action=(format!("/console/requests/{}/decline", r.id)) {
                (page::csrf_field(who))
                label for="decline-reason" { "Reason for declining (required)" }
                textarea #decline-reason name="reason" maxlength="500" rows="2" {}
                button.secondary type="submit" { "Decline request " (r.id) }
            }
        }
    }
}

fn patient_facts(p: &RequestPage, tz: Tz) -> Markup {
    let pt = &p.patient;
    html! {
        section #patient aria-labelledby="patient-title" {
            h2 #patient-title { "Patient" }
            dl.facts #patient-facts data-patient-id=(pt.id) {
                dt { "MRN" } dd.mrn { (pt.mrn) }
                dt { "Name" } dd { (pt.family_name) ", " (pt.given_name) }
                dt { "Hospital" } dd { (p.hospital.name) " (" (p.hospital.code) ")" }
                dt { "Born" } dd { (pt.date_of_birth.format("%d %b %Y").to_string()) " · " (pt.sex.as_str()) " · " (pt.weight_kg) " kg" }
                dt { "Group of record" } dd #group-of-record { (words::group_of_record(&pt.group_of_record)) }
                dt { "Declared group" } dd { (words::declared_group(pt)) }
                dt { "CMV" } dd { (pt.cmv.as_str()) }
                dt { "Antibodies" }
                dd {
                    @if pt.hla_antibodies.is_empty() { "no HLA antibodies recorded" }
                    @else { "HLA: " (pt.hla_antibodies.join(", ")) }
                    @if pt.granulocyte_antibodies { "; granulocyte (HNA) antibodies" }
                }
                @if pt.childbearing_potential {
                    dt { "Childbearing potential" } dd { "yes (RhD-positive units need authorisation and an anti-D task)" }
                }
            }
            @if !pt.group_of_record.typings.is_empty() {
                table #typings {
                    caption { "The blood bank's typings, oldest first" }
                    thead { tr { th scope="col" { "Sample" } th scope="col" { "Drawn" } th scope="col" { "ABO/RhD" } th scope="col" { "Typed by" } } }
                    tbody {
                        @for t in &pt.group_of_record.typings {
                            tr {
                                td { (t.sample_id) }
                                td { (page::local_time(t.drawn_at.naive_utc(), tz)) }
                                td { (words::group_text(Some(t.abo.as_str()), Some(t.rhd.as_str()))) }
                                td { (t.typed_by) " · " (page::local_time(t.typed_at.naive_utc(), tz)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn course_table(p: &RequestPage, tz: Tz) -> Markup {
    let course = words::course_of(&p.request, p.now);
    // Units that cover course days, in the order they were allocated.
    let covering: Vec<&AllocationView> = p
        .allocations
        .iter()
        .filter(|a| {
            matches!(
                a.status,
                AllocationStatus::Allocated | AllocationStatus::Issued | AllocationStatus::Transfused
            )
        })
        .collect();
    let mut next = covering.iter();
    html! {
        section #course aria-labelledby="course-title" {
            h2 #course-title { "Course: units due per day" }
            table #course-days {
                caption { (crate::domain::course::UNITS_PER_DAY) " unit a day from when the first is needed" }
                thead { tr { th scope="col" { "Day" } th scope="col" { "Due" } th scope="col" { "Units due" } th scope="col" { "Covered by" } } }
                tbody {
                    @for d in &course.days {
                        @let cover: Vec<&&AllocationView> = next.by_ref().take(usize::try_from(d.units).unwrap_or(0)).collect();
                        tr data-day=(d.day) data-today[course.today == Some(d.day)] {
                            th scope="row" {
                                "Day " (d.day)
                                @if course.today == Some(d.day) { " " span.badge { "today" } }
                            }
                            td { (page::local_time(d.due_at.naive_utc(), tz)) }
                            td { (d.units) }
                            td {
                                @if cover.is_empty() {
                                    @if d.due_at <= p.now { span.badge.tier-authorise { "due, not covered" } } @else { "not yet covered" }
                                }
                                @for a in cover { span.din { (a.din) } " (" (a.status.as_str()) ") " }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The DIN of a unit the page knows (allocated to the request, or a candidate).
fn din_of(p: &RequestPage, unit_id: i64) -> Option<&str> {
    p.allocations
        .iter()
        .find(|a| a.unit_id == unit_id)
        .map(|a| a.din.as_str())
        .or_else(|| {
            p.candidates
                .as_ref()
                .and_then(|c| c.units.iter().find(|u| u.unit_id == unit_id))
                .map(|u| u.din.as_str())
        })
}

fn samples_tables(p: &RequestPage, tz: Tz) -> Markup {
    let samples: Vec<&SampleView> = p.samples.iter().collect();
    let crossmatches: Vec<&CrossmatchView> = p.crossmatches.iter().collect();
    let state = words::crossmatch_state(&p.request, &samples, &crossmatches, p.now);
    let transfusion = words::transfusion_at(&p.request, p.now);
    html! {
        section #samples-and-crossmatches aria-labelledby="samples-title" {
            h2 #samples-title { "Samples and crossmatches" }
            p #crossmatch-state { (words::crossmatch_words(&state, tz)) }
            table #samples {
                caption { "Samples of the patient (crossmatches are valid while their sample is)" }
                thead { tr { th scope="col" { "Sample" } th scope="col" { "Drawn" } th scope="col" { "Valid until" } th scope="col" { "At the transfusion" } } }
                tbody {
                    @if p.samples.is_empty() { tr { td colspan="4" { "No sample recorded." } } }
                    @for s in &p.samples {
                        tr data-sample-id=(s.id) {
                            th scope="row" { (s.id) }
                            td { (page::local_time(s.drawn_at.naive_utc(), tz)) }
                            td { (page::local_time(s.valid_until.naive_utc(), tz)) }
                            td { @if s.valid_until >= transfusion { "valid" } @else { "no longer valid" } }
                        }
                    }
                }
            }
            table #crossmatches {
                caption { "Crossmatches recorded against the patient's samples" }
                thead { tr { th scope="col" { "Unit" } th scope="col" { "Kind" } th scope="col" { "Result" } th scope="col" { "Method" } th scope="col" { "Performed" } th scope="col" { "Sample valid until" } } }
                tbody {
                    @if p.crossmatches.is_empty() { tr { td colspan="6" { "No crossmatch recorded." } } }
                    @for x in &p.crossmatches {
                        tr data-crossmatch-id=(x.id) data-result=(x.result.as_str()) {
                            th scope="row" {
                                a href=(format!("/console/units/{}", x.unit_id)) {
                                    @if let Some(din) = din_of(p, x.unit_id) { span.din { (din) } } @else { "unit " (x.unit_id) }
                                }
                            }
                            td { (x.kind.as_str().replace('_', "-")) }
                            td {
                                (x.result.as_str())
                                @if let Some(res) = &x.resolution { " (resolved by " (res.resolved_by) ": " (res.reason) ")" }
                                @else if x.result == crate::domain::compatibility::CrossmatchResult::Incompatible { " " span.badge.tier-block { "stands" } }
                            }
                            td { (x.method) }
                            td { (x.performed_by) " · " (page::local_time(x.performed_at.naive_utc(), tz)) }
                            td { (page::local_time(x.valid_until.naive_utc(), tz)) }
                        }
                    }
                }
            }
        }
    }
}

fn ack_boxes(id_prefix: &str, findings: &[(&str, &str)], checked: &[String]) -> Markup {
    html! {
        @for (code, message) in findings {
            @let id = format!("{id_prefix}-ack-{code}");
            div.ack {
                input #(id) type="checkbox" name="acknowledge" value=(code) checked[checked.iter().any(|c| c == code)];
                " "
                label for=(id) { "Acknowledge " code { (code) } ": " (message) }
            }
        }
    }
}

fn authorisation_fields(id_prefix: &str, codes: &[&str], echo: Option<&AuthEcho>) -> Markup {
    let blank = AuthEcho::default();
    let e = echo.unwrap_or(&blank);
    let (by, role, reason) = (
        format!("{id_prefix}-auth-by"),
        format!("{id_prefix}-auth-role"),
        format!("{id_prefix}-auth-reason"),
    );
    html! {
        fieldset.authorisation {
            legend { "Authorisation for " @for (i, c) in codes.iter().enumerate() { @if i > 0 { ", " } code { (c) } } }
            p.hint {
                "Record who authorised this unit (usually the on-call haematologist, by phone); it is "
                "recorded as authorised now, and a medical director signs it off afterwards."
            }
            label for=(by) { "Authorising physician" }
            input #(by) type="text" name="auth_by" maxlength="200" autocomplete="off" value=(e.by);
            label for=(role) { "Their role" }
            select #(role) name="auth_role" {
                option value="" selected[e.role.is_empty()] { "Choose a role" }
                @for r in AUTHORISER_ROLES {
                    option value=(r) selected[e.role == *r] { (r) }
                }
            }
            label for=(reason) { "Reason" }
            textarea #(reason) name="auth_reason" maxlength="500" rows="2" { (e.reason) }
        }
    }
}

fn allocations_table(p: &RequestPage, who: &ConsoleUser, tz: Tz, echo: &Echo) -> Markup {
    let issuable =
        |a: &AllocationView| next_allocation_status(a.status, AllocationAction::Issue).is_some() && may_allocate(who);
    // The scan field that takes the focus: the one just refused, else the first.
    let focus = echo
        .issue
        .as_ref()
        .and_then(|e| p.allocations.iter().find(|a| a.id == e.allocation_id && issuable(a)))
        .or_else(|| p.allocations.iter().find(|a| issuable(a)))
        .map(|a| a.id);
    html! {
        section #allocations-section aria-labelledby="allocations-title" {
            h2 #allocations-title { "Allocations" }
            table #allocations {
                caption { "Units allocated to this request; issue one by scanning its bag" }
                thead {
                    tr {
                        th scope="col" { "DIN" } th scope="col" { "Status" } th scope="col" { "Allocated" }
                        th scope="col" { "Issued" } th scope="col" { "Findings accepted" } th scope="col" { "Issue" }
                    }
                }
                tbody {
                    @if p.allocations.is_empty() { tr { td colspan="6" { "Nothing allocated yet." } } }
                    @for a in &p.allocations {
                        tr data-allocation-id=(a.id) data-status=(a.status.as_str()) data-din=(a.din) {
                            th scope="row" { a.din href=(format!("/console/units/{}", a.unit_id)) { (a.din) } }
                            td.status { (a.status.as_str()) }
                            td { (a.allocated_by) " · " (page::local_time(a.allocated_at.naive_utc(), tz)) }
                            td {
                                @if let Some(at) = a.issued_at {
                                    (a.issued_by.as_deref().unwrap_or("")) " · " (page::local_time(at.naive_utc(), tz))
                                } @else { "—" }
                            }
                            td {
                                (findings_list(&a.warnings))
                                @for auth in &a.acceptances.authorisations {
                                    p.authorised {
                                        "Authorised by " (auth.by) " (" (auth.role) "), recorded by " (auth.recorded_by)
                                        @if auth.signed_off { "; signed off" } @else { "; awaiting a medical director's sign-off" }
                                    }
                                }
                            }
                            td {
                                @if issuable(a) {
                                    (issue_form(a, who, focus == Some(a.id), echo.issue.as_ref().filter(|e| e.allocation_id == a.id), echo.refusal.as_ref()))
                                } @else if a.status == AllocationStatus::Allocated {
                                    "—"
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn issue_form(
    a: &AllocationView,
    who: &ConsoleUser,
    autofocus: bool,
    echo: Option<&IssueEcho>,
    refusal: Option<&ApiError>,
) -> Markup {
    let id = format!("scan-{}", a.id);
    let prefix = format!("issue-{}", a.id);
    // Findings that appeared since allocation are handled by their tier, as at allocation.
    let follow_up: Vec<(String, String)> = match (echo, refusal) {
        (Some(_), Some(err))
            if matches!(
                err.code(),
                crate::error::ErrorCode::AcknowledgementRequired | crate::error::ErrorCode::AuthorisationRequired
            ) =>
        {
            err.problem().reasons.into_iter().map(|r| (r.code, r.message)).collect()
        }
        _ => Vec::new(),
    };
    let needs_auth =
        refusal.is_some_and(|e| e.code() == crate::error::ErrorCode::AuthorisationRequired) && !follow_up.is_empty();
    let pairs: Vec<(&str, &str)> = follow_up.iter().map(|(c, m)| (c.as_str(), m.as_str())).collect();
    let codes: Vec<&str> = follow_up.iter().map(|(c, _)| c.as_str()).collect();
    html! {
        form.issue.stack method="post" action=(format!("/console/allocations/{}/issue", a.id)) {
            (page::csrf_field(who))
            label for=(id) { "Scan or type the DIN" }
            input #(id) type="text" name="scanned_din" autocomplete="off" autocapitalize="characters" spellcheck="false"
                maxlength="64" data-scan-autofocus[autofocus];
            @if !follow_up.is_empty() {
                (ack_boxes(&prefix, &pairs, echo.map(|e| e.acknowledged.as_slice()).unwrap_or(&[])))
            }
            @if needs_auth {
                (authorisation_fields(&prefix, &codes, echo.map(|e| &e.auth)))
            }
            button type="submit" { "Issue" }
        }
    }
}

fn verdict_words(v: Verdict) -> &'static str {
    match v {
        Verdict::Compatible => "compatible",
        Verdict::CompatibleWithWarnings => "compatible with findings to handle",
        Verdict::Incompatible => "incompatible",
    }
}

fn candidates_table(p: &RequestPage, who: &ConsoleUser, tz: Tz, echo: &Echo) -> Markup {
    let open = next_request_status(p.request.status, RequestAction::Allocate).is_some();
    html! {
        section #candidates-section aria-labelledby="candidates-title" {
            h2 #candidates-title { "Candidate units" }
            @match &p.candidates {
                None => { p.muted { "The request is " (words::status_words(p.request.status)) "; it takes no more units." } }
                Some(c) => {
                    @if !open {
                        p.hint { "Units are allocated once the request is open." }
                    }
                    table #candidates {
                        caption { "Available units ranked for this patient, best first, with every finding" }
                        thead {
                            tr {
                                th scope="col" { "DIN" } th scope="col" { "ABO/RhD" } th scope="col" { "Expires" }
                                th scope="col" { "Verdict" } th scope="col" { "Findings" } th scope="col" { "Allocate" }
                            }
                        }
                        tbody {
                            @if c.units.is_empty() { tr { td colspan="6" { "No available unit." } } }
                            @for u in &c.units {
                                (candidate_row(p, u, who, tz, open, echo))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn candidate_row(p: &RequestPage, u: &UnitCandidateView, who: &ConsoleUser, tz: Tz, open: bool, echo: &Echo) -> Markup {
    let of = |tier: Severity| -> Vec<&FindingView> { u.reasons.iter().filter(|f| f.severity == tier).collect() };
    let blocks = of(Severity::Block);
    let acks: Vec<(&str, &str)> = of(Severity::Acknowledge)
        .into_iter()
        .map(|f| (f.code.as_str(), f.message.as_str()))
        .collect();
    let auths: Vec<&str> = of(Severity::Authorise).into_iter().map(|f| f.code.as_str()).collect();
    let posted = echo.allocate.as_ref().filter(|e| e.unit_id == u.unit_id);
    let prefix = format!("unit-{}", u.unit_id);
    html! {
        tr data-unit-id=(u.unit_id) data-din=(u.din) data-verdict=(u.verdict.as_str()) {
            th scope="row" { a.din href=(format!("/console/units/{}", u.unit_id)) { (u.din) } }
            td { (words::group_text(Some(u.abo.as_str()), Some(u.rhd.as_str()))) }
            td { (page::local_time(u.expires_at.naive_utc(), tz)) }
            td.verdict { (verdict_words(u.verdict)) }
            td { (findings_list(&u.reasons)) }
            td {
                @if !blocks.is_empty() {
                    span.tier-block { "Blocked: cannot be allocated" }
                } @else if open && may_allocate(who) {
                    form.allocate.stack method="post" action=(format!("/console/requests/{}/allocate", p.request.id)) {
                        (page::csrf_field(who))
                        input type="hidden" name="unit_id" value=(u.unit_id);
                        (ack_boxes(&prefix, &acks, posted.map(|e| e.acknowledged.as_slice()).unwrap_or(&[])))
                        @if !auths.is_empty() {
                            (authorisation_fields(&prefix, &auths, posted.map(|e| &e.auth)))
                        }
                        button type="submit" { "Allocate " (u.din) }
                    }
                } @else {
                    span.muted { "—" }
                }
            }
        }
    }
}

fn donors_table(p: &RequestPage, tz: Tz) -> Markup {
    html! {
        @if let Some(c) = &p.candidates {
            section #donors-section aria-labelledby="donors-title" {
                h2 #donors-title { "Donors to stimulate for the next collection" }
                table #donor-candidates {
                    caption { "Judged for a collection at " (page::local_time(c.collection_at.naive_utc(), tz)) ", best first" }
                    thead {
                        tr {
                            th scope="col" { "Donor" } th scope="col" { "ABO/RhD" } th scope="col" { "CMV" }
                            th scope="col" { "Last stimulated" } th scope="col" { "Verdict" } th scope="col" { "Findings" }
                        }
                    }
                    tbody {
                        @if c.donors.is_empty() { tr { td colspan="6" { "No active donor." } } }
                        @for d in &c.donors { (donor_row(d, tz)) }
                    }
                }
            }
        }
    }
}

fn donor_row(d: &DonorCandidateView, tz: Tz) -> Markup {
    html! {
        tr data-donor-id=(d.donor_id) data-verdict=(d.verdict.as_str()) {
            th scope="row" { (d.donor_number) }
            td { (words::group_text(Some(d.abo.as_str()), Some(d.rhd.as_str()))) }
            td { (d.cmv.as_str()) }
            td { @if let Some(t) = d.last_stimulated_at { (page::local_time(t.naive_utc(), tz)) } @else { "never" } }
            td { (verdict_words(d.verdict)) }
            td { (findings_list(&d.reasons)) }
        }
    }
}
