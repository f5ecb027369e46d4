//! The board (`GET /console/board`): every unit not yet transfused or discarded, first-expiring
//! first, with a live countdown coloured at the policy's alert thresholds, and the request each
//! unit is allocated or issued to. Filters by ABO/RhD group and status (a GET form). The rows
//! (`/console/board/rows`) and the band counts (`/console/board/summary`) reload on the `board`
//! event; console.js ticks the countdowns and the counts in between.
//!
//! Reads go through the same services as `GET /api/v1/units`: `units::list` when a status is
//! chosen (the API's filter, status as of now), `units::on_board` otherwise (one statement over
//! every status the board shows), and `allocations::holders` for the requests, in bulk.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::page::{self, Nav};
use super::{ConsoleResult, ConsoleUser, html};
use crate::auth::Role;
use crate::domain::blood::{Abo, Rhd};
use crate::domain::board::{self as rules, ExpiryBand, MarkerState};
use crate::domain::requests::AllocationStatus;
use crate::domain::units::{MarkerResult, ReleaseKind, UnitStatus};
use crate::error::{ApiError, ApiResult};
use crate::input::MAX_LIMIT;
use crate::services::allocations::{self, Holder};
use crate::services::units::{self as units, UnitView};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/board").route(web::get().to(show)))
        .service(web::resource("/board/rows").route(web::get().to(rows)))
        .service(web::resource("/board/summary").route(web::get().to(summary)));
}

/// The most units the board lists; past it, a note asks for a filter.
const MAX_UNITS: i64 = 2000;

// ---------------------------------------------------------------------------------------------
// Filters

/// An ABO group, with or without its RhD. Spelled `A+`, `A-` or `A` (any RhD) in the query; a
/// hand-typed `group=A+` arrives as `A ` and is read as `A+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    abo: Abo,
    rhd: Option<Rhd>,
}

impl Group {
    fn value(self) -> String {
        let sign = match self.rhd {
            Some(Rhd::Positive) => "+",
            Some(Rhd::Negative) => "-",
            None => "",
        };
        format!("{}{sign}", self.abo)
    }

