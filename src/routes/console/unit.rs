//! A unit's page (`GET /console/units/{id}`, by id or DIN as the API takes it): its facts, its
//! trace from donor to recipient (the service behind `GET /api/v1/units/{id}/trace`) and a
//! preview of its label (the service behind `GET /api/v1/units/{id}/label`): the eye-readable
//! text and the four ISBT 128 data strings in the label's quadrants. Text only: the barcodes
//! themselves come later.

use actix_web::web;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::board::{countdown, group_markup, markers_markup, status_markup};
use super::page::{self, Nav};
use super::{ConsoleResult, ConsoleUser, html};
use crate::auth::Role;
use crate::input::UnitKey;
use crate::routes::with_policy;
use crate::services::trace::{Trace, TracedAllocation};
use crate::services::units::{self as units, Label, UnitView};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/units/{id}").route(web::get().to(show)));
}

async fn show(state: web::Data<AppState>, who: ConsoleUser, id: web::Path<String>) -> ConsoleResult {
    // The trace and the label are staff-only in the API.
    who.require(&Role::STAFF)?;
    let key = UnitKey::parse(&id)?;
    let facility = state.settings.facility_name.clone();
    let tz = state.settings.timezone;
    let (trace, label, thresholds, required) = state
        .db(with_policy(move |conn, policy| {
            let trace = crate::services::trace::unit_trace(conn, &key, policy)?;
            // A donation's DIN finds its pool: label the unit the trace found.
            let label = units::label(conn, &UnitKey::Id(trace.unit.id), &facility, tz, policy)?;
            Ok((
                trace,
                label,
                policy.alerts.expiry_thresholds_hours.clone(),
                policy.unit.required_markers.clone(),
            ))
        }))
        .await?;
    let u = &trace.unit;
    let now = Utc::now();
    let body = html! {
        @if let Some(member) = &trace.matched_member_din {
            p.notice role="status" {
                "DIN " span.din { (member) } " is a donation in this pool; the pool is shown."
            }
        }
        h2 { "Facts" }
        (facts(u, &trace, &thresholds, &required, tz, now))
        (trace_section(&trace, tz))
        (label_preview(&label, tz))
        (page::zone_note(tz))
    };
    Ok(html(page::layout(&format!("Unit {}", u.din), &who, Nav::Other, body)))
}

fn when(t: DateTime<Utc>, tz: chrono_tz::Tz) -> Markup {
    page::local_time(t.naive_utc(), tz)
}

fn request_link(id: i64) -> Markup {
    html! { a href=(format!("/console/requests/{id}")) { "request " (id) } }
}

