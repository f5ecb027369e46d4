//! Alerts & tasks: the open alerts, most severe and most recent first, with acknowledge; the
//! open tasks, soonest due first, with complete. Both over the services of `/api/v1/alerts`
//! and `/api/v1/tasks`, and live on `sse:alerts`.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Nav};
use super::{ConsoleResult, ConsoleUser, html, see_other};
use crate::auth::Role;
use crate::domain::alerts::{AlertEntity, AlertKind, AlertSeverity, AlertStatus};
use crate::error::{ApiError, ApiResult};
use crate::input::{Text, parse_id};
use crate::services::alerts as alert_work;
use crate::services::tasks::{self as task_work, CompleteInput, OwnerRole, TaskKind, TaskStatus, TaskView};
use crate::state::AppState;
use crate::store::DbConn;
use crate::store::alerts::Alert;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/alerts").route(web::get().to(show)))
        .service(web::resource("/alerts/open").route(web::get().to(alerts_fragment)))
        .service(web::resource("/alerts/{id}/ack").route(web::post().to(acknowledge)))
        .service(web::resource("/tasks/open").route(web::get().to(tasks_fragment)))
        .service(web::resource("/tasks/{id}/complete").route(web::post().to(complete)));
}

/// The API's largest page: the lists are read page by page to the end.
const PAGE: i64 = 500;

#[derive(Deserialize, Default)]
struct PageQuery {
    done: Option<String>,
}

#[derive(Deserialize)]
pub struct AckForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct CompleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
}

/// Open alerts as `GET /api/v1/alerts?status=open` lists them, every page.
fn open_alerts(conn: &mut DbConn) -> ApiResult<Vec<Alert>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (rows, next) = alert_work::list(conn, Some(AlertStatus::Open), None, after, PAGE)?;
        after = rows.last().map(|a| a.id);
        all.extend(rows);
        if next.is_none() || after.is_none() {
            break;
        }
    }
    // Most severe first, then the latest occurrence first.
    all.sort_by(|a, b| {
        (b.severity.rank(), b.last_occurred_at, b.id).cmp(&(a.severity.rank(), a.last_occurred_at, a.id))
    });
    Ok(all)
}

/// Open tasks as `GET /api/v1/tasks?status=open` lists them, every page; soonest due first.
fn open_tasks(conn: &mut DbConn) -> ApiResult<Vec<TaskView>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (rows, next) = task_work::list(
            conn,
            task_work::ListRequest {
                status: Some(TaskStatus::Open),
                kind: None,
                after_id: after,
                limit: PAGE,
            },
        )?;
        after = rows.iter().map(|t| t.id).max();
        all.extend(rows);
        if next.is_none() || after.is_none() {
            break;
        }
    }
    all.sort_by_key(|t| (t.due_at, t.id));
    Ok(all)
}

/// A note typed into a task's form, given back with a refusal.
type KeptNote = Option<(i64, String)>;

async fn show(req: HttpRequest, state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let query: PageQuery = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    render(&state, &who, query.done.as_deref(), None, None).await
}

/// The whole page, with a confirmation or a refusal (answered with the refusal's status).
async fn render(
    state: &AppState,
    who: &ConsoleUser,
    done: Option<&str>,
    refused: Option<&ApiError>,
    kept: KeptNote,
) -> ConsoleResult {
    let (alerts, tasks) = state.db(|conn| Ok((open_alerts(conn)?, open_tasks(conn)?))).await?;
    let tz = state.settings.timezone;
    let body = html! {
        @if let Some(err) = refused { (page::refusal(err)) }
        (page::notice(done))
        (alerts_section(&alerts, who, tz))
        (tasks_section(&tasks, who, tz, &kept))
        (page::zone_note(tz))
    };
    let markup = page::layout("Alerts & tasks", who, Nav::Alerts, body);
    Ok(match refused {
        None => html(markup),
        Some(err) => HttpResponse::build(err.code().status())
            .content_type(page::HTML)
            .body(markup.into_string()),
    })
}

async fn alerts_fragment(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let alerts = state.db(open_alerts).await?;
    Ok(html(alerts_section(&alerts, &who, state.settings.timezone)))
}

async fn tasks_fragment(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let tasks = state.db(open_tasks).await?;
    Ok(html(tasks_section(&tasks, &who, state.settings.timezone, &None)))
}

