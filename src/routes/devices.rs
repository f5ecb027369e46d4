//! Apheresis devices (staff).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::users::ListQuery;
use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::input::{Text, decode_cursor, page_limit, paginate, parse_id};
use crate::services::devices::{self as work, DeviceView};
use crate::state::AppState;
use crate::store::devices;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Spectra Optia 2"}))]
pub struct CreateDeviceRequest {
    /// Unique, 1–100 characters (e.g. "Spectra Optia 2").
    pub name: Text<1, 100>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"active": false}))]
pub struct UpdateDeviceRequest {
    /// `false` takes the device out of service: it takes no new bookings.
    pub active: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub items: Vec<DeviceView>,
    pub next_cursor: Option<String>,
}

/// Register an apheresis device.
#[utoipa::path(
    post, path = "/api/v1/devices", operation_id = "create_device", tag = "collections", security(("bearer" = [])), request_body = CreateDeviceRequest,
    responses(
        (status = 201, description = "the device registered", body = DeviceView),
        (status = 409, description = "`device_name_taken`", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: AuthUser,
    body: JsonBody<CreateDeviceRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let name = body.into_inner().name.into_inner();
    let actor = caller.actor();
    let device = state
        .write(move |conn| work::create_device(conn, &actor, &name))
        .await?;
    Ok(HttpResponse::Created().json(device))
}

/// List devices.
#[utoipa::path(
    get, path = "/api/v1/devices", operation_id = "list_devices", tag = "collections", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "the devices", body = DeviceList))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: AuthUser,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let limit = page_limit(query.limit)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let rows = state
        .db(move |conn| devices::list(conn, after, limit + 1).map_err(Into::into))
        .await?;
    let (rows, next_cursor) = paginate(rows, limit, |d| d.id);
    Ok(HttpResponse::Ok().json(DeviceList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Take a device out of service or back.
#[utoipa::path(
    patch, path = "/api/v1/devices/{id}", operation_id = "update_device", tag = "collections", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)), request_body = UpdateDeviceRequest, responses((status = 200, description = "the device, changed", body = DeviceView))
)]
pub async fn update(
    state: web::Data<AppState>,
    caller: AuthUser,
    id: web::Path<String>,
    body: JsonBody<UpdateDeviceRequest>,
) -> ApiResult<HttpResponse> {
    caller.require_staff()?;
    let id = parse_id(&id, "device")?;
    let active = body.into_inner().active;
    let actor = caller.actor();
    let device = state
        .write(move |conn| work::set_device_active(conn, &actor, id, active))
        .await?;
    Ok(HttpResponse::Ok().json(device))
}
