//! The requests pages: the priority lanes (`lanes`), one request with its candidates,
//! allocations and course plan (`detail`, `plan`), and the forms that allocate, issue by
//! scanning, approve, and propose and book a course plan.
//!
//! Every form calls the service the matching `/api/v1` handler calls, with its role check:
//! allocate → `POST /requests/{id}/allocations` (staff), issue → `POST /allocations/{id}/issue`
//! (staff), approve / decline → `POST /requests/{id}/approve|decline` (medical director),
//! propose / book a plan → `POST /requests/{id}/plan` and `/plan/accept` (staff). A refusal
//! re-renders the request page with the reason codes, under the error's status.

mod detail;
mod lanes;
mod plan;
mod words;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::html;

use super::page::{self, Nav};
use super::{ConsoleError, ConsoleResult, ConsoleUser, see_other};
use crate::auth::Role;
use crate::error::{ApiError, Validator};
use crate::input::{Text, parse_id};
use crate::routes::with_policy;
use crate::services::allocations::{self as allocation_work, AllocateInput, IssueInput};
use crate::services::course_plans::{self as plan_work, AcceptInput};
use crate::services::decisions::AuthorisationInput;
use crate::services::requests as work;
use crate::state::AppState;
use detail::{AllocateEcho, AuthEcho, Echo, IssueEcho};

/// The roles offered for who authorised a unit over authorise-tier findings. The API takes any
/// role text; these are the people a night shift calls.
pub const AUTHORISER_ROLES: [&str; 4] = [
    "on-call haematologist",
    "consultant haematologist",
    "transfusion medicine physician",
    "medical director",
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/requests").route(web::get().to(index)))
        .service(web::resource("/requests/lanes").route(web::get().to(lanes_fragment)))
        .service(web::resource("/requests/{id}").route(web::get().to(show)))
        .service(web::resource("/requests/{id}/allocate").route(web::post().to(allocate)))
        .service(web::resource("/requests/{id}/approve").route(web::post().to(approve)))
        .service(web::resource("/requests/{id}/decline").route(web::post().to(decline)))
        .service(web::resource("/requests/{id}/plan").route(web::post().to(propose_plan)))
        .service(web::resource("/requests/{id}/plan/accept").route(web::post().to(accept_plan)))
        .service(web::resource("/allocations/{id}/issue").route(web::post().to(issue)));
}

/// Allocating, issuing and planning the course: staff, as `POST /requests/{id}/allocations`,
/// `/allocations/{id}/issue` and `/requests/{id}/plan`.
pub fn may_allocate(who: &ConsoleUser) -> bool {
    who.user.require(&Role::STAFF).is_ok()
}

/// Approving or declining a request: a medical director, as `POST /requests/{id}/approve`.
pub fn may_decide(who: &ConsoleUser) -> bool {
    who.user.require(&[Role::MedicalDirector]).is_ok()
}

const DECIDERS: [Role; 1] = [Role::MedicalDirector];

async fn index(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let tz = state.settings.timezone;
    let lanes = state.db(with_policy(lanes::load)).await?;
    Ok(super::html(page::layout(
        "Requests",
        &who,
        Nav::Requests,
        html! {
            p.hint {
                "Requests still to serve (open, or waiting for approval), most urgent first in each lane. "
                "Scheduled requests are in the routine lane."
            }
            (lanes::render(&lanes, tz))
            (page::zone_note(tz))
        },
    )))
}

/// The lanes alone, for the live reload.
async fn lanes_fragment(state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let tz = state.settings.timezone;
    let lanes = state.db(with_policy(lanes::load)).await?;
    Ok(super::html(lanes::render(&lanes, tz)))
}

/// The `done` confirmation a form post leads back with.
fn done_of(req: &HttpRequest) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    pairs
        .into_iter()
        .find(|(k, _)| k == "done")
        .map(|(_, v)| v.chars().take(200).collect::<String>())
        .filter(|v| !v.trim().is_empty())
}

fn back_to(request_id: i64, done: &str) -> HttpResponse {
    let query = serde_urlencoded::to_string([("done", done)]).unwrap_or_default();
    see_other(&format!("/console/requests/{request_id}?{query}"))
}

async fn show(state: web::Data<AppState>, who: ConsoleUser, id: web::Path<String>, req: HttpRequest) -> ConsoleResult {
    who.require(&Role::STAFF)?;
    let id = parse_id(&id, "request")?;
    let echo = Echo {
        done: done_of(&req),
        ..Echo::default()
    };
    render(&state, &who, id, echo, StatusCode::OK).await
}