/// `POST /console/alerts/{id}/ack`: `POST /api/v1/alerts/{id}/ack`.
async fn acknowledge(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<AckForm>,
) -> ConsoleResult {
    who.check_csrf(&form.csrf)?;
    who.require(&Role::STAFF)?;
    let actor = who.user.actor();
    let outcome = match parse_id(&id, "alert") {
        Ok(id) => state.write(move |conn| alert_work::acknowledge(conn, &actor, id)).await,
        Err(err) => Err(err),
    };
    match outcome {
        Ok(alert) => Ok(back(&format!("Alert {} acknowledged.", alert.id))),
        Err(err) => render(&state, &who, None, Some(&err), None).await,
    }
}

/// `POST /console/tasks/{id}/complete`: `POST /api/v1/tasks/{id}/complete`.
async fn complete(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<CompleteForm>,
) -> ConsoleResult {
    who.check_csrf(&form.csrf)?;
    who.require(&Role::STAFF)?;
    let director = who.role() == Role::MedicalDirector;
    let actor = who.user.actor();
    let CompleteForm { note, .. } = form.into_inner();
    let parsed = parse_id(&id, "task").and_then(|id| Ok((id, Text::field("note", &note)?)));
    let outcome = match parsed {
        Ok((id, note)) => {
            state
                .write(move |conn| task_work::complete(conn, &actor, director, id, CompleteInput { note }))
                .await
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(task) => Ok(back(&format!("Task {} completed.", task.id))),
        Err(err) => {
            let kept = parse_id(&id, "task").ok().map(|id| (id, note));
            render(&state, &who, None, Some(&err), kept).await
        }
    }
}

fn back(done: &str) -> HttpResponse {
    let query = serde_urlencoded::to_string([("done", done)]).unwrap_or_default();
    see_other(&format!("/console/alerts?{query}"))
}

/// An alert kind as staff say it.
pub fn kind_words(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::UnitExpiring => "Unit expiring",
        AlertKind::UnitExpired => "Unit expired",
        AlertKind::UnitQuarantined => "Unit quarantined",
        AlertKind::UnitPositiveResultAfterRelease => "Positive result after release",
        AlertKind::SampleExpiring => "Crossmatch sample expiring",
        AlertKind::StimulationWindowMissed => "Stimulation window missed",
        AlertKind::CollectionDonorIneligible => "Collection donor not eligible",
        AlertKind::CollectionUnstimulated => "Collection without stimulation",
        AlertKind::RequestUnallocated => "Request without units",
        AlertKind::TransfusionOutcomeMissing => "Transfusion outcome missing",
        AlertKind::AllocationAntiDProphylaxis => "Anti-D prophylaxis needed",
        AlertKind::PatientGroupDiscordant => "Patient group discordant",
        AlertKind::TaskOverdue => "Task overdue",
        AlertKind::CoursePlanBroken => "Course plan broken",
    }
}

/// A task kind as staff say it.
pub fn task_words(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::AntiDProphylaxis => "Anti-D prophylaxis",
        TaskKind::LookForward => "Look-forward",
        TaskKind::EmergencyReleaseFollowUp => "Emergency release follow-up",
    }
}

fn severity_badge(severity: AlertSeverity) -> Markup {
    html! { span class={ "badge sev-" (severity.as_str()) } { (severity.as_str()) } }
}

/// A number from the alert's details, for links to what it names.
fn detail_id(details: &serde_json::Value, key: &str) -> Option<i64> {
    details
        .get(key)
        .and_then(serde_json::Value::as_i64)
        .filter(|id| *id > 0)
}

/// What the alert is about, linked to its console page where there is one.
fn about(a: &Alert) -> Markup {
    let details: serde_json::Value = serde_json::from_str(&a.details).unwrap_or(serde_json::Value::Null);
    let id = a.entity_id.parse::<i64>().ok().filter(|id| *id > 0);
    let unit = |id: i64| html! { a href=(format!("/console/units/{id}")) { "Unit " (id) } };
    let request = |id: i64| html! { a href=(format!("/console/requests/{id}")) { "Request " (id) } };
    html! {
        @match (a.entity_type, id) {
            (AlertEntity::Unit, Some(id)) => { (unit(id)) }
            (AlertEntity::Request, Some(id)) => { (request(id)) }
            (AlertEntity::Task, Some(id)) => { a href=(format!("#task-{id}")) { "Task " (id) } }
            (AlertEntity::Allocation, _) => {
                "Allocation " (a.entity_id)
                @if let Some(r) = detail_id(&details, "request_id") { " · " (request(r)) }
                @if let Some(u) = detail_id(&details, "unit_id") { " · " (unit(u)) }
            }
            (AlertEntity::Collection, _) => { "Collection " (a.entity_id) }
            (AlertEntity::Patient, _) => { "Patient " (a.entity_id) }
            (entity, None) => { (entity.as_str()) " " (a.entity_id) }
        }
    }
}