fn facts(
    u: &UnitView,
    trace: &Trace,
    thresholds: &[u32],
    required: &[String],
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Markup {
    let holding = trace.allocations.iter().find(|a| {
        matches!(
            a.allocation.status,
            crate::domain::requests::AllocationStatus::Allocated | crate::domain::requests::AllocationStatus::Issued
        )
    });
    html! {
        dl.facts #unit-facts {
            dt { "DIN" }
            dd { span.din { (u.din) } " check character " code { (u.check_character) } }
            dt { "Product" }
            dd { code { (u.product_code) } @if u.pooled { " (pooled)" } }
            dt { "Source" }
            dd {
                @match &u.supplier {
                    Some(supplier) => { "supplier: " (supplier) }
                    None => { "our collection" @if let Some(c) = u.collection_id { " " (c) } }
                }
            }
            @if !u.pooled_from.is_empty() {
                dt { "Pooled from" }
                dd { @for (i, din) in u.pooled_from.iter().enumerate() { @if i > 0 { ", " } span.din { (din) } } }
            }
            dt { "ABO/RhD" }
            dd { (group_markup(u)) }
            dt { "CMV" }
            dd { (u.cmv.as_str()) }
            dt { "Volume" }
            dd { (u.volume_ml) " mL" }
            dt { "Granulocytes" }
            dd { (format!("{:.2e}", u.granulocyte_count)) }
            @if let Some(rbc) = u.red_cell_volume_ml {
                dt { "Red cells" }
                dd { (rbc) " mL" }
            }
            dt { "Collected" }
            dd { (when(u.collected_at, tz)) }
            dt { "Expires" }
            dd {
                (when(u.expires_at, tz)) " "
                (countdown(u.expires_at, now, thresholds))
                @if let Some(labelled) = u.labelled_expires_at {
                    " (supplier's label: " (when(labelled, tz)) ")"
                }
            }
            dt { "Status" }
            dd #unit-status data-status=(u.status.as_str()) {
                (status_markup(u))
                @if let Some(reason) = &u.status_reason { " — " (reason) }
            }
            dt { "Irradiated" }
            dd {
                @match &u.irradiation {
                    Some(i) => {
                        "yes, " (i.dose_gy) " Gy, " (when(i.irradiated_at, tz)) " by " (i.irradiated_by)
                        @if let Some(device) = &i.device { " (" (device) ")" }
                    }
                    None => { "no" }
                }
            }
            dt { "Markers" }
            dd {
                (markers_markup(u, required))
                @if !u.tests.is_empty() {
                    ul {
                        @for t in &u.tests {
                            li { (t.marker) ": " (t.result.as_str()) ", " (when(t.recorded_at, tz)) " by " (t.recorded_by) }
                        }
                    }
                }
            }
            dt { "Release" }
            dd {
                @match &u.release {
                    Some(r) => {
                        (r.kind.as_str()) ", " (when(r.released_at, tz)) " by " (r.released_by)
                        @if let Some(p) = &r.physician { "; authorised by " (p.name) }
                        @if let Some(request) = r.request_id { "; only for " (request_link(request)) }
                        @if !r.pending_markers.is_empty() { "; pending at release: " (r.pending_markers.join(", ")) }
                    }
                    None => { "not released" }
                }
            }
            dt { "Request" }
            dd {
                @match holding {
                    Some(a) => {
                        (a.allocation.status.as_str()) " to " (request_link(a.allocation.request_id))
                    }
                    None => { "none" }
                }
            }
            @if let Some(location) = &u.storage_location {
                dt { "Stored at" }
                dd { (location) }
            }
            @if !u.excursions.is_empty() {
                dt { "Storage excursions" }
                dd {
                    ul {
                        @for e in &u.excursions {
                            li {
                                (e.temperature_c) " °C at " (when(e.measured_at, tz))
                                @if e.dispositioned { " (dispositioned)" } @else { " (awaiting a medical director)" }
                            }
                        }
                    }
                }
            }
            @if let Some(at) = u.discarded_at {
                dt { "Discarded" }
                dd { (when(at, tz)) @if let Some(by) = &u.discarded_by { " by " (by) } }
            }
        }
    }
}

/// donor → stimulations → collection → unit → crossmatches → allocations → recipients, in the
/// trace's order.
fn trace_section(trace: &Trace, tz: chrono_tz::Tz) -> Markup {
    let u = &trace.unit;
    html! {
        section #unit-trace aria-labelledby="unit-trace-title" {
            h2 #unit-trace-title { "Trace" }
            ol.trace {
                @if let Some(d) = &trace.donor {
                    li data-step="donor" { "Donor " code { (d.donor_number) } }
                }
                @for s in &trace.stimulations {
                    li data-step="stimulation" {
                        (when(s.administered_at, tz)) " stimulation: " (s.agent) " " (s.dose) " " (s.dose_unit.as_str())
                        @for w in &s.warnings { " " code { (w.code) } }
                    }
                }
                @if let Some(c) = &trace.collection {
                    li data-step="collection" {
                        "Collection " (c.id) " on device " (c.device_id) ", " (c.status.as_str())
                        @if let Some(start) = c.started_at { ", started " (when(start, tz)) }
                        @if let Some(end) = c.ended_at { ", ended " (when(end, tz)) }
                    }
                }
                @if let Some(supplier) = &trace.supplier {
                    li data-step="supplier" { "From " (supplier) ", collected " (when(u.collected_at, tz)) }
                }
                li data-step="unit" { "Unit created " (when(u.created_at, tz)) ", " span.din { (u.din) } }
                @if let Some(i) = &u.irradiation {
                    li data-step="irradiation" { (when(i.irradiated_at, tz)) " irradiated, " (i.dose_gy) " Gy" }
                }
                @for t in &u.tests {
                    li data-step="test" { (when(t.recorded_at, tz)) " " (t.marker) " " (t.result.as_str()) }
                }
                @if let Some(r) = &u.release {
                    li data-step="release" { (when(r.released_at, tz)) " released (" (r.kind.as_str()) ")" }
                }
                @for x in &trace.crossmatches {
                    li data-step="crossmatch" {
                        (when(x.performed_at, tz)) " crossmatch " (x.kind.as_str()) ": " (x.result.as_str())
                        ", sample " (x.sample_id) ", patient " (x.patient_id)
                        @if x.resolution.is_some() { " (resolved by a medical director)" }
                    }
                }
                @for a in &trace.allocations { (allocation_steps(a, tz)) }
                @if let Some(at) = u.discarded_at {
                    li data-step="discard" { (when(at, tz)) " discarded" @if let Some(reason) = &u.status_reason { ": " (reason) } }
                }
                @for pool in &trace.member_of {
                    li data-step="pool" {
                        "Went into pool " a href=(format!("/console/units/{}", pool.unit_id)) { (pool.din) }
                        " (" (pool.status.as_str()) ")"
                    }
                }
            }
        }
    }
}

