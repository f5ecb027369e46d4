//! Course plans (`course_plans`, `course_plan_days`) and donors' availability statements
//! (`donor_availability`).

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use super::DbConn;
use super::schema::{collections, course_plan_days, course_plans, donor_availability};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = course_plans)]
pub struct CoursePlanRow {
    pub id: i64,
    pub request_id: i64,
    pub repairs_plan_id: Option<i64>,
    pub body: String,
    pub proposed_by: String,
    pub proposed_at: NaiveDateTime,
    pub accepted_by: Option<String>,
    pub accepted_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = course_plans)]
pub struct NewCoursePlan<'a> {
    pub request_id: i64,
    pub repairs_plan_id: Option<i64>,
    pub body: &'a str,
    pub proposed_by: &'a str,
    pub proposed_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = course_plan_days)]
pub struct PlanDayRow {
    pub plan_id: i64,
    pub day: i32,
    pub due_at: NaiveDateTime,
    pub collection_id: Option<i64>,
    pub unit_id: Option<i64>,
    pub uncovered_code: Option<String>,
}

pub fn insert(conn: &mut DbConn, row: &NewCoursePlan<'_>) -> QueryResult<CoursePlanRow> {
    let id: i64 = diesel::insert_into(course_plans::table)
        .values(row)
        .returning(course_plans::id)
        .get_result(conn)?;
    course_plans::table
        .find(id)
        .select(CoursePlanRow::as_select())
        .first(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<CoursePlanRow>> {
    course_plans::table
        .find(id)
        .select(CoursePlanRow::as_select())
        .first(conn)
        .optional()
}

/// The request's latest plan, proposed or accepted.
pub fn latest(conn: &mut DbConn, request_id: i64) -> QueryResult<Option<CoursePlanRow>> {
    course_plans::table
        .filter(course_plans::request_id.eq(request_id))
        .order(course_plans::id.desc())
        .select(CoursePlanRow::as_select())
        .first(conn)
        .optional()
}

/// The request's latest accepted plan: the roster in force.
pub fn accepted(conn: &mut DbConn, request_id: i64) -> QueryResult<Option<CoursePlanRow>> {
    course_plans::table
        .filter(course_plans::request_id.eq(request_id))
        .filter(course_plans::accepted_at.is_not_null())
        .order(course_plans::id.desc())
        .select(CoursePlanRow::as_select())
        .first(conn)
        .optional()
}

/// Records the acceptance once: false when the plan was already accepted.
pub fn accept(conn: &mut DbConn, id: i64, by: &str, at: NaiveDateTime) -> QueryResult<bool> {
    let n = diesel::update(
        course_plans::table
            .filter(course_plans::id.eq(id))
            .filter(course_plans::accepted_at.is_null()),
    )
    .set((course_plans::accepted_by.eq(by), course_plans::accepted_at.eq(at)))
    .execute(conn)?;
    Ok(n == 1)
}

pub fn insert_days(conn: &mut DbConn, rows: &[PlanDayRow]) -> QueryResult<()> {
    for r in rows {
        diesel::insert_into(course_plan_days::table).values(r).execute(conn)?;
    }
    Ok(())
}

/// The days of plan `plan_id`, in course order.
pub fn days_of(conn: &mut DbConn, plan_id: i64) -> QueryResult<Vec<PlanDayRow>> {
    course_plan_days::table
        .filter(course_plan_days::plan_id.eq(plan_id))
        .order(course_plan_days::day.asc())
        .select(PlanDayRow::as_select())
        .load(conn)
}

/// The accepted plans in force (each request's latest accepted) of the requests in `status`,
/// with their days, in (request, day) order.
pub fn in_force_of_requests(
    conn: &mut DbConn,
    request_ids: &[i64],
) -> QueryResult<Vec<(CoursePlanRow, Vec<PlanDayRow>)>> {
    let plans: Vec<CoursePlanRow> = course_plans::table
        .filter(course_plans::request_id.eq_any(request_ids))
        .filter(course_plans::accepted_at.is_not_null())
        .order((course_plans::request_id.asc(), course_plans::id.desc()))
        .select(CoursePlanRow::as_select())
        .load(conn)?;
    let mut latest: Vec<CoursePlanRow> = Vec::new();
    for p in plans {
        if latest.last().is_none_or(|l| l.request_id != p.request_id) {
            latest.push(p);
        }
    }
    let ids: Vec<i64> = latest.iter().map(|p| p.id).collect();
    let days: Vec<PlanDayRow> = course_plan_days::table
        .filter(course_plan_days::plan_id.eq_any(&ids))
        .order((course_plan_days::plan_id.asc(), course_plan_days::day.asc()))
        .select(PlanDayRow::as_select())
        .load(conn)?;
    Ok(latest
        .into_iter()
        .map(|p| {
            let own = days.iter().filter(|d| d.plan_id == p.id).cloned().collect();
            (p, own)
        })
        .collect())
}

/// The collections booked for a request (any status), id order.
pub fn collections_of_request(conn: &mut DbConn, request_id: i64) -> QueryResult<Vec<super::collections::Collection>> {
    collections::table
        .filter(collections::request_id.eq(request_id))
        .order(collections::id.asc())
        .select(super::collections::Collection::as_select())
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = donor_availability)]
pub struct AvailabilityRow {
    pub id: i64,
    pub donor_id: i64,
    pub from_date: NaiveDate,
    pub until_date: NaiveDate,
    pub available: bool,
    pub note: Option<String>,
    pub stated_by: String,
    pub stated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = donor_availability)]
