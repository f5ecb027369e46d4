//! The scrape: gauges computed from the database at scrape time, in one blocking hop and a few
//! aggregate queries, then encoded with the process series (`crate::metrics`).
//!
//! Computed here rather than kept by the alert scan: they are exact at every scrape even when the
//! scan is off or stalled (which is one of the things they report), and on several instances
//! each tells the same truth. Label values come from the domain's closed enums (an unknown stored
//! value is not exported), and every combination is exported, zeros included, so that an alert on
//! "no O negative units" has a series to fire on.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use prometheus::{Gauge, IntGauge, IntGaugeVec, Opts};

use crate::domain::alerts::{AlertKind, AlertStatus};
use crate::domain::blood::{Abo, UnitRhd};
use crate::domain::tasks::TaskKind;
use crate::error::{ApiError, ApiResult};
use crate::metrics::ScrapeRegistry;
use crate::store::{self, DbConn};

/// The pool as the scrape found it (read before the scrape took its own connection).
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    pub connections: u32,
    pub idle: u32,
    pub max: u32,
}

impl PoolState {
    pub fn of(pool: &store::Pool) -> Self {
        let s = pool.state();
        Self {
            connections: s.connections,
            idle: s.idle_connections,
            max: pool.max_size(),
        }
    }
}

/// The whole exposition text.
pub fn render(conn: &mut DbConn, now: DateTime<Utc>, pool: PoolState) -> ApiResult<String> {
    let registry = ScrapeRegistry::new();
    gauges(conn, now, pool, &registry)?;
    crate::metrics::encode(&registry).map_err(ApiError::internal)
}

fn int_vec(registry: &ScrapeRegistry, name: &str, help: &str, labels: &[&str]) -> ApiResult<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).map_err(ApiError::internal)?;
    registry.register(Box::new(g.clone())).map_err(ApiError::internal)?;
    Ok(g)
}

fn int(registry: &ScrapeRegistry, name: &str, help: &str) -> ApiResult<IntGauge> {
    let g = IntGauge::new(name, help).map_err(ApiError::internal)?;
    registry.register(Box::new(g.clone())).map_err(ApiError::internal)?;
    Ok(g)
}

fn float(registry: &ScrapeRegistry, name: &str, help: &str) -> ApiResult<Gauge> {
    let g = Gauge::new(name, help).map_err(ApiError::internal)?;
    registry.register(Box::new(g.clone())).map_err(ApiError::internal)?;
    Ok(g)
}

fn seconds(t: NaiveDateTime) -> f64 {
    t.and_utc().timestamp_micros() as f64 / 1e6
}

