//! The staff console at `/console`: server-rendered HTML (maud) for people at the bench, over
//! the same services, roles and audit as `/api/v1`.
//!
//! * A person signs in with a cookie session (`signin`): an opaque cookie, `HttpOnly`,
//!   `SameSite=Strict`, `Secure` behind TLS; its hash is a row in `sessions`, revocable like
//!   every session, checked on every request.
//! * Every form post carries the session's CSRF token in a hidden `csrf` field (htmx only reads
//!   fragments; it posts nothing); [`ConsoleUser::check_csrf`] is the first line of every POST.
//! * Answers carry `Content-Security-Policy: script-src 'self'` and no inline script; the
//!   JavaScript (htmx, its SSE extension, `console.js`) is embedded in the binary (`assets`).
//! * Every page reads without JavaScript; live updates (`events`, SSE) and countdowns need it.

pub mod alerts;
pub mod assets;
pub mod board;
pub mod events;
pub mod page;
pub mod requests;
pub mod signin;
pub mod today;
pub mod unit;

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;

use crate::auth::{AuthUser, Role};
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The console's policy: scripts, styles, images, fetches and forms from this origin only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
                       frame-ancestors 'none'";

/// The session cookie. With `Secure`, the `__Host-` prefix also pins it to this host and path `/`.
pub const COOKIE: &str = "granulo_console";
pub const SECURE_COOKIE: &str = "__Host-granulo_console";

/// Register `/console` and its pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .app_data(web::FormConfig::default().limit(16 * 1024).error_handler(|err, _req| {
                ConsoleError::from(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("the form could not be read: {err}"),
                ))
                .into()
            }))
            .wrap(actix_web::middleware::DefaultHeaders::new().add((header::CONTENT_SECURITY_POLICY, CSP)))
            .service(web::resource("").route(web::get().to(home)))
            .service(web::resource("/").route(web::get().to(home)))
            .service(
                web::resource("/login")
                    .route(web::get().to(signin::form))
                    .route(web::post().to(signin::submit)),
            )
            .service(web::resource("/login/mfa").route(web::post().to(signin::submit_code)))
            .service(web::resource("/login/enrol").route(web::post().to(signin::submit_enrolment)))
            .service(web::resource("/logout").route(web::post().to(signin::logout)))
            .service(web::resource("/assets/{name}").route(web::get().to(assets::serve)))
            .service(web::resource("/events").route(web::get().to(events::stream)))
            .configure(board::configure)
            .configure(requests::configure)
            .configure(alerts::configure)
            .configure(today::configure)
            .configure(unit::configure)
            .default_service(web::to(|req: HttpRequest| async move {
                Err::<HttpResponse, _>(ConsoleError::from(ApiError::new(
                    ErrorCode::NotFound,
                    format!("there is no console page at {}", req.path()),
                )))
            })),
    );
}

async fn home() -> HttpResponse {
    see_other("/console/board")
}

/// 303 See Other: where a form post or a bare `/console` leads.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// A signed-in staff member at the console, with what a page needs to render forms.
#[derive(Debug, Clone)]
pub struct ConsoleUser {
    pub user: AuthUser,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl ConsoleUser {
    /// The first line of every form post: the token must be the session's.
    pub fn check_csrf(&self, presented: &str) -> Result<(), ConsoleError> {
        if crate::auth::tokens::csrf_matches_token(&self.csrf, presented) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::CsrfTokenInvalid,
                "this form did not carry the session's security token; reload the page and try again",
            )
            .into())
        }
    }

    pub fn role(&self) -> Role {
        self.user.role
    }

    /// Refuse unless the signed-in person has one of `roles` (a page or form only some staff use).
    pub fn require(&self, roles: &[Role]) -> Result<(), ConsoleError> {
        self.user.require(roles).map_err(ConsoleError::from)
    }
}

/// The cookie a request carries, under either name.
pub fn session_cookie(req: &HttpRequest) -> Option<String> {
    [SECURE_COOKIE, COOKIE]
        .iter()
        .find_map(|name| req.cookie(name))
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

impl FromRequest for ConsoleUser {
    type Error = ConsoleError;
    type Future = LocalBoxFuture<'static, Result<Self, ConsoleError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let cookie = session_cookie(req);
        // A page load is sent to sign in; htmx fragments, the event stream and form posts get
        // the refusal itself (a redirect would be swapped into the page or retried forever).
        let accepts_stream = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let wants_page = req.method() == actix_web::http::Method::GET
            && req.headers().get("HX-Request").is_none()
            && !accepts_stream
            && req.path() != "/console/events";
        let next = req.uri().path_and_query().map(|p| p.as_str().to_owned());
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ConsoleError::from(ApiError::internal(anyhow::anyhow!("AppState missing"))))?;
            let sign_in = |err: ApiError| {
                if wants_page {
                    ConsoleError::SignIn {
                        next: next.clone(),
                        reason: err,
                    }
                } else {
                    ConsoleError::from(err)
                }
            };
            let Some(cookie) = cookie else {
                return Err(sign_in(ApiError::new(
                    ErrorCode::NotSignedIn,
                    "sign in to use the console",
                )));
            };
            let csrf = crate::auth::tokens::csrf_token(&cookie);
            let user = state
                .db(move |conn| crate::auth::load_console_user(conn, &cookie, crate::store::now()))
                .await
                .map_err(|err| match err.code() {
                    // A hospital account (or another non-staff role) is told so, not sent to sign in.
                    ErrorCode::Forbidden => ConsoleError::from(err),
                    ErrorCode::NotSignedIn | ErrorCode::SessionRevoked | ErrorCode::SessionExpired => sign_in(err),
                    _ => ConsoleError::from(err),
                })?;
            Ok(ConsoleUser { user, csrf })
        })
    }
}

/// An error answered as an HTML page (the console never answers problem+json): the status,
/// the code, the message and any clinical reason codes, with a way back.
#[derive(Debug)]
pub enum ConsoleError {
    /// Not signed in (or the session ended) on a page load: to the sign-in page, then back.
    SignIn {
        next: Option<String>,
        reason: ApiError,
    },
    Refused(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(err: ApiError) -> Self {
        Self::Refused(err)
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignIn { reason, .. } => write!(f, "sign in: {reason}"),
            Self::Refused(err) => write!(f, "{err}"),
        }
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::Refused(err) => err.code().status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignIn { next, reason } => {
                let mut location = "/console/login".to_owned();
                let mut params = Vec::new();
                if let Some(next) = next.as_deref().filter(|n| signin::is_console_path(n)) {
                    params.push(("next", next.to_owned()));
                }
                if reason.code() != ErrorCode::NotSignedIn {
                    params.push(("ended", reason.code().as_str().to_owned()));
                }
                if !params.is_empty() {
                    location.push('?');
                    location.push_str(&serde_urlencoded::to_string(&params).unwrap_or_default());
                }
                see_other(&location)
            }
            Self::Refused(err) => {
                if err.code().status().is_server_error() {
                    tracing::error!(error = %err, "console request failed");
                }
                let status = err.code().status();
                let mut builder = HttpResponse::build(status);
                builder.content_type(page::HTML);
                if let Some(secs) = err.retry_after_secs() {
                    builder.insert_header((header::RETRY_AFTER, secs.to_string()));
                }
                builder.body(page::error_page(err).into_string())
            }
        }
    }
}

/// A console handler's result.
pub type ConsoleResult<T = HttpResponse> = Result<T, ConsoleError>;

/// An HTML page answer (200).
pub fn html(markup: maud::Markup) -> HttpResponse {
    HttpResponse::Ok().content_type(page::HTML).body(markup.into_string())
}
