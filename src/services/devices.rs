//! Apheresis devices: registration and taking in or out of service.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{to_value, utc};
use crate::error::{ApiError, ApiResult, ErrorCode, unique_as};
use crate::store::audit::{self, Actor, Change};
use crate::store::devices::{self, Device};
use crate::store::{self, DbConn};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceView {
    pub id: i64,
    pub name: String,
    /// Inactive devices take no new bookings.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            id: d.id,
            name: d.name,
            active: d.active,
            created_at: utc(d.created_at),
            updated_at: utc(d.updated_at),
        }
    }
}

pub fn create_device(conn: &mut DbConn, actor: &Actor, name: &str) -> ApiResult<DeviceView> {
    let device: DeviceView = devices::insert(conn, name, store::now())
        .map_err(unique_as(
            ErrorCode::DeviceNameTaken,
            format!("a device named {name:?} exists"),
        ))?
        .into();
    audit::append(
        conn,
        actor,
        Change::created("device.create", "device", device.id, to_value(&device)?),
    )?;
    Ok(device)
}

pub fn set_device_active(conn: &mut DbConn, actor: &Actor, id: i64, active: bool) -> ApiResult<DeviceView> {
    let before: DeviceView = devices::find(conn, id)?
        .ok_or_else(|| ApiError::not_found("device"))?
        .into();
    let after: DeviceView = devices::set_active(conn, id, active, store::now())?.into();
    audit::append(
        conn,
        actor,
        Change::updated("device.update", "device", id, to_value(&before)?, to_value(&after)?),
    )?;
    Ok(after)
}
