//! A blood bank with a technologist, a medical director and a hospital account, and the
//! steps most safety tests take (units, samples, crossmatches, allocation and issue).

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) struct Bank {
    pub app: TestApp,
    pub tech: String,
    pub director: String,
    pub hosp: String,
    /// The hospital of `hosp`.
    pub hospital: i64,
}

pub(crate) async fn bank(backend: Backend) -> Bank {
    bank_with(backend, |_| {}).await
}

pub(crate) async fn bank_with(backend: Backend, tweak: impl FnOnce(&mut granulo::config::Settings)) -> Bank {
    let mut app = spawn_with(backend, tweak).await;
    let tech = app.token_for("technologist").await;
    let director = app.token_for("medical_director").await;
    let (hospital, hosp) = hospital(&mut app).await;
    Bank {
        app,
        tech,
        director,
        hosp,
        hospital,
    }
}

impl Bank {
    pub(crate) async fn patient(&self, body: &Value) -> i64 {
        self.app.post("/api/v1/patients", Some(&self.hosp), body).await.ok(201)["id"]
            .as_i64()
            .expect("patient")
    }

    /// A patient registered by the hospital whose group the blood bank has confirmed as the one
    /// declared in `body`.
    pub(crate) async fn typed_patient(&self, body: &Value) -> i64 {
        typed_patient(&self.app, &self.hosp, &self.tech, body).await
    }

    pub(crate) async fn request(&self, body: &Value) -> i64 {
        self.app.post("/api/v1/requests", Some(&self.hosp), body).await.ok(201)["id"]
            .as_i64()
            .expect("request")
    }

    /// The hospital's request for `units` units for `patient` (`request_body`: open when the
    /// patient is within the indication).
    pub(crate) async fn request_for(&self, patient: i64, units: u32) -> i64 {
        self.request(&request_body(patient, units)).await
    }

    /// The technologist allocates `unit` to `request`; returns the allocation.
    pub(crate) async fn allocated(&self, request: i64, unit: i64) -> i64 {
        self.allocate(&self.tech, request, json!({"unit_id": unit}))
            .await
            .ok(201)["id"]
            .as_i64()
            .expect("allocation")
    }

    /// The technologist issues the allocation, scanning `din`; returns the allocation.
    pub(crate) async fn issued(&self, allocation: i64, din: impl Into<Value>) -> Value {
        self.issue(&self.tech, allocation, json!({"scanned_din": din.into()}))
            .await
            .ok(200)
            .clone()
    }

    /// A supplier unit collected `hours_ago`, irradiated, no marker recorded (not released).
    pub(crate) async fn supplier_unit(&self, abo: &str, rhd: &str, cmv: &str, hours_ago: i64) -> (i64, String) {
        let body = json!({"source": {"type": "external", "supplier": "Regional centre", "din": next_din(), "abo": abo,
                                     "rhd": rhd, "collected_at": ts(now_minute() - TimeDelta::hours(hours_ago)),
                                     "cmv": cmv},
                          "product_code": PRODUCT, "volume_ml": 250, "granulocyte_count": 5e10});
        self.irradiated(&body).await
    }

    /// A unit created from `body` and irradiated; returns (id, din).
    pub(crate) async fn irradiated(&self, body: &Value) -> (i64, String) {
        let created = self.app.post("/api/v1/units", Some(&self.tech), body).await;
        let id = created.ok(201)["id"].as_i64().expect("unit");
        let din = created.body["din"].as_str().unwrap_or_default().to_owned();
        self.app
            .post(
                &format!("/api/v1/units/{id}/irradiation"),
                Some(&self.tech),
                &json!({"dose_gy": 25}),
            )
            .await
            .ok(200);
        (id, din)
    }

    pub(crate) async fn negative_markers(&self, unit: i64) {
        for marker in required_markers(&self.app, &self.tech).await {
            self.app
                .post(
                    &format!("/api/v1/units/{unit}/tests"),
                    Some(&self.tech),
                    &json!({"marker": marker, "result": "negative"}),
                )
                .await
                .ok(200);
        }
    }

    pub(crate) async fn release(&self, unit: i64) {
        self.app
            .post(
                &format!("/api/v1/units/{unit}/release"),
                Some(&self.tech),
                &json!({"emergency": false}),
            )
            .await
            .ok(200);
    }

    /// The unit of a completed collection (quarantined, not irradiated).
    pub(crate) async fn collection_unit(&self, collection: i64) -> i64 {
        self.app
            .post(
                "/api/v1/units",
                Some(&self.tech),
                &json!({"source": {"type": "collection", "collection_id": collection}, "product_code": PRODUCT,
                        "volume_ml": 250, "granulocyte_count": 5e10}),
            )
            .await
            .ok(201)["id"]
            .as_i64()
            .expect("unit")
    }