fn gauges(conn: &mut DbConn, now: DateTime<Utc>, pool: PoolState, r: &ScrapeRegistry) -> ApiResult<()> {
    let at = store::truncate_micros(now.naive_utc());

    let conns = int_vec(
        r,
        "granulo_db_pool_connections",
        "Connections of this instance's pool, in use or idle",
        &["state"],
    )?;
    conns
        .with_label_values(&["in_use"])
        .set(i64::from(pool.connections.saturating_sub(pool.idle)));
    conns.with_label_values(&["idle"]).set(i64::from(pool.idle));
    int(r, "granulo_db_pool_max_connections", "GRANULO_DB_POOL_SIZE")?.set(i64::from(pool.max));

    let available = int_vec(
        r,
        "granulo_units_available",
        "Units available for allocation (released, not expired), by ABO group and RhD",
        &["abo", "rhd"],
    )?;
    for abo in Abo::ALL {
        for rhd in UnitRhd::ALL {
            available.with_label_values(&[abo.as_str(), rhd.as_str()]).set(0);
        }
    }
    for (abo, rhd, n) in store::metrics::available_units_by_group(conn, at)? {
        if let (Some(abo), Some(rhd)) = (Abo::parse(&abo), UnitRhd::parse(&rhd)) {
            available.with_label_values(&[abo.as_str(), rhd.as_str()]).set(n);
        }
    }

    let policy = super::policy::current(conn)?.policy;
    let thresholds = &policy.alerts.expiry_thresholds_hours;
    let widest = thresholds.iter().copied().max().unwrap_or(0);
    let expiring = int_vec(
        r,
        "granulo_units_expiring",
        "Units in the bank (quarantined, available, allocated) that expire within each expiry alert threshold of the policy",
        &["within_hours"],
    )?;
    let expiries = store::metrics::in_bank_expiring(conn, at, at + TimeDelta::hours(i64::from(widest)))?;
    for (hours, n) in expiring_within(&expiries, at, thresholds) {
        expiring.with_label_values(&[hours.to_string()]).set(n);
    }

    int(
        r,
        "granulo_requests_open_unallocated",
        "Open requests with no unit allocated, issued or transfused",
    )?
    .set(store::metrics::open_requests_without_units(conn)?);

    let alerts = int_vec(
        r,
        "granulo_alerts_open",
        "Open alert episodes by kind and status (acknowledged episodes stay open until their condition clears)",
        &["kind", "status"],
    )?;
    let open_statuses = [AlertStatus::Open, AlertStatus::Acknowledged];
    for kind in AlertKind::ALL {
        for status in open_statuses {
            alerts.with_label_values(&[kind.as_str(), status.as_str()]).set(0);
        }
    }
    for (kind, status, n) in store::metrics::open_alerts(conn)? {
        if let (Some(kind), Some(status)) = (AlertKind::parse(&kind), AlertStatus::parse(&status))
            && open_statuses.contains(&status)
        {
            alerts.with_label_values(&[kind.as_str(), status.as_str()]).set(n);
        }
    }

    let tasks = int_vec(r, "granulo_tasks_open", "Open tasks by kind", &["kind"])?;
    for kind in TaskKind::ALL {
        tasks.with_label_values(&[kind.as_str()]).set(0);
    }
    for (kind, n) in store::metrics::open_tasks(conn)? {
        if let Some(kind) = TaskKind::parse(&kind) {
            tasks.with_label_values(&[kind.as_str()]).set(n);
        }
    }

    let outbox = int_vec(
        r,
        "granulo_webhook_deliveries",
        "Webhook deliveries by status: pending (the backlog), delivered, failed (given up after every attempt)",
        &["status"],
    )?;
    for status in OUTBOX_STATUSES {
        outbox.with_label_values(&[status]).set(0);
    }
    for (status, n) in store::metrics::outbox_by_status(conn)? {
        if let Some(status) = OUTBOX_STATUSES.iter().find(|s| **s == status) {
            outbox.with_label_values(&[*status]).set(n);
        }
    }
    let (retrying, oldest) = store::metrics::outbox_pending(conn)?;
    int(
        r,
        "granulo_webhook_deliveries_retrying",
        "Pending webhook deliveries whose last attempt failed",
    )?
    .set(retrying);
    float(
        r,
        "granulo_webhook_oldest_pending_age_seconds",
        "Age of the oldest pending webhook delivery (0 when none is pending)",
    )?
    .set(oldest.map_or(0.0, |t| (seconds(at) - seconds(t)).max(0.0)));

    let scan = store::jobs::find(conn, store::jobs::ALERT_SCAN)?;
    let scan = scan.as_ref();
    let success_at = float(
        r,
        "granulo_alert_scan_last_success_timestamp_seconds",
        "When the last successful alert scan finished (Unix time; 0 when none has)",
    )?;
    success_at.set(scan.and_then(|s| s.last_succeeded_at).map_or(0.0, seconds));
    float(
        r,
        "granulo_alert_scan_last_success_duration_seconds",
        "How long the last successful alert scan took",
    )?
    .set(
        scan.and_then(|s| s.last_success_duration_ms)
            .map_or(0.0, |ms| ms as f64 / 1e3),
    );
    float(
        r,
        "granulo_alert_scan_last_run_timestamp_seconds",
        "When the last alert scan finished, successful or not (Unix time; 0 when none has)",
    )?
    .set(scan.and_then(|s| s.last_finished_at).map_or(0.0, seconds));
    int(
        r,
        "granulo_alert_scan_last_run_failed",
        "1 when the last alert scan failed",
    )?
    .set(i64::from(scan.is_some_and(|s| s.last_error.is_some())));
    Ok(())
}

/// The statuses of `webhook_outbox`.
const OUTBOX_STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

/// For each threshold (hours), how many of `expiries` fall after `now` and within it.
fn expiring_within(expiries: &[NaiveDateTime], now: NaiveDateTime, thresholds: &[u32]) -> Vec<(u32, i64)> {
    thresholds
        .iter()
        .map(|&h| {
            let until = now + TimeDelta::hours(i64::from(h));
            let n = expiries.iter().filter(|&&t| t > now && t <= until).count();
            (h, i64::try_from(n).unwrap_or(i64::MAX))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiring_counts_each_threshold_inclusive_of_its_end() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .map(|t| t.naive_utc())
            .unwrap_or_default();
        let h = |hours: i64| now + TimeDelta::hours(hours);
        let expiries = [h(0), now + TimeDelta::minutes(30), h(2), h(3), h(8), h(9)];
        assert_eq!(
            expiring_within(&expiries, now, &[8, 4, 2]),
            vec![(8, 4), (4, 3), (2, 2)]
        );
        assert_eq!(expiring_within(&[], now, &[8]), vec![(8, 0)]);
    }
}
