//! Hospital organisations and their client credentials.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::users::ListQuery;
use super::utc;
use crate::accounts::{self, ClientRef};
use crate::auth::{AuthUser, tokens};
use crate::error::{ApiError, ApiResult, Validator};
use crate::extract::JsonBody;
use crate::input::{Text, decode_cursor, page_limit, parse_id};
use crate::state::AppState;
use crate::store::api_clients::ApiClient;
use crate::store::hospitals::Hospital;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "St Elsewhere University Hospital", "code": "STE"}))]
pub struct CreateHospitalRequest {
    /// 1–200 characters.
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub name: String,
    /// Short unique code, 2–32 of A-Z 0-9 _ - (stored upper-case).
    #[schema(pattern = r"^[^\S\x1c-\x1f]*[A-Za-z0-9][A-Za-z0-9_-]{1,31}[^\S\x1c-\x1f]*$")]
    pub code: String,
    /// The system the hospital's MRNs belong to (FHIR `Patient.identifier.system`), an absolute
    /// URI; default `urn:granulo:hospital:<code>:mrn`.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9+.\-]*:[!-~]{1,250}$")]
    pub mrn_system: Option<String>,
    /// The system the hospital numbers its orders in (FHIR `ServiceRequest.identifier.system`);
    /// default `urn:granulo:hospital:<code>:order`.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9+.\-]*:[!-~]{1,250}$")]
    pub order_system: Option<String>,
}

/// Change a hospital's identifier systems; `null` goes back to granulo's default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mrn_system": "urn:oid:2.16.840.1.113883.3.1234.1", "order_system": null}))]
pub struct UpdateHospitalRequest {
    #[serde(default, deserialize_with = "crate::input::double_option")]
    #[schema(value_type = Option<String>, pattern = r"^[A-Za-z][A-Za-z0-9+.\-]*:[!-~]{1,250}$")]
    pub mrn_system: crate::input::DoubleOption<String>,
    #[serde(default, deserialize_with = "crate::input::double_option")]
    #[schema(value_type = Option<String>, pattern = r"^[A-Za-z][A-Za-z0-9+.\-]*:[!-~]{1,250}$")]
    pub order_system: crate::input::DoubleOption<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HospitalResponse {
    pub id: i64,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub name: String,
    #[schema(pattern = r"^[^\S\x1c-\x1f]*[A-Za-z0-9][A-Za-z0-9_-]{1,31}[^\S\x1c-\x1f]*$")]
    pub code: String,
    pub active: bool,
    /// The MRN system in force (the hospital's own or the default).
    pub mrn_system: String,
    /// The order-number system in force.
    pub order_system: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct HospitalList {
    pub items: Vec<HospitalResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "STE interface engine"}))]
pub struct CreateClientRequest {
    /// What the credential is for, e.g. the interface engine's name.
    pub name: Option<Text<0, 200>>,
}

/// The new credential. The secret is shown once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedClientResponse {
    pub id: i64,
    pub client_id: String,
    pub client_secret: String,
    pub hospital_id: i64,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct ClientResponse {
    pub id: i64,
    pub client_id: String,
    pub hospital_id: i64,
    #[schema(
        pattern = r"^[^\S\x1c-\x1f]*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?[^\S\x1c-\x1f]*$"
    )]
    pub name: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ClientList {
    pub items: Vec<ClientResponse>,
    pub next_cursor: Option<String>,
}

impl From<Hospital> for HospitalResponse {
    fn from(h: Hospital) -> Self {
        Self {
            mrn_system: h.mrn_system(),
            order_system: h.order_system(),
            id: h.id,
            name: h.name,
            code: h.code,
            active: h.active,
            created_at: utc(h.created_at),
        }
    }
}

impl From<ApiClient> for ClientResponse {
    fn from(c: ApiClient) -> Self {
        Self {
            id: c.id,
            client_id: c.client_id,
            hospital_id: c.hospital_id,
            name: c.name,
            active: c.active,
            created_at: utc(c.created_at),
            revoked_at: c.revoked_at.map(utc),
        }
    }
}

