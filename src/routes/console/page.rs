//! The console's page frame and the small pieces every page uses: navigation, the CSRF field,
//! refusals with their reason codes, and times in the facility's time zone.

use chrono::NaiveDateTime;
use maud::{DOCTYPE, Markup, html};

use super::ConsoleUser;
use crate::error::ApiError;

pub const HTML: &str = "text/html; charset=utf-8";

/// htmx settings: no `eval` (the CSP forbids it anyway), no injected indicator style (nor
/// inline styles), and no copy of pages with patient data in the browser's local storage.
const HTMX_CONFIG: &str = r#"{"allowEval":false,"allowScriptTags":false,"includeIndicatorStyles":false,"historyCacheSize":0,"selfRequestsOnly":true}"#;

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Board,
    Requests,
    Alerts,
    Today,
    /// A page under none of them (a unit's page).
    Other,
}

const NAV: [(Nav, &str, &str); 4] = [
    (Nav::Board, "/console/board", "Board"),
    (Nav::Requests, "/console/requests", "Requests"),
    (Nav::Alerts, "/console/alerts", "Alerts & tasks"),
    (Nav::Today, "/console/today", "Today"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · granulo" }
            link rel="stylesheet" href=(super::assets::path("console.css"));
            script defer src=(super::assets::path("htmx.min.js")) {}
            script defer src=(super::assets::path("htmx-ext-sse.min.js")) {}
            script defer src=(super::assets::path("console.js")) {}
        }
    }
}

/// A signed-in page: the navigation, who is signed in, sign-out, and `body` inside `main`.
/// The body element holds the live-update connection.
pub fn layout(title: &str, who: &ConsoleUser, active: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-ext="sse" sse-connect="/console/events" sse-close="signed-out" {
                // Listens for the end of the session (console.js then goes to sign-in).
                div hidden sse-swap="signed-out" {}
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/board" { "granulo" }
                    nav aria-label="Console" {
                        ul {
                            @for (entry, href, label) in NAV {
                                li {
                                    @if entry == active {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span { (who.user.name) " · " (who.user.role.as_str()) }
                        form method="post" action="/console/logout" {
                            (csrf_field(who))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
                p.live #live-status role="status" { "Live updates need JavaScript; reload to see changes." }
            }
        }
    }
}

/// A page outside a session (sign-in, refusals): no navigation, no live connection.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { span.brand { "granulo" } }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field every console form carries.
pub fn csrf_field(who: &ConsoleUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf); }
}

/// A refusal as the page shows it: the message, the stable code, each clinical reason with its
/// code, and each invalid field. Announced to screen readers.
pub fn refusal(err: &ApiError) -> Markup {
    let problem = err.problem();
    html! {
        div.refusal role="alert" {
            p {
                strong { "Refused: " } (problem.detail)
                " " code { (problem.code) }
            }
            @if !problem.reasons.is_empty() {
                ul {
                    @for reason in &problem.reasons {
                        li { code { (reason.code) } " " (reason.message) }
                    }
                }
            }
            @if !problem.errors.is_empty() {
                ul {
                    @for field in &problem.errors {
                        li { code { (field.field) } " " (field.message) }
                    }
                }
            }
        }
    }
}

/// A confirmation after a form post (the `done` query parameter of the page it leads back to).
pub fn notice(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p.notice role="status" { (message) }
        }
    }
}

/// The page an error is answered with.
pub fn error_page(err: &ApiError) -> Markup {
    let status = err.code().status();
    let title = status.canonical_reason().unwrap_or("Error");
    bare(
        title,
        html! {
            (refusal(err))
            p { a href="/console/board" { "Back to the board" } }
        },
    )
}

/// A time as the facility's staff read it, machine-readable in `datetime` (UTC).
pub fn local_time(t: NaiveDateTime, tz: chrono_tz::Tz) -> Markup {
    let utc = t.and_utc();
    let local = utc.with_timezone(&tz);
    html! {
        time datetime=(utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (local.format("%a %d %b %H:%M").to_string())
        }
    }
}

/// Only the clock (`HH:MM`) in the facility's time zone, for timelines within a day.
pub fn local_clock(t: NaiveDateTime, tz: chrono_tz::Tz) -> Markup {
    let utc = t.and_utc();
    html! {
        time datetime=(utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (utc.with_timezone(&tz).format("%H:%M").to_string())
        }
    }
}

/// The facility's time zone, named in page footers so nobody wonders which clock a time is on.
pub fn zone_note(tz: chrono_tz::Tz) -> Markup {
    html! { p.zone { "Times are " (tz.name()) " time." } }
}
