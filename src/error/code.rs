//! Every `code` the API answers with, in one place. A variant knows its HTTP status and what it
//! means; the README's table of codes and the OpenAPI error descriptions are checked against
//! this list (`tests` below and `routes::docs`).

use actix_web::http::StatusCode;

macro_rules! error_codes {
    ($($variant:ident = $status:literal, $code:literal, $meaning:literal;)*) => {
        /// A stable snake_case error code; the wire form is [`ErrorCode::as_str`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            const fn status_u16(self) -> u16 {
                match self {
                    $(Self::$variant => $status,)*
                }
            }

            /// One line for people reading the README or the OpenAPI document.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    MalformedJson = 400, "malformed_json", "the body is not JSON, or not the JSON the operation takes";
    ValidationFailed = 400, "validation_failed", "fields are invalid; `errors` lists each with its path";
    InvalidPath = 400, "invalid_path", "a path segment is not a valid id or key";
    InvalidQuery = 400, "invalid_query", "the query string cannot be parsed";
    UnsupportedDpi = 400, "unsupported_dpi", "a ZPL label is rendered for 203 or 300 dpi printers only";
    InvalidBody = 400, "invalid_body", "the body could not be read";
    BadRequest = 400, "bad_request", "the request could not be understood";
    UnknownSearchParameter = 400, "unknown_search_parameter", "a FHIR search names a parameter or modifier the resource does not support";
    MissingToken = 401, "missing_token", "no `Authorization: Bearer` token";
    InvalidToken = 401, "invalid_token", "the access token is not valid";
    TokenExpired = 401, "token_expired", "the access token has expired; refresh it";
    SessionRevoked = 401, "session_revoked", "the session was signed out or revoked";
    AccountInactive = 401, "account_inactive", "the account or its hospital is deactivated";
    InvalidCredentials = 401, "invalid_credentials", "wrong username or password";
    InvalidClient = 401, "invalid_client", "wrong hospital client id or secret";
    InvalidRefreshToken = 401, "invalid_refresh_token", "the refresh token is not valid";
    RefreshTokenReused = 401, "refresh_token_reused", "a refresh token was used twice; the session is revoked";
    RefreshTokenExpired = 401, "refresh_token_expired", "the refresh token has expired; sign in again";
    NotSignedIn = 401, "not_signed_in", "the console needs a signed-in session (its cookie is missing or unknown)";
    SessionExpired = 401, "session_expired", "the console session reached the end of its shift; sign in again";
    MfaChallengeInvalid = 401, "mfa_challenge_invalid", "the sign-in challenge is unknown, spent or expired; sign in again";
    MfaCodeInvalid = 401, "mfa_code_invalid", "the one-time or recovery code is wrong, or was already used";
    CsrfTokenInvalid = 403, "csrf_token_invalid", "a console form was posted without its session's CSRF token";
    MfaEnrolmentRequired = 403, "mfa_enrolment_required", "the account's role requires a second factor: enrol with the challenge first";
    Forbidden = 403, "forbidden", "the caller's role or hospital may not do this";
    NotFound = 404, "not_found", "no such resource (or not visible to the caller)";
    MethodNotAllowed = 405, "method_not_allowed", "the path does not take this method";
    NotAcceptable = 406, "not_acceptable", "the FHIR endpoint answers in JSON only (`_format` or `Accept` asked for another format)";
    UnitExpiredNow = 409, "unit_expired", "the unit has expired, so the action is no longer possible";
    LabelNotPrintable = 409, "label_not_printable", "the unit has expired, been discarded or transfused: no label is printed for it";
    UsernameTaken = 409, "username_taken", "another user has that username";
    HospitalCodeTaken = 409, "hospital_code_taken", "another hospital has that code";
    MfaAlreadyEnrolled = 409, "mfa_already_enrolled", "the account already has a second factor; an admin resets it to enrol again";
    MfaNotEnrolled = 409, "mfa_not_enrolled", "the account has no second factor (or no enrolment waiting for its first code)";
    LastAdmin = 409, "last_admin", "the last active administrator cannot be removed";
    AlreadyRevoked = 409, "already_revoked", "the session is already revoked";
    AlreadyExists = 409, "already_exists", "a record with the same unique value exists";
    ConcurrentUpdate = 409, "concurrent_update", "a concurrent change interfered; retry";
    DeviceNameTaken = 409, "device_name_taken", "another device has that name";
    InvalidTransition = 409, "invalid_transition", "the record's state does not allow this action";
    PolicyChanged = 409, "policy_changed", "the policy changed since it was read (`If-Match`)";
    UnitNotAvailable = 409, "unit_not_available", "the unit is not available for allocation";
    RequestNotOpen = 409, "request_not_open", "the request is not open";
    MrnTaken = 409, "mrn_taken", "the hospital already has a patient with that MRN";
    UnitExists = 409, "unit_exists", "the unit is already recorded";
    DinExists = 409, "din_exists", "a unit with that DIN exists";
    CollectionNotCompleted = 409, "collection_not_completed", "units come from completed collections only";
    AlreadyIrradiated = 409, "already_irradiated", "the unit is already irradiated";
    AlreadyAcknowledged = 409, "already_acknowledged", "the alert is not open";
    DinSequenceExhausted = 409, "din_sequence_exhausted", "no DIN sequence numbers are left for the year";
    CrossmatchNotIncompatible = 409, "crossmatch_not_incompatible", "only an incompatible crossmatch is resolved";
    AlreadyResolved = 409, "already_resolved", "the crossmatch is already resolved";
    NoInspectionDue = 409, "no_inspection_due", "the unit has no pending return inspection";
    NoExcursionPending = 409, "no_excursion_pending", "the unit has no storage excursion to disposition";
    NothingToSignOff = 409, "nothing_to_sign_off", "the allocation has no authorisation awaiting sign-off";
    TaskNotOpen = 409, "task_not_open", "the task is already done";
    IdempotencyKeyInProgress = 409, "idempotency_key_in_progress", "a request with the same `Idempotency-Key` has not finished; retry after `Retry-After`";
    PlanChanged = 409, "plan_changed", "something the proposed course plan relied on changed (a slot taken, a donor deferred, a unit gone); `reasons` names each day; propose again";
    PlanSuperseded = 409, "plan_superseded", "a newer course plan was proposed or accepted for the request; accept the latest";
    PlanNotBookable = 409, "plan_not_bookable", "the course plan books nothing: every day is covered already or cannot be covered";
    OrderIdentifierTaken = 409, "order_identifier_taken", "the hospital already placed an order with that identifier";
    PreconditionFailed = 412, "precondition_failed", "`If-Match` names another version, or `If-None-Exist` matches more than one record";
    PayloadTooLarge = 413, "payload_too_large", "the body is over 256 KiB";
    UnsupportedMediaType = 415, "unsupported_media_type", "the body must be JSON";
    WebhookDestinationRefused = 422, "webhook_destination_refused", "the webhook URL's host is or resolves to an address webhooks are not delivered to (loopback, private, link-local, multicast, …), or is plain http; `GRANULO_WEBHOOK_ALLOW` lists the exceptions";
    UnknownHospital = 422, "unknown_hospital", "the body names a hospital that does not exist or is inactive";
    HospitalInactive = 422, "hospital_inactive", "the hospital is deactivated";
    ReferenceNotFound = 422, "reference_not_found", "the body refers to a record that does not exist";
    DonorIneligible = 422, "donor_ineligible", "the donor may not donate then; `reasons` lists why";
    DeviceBusy = 422, "device_busy", "the device is booked at that time; `reasons` lists the bookings";
    DeviceInactive = 422, "device_inactive", "the device is out of service";
    CollectionOfOtherDonor = 422, "collection_of_other_donor", "the collection is another donor's";
    InvalidCheckCharacter = 422, "invalid_check_character", "the DIN's ISBT 128 check character is wrong";
    InvalidIsbt128 = 422, "invalid_isbt128", "the text is not valid ISBT 128";
    UnsupportedDataStructure = 422, "unsupported_data_structure", "an ISBT 128 data structure granulo does not read";
    ReleaseBlocked = 422, "release_blocked", "the unit cannot be released; `reasons` lists why";
    ExcursionReview = 422, "excursion_review", "a storage excursion needs a medical director's disposition";
    IrradiationDoseOutOfRange = 422, "irradiation_dose_out_of_range", "the irradiation dose is outside the policy range";
    UnitExpired = 422, "unit_expired", "the unit has expired";
    Incompatible = 422, "incompatible", "the unit may not be given to the patient; `reasons` lists why";
    ReservedForRequest = 422, "reserved_for_request", "the unit is kept for another patient's request";
    AcknowledgementRequired = 422, "acknowledgement_required", "findings of the acknowledge tier must be acknowledged";
    AuthorisationRequired = 422, "authorisation_required", "findings of the authorise tier need a recorded authorisation";
    IssueRefused = 422, "issue_refused", "the unit cannot be issued now; `reasons` lists why";
    ElectronicCrossmatchNotAllowed = 422, "electronic_crossmatch_not_allowed", "the patient does not qualify for an electronic crossmatch";
    RequestOfAnotherPatient = 422, "request_of_another_patient", "the request is for another patient";
    UnknownRequest = 422, "unknown_request", "the body or query names a request that does not exist";
    UnknownAllocation = 422, "unknown_allocation", "the body names an allocation (a FHIR dispense) that does not exist or is not visible to the caller";
    AllocationOfAnotherPatient = 422, "allocation_of_another_patient", "the allocation (a FHIR dispense) is for another patient";
    UnknownUnit = 422, "unknown_unit", "the body or query names a unit that does not exist";
    UnknownCollection = 422, "unknown_collection", "the body names a collection that does not exist";
    UnknownPatient = 422, "unknown_patient", "the body or query names a patient that does not exist or is not visible to the caller";
    UnknownSample = 422, "unknown_sample", "the body names a sample that does not exist";
    UnknownPlan = 422, "unknown_plan", "the body names a course plan that does not exist or is another request's";
    UnknownDonor = 422, "unknown_donor", "the body names a donor that does not exist";
    UnknownDevice = 422, "unknown_device", "the body names a device that does not exist";
    LabelMismatch = 422, "label_mismatch", "typed fields disagree with the scanned label; `reasons` (`<field>_mismatch`) and `errors` name each field with both values";
    LabelNotAccepted = 422, "label_not_accepted", "the scanned label cannot be received: a structure is neither scanned nor typed, scanned twice with different content, or a blood group a unit cannot be received with; `reasons` and `errors` name each";
    PoolGroupInconsistent = 422, "pool_group_inconsistent", "the pool's donations do not match its labelled group";
    MfaCodeRejected = 422, "mfa_code_rejected", "a signed-in caller's one-time code is wrong or was already used";
    IdempotencyKeyReused = 422, "idempotency_key_reused", "the `Idempotency-Key` was used with a different body or on another route";
    NulCharacter = 422, "nul_character", "a NUL character in the path, query or body (it cannot be stored)";
    PreconditionRequired = 428, "precondition_required", "a FHIR update needs `If-Match` with the version read";
    TooManyRequests = 429, "too_many_requests", "too many failed sign-ins; wait for `Retry-After`";
    RateLimited = 429, "rate_limited", "too many requests from this account or address; wait for `Retry-After`";
    TooManyStreams = 429, "too_many_streams", "the account has as many event streams open as allowed; close one or wait for `Retry-After`";
    HospitalDailyCapReached = 429, "hospital_daily_cap_reached", "the hospital placed as many requests today as `policy.security.hospital_daily_request_cap` allows; call the blood bank, or retry after `Retry-After` (the facility's next day)";
    InternalError = 500, "internal_error", "an unexpected failure; the cause is only logged";
    DatabaseUnavailable = 503, "database_unavailable", "the database is busy or unreachable; retry after `Retry-After`";
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.status_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The codes answered with `status`, in declaration order.
    pub fn with_status(status: u16) -> impl Iterator<Item = ErrorCode> {
        Self::ALL.iter().copied().filter(move |c| c.status_u16() == status)
    }

    /// The README's table of codes, one row per status.
    pub fn markdown_table() -> String {
        let mut statuses: Vec<u16> = Self::ALL.iter().map(|c| c.status_u16()).collect();
        statuses.dedup();
        let mut out = String::from("| status | code | meaning |\n|---|---|---|\n");
        for status in statuses {
            for code in Self::with_status(status) {
                out.push_str(&format!("| {status} | `{}` | {} |\n", code.as_str(), code.meaning()));
            }
        }
        out
    }
}