/// Register a hospital.
#[utoipa::path(
    post, path = "/api/v1/hospitals", operation_id = "create_hospital", tag = "hospitals", security(("bearer" = [])), request_body = CreateHospitalRequest,
    responses(
        (status = 201, description = "the hospital registered", body = HospitalResponse),
        (status = 409, description = "`hospital_code_taken`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<CreateHospitalRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let req = body.into_inner();
    let mut v = Validator::new();
    // Checked beside the code, so that both are reported at once.
    let name = Text::<1, 200>::check(&mut v, "name", &req.name);
    let code = accounts::normalize_hospital_code(&req.code).unwrap_or_else(|m| {
        v.push("code", m);
        String::new()
    });
    let mut system =
        |field: &str, raw: Option<&str>| raw.and_then(|r| crate::input::check_system_uri(&mut v, field, r));
    let systems = accounts::Systems {
        mrn_system: system("mrn_system", req.mrn_system.as_deref()),
        order_system: system("order_system", req.order_system.as_deref()),
    };
    v.finish()?;
    let actor = caller.actor();
    let hospital = state
        .write(move |conn| accounts::create_hospital(conn, &actor, &name, &code, &systems))
        .await?;
    Ok(HttpResponse::Created().json(HospitalResponse::from(hospital)))
}

/// Change a hospital's MRN and order-number systems (what FHIR shows and matches).
#[utoipa::path(
    patch, path = "/api/v1/hospitals/{id}", operation_id = "update_hospital", tag = "hospitals", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = UpdateHospitalRequest,
    responses((status = 200, description = "the hospital, changed", body = HospitalResponse))
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<UpdateHospitalRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let id = parse_id(&id, "hospital")?;
    let req = body.into_inner();
    let mut v = Validator::new();
    let mut system = |field: &str, raw: &Option<String>| {
        raw.as_deref()
            .and_then(|r| crate::input::check_system_uri(&mut v, field, r))
    };
    let mrn = req.mrn_system.as_ref().map(|m| system("mrn_system", m));
    let order = req.order_system.as_ref().map(|o| system("order_system", o));
    v.finish()?;
    let actor = caller.actor();
    let hospital = state
        .write(move |conn| {
            let now = accounts::hospital(conn, id)?;
            let systems = accounts::Systems {
                mrn_system: mrn.unwrap_or(now.mrn_system),
                order_system: order.unwrap_or(now.order_system),
            };
            accounts::set_hospital_systems(conn, &actor, id, &systems)
        })
        .await?;
    Ok(HttpResponse::Ok().json(HospitalResponse::from(hospital)))
}

/// List hospitals.
#[utoipa::path(
    get, path = "/api/v1/hospitals", operation_id = "list_hospitals", tag = "hospitals", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "a page of hospitals", body = HospitalList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let limit = page_limit(query.limit)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let (rows, next_cursor) = state
        .db(move |conn| accounts::list_hospitals(conn, after, limit))
        .await?;
    Ok(HttpResponse::Ok().json(HospitalList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One hospital: staff see any, a hospital account only its own (others answer 404).
#[utoipa::path(
    get, path = "/api/v1/hospitals/{id}", operation_id = "get_hospital", tag = "hospitals", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the hospital", body = HospitalResponse))
)]
pub async fn get(state: web::Data<AppState>, caller: AuthUser, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "hospital")?;
    if !caller.may_access_hospital(id) {
        return Err(ApiError::not_found("hospital"));
    }
    let hospital = state.db(move |conn| accounts::hospital(conn, id)).await?;
    Ok(HttpResponse::Ok().json(HospitalResponse::from(hospital)))
}

/// Issue client credentials for a hospital system.
#[utoipa::path(
    post, path = "/api/v1/hospitals/{id}/clients", tag = "hospitals", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = CreateClientRequest,
    responses((status = 201, description = "the client credential, with its secret (shown only this once)", body = CreatedClientResponse))
)]
pub async fn create_client(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<CreateClientRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let hospital_id = parse_id(&id, "hospital")?;
    let name = body.into_inner().name.map(Text::into_inner).unwrap_or_default();
    let name = if name.is_empty() {
        "hospital system".to_owned()
    } else {
        name
    };
    let client_id = tokens::new_client_id();
    let secret = tokens::new_client_secret();
    let secret_hash = tokens::sha256_hex(&secret);
    let actor = caller.actor();
    let client = state
        .write(move |conn| accounts::create_client(conn, &actor, hospital_id, &name, &client_id, &secret_hash))
        .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(CreatedClientResponse {
            id: client.id,
            client_id: client.client_id,
            client_secret: secret,
            hospital_id: client.hospital_id,
            name: client.name,
        }))
}

/// A hospital's client credentials (without secrets).
#[utoipa::path(
    get, path = "/api/v1/hospitals/{id}/clients", tag = "hospitals", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), responses((status = 200, description = "the hospital's client credentials, without secrets", body = ClientList))
)]
pub async fn list_clients(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let hospital_id = parse_id(&id, "hospital")?;
    let rows = state.db(move |conn| accounts::clients_of(conn, hospital_id)).await?;
    Ok(HttpResponse::Ok().json(ClientList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

/// Revoke a client credential; its tokens stop working at once.
#[utoipa::path(
    post, path = "/api/v1/hospitals/{id}/clients/{client_id}/revoke", tag = "hospitals", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), ("client_id" = String, Path, pattern = r"^([1-9][0-9]{0,17}|gc_[0-9a-f]{1,64})$", description = "the credential's numeric id, or its `client_id` (`gc_…`)")),
    responses(
        (status = 200, description = "the client credential, revoked", body = ClientResponse),
        (status = 409, description = "`already_revoked`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_client(
    state: web::Data<AppState>,
    caller: AuthUser,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    caller.require_admin()?;
    let (hid, cid) = path.into_inner();
    let hospital_id = parse_id(&hid, "hospital")?;
    // The admin sees the public `gc_…` id; the numeric one works too.
    let client = if cid.starts_with("gc_") {
        ClientRef::ClientId(cid)
    } else {
        ClientRef::Id(parse_id(&cid, "client")?)
    };
    let actor = caller.actor();
    let client = state
        .write(move |conn| accounts::revoke_client(conn, &actor, hospital_id, client))
        .await?;
    Ok(HttpResponse::Ok().json(ClientResponse::from(client)))
}
