//! Today: the stimulations due tonight, the collections booked today and tomorrow per device
//! (a timeline and the same bookings as a table, each with the request it is for) with the
//! course plans at risk, and the donors eligible tomorrow morning.
//! "Today" and "tomorrow" are the facility's days; every section is live on `sse:today`.

use std::collections::HashMap;

use actix_web::web;
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;
use maud::{Markup, html};

use super::page::{self, Nav};
use super::{ConsoleResult, ConsoleUser, html};
use crate::auth::Role;
use crate::domain::alerts::{AlertKind, AlertStatus};
use crate::domain::eligibility::ProcedureKind;
use crate::domain::scheduling::CollectionStatus;
use crate::domain::wall_clock::earliest_instant;
use crate::error::ApiResult;
use crate::services::collections::{self as collection_work, CollectionView, DueStimulation};
use crate::services::donors::{self as donor_work, DonorView, EligibleDonor};
use crate::services::{stored, utc};
use crate::state::AppState;
use crate::store::alerts::{self as alert_rows, Alert};
use crate::store::collections::CollectionFilter;
use crate::store::devices::{self, Device};
use crate::store::{DbConn, now};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/today").route(web::get().to(show)))
        .service(web::resource("/today/stimulations").route(web::get().to(stimulations_fragment)))
        .service(web::resource("/today/collections").route(web::get().to(collections_fragment)))
        .service(web::resource("/today/eligible").route(web::get().to(eligible_fragment)));
}

/// The API's largest page: lists are read page by page to the end.
const PAGE: i64 = 500;
/// Eligible donors shown at most (the donor list with `eligible_at` has them all).
const ELIGIBLE_SHOWN: i64 = 100;
/// The night the stimulations are given in ends at this local hour tomorrow.
const NIGHT_ENDS_HOUR: u32 = 6;
/// Donors are judged for a collection tomorrow at this local hour.
const TOMORROW_COLLECTION_HOUR: u32 = 8;
/// Course plans at risk listed at most (the Alerts page has them all).
const AT_RISK_SHOWN: usize = 20;
/// The timeline's default span, in local hours; it widens to show every booking.
const DAY_HOURS: (u32, u32) = (7, 19);

/// The facility's today and tomorrow, and the instants the sections are computed for.
#[derive(Clone, Copy)]
struct Days {
    tz: Tz,
    now: DateTime<Utc>,
    today: NaiveDate,
    tomorrow: NaiveDate,
}

impl Days {
    fn new(tz: Tz) -> Self {
        let now = utc(now());
        let today = now.with_timezone(&tz).date_naive();
        Self {
            tz,
            now,
            today,
            tomorrow: today.succ_opt().unwrap_or(today),
        }
    }

    /// The instant a local date and hour reads on the facility's clock.
    fn at(&self, day: NaiveDate, hour: u32) -> DateTime<Utc> {
        let time = NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or(NaiveTime::MIN);
        earliest_instant(self.tz, day.and_time(time))
    }

    fn night_ends(&self) -> DateTime<Utc> {
        self.at(self.tomorrow, NIGHT_ENDS_HOUR)
    }

    fn eligible_at(&self) -> DateTime<Utc> {
        self.at(self.tomorrow, TOMORROW_COLLECTION_HOUR)
    }

