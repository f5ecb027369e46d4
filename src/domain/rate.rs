//! Rate-limit arithmetic, pure: token buckets over an injected clock (seconds as `f64` from any
//! origin), the share of a limit one instance enforces, and the facility's calendar day that the
//! hospital request cap counts in.
//!
//! A limit is configured for the whole deployment. Each instance keeps its buckets in memory and
//! enforces `1/n` of the limit, `n` being the live instances (they heartbeat in the database), so
//! behind a load balancer that spreads a caller's requests the instances together allow the
//! configured rate, and no request waits on a database write.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// The longest `Retry-After` a bucket answers (a tiny share of a tiny limit would say hours).
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// One instance's share of a limit: how many requests a full bucket holds, and the refill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub capacity: f64,
    pub per_sec: f64,
}

impl Rate {
    /// `per_minute` sustained with `burst_seconds` of it saved up, divided among `instances`;
    /// `None` when the limit is off (`per_minute == 0`). A share never holds less than one
    /// request, so a very low limit over many instances is looser than configured.
    pub fn share(per_minute: u32, burst_seconds: u32, instances: u32) -> Option<Self> {
        if per_minute == 0 {
            return None;
        }
        let n = f64::from(instances.max(1));
        let per_sec = f64::from(per_minute) / 60.0 / n;
        let capacity = (per_sec * f64::from(burst_seconds.max(1))).max(1.0);
        Some(Self { capacity, per_sec })
    }
}

/// A token bucket: starts full, one token per request, refills at the rate's pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: f64,
}

impl Bucket {
    pub fn full(rate: Rate, now: f64) -> Self {
        Self {
            tokens: rate.capacity,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: f64) {
        // A clock that steps back refills nothing.
        let elapsed = (now - self.updated).max(0.0);
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.capacity);
        self.updated = self.updated.max(now);
    }

    /// Take a token at `now`; when there is none, the whole seconds until there is one.
    pub fn take(&mut self, rate: Rate, now: f64) -> Result<(), u64> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - self.tokens) / rate.per_sec).ceil();
        // `as` saturates; the bound keeps a NaN or an infinity out.
        Err((wait as u64).clamp(1, MAX_RETRY_AFTER_SECS))
    }

    /// Full again at `now`: forgetting it changes nothing.
    pub fn is_idle(&self, rate: Rate, now: f64) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= rate.capacity
    }
}

/// Buckets by key (an account, an address). Full buckets are swept away, so memory follows the
/// callers active in the last burst period, not every caller ever seen.
#[derive(Debug, Default)]
pub struct Buckets {
    map: HashMap<String, Bucket>,
    swept_at: f64,
}

/// Sweep at most this often, or when the map grows past `SWEEP_SIZE`.
const SWEEP_EVERY_SECS: f64 = 30.0;
const SWEEP_SIZE: usize = 50_000;