impl From<crate::domain::units::Refusal> for ErrorCode {
    fn from(r: crate::domain::units::Refusal) -> Self {
        use crate::domain::units::Refusal;
        match r {
            Refusal::Expired => Self::UnitExpiredNow,
            Refusal::InvalidTransition => Self::InvalidTransition,
        }
    }
}

impl From<&crate::domain::isbt128::IsbtError> for ErrorCode {
    fn from(e: &crate::domain::isbt128::IsbtError) -> Self {
        use crate::domain::isbt128::IsbtError;
        match e {
            IsbtError::InvalidCheckCharacter { .. } => Self::InvalidCheckCharacter,
            IsbtError::Malformed { .. } => Self::InvalidIsbt128,
            IsbtError::UnsupportedIdentifier { .. } => Self::UnsupportedDataStructure,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_snake_case_with_a_valid_status() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            // `unit_expired` is both a state-machine conflict (409) and a refused receipt (422).
            assert!(seen.insert((s, code.status_u16())), "{s} twice");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{s}"
            );
            assert!(StatusCode::from_u16(code.status_u16()).is_ok(), "{s}");
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{s}"
            );
            assert!(!code.meaning().is_empty(), "{s}");
        }
    }

    #[test]
    fn statuses_are_declared_in_order() {
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.status_u16()).collect();
        assert!(statuses.is_sorted(), "keep the list grouped by status: {statuses:?}");
    }

    #[test]
    fn isbt_errors_keep_their_domain_codes() {
        use crate::domain::isbt128::IsbtError;
        let errors = [
            IsbtError::InvalidCheckCharacter {
                expected: 'A',
                found: 'B',
            },
            IsbtError::Malformed {
                what: "DIN",
                message: "x".into(),
            },
            IsbtError::UnsupportedIdentifier { at: "&x".into() },
        ];
        for e in errors {
            assert_eq!(ErrorCode::from(&e).as_str(), e.code());
        }
    }

    /// The README's table is this enum's: regenerate it with
    /// `GRANULO_BLESS=1 cargo test --lib readme_lists_every_error_code`.
    #[test]
    fn readme_lists_every_error_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let (begin, end) = ("<!-- error-codes:begin -->\n", "<!-- error-codes:end -->");
        let start = readme.find(begin).expect("error-codes markers in README.md") + begin.len();
        let stop = readme[start..].find(end).expect("end marker") + start;
        let table = ErrorCode::markdown_table();
        if readme[start..stop] != table {
            if std::env::var_os("GRANULO_BLESS").is_some() {
                let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
                std::fs::write(path, updated).expect("write README.md");
            } else {
                panic!("README.md's table of error codes differs from ErrorCode; regenerate it:\n{table}");
            }
        }
    }
}
