//! Shared application state and the helpers that run blocking work off the async threads.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::time::Instant;

use actix_web::web;

use crate::config::Settings;
use crate::credentials::jwt::JwtKeys;
use crate::domain::rate::{Buckets, Rate};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::{DbConn, Pool, StoreError};

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub jwt: JwtKeys,
    /// Seals and opens stored secrets (`credentials::sealed`).
    pub secrets: Arc<crate::credentials::sealed::Keyring>,
    pub settings: Arc<Settings>,
    /// Verified against when a username is unknown (equal timing).
    pub dummy_password_hash: Arc<str>,
    /// This instance's share of the rate limits (`routes::limits`).
    pub limits: Arc<Limits>,
    /// Active donors' matching inputs, kept current from the database's change clock
    /// (`services::candidates`).
    pub donor_index: Arc<crate::store::matching::DonorIndexSlot>,
}

/// The per-account and per-address token buckets of this instance. Each enforces the configured
/// limit divided by the live instances (`instances`, kept current by the heartbeat in
/// `services::instances`), so that the deployment as a whole allows the configured rate.
pub struct Limits {
    /// This instance's row in `instances`.
    pub instance_id: String,
    per_account: u32,
    per_address: u32,
    burst_seconds: u32,
    instances: AtomicU32,
    accounts: Mutex<Buckets>,
    addresses: Mutex<Buckets>,
    origin: Instant,
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            per_account: settings.rate_limit_per_account,
            per_address: settings.rate_limit_per_address,
            burst_seconds: settings.rate_limit_burst_seconds,
            instances: AtomicU32::new(1),
            accounts: Mutex::new(Buckets::default()),
            addresses: Mutex::new(Buckets::default()),
            origin: Instant::now(),
        }
    }

    /// Live instances, this one included, as last counted.
    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::Relaxed)
    }

    pub fn set_instances(&self, n: u32) {
        self.instances.store(n.max(1), Ordering::Relaxed);
    }

    /// Take one request from `address`'s bucket; `Err(retry_after_secs)` when it is empty.
    pub fn take_address(&self, address: &str) -> Result<(), u64> {
        self.take(&self.addresses, self.per_address, address)
    }

    /// Take one request from `account`'s bucket.
    pub fn take_account(&self, account: &str) -> Result<(), u64> {
        self.take(&self.accounts, self.per_account, account)
    }

    fn take(&self, buckets: &Mutex<Buckets>, per_minute: u32, key: &str) -> Result<(), u64> {
        let Some(rate) = Rate::share(per_minute, self.burst_seconds, self.instances()) else {
            return Ok(());
        };
        let now = self.origin.elapsed().as_secs_f64();
        buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(key, rate, now)
    }
}

impl AppState {
    /// Check out a connection and run `f` on a blocking thread. The connection is taken inside
    /// the closure: `Pool::get` itself blocks for up to the checkout timeout.
    ///
    /// Inside a request whose caller's session is still to be checked ([`SessionGate`]), the
    /// check runs first on the same connection in the same hop, and `f` runs only if it passes.
    pub async fn db<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.hop(f, false).await
    }

    /// Run a unit of work in one write transaction (audit rows included); nothing is committed
    /// unless `f` succeeds. A pending session check runs inside the transaction, before `f`.
    pub async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.hop(f, true).await
    }

    async fn hop<T, F>(&self, f: F, transaction: bool) -> ApiResult<T>
    where
        F: FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let gate = SessionGate::current();
        let check = match &gate {
            Some(gate) => gate.pending()?,
            None => None,
        };
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        web::block(move || {
            let _entered = span.enter();
            let mut conn = pool.get().map_err(StoreError::from)?;
            let checked = |conn: &mut DbConn| -> ApiResult<()> {
                if let (Some(gate), Some(check)) = (&gate, &check) {
                    gate.settle(check(conn))?;
                }
                Ok(())
            };
            if transaction {
                crate::store::write_tx(&mut conn, |conn| {
                    checked(conn)?;
                    f(conn)
                })
            } else {
                checked(&mut conn)?;
                f(&mut conn)
            }
        })
        .await?
    }
}

/// A check of the caller's session and account against the database (revoked, expired,
/// deactivated, changed), run on the connection of the request's own unit of work.
pub type SessionCheck = Arc<dyn Fn(&mut DbConn) -> ApiResult<()> + Send + Sync>;

tokio::task_local! {
    static GATE: Arc<SessionGate>;
}