async fn render(state: &AppState, who: &ConsoleUser, id: i64, echo: Echo, status: StatusCode) -> ConsoleResult {
    let tz = state.settings.timezone;
    let loaded = state
        .db(with_policy(move |conn, policy| detail::load(conn, id, policy)))
        .await?;
    let body = page::layout(
        &detail::title(&loaded),
        who,
        Nav::Requests,
        detail::render(&loaded, who, tz, &echo),
    );
    Ok(HttpResponse::build(status)
        .content_type(page::HTML)
        .body(body.into_string()))
}

/// The request page again, with the refusal on top and the form as it was posted, under the
/// refusal's status. A server failure is answered as such.
async fn refused(state: &AppState, who: &ConsoleUser, request_id: i64, mut echo: Echo) -> ConsoleResult {
    let Some(err) = echo.refusal.take() else {
        return render(state, who, request_id, echo, StatusCode::OK).await;
    };
    let status = err.code().status();
    if status.is_server_error() {
        return Err(ConsoleError::from(err));
    }
    echo.refusal = Some(err);
    render(state, who, request_id, echo, status).await
}

/// A posted form: repeated fields (`acknowledge`) kept, every value a string.
struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, "" when absent.
    fn one(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    /// Every non-blank value of `name`.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    fn auth_echo(&self) -> AuthEcho {
        AuthEcho {
            by: self.one("auth_by").to_owned(),
            role: self.one("auth_role").to_owned(),
            reason: self.one("auth_reason").to_owned(),
        }
    }

    /// `acknowledge` as the API takes it: absent when none is ticked.
    fn acknowledge(&self) -> Option<Vec<String>> {
        Some(self.all("acknowledge")).filter(|codes| !codes.is_empty())
    }

    /// The authorisation when any of its fields is filled (then all are required), recorded as
    /// given now.
    fn authorisation(&self) -> Result<Option<AuthorisationInput>, ApiError> {
        let e = self.auth_echo();
        if [&e.by, &e.role, &e.reason].iter().all(|v| v.trim().is_empty()) {
            return Ok(None);
        }
        let mut v = Validator::new();
        let by = Text::<1, 200>::new(&e.by).map_err(|m| v.push("auth_by", m)).ok();
        let role = Text::<1, 100>::new(&e.role).map_err(|m| v.push("auth_role", m)).ok();
        let reason = Text::<1, 500>::new(&e.reason)
            .map_err(|m| v.push("auth_reason", m))
            .ok();
        v.finish()?;
        match (by, role, reason) {
            (Some(by), Some(role), Some(reason)) => Ok(Some(AuthorisationInput {
                by,
                role,
                at: crate::services::utc(crate::store::now()),
                reason,
            })),
            _ => Err(ApiError::field("authorisation", "is incomplete")),
        }
    }
}

fn allocate_input(f: &Fields) -> Result<AllocateInput, ApiError> {
    let unit_id = f
        .one("unit_id")
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::field("unit_id", "must be the id of a unit"))?;
    Ok(AllocateInput {
        unit_id,
        acknowledge: f.acknowledge(),
        authorisation: f.authorisation()?,
    })
}

