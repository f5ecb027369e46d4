//! `GET /console/requests`: the requests still to serve in three priority lanes (stat, asap,
//! routine; scheduled requests ride in the routine lane), most urgent `needed_by` first.
//!
//! Read as `GET /api/v1/requests` reads them (`services::requests::list`, the open and the
//! waiting ones), with their patients, samples, crossmatches and hospitals loaded in bulk.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{Markup, html};

use super::super::page;
use super::words::{self, UnitCounts};
use crate::domain::policy::Policy;
use crate::domain::requests::{Priority, RequestStatus};
use crate::error::ApiResult;
use crate::services::allocations::{self as allocation_work, CrossmatchView};
use crate::services::patients::{self, PatientView, SampleView};
use crate::services::requests::{self as work, RequestView};
use crate::services::utc;
use crate::store::hospitals::Hospital;
use crate::store::{self, DbConn};

/// The lanes, in the order shown.
pub const LANES: [(&str, &str); 3] = [("stat", "STAT"), ("asap", "ASAP"), ("routine", "Routine")];

const PAGE: i64 = 500;

pub fn lane_of(p: Priority) -> &'static str {
    match p {
        Priority::Stat => "stat",
        Priority::Asap => "asap",
        Priority::Routine | Priority::Scheduled => "routine",
    }
}

/// Everything the lanes show, read in one go.
pub struct Lanes {
    pub requests: Vec<RequestView>,
    patients: HashMap<i64, PatientView>,
    hospitals: HashMap<i64, Hospital>,
    samples: Vec<SampleView>,
    crossmatches: Vec<CrossmatchView>,
    now: DateTime<Utc>,
}

/// Every request of `status`, page by page as the API pages them.
fn all_of(conn: &mut DbConn, status: RequestStatus, policy: &Policy) -> ApiResult<Vec<RequestView>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (items, next) = work::list(conn, None, Some(status), after, PAGE, policy)?;
        out.extend(items);
        match crate::input::decode_cursor(next.as_deref())? {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

pub fn load(conn: &mut DbConn, policy: &Policy) -> ApiResult<Lanes> {
    let now = utc(store::now());
    let mut requests = all_of(conn, RequestStatus::Open, policy)?;
    requests.extend(all_of(conn, RequestStatus::PendingApproval, policy)?);
    requests.sort_by(|a, b| a.needed_by.cmp(&b.needed_by).then(a.id.cmp(&b.id)));
    let mut patient_ids: Vec<i64> = requests.iter().map(|r| r.patient_id).collect();
    patient_ids.sort_unstable();
    patient_ids.dedup();
    let patients: HashMap<i64, PatientView> = patients::get_many(conn, &patient_ids, None, policy)?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let samples = patients::samples_of_many(conn, &patient_ids)?;
    let crossmatches = allocation_work::crossmatches_of_patients(conn, &patient_ids)?;
    let mut hospital_ids: Vec<i64> = requests.iter().map(|r| r.hospital_id).collect();
    hospital_ids.sort_unstable();
    hospital_ids.dedup();
    let mut hospitals = HashMap::new();
    for id in hospital_ids {
        hospitals.insert(id, crate::accounts::hospital(conn, id)?);
    }
    Ok(Lanes {
        requests,
        patients,
        hospitals,
        samples,
        crossmatches,
        now,
    })
}

/// The lanes region; it reloads itself on the `requests` live event.
pub fn render(l: &Lanes, tz: Tz) -> Markup {
    html! {
        div.lanes #request-lanes hx-get="/console/requests/lanes" hx-trigger="sse:requests" hx-swap="outerHTML" {
            @for (lane, title) in LANES {
                @let cards: Vec<&RequestView> = l.requests.iter().filter(|r| lane_of(r.priority) == lane).collect();
                @let heading = format!("lane-{lane}-title");
                section.lane #(format!("lane-{lane}")) aria-labelledby=(heading) data-count=(cards.len()) {
                    h2 #(heading) { (title) " " span.count { "(" (cards.len()) ")" } }
                    @if cards.is_empty() {
                        p.muted.empty { "No " (title) " requests waiting." }
                    }
                    @for r in cards {
                        (card(l, r, tz))
                    }
                }
            }
        }
    }
}

fn card(l: &Lanes, r: &RequestView, tz: Tz) -> Markup {
    let patient = l.patients.get(&r.patient_id);
    let hospital = l.hospitals.get(&r.hospital_id);
    let samples: Vec<&SampleView> = l.samples.iter().filter(|s| s.patient_id == r.patient_id).collect();
    let crossmatches: Vec<&CrossmatchView> = l.crossmatches.iter().filter(|x| x.patient_id == r.patient_id).collect();
    let state = words::crossmatch_state(r, &samples, &crossmatches, l.now);
    let counts = UnitCounts::of(r);
    let course = words::course_of(r, l.now);
    let href = format!("/console/requests/{}", r.id);
    html! {
        article.card data-request-id=(r.id) data-priority=(r.priority.as_str()) data-status=(r.status.as_str())
            data-needed-by=(r.needed_by.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            h3 {
                a href=(href) {
                    "Request " (r.id)
                    @if let Some(p) = patient { " · " (p.mrn) }
                }
                @if r.priority == Priority::Scheduled { " " span.badge { "scheduled" } }
                @if r.status == RequestStatus::PendingApproval {
                    " " span.badge.tier-authorise { "waiting for approval" }
                }
            }
            dl.facts {
                dt { "Needed by" }
                dd.needed-by { (page::local_time(r.needed_by.naive_utc(), tz)) }
                dt { "Patient" }
                dd.patient {
                    @if let Some(p) = patient {
                        "MRN " span.mrn { (p.mrn) } " · " (p.family_name) ", " (p.given_name)
                    } @else {
                        "patient " (r.patient_id)
                    }
                }
                dt { "Hospital" }
                dd.hospital {
                    @if let Some(h) = hospital { (h.name) " (" (h.code) ")" } @else { "hospital " (r.hospital_id) }
                }
                dt { "Group of record" }
                dd {
                    @if let Some(p) = patient { (words::group_of_record(&p.group_of_record)) } @else { "unknown" }
                }
                dt { "Crossmatch" }
                dd { (words::crossmatch_words(&state, tz)) }
                dt { "Units" }
                dd { (words::units_words(r, counts)) }
                dt { "Course" }
                dd { (words::course_words(&course, counts, tz)) }
            }
        }
    }
}
