//! Shared application state and the helpers that run blocking work off the async threads.

use std::sync::Arc;

use actix_web::web;

use crate::auth::jwt::JwtKeys;
use crate::config::Settings;
use crate::error::{ApiError, ApiResult};
use crate::store::{DbConn, Pool, StoreError};

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub jwt: JwtKeys,
    pub settings: Arc<Settings>,
    /// Verified against when a username is unknown (equal timing).
    pub dummy_password_hash: Arc<str>,
}

impl AppState {
    /// Check out a connection and run `f` on a blocking thread. The connection is taken inside
    /// the closure: `Pool::get` itself blocks for up to the checkout timeout.
    pub async fn db<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        web::block(move || {
            let _entered = span.enter();
            let mut conn = pool.get().map_err(StoreError::from)?;
            f(&mut conn)
        })
        .await?
    }

    /// Run a unit of work in one write transaction (audit rows included); nothing is committed
    /// unless `f` succeeds.
    pub async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.db(move |conn| crate::store::write_tx(conn, f)).await
    }
}

/// Run CPU-bound work (argon2) on the blocking pool.
pub async fn cpu<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    web::block(f).await.map_err(ApiError::from)
}
