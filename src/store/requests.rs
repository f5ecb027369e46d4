//! Hospital requests (courses of granulocytes).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable};

use super::schema::requests;
use super::{DbConn, MultiBackend};
use crate::domain::requests::{Priority, RequestStatus};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = requests)]
pub struct Request {
    pub id: i64,
    pub hospital_id: i64,
    pub patient_id: i64,
    pub units_requested: i32,
    pub needed_by: NaiveDateTime,
    pub priority: Priority,
    pub anc_per_ul: i32,
    pub infection: String,
    pub refractory_hours: i32,
    pub cmv_negative: bool,
    pub hla_compatible: bool,
    pub within_indication: bool,
    pub status: RequestStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<NaiveDateTime>,
    pub decision_reason: Option<String>,
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
    pub requested_by: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub irradiated: bool,
    /// The placer's order identifier (FHIR `ServiceRequest.identifier`), unique per hospital.
    pub order_system: Option<String>,
    pub order_value: Option<String>,
}

#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = requests, treat_none_as_null = true)]
pub struct RequestData {
    pub hospital_id: i64,
    pub patient_id: i64,
    pub units_requested: i32,
    pub needed_by: NaiveDateTime,
    pub priority: Priority,
    pub anc_per_ul: i32,
    pub infection: String,
    pub refractory_hours: i32,
    pub cmv_negative: bool,
    pub hla_compatible: bool,
    pub within_indication: bool,
    pub status: RequestStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<NaiveDateTime>,
    pub decision_reason: Option<String>,
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
    pub requested_by: String,
    pub updated_at: NaiveDateTime,
    pub irradiated: bool,
    pub order_system: Option<String>,
    pub order_value: Option<String>,
}

impl From<Request> for RequestData {
    fn from(r: Request) -> Self {
        Self {
            hospital_id: r.hospital_id,
            patient_id: r.patient_id,
            units_requested: r.units_requested,
            needed_by: r.needed_by,
            priority: r.priority,
            anc_per_ul: r.anc_per_ul,
            infection: r.infection,
            refractory_hours: r.refractory_hours,
            cmv_negative: r.cmv_negative,
            hla_compatible: r.hla_compatible,
            within_indication: r.within_indication,
            status: r.status,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            decision_reason: r.decision_reason,
            cancelled_by: r.cancelled_by,
            cancel_reason: r.cancel_reason,
            requested_by: r.requested_by,
            updated_at: r.updated_at,
            irradiated: r.irradiated,
            order_system: r.order_system,
            order_value: r.order_value,
        }
    }
}

pub fn insert(conn: &mut DbConn, data: &RequestData, created_at: NaiveDateTime) -> QueryResult<Request> {
    let id: i64 = diesel::insert_into(requests::table)
        .values((data, requests::created_at.eq(created_at)))
        .returning(requests::id)
        .get_result(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn update(conn: &mut DbConn, id: i64, data: &RequestData) -> QueryResult<Request> {
    diesel::update(requests::table.find(id)).set(data).execute(conn)?;
    find(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<Request>> {
    requests::table
        .find(id)
        .select(Request::as_select())
        .first(conn)
        .optional()
}

/// Takes the request's row lock (PostgreSQL); false if absent.
pub fn lock(conn: &mut DbConn, id: i64) -> QueryResult<bool> {
    let n = diesel::update(requests::table.find(id))
        .set(requests::updated_at.eq(requests::updated_at))
        .execute(conn)?;
    Ok(n == 1)
}

pub fn list(
    conn: &mut DbConn,
    hospital_id: Option<i64>,
    status: Option<&str>,
    after_id: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Request>> {
    let mut query = requests::table
        .select(Request::as_select())
        .order(requests::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(h) = hospital_id {
        query = query.filter(requests::hospital_id.eq(h));
    }
    if let Some(s) = status {
        query = query.filter(requests::status.eq(s.to_owned()));
    }
    if let Some(after) = after_id {
        query = query.filter(requests::id.gt(after));
    }
    query.load(conn)
}

/// An identifier token of a search: `None` matches any system (or any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierToken {
    pub system: Option<String>,
    pub value: Option<String>,
}

/// What a search asks of requests: the lists AND together, the values inside each OR.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub hospital_id: Option<i64>,
    pub patients: Vec<Vec<i64>>,
    pub statuses: Vec<Vec<RequestStatus>>,
    pub identifiers: Vec<Vec<IdentifierToken>>,
    /// `updated_at` in `[from, before)`.
    pub updated_from: Option<NaiveDateTime>,
    pub updated_before: Option<NaiveDateTime>,
}

type Condition = Box<dyn BoxableExpression<requests::table, MultiBackend, SqlType = Nullable<Bool>>>;

fn identifier_matches(t: &IdentifierToken) -> Condition {
    match (t.system.clone(), t.value.clone()) {
        (Some(s), Some(v)) => Box::new(requests::order_system.eq(s).and(requests::order_value.eq(v))),
        (Some(s), None) => Box::new(
            requests::order_system
                .eq(s)
                .and(requests::order_value.is_not_null().nullable()),
        ),
        (None, Some(v)) => Box::new(requests::order_value.eq(v)),
        (None, None) => Box::new(requests::order_value.is_not_null().nullable()),
    }
}

fn filtered(f: &Filter) -> requests::BoxedQuery<'static, MultiBackend> {
    let mut query = requests::table.into_boxed();
    if let Some(h) = f.hospital_id {
        query = query.filter(requests::hospital_id.eq(h));
    }
    for ids in &f.patients {
        query = query.filter(requests::patient_id.eq_any(ids.clone()));
    }
    for statuses in &f.statuses {
        let names: Vec<String> = statuses.iter().map(|s| s.as_str().to_owned()).collect();
        query = query.filter(requests::status.eq_any(names));
    }
    for tokens in &f.identifiers {
        let mut any: Option<Condition> = None;
        for t in tokens {
            let one = identifier_matches(t);
            any = Some(match any {
                None => one,
                Some(before) => Box::new(before.or(one)),
            });
        }
        if let Some(any) = any {
            query = query.filter(any);
        }
    }
    if let Some(from) = f.updated_from {
        query = query.filter(requests::updated_at.ge(from));
    }
    if let Some(before) = f.updated_before {
        query = query.filter(requests::updated_at.lt(before));
    }
    query
}

/// One page of the matches, ascending by id after `after_id`.
pub fn search(conn: &mut DbConn, f: &Filter, after_id: Option<i64>, limit: i64) -> QueryResult<Vec<Request>> {
    let mut query = filtered(f)
        .select(Request::as_select())
        .order(requests::id.asc())
        .limit(limit);
    if let Some(after) = after_id {
        query = query.filter(requests::id.gt(after));
    }
    query.load(conn)
}

/// How many requests match, in all pages.
pub fn count(conn: &mut DbConn, f: &Filter) -> QueryResult<i64> {
    filtered(f).count().get_result(conn)
}
