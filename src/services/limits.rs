//! The limits that need the database: the instance heartbeat that sizes each instance's share of
//! the rate limits, the event-stream leases, and the hospital request cap.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use crate::domain::rate::facility_day;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::{AppState, Limits};
use crate::store::{self, DbConn, Pool, StoreError};

/// An instance not seen for this many heartbeats no longer counts.
const LIVE_HEARTBEATS: u32 = 3;

/// One heartbeat: this instance seen now, the live ones counted into `limits`.
pub fn heartbeat(conn: &mut DbConn, limits: &Limits, every: Duration) -> ApiResult<u32> {
    let now = store::now();
    let every = TimeDelta::from_std(every).unwrap_or(TimeDelta::seconds(10));
    let live = store::limits::heartbeat(
        conn,
        &limits.instance_id,
        now,
        now - every * LIVE_HEARTBEATS as i32,
        now - TimeDelta::days(1),
    )?;
    let n = u32::try_from(live).unwrap_or(u32::MAX).max(1);
    limits.set_instances(n);
    Ok(n)
}

/// Heartbeat every `every` on the current runtime. A failed beat (database down) keeps the last
/// count: limits neither loosen nor tighten while the database is away.
pub fn spawn_heartbeat(pool: Pool, limits: Arc<Limits>, every: Duration) {
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(every);
        loop {
            ticker.tick().await;
            let (pool, limits) = (pool.clone(), Arc::clone(&limits));
            let beat = actix_web::web::block(move || {
                let mut conn = pool.get().map_err(StoreError::from)?;
                heartbeat(&mut conn, &limits, every)
            })
            .await;
            match beat {
                Ok(Ok(n)) => tracing::debug!(instances = n, "instance heartbeat"),
                Ok(Err(e)) => tracing::warn!(error = %e, "instance heartbeat failed; keeping the last count"),
                Err(e) => tracing::warn!(error = %e, "instance heartbeat failed; keeping the last count"),
            }
        }
    });
}

/// How long a stream's lease lasts without renewal. The stream's poll renews it every
/// `STREAM_RENEW` (a write per stream every 10 s, not every 2 s poll), so only a crashed
/// instance's leases run out.
pub const STREAM_LEASE: TimeDelta = TimeDelta::seconds(30);
const STREAM_RENEW: Duration = Duration::from_secs(10);

/// A place among an account's open event streams, held while the stream is open. Dropping it
/// (the stream ended or the client went away) gives the place back.
pub struct StreamLease {
    id: LeaseId,
    state: AppState,
    renewed: std::time::Instant,
}

/// What renews a lease, for the stream's own poll.
#[derive(Clone)]
pub struct LeaseId {
    account: String,
    slot: i32,
    holder: String,
}

impl LeaseId {
    /// Extend the lease, inside the stream's poll; false when it lapsed and another stream took
    /// the place (the stream should end).
    pub fn renew(&self, conn: &mut DbConn) -> ApiResult<bool> {
        Ok(store::limits::renew_stream(
            conn,
            &self.account,
            self.slot,
            &self.holder,
            store::now() + STREAM_LEASE,
        )?)
    }
}

impl StreamLease {
    /// Take a place for `account` (`Principal::subject`), or 429 `too_many_streams`.
    pub async fn open(state: &AppState, account: String) -> ApiResult<Self> {
        let slots = i32::try_from(state.settings.max_streams_per_account).unwrap_or(i32::MAX);
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let (a, h) = (account.clone(), holder.clone());
        let taken = state
            .write(move |conn| {
                let now = store::now();
                let slot = store::limits::acquire_stream(conn, &a, slots, &h, now, now + STREAM_LEASE)?;
                match slot {
                    Some(slot) => Ok(Ok(slot)),
                    None => {
                        let first = store::limits::first_stream_expiry(conn, &a)?;
                        let secs = first.map_or(1, |t| (t - now).num_seconds().max(1));
                        Ok(Err(u64::try_from(secs).unwrap_or(1)))
                    }
                }
            })
            .await?;
        match taken {
            Ok(slot) => Ok(Self {
                id: LeaseId { account, slot, holder },
                state: state.clone(),
                renewed: std::time::Instant::now(),
            }),
            Err(secs) => Err(ApiError::retry_after(
                ErrorCode::TooManyStreams,
                format!(
                    "this account already has {slots} event streams open (GRANULO_MAX_STREAMS_PER_ACCOUNT); close one"
                ),
                secs,
            )),
        }
    }

    /// The lease to renew in this poll, when it is time to; call [`StreamLease::renewed`] once
    /// the renewal succeeded.
    pub fn due(&self) -> Option<LeaseId> {
        (self.renewed.elapsed() >= STREAM_RENEW).then(|| self.id.clone())
    }

    pub fn renewed(&mut self) {
        self.renewed = std::time::Instant::now();
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        let id = self.id.clone();
        let state = self.state.clone();
        // Without a runtime (shutting down) the lease simply lapses.
        if tokio::runtime::Handle::try_current().is_ok() {
            actix_web::rt::spawn(async move {
                let released = state
                    .db(move |conn| Ok(store::limits::release_stream(conn, &id.account, id.slot, &id.holder)?))
                    .await;
                if let Err(e) = released {
                    tracing::warn!(error = %e, "could not release a stream lease; it lapses on its own");
                }
            });
        }
    }
}

/// Count a request a hospital account places, inside the transaction that creates it, and
/// refuse it past `cap` for the facility's day with 429 `hospital_daily_cap_reached`.
pub fn count_hospital_request(conn: &mut DbConn, hospital_id: i64, cap: u32, tz: chrono_tz::Tz) -> ApiResult<()> {
    let (day, retry_after) = facility_day(chrono::Utc::now(), tz);
    let placed = store::limits::count_request(conn, hospital_id, &day.format("%Y-%m-%d").to_string())?;
    if u32::try_from(placed).unwrap_or(u32::MAX) > cap {
        return Err(ApiError::retry_after(
            ErrorCode::HospitalDailyCapReached,
            format!(
                "this hospital has placed its {cap} requests for {day} (policy security.hospital_daily_request_cap); \
                 call the blood bank for anything more today"
            ),
            retry_after,
        ));
    }
    Ok(())
}
