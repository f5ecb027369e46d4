//! The console's session and CSRF rules over HTTP, on both backends.

use crate::both_backends;
use crate::console_support::*;
use crate::helpers::*;

both_backends!(console_sign_in_opens_a_cookie_session,);

async fn console_sign_in_opens_a_cookie_session(backend: Backend) {
    let app = spawn(backend).await;
    let console = Console::admin(&app).await;
    let board = console.get("/console/board").await;
    board.ok(200);
}
