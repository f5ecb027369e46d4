//! Table definitions shared by both backends (kept in step with `migrations/sqlite` and
//! `migrations/postgres`; only types `MultiConnection` supports).

diesel::table! {
    hospitals (id) {
        id -> BigInt,
        name -> Text,
        code -> Text,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        role -> Text,
        hospital_id -> Nullable<BigInt>,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    api_clients (id) {
        id -> BigInt,
        hospital_id -> BigInt,
        client_id -> Text,
        secret_hash -> Text,
        name -> Text,
        active -> Bool,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Nullable<BigInt>,
        api_client_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        revoked_reason -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> BigInt,
        session_id -> Text,
        token_hash -> Text,
        issued_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    login_failures (id) {
        id -> BigInt,
        throttle_key -> Text,
        failed_at -> Timestamp,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        occurred_at -> Timestamp,
        actor_kind -> Text,
        actor_id -> Nullable<BigInt>,
        actor_name -> Text,
        action -> Text,
        entity_type -> Text,
        entity_id -> Text,
        before_json -> Nullable<Text>,
        after_json -> Nullable<Text>,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    policy (id) {
        id -> BigInt,
        version -> BigInt,
        document -> Text,
        updated_at -> Timestamp,
        updated_by -> Text,
    }
}

diesel::table! {
    donors (id) {
        id -> BigInt,
        donor_number -> Text,
        given_name -> Text,
        family_name -> Text,
        date_of_birth -> Date,
        sex -> Text,
        weight_kg -> Double,
        abo -> Text,
        rhd -> Text,
        cmv -> Text,
        hla -> Text,
        donor_type -> Text,
        phone -> Nullable<Text>,
        email -> Nullable<Text>,
        contraindications -> Text,
        active -> Bool,
        search_text -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    deferrals (id) {
        id -> BigInt,
        donor_id -> BigInt,
        reason -> Text,
        permanent -> Bool,
        starts_at -> Timestamp,
        until -> Nullable<Timestamp>,
        set_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    donations (id) {
        id -> BigInt,
        donor_id -> BigInt,
        kind -> Text,
        donated_at -> Timestamp,
        red_cell_loss_ml -> Nullable<Integer>,
        red_cells_returned -> Bool,
        site -> Nullable<Text>,
        recorded_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    devices (id) {
        id -> BigInt,
        name -> Text,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    collections (id) {
        id -> BigInt,
        donor_id -> BigInt,
        device_id -> BigInt,
        request_id -> Nullable<BigInt>,
        status -> Text,
        scheduled_start -> Timestamp,
        scheduled_end -> Timestamp,
        planned_agents -> Text,
        started_at -> Nullable<Timestamp>,
        ended_at -> Nullable<Timestamp>,
        volume_processed_ml -> Nullable<Integer>,
        hes_used -> Nullable<Bool>,
        pre_count_wbc -> Nullable<Double>,
        pre_count_anc -> Nullable<Double>,
        abort_reason -> Nullable<Text>,
        adverse_events -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    stimulations (id) {
        id -> BigInt,
        donor_id -> BigInt,
        collection_id -> Nullable<BigInt>,
        agent -> Text,
        dose -> Double,
        dose_unit -> Text,
        administered_at -> Timestamp,
        adverse_effects -> Nullable<Text>,
        recorded_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(users -> hospitals (hospital_id));
diesel::joinable!(api_clients -> hospitals (hospital_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(deferrals -> donors (donor_id));
diesel::joinable!(donations -> donors (donor_id));
diesel::joinable!(collections -> donors (donor_id));
diesel::joinable!(collections -> devices (device_id));
diesel::joinable!(stimulations -> donors (donor_id));
diesel::joinable!(stimulations -> collections (collection_id));

diesel::allow_tables_to_appear_in_same_query!(
    hospitals,
    users,
    api_clients,
    sessions,
    refresh_tokens,
    login_failures,
    audit_log,
    policy,
    donors,
    deferrals,
    donations,
    devices,
    collections,
    stimulations,
);
