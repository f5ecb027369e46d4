//! `granulo demo`: the data set on an empty database (a living bank: every unit status, every
//! expiry band, every priority, alerts and tasks, an intact audit chain), loaded once only; and
//! `granulo demo --seed-only` from the command line.

use std::collections::BTreeSet;
use std::process::Command;

use granulo::demo::Outcome;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

both_backends!(seeding_an_empty_database_makes_a_living_bank);

fn items(reply: &Reply) -> Vec<Value> {
    reply.ok(200)["items"].as_array().cloned().unwrap_or_default()
}

fn strings(items: &[Value], field: &str) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|i| i[field].as_str().map(str::to_owned))
        .collect()
}

async fn seeding_an_empty_database_makes_a_living_bank(backend: Backend) {
    let mut app = spawn(backend).await;
    let outcome = {
        let mut conn = app.state.pool.get().expect("conn");
        granulo::demo::seed(&mut conn, &app.state.settings).expect("the demo seeds")
    };
    let Outcome::Seeded(seeded) = outcome else {
        panic!("an empty database is seeded")
    };
    assert_eq!(seeded.credentials_file.is_some(), backend == Backend::Sqlite);
    let staff: Vec<&granulo::demo::Account> = seeded.accounts.iter().filter(|a| a.role.is_staff()).collect();
    let roles: BTreeSet<&str> = staff.iter().map(|a| a.role.as_str()).collect();
    assert_eq!(roles, BTreeSet::from(["medical_director", "technologist"]));
    // The accounts sign in with the passwords the demo prints.
    for account in seeded.accounts.iter().filter(|a| !a.client) {
        app.login(&account.username, &account.password).await.ok(200);
    }

    let admin = app.admin_token().await;
    let units = items(&app.get("/api/v1/units?limit=500", Some(&admin)).await);
    let statuses = strings(&units, "status");
    let every: BTreeSet<String> = [
        "quarantined",
        "available",
        "allocated",
        "issued",
        "transfused",
        "expired",
        "discarded",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(statuses, every, "a unit in every status");
    assert!(
        units.iter().any(|u| u["release"]["kind"] == "emergency"),
        "an emergency release"
    );

    // Units in the bank in every band of the policy's expiry thresholds, and beyond them.
    let policy = app.get("/api/v1/policy", Some(&admin)).await.ok(200).clone();
    let mut thresholds: Vec<f64> = policy["alerts"]["expiry_thresholds_hours"]
        .as_array()
        .expect("thresholds")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    let mut bands = BTreeSet::new();
    for u in &units {
        if !["quarantined", "available", "allocated"].contains(&u["status"].as_str().unwrap_or("")) {
            continue;
        }
        let left = u["hours_remaining"].as_f64().expect("hours_remaining");
        assert!(left > 0.0 && left < 24.0, "{u}");
        // 0: beyond the largest threshold; i: within the i-th largest.
        bands.insert(thresholds.iter().filter(|t| left <= **t).count());
    }
    assert_eq!(bands, (0..=thresholds.len()).collect(), "expiries in every band");

    let open = items(&app.get("/api/v1/requests?status=open&limit=100", Some(&admin)).await);
    let priorities = strings(&open, "priority");
    for p in ["stat", "asap", "routine"] {
        assert!(priorities.contains(p), "an open {p} request: {priorities:?}");
    }
    let alerts = items(&app.get("/api/v1/alerts?status=open&limit=100", Some(&admin)).await);
    let kinds = strings(&alerts, "kind");
    for kind in ["unit.expiring", "unit.expired", "request.unallocated"] {
        assert!(kinds.contains(kind), "an open {kind} alert: {kinds:?}");
    }
    let tasks = items(&app.get("/api/v1/tasks?status=open", Some(&admin)).await);
    assert!(!tasks.is_empty(), "open tasks");
    let donors = items(&app.get("/api/v1/donors?limit=100", Some(&admin)).await);
    assert!(donors.len() >= 40, "{} donors", donors.len());
    let collections = items(&app.get("/api/v1/collections?limit=100", Some(&admin)).await);
    let collection_statuses = strings(&collections, "status");
    for s in ["scheduled", "in_progress", "completed"] {
        assert!(collection_statuses.contains(s), "a {s} collection");
    }

    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok && text.contains("intact"), "{text}");

    // A second load writes nothing.
    let again = {
        let mut conn = app.state.pool.get().expect("conn");
        granulo::demo::seed(&mut conn, &app.state.settings).expect("the demo runs")
    };
    assert!(matches!(again, Outcome::NotEmpty { .. }));
    let after = items(&app.get("/api/v1/units?limit=500", Some(&admin)).await);
    assert_eq!(after.len(), units.len());
    let (ok, text) = audit_verify(&app.db.url);
    assert!(ok && text.contains("intact"), "{text}");
}

fn demo_seed_only(database_url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_granulo"))
        .args(["demo", "--seed-only"])
        .env("GRANULO_DATABASE_URL", database_url)
        .env("GRANULO_LOG", "warn")
        // The key the test's own instance opens the stored signing key with.
        .env("GRANULO_SECRETS_KEY", SECRETS_KEY)
        .env_remove("GRANULO_ADMIN_USERNAME")
        .env_remove("GRANULO_ADMIN_PASSWORD")
        .output()
        .expect("run granulo demo --seed-only");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The password printed on the line of `username`.
fn printed_password(text: &str, username: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().rposition(|w| *w == username)?;
        words.get(at + 1).map(|p| (*p).to_owned())
    })
}

#[actix_rt::test]
async fn demo_seed_only_prints_the_accounts_to_sign_in_with() {
    let db = std::sync::Arc::new(TestDb::new(Backend::Sqlite));
    let (ok, text) = demo_seed_only(&db.url);
    assert!(ok, "{text}");
    assert!(text.contains("Demo data:"), "{text}");
    let tech = printed_password(&text, "tech").expect("the technologist's password is printed");
    let director = printed_password(&text, "director").expect("the director's password is printed");

    let path = db.url.trim_start_matches("sqlite://").to_owned();
    let file = format!("{path}.demo-credentials");
    let written = std::fs::read_to_string(&file).expect("the credentials file");
    assert!(written.contains(&tech) && written.contains(&director), "{written}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "readable only by its owner");
    }
    // The bootstrap admin is made as `serve` makes it.
    assert!(text.contains("admin-password"), "{text}");

    // Served, the printed accounts sign in.
    let app = spawn_on(Backend::Sqlite, db.clone(), |_| {}).await;
    let me = app.login("tech", &tech).await;
    assert_eq!(me.ok(200)["user"]["role"], "technologist");
    let me = app.login("director", &director).await;
    assert_eq!(me.ok(200)["user"]["role"], "medical_director");

    let (ok, text) = demo_seed_only(&db.url);
    assert!(ok && text.contains("nothing was added"), "{text}");
    assert!(std::fs::read_to_string(&file).expect("kept").contains(&tech));
}
