//! Units of work on accounts: users, hospitals and their API clients. Each function runs inside
//! the caller's write transaction and appends its audit row there.

use serde_json::json;

use crate::credentials::Role;
use crate::error::{ApiError, ApiResult, ErrorCode, Validator, unique_as};
use crate::input::paginate;
use crate::store::api_clients::{self, ApiClient, NewApiClient};
use crate::store::audit::{self, Actor, Change};
use crate::store::hospitals::{self, Hospital, NewHospital};
use crate::store::users::{self, NewUser, User, UserChanges};
use crate::store::{DbConn, now, sessions};

/// Lower-case, trimmed; 3–64 of `a-z 0-9 . _ @ -`.
pub fn normalize_username(raw: &str) -> Result<String, String> {
    // ASCII before lower-casing: some non-ASCII letters lower-case to ASCII ones (K → k).
    if !raw.trim().is_ascii() {
        return Err("may contain only letters, digits and . _ @ -".to_owned());
    }
    let name = raw.trim().to_lowercase();
    let len = name.chars().count();
    if !(3..=64).contains(&len) {
        return Err("must be 3 to 64 characters".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c))
    {
        return Err("may contain only letters, digits and . _ @ -".to_owned());
    }
    Ok(name)
}

/// Upper-case, trimmed; 2–32 of `A-Z 0-9 _ -`, starting with a letter or digit.
pub fn normalize_hospital_code(raw: &str) -> Result<String, String> {
    let code = raw.trim().to_uppercase();
    let len = code.len();
    if !(2..=32).contains(&len) {
        return Err("must be 2 to 32 characters".to_owned());
    }
    let mut chars = code.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err("may contain only A-Z, 0-9, _ and -, starting with a letter or digit".to_owned());
    }
    Ok(code)
}

fn check_role_hospital(conn: &mut DbConn, role: Role, hospital_id: Option<i64>) -> ApiResult<()> {
    let mut v = Validator::new();
    v.check(
        role != Role::Hospital || hospital_id.is_some(),
        "hospital_id",
        "is required for role hospital",
    );
    v.check(
        role == Role::Hospital || hospital_id.is_none(),
        "hospital_id",
        "only hospital accounts belong to a hospital",
    );
    v.finish()?;
    if let Some(hid) = hospital_id {
        require_active_hospital(conn, hid, || {
            ApiError::refused(
                ErrorCode::UnknownHospital,
                format!("there is no hospital {hid}"),
                Vec::new(),
            )
        })?;
    }
    Ok(())
}

/// Accounts and credentials may only be attached to an existing, active hospital.
fn require_active_hospital(conn: &mut DbConn, id: i64, missing: impl FnOnce() -> ApiError) -> ApiResult<()> {
    match hospitals::find(conn, id)? {
        Some(h) if h.active => Ok(()),
        Some(_) => Err(ApiError::refused(
            ErrorCode::HospitalInactive,
            format!("hospital {id} is not active"),
            Vec::new(),
        )),
        None => Err(missing()),
    }
}

pub struct NewAccount {
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub hospital_id: Option<i64>,
}

/// A page of accounts by id, with the next page's cursor.
pub fn list_users(conn: &mut DbConn, after: Option<i64>, limit: i64) -> ApiResult<(Vec<User>, Option<String>)> {
    let found = users::list(conn, after, limit + 1)?;
    Ok(paginate(found, limit, |u| u.id))
}

pub fn user(conn: &mut DbConn, id: i64) -> ApiResult<User> {
    users::find(conn, id)?.ok_or_else(|| ApiError::not_found("user"))
}

pub fn create_user(conn: &mut DbConn, actor: &Actor, account: &NewAccount) -> ApiResult<User> {
    check_role_hospital(conn, account.role, account.hospital_id)?;
    let at = now();
    let user = users::insert(
        conn,
        &NewUser {
            username: &account.username,
            password_hash: &account.password_hash,
            role: account.role.as_str(),
            hospital_id: account.hospital_id,
            active: true,
            created_at: at,
            updated_at: at,
        },
    )
    .map_err(unique_as(
        ErrorCode::UsernameTaken,
        format!("the username {} is taken", account.username),
    ))?;
    audit::append(
        conn,
        actor,
        Change::created("user.create", "user", user.id, user.audit_view()),
    )?;
    Ok(user)
}