pub struct NewAvailability<'a> {
    pub donor_id: i64,
    pub from_date: NaiveDate,
    pub until_date: NaiveDate,
    pub available: bool,
    pub note: Option<&'a str>,
    pub stated_by: &'a str,
    pub stated_at: NaiveDateTime,
}

pub fn insert_availability(conn: &mut DbConn, row: &NewAvailability<'_>) -> QueryResult<AvailabilityRow> {
    let id: i64 = diesel::insert_into(donor_availability::table)
        .values(row)
        .returning(donor_availability::id)
        .get_result(conn)?;
    donor_availability::table
        .find(id)
        .select(AvailabilityRow::as_select())
        .first(conn)
}

/// The donor's statements, oldest first.
pub fn availability_of(conn: &mut DbConn, donor_id: i64) -> QueryResult<Vec<AvailabilityRow>> {
    donor_availability::table
        .filter(donor_availability::donor_id.eq(donor_id))
        .order(donor_availability::id.asc())
        .select(AvailabilityRow::as_select())
        .load(conn)
}

/// Every statement touching `[from, until]`, oldest first (for every donor: statements are few).
pub fn availability_between(conn: &mut DbConn, from: NaiveDate, until: NaiveDate) -> QueryResult<Vec<AvailabilityRow>> {
    donor_availability::table
        .filter(donor_availability::until_date.ge(from))
        .filter(donor_availability::from_date.le(until))
        .order(donor_availability::id.asc())
        .select(AvailabilityRow::as_select())
        .load(conn)
}

/// Collections scheduled or running that start between `from` and `to` (every device), for the
/// planner's free slots; the caller widens the window by the longest procedure.
pub fn booked_between(
    conn: &mut DbConn,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> QueryResult<Vec<super::collections::Collection>> {
    use crate::domain::scheduling::CollectionStatus;
    collections::table
        .filter(
            collections::status
                .eq(CollectionStatus::InProgress)
                .or(collections::status
                    .eq(CollectionStatus::Scheduled)
                    .and(collections::scheduled_start.gt(from))
                    .and(collections::scheduled_start.lt(to))),
        )
        .select(super::collections::Collection::as_select())
        .load(conn)
}

/// A unit made from a collection: (unit id, collection id, din, status).
pub type MadeUnit = (i64, Option<i64>, String, crate::domain::units::UnitStatus);

/// The units made from `collection_ids`.
pub fn units_of_collections(conn: &mut DbConn, collection_ids: &[i64]) -> QueryResult<Vec<MadeUnit>> {
    use super::schema::units;
    units::table
        .filter(units::collection_id.eq_any(collection_ids))
        .order(units::id.asc())
        .select((units::id, units::collection_id, units::din, units::status))
        .load(conn)
}

/// The units `ids`: (unit id, din, status).
pub fn unit_states(
    conn: &mut DbConn,
    ids: &[i64],
) -> QueryResult<Vec<(i64, String, crate::domain::units::UnitStatus)>> {
    use super::schema::units;
    units::table
        .filter(units::id.eq_any(ids))
        .select((units::id, units::din, units::status))
        .load(conn)
}

/// The granulocyte counts of the units each of `donor_ids` gave: (donor id, count).
pub fn yields_of_donors(conn: &mut DbConn, donor_ids: &[i64]) -> QueryResult<Vec<(Option<i64>, f64)>> {
    use super::schema::units;
    units::table
        .filter(units::donor_id.eq_any(donor_ids))
        .filter(units::granulocyte_count.gt(0.0))
        .select((units::donor_id, units::granulocyte_count))
        .load(conn)
}
