//! HTTP routes: one file per resource, each with its request/response types and thin handlers.
//! Handlers parse input, check the caller, run one unit of work and shape the answer.

pub mod alerts;
pub mod allocations;
pub mod audit;
pub mod auth;
pub mod collections;
pub mod devices;
pub mod docs;
pub mod donors;
pub mod health;
pub mod hospitals;
pub mod isbt128;
pub mod patients;
pub mod policy;
pub mod requests;
pub mod tasks;
pub mod units;
pub mod users;
pub mod webhooks;

use actix_web::web;

use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::store::DbConn;

/// Register every route. Resources are declared with `web::resource` so that a wrong method
/// answers 405 and an unknown path 404 (both turned into problem+json by the error middleware).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(
            web::scope("/api/v1")
                .service(web::resource("/openapi.json").route(web::get().to(docs::openapi_json)))
                .service(web::resource("/auth/login").route(web::post().to(auth::login)))
                .service(web::resource("/auth/token").route(web::post().to(auth::client_token)))
                .service(web::resource("/auth/refresh").route(web::post().to(auth::refresh)))
                .service(web::resource("/auth/logout").route(web::post().to(auth::logout)))
                .service(web::resource("/me").route(web::get().to(auth::me)))
                .service(
                    web::resource("/users")
                        .route(web::post().to(users::create))
                        .route(web::get().to(users::list)),
                )
                .service(
                    web::resource("/users/{id}")
                        .route(web::get().to(users::get))
                        .route(web::patch().to(users::update)),
                )
                .service(
                    web::resource("/hospitals")
                        .route(web::post().to(hospitals::create))
                        .route(web::get().to(hospitals::list)),
                )
                .service(web::resource("/hospitals/{id}").route(web::get().to(hospitals::get)))
                .service(
                    web::resource("/hospitals/{id}/clients")
                        .route(web::post().to(hospitals::create_client))
                        .route(web::get().to(hospitals::list_clients)),
                )
                .service(
                    web::resource("/hospitals/{id}/clients/{client_id}/revoke")
                        .route(web::post().to(hospitals::revoke_client)),
                )
                .service(web::resource("/audit").route(web::get().to(audit::list)))
                .service(
                    web::resource("/policy")
                        .route(web::get().to(policy::get))
                        .route(web::put().to(policy::put)),
                )
                .service(
                    web::resource("/donors")
                        .route(web::post().to(donors::create))
                        .route(web::get().to(donors::list)),
                )
                .service(
                    web::resource("/donors/{id}")
                        .route(web::get().to(donors::get))
                        .route(web::patch().to(donors::update)),
                )
                .service(
                    web::resource("/donors/{id}/deferrals")
                        .route(web::post().to(donors::defer))
                        .route(web::get().to(donors::deferrals)),
                )
                .service(
                    web::resource("/donors/{id}/donations")
                        .route(web::post().to(donors::add_donation))
                        .route(web::get().to(donors::donations)),
                )
                .service(web::resource("/donors/{id}/eligibility").route(web::get().to(donors::eligibility)))
                .service(web::resource("/donors/{id}/lookback").route(web::get().to(donors::lookback)))
                .service(
                    web::resource("/donors/{id}/stimulations")
                        .route(web::post().to(donors::add_stimulation))
                        .route(web::get().to(donors::stimulations)),
                )
                .service(
                    web::resource("/devices")
                        .route(web::post().to(devices::create))
                        .route(web::get().to(devices::list)),
                )
                .service(web::resource("/devices/{id}").route(web::patch().to(devices::update)))
                .service(
                    web::resource("/collections")
                        .route(web::post().to(collections::create))
                        .route(web::get().to(collections::list)),
                )
                .service(
                    web::resource("/collections/{id}")
                        .route(web::get().to(collections::get))
                        .route(web::patch().to(collections::update)),
                )
                .service(web::resource("/collections/{id}/start").route(web::post().to(collections::start)))
                .service(web::resource("/collections/{id}/complete").route(web::post().to(collections::complete)))
                .service(web::resource("/collections/{id}/abort").route(web::post().to(collections::abort)))
                .service(web::resource("/isbt128/decode").route(web::post().to(isbt128::decode)))
                .service(
                    web::resource("/units")
                        .route(web::post().to(units::create))
                        .route(web::get().to(units::list)),
                )
                .service(web::resource("/units/{id_or_din}").route(web::get().to(units::get)))
                .service(web::resource("/units/{id}/irradiation").route(web::post().to(units::irradiate)))
                .service(web::resource("/units/{id}/tests").route(web::post().to(units::record_test)))
                .service(web::resource("/units/{id}/release").route(web::post().to(units::release)))
                .service(web::resource("/units/{id}/inspection").route(web::post().to(units::inspect)))
                .service(web::resource("/units/{id}/excursion-disposition").route(web::post().to(units::disposition)))
                .service(web::resource("/units/{id}/discard").route(web::post().to(units::discard)))
                .service(web::resource("/units/{id}/storage-readings").route(web::post().to(units::add_reading)))
                .service(web::resource("/units/{id}/label").route(web::get().to(units::label)))
                .service(web::resource("/units/{id}/trace").route(web::get().to(units::trace)))
                .service(web::resource("/storage-readings").route(web::post().to(units::add_location_reading)))
                .service(web::resource("/alerts").route(web::get().to(alerts::list)))
                .service(web::resource("/alerts/stream").route(web::get().to(alerts::stream)))
                .service(web::resource("/alerts/{id}/ack").route(web::post().to(alerts::ack)))
                .service(web::resource("/alerts/{id}/events").route(web::get().to(alerts::events)))
                .service(web::resource("/jobs").route(web::get().to(alerts::jobs)))
                .service(
                    web::resource("/webhooks")
                        .route(web::post().to(webhooks::create))
                        .route(web::get().to(webhooks::list)),
                )
                .service(web::resource("/webhooks/{id}/deliveries").route(web::get().to(webhooks::deliveries)))
                .service(
                    web::resource("/patients")
                        .route(web::post().to(patients::create))
                        .route(web::get().to(patients::list)),
                )
                .service(
                    web::resource("/patients/{id}")
                        .route(web::get().to(patients::get))
                        .route(web::patch().to(patients::update)),
                )
                .service(
                    web::resource("/patients/{id}/samples")
                        .route(web::post().to(patients::add_sample))
                        .route(web::get().to(patients::samples)),
                )
                .service(web::resource("/samples/{id}/typing").route(web::post().to(patients::type_sample)))
                .service(
                    web::resource("/requests")
                        .route(web::post().to(requests::create))
                        .route(web::get().to(requests::list)),
                )
                .service(web::resource("/requests/{id}").route(web::get().to(requests::get)))
                .service(web::resource("/requests/{id}/approve").route(web::post().to(requests::approve)))
                .service(web::resource("/requests/{id}/decline").route(web::post().to(requests::decline)))
                .service(web::resource("/requests/{id}/cancel").route(web::post().to(requests::cancel)))
                .service(web::resource("/requests/{id}/allocations").route(web::post().to(requests::allocate)))
                .service(web::resource("/requests/{id}/candidates").route(web::get().to(requests::candidates)))
                .service(web::resource("/allocations/{id}").route(web::get().to(allocations::get)))
                .service(web::resource("/allocations/{id}/issue").route(web::post().to(allocations::issue)))
                .service(web::resource("/allocations/{id}/return").route(web::post().to(allocations::return_unit)))
                .service(web::resource("/allocations/{id}/cancel").route(web::post().to(allocations::cancel)))
                .service(web::resource("/allocations/{id}/transfusion").route(web::post().to(allocations::transfusion)))
                .service(web::resource("/allocations/{id}/sign-off").route(web::post().to(allocations::sign_off)))
                .service(web::resource("/tasks").route(web::get().to(tasks::list)))
                .service(web::resource("/tasks/{id}/complete").route(web::post().to(tasks::complete)))
                .service(
                    web::resource("/crossmatches")
                        .route(web::post().to(allocations::crossmatch))
                        .route(web::get().to(allocations::crossmatches)),
                )
                .service(
                    web::resource("/crossmatches/{id}/resolve").route(web::post().to(allocations::resolve_crossmatch)),
                )
                .service(web::resource("/compatibility").route(web::get().to(allocations::compatibility)))
                .service(web::resource("/reports/exceptions").route(web::get().to(allocations::exceptions))),
        )
        .configure(docs::register_docs_redirect)
        .service(docs::swagger_ui());
}

