//! The command line: `user create`, `migrate`, `audit verify` against a live database.

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    user_create_reads_the_password_from_stdin,
    migrate_is_idempotent,
    online_backup_restores_with_its_audit_chain,
);

fn granulo(app: &TestApp, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_granulo"))
        .args(args)
        .env("GRANULO_DATABASE_URL", &app.db.url)
        .env("GRANULO_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn granulo");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn user_create_reads_the_password_from_stdin(backend: Backend) {
    let mut app = spawn(backend).await;
    let (ok, text) = granulo(
        &app,
        &[
            "user",
            "create",
            "--username",
            "Night.Tech",
            "--role",
            "technologist",
            "--password-stdin",
        ],
        "night shift password\n",
    );
    assert!(ok, "{text}");
    assert!(!text.contains("night shift password"), "the password is never echoed");
    app.login("night.tech", "night shift password").await.ok(200);

    app.create_hospital("CLI").await;
    let (ok, text) = granulo(
        &app,
        &[
            "user",
            "create",
            "--username",
            "ward",
            "--role",
            "hospital",
            "--hospital",
            "cli",
            "--password-stdin",
        ],
        "front desk secret 9\n",
    );
    assert!(ok, "{text}");
    let ward = app.login("ward", "front desk secret 9").await;
    assert_eq!(ward.ok(200)["user"]["role"], "hospital");

    let (ok, text) = granulo(
        &app,
        &[
            "user",
            "create",
            "--username",
            "weak",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!ok && text.contains("password"), "{text}");
    let (ok, text) = granulo(
        &app,
        &[
            "user",
            "create",
            "--username",
            "night.tech",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "another long password\n",
    );
    assert!(!ok && text.contains("username_taken"), "{text}");
    let (ok, text) = granulo(
        &app,
        &[
            "user",
            "create",
            "--username",
            "nohosp",
            "--role",
            "hospital",
            "--password-stdin",
        ],
        "another long password\n",
    );
    assert!(!ok && text.contains("hospital_id"), "{text}");

    let admin = app.admin_token().await;
    let trail = app.get("/api/v1/audit?entity_type=user", Some(&admin)).await;
    let created_by_cli = trail.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["actor"]["name"] == "cli")
        .count();
    assert_eq!(created_by_cli, 2);
}

async fn migrate_is_idempotent(backend: Backend) {
    let app = spawn(backend).await;
    let (ok, text) = granulo(&app, &["migrate"], "");
    assert!(ok, "{text}");
    assert!(text.contains("0 migration(s) applied"), "{text}");
    let (ok, text) = granulo(&app, &["audit", "verify"], "");
    assert!(ok && text.contains("intact"), "{text}");
}

async fn online_backup_restores_with_its_audit_chain(backend: Backend) {
    let mut app = spawn(backend).await;
    let tech = app.token_for("technologist").await;
    app.register_donor(&tech, &donor_body("Backed", "O", "negative")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy.db");
    let copy_arg = copy.to_str().expect("utf-8").to_owned();
    let (ok, text) = granulo(&app, &["backup", "--to", &copy_arg], "");
    if backend == Backend::Postgres {
        assert!(!ok && text.contains("pg_dump"), "{text}");
        return;
    }
    // Taken while the service runs; the service keeps answering.
    assert!(ok, "{text}");
    app.get("/api/v1/donors", Some(&tech)).await.ok(200);
    let (again, text) = granulo(&app, &["backup", "--to", &copy_arg], "");
    assert!(!again && text.contains("exists"), "{text}");

    // Restore = put the copy in place of the database; the copy is complete and verifies.
    let restored = dir.path().join("restored.db");
    std::fs::copy(&copy, &restored).expect("copy");
    let url = format!("sqlite://{}", restored.display());
    let (ok, verify) = audit_verify(&url);
    assert!(ok && verify.contains("audit chain intact"), "{verify}");
    let target = granulo::config::DatabaseTarget::parse(&url).expect("url");
    let mut conn = granulo::store::establish(&target).expect("open restored copy");
    let donors = granulo::store::donors::list(&mut conn, &Default::default(), 10).expect("donors");
    assert_eq!(donors.len(), 1);
    assert_eq!(donors[0].given_name, "Backed");
}
