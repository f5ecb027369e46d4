//! `GET /console/events`: the console's live updates, as server-sent events over the session
//! cookie (a browser's `EventSource` cannot send an `Authorization` header).
//!
//! Every two seconds the stream checks that the session is still open (a logout or revocation
//! ends the stream with `signed-out`) and sends one event per part of the console that changed
//! since the last look: `board`, `requests`, `alerts`, `today` (`services::changes`). The page
//! reloads those parts itself (`hx-trigger="sse:board"`): events carry no patient data.

use actix_web::{HttpRequest, HttpResponse, web};

use super::{ConsoleResult, ConsoleUser, session_cookie};
use crate::services::changes::{self, Cursor};
use crate::services::limits::StreamLease;
use crate::state::AppState;
use crate::store::now;

const POLL: std::time::Duration = std::time::Duration::from_secs(2);

enum Step {
    Open(Cursor),
    Ended,
}

pub async fn stream(req: HttpRequest, state: web::Data<AppState>, who: ConsoleUser) -> ConsoleResult {
    let cookie = session_cookie(&req).unwrap_or_default();
    // One of the account's places among open streams (shared with the API's alert stream).
    let lease = StreamLease::open(&state, who.user.principal.subject()).await?;
    let start = state.db(changes::cursor_now).await?;
    let body = futures_util::stream::unfold(
        (state, cookie, Step::Open(start), true, lease),
        |(state, cookie, step, first, mut lease)| async move {
            let Step::Open(cursor) = step else { return None };
            if !first {
                actix_web::rt::time::sleep(POLL).await;
            }
            let checked = cookie.clone();
            let due = lease.due();
            let renewing = due.is_some();
            let polled = state
                .db(move |conn| {
                    crate::auth::load_console_user(conn, &checked, now())?;
                    // The poll renews the lease; a lapsed one (taken meanwhile) ends the stream.
                    if let Some(id) = due
                        && !id.renew(conn)?
                    {
                        return Ok(None);
                    }
                    changes::since(conn, cursor).map(Some)
                })
                .await;
            if renewing && matches!(polled, Ok(Some(_))) {
                lease.renewed();
            }
            let (chunk, next) = match polled {
                Ok(None) => (": stream lease lapsed; reconnect\n\n".to_owned(), Step::Ended),
                Ok(Some((topics, next))) if topics.is_empty() => (
                    if first {
                        "event: ready\ndata: ready\n\n".to_owned()
                    } else {
                        ": keep-alive\n\n".to_owned()
                    },
                    Step::Open(next),
                ),
                Ok(Some((topics, next))) => {
                    let mut out = String::new();
                    for topic in topics {
                        let name = topic.as_str();
                        out.push_str(&format!("event: {name}\ndata: {name}\n\n"));
                    }
                    (out, Step::Open(next))
                }
                Err(err) if err.code().status().is_server_error() => {
                    (": database unavailable, retrying\n\n".to_owned(), Step::Open(cursor))
                }
                // The session ended (logout, revocation, end of shift, account deactivated).
                Err(_) => ("event: signed-out\ndata: signed-out\n\n".to_owned(), Step::Ended),
            };
            Some((
                Ok::<_, actix_web::Error>(web::Bytes::from(chunk)),
                (state, cookie, next, false, lease),
            ))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("Content-Encoding", "identity"))
        .streaming(body))
}
