//! The candidates index (issue 18): donors' matching inputs kept between calls give exactly the
//! candidates a full reading of the history gives, and every write that changes a donor's
//! eligibility shows in the very next call, on this instance and on another one.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use granulo::domain::blood::{Abo, Cmv, DonorType, Rhd, Sex};
use granulo::domain::eligibility::ProcedureKind;
use granulo::domain::stimulation::DoseUnit;
use granulo::services::candidates::candidates_at;
use granulo::services::policy;
use granulo::store::{self, DbConn, collections, donors, matching::DonorIndexSlot};
use serde_json::{Value, json};

use crate::bank::bank;
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    the_index_gives_the_full_reading_s_candidates_on_random_histories,
    each_write_shows_in_the_next_call_on_every_instance,
);

/// Each donor candidate (all of them) of the request: (verdict, reason codes, last stimulated).
async fn donors_of(app: &TestApp, token: &str, request: i64) -> HashMap<i64, (String, Vec<String>, Value)> {
    let body = app
        .get(&format!("/api/v1/requests/{request}/candidates?limit=500"), Some(token))
        .await
        .ok(200)
        .clone();
    body["donors"]
        .as_array()
        .expect("donors")
        .iter()
        .map(|d| {
            let codes = d["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect();
            (
                d["donor_id"].as_i64().expect("id"),
                (
                    d["verdict"].as_str().unwrap_or("").to_owned(),
                    codes,
                    d["last_stimulated_at"].clone(),
                ),
            )
        })
        .collect()
}

/// Both instances answer the same for `donor`, and this is it.
async fn both_see(apps: [&TestApp; 2], token: &str, request: i64, donor: i64) -> Option<(String, Vec<String>, Value)> {
    let first = donors_of(apps[0], token, request).await.remove(&donor);
    let second = donors_of(apps[1], token, request).await.remove(&donor);
    assert_eq!(first, second, "the instances disagree on donor {donor}");
    first
}

async fn each_write_shows_in_the_next_call_on_every_instance(backend: Backend) {
    let b = bank(backend).await;
    let (first, tech, director) = (&b.app, b.tech.clone(), b.director.clone());
    let second = spawn_on(backend, first.db.clone(), |_| {}).await;
    let apps = [first, &second];
    let patient = b.typed_patient(&patient_body("IDX-1", "A", "positive", "male")).await;
    let request = b.request_for(patient, 2).await;
    let names = ["Def", "Don", "Col", "Sti", "Grp", "Off", "Pol"];
    let mut ids = Vec::new();
    for name in names {
        ids.push(first.register_donor(&tech, &donor_body(name, "A", "positive")).await);
    }
    let [deferred, donated, collected, stimulated, regrouped, retired, policed] = ids[..] else {
        panic!("seven donors")
    };
    // Both instances build their index now, so each change below is one it must notice.
    for d in &ids {
        let (verdict, codes, _) = both_see(apps, &tech, request, *d).await.expect("listed");
        assert_eq!(verdict, "compatible", "{codes:?}");
    }
    let now = now_minute();
    // Every write goes through the first instance; each answer is read on both (the second
    // first).
    let codes_on_second = |d: i64| {
        let second = &second;
        let tech = tech.clone();
        async move { donors_of(second, &tech, request).await.remove(&d) }
    };

    first
        .post(
            &format!("/api/v1/donors/{deferred}/deferrals"),
            Some(&tech),
            &json!({"reason": "travel", "permanent": false, "until": ts(now + TimeDelta::days(30))}),
        )
        .await
        .ok(201);
    let (verdict, codes, _) = codes_on_second(deferred).await.expect("listed");
    assert_eq!((verdict.as_str(), codes), ("incompatible", vec!["deferred".to_owned()]));
    both_see(apps, &tech, request, deferred).await;

    first
        .post(
            &format!("/api/v1/donors/{donated}/donations"),
            Some(&tech),
            &json!({"kind": "whole_blood", "donated_at": ts(now - TimeDelta::hours(1))}),
        )
        .await
        .ok(201);
    let (verdict, codes, _) = codes_on_second(donated).await.expect("listed");
    assert_eq!(verdict, "incompatible");
    assert!(codes.contains(&"whole_blood_interval".to_owned()), "{codes:?}");

    let device = first.create_device(&tech, "Optia IDX").await;
    let start = now - TimeDelta::hours(3);
    let collection = first.book(&tech, collected, device, start).await.ok(201)["id"]
        .as_i64()
        .expect("collection");
    let (verdict, codes, _) = codes_on_second(collected).await.expect("listed");
    assert_eq!(verdict, "incompatible", "a booking is a procedure in the history");
    assert!(codes.contains(&"leukapheresis_interval".to_owned()), "{codes:?}");
    first
        .post(
            &format!("/api/v1/collections/{collection}/abort"),
            Some(&tech),
            &json!({"reason": "donor unwell"}),
        )
        .await
        .ok(200);
    let (verdict, codes, _) = codes_on_second(collected).await.expect("listed");
    assert_eq!(verdict, "compatible", "an aborted booking never took place: {codes:?}");

    let given = now - TimeDelta::hours(2);
    first
        .post(
            &format!("/api/v1/donors/{stimulated}/stimulations"),
            Some(&tech),
            &json!({"agent": "GCSF", "dose": 5, "dose_unit": "ug_per_kg", "administered_at": ts(given)}),
        )
        .await
        .ok(201);
    let (_, _, last) = codes_on_second(stimulated).await.expect("listed");
    let last: DateTime<Utc> = serde_json::from_value(last).expect("last stimulation");
    assert_eq!(last, given);

    first
        .patch(
            &format!("/api/v1/donors/{regrouped}"),
            Some(&tech),
            &json!({"abo": "B"}),
        )
        .await
        .ok(200);
    let (verdict, codes, _) = codes_on_second(regrouped).await.expect("listed");
    assert_eq!(verdict, "incompatible");
    assert!(codes.contains(&"abo_incompatible".to_owned()), "{codes:?}");

    first
        .patch(
            &format!("/api/v1/donors/{retired}"),
            Some(&tech),
            &json!({"active": false}),
        )
        .await
        .ok(200);
    assert_eq!(
        codes_on_second(retired).await,
        None,
        "an inactive donor is not proposed"
    );

    let newcomer = first.register_donor(&tech, &donor_body("New", "A", "positive")).await;
    assert!(codes_on_second(newcomer).await.is_some(), "a new donor is proposed");

    // A policy change: a whole-blood donation 30 weeks ago blocks once the interval is 40
    // weeks, which is also longer than the index's cut.
    first
        .post(
            &format!("/api/v1/donors/{policed}/donations"),
            Some(&tech),
            &json!({"kind": "whole_blood", "donated_at": ts(now - TimeDelta::weeks(30))}),
        )
        .await
        .ok(201);
    assert_eq!(codes_on_second(policed).await.expect("listed").0, "compatible");
    let mut table = first.get("/api/v1/policy", Some(&director)).await.ok(200).clone();
    table["donor"]["weeks_after_whole_blood"] = json!(80);
    table["donor"]["weeks_after_red_cell_loss_not_returned"] = json!(80);
    first.put("/api/v1/policy", Some(&director), &table).await.ok(200);
    let (verdict, codes, _) = codes_on_second(policed).await.expect("listed");
    assert_eq!(verdict, "incompatible");
    assert!(codes.contains(&"whole_blood_interval".to_owned()), "{codes:?}");
    for d in ids.iter().chain([&newcomer]) {
        both_see(apps, &tech, request, *d).await;
    }
}

/// A small deterministic generator (no seed to keep: the test prints what differs).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const ABO: [&str; 4] = ["O", "A", "B", "AB"];
const KINDS: [ProcedureKind; 5] = [
    ProcedureKind::WholeBlood,
    ProcedureKind::Platelets,
    ProcedureKind::Plasma,
    ProcedureKind::RedCells,
    ProcedureKind::Leukapheresis,
];

/// Random history for `donor` over the last three years (some of it in the future).
fn history(conn: &mut DbConn, rng: &mut Lcg, donor: i64) {
    let now = store::now();
    let hours_ago = |rng: &mut Lcg| TimeDelta::hours(rng.below(3 * 365 * 24) as i64 - 24 * 20);
    for _ in 0..rng.below(5) {
        donors::insert_donation(
            conn,
            &donors::NewDonation {
                donor_id: donor,
                kind: KINDS[rng.below(5) as usize],
                donated_at: now - hours_ago(rng),
                red_cell_loss_ml: (rng.below(2) == 0).then(|| rng.below(500) as i32),
                red_cells_returned: rng.below(2) == 0,
                site: None,
                recorded_by: "test",
                created_at: now,
            },
        )
        .expect("donation");
    }
    if rng.below(4) == 0 {
        let permanent = rng.below(3) == 0;
        let starts_at = now - hours_ago(rng);
        donors::insert_deferral(
            conn,
            &donors::NewDeferral {
                donor_id: donor,
                reason: "test",
                permanent,
                starts_at,
                until: (!permanent && rng.below(4) > 0)
                    .then(|| starts_at + TimeDelta::hours(rng.below(24 * 400) as i64)),
                set_by: "test",
                created_at: now,
                source_unit_id: None,
            },
        )
        .expect("deferral");
    }
    for _ in 0..rng.below(3) {
        let agent = if rng.below(2) == 0 { "gcsf" } else { "dexamethasone" };
        collections::insert_stimulation(
            conn,
            &collections::NewStimulation {
                donor_id: donor,
                collection_id: None,
                agent,
                dose: 5.0,
                dose_unit: DoseUnit::Mg,
                administered_at: now - hours_ago(rng),
                adverse_effects: None,
                recorded_by: "test",
                created_at: now,
            },
        )
        .expect("stimulation");
    }
}

fn random_donor(conn: &mut DbConn, rng: &mut Lcg, i: usize) -> i64 {
    let now = store::now();
    let typed = rng.below(3) == 0;
    donors::insert(
        conn,
        &donors::DonorData {
            given_name: format!("Random{i}"),
            family_name: "Index".into(),
            // 15 to 75 years old: some too young or too old.
            date_of_birth: NaiveDate::from_ymd_opt(1951 + rng.below(60) as i32, 1 + rng.below(12) as u32, 1)
                .expect("date"),
            sex: Sex::Female,
            weight_kg: 70.0,
            abo: Abo::parse(ABO[rng.below(4) as usize]).expect("abo"),
            rhd: if rng.below(2) == 0 {
                Rhd::Positive
            } else {
                Rhd::Negative
            },
            cmv: [Cmv::Negative, Cmv::Positive, Cmv::Unknown][rng.below(3) as usize],
            hla: if typed {
                r#"{"a":["A*02:01","A*01"],"b":["B*07"],"c":[],"drb1":["DRB1*15:01"]}"#.into()
            } else {
                r#"{"a":[],"b":[],"c":[],"drb1":[]}"#.into()
            },
            donor_type: DonorType::Community,
            phone: None,
            email: None,
            contraindications: if rng.below(10) == 0 {
                r#"[{"agent":"dexamethasone","item":"diabetes mellitus"}]"#.into()
            } else {
                "[]".into()
            },
            active: rng.below(10) > 0,
            search_text: format!("random{i} index"),
            updated_at: now,
        },
        now,
    )
    .expect("donor")
    .id
}

/// The index's answer and the full reading's, for each collection time, as JSON.
fn same_answers(conn: &mut DbConn, slot: &DonorIndexSlot, request: i64, when: &str) {
    let p = policy::current(conn).expect("policy").policy;
    let now = Utc::now();
    for at in [
        None,
        Some(now + TimeDelta::hours(30)),
        Some(now + TimeDelta::days(200)),
        Some(now + TimeDelta::days(900)),
        // Before the index was built: answered from the full history.
        Some(now - TimeDelta::days(100)),
    ] {
        let indexed = candidates_at(conn, request, at, 10_000, &p, Some(slot), now).expect("indexed");
        let full = candidates_at(conn, request, at, 10_000, &p, None, now).expect("full");
        assert!(!full.donors.is_empty());
        let (indexed, full) = (
            serde_json::to_value(&indexed).expect("json"),
            serde_json::to_value(&full).expect("json"),
        );
        if indexed != full {
            let (a, b) = (indexed["donors"].as_array(), full["donors"].as_array());
            let first = a.zip(b).and_then(|(a, b)| a.iter().zip(b).find(|(x, y)| x != y));
            panic!("{when}, collection at {at:?}: the index differs from the full reading: {first:#?}");
        }
    }
}

async fn the_index_gives_the_full_reading_s_candidates_on_random_histories(backend: Backend) {
    let b = bank(backend).await;
    let patient = b.typed_patient(&patient_body("IDX-2", "A", "negative", "female")).await;
    let request = b.request_for(patient, 2).await;
    let mut conn = store::establish(&b.app.db.target()).expect("connect");
    let mut rng = Lcg(18);
    let mut ids = Vec::new();
    for i in 0..120 {
        let id = random_donor(&mut conn, &mut rng, i);
        history(&mut conn, &mut rng, id);
        ids.push(id);
    }
    let slot = DonorIndexSlot::default();
    same_answers(&mut conn, &slot, request, "built");

    // Changes after the index was built: more history, deactivations, regroupings, new donors.
    for round in 0..3 {
        for _ in 0..15 {
            let id = ids[rng.below(ids.len() as u64) as usize];
            history(&mut conn, &mut rng, id);
        }
        for _ in 0..3 {
            let id = ids[rng.below(ids.len() as u64) as usize];
            let mut d = donors::find(&mut conn, id).expect("read").expect("donor");
            d.active = !d.active;
            d.abo = Abo::parse(ABO[rng.below(4) as usize]).expect("abo");
            donors::update(&mut conn, id, &donor_data(&d)).expect("update");
        }
        let id = random_donor(&mut conn, &mut rng, 1000 + round);
        history(&mut conn, &mut rng, id);
        ids.push(id);
        same_answers(&mut conn, &slot, request, &format!("after changes {round}"));
    }

    // A policy whose intervals outlast the index's cut.
    let mut table = b.app.get("/api/v1/policy", Some(&b.director)).await.ok(200).clone();
    table["donor"]["weeks_after_whole_blood"] = json!(90);
    table["donor"]["weeks_after_red_cell_loss_not_returned"] = json!(90);
    b.app.put("/api/v1/policy", Some(&b.director), &table).await.ok(200);
    same_answers(&mut conn, &slot, request, "after a policy change");
}

fn donor_data(d: &donors::Donor) -> donors::DonorData {
    donors::DonorData {
        given_name: d.given_name.clone(),
        family_name: d.family_name.clone(),
        date_of_birth: d.date_of_birth,
        sex: d.sex,
        weight_kg: d.weight_kg,
        abo: d.abo,
        rhd: d.rhd,
        cmv: d.cmv,
        hla: d.hla.clone(),
        donor_type: d.donor_type,
        phone: d.phone.clone(),
        email: d.email.clone(),
        contraindications: d.contraindications.clone(),
        active: d.active,
        search_text: d.search_text.clone(),
        updated_at: store::now(),
    }
}