impl Buckets {
    pub fn take(&mut self, key: &str, rate: Rate, now: f64) -> Result<(), u64> {
        if now - self.swept_at >= SWEEP_EVERY_SECS || self.map.len() >= SWEEP_SIZE {
            self.map.retain(|_, b| !b.is_idle(rate, now));
            self.swept_at = now;
        }
        match self.map.get_mut(key) {
            Some(b) => b.take(rate, now),
            None => {
                let mut b = Bucket::full(rate, now);
                let taken = b.take(rate, now);
                self.map.insert(key.to_owned(), b);
                taken
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The facility's calendar day at `now`, and the seconds until the next one starts (the
/// `Retry-After` of a daily cap). A midnight that a DST change skips counts from the first
/// instant of the next day.
pub fn facility_day(now: DateTime<Utc>, tz: chrono_tz::Tz) -> (NaiveDate, u64) {
    let local = now.with_timezone(&tz);
    let day = local.date_naive();
    let next = day.succ_opt().unwrap_or(day);
    let starts = next
        .and_hms_opt(0, 0, 0)
        .and_then(|m| {
            (0..4).find_map(|h| {
                (m + TimeDelta::hours(h))
                    .and_local_timezone(tz)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            })
        })
        .unwrap_or(now + TimeDelta::days(1));
    let secs = u64::try_from((starts - now).num_seconds()).unwrap_or(1).max(1);
    (day, secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_minute: u32, burst: u32, n: u32) -> Rate {
        Rate::share(per_minute, burst, n).expect("on")
    }

    #[test]
    fn shares_divide_the_configured_limit_among_instances() {
        let table = [
            // per_minute, burst_seconds, instances, capacity, per_sec
            (1200, 10, 1, 200.0, 20.0),
            (1200, 10, 2, 100.0, 10.0),
            (1200, 10, 3, 200.0 / 3.0, 20.0 / 3.0),
            (6, 60, 2, 3.0, 0.05),
            // never less than one request per bucket
            (1, 1, 4, 1.0, 1.0 / 240.0),
            // zero instances (none registered yet) counts as one
            (60, 5, 0, 5.0, 1.0),
        ];
        for (pm, burst, n, capacity, per_sec) in table {
            let r = rate(pm, burst, n);
            assert!((r.capacity - capacity).abs() < 1e-9, "{pm}/{burst}/{n}: {r:?}");
            assert!((r.per_sec - per_sec).abs() < 1e-9, "{pm}/{burst}/{n}: {r:?}");
        }
        assert_eq!(Rate::share(0, 10, 1), None, "0 turns the limit off");
    }

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        // (seconds since start, expected answer) for 60/min with a burst of 3 seconds.
        let r = rate(60, 3, 1);
        let mut b = Bucket::full(r, 0.0);
        let steps: &[(f64, Result<(), u64>)] = &[
            (0.0, Ok(())),
            (0.0, Ok(())),
            (0.0, Ok(())),
            (0.0, Err(1)),
            (0.5, Err(1)),
            (1.0, Ok(())),
            (1.0, Err(1)),
            // a long pause refills to the burst, not beyond
            (100.0, Ok(())),
            (100.0, Ok(())),
            (100.0, Ok(())),
            (100.0, Err(1)),
            // a clock stepping back refills nothing
            (50.0, Err(1)),
        ];
        for (i, (t, want)) in steps.iter().enumerate() {
            assert_eq!(b.take(r, *t), *want, "step {i} at {t}s");
        }
    }

    #[test]
    fn retry_after_counts_whole_seconds_to_the_next_token() {
        let r = rate(6, 10, 1); // one request per 10 s, a bucket of 1
        let mut b = Bucket::full(r, 0.0);
        assert_eq!(b.take(r, 0.0), Ok(()));
        assert_eq!(b.take(r, 0.0), Err(10));
        assert_eq!(b.take(r, 7.5), Err(3));
        assert_eq!(b.take(r, 10.0), Ok(()));
        let slow = rate(1, 1, 1000);
        let mut b = Bucket::full(slow, 0.0);
        assert_eq!(b.take(slow, 0.0), Ok(()));
        assert_eq!(b.take(slow, 0.0), Err(MAX_RETRY_AFTER_SECS));
    }

    #[test]
    fn two_instances_with_half_each_allow_what_one_would() {
        let whole = rate(600, 1, 1);
        let half = rate(600, 1, 2);
        let mut one = Bucket::full(whole, 0.0);
        let (mut a, mut b) = (Bucket::full(half, 0.0), Bucket::full(half, 0.0));
        let mut alone = 0;
        let mut shared = 0;
        for i in 0..200 {
            let t = f64::from(i) * 0.01;
            alone += usize::from(one.take(whole, t).is_ok());
            // a load balancer alternating between the two
            let bucket = if i % 2 == 0 { &mut a } else { &mut b };
            shared += usize::from(bucket.take(half, t).is_ok());
        }
        // Equal but for a token that floating point puts on one side of a tick or the other.
        assert!(alone.abs_diff(shared) <= 1, "{alone} alone, {shared} shared");
    }

    #[test]
    fn buckets_are_per_key_and_idle_ones_are_forgotten() {
        let r = rate(60, 2, 1);
        let mut m = Buckets::default();
        assert_eq!(m.take("a", r, 0.0), Ok(()));
        assert_eq!(m.take("a", r, 0.0), Ok(()));
        assert_eq!(m.take("a", r, 0.0), Err(1));
        assert_eq!(m.take("b", r, 0.0), Ok(()), "another key has its own bucket");
        assert_eq!(m.len(), 2);
        // After the sweep period both are full again and dropped; only the new one stays.
        assert_eq!(m.take("c", r, SWEEP_EVERY_SECS + 1.0), Ok(()));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn the_facility_day_and_the_wait_for_the_next() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        let table = [
            ("2026-03-10T23:30:00Z", chrono_tz::UTC, "2026-03-10", 1800),
            // New York is 4 hours behind in summer: 23:30 UTC is 19:30 there.
            (
                "2026-07-10T23:30:00Z",
                chrono_tz::America::New_York,
                "2026-07-10",
                4 * 3600 + 1800,
            ),
            // 00:30 in Auckland (UTC+13 in January) is still the previous day in UTC.
            (
                "2026-01-09T11:30:00Z",
                chrono_tz::Pacific::Auckland,
                "2026-01-10",
                23 * 3600 + 1800,
            ),
            // The day before Europe/London springs forward has 23 hours left at its midnight.
            (
                "2026-03-29T00:00:00Z",
                chrono_tz::Europe::London,
                "2026-03-29",
                23 * 3600,
            ),
        ];
        for (now, tz, day, secs) in table {
            assert_eq!(facility_day(at(now), tz), (d(day), secs), "{now} in {tz}");
        }
    }
}