fn allocation_steps(t: &TracedAllocation, tz: chrono_tz::Tz) -> Markup {
    let a = &t.allocation;
    html! {
        li data-step="allocation" {
            (when(a.allocated_at, tz)) " allocated to " (request_link(a.request_id))
            " for patient MRN " code { (t.recipient.mrn) } " by " (a.allocated_by)
            " — now " (a.status.as_str())
        }
        @if let Some(at) = a.issued_at {
            li data-step="issue" {
                (when(at, tz)) " issued"
                @if let Some(by) = &a.issued_by { " by " (by) }
                @if let Some(scanned) = &a.scanned_din { " (scanned " span.din { (scanned) } ")" }
            }
        }
        @if let Some(at) = a.transfusion_started_at {
            li data-step="transfusion" {
                (when(at, tz)) " transfusion started"
                @if let Some(end) = a.transfusion_ended_at { ", ended " (when(end, tz)) }
                @if let Some(reaction) = &a.reaction { "; reaction: " (reaction) }
                @if let Some(inc) = a.anc_increment_per_ul { "; ANC increment " (inc) " /µL" }
            }
        }
        @if let Some(at) = a.ended_at {
            li data-step="allocation-ended" {
                (when(at, tz)) " allocation ended"
                @if let Some(reason) = &a.end_reason { ": " (reason) }
            }
        }
    }
}

/// The label's four quadrants (ISBT 128 layout): upper left DIN, upper right ABO/RhD, lower
/// left product, lower right expiry and special testing; each with its data string as text.
fn label_preview(l: &Label, tz: chrono_tz::Tz) -> Markup {
    html! {
        section aria-labelledby="label-title" {
            h2 #label-title { "Label preview" }
            p.hint { "Text only: the data strings are shown as the barcodes would carry them." }
            div.label-preview #label-preview {
                div.q-ul data-quadrant="din" {
                    code.data-string data-structure="din" { (l.isbt128.din) }
                    p.din { (l.din) " " span.check { (l.check_character) } }
                    p { (l.producer) }
                }
                div.q-ur data-quadrant="blood-group" {
                    code.data-string data-structure="blood-group" { (l.isbt128.blood_group) }
                    p.group { strong { (l.blood_group) } }
                }
                div.q-ll data-quadrant="product" {
                    code.data-string data-structure="product" { (l.isbt128.product) }
                    p { strong { (l.product_name) } }
                    p { (l.volume_ml) " mL · " (format!("{:.2e}", l.granulocyte_count)) " granulocytes" }
                    p { "Collected " (when(l.collected_at, tz)) }
                    p { (l.storage) }
                }
                div.q-lr data-quadrant="expiry" {
                    code.data-string data-structure="expiry" { (l.isbt128.expiry) }
                    p { "Expires " strong { (l.expiry_text) } }
                    @if l.irradiated { p { strong { "IRRADIATED" } } }
                    @if l.emergency_release { p { strong { "EMERGENCY RELEASE" } } }
                }
            }
            @if !l.pooled_from.is_empty() {
                p { "Pooled from " (l.pooled_from.join(", ")) }
            }
            h3 { "Statements" }
            ul.label-statements {
                @for s in &l.statements { li { (s) } }
            }
            p.zone { "Label times are " (l.time_zone) " time." }
        }
    }
}
