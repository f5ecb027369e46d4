//! Signing in and out of the console.
//!
//! The sign-in form is protected against login CSRF with a short-lived cookie of its own whose
//! HMAC the form carries. A right password opens a console session (a cookie, its hash stored),
//! under the same throttling as `POST /api/v1/auth/login`. Logout revokes the session row, so
//! the cookie is dead everywhere at once, the live-update stream included.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::{HttpRequest, HttpResponse, web};
use maud::html;
use serde::Deserialize;

use super::{COOKIE, ConsoleError, ConsoleResult, ConsoleUser, SECURE_COOKIE, page, see_other};
use crate::auth::{session, tokens};
use crate::error::{ApiError, ErrorCode};
use crate::routes::auth::check_password;
use crate::state::AppState;
use crate::store::now;

/// The sign-in form's own cookie (login CSRF), scoped to the form's path.
const LOGIN_COOKIE: &str = "granulo_login";
const LOGIN_PATH: &str = "/console/login";

#[derive(Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
    ended: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// A path inside the console that a sign-in may lead back to (never another site: no scheme,
/// no `//`, no backslash).
pub fn is_console_path(next: &str) -> bool {
    next.starts_with("/console") && !next.starts_with("//") && !next.contains('\\') && !next.contains("://")
}

/// Whether the session cookie must be `Secure`: configured so, or the request arrived as HTTPS
/// (the forwarded scheme counts only when the operator trusts the proxy's headers).
fn secure(req: &HttpRequest, state: &AppState) -> bool {
    if state.settings.cookie_secure {
        return true;
    }
    let info = req.connection_info();
    let direct = req.app_config().secure();
    direct || (state.settings.trust_forwarded_for && info.scheme() == "https")
}

fn login_cookie(value: &str, secure: bool) -> Cookie<'static> {
    Cookie::build(LOGIN_COOKIE, value.to_owned())
        .path(LOGIN_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(CookieDuration::hours(1))
        .finish()
}

fn sign_in_page(next: Option<&str>, notice: Option<&str>, error: Option<&ApiError>, login_csrf: &str) -> maud::Markup {
    page::bare(
        "Sign in",
        html! {
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            @if let Some(err) = error { (page::refusal(err)) }
            form.signin method="post" action=(LOGIN_PATH) {
                input type="hidden" name="csrf" value=(login_csrf);
                @if let Some(next) = next.filter(|n| is_console_path(n)) {
                    input type="hidden" name="next" value=(next);
                }
                label for="username" { "Username" }
                input #username name="username" type="text" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
            p.hint { "The console is for blood-bank staff. Hospital systems use the API." }
        },
    )
}

/// The form, with a fresh login cookie.
fn form_response(
    req: &HttpRequest,
    state: &AppState,
    status: actix_web::http::StatusCode,
    next: Option<&str>,
    notice: Option<&str>,
    error: Option<&ApiError>,
) -> HttpResponse {
    let value = tokens::new_console_cookie();
    let markup = sign_in_page(next, notice, error, &tokens::csrf_token(&value));
    let mut builder = HttpResponse::build(status);
    builder
        .content_type(page::HTML)
        .cookie(login_cookie(&value, secure(req, state)));
    if let Some(secs) = error.and_then(ApiError::retry_after_secs) {
        builder.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
    }
    builder.body(markup.into_string())
}

/// `GET /console/login`.
pub async fn form(req: HttpRequest, state: web::Data<AppState>, query: web::Query<SignInQuery>) -> HttpResponse {
    let notice = match query.ended.as_deref() {
        Some("session_expired") => Some("Your session reached the end of its shift. Sign in again."),
        Some("session_revoked") => Some("Your session was ended. Sign in again."),
        Some("signed_out") => Some("You are signed out."),
        _ => None,
    };
    form_response(
        &req,
        &state,
        actix_web::http::StatusCode::OK,
        query.next.as_deref(),
        notice,
        None,
    )
}

/// `POST /console/login`: check the form's token, the password (throttled), open a session.
pub async fn submit(req: HttpRequest, state: web::Data<AppState>, form: web::Form<SignInForm>) -> HttpResponse {
    let SignInForm {
        username,
        password,
        csrf,
        next,
    } = form.into_inner();
    let next = next.filter(|n| is_console_path(n));
    let login_cookie_value = req.cookie(LOGIN_COOKIE).map(|c| c.value().to_owned());
    let form_ok = login_cookie_value
        .as_deref()
        .is_some_and(|v| tokens::csrf_matches_token(&tokens::csrf_token(v), &csrf));
    if !form_ok {
        let err = ApiError::new(
            ErrorCode::CsrfTokenInvalid,
            "this sign-in form has expired or did not come from this console; try again",
        );
        return form_response(&req, &state, err.code().status(), next.as_deref(), None, Some(&err));
    }
    let opened = async {
        let (attempt, user, verified) = check_password(&req, &state, &username, password).await?;
        let settings = state.settings.clone();
        state
            .write(move |conn| session::finish_console_sign_in(conn, &settings, user, verified, &attempt, now()))
            .await?
    }
    .await;
    match opened {
        Ok((opened, user)) => {
            tracing::info!(user = %user.username, "signed in at the console");
            let secure = secure(&req, &state);
            let name = if secure { SECURE_COOKIE } else { COOKIE };
            let lifetime = (opened.expires_at - now()).num_seconds().max(0);
            let session = Cookie::build(name, opened.cookie)
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(secure)
                .max_age(CookieDuration::seconds(lifetime))
                .finish();
            let mut spent = login_cookie("", secure);
            spent.make_removal();
            HttpResponse::SeeOther()
                .insert_header((
                    actix_web::http::header::LOCATION,
                    next.as_deref().unwrap_or("/console/board"),
                ))
                .cookie(session)
                .cookie(spent)
                .finish()
        }
        Err(err) => {
            if err.code().status().is_server_error() {
                return ConsoleError::from(err).into_response();
            }
            form_response(&req, &state, err.code().status(), next.as_deref(), None, Some(&err))
        }
    }
}

/// `POST /console/logout`: the session is revoked in the database and the cookie cleared.
pub async fn logout(state: web::Data<AppState>, who: ConsoleUser, form: web::Form<CsrfForm>) -> ConsoleResult {
    who.check_csrf(&form.csrf)?;
    let sid = who.user.session_id.clone();
    state
        .write(move |conn| crate::store::sessions::revoke(conn, &sid, "logout", now()).map_err(Into::into))
        .await?;
    let mut response = see_other("/console/login?ended=signed_out");
    for name in [COOKIE, SECURE_COOKIE] {
        let mut gone = Cookie::build(name, "").path("/").finish();
        gone.make_removal();
        response
            .add_cookie(&gone)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    }
    Ok(response)
}

impl ConsoleError {
    fn into_response(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}