    /// Released, irradiated, every marker negative.
    pub(crate) async fn ready(&self, abo: &str, rhd: &str, cmv: &str, hours_ago: i64) -> (i64, String) {
        let (id, din) = self.supplier_unit(abo, rhd, cmv, hours_ago).await;
        self.negative_markers(id).await;
        self.release(id).await;
        (id, din)
    }

    pub(crate) async fn allocate(&self, token: &str, request: i64, body: Value) -> Reply {
        self.app
            .post(&format!("/api/v1/requests/{request}/allocations"), Some(token), &body)
            .await
    }

    pub(crate) async fn sample(&self, patient: i64) -> i64 {
        self.app
            .post(
                &format!("/api/v1/patients/{patient}/samples"),
                Some(&self.hosp),
                &json!({"drawn_at": ts(now_minute() - TimeDelta::minutes(30)),
                        "transfused_or_pregnant_within_3_months": true}),
            )
            .await
            .ok(201)["id"]
            .as_i64()
            .expect("sample")
    }

    pub(crate) async fn crossmatch(&self, unit: i64, sample: i64, result: &str) -> i64 {
        self.app
            .post(
                "/api/v1/crossmatches",
                Some(&self.tech),
                &json!({"unit_id": unit, "sample_id": sample, "result": result, "method": "iat"}),
            )
            .await
            .ok(201)["id"]
            .as_i64()
            .expect("crossmatch")
    }

    pub(crate) async fn issue(&self, token: &str, allocation: i64, body: Value) -> Reply {
        self.app
            .post(&format!("/api/v1/allocations/{allocation}/issue"), Some(token), &body)
            .await
    }

    /// Moves the stored issue time of an allocation back (the tests' clock), so that a
    /// transfusion and the counts after it can lie in the past.
    pub(crate) fn backdate_issue(&self, allocation: i64, when: chrono::DateTime<Utc>) {
        use granulo::store::allocations;
        let mut conn = self.app.state.pool.get().expect("conn");
        let found = allocations::find(&mut conn, allocation)
            .expect("query")
            .expect("allocation");
        let mut data = allocations::AllocationData::from(found);
        data.issued_at = Some(when.naive_utc());
        allocations::update(&mut conn, allocation, &data).expect("update");
    }

    pub(crate) async fn unit(&self, unit: i64) -> Value {
        self.app
            .get(&format!("/api/v1/units/{unit}"), Some(&self.tech))
            .await
            .ok(200)
            .clone()
    }

    pub(crate) async fn compatibility(&self, unit: i64, patient: i64) -> Value {
        self.app
            .get(
                &format!("/api/v1/compatibility?unit_id={unit}&patient_id={patient}"),
                Some(&self.tech),
            )
            .await
            .ok(200)
            .clone()
    }

    pub(crate) async fn open_alerts(&self, kind: &str) -> Vec<Value> {
        self.app
            .get(&format!("/api/v1/alerts?status=open&kind={kind}"), Some(&self.tech))
            .await
            .ok(200)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Moves a stored time of a unit (the tests' clock).
    pub(crate) fn set_unit_expiry(&self, unit: i64, expires_at: chrono::DateTime<Utc>) {
        use granulo::store::units;
        let mut conn = self.app.state.pool.get().expect("conn");
        let found = units::find(&mut conn, unit).expect("query").expect("unit");
        let mut data = units::UnitData::from(found);
        data.expires_at = expires_at.naive_utc();
        units::update(&mut conn, unit, &data).expect("update");
    }

    /// A unit created from `body`, irradiated, every marker negative and released.
    pub(crate) async fn ready_from(&self, body: &Value) -> (i64, String) {
        let (id, din) = self.irradiated(body).await;
        release_tested(&self.app, &self.tech, id).await;
        (id, din)
    }

    /// One alert scan at `now` (the tests' clock).
    pub(crate) fn scan_at(&self, now: chrono::DateTime<Utc>) -> granulo::jobs::ScanReport {
        let mut conn = self.app.state.pool.get().expect("conn");
        granulo::jobs::run_once(&mut conn, "test", now)
            .expect("scan runs")
            .expect("lease free")
    }

    /// `GET /api/v1/tasks?{query}` as the technologist.
    pub(crate) async fn tasks(&self, query: &str) -> Vec<Value> {
        self.app
            .get(&format!("/api/v1/tasks?{query}"), Some(&self.tech))
            .await
            .ok(200)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The audit actions recorded for an entity, oldest first (read by the medical director).
    pub(crate) async fn audit_actions(&self, entity_type: &str, id: i64) -> Vec<String> {
        self.app
            .get(
                &format!("/api/v1/audit?entity_type={entity_type}&entity_id={id}"),
                Some(&self.director),
            )
            .await
            .ok(200)["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|e| e["action"].as_str().map(str::to_owned))
            .collect()
    }
}