    fn days(&self) -> [(NaiveDate, &'static str); 2] {
        [(self.today, "Today"), (self.tomorrow, "Tomorrow")]
    }
}

/// The bookings of today and tomorrow, their devices and donors.
struct Bookings {
    devices: Vec<Device>,
    collections: Vec<CollectionView>,
    donors: HashMap<i64, DonorView>,
    /// Open `course.plan_broken` alerts, latest first (one more than shown, to tell).
    at_risk: Vec<Alert>,
}

fn load_stimulations(conn: &mut DbConn, days: Days) -> ApiResult<Vec<DueStimulation>> {
    let policy = crate::services::policy::current(conn)?.policy;
    collection_work::stimulations_due(conn, days.now, days.night_ends(), &policy)
}

/// As `GET /api/v1/devices` and `GET /api/v1/collections?from=&to=` list them, every page.
fn load_bookings(conn: &mut DbConn, days: Days) -> ApiResult<Bookings> {
    let mut all_devices = Vec::new();
    let mut after = None;
    loop {
        let rows = devices::list(conn, after, PAGE + 1)?;
        let more = rows.len() as i64 > PAGE;
        let (rows, _) = crate::input::paginate(rows, PAGE, |d| d.id);
        after = rows.last().map(|d| d.id);
        all_devices.extend(rows);
        if !more || after.is_none() {
            break;
        }
    }
    let policy = crate::services::policy::current(conn)?.policy;
    let day_after = days.tomorrow.succ_opt().unwrap_or(days.tomorrow);
    let mut filter = CollectionFilter {
        from: Some(stored(days.at(days.today, 0))),
        to: Some(stored(days.at(day_after, 0))),
        ..CollectionFilter::default()
    };
    let mut collections = Vec::new();
    loop {
        let (rows, next) = collection_work::list(conn, &filter, PAGE, &policy)?;
        filter.after_id = rows.last().map(|c| c.id);
        collections.extend(rows);
        if next.is_none() || filter.after_id.is_none() {
            break;
        }
    }
    collections.sort_by_key(|c| (c.scheduled_start, c.id));
    let ids: Vec<i64> = collections.iter().map(|c| c.donor_id).collect();
    let donors = donor_work::get_many(conn, &ids)?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    // One query: the open alerts of the kind, oldest id first; shown latest first.
    let mut at_risk = alert_rows::list(
        conn,
        Some(AlertStatus::Open),
        Some(AlertKind::CoursePlanBroken),
        None,
        i64::try_from(AT_RISK_SHOWN).unwrap_or(i64::MAX).saturating_add(1),
    )?;
    at_risk.sort_by_key(|a| std::cmp::Reverse((a.last_occurred_at, a.id)));
    Ok(Bookings {
        devices: all_devices,
        collections,
        donors,
        at_risk,
    })
}

fn load_eligible(conn: &mut DbConn, days: Days) -> ApiResult<(Vec<EligibleDonor>, bool)> {
    let policy = crate::services::policy::current(conn)?.policy;
    donor_work::eligible_at(conn, days.eligible_at(), days.now, ELIGIBLE_SHOWN, &policy)
}

async fn show(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let days = Days::new(state.settings.timezone);
    let (due, bookings, eligible) = state
        .db(move |conn| {
            Ok((
                load_stimulations(conn, days)?,
                load_bookings(conn, days)?,
                load_eligible(conn, days)?,
            ))
        })
        .await?;
    let body = html! {
        p.hint {
            "Today is " (days.today.format("%A %d %B").to_string())
            "; tomorrow is " (days.tomorrow.format("%A %d %B").to_string()) "."
        }
        (stimulations_section(&due, days))
        (collections_section(&bookings, days))
        (eligible_section(&eligible, days))
        (page::zone_note(days.tz))
    };
    Ok(html(page::layout("Today", &who, Nav::Today, body)))
}

async fn stimulations_fragment(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let days = Days::new(state.settings.timezone);
    let due = state.db(move |conn| load_stimulations(conn, days)).await?;
    Ok(html(stimulations_section(&due, days)))
}

async fn collections_fragment(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let days = Days::new(state.settings.timezone);
    let bookings = state.db(move |conn| load_bookings(conn, days)).await?;
    Ok(html(collections_section(&bookings, days)))
}

async fn eligible_fragment(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let days = Days::new(state.settings.timezone);
    let eligible = state.db(move |conn| load_eligible(conn, days)).await?;
    Ok(html(eligible_section(&eligible, days)))
}

fn local(t: DateTime<Utc>, tz: Tz) -> Markup {
    page::local_time(t.naive_utc(), tz)
}

fn clock(t: DateTime<Utc>, tz: Tz) -> Markup {
    page::local_clock(t.naive_utc(), tz)
}

/// `HH:MM` on the facility's clock, as plain text (an SVG `title` holds no markup).
fn clock_text(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%H:%M").to_string()
}

fn donor_name(d: &DonorView) -> Markup {
    html! { span.donor { span.din { (d.donor_number) } " · " (d.given_name) " " (d.family_name) } }
}

fn group(d: &DonorView) -> String {
    let rhd = match d.rhd {
        crate::domain::blood::Rhd::Positive => "RhD positive",
        crate::domain::blood::Rhd::Negative => "RhD negative",
    };
    format!("{} {rhd}", d.abo.as_str())
}

fn procedure_words(kind: ProcedureKind) -> &'static str {
    match kind {
        ProcedureKind::WholeBlood => "whole blood",
        ProcedureKind::Platelets => "platelet apheresis",
        ProcedureKind::Plasma => "plasma apheresis",
        ProcedureKind::RedCells => "red-cell apheresis",
        ProcedureKind::Leukapheresis => "granulocyte collection",
    }
}

