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
        mrn_system -> Nullable<Text>,
        order_system -> Nullable<Text>,
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
        cookie_hash -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
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
        lane -> Integer,
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
        source_unit_id -> Nullable<BigInt>,
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
        red_cell_loss_ml -> Nullable<Integer>,
        product_red_cell_ml -> Nullable<Double>,
        hes_volume_ml -> Nullable<Integer>,
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

diesel::table! {
    din_sequences (fin, year) {
        fin -> Text,
        year -> Integer,
        last_value -> Integer,
    }
}

diesel::table! {
    units (id) {
        id -> BigInt,
        din -> Text,
        product_code -> Text,
        source -> Text,
        collection_id -> Nullable<BigInt>,
        donor_id -> Nullable<BigInt>,
        supplier -> Nullable<Text>,
        pooled -> Bool,
        abo -> Text,
        rhd -> Text,
        cmv -> Text,
        volume_ml -> Integer,
        granulocyte_count -> Double,
        red_cell_volume_ml -> Nullable<Double>,
        collected_at -> Timestamp,
        expires_at -> Timestamp,
        status -> Text,
        status_reason -> Nullable<Text>,
        storage_location -> Nullable<Text>,
        irradiated_at -> Nullable<Timestamp>,
        irradiation_dose_gy -> Nullable<Double>,
        irradiation_device -> Nullable<Text>,
        irradiated_by -> Nullable<Text>,
        release_kind -> Nullable<Text>,
        released_at -> Nullable<Timestamp>,
        released_by -> Nullable<Text>,
        emergency_physician -> Nullable<Text>,
        emergency_acknowledged_at -> Nullable<Timestamp>,
        discarded_at -> Nullable<Timestamp>,
        discarded_by -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    unit_pool_members (id) {
        id -> BigInt,
        unit_id -> BigInt,
        din -> Text,
        abo -> Nullable<Text>,
        rhd -> Nullable<Text>,
        collected_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    unit_tests (id) {
        id -> BigInt,
        unit_id -> BigInt,
        marker -> Text,
        result -> Text,
        recorded_at -> Timestamp,
        recorded_by -> Text,
    }
}

diesel::table! {
    storage_readings (id) {
        id -> BigInt,
        unit_id -> Nullable<BigInt>,
        temperature_c -> Double,
        measured_at -> Timestamp,
        location -> Nullable<Text>,
        in_range -> Bool,
        recorded_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    alerts (id) {
        id -> BigInt,
        kind -> Text,
        severity -> Text,
        status -> Text,
        dedup_key -> Text,
        entity_type -> Text,
        entity_id -> Text,
        message -> Text,
        details -> Text,
        created_at -> Timestamp,
        acknowledged_at -> Nullable<Timestamp>,
        acknowledged_by -> Nullable<Text>,
        resolved_at -> Nullable<Timestamp>,
        episode -> Integer,
        threshold_hours -> Nullable<Integer>,
        occurrences -> Integer,
        last_occurred_at -> Timestamp,
        escalated_at -> Nullable<Timestamp>,
        closed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    alert_events (id) {
        id -> BigInt,
        seq -> Nullable<BigInt>,
        alert_id -> BigInt,
        transition -> Text,
        severity -> Text,
        previous_severity -> Nullable<Text>,
        condition_key -> Text,
        message -> Text,
        details -> Text,
        actor -> Nullable<Text>,
        occurred_at -> Timestamp,
    }
}

diesel::table! {
    webhook_subscriptions (id) {
        id -> BigInt,
        url -> Text,
        events -> Text,
        secret -> Text,
        hospital_id -> Nullable<BigInt>,
        active -> Bool,
        created_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_outbox (id) {
        id -> BigInt,
        subscription_id -> BigInt,
        alert_id -> BigInt,
        event -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_status_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
        alert_event_id -> BigInt,
    }
}

diesel::table! {
    job_leases (name) {
        name -> Text,
        holder -> Nullable<Text>,
        leased_until -> Nullable<Timestamp>,
        runs -> BigInt,
        last_started_at -> Nullable<Timestamp>,
        last_finished_at -> Nullable<Timestamp>,
        last_duration_ms -> Nullable<BigInt>,
        last_raised -> Nullable<BigInt>,
        last_resolved -> Nullable<BigInt>,
        last_expired -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        last_escalated -> Nullable<BigInt>,
        last_succeeded_at -> Nullable<Timestamp>,
        last_success_duration_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    patients (id) {
        id -> BigInt,
        hospital_id -> BigInt,
        mrn -> Text,
        given_name -> Text,
        family_name -> Text,
        date_of_birth -> Date,
        sex -> Text,
        weight_kg -> Double,
        abo -> Text,
        rhd -> Text,
        cmv -> Text,
        hla_antibodies -> Text,
        granulocyte_antibodies -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        childbearing_potential_stated -> Nullable<Bool>,
    }
}

diesel::table! {
    samples (id) {
        id -> BigInt,
        patient_id -> BigInt,
        drawn_at -> Timestamp,
        transfused_or_pregnant_within_3_months -> Bool,
        valid_until -> Timestamp,
        recorded_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    requests (id) {
        id -> BigInt,
        hospital_id -> BigInt,
        patient_id -> BigInt,
        units_requested -> Integer,
        needed_by -> Timestamp,
        priority -> Text,
        anc_per_ul -> Integer,
        infection -> Text,
        refractory_hours -> Integer,
        cmv_negative -> Bool,
        hla_compatible -> Bool,
        within_indication -> Bool,
        status -> Text,
        decided_by -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
        decision_reason -> Nullable<Text>,
        cancelled_by -> Nullable<Text>,
        cancel_reason -> Nullable<Text>,
        requested_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        irradiated -> Bool,
        order_system -> Nullable<Text>,
        order_value -> Nullable<Text>,
    }
}

diesel::table! {
    idempotency_keys (id) {
        id -> BigInt,
        account -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        status_code -> Integer,
        response_body -> Text,
        created_at -> Timestamp,
        method -> Text,
        path -> Text,
        response_headers -> Text,
    }
}

diesel::table! {
    crossmatches (id) {
        id -> BigInt,
        unit_id -> BigInt,
        sample_id -> BigInt,
        result -> Text,
        method -> Text,
        performed_by -> Text,
        performed_at -> Timestamp,
        created_at -> Timestamp,
        kind -> Text,
    }
}

diesel::table! {
    allocations (id) {
        id -> BigInt,
        request_id -> BigInt,
        unit_id -> BigInt,
        status -> Text,
        anti_d_task -> Bool,
        allocated_by -> Text,
        allocated_at -> Timestamp,
        issued_at -> Nullable<Timestamp>,
        issued_by -> Nullable<Text>,
        scanned_din -> Nullable<Text>,
        ended_at -> Nullable<Timestamp>,
        end_reason -> Nullable<Text>,
        transfusion_started_at -> Nullable<Timestamp>,
        transfusion_ended_at -> Nullable<Timestamp>,
        reaction -> Nullable<Text>,
        pre_anc_per_ul -> Nullable<Integer>,
        post_anc_per_ul -> Nullable<Integer>,
        anc_increment_per_ul -> Nullable<Integer>,
        outcome_recorded_by -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    unit_excursions (id) {
        id -> BigInt,
        unit_id -> BigInt,
        storage_reading_id -> BigInt,
        temperature_c -> Double,
        measured_at -> Timestamp,
        recorded_at -> Timestamp,
    }
}

diesel::table! {
    excursion_dispositions (id) {
        id -> BigInt,
        unit_id -> BigInt,
        through_excursion_id -> BigInt,
        reason -> Text,
        decided_by -> Text,
        decided_at -> Timestamp,
    }
}

diesel::table! {
    unit_inspections (id) {
        id -> BigInt,
        unit_id -> BigInt,
        allocation_id -> BigInt,
        acceptable -> Bool,
        notes -> Nullable<Text>,
        minutes_out_of_storage -> Integer,
        outcome -> Text,
        inspected_by -> Text,
        inspected_at -> Timestamp,
    }
}

diesel::table! {
    crossmatch_resolutions (id) {
        id -> BigInt,
        crossmatch_id -> BigInt,
        reason -> Text,
        resolved_by -> Text,
        resolved_at -> Timestamp,
    }
}

diesel::table! {
    sample_typings (id) {
        id -> BigInt,
        sample_id -> BigInt,
        patient_id -> BigInt,
        abo -> Text,
        rhd -> Text,
        typed_by -> Text,
        typed_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    allocation_decisions (id) {
        id -> BigInt,
        allocation_id -> BigInt,
        stage -> Text,
        findings -> Text,
        acknowledged -> Text,
        authorised_by -> Nullable<Text>,
        authoriser_role -> Nullable<Text>,
        authorised_at -> Nullable<Timestamp>,
        authorisation_reason -> Nullable<Text>,
        recorded_by -> Text,
        recorded_at -> Timestamp,
    }
}

diesel::table! {
    allocation_sign_offs (id) {
        id -> BigInt,
        allocation_id -> BigInt,
        through_decision_id -> BigInt,
        comment -> Text,
        signed_off_by -> Text,
        signed_off_at -> Timestamp,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        kind -> Text,
        status -> Text,
        subject_type -> Text,
        subject_id -> BigInt,
        title -> Text,
        details -> Text,
        owner_role -> Text,
        due_at -> Timestamp,
        dedup_key -> Text,
        created_by -> Text,
        created_at -> Timestamp,
        completed_by -> Nullable<Text>,
        completed_at -> Nullable<Timestamp>,
        note -> Nullable<Text>,
    }
}

diesel::table! {
    emergency_releases (id) {
        id -> BigInt,
        unit_id -> BigInt,
        request_id -> BigInt,
        physician -> Text,
        acknowledged_at -> Timestamp,
        pending_markers -> Text,
        results_expected_at -> Timestamp,
        released_by -> Text,
        released_at -> Timestamp,
    }
}

diesel::table! {
    unit_supply (unit_id) {
        unit_id -> BigInt,
        rhd_pooled -> Bool,
        labelled_expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    anc_results (id) {
        id -> BigInt,
        patient_id -> BigInt,
        allocation_id -> Nullable<BigInt>,
        anc_per_ul -> Integer,
        status -> Text,
        effective_at -> Timestamp,
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
diesel::joinable!(units -> collections (collection_id));
diesel::joinable!(units -> donors (donor_id));
diesel::joinable!(unit_pool_members -> units (unit_id));
diesel::joinable!(unit_tests -> units (unit_id));
diesel::joinable!(storage_readings -> units (unit_id));
diesel::joinable!(patients -> hospitals (hospital_id));
diesel::joinable!(samples -> patients (patient_id));
diesel::joinable!(requests -> patients (patient_id));
diesel::joinable!(crossmatches -> units (unit_id));
diesel::joinable!(crossmatches -> samples (sample_id));
diesel::joinable!(allocations -> requests (request_id));
diesel::joinable!(allocations -> units (unit_id));
diesel::joinable!(webhook_outbox -> webhook_subscriptions (subscription_id));
diesel::joinable!(webhook_outbox -> alert_events (alert_event_id));
diesel::joinable!(alert_events -> alerts (alert_id));
diesel::joinable!(unit_excursions -> units (unit_id));
diesel::joinable!(unit_excursions -> storage_readings (storage_reading_id));
diesel::joinable!(excursion_dispositions -> units (unit_id));
diesel::joinable!(unit_inspections -> units (unit_id));
diesel::joinable!(unit_inspections -> allocations (allocation_id));
diesel::joinable!(crossmatch_resolutions -> crossmatches (crossmatch_id));
diesel::joinable!(sample_typings -> samples (sample_id));
diesel::joinable!(sample_typings -> patients (patient_id));
diesel::joinable!(allocation_decisions -> allocations (allocation_id));
diesel::joinable!(allocation_sign_offs -> allocations (allocation_id));
diesel::joinable!(emergency_releases -> units (unit_id));
diesel::joinable!(emergency_releases -> requests (request_id));
diesel::joinable!(unit_supply -> units (unit_id));
diesel::joinable!(anc_results -> patients (patient_id));
diesel::joinable!(anc_results -> allocations (allocation_id));
diesel::joinable!(label_prints -> units (unit_id));

diesel::table! {
    label_prints (id) {
        id -> BigInt,
        unit_id -> BigInt,
        version -> Integer,
        format -> Text,
        dpi -> Nullable<Integer>,
        content_sha256 -> Text,
        printed_by -> Text,
        printed_at -> Timestamp,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        sealed_key -> Text,
        created_at -> Timestamp,
        created_by -> Text,
        retire_after -> Nullable<Timestamp>,
    }
}

diesel::table! {
    instances (id) {
        id -> Text,
        started_at -> Timestamp,
        seen_at -> Timestamp,
    }
}

diesel::table! {
    stream_leases (account, slot) {
        account -> Text,
        slot -> Integer,
        holder -> Nullable<Text>,
        leased_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    hospital_request_counts (hospital_id, day) {
        hospital_id -> BigInt,
        day -> Text,
        placed -> Integer,
    }
}

diesel::joinable!(hospital_request_counts -> hospitals (hospital_id));

diesel::table! {
    user_mfa (user_id) {
        user_id -> BigInt,
        seed_sealed -> Text,
        created_at -> Timestamp,
        confirmed_at -> Nullable<Timestamp>,
        last_step -> Nullable<BigInt>,
    }
}

diesel::table! {
    mfa_recovery_codes (id) {
        id -> BigInt,
        user_id -> BigInt,
        code_hash -> Text,
        created_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    mfa_challenges (id) {
        id -> BigInt,
        challenge_hash -> Text,
        user_id -> BigInt,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    user_mfa,
    mfa_recovery_codes,
    mfa_challenges,
    hospitals,
    instances,
    stream_leases,
    hospital_request_counts,
    users,
    api_clients,
    sessions,
    refresh_tokens,
    login_failures,
    signing_keys,
    audit_log,
    policy,
    donors,
    deferrals,
    donations,
    devices,
    collections,
    stimulations,
    din_sequences,
    units,
    unit_pool_members,
    unit_tests,
    storage_readings,
    alerts,
    alert_events,
    patients,
    samples,
    requests,
    idempotency_keys,
    crossmatches,
    allocations,
    job_leases,
    webhook_subscriptions,
    webhook_outbox,
    unit_excursions,
    excursion_dispositions,
    unit_inspections,
    crossmatch_resolutions,
    sample_typings,
    allocation_decisions,
    allocation_sign_offs,
    tasks,
    emergency_releases,
    unit_supply,
    anc_results,
);

diesel::table! {
    matching_clock (id) {
        id -> Integer,
        seq -> BigInt,
    }
}

diesel::table! {
    donor_matching_versions (donor_id) {
        donor_id -> BigInt,
        seq -> BigInt,
    }
}

diesel::table! {
    course_plans (id) {
        id -> BigInt,
        request_id -> BigInt,
        repairs_plan_id -> Nullable<BigInt>,
        body -> Text,
        proposed_by -> Text,
        proposed_at -> Timestamp,
        accepted_by -> Nullable<Text>,
        accepted_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    course_plan_days (id) {
        id -> BigInt,
        plan_id -> BigInt,
        day -> Integer,
        due_at -> Timestamp,
        collection_id -> Nullable<BigInt>,
        unit_id -> Nullable<BigInt>,
        uncovered_code -> Nullable<Text>,
    }
}

diesel::table! {
    donor_availability (id) {
        id -> BigInt,
        donor_id -> BigInt,
        from_date -> Date,
        until_date -> Date,
        available -> Bool,
        note -> Nullable<Text>,
        stated_by -> Text,
        stated_at -> Timestamp,
    }
}

diesel::joinable!(course_plan_days -> course_plans (plan_id));
diesel::joinable!(course_plan_days -> collections (collection_id));
diesel::allow_tables_to_appear_in_same_query!(course_plans, course_plan_days, collections, donor_availability);