    fn text(self) -> String {
        match self.rhd {
            Some(Rhd::Positive) => format!("{} RhD positive", self.abo),
            Some(Rhd::Negative) => format!("{} RhD negative", self.abo),
            None => format!("{} (any RhD)", self.abo),
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim_start();
        let (abo, rhd) = if let Some(abo) = raw.strip_suffix('+').or_else(|| raw.strip_suffix(' ')) {
            (abo, Some(Rhd::Positive))
        } else if let Some(abo) = raw.strip_suffix('-') {
            (abo, Some(Rhd::Negative))
        } else {
            (raw, None)
        };
        Some(Self {
            abo: Abo::parse(&abo.trim().to_uppercase())?,
            rhd,
        })
    }

    /// The options of the group filter, each ABO group first with any RhD.
    fn all() -> Vec<Self> {
        Abo::ALL
            .iter()
            .flat_map(|&abo| [None, Some(Rhd::Positive), Some(Rhd::Negative)].map(|rhd| Self { abo, rhd }))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Filters {
    group: Option<Group>,
    status: Option<UnitStatus>,
}

fn board_statuses() -> impl Iterator<Item = UnitStatus> {
    UnitStatus::ALL.iter().copied().filter(|s| rules::on_board(*s))
}

impl Filters {
    /// Read leniently from the query string: unknown parameters are ignored, empty values mean
    /// "all", anything else unknown is a refusal naming the field.
    fn parse(query: &str) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::field("query", "could not be read; choose from the filter lists"))?;
        let first = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mut out = Self::default();
        if let Some(raw) = first("group").filter(|v| !v.trim().is_empty()) {
            out.group = Some(Group::parse(raw).ok_or_else(|| {
                ApiError::field(
                    "group",
                    format!("{raw:?} is not a blood group; use O, A, B or AB, with + or - for the RhD"),
                )
            })?);
        }
        if let Some(raw) = first("status").map(str::trim).filter(|v| !v.is_empty()) {
            let status = UnitStatus::parse(raw).filter(|s| rules::on_board(*s));
            out.status = Some(status.ok_or_else(|| {
                let shown: Vec<&str> = board_statuses().map(UnitStatus::as_str).collect();
                ApiError::field(
                    "status",
                    format!(
                        "{raw:?} is not on the board; it shows {} (transfused and discarded units are not)",
                        shown.join(", ")
                    ),
                )
            })?);
        }
        Ok(out)
    }

    /// The query string that selects the same (empty when unfiltered).
    fn query(self) -> String {
        let mut pairs = Vec::new();
        if let Some(g) = self.group {
            pairs.push(("group", g.value()));
        }
        if let Some(s) = self.status {
            pairs.push(("status", s.as_str().to_owned()));
        }
        if pairs.is_empty() {
            String::new()
        } else {
            format!("?{}", serde_urlencoded::to_string(&pairs).unwrap_or_default())
        }
    }

    fn describe(self) -> String {
        let mut parts = Vec::new();
        if let Some(g) = self.group {
            parts.push(format!("group {}", g.text()));
        }
        if let Some(s) = self.status {
            parts.push(format!("status {s}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data

struct Board {
    units: Vec<UnitView>,
    holders: HashMap<i64, Holder>,
    thresholds: Vec<u32>,
    required_markers: Vec<String>,
    /// More units than the board lists.
    more: bool,
}

async fn load(state: &AppState, filters: Filters) -> ApiResult<Board> {
    state
        .db(move |conn| {
            let policy = crate::services::policy::current(conn)?.policy;
            let abo = filters.group.map(|g| g.abo);
            let rhd = filters.group.and_then(|g| g.rhd);
            let (units, more) = match filters.status {
                None => units::on_board(conn, abo, rhd, MAX_UNITS)?,
                Some(status) => {
                    let mut found = Vec::new();
                    let mut after = None;
                    loop {
                        let request = units::ListRequest {
                            status: Some(status),
                            abo,
                            rhd,
                            expiring_within_hours: None,
                            after,
                            limit: MAX_LIMIT,
                        };
                        let (page, next) = units::list(conn, request)?;
                        found.extend(page);
                        match next {
                            Some(cursor) if (found.len() as i64) < MAX_UNITS => after = Some(cursor),
                            Some(_) => break (found, true),
                            None => break (found, false),
                        }
                    }
                }
            };
            let ids: Vec<i64> = units.iter().map(|u| u.id).collect();
            let holders = allocations::holders(conn, &ids)?;
            Ok(Board {
                units,
                holders,
                thresholds: policy.alerts.expiry_thresholds_hours,
                required_markers: policy.unit.required_markers,
                more,
            })
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn show(req: HttpRequest, state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let done = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("done").cloned());
    let tz = state.settings.timezone;
    let (filters, body) = match Filters::parse(req.query_string()) {
        Ok(filters) => {
            let board = load(state.get_ref(), filters).await?;
            let now = Utc::now();
            let body = html! {
                (page::notice(done.as_deref()))
                (filter_form(filters))
                (table(&board, filters, tz, now))
                @if board.more {
                    p.hint { "The board lists the first " (MAX_UNITS) " units; choose a group or status to see the rest." }
                }
            };
            (filters, Ok(body))
        }
        Err(err) => (Filters::default(), Err(err)),
    };
    match body {
        Ok(body) => Ok(html(page::layout(
            "Board",
            &who,
            Nav::Board,
            html! { (body) (page::zone_note(tz)) },
        ))),
        Err(err) => {
            let markup = page::layout(
                "Board",
                &who,
                Nav::Board,
                html! {
                    (page::refusal(&err))
                    (filter_form(filters))
                    p { a href="/console/board" { "Show the whole board" } }
                },
            );
            Ok(HttpResponse::build(err.code().status())
                .content_type(page::HTML)
                .body(markup.into_string()))
        }
    }
}

/// `tbody#board-rows` alone, for the live reload.
async fn rows(req: HttpRequest, state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let filters = Filters::parse(req.query_string())?;
    let board = load(state.get_ref(), filters).await?;
    Ok(html(tbody(&board, filters, state.settings.timezone, Utc::now())))
}

/// `span#board-summary` alone, for the live reload.
async fn summary(req: HttpRequest, state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let filters = Filters::parse(req.query_string())?;
    let board = load(state.get_ref(), filters).await?;
    Ok(html(band_summary(&board, filters, Utc::now())))
}

// ---------------------------------------------------------------------------------------------
// Markup

fn filter_form(filters: Filters) -> Markup {
    html! {
        form #board-filters .filters method="get" action="/console/board" {
            label for="board-group" {
                "Group"
                select #board-group name="group" {
                    option value="" selected[filters.group.is_none()] { "All groups" }
                    @for g in Group::all() {
                        option value=(g.value()) selected[filters.group == Some(g)] { (g.text()) }
                    }
                }
            }
            label for="board-status" {
                "Status"
                select #board-status name="status" {
                    option value="" selected[filters.status.is_none()] { "All not yet transfused" }
                    @for s in board_statuses() {
                        option value=(s.as_str()) selected[filters.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
            a href="/console/board" { "Clear filters" }
        }
    }
}

fn table(board: &Board, filters: Filters, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Markup {
    html! {
        table #board {
            caption {
                "Units not yet transfused" (filters.describe()) ", first-expiring first. "
                (band_summary(board, filters, now))
            }
            thead {
                tr {
                    th scope="col" { "DIN" }
                    th scope="col" { "Product" }
                    th scope="col" { "ABO/RhD" }
                    th scope="col" { "Status" }
                    th scope="col" { "Irradiated" }
                    th scope="col" { "Markers" }
                    th scope="col" { "CMV" }
                    th scope="col" { "Expires" }
                    th scope="col" { "Request" }
                }
            }
            (tbody(board, filters, tz, now))
        }
    }
}

/// The count of units in each band, in words. console.js keeps each count in step with the
/// rows (`data-count`) as countdowns cross thresholds; the labels reload with the policy.
fn band_summary(board: &Board, filters: Filters, now: DateTime<Utc>) -> Markup {
    let mut counts: HashMap<ExpiryBand, usize> = HashMap::new();
    for u in &board.units {
        *counts
            .entry(rules::expiry_band(
                rules::seconds_left(u.expires_at, now),
                &board.thresholds,
            ))
            .or_default() += 1;
    }
    let mut widest_first = board.thresholds.clone();
    widest_first.sort_unstable_by(|a, b| b.cmp(a));
    // Each band with the time left that falls in it (at a threshold: that threshold's band).
    let mut bands: Vec<(ExpiryBand, i64)> = vec![(ExpiryBand::Band(0), i64::MAX)];
    for (i, h) in widest_first.iter().enumerate() {
        bands.push((ExpiryBand::Band(i + 1), i64::from(*h) * 3600));
    }
    bands.push((ExpiryBand::Expired, 0));
    let source = format!("/console/board/summary{}", filters.query());
    html! {
        span #board-summary hx-get=(source) hx-trigger="sse:board" hx-swap="outerHTML" {
            "Units: "
            span data-count="#board-rows tr[data-unit-id]" { (board.units.len()) }
            "; by time left: "
            @for (i, (band, example)) in bands.iter().enumerate() {
                @if i > 0 { ", " }
                span data-count=(format!("#board-rows .countdown.{}", band.class())) {
                    (counts.get(band).copied().unwrap_or(0))
                }
                " " (rules::expiry_label(*example, &board.thresholds))
            }
            "."
        }
    }
}

fn tbody(board: &Board, filters: Filters, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Markup {
    let source = format!("/console/board/rows{}", filters.query());
    html! {
        tbody #board-rows hx-get=(source) hx-trigger="sse:board" hx-swap="outerHTML" {
            @for u in &board.units {
                (row(u, board, tz, now))
            }
            @if board.units.is_empty() {
                tr { td colspan="9" { "No unit on the board" (filters.describe()) "." } }
            }
        }
    }
}

/// ABO and RhD as the board reads them (`A+`, `O-`, `A pooled RhD`), spelled out for
/// screen readers.
pub fn group_markup(u: &UnitView) -> Markup {
    let (short, long) = match (u.rhd_pooled, u.rhd) {
        (true, _) => (format!("{} pooled RhD", u.abo), format!("{} RhD pooled", u.abo)),
        (false, Rhd::Positive) => (format!("{}+", u.abo), format!("{} RhD positive", u.abo)),
        (false, Rhd::Negative) => (format!("{}-", u.abo), format!("{} RhD negative", u.abo)),
    };
    html! { abbr title=(long) { (short) } }
}

/// A live countdown to `expires_at`: `h:mm:ss` and the band in words, coloured by band; ticked
/// by console.js with the same rule (`data-bands`: the thresholds in seconds).
pub fn countdown(expires_at: DateTime<Utc>, now: DateTime<Utc>, thresholds_hours: &[u32]) -> Markup {
    let left = rules::seconds_left(expires_at, now);
    let band = rules::expiry_band(left, thresholds_hours);
    let bands: Vec<String> = thresholds_hours
        .iter()
        .map(|h| (i64::from(*h) * 3600).to_string())
        .collect();
    html! {
        span class=(format!("countdown {}", band.class()))
            data-expires-at=(expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            data-bands=(bands.join(",")) {
            span.clock { (rules::clock_text(left)) }
            " "
            span.band-text { (rules::expiry_label(left, thresholds_hours)) }
        }
    }
}

/// The unit's marker results against the policy's required markers, in words.
pub fn markers_markup(u: &UnitView, required: &[String]) -> Markup {
    let results: Vec<MarkerResult> = u
        .tests
        .iter()
        .map(|t| MarkerResult {
            marker: t.marker.clone(),
            result: t.result,
        })
        .collect();
    let emergency = u.release.as_ref().is_some_and(|r| r.kind == ReleaseKind::Emergency);
    html! {
        @match rules::marker_state(&results, required) {
            MarkerState::Complete => { span.markers-complete { "tests complete" } }
            MarkerState::Incomplete { pending, missing } => {
                span.markers-pending {
                    "tests pending"
                    @if !pending.is_empty() { ": awaiting " (pending.join(", ")) }
                    @if !missing.is_empty() {
                        @if pending.is_empty() { ":" } @else { ";" }
                        " no result for " (missing.join(", "))
                    }
                }
            }
            MarkerState::Reactive(markers) => { strong.markers-reactive { "REACTIVE: " (markers.join(", ")) } }
        }
        @if emergency {
            " " span.badge.emergency { "emergency release" }
        }
    }
}

/// The status in words; an expired unit says it must come off the shelf.
pub fn status_markup(u: &UnitView) -> Markup {
    html! {
        @if u.status == UnitStatus::Expired {
            strong.status-expired { "expired" } " — take it off the shelf and discard it"
        } @else {
            (u.status.as_str())
            @if let Some(reason) = u.quarantine_reason {
                " (" (reason.as_str().replace('_', " ")) ")"
            }
        }
        @for hold in &u.holds {
            " " code.hold { (hold) }
        }
    }
}

fn row(u: &UnitView, board: &Board, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Markup {
    let holder = board.holders.get(&u.id);
    let reserved = u.release.as_ref().and_then(|r| r.request_id);
    html! {
        tr class=[(u.status == UnitStatus::Expired).then_some("off-shelf")]
            data-din=(u.din) data-unit-id=(u.id) data-status=(u.status.as_str()) {
            th scope="row" { a.din href=(format!("/console/units/{}", u.id)) { (u.din) } }
            td {
                code { (u.product_code) }
                @if u.pooled { " pooled" }
            }
            td { (group_markup(u)) }
            td { (status_markup(u)) }
            td { @if u.irradiated { "yes" } @else { "no" } }
            td { (markers_markup(u, &board.required_markers)) }
            td { (u.cmv.as_str()) }
            td {
                (page::local_time(u.expires_at.naive_utc(), tz))
                br;
                (countdown(u.expires_at, now, &board.thresholds))
            }
            td {
                @if let Some(h) = holder {
                    a href=(format!("/console/requests/{}", h.request_id)) { "Request " (h.request_id) }
                    @if h.status == AllocationStatus::Issued { " (issued)" } @else { " (allocated)" }
                } @else if let Some(request) = reserved {
                    "reserved for "
                    a href=(format!("/console/requests/{request}")) { "request " (request) }
                } @else {
                    span.muted { "none" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_filter_values_round_trip_and_read_a_hand_typed_plus() {
        for g in Group::all() {
            assert_eq!(Group::parse(&g.value()), Some(g), "{}", g.value());
        }
        let a_pos = Some(Group {
            abo: Abo::A,
            rhd: Some(Rhd::Positive),
        });
        assert_eq!(Group::parse("A "), a_pos);
        assert_eq!(Group::parse("a+"), a_pos);
        assert_eq!(
            Group::parse("AB"),
            Some(Group {
                abo: Abo::Ab,
                rhd: None
            })
        );
        for bad in ["", "+", "C+", "A+-", "AB--", "O*"] {
            assert_eq!(Group::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_refuse_what_the_board_does_not_show() {
        assert_eq!(Filters::parse("").expect("empty"), Filters::default());
        assert_eq!(
            Filters::parse("group=&status=&done=x").expect("blank"),
            Filters::default()
        );
        let f = Filters::parse("group=O-&status=expired").expect("ok");
        assert_eq!(f.status, Some(UnitStatus::Expired));
        assert_eq!(f.query(), "?group=O-&status=expired");
        assert_eq!(Filters::parse(&f.query()[1..]).expect("again"), f);
        assert_eq!(Filters::parse("group=A%2B").expect("ok").query(), "?group=A%2B");
        for bad in [
            "status=transfused",
            "status=discarded",
            "status=nope",
            "group=Z",
            "group=%FF",
        ] {
            assert!(Filters::parse(bad).is_err(), "{bad}");
        }
    }

    /// console.js decides bands, labels and the clock as `domain::board` does: run it (with
    /// node, when installed) over the same table of boundaries.
    #[test]
    fn the_browser_countdown_agrees_with_the_domain_rule() {
        let Ok(node) = which_node() else {
            eprintln!("node is not installed; the JavaScript side of this check is skipped");
            return;
        };
        let thresholds: &[&[u32]] = &[&[8, 4, 2], &[6], &[2, 12, 6], &[], &[72, 1]];
        let mut cases = Vec::new();
        for t in thresholds {
            let mut points = vec![-1_000_000_000_000, -3600, -1, 0, 1, 59, 3600, 30 * 3600];
            for h in t.iter() {
                let s = i64::from(*h) * 3600;
                points.extend([s - 1, s, s + 1]);
            }
            for p in points {
                cases.push((p, t.to_vec()));
            }
        }
        let table = serde_json::to_string(
            &cases
                .iter()
                .map(|(secs, t)| serde_json::json!([secs, t.iter().map(|h| h * 3600).collect::<Vec<_>>()]))
                .collect::<Vec<_>>(),
        )
        .expect("json");
        let script = format!(
            "{}\nconst c = globalThis.granuloCountdown;\n\
             const cases = {table};\n\
             const out = cases.map(([s, b]) => {{ const d = c.describe(s, b); return [d.band, d.label, c.clockText(s)]; }});\n\
             out.push([c.secondsLeft(1001, 0), c.secondsLeft(1000, 0), c.secondsLeft(-999, 0), c.secondsLeft(-1500, 0)]);\n\
             process.stdout.write(JSON.stringify(out));",
            include_str!("../../../assets/console/console.js")
        );
        let out = std::process::Command::new(node)
            .args(["-e", &script])
            .output()
            .expect("node runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json from node");
        for ((secs, t), js) in cases.iter().zip(&got) {
            let want = serde_json::json!([
                rules::expiry_band(*secs, t).class(),
                rules::expiry_label(*secs, t),
                rules::clock_text(*secs)
            ]);
            assert_eq!(js, &want, "{secs} s, thresholds {t:?}");
        }
        let at = DateTime::from_timestamp(0, 0).expect("epoch");
        let ms = chrono::TimeDelta::milliseconds;
        let rust_left: Vec<i64> = [1001, 1000, -999, -1500]
            .map(|m| rules::seconds_left(at + ms(m), at))
            .to_vec();
        assert_eq!(got.last(), Some(&serde_json::json!(rust_left)));
    }

    fn which_node() -> Result<&'static str, ()> {
        for candidate in ["node", "nodejs"] {
            if std::process::Command::new(candidate)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(candidate);
            }
        }
        Err(())
    }
}
