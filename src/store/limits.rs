//! What the limits keep in the database: the live instances (the rate limits are shared among
//! them), the event-stream leases, and the hospital request counts per day.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::{hospital_request_counts, instances, stream_leases};

/// Record that instance `id` is alive at `now`; forget instances not seen since `forget_before`.
/// Returns the instances seen since `live_since`.
pub fn heartbeat(
    conn: &mut DbConn,
    id: &str,
    now: NaiveDateTime,
    live_since: NaiveDateTime,
    forget_before: NaiveDateTime,
) -> QueryResult<i64> {
    diesel::sql_query("INSERT INTO instances (id, started_at, seen_at) VALUES ($1, $2, $2) ON CONFLICT DO NOTHING")
        .bind::<diesel::sql_types::Text, _>(id)
        .bind::<diesel::sql_types::Timestamp, _>(now)
        .execute(conn)?;
    diesel::update(instances::table.find(id))
        .set(instances::seen_at.eq(now))
        .execute(conn)?;
    diesel::delete(instances::table.filter(instances::seen_at.lt(forget_before))).execute(conn)?;
    instances::table
        .filter(instances::seen_at.ge(live_since))
        .count()
        .get_result(conn)
}

/// Take a free slot (never taken, released, or whose lease lapsed) of `account`'s first `slots`
/// for `holder` until `until`. Each claim is one conditional UPDATE of one row, atomic on both
/// backends, so two instances never hand out the same slot. `None`: every slot is held.
pub fn acquire_stream(
    conn: &mut DbConn,
    account: &str,
    slots: i32,
    holder: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> QueryResult<Option<i32>> {
    for slot in 0..slots {
        diesel::sql_query("INSERT INTO stream_leases (account, slot) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind::<diesel::sql_types::Text, _>(account)
            .bind::<diesel::sql_types::Integer, _>(slot)
            .execute(conn)?;
        let taken = diesel::update(
            stream_leases::table.find((account, slot)).filter(
                stream_leases::leased_until
                    .is_null()
                    .or(stream_leases::leased_until.lt(now)),
            ),
        )
        .set((stream_leases::holder.eq(holder), stream_leases::leased_until.eq(until)))
        .execute(conn)?;
        if taken == 1 {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// When the first of `account`'s held slots lapses at the latest (for `Retry-After`).
pub fn first_stream_expiry(conn: &mut DbConn, account: &str) -> QueryResult<Option<NaiveDateTime>> {
    stream_leases::table
        .filter(stream_leases::account.eq(account))
        .select(diesel::dsl::min(stream_leases::leased_until))
        .first(conn)
}

/// Extend `holder`'s lease; false when it is no longer `holder`'s (it lapsed and was taken).
pub fn renew_stream(
    conn: &mut DbConn,
    account: &str,
    slot: i32,
    holder: &str,
    until: NaiveDateTime,
) -> QueryResult<bool> {
    let n = diesel::update(
        stream_leases::table
            .find((account, slot))
            .filter(stream_leases::holder.eq(holder)),
    )
    .set(stream_leases::leased_until.eq(until))
    .execute(conn)?;
    Ok(n == 1)
}

pub fn release_stream(conn: &mut DbConn, account: &str, slot: i32, holder: &str) -> QueryResult<usize> {
    diesel::update(
        stream_leases::table
            .find((account, slot))
            .filter(stream_leases::holder.eq(holder)),
    )
    .set((
        stream_leases::holder.eq(None::<String>),
        stream_leases::leased_until.eq(None::<NaiveDateTime>),
    ))
    .execute(conn)
}

/// Count one more request for `hospital_id` on `day`, in the caller's transaction, and return
/// the count. The increment's row lock serialises concurrent creations until commit.
pub fn count_request(conn: &mut DbConn, hospital_id: i64, day: &str) -> QueryResult<i32> {
    diesel::sql_query(
        "INSERT INTO hospital_request_counts (hospital_id, day, placed) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
    )
    .bind::<diesel::sql_types::BigInt, _>(hospital_id)
    .bind::<diesel::sql_types::Text, _>(day)
    .execute(conn)?;
    diesel::update(hospital_request_counts::table.find((hospital_id, day)))
        .set(hospital_request_counts::placed.eq(hospital_request_counts::placed + 1))
        .returning(hospital_request_counts::placed)
        .get_result(conn)
}
