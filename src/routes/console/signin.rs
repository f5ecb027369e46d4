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
use crate::auth::session::{ConsoleOpened, SignIn};
use crate::auth::{mfa, session, tokens};
use crate::error::{ApiError, ErrorCode};
use crate::routes::auth::{check_password, client_address};
use crate::state::AppState;
use crate::store::now;

/// The sign-in form's own cookie (login CSRF), scoped to the form's path.
const LOGIN_COOKIE: &str = "granulo_login";
const LOGIN_PATH: &str = "/console/login";
/// The sign-in challenge between password and second factor (`auth::mfa`).
const MFA_COOKIE: &str = "granulo_mfa";
const MFA_PATH: &str = "/console/login/mfa";
const ENROL_PATH: &str = "/console/login/enrol";

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
            .write(crate::routes::with_policy(move |conn, policy| {
                session::finish_console_sign_in(conn, &policy.security, &settings, user, verified, &attempt, now())
            }))
            .await?
    }
    .await;
    match opened {
        Ok((SignIn::Open(opened), user)) => {
            tracing::info!(user = %user.username, "signed in at the console");
            session_response(&req, &state, opened, next.as_deref())
        }
        Ok((SignIn::Challenge(issued), user)) => {
            let secure = secure(&req, &state);
            let cookie = mfa_cookie(&issued.challenge, secure);
            let csrf = tokens::csrf_token(&issued.challenge);
            if !issued.enrolment_required {
                let markup = code_page(&csrf, next.as_deref(), None);
                return html_with(actix_web::http::StatusCode::OK, markup, vec![cookie]);
            }
            let keyring = state.secrets.clone();
            let enrolment = state
                .write(move |conn| mfa::start_enrolment(conn, &keyring, &mfa::user_actor(&user), &user, now()))
                .await;
            match enrolment {
                Ok(enrolment) => html_with(
                    actix_web::http::StatusCode::OK,
                    enrol_page(&enrolment, &csrf, next.as_deref(), None),
                    vec![cookie],
                ),
                Err(err) => ConsoleError::from(err).into_response(),
            }
        }
        Err(err) => {
            if err.code().status().is_server_error() {
                return ConsoleError::from(err).into_response();
            }
            form_response(&req, &state, err.code().status(), next.as_deref(), None, Some(&err))
        }
    }
}

/// The session cookie for a sign-in that passed every step, and the way on.
fn session_response(req: &HttpRequest, state: &AppState, opened: ConsoleOpened, next: Option<&str>) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, next.unwrap_or("/console/board")))
        .cookie(session_cookie(req, state, opened))
        .cookie(spent(login_cookie("", secure(req, state))))
        .cookie(spent(mfa_cookie("", secure(req, state))))
        .finish()
}

fn session_cookie(req: &HttpRequest, state: &AppState, opened: ConsoleOpened) -> Cookie<'static> {
    let secure = secure(req, state);
    let name = if secure { SECURE_COOKIE } else { COOKIE };
    let lifetime = (opened.expires_at - now()).num_seconds().max(0);
    Cookie::build(name, opened.cookie)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(CookieDuration::seconds(lifetime))
        .finish()
}

fn spent(mut cookie: Cookie<'static>) -> Cookie<'static> {
    cookie.make_removal();
    cookie
}

/// The sign-in challenge between the password and the second factor, scoped to the sign-in
/// pages; the forms of those pages carry its HMAC (CSRF).
fn mfa_cookie(value: &str, secure: bool) -> Cookie<'static> {
    Cookie::build(MFA_COOKIE, value.to_owned())
        .path(LOGIN_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(CookieDuration::seconds(mfa::CHALLENGE_SECS))
        .finish()
}

fn html_with(status: actix_web::http::StatusCode, markup: maud::Markup, cookies: Vec<Cookie<'static>>) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    builder.content_type(page::HTML);
    for cookie in cookies {
        builder.cookie(cookie);
    }
    builder.body(markup.into_string())
}

fn next_field(next: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(next) = next.filter(|n| is_console_path(n)) {
            input type="hidden" name="next" value=(next);
        }
    }
}

fn code_page(csrf: &str, next: Option<&str>, error: Option<&ApiError>) -> maud::Markup {
    page::bare(
        "Second step",
        html! {
            @if let Some(err) = error { (page::refusal(err)) }
            form.signin method="post" action=(MFA_PATH) {
                input type="hidden" name="csrf" value=(csrf);
                (next_field(next))
                label for="code" { "Code from your authenticator app" }
                input #code name="code" type="text" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" autofocus;
                label for="recovery_code" { "Or a recovery code" }
                input #recovery_code name="recovery_code" type="text" autocomplete="off";
                button type="submit" { "Continue" }
            }
            p.hint { "Each code works once. Lost your device? Use a recovery code, or ask an admin to reset your second factor." }
        },
    )
}

