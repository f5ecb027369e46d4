//! A unit's page (placeholder until built).

use actix_web::web;
use maud::html;

use super::page::{self, Nav};
use super::{ConsoleResult, ConsoleUser, html};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/units/{id}").route(web::get().to(show)));
}

async fn show(who: ConsoleUser, id: web::Path<String>) -> ConsoleResult {
    Ok(html(page::layout(
        &format!("Unit {id}"),
        &who,
        Nav::Other,
        html! { p { "Not built yet." } },
    )))
}
