//! The OWASP API Security Top 10 (2023) checks that cut across resources (docs/SECURITY.md).

use crate::both_backends;
use crate::helpers::*;

both_backends!(concurrent_guesses_cannot_outrun_the_login_throttle);

/// Failures are counted before the password is checked, so a burst of parallel guesses gets
/// no more tries than the limit.
async fn concurrent_guesses_cannot_outrun_the_login_throttle(backend: Backend) {
    let app = spawn_with(backend, |s| s.login_max_failures = 3).await;
    let guesses = (0..24).map(|i| {
        let app = &app;
        async move { app.login(ADMIN_USER, &format!("wrong guess number {i}")).await }
    });
    let replies = futures_util::future::join_all(guesses).await;
    let checked = replies.iter().filter(|r| r.status.as_u16() == 401).count();
    let throttled = replies.iter().filter(|r| r.status.as_u16() == 429).count();
    assert_eq!(checked + throttled, replies.len(), "{replies:?}");
    assert!(checked <= 3, "{checked} guesses were checked; the limit is 3");
    app.login(ADMIN_USER, ADMIN_PASSWORD)
        .await
        .problem(429, "too_many_requests");
}