fn status_words(status: CollectionStatus) -> &'static str {
    match status {
        CollectionStatus::Scheduled => "booked",
        CollectionStatus::InProgress => "in progress",
        CollectionStatus::Completed => "completed",
        CollectionStatus::Aborted => "aborted",
    }
}

/// `section#stimulations`.
fn stimulations_section(due: &[DueStimulation], days: Days) -> Markup {
    let tz = days.tz;
    html! {
        section #stimulations aria-labelledby="stimulations-heading" hx-get="/console/today/stimulations" hx-trigger="sse:today" hx-swap="outerHTML" {
            h2 #stimulations-heading { "Stimulations due tonight " span.count { "(" (due.len()) ")" } }
            @if due.is_empty() {
                p.empty { "No stimulation is due before " (local(days.night_ends(), tz)) "." }
            } @else {
                table {
                    caption {
                        "Doses not yet recorded for booked collections, whose window opens before "
                        (local(days.night_ends(), tz)) ". Earliest closing first."
                    }
                    thead {
                        tr {
                            th scope="col" { "Give" }
                            th scope="col" { "Agent" }
                            th scope="col" { "Donor" }
                            th scope="col" { "For the collection at" }
                            th scope="col" { "Status" }
                        }
                    }
                    tbody {
                        @for s in due {
                            tr data-collection-id=(s.collection_id) data-donor-id=(s.donor.id) data-agent=(s.dose.agent) {
                                td { "between " (local(s.dose.opens, tz)) " and " (local(s.dose.closes, tz)) }
                                th scope="row" { (s.dose.agent) }
                                td { (donor_name(&s.donor)) }
                                td { (local(s.collection_start, tz)) " " span.muted { "(collection " (s.collection_id) ")" } }
                                td {
                                    @if days.now < s.dose.opens {
                                        "window opens " (clock(s.dose.opens, tz))
                                    } @else if days.now <= s.dose.closes {
                                        span.badge.due-now { "give now" }
                                    } @else {
                                        span.badge.overdue { "window passed" } " — not recorded"
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Minutes since local midnight of `day` at which `t` reads on the facility's clock, kept to
/// the day (0 before it, 24 h after it).
fn day_minutes(t: DateTime<Utc>, day: NaiveDate, tz: Tz) -> u32 {
    let local = t.with_timezone(&tz).naive_local();
    if local.date() < day {
        0
    } else if local.date() > day {
        24 * 60
    } else {
        local.hour() * 60 + local.minute()
    }
}

/// Geometry of the timeline (SVG user units).
const WIDTH: u32 = 960;
const LABEL: u32 = 110;
const AXIS: u32 = 18;
const LANE: u32 = 34;
const GAP: u32 = 6;

/// The local hours the timeline spans: the default day, widened to every booking's.
fn span_hours(collections: &[&CollectionView], days: Days) -> (u32, u32) {
    let (mut first, mut last) = DAY_HOURS;
    for c in collections {
        for (day, _) in days.days() {
            let start = day_minutes(c.scheduled_start, day, days.tz);
            let end = day_minutes(c.scheduled_end, day, days.tz);
            if end > start {
                first = first.min(start / 60);
                last = last.max(end.div_ceil(60));
            }
        }
    }
    (first, last.clamp(first + 1, 24))
}

/// A device's bookings as an SVG timeline: a lane per day over the span's hours, a `rect` per
/// booking placed by its `x` and `width` (the CSP allows no `style`).
fn timeline(device: &Device, collections: &[&CollectionView], bookings: &Bookings, days: Days) -> Markup {
    let tz = days.tz;
    let (first, last) = span_hours(collections, days);
    let scale = f64::from(WIDTH - LABEL) / f64::from((last - first) * 60);
    let x_of = |minutes: u32| f64::from(LABEL) + f64::from(minutes.saturating_sub(first * 60)) * scale;
    let height = AXIS + 2 * (LANE + GAP);
    let title_id = format!("timeline-{}-title", device.id);
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {height}"))
            role="img" aria-labelledby=(title_id) data-device-id=(device.id)
            data-span=(format!("{first:02}:00-{last:02}:00")) {
            title id=(title_id) {
                "Bookings on " (device.name) " today and tomorrow, " (format!("{first:02}:00 to {last:02}:00"))
                " (the table below lists them)"
            }
            @for h in first..=last {
                @let x = format!("{:.1}", x_of(h * 60));
                line.tick x1=(x) x2=(x) y1=(AXIS - 4) y2=(height) {}
                text.hour x=(x) y=(AXIS - 6) text-anchor="middle" { (format!("{h:02}")) }
            }
            @for (i, (day, label)) in days.days().into_iter().enumerate() {
                @let y = AXIS + u32::try_from(i).unwrap_or(0) * (LANE + GAP);
                text.day x="0" y=(y + LANE / 2 + 4) { (label) " " (day.format("%d %b").to_string()) }
                rect.lane x=(LABEL) y=(y) width=(WIDTH - LABEL) height=(LANE) {}
                @for c in collections {
                    @let start = day_minutes(c.scheduled_start, day, tz).max(first * 60);
                    @let end = day_minutes(c.scheduled_end, day, tz).min(last * 60);
                    @if end > start {
                        @let x = x_of(start);
                        @let w = (x_of(end) - x).max(2.0);
                        @let donor = bookings.donors.get(&c.donor_id).map(|d| d.donor_number.as_str()).unwrap_or("");
                        rect class={ "slot " (c.status.as_str()) } data-collection-id=(c.id) data-status=(c.status.as_str())
                            x=(format!("{x:.1}")) y=(y + 2) width=(format!("{w:.1}")) height=(LANE - 4) {
                            title {
                                (clock_text(c.scheduled_start, tz)) "–" (clock_text(c.scheduled_end, tz)) " " (donor) " " (status_words(c.status))
                            }
                        }
                        // A nested svg clips the label to its slot.
                        svg x=(format!("{x:.1}")) y=(y + 2) width=(format!("{w:.1}")) height=(LANE - 4) aria-hidden="true" {
                            text.slot-label x="4" y=(LANE / 2 + 2) { (donor) " " (status_words(c.status)) }
                        }
                    }
                }
            }
        }
    }
}

/// `section#collections`: per device, the timeline and a table of the same bookings.
fn collections_section(bookings: &Bookings, days: Days) -> Markup {
    let tz = days.tz;
    let shown: Vec<&Device> = bookings
        .devices
        .iter()
        .filter(|d| d.active || bookings.collections.iter().any(|c| c.device_id == d.id))
        .collect();
    html! {
        section #collections aria-labelledby="collections-heading" hx-get="/console/today/collections" hx-trigger="sse:today" hx-swap="outerHTML" {
            h2 #collections-heading { "Collections today and tomorrow " span.count { "(" (bookings.collections.len()) ")" } }
            (plans_at_risk(&bookings.at_risk))
            @if shown.is_empty() {
                p.empty { "No apheresis device is registered." }
            }
            @for device in shown {
                @let own: Vec<&CollectionView> = bookings.collections.iter().filter(|c| c.device_id == device.id).collect();
                div.device id=(format!("device-{}", device.id)) data-device-id=(device.id) {
                    h3 { (device.name) @if !device.active { " " span.badge { "out of service" } } }
                    (timeline(device, &own, bookings, days))
                    @if own.is_empty() {
                        p.empty { "Nothing booked on " (device.name) " today or tomorrow." }
                    } @else {
                        table.bookings {
                            caption { "Bookings on " (device.name) }
                            thead {
                                tr {
                                    th scope="col" { "Day" }
                                    th scope="col" { "Time" }
                                    th scope="col" { "Donor" }
                                    th scope="col" { "For" }
                                    th scope="col" { "Status" }
                                }
                            }
                            tbody {
                                @for c in &own {
                                    @let day = c.scheduled_start.with_timezone(&tz).date_naive();
                                    tr data-collection-id=(c.id) data-status=(c.status.as_str()) {
                                        td { @if day == days.today { "Today" } @else { "Tomorrow" } }
                                        th scope="row" { (clock(c.scheduled_start, tz)) "–" (clock(c.scheduled_end, tz)) }
                                        td {
                                            @match bookings.donors.get(&c.donor_id) {
                                                Some(d) => { (donor_name(d)) }
                                                None => { "donor " (c.donor_id) }
                                            }
                                        }
                                        td.for-request {
                                            @match c.request_id {
                                                Some(r) => { a href=(format!("/console/requests/{r}")) { "for request " (r) } }
                                                None => { span.muted { "—" } }
                                            }
                                        }
                                        td { (status_words(c.status)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The requests whose accepted course plan lost a day's donor or unit (open
/// `course.plan_broken` alerts), one line each.
fn plans_at_risk(alerts: &[Alert]) -> Markup {
    let more = alerts.len() > AT_RISK_SHOWN;
    html! {
        @if !alerts.is_empty() {
            div #plans-at-risk {
                h3 { "Course plans at risk" }
                ul {
                    @for a in alerts.iter().take(AT_RISK_SHOWN) {
                        // The alert names the API route to repair with; here it is the request page.
                        @let what = a.message.split("; propose a repair").next().unwrap_or(&a.message);
                        li data-alert-id=(a.id) data-request-id=(a.entity_id) {
                            a href=(format!("/console/requests/{}", a.entity_id)) { "Request " (a.entity_id) } ": " (what)
                            " — propose a repair on the request page."
                        }
                    }
                }
                @if more {
                    p.hint { "More on " a href="/console/alerts" { "Alerts & tasks" } "." }
                }
            }
        }
    }
}

/// `section#eligible`.
fn eligible_section(eligible: &(Vec<EligibleDonor>, bool), days: Days) -> Markup {
    let tz = days.tz;
    let (found, more) = eligible;
    html! {
        section #eligible aria-labelledby="eligible-heading" hx-get="/console/today/eligible" hx-trigger="sse:today" hx-swap="outerHTML" {
            h2 #eligible-heading { "Donors eligible tomorrow " span.count { "(" (found.len()) @if *more { "+" } ")" } }
            @if found.is_empty() {
                p.empty { "No active donor is eligible at " (local(days.eligible_at(), tz)) "." }
            } @else {
                table {
                    caption {
                        "Active donors eligible for a collection at " (local(days.eligible_at(), tz))
                        ", by every eligibility rule (as the donor's eligibility check, with no planned agents)."
                    }
                    thead {
                        tr {
                            th scope="col" { "Donor" }
                            th scope="col" { "Group" }
                            th scope="col" { "CMV" }
                            th scope="col" { "Last donation" }
                            th scope="col" { "Eligible from" }
                        }
                    }
                    tbody {
                        @for e in found {
                            tr data-donor-id=(e.donor.id) {
                                th scope="row" { (donor_name(&e.donor)) }
                                td { (group(&e.donor)) }
                                td { (e.donor.cmv.as_str()) }
                                td {
                                    @match &e.last_procedure {
                                        Some(p) => { (procedure_words(p.kind)) ", " (local(p.at, tz)) }
                                        None => { span.muted { "none recorded" } }
                                    }
                                }
                                td {
                                    @match e.eligible_from {
                                        Some(t) if t <= days.now => { "now" }
                                        Some(t) => { (local(t, tz)) }
                                        None => { (local(days.eligible_at(), tz)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if *more {
                    p.hint {
                        "Showing the first " (ELIGIBLE_SHOWN) " eligible donors in registration order; "
                        "the donor list (eligible at the same time) has them all."
                    }
                }
            }
        }
    }
}
