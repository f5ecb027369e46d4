//! The requests page (placeholder until built).

use actix_web::web;
use maud::html;

use super::page::{self, Nav};
use super::{ConsoleResult, ConsoleUser, html};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/requests").route(web::get().to(show)));
}

async fn show(who: ConsoleUser) -> ConsoleResult {
    Ok(html(page::layout(
        "Requests",
        &who,
        Nav::Requests,
        html! { p { "Not built yet." } },
    )))
}