/// `section#alerts`: reloads itself on `sse:alerts`.
fn alerts_section(alerts: &[Alert], who: &ConsoleUser, tz: chrono_tz::Tz) -> Markup {
    html! {
        section #alerts aria-labelledby="alerts-heading" hx-get="/console/alerts/open" hx-trigger="sse:alerts" hx-swap="outerHTML" {
            h2 #alerts-heading { "Open alerts " span.count { "(" (alerts.len()) ")" } }
            @if alerts.is_empty() {
                p.empty { "No open alerts." }
            } @else {
                table {
                    caption { "Most severe first, then the most recent." }
                    thead {
                        tr {
                            th scope="col" { "Alert" }
                            th scope="col" { "Severity" }
                            th scope="col" { "About" }
                            th scope="col" { "Raised" }
                            th scope="col" { "Action" }
                        }
                    }
                    tbody {
                        @for a in alerts {
                            tr id=(format!("alert-{}", a.id)) data-alert-id=(a.id) data-kind=(a.kind.as_str()) data-severity=(a.severity.as_str()) {
                                th scope="row" id=(format!("alert-{}-what", a.id)) {
                                    span.kind { (kind_words(a.kind)) }
                                    " " code.muted { (a.kind.as_str()) }
                                    p.message { (a.message) }
                                }
                                td {
                                    (severity_badge(a.severity))
                                    @if let Some(h) = a.threshold_hours { " under " (h) " h" }
                                    @if let Some(at) = a.escalated_at {
                                        br; span.escalated { "escalated " (page::local_time(at, tz)) }
                                    }
                                    @if a.episode > 1 { br; span.muted { "episode " (a.episode) } }
                                    @if a.occurrences > 1 { br; span.muted { "seen " (a.occurrences) " times" } }
                                }
                                td.about { (about(a)) }
                                td { (page::local_time(a.created_at, tz)) }
                                td {
                                    form.inline method="post" action=(format!("/console/alerts/{}/ack", a.id)) {
                                        (page::csrf_field(who))
                                        button type="submit" aria-describedby=(format!("alert-{}-what", a.id)) { "Acknowledge" }
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

/// `section#tasks`: reloads itself on `sse:alerts` (an overdue task raises `task.overdue`).
fn tasks_section(tasks: &[TaskView], who: &ConsoleUser, tz: chrono_tz::Tz, kept: &KeptNote) -> Markup {
    let local = |t: DateTime<Utc>| page::local_time(t.naive_utc(), tz);
    let kept_for = |id: i64| kept.as_ref().filter(|(k, _)| *k == id).map(|(_, note)| note.as_str());
    html! {
        section #tasks aria-labelledby="tasks-heading" hx-get="/console/tasks/open" hx-trigger="sse:alerts" hx-swap="outerHTML" {
            h2 #tasks-heading { "Open tasks " span.count { "(" (tasks.len()) ")" } }
            @if tasks.is_empty() {
                p.empty { "No open tasks." }
            } @else {
                table {
                    caption { "Soonest due first." }
                    thead {
                        tr {
                            th scope="col" { "Task" }
                            th scope="col" { "Owner" }
                            th scope="col" { "Due" }
                            th scope="col" { "Complete" }
                        }
                    }
                    tbody {
                        @for t in tasks {
                            @let overdue = t.overdue;
                            @let note_id = format!("note-{}", t.id);
                            @let may = t.owner_role != OwnerRole::MedicalDirector || who.role() == Role::MedicalDirector;
                            tr id=(format!("task-{}", t.id)) data-task-id=(t.id) data-kind=(t.kind.as_str()) data-overdue=(overdue) {
                                th scope="row" id=(format!("task-{}-what", t.id)) {
                                    span.kind { (task_words(t.kind)) }
                                    p.subject { (t.title) }
                                }
                                td { (t.owner_role.as_str().replace('_', " ")) }
                                td {
                                    (local(t.due_at))
                                    @if overdue { " " span.badge.overdue { "overdue" } }
                                }
                                td {
                                    @if may {
                                        form.stack method="post" action=(format!("/console/tasks/{}/complete", t.id)) {
                                            (page::csrf_field(who))
                                            label for=(note_id) { "What was done" }
                                            textarea id=(note_id) name="note" rows="2" maxlength="500" required hx-preserve="true" {
                                                @if let Some(note) = kept_for(t.id) { (note) }
                                            }
                                            button type="submit" aria-describedby=(format!("task-{}-what", t.id)) { "Complete" }
                                        }
                                    } @else {
                                        p.muted { "A medical director completes this task." }
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