/// One request's session check: registered by authentication without a database read, run by
/// the first [`AppState::db`] / [`AppState::write`] of the request before its closure, and by
/// the gate middleware (`routes::session_gate`) when the handler never got that far. No answer
/// leaves before it passed; once refused, every later hop of the request is refused too.
#[derive(Default)]
pub struct SessionGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
enum GateState {
    /// Nothing to check (no bearer caller, or one checked by its own hop).
    #[default]
    Open,
    Pending(SessionCheck),
    Passed,
    Refused(ErrorCode, String),
}

/// Where a request's session check stands once the handler is done.
pub enum GateOutcome {
    /// Passed, or nothing was required.
    Clear,
    /// Registered and never run: the caller runs it before answering.
    Pending(SessionCheck),
    Refused(ApiError),
}

impl SessionGate {
    /// Run `fut` (the rest of the request) with `gate` as its session gate.
    pub async fn scope<F: std::future::Future>(gate: Arc<Self>, fut: F) -> F::Output {
        GATE.scope(gate, fut).await
    }

    /// The gate of the request being handled on this task, if any.
    pub fn current() -> Option<Arc<Self>> {
        GATE.try_with(Arc::clone).ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Require `check` before the request's first unit of work. The first registration wins
    /// (a request has one Authorization header).
    pub fn require(&self, check: SessionCheck) {
        let mut state = self.lock();
        if matches!(*state, GateState::Open) {
            *state = GateState::Pending(check);
        }
    }

    /// The check a hop must run first; `Err` when the session was already refused.
    fn pending(&self) -> ApiResult<Option<SessionCheck>> {
        match &*self.lock() {
            GateState::Pending(check) => Ok(Some(Arc::clone(check))),
            GateState::Refused(code, detail) => Err(ApiError::new(*code, detail.clone())),
            GateState::Open | GateState::Passed => Ok(None),
        }
    }

    /// Record a check's result and pass it on.
    pub fn settle(&self, result: ApiResult<()>) -> ApiResult<()> {
        let mut state = self.lock();
        match &result {
            Ok(()) => {
                if matches!(*state, GateState::Pending(_)) {
                    *state = GateState::Passed;
                }
            }
            Err(e) => *state = GateState::Refused(e.code(), e.problem().detail),
        }
        result
    }

    pub fn outcome(&self) -> GateOutcome {
        match &*self.lock() {
            GateState::Open | GateState::Passed => GateOutcome::Clear,
            GateState::Pending(check) => GateOutcome::Pending(Arc::clone(check)),
            GateState::Refused(code, detail) => GateOutcome::Refused(ApiError::new(*code, detail.clone())),
        }
    }
}

/// Run CPU-bound work (argon2) on the password-hashing threads, one per core.
///
/// A hash takes a core for ~20–50 ms and 19 MiB of working memory. On the blocking pool a burst
/// of sign-ins ran them all at once: no sooner done (the cores were busy) while their memory
/// added up and stayed with the allocator (32 concurrent sign-ins left the server at ~850 MiB;
/// docs/PERFORMANCE.md). Here at most one runs per core, and verification reuses its thread's
/// working memory (`password::verify`).
pub async fn cpu<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(pool) = cpu_pool() else {
        // The threads could not be started: fall back to the blocking pool.
        return web::block(f).await.map_err(ApiError::from);
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: CpuJob = Box::new(move || {
        // The caller may have gone (client disconnected): nothing to tell then.
        let _ = reply.send(f());
    });
    pool.send(job)
        .map_err(|_| ApiError::internal(anyhow::anyhow!("the password-hashing threads are gone")))?;
    answer
        .await
        .map_err(|_| ApiError::internal(anyhow::anyhow!("a password-hashing job failed")))
}

type CpuJob = Box<dyn FnOnce() + Send>;

/// A hashing thread idle this long gives its argon2 working memory (19 MiB) back: a burst of
/// sign-ins reuses it, a quiet server does not keep it.
const CPU_IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

fn cpu_pool() -> Option<&'static mpsc::Sender<CpuJob>> {
    static POOL: OnceLock<Option<mpsc::Sender<CpuJob>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let (sender, receiver) = mpsc::channel::<CpuJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = Arc::clone(&receiver);
            let started = std::thread::Builder::new()
                .name(format!("granulo-hash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is released before the job runs.
                        let next = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv_timeout(CPU_IDLE_RELEASE);
                        let job = match next {
                            Ok(job) => job,
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                crate::credentials::password::release_working_memory();
                                continue;
                            }
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        };
                        // A panicking job drops its reply sender (the caller gets an error); the
                        // thread carries on.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if started.is_err() {
                return None;
            }
        }
        Some(sender)
    })
    .as_ref()
}