/// A partial update; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct AccountPatch {
    pub role: Option<Role>,
    pub hospital_id: Option<Option<i64>>,
    pub active: Option<bool>,
    pub password_hash: Option<String>,
}

pub fn update_user(conn: &mut DbConn, actor: &Actor, id: i64, patch: AccountPatch) -> ApiResult<User> {
    let before = users::find(conn, id)?.ok_or_else(|| ApiError::not_found("user"))?;
    let old_role: Role = before.role.parse().map_err(ApiError::internal)?;
    let role = patch.role.unwrap_or(old_role);
    let hospital_id = match patch.hospital_id {
        Some(h) => h,
        None if role == Role::Hospital => before.hospital_id,
        None => None,
    };
    let active = patch.active.unwrap_or(before.active);
    check_role_hospital(conn, role, hospital_id)?;
    let loses_admin = old_role == Role::Admin && before.active && (role != Role::Admin || !active);
    if loses_admin && users::count_active_admins(conn)? <= 1 {
        return Err(ApiError::new(
            ErrorCode::LastAdmin,
            "this is the last active admin; create another admin before demoting or deactivating it",
        ));
    }
    let password_changed = patch.password_hash.is_some();
    let at = now();
    let after = users::update(
        conn,
        id,
        &UserChanges {
            password_hash: patch.password_hash,
            role: Some(role.as_str().to_owned()),
            hospital_id: Some(hospital_id),
            active: Some(active),
            updated_at: Some(at),
        },
    )?;
    // Deactivation, a new password or a new role or hospital ends every session of the
    // account. Access tokens state the role and hospital (`auth::session_check` refuses one
    // that no longer matches); the person signs in again to act in the new role.
    let moved = role != old_role || hospital_id != before.hospital_id;
    let reason = if password_changed {
        Some("password_changed")
    } else if before.active && !active {
        Some("account_deactivated")
    } else if moved {
        Some("role_changed")
    } else {
        None
    };
    let mut ended = 0;
    if let Some(reason) = reason {
        ended = sessions::revoke_all_for_user(conn, id, reason, at)?;
    }
    let mut after_view = after.audit_view();
    if password_changed {
        after_view["password_changed"] = json!(true);
    }
    if let Some(reason) = reason.filter(|_| ended > 0) {
        after_view["sessions_revoked"] = json!({"count": ended, "reason": reason});
    }
    audit::append(
        conn,
        actor,
        Change::updated("user.update", "user", id, before.audit_view(), after_view),
    )?;
    Ok(after)
}

/// Create the first admin when there are no users at all; `None` when users already exist.
pub fn bootstrap_admin(conn: &mut DbConn, username: &str, password_hash: &str) -> ApiResult<Option<User>> {
    if users::count(conn)? > 0 {
        return Ok(None);
    }
    let account = NewAccount {
        username: username.to_owned(),
        password_hash: password_hash.to_owned(),
        role: Role::Admin,
        hospital_id: None,
    };
    create_user(conn, &Actor::system("bootstrap"), &account).map(Some)
}

/// A page of hospitals by id, with the next page's cursor.
pub fn list_hospitals(conn: &mut DbConn, after: Option<i64>, limit: i64) -> ApiResult<(Vec<Hospital>, Option<String>)> {
    let found = hospitals::list(conn, after, limit + 1)?;
    Ok(paginate(found, limit, |h| h.id))
}

pub fn hospital(conn: &mut DbConn, id: i64) -> ApiResult<Hospital> {
    hospitals::find(conn, id)?.ok_or_else(|| ApiError::not_found("hospital"))
}

/// A hospital's client credentials (404 for an unknown hospital).
pub fn clients_of(conn: &mut DbConn, hospital_id: i64) -> ApiResult<Vec<ApiClient>> {
    hospital(conn, hospital_id)?;
    Ok(api_clients::list_for_hospital(conn, hospital_id)?)
}

/// The identifier systems a hospital numbers its patients and orders in (FHIR); `None` keeps
/// granulo's default for the hospital.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Systems {
    pub mrn_system: Option<String>,
    pub order_system: Option<String>,
}

