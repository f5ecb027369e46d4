//! Background jobs: the alert scan (`granulo alerts run` once, or every
//! `GRANULO_ALERT_INTERVAL_SECS` inside `granulo serve`). Runs take a database lease so they never
//! overlap, on one instance or several; at most one alert is open per (kind, entity) (a partial
//! unique index), so even two scans at once raise each episode once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::alerts::{
    self, AlertKind, AlertSpec, AlertTransition, AllocationState, CollectionState, Occurrence, OpenEpisode,
    RaiseDecision, RequestState, StimulationState, TaskState, UnitState,
};
use crate::domain::compatibility::{CrossmatchKind, CrossmatchResult};
use crate::domain::policy::Policy;
use crate::domain::requests::AllocationStatus;
use crate::domain::units::UnitStatus;
use crate::error::{ApiError, ApiResult};
use crate::services::alerts::{Raise, Raised};
use crate::services::utc;
use crate::store::audit::{self, Actor, Change};
use crate::store::{self, DbConn, Pool};

pub const ALERT_SCAN: &str = store::jobs::ALERT_SCAN;
/// A run that has not finished after this long is presumed dead and its lease taken over.
const LEASE: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ScanReport {
    /// New episodes opened.
    pub raised: i64,
    /// Open episodes whose condition got worse (severity or expiry threshold).
    pub escalated: i64,
    pub resolved: i64,
    pub expired: i64,
    pub duration_ms: i64,
}