fn enrol_page(enrolment: &mfa::Enrolment, csrf: &str, next: Option<&str>, error: Option<&ApiError>) -> maud::Markup {
    page::bare(
        "Set up a second factor",
        html! {
            @if let Some(err) = error { (page::refusal(err)) }
            p { "Your role signs in with a second factor. Add this account to an authenticator app (TOTP, 6 digits, 30 seconds), then enter the code it shows." }
            dl {
                dt { "Secret (base32)" }
                dd { code #mfa-secret { (enrolment.secret) } }
                dt { "Or this URI" }
                dd { code #mfa-uri { (enrolment.otpauth_uri) } }
            }
            form.signin method="post" action=(ENROL_PATH) {
                input type="hidden" name="csrf" value=(csrf);
                (next_field(next))
                label for="code" { "Code from the app" }
                input #code name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required autofocus;
                button type="submit" { "Turn on and sign in" }
            }
        },
    )
}

fn recovery_page(codes: &[String], next: Option<&str>) -> maud::Markup {
    page::bare(
        "Recovery codes",
        html! {
            p.notice role="status" { "Your second factor is on. These recovery codes are shown only now: each signs you in once if your device is lost. Keep them somewhere safe, offline." }
            ul #recovery-codes {
                @for code in codes { li { code { (code) } } }
            }
            p { a #continue href=(next.filter(|n| is_console_path(n)).unwrap_or("/console/board")) { "Continue to the console" } }
        },
    )
}

#[derive(Deserialize)]
pub struct MfaForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// The challenge cookie, when the posted form carries its CSRF token.
fn challenge_of(req: &HttpRequest, csrf: &str) -> Option<String> {
    let value = req.cookie(MFA_COOKIE).map(|c| c.value().to_owned())?;
    tokens::csrf_matches_token(&tokens::csrf_token(&value), csrf).then_some(value)
}

fn challenge_gone(req: &HttpRequest, state: &AppState, next: Option<&str>) -> HttpResponse {
    let err = ApiError::new(
        ErrorCode::MfaChallengeInvalid,
        "this sign-in has expired or did not come from this console; sign in again",
    );
    form_response(req, state, err.code().status(), next, None, Some(&err))
}

/// `POST /console/login/mfa`: the second step, a code or a recovery code.
pub async fn submit_code(req: HttpRequest, state: web::Data<AppState>, form: web::Form<MfaForm>) -> HttpResponse {
    let MfaForm {
        code,
        recovery_code,
        csrf,
        next,
    } = form.into_inner();
    let next = next.filter(|n| is_console_path(n));
    let Some(challenge) = challenge_of(&req, &csrf) else {
        return challenge_gone(&req, &state, next.as_deref());
    };
    let factor = if recovery_code.trim().is_empty() {
        mfa::Factor::Code(code)
    } else {
        mfa::Factor::Recovery(recovery_code)
    };
    let address = session::address_throttle_key(&client_address(&req, &state));
    let (keyring, settings) = (state.secrets.clone(), state.settings.clone());
    let answered = async {
        state
            .db(move |conn| {
                mfa::answer_challenge(
                    conn,
                    &keyring,
                    &settings,
                    &challenge,
                    &factor,
                    &address,
                    now(),
                    |conn, user| session::open_console_session(conn, &settings, user, now()),
                )
            })
            .await?
    }
    .await;
    match answered {
        Ok((opened, user)) => {
            tracing::info!(user = %user.username, "signed in at the console with a second factor");
            session_response(&req, &state, opened, next.as_deref())
        }
        Err(err) if err.code() == ErrorCode::MfaChallengeInvalid => challenge_gone(&req, &state, next.as_deref()),
        Err(err) if err.code().status().is_server_error() => ConsoleError::from(err).into_response(),
        Err(err) => {
            let mut response = html_with(
                err.code().status(),
                code_page(&csrf, next.as_deref(), Some(&err)),
                vec![],
            );
            if let Some(secs) = err.retry_after_secs()
                && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&secs.to_string())
            {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, value);
            }
            response
        }
    }
}

/// `POST /console/login/enrol`: the first code of the new factor; the recovery codes are
/// shown once and the session opens.
pub async fn submit_enrolment(req: HttpRequest, state: web::Data<AppState>, form: web::Form<MfaForm>) -> HttpResponse {
    let MfaForm { code, csrf, next, .. } = form.into_inner();
    let next = next.filter(|n| is_console_path(n));
    let Some(challenge) = challenge_of(&req, &csrf) else {
        return challenge_gone(&req, &state, next.as_deref());
    };
    let address = session::address_throttle_key(&client_address(&req, &state));
    let (keyring, settings) = (state.secrets.clone(), state.settings.clone());
    let confirmed = state
        .db(move |conn| {
            let (found, user) = mfa::open_challenge(conn, &challenge, now())?;
            let outcome = mfa::confirm_enrolment(
                conn,
                &keyring,
                &settings,
                &user,
                Some(found.id),
                &code,
                &address,
                now(),
                |conn, user| session::open_console_session(conn, &settings, user, now()),
            )?;
            match outcome {
                Ok(done) => Ok(Ok(done)),
                Err(refusal) => {
                    let pending = mfa::pending_enrolment(conn, &keyring, &user)?;
                    Ok(Err((refusal, pending)))
                }
            }
        })
        .await;
    match confirmed {
        Ok(Ok((codes, opened))) => {
            let cookies = vec![
                session_cookie(&req, &state, opened),
                spent(login_cookie("", secure(&req, &state))),
                spent(mfa_cookie("", secure(&req, &state))),
            ];
            html_with(
                actix_web::http::StatusCode::OK,
                recovery_page(&codes, next.as_deref()),
                cookies,
            )
        }
        Ok(Err((err, Some(pending)))) => html_with(
            err.code().status(),
            enrol_page(&pending, &csrf, next.as_deref(), Some(&err)),
            vec![],
        ),
        Ok(Err((err, None))) | Err(err) => {
            if err.code().status().is_server_error() {
                return ConsoleError::from(err).into_response();
            }
            let err = if err.code() == ErrorCode::MfaChallengeInvalid {
                err
            } else {
                ApiError::new(
                    ErrorCode::MfaChallengeInvalid,
                    format!("{} Sign in again.", err.problem().detail),
                )
            };
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