fn hospital_snapshot(h: &Hospital) -> serde_json::Value {
    json!({"id": h.id, "name": h.name, "code": h.code, "active": h.active,
           "mrn_system": h.mrn_system(), "order_system": h.order_system()})
}

pub fn create_hospital(
    conn: &mut DbConn,
    actor: &Actor,
    name: &str,
    code: &str,
    systems: &Systems,
) -> ApiResult<Hospital> {
    let at = now();
    let hospital = hospitals::insert(
        conn,
        &NewHospital {
            name,
            code,
            active: true,
            created_at: at,
            updated_at: at,
            mrn_system: systems.mrn_system.as_deref(),
            order_system: systems.order_system.as_deref(),
        },
    )
    .map_err(unique_as(
        ErrorCode::HospitalCodeTaken,
        format!("a hospital with code {code} exists"),
    ))?;
    audit::append(
        conn,
        actor,
        Change::created("hospital.create", "hospital", hospital.id, hospital_snapshot(&hospital)),
    )?;
    Ok(hospital)
}

/// Changes the hospital's identifier systems. Patients and orders keep their ids; what changes
/// is the system FHIR shows their MRNs and order numbers in, and matches searches against.
pub fn set_hospital_systems(conn: &mut DbConn, actor: &Actor, id: i64, systems: &Systems) -> ApiResult<Hospital> {
    let before = hospital(conn, id)?;
    let after = hospitals::set_systems(
        conn,
        id,
        systems.mrn_system.as_deref(),
        systems.order_system.as_deref(),
        now(),
    )?;
    audit::append(
        conn,
        actor,
        Change::updated(
            "hospital.update",
            "hospital",
            id,
            hospital_snapshot(&before),
            hospital_snapshot(&after),
        ),
    )?;
    Ok(after)
}

pub fn create_client(
    conn: &mut DbConn,
    actor: &Actor,
    hospital_id: i64,
    name: &str,
    client_id: &str,
    secret_hash: &str,
) -> ApiResult<ApiClient> {
    require_active_hospital(conn, hospital_id, || ApiError::not_found("hospital"))?;
    let client = api_clients::insert(
        conn,
        &NewApiClient {
            hospital_id,
            client_id,
            secret_hash,
            name,
            active: true,
            created_at: now(),
        },
    )?;
    audit::append(
        conn,
        actor,
        Change::created("api_client.create", "api_client", client.id, client.audit_view()),
    )?;
    Ok(client)
}

/// A client credential as an admin names it: its numeric id or its public `gc_…` id.
pub enum ClientRef {
    Id(i64),
    ClientId(String),
}

pub fn revoke_client(conn: &mut DbConn, actor: &Actor, hospital_id: i64, client: ClientRef) -> ApiResult<ApiClient> {
    let id = match client {
        ClientRef::Id(id) => id,
        ClientRef::ClientId(cid) => api_clients::find_by_client_id(conn, &cid)?
            .map(|c| c.id)
            .ok_or_else(|| ApiError::not_found("client"))?,
    };
    let before = api_clients::find(conn, id)?
        .filter(|c| c.hospital_id == hospital_id)
        .ok_or_else(|| ApiError::not_found("client"))?;
    let at = now();
    let after = api_clients::revoke(conn, id, at)?
        .ok_or_else(|| ApiError::new(ErrorCode::AlreadyRevoked, "this client credential is already revoked"))?;
    sessions::revoke_all_for_client(conn, id, "client_revoked", at)?;
    let change = Change::updated(
        "api_client.revoke",
        "api_client",
        id,
        before.audit_view(),
        after.audit_view(),
    );
    audit::append(conn, actor, change)?;
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(normalize_username("  Alice.B ").as_deref(), Ok("alice.b"));
        assert!(normalize_username("ab").is_err());
        assert!(normalize_username("has space").is_err());
        assert!(normalize_username(&"a".repeat(65)).is_err());
        assert!(normalize_username("ünï").is_err());
    }

    #[test]
    fn hospital_codes() {
        assert_eq!(normalize_hospital_code(" rfh-01 ").as_deref(), Ok("RFH-01"));
        assert!(normalize_hospital_code("A").is_err());
        assert!(normalize_hospital_code("-AB").is_err());
        assert!(normalize_hospital_code("A B").is_err());
    }
}