/// One pass over everything the alert rules look at, in one transaction.
pub fn scan(conn: &mut DbConn, now: DateTime<Utc>, policy: &Policy) -> ApiResult<ScanReport> {
    let started = Instant::now();
    let at = store::truncate_micros(now.naive_utc());
    let system = Actor::system("alert-scan");
    let mut report = ScanReport::default();
    let mut holding: Vec<AlertSpec> = Vec::new();

    // Active allocations, their requests, the patients' samples and the units' crossmatches,
    // each in one query.
    let active = store::allocations::active_with_requests(conn)?;
    let patient_ids: Vec<i64> = active.iter().map(|(_, patient, _)| *patient).collect();
    let unit_ids: Vec<i64> = active.iter().map(|(a, _, _)| a.unit_id).collect();
    let mut samples: HashMap<i64, Vec<(i64, DateTime<Utc>)>> = HashMap::new();
    for s in store::patients::samples_of_patients(conn, &patient_ids)? {
        samples
            .entry(s.patient_id)
            .or_default()
            .push((s.id, utc(s.valid_until)));
    }
    // Compatible red-cell crossmatches count: the longest-valid sample of this patient is the one
    // the transfusion will rely on.
    let mut crossmatches: HashMap<i64, Vec<i64>> = HashMap::new();
    for x in store::allocations::crossmatches_of_units(conn, &unit_ids)? {
        if x.result == CrossmatchResult::Compatible && x.kind == CrossmatchKind::RedCell {
            crossmatches.entry(x.unit_id).or_default().push(x.sample_id);
        }
    }
    // When each allocated (not yet issued) unit is to be transfused: its request's need time.
    let planned: HashMap<i64, DateTime<Utc>> = active
        .iter()
        .filter(|(a, _, _)| a.status == AllocationStatus::Allocated)
        .map(|(a, _, needed_by)| (a.unit_id, utc(*needed_by)))
        .collect();
    for (id, din, status, expires_at) in store::units::for_alert_scan(conn)? {
        let status = UnitStatus::parse(&status)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored unit status {status:?}")))?;
        let (specs, sweep) = alerts::unit_alerts(
            &UnitState {
                id,
                din: &din,
                status,
                expires_at: utc(expires_at),
                transfusion_planned_at: planned.get(&id).copied(),
            },
            now,
            policy,
        );
        if sweep && store::units::mark_expired(conn, id, at)? {
            report.expired += 1;
            audit::append(
                conn,
                &system,
                Change::updated(
                    "unit.expire",
                    "unit",
                    id,
                    serde_json::json!({"status": status}),
                    serde_json::json!({"status": "expired"}),
                ),
            )?;
        }
        holding.extend(specs);
    }

    let mut covered: HashMap<i64, usize> = HashMap::new();
    for (a, patient_id, needed_by) in active {
        *covered.entry(a.request_id).or_default() += 1;
        let own = samples.get(&patient_id).map(Vec::as_slice).unwrap_or_default();
        let valid_until = crossmatches
            .get(&a.unit_id)
            .into_iter()
            .flatten()
            .filter_map(|sample_id| own.iter().find(|(id, _)| id == sample_id))
            .map(|(_, until)| *until)
            .max();
        holding.extend(alerts::allocation_alerts(
            &AllocationState {
                id: a.id,
                allocated: a.status == AllocationStatus::Allocated,
                issued_at: a.issued_at.filter(|_| a.status == AllocationStatus::Issued).map(utc),
                planned_at: utc(needed_by),
                sample_valid_until: valid_until,
            },
            now,
            policy,
        ));
    }

    let mut open_requests: Vec<i64> = Vec::new();
    let mut transfused: HashMap<i64, usize> = HashMap::new();
    for request_id in store::allocations::transfused_of_open_requests(conn)? {
        *transfused.entry(request_id).or_default() += 1;
    }
    for r in store::requests::list(conn, None, Some("open"), None, i64::MAX)? {
        open_requests.push(r.id);
        holding.extend(alerts::request_alerts(
            &RequestState {
                id: r.id,
                needed_by: utc(r.needed_by),
                covered: covered.get(&r.id).copied().unwrap_or(0) + transfused.get(&r.id).copied().unwrap_or(0),
            },
            now,
            policy,
        ));
    }

    let scheduled = store::collections::scheduled(conn)?;
    let donor_ids: Vec<i64> = scheduled.iter().map(|c| c.donor_id).collect();
    let donors = store::donors::find_many(conn, &donor_ids)?;
    let records: HashMap<i64, _> = donors
        .iter()
        .map(|d| d.id)
        .zip(crate::services::donors::records(conn, &donors)?)
        .collect();
    // Scheduled collections whose donor is no longer eligible, for the course plans below.
    let mut ineligible: HashMap<i64, Vec<&'static str>> = HashMap::new();
    for c in &scheduled {
        let Some(record) = records.get(&c.donor_id) else {
            continue;
        };
        let stims = store::collections::stimulations_for_collection(conn, c.id)?;
        let start = utc(c.scheduled_start);
        let agents = crate::services::collections::agents_to_check(c, &stims, policy)?;
        let eligibility = record.eligibility_at(start, Some(c.id), &agents, policy);
        if !eligibility.eligible {
            ineligible.insert(c.id, eligibility.codes());
        }
        holding.extend(alerts::collection_alerts(
            &CollectionState {
                id: c.id,
                start,
                eligibility: &eligibility,
                stimulations: stims
                    .iter()
                    .map(|s| StimulationState {
                        id: s.id,
                        agent: &s.agent,
                        administered_at: utc(s.administered_at),
                    })
                    .collect(),
            },
            now,
            policy,
        ));
    }

    for (request_id, plan_id, days) in crate::services::course_plans::broken_days(conn, &open_requests, &ineligible)? {
        let states: Vec<alerts::PlanDayState<'_>> = days
            .iter()
            .map(|(day, due_at, broken)| alerts::PlanDayState {
                day: *day,
                due_at: *due_at,
                broken: broken.as_deref(),
            })
            .collect();
        holding.extend(alerts::course_plan_alerts(
            &alerts::CoursePlanState {
                request_id,
                plan_id,
                days: &states,
            },
            now,
        ));
    }

    for t in store::tasks::open(conn)? {
        holding.extend(alerts::task_alerts(
            &TaskState {
                id: t.id,
                title: &t.title,
                due_at: utc(t.due_at),
            },
            now,
        ));
    }

    // One condition per episode; raising one whose episode is open at the same stage does
    // nothing, so those are skipped without a statement each.
    let mut holding = alerts::fold_episodes(holding);
    // In one order for every scan, so that concurrent scans lock alert rows in the same order.
    holding.sort_by(|a, b| {
        (a.kind.as_str(), a.kind.entity().as_str(), a.entity_id).cmp(&(
            b.kind.as_str(),
            b.kind.entity().as_str(),
            b.entity_id,
        ))
    });
    // The entity type is the kind's, so (kind, entity id) names the episode.
    let scanned: Vec<AlertKind> = AlertKind::scanned().collect();
    let open: HashMap<(AlertKind, String), crate::store::alerts::Alert> =
        crate::store::alerts::open_episodes(conn, &scanned)?
            .into_iter()
            .map(|a| ((a.kind, a.entity_id.clone()), a))
            .collect();
    for spec in &holding {
        if let Some(a) = open.get(&(spec.kind, spec.entity_id.to_string())) {
            let episode = OpenEpisode {
                severity: a.severity,
                threshold_hours: a.threshold_hours.and_then(|h| u32::try_from(h).ok()),
                condition_key: &a.dedup_key,
                message: &a.message,
            };
            let occurrence = Occurrence {
                kind: spec.kind,
                severity: spec.severity,
                threshold_hours: spec.threshold_hours,
                condition_key: &spec.dedup_key,
                message: &spec.message,
            };
            if alerts::decide(Some(&episode), &occurrence) == RaiseDecision::Nothing {
                continue;
            }
        }
        let raised = crate::services::alerts::raise(
            conn,
            Raise {
                kind: spec.kind,
                severity: spec.severity,
                entity_id: spec.entity_id,
                condition_key: spec.dedup_key.clone(),
                message: spec.message.clone(),
                details: serde_json::json!({ spec.kind.entity().as_str(): spec.entity_id }),
                threshold_hours: spec.threshold_hours,
                at: now,
            },
        )?;
        match raised {
            Some(Raised {
                transition: AlertTransition::Raised,
                ..
            }) => report.raised += 1,
            Some(Raised {
                transition: AlertTransition::Escalated,
                ..
            }) => report.escalated += 1,
            _ => {}
        }
    }
    // Every alert of a (kind, entity) whose condition no longer holds resolves.
    let current: HashSet<(AlertKind, String)> = holding.iter().map(|s| (s.kind, s.entity_id.to_string())).collect();
    for alert in crate::store::alerts::unresolved(conn, &scanned)? {
        if !current.contains(&(alert.kind, alert.entity_id.clone()))
            && crate::services::alerts::resolve(conn, &alert, at)?
        {
            report.resolved += 1;
        }
    }
    report.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    Ok(report)
}