/// Adapts a unit of work that needs the rule table: the policy is read on the same connection,
/// so inside `state.write(...)` it is the one in force in that transaction.
pub fn with_policy<T>(
    f: impl FnOnce(&mut DbConn, &Policy) -> ApiResult<T> + Send + 'static,
) -> impl FnOnce(&mut DbConn) -> ApiResult<T> + Send + 'static {
    move |conn| {
        let policy = crate::services::policy::current(conn)?.policy;
        f(conn, &policy)
    }
}

/// Default and largest page sizes of list routes.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

pub fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

pub fn decode_cursor(cursor: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(cursor) = cursor else { return Ok(None) };
    let digits = (1..=18).contains(&cursor.len()) && cursor.bytes().all(|b| b.is_ascii_digit());
    let id = digits.then(|| cursor.parse::<i64>().ok()).flatten();
    id.map(Some)
        .ok_or_else(|| ApiError::field("cursor", "is not a cursor this server returned"))
}

// Paging and PATCH helpers live below both layers; services page their own queries.
pub use crate::services::{double_option, encode_cursor, paginate, utc};

/// Integers in paths and query strings as JSON Schema reads them: `7` and `7.0` are the same.
pub mod integral {
    use serde::{Deserialize, Deserializer, de::Error as _};

    pub fn parse(raw: &str) -> Option<i64> {
        let digits = match raw.split_once('.') {
            Some((int, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => int,
            Some(_) => return None,
            None => raw,
        };
        digits.parse().ok()
    }

    fn convert<'de, D: Deserializer<'de>, T: TryFrom<i64>>(raw: &str) -> Result<T, D::Error> {
        parse(raw)
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| D::Error::custom(format!("{raw:?} is not an integer in range")))
    }

    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(de: D) -> Result<T, D::Error> {
        convert::<D, T>(&String::deserialize(de)?)
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(de: D) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(de)?
            .map(|raw| convert::<D, T>(&raw))
            .transpose()
    }
}

/// Parse a numeric id from a path segment (400 `invalid_path` otherwise).
pub fn parse_id(raw: &str, what: &str) -> ApiResult<i64> {
    integral::parse(raw)
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidPath, format!("{raw:?} is not a valid {what} id")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(Some(&encode_cursor(42))).expect("ok"), Some(42));
        assert_eq!(decode_cursor(None).expect("ok"), None);
        assert!(decode_cursor(Some("!!!")).is_err());
        assert!(decode_cursor(Some("djI6NA")).is_err());
        assert!(decode_cursor(Some("-1")).is_err());
        assert!(decode_cursor(Some("1234567890123456789")).is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(page_limit(None).expect("default"), 50);
        assert_eq!(page_limit(Some(500)).expect("max"), 500);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(501)).is_err());
    }

    #[test]
    fn pagination() {
        let (items, next) = paginate(vec![1, 2, 3], 2, |x| *x);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, Some(encode_cursor(2)));
        let (items, next) = paginate(vec![1, 2], 2, |x| *x);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, None);
    }

    proptest! {
        #[test]
        fn client_cursors_ids_and_limits_never_panic(text in any::<String>(), raw in "[0-9]{0,20}|[ -~]{0,24}", n in any::<i64>()) {
            let _ = decode_cursor(Some(&text));
            let _ = decode_cursor(Some(&raw));
            // A cursor is 1 to 18 decimal digits, nothing else.
            let expected = ((1..=18).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()))
                .then(|| raw.parse::<i64>().ok())
                .flatten();
            prop_assert_eq!(decode_cursor(Some(&raw)).ok().flatten(), expected);
            let id = n.rem_euclid(1_000_000_000_000_000_000);
            prop_assert_eq!(decode_cursor(Some(&encode_cursor(id))).ok(), Some(Some(id)));
            for id in [text.as_str(), raw.as_str(), &n.to_string(), &format!("{n}.00")] {
                // An integer, optionally written with a fraction of zeros.
                let (int, zeros) = id.split_once('.').unwrap_or((id, "0"));
                let whole = !zeros.is_empty() && zeros.bytes().all(|b| b == b'0');
                let expected = whole.then(|| int.parse::<i64>().ok()).flatten().filter(|v| *v > 0);
                prop_assert_eq!(parse_id(id, "unit").ok(), expected);
            }
            prop_assert_eq!(page_limit(Some(n)).is_ok(), (1..=MAX_LIMIT).contains(&n));
        }
    }
}
