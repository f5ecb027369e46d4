//! Client credentials of hospital systems (OAuth 2.0 client-credentials style).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConn;
use super::schema::api_clients;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_clients)]
pub struct ApiClient {
    pub id: i64,
    pub hospital_id: i64,
    pub client_id: String,
    pub secret_hash: String,
    pub name: String,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

impl ApiClient {
    pub fn audit_view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "hospital_id": self.hospital_id,
            "client_id": self.client_id,
            "name": self.name,
            "active": self.active,
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = api_clients)]
pub struct NewApiClient<'a> {
    pub hospital_id: i64,
    pub client_id: &'a str,
    pub secret_hash: &'a str,
    pub name: &'a str,
    pub active: bool,
    pub created_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConn, new: &NewApiClient<'_>) -> QueryResult<ApiClient> {
    // RETURNING of a whole row is not dispatched by MultiConnection; the id is.
    let id: i64 = diesel::insert_into(api_clients::table)
        .values(new)
        .returning(api_clients::id)
        .get_result(conn)?;
    api_clients::table.find(id).select(ApiClient::as_select()).first(conn)
}

pub fn find(conn: &mut DbConn, id: i64) -> QueryResult<Option<ApiClient>> {
    api_clients::table
        .find(id)
        .select(ApiClient::as_select())
        .first(conn)
        .optional()
}

pub fn find_by_client_id(conn: &mut DbConn, client_id: &str) -> QueryResult<Option<ApiClient>> {
    api_clients::table
        .filter(api_clients::client_id.eq(client_id))
        .select(ApiClient::as_select())
        .first(conn)
        .optional()
}

pub fn list_for_hospital(conn: &mut DbConn, hospital_id: i64) -> QueryResult<Vec<ApiClient>> {
    api_clients::table
        .filter(api_clients::hospital_id.eq(hospital_id))
        .select(ApiClient::as_select())
        .order(api_clients::id.asc())
        .load(conn)
}

/// Deactivate a credential; returns the updated row, or `None` when it was already revoked.
pub fn revoke(conn: &mut DbConn, id: i64, at: NaiveDateTime) -> QueryResult<Option<ApiClient>> {
    let changed = diesel::update(api_clients::table.find(id).filter(api_clients::active.eq(true)))
        .set((api_clients::active.eq(false), api_clients::revoked_at.eq(Some(at))))
        .execute(conn)?;
    if changed == 0 {
        return Ok(None);
    }
    find(conn, id)
}