/// `POST /console/requests/{id}/allocate`: as `POST /api/v1/requests/{id}/allocations`.
async fn allocate(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> ConsoleResult {
    let fields = Fields(form.into_inner());
    who.check_csrf(fields.one("csrf"))?;
    who.require(&Role::STAFF)?;
    let id = parse_id(&id, "request")?;
    let posted = AllocateEcho {
        unit_id: fields.one("unit_id").trim().parse().unwrap_or(0),
        acknowledged: fields.all("acknowledge"),
        auth: fields.auth_echo(),
    };
    let outcome = match allocate_input(&fields) {
        Ok(input) => {
            let actor = who.user.actor();
            state
                .write(with_policy(move |conn, policy| {
                    allocation_work::allocate(conn, &actor, id, input, policy)
                }))
                .await
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(created) => Ok(back_to(id, &format!("Allocated {}", created.din))),
        Err(err) => {
            let echo = Echo {
                refusal: Some(err),
                allocate: Some(posted),
                ..Echo::default()
            };
            refused(&state, &who, id, echo).await
        }
    }
}

/// `POST /console/allocations/{id}/issue`: as `POST /api/v1/allocations/{id}/issue`; the final
/// checks (the scanned DIN among them) are the service's.
async fn issue(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> ConsoleResult {
    let fields = Fields(form.into_inner());
    who.check_csrf(fields.one("csrf"))?;
    who.require(&Role::STAFF)?;
    let id = parse_id(&id, "allocation")?;
    let posted = IssueEcho {
        allocation_id: id,
        acknowledged: fields.all("acknowledge"),
        auth: fields.auth_echo(),
    };
    let outcome = match fields.authorisation() {
        Ok(authorisation) => {
            let input = IssueInput {
                scanned_din: fields.one("scanned_din").to_owned(),
                scanned_group: None,
                acknowledge: fields.acknowledge(),
                authorisation,
            };
            let actor = who.user.actor();
            state
                .write(with_policy(move |conn, policy| {
                    allocation_work::issue(conn, &actor, id, input, policy)
                }))
                .await
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(issued) => Ok(back_to(issued.request_id, &format!("Issued {}", issued.din))),
        Err(err) => {
            // The refusal is shown on the page of the allocation's request.
            let request_id = state
                .db(move |conn| allocation_work::get(conn, id, None))
                .await?
                .request_id;
            let echo = Echo {
                refusal: Some(err),
                issue: Some(posted),
                ..Echo::default()
            };
            refused(&state, &who, request_id, echo).await
        }
    }
}

async fn decide(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
    approve: bool,
) -> ConsoleResult {
    let fields = Fields(form.into_inner());
    who.check_csrf(fields.one("csrf"))?;
    who.require(&DECIDERS)?;
    let id = parse_id(&id, "request")?;
    let reason = Text::<0, 500>::new(fields.one("reason")).map_err(|m| ApiError::field("reason", m));
    let outcome = match reason {
        Ok(reason) => {
            let actor = who.user.actor();
            let reason = Some(reason.into_inner()).filter(|r| !r.is_empty());
            state
                .write(with_policy(move |conn, policy| {
                    work::decide(conn, &actor, id, approve, reason.as_deref(), policy)
                }))
                .await
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(_) if approve => Ok(back_to(id, &format!("Approved request {id}"))),
        Ok(_) => Ok(back_to(id, &format!("Declined request {id}"))),
        Err(err) => {
            let echo = Echo {
                refusal: Some(err),
                ..Echo::default()
            };
            refused(&state, &who, id, echo).await
        }
    }
}

/// `POST /console/requests/{id}/approve`: as `POST /api/v1/requests/{id}/approve`.
async fn approve(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> ConsoleResult {
    decide(state, who, id, form, true).await
}

/// `POST /console/requests/{id}/decline`: as `POST /api/v1/requests/{id}/decline` (reason
/// required).
async fn decline(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> ConsoleResult {
    decide(state, who, id, form, false).await
}

/// The page again with the refusal, or a server failure as such.
async fn refused_with(state: &AppState, who: &ConsoleUser, request_id: i64, err: ApiError) -> ConsoleResult {
    let echo = Echo {
        refusal: Some(err),
        ..Echo::default()
    };
    refused(state, who, request_id, echo).await
}

/// `POST /console/requests/{id}/plan`: as `POST /api/v1/requests/{id}/plan` (a repair while a
/// plan is in force).
async fn propose_plan(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> ConsoleResult {
    let fields = Fields(form.into_inner());
    who.check_csrf(fields.one("csrf"))?;
    who.require(&Role::STAFF)?;
    let id = parse_id(&id, "request")?;
    let outcome = crate::routes::requests::propose_plan(&state, who.user.actor(), id).await;
    match outcome {
        Ok(plan) => {
            let uncovered = plan.score.uncovered_days;
            Ok(back_to(
                id,
                &format!("Proposed course plan {} ({uncovered} day(s) uncovered)", plan.id),
            ))
        }
        Err(err) => refused_with(&state, &who, id, err).await,
    }
}

/// `POST /console/requests/{id}/plan/accept`: as `POST /api/v1/requests/{id}/plan/accept`
/// with the posted `plan_id`.
async fn accept_plan(
    state: web::Data<AppState>,
    who: ConsoleUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> ConsoleResult {
    let fields = Fields(form.into_inner());
    who.check_csrf(fields.one("csrf"))?;
    who.require(&Role::STAFF)?;
    let id = parse_id(&id, "request")?;
    let plan_id = fields
        .one("plan_id")
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::field("plan_id", "must be the id of a course plan"));
    let outcome = match plan_id {
        Ok(plan_id) => {
            let actor = who.user.actor();
            state
                .write(with_policy(move |conn, policy| {
                    plan_work::accept(conn, &actor, id, AcceptInput { plan_id }, policy)
                }))
                .await
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(plan) => {
            let booked = plan
                .days
                .iter()
                .filter(|d| d.kind == plan_work::DayKind::Donor && d.collection_id.is_some())
                .count();
            Ok(back_to(
                id,
                &format!("Booked course plan {} ({booked} collection(s))", plan.id),
            ))
        }
        Err(err) => refused_with(&state, &who, id, err).await,
    }
}