/// One leased run: `Ok(None)` when another run holds the lease.
pub fn run_once(conn: &mut DbConn, holder: &str, now: DateTime<Utc>) -> ApiResult<Option<ScanReport>> {
    let at = store::truncate_micros(now.naive_utc());
    let acquired = store::write_tx(conn, |c| {
        store::jobs::acquire(c, ALERT_SCAN, holder, at, at + LEASE).map_err(ApiError::from)
    })?;
    if !acquired {
        return Ok(None);
    }
    let outcome = store::write_tx(conn, |c| {
        let policy = crate::services::policy::current(c)?.policy;
        scan(c, now, &policy)
    });
    // Idempotency keys past the policy period go with the leased run (a lookup also ignores
    // and replaces an expired key, so a late purge changes nothing a client sees).
    let purged = store::write_tx(conn, |c| {
        let policy = crate::services::policy::current(c)?.policy;
        crate::services::idempotency::purge(c, at, &policy)
    });
    if let Err(e) = purged {
        tracing::warn!("expired idempotency keys were not purged: {e}");
    }
    let (report, error) = match &outcome {
        Ok(r) => (r.clone(), None),
        Err(e) => (ScanReport::default(), Some(format!("{e}"))),
    };
    let finished = store::now();
    store::write_tx(conn, |c| {
        store::jobs::finish(
            c,
            ALERT_SCAN,
            holder,
            &store::jobs::RunResult {
                finished_at: finished,
                duration_ms: report.duration_ms,
                raised: report.raised,
                escalated: report.escalated,
                resolved: report.resolved,
                expired: report.expired,
                error: error.as_deref(),
            },
        )
        .map_err(ApiError::from)
    })?;
    outcome.map(Some)
}

/// This process's name in job leases.
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "granulo".to_owned());
    format!("{host}:{}", std::process::id())
}

/// What one scheduler tick did: the scan (or why it could not run) and the deliveries.
pub struct Tick {
    pub scan: Result<Option<ScanReport>, String>,
    pub deliveries: Result<crate::services::webhooks::DeliveryReport, String>,
}

/// One scheduler tick: a leased scan, then the due webhook deliveries. Errors (a database
/// outage) are returned, never panicked on, so the scheduler logs them and tries again.
pub async fn tick(
    pool: &Pool,
    outbound: &crate::services::webhooks::Outbound,
    secrets: &std::sync::Arc<crate::credentials::sealed::Keyring>,
    holder: &str,
) -> Tick {
    let (scan_pool, holder) = (pool.clone(), holder.to_owned());
    let scan = match actix_web::web::block(move || -> ApiResult<Option<ScanReport>> {
        let mut conn = scan_pool.get().map_err(store::StoreError::from)?;
        run_once(&mut conn, &holder, Utc::now())
    })
    .await
    {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let deliveries = crate::services::webhooks::deliver_due(pool, outbound, secrets, Utc::now())
        .await
        .map_err(|e| e.to_string());
    Tick { scan, deliveries }
}

/// The in-process scheduler: a tick every `interval`. Ticks never overlap (the next waits for
/// the current one), and a failing tick is logged and retried at the next.
pub fn spawn_scheduler(
    pool: Pool,
    interval: Duration,
    outbound: crate::services::webhooks::Outbound,
    secrets: std::sync::Arc<crate::credentials::sealed::Keyring>,
) {
    let holder = holder_name();
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(interval);
        loop {
            ticker.tick().await;
            let t = tick(&pool, &outbound, &secrets, &holder).await;
            match t.scan {
                Ok(Some(r)) => tracing::info!(
                    raised = r.raised,
                    escalated = r.escalated,
                    resolved = r.resolved,
                    expired = r.expired,
                    ms = r.duration_ms,
                    "alert scan"
                ),
                Ok(None) => tracing::debug!("alert scan skipped: another run holds the lease"),
                Err(e) => tracing::warn!(error = %e, "alert scan failed; retrying next tick"),
            }
            match t.deliveries {
                Ok(r) if r.delivered + r.failed > 0 => {
                    tracing::info!(delivered = r.delivered, failed = r.failed, "webhook deliveries")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook delivery failed; retrying next tick"),
            }
        }
    });
}
