//! Signing keys with `kid`: `granulo keys rotate` signs nobody out, every instance follows the
//! new signer, unknown, missing and retired kids are refused, and keys are sealed at rest.

use std::process::Command;

use diesel::prelude::*;
use granulo::auth::jwt::{Claims, kid_of};
use granulo::credentials::sealed::Keyring;
use granulo::store::schema::signing_keys;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    rotation_signs_nobody_out_and_every_instance_follows,
    unknown_missing_and_retired_kids_are_refused,
    signing_keys_are_sealed_at_rest_and_reseal,
);

/// `granulo keys <args>` on the app's database, with the environment `serve` has.
fn keys(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_granulo"))
        .arg("keys")
        .args(args)
        .env("GRANULO_DATABASE_URL", &app.db.url)
        .env("GRANULO_SECRETS_KEY", SECRETS_KEY)
        .env("GRANULO_JWT_SECRET", JWT_SECRET)
        .env("GRANULO_LOG", "warn")
        .output()
        .expect("run granulo keys");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn kid(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).expect("header").kid
}

fn claims_of(token: &str) -> Claims {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    serde_json::from_slice(&bytes).expect("claims")
}

fn sign(header: &Header, claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn with_kid(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    h
}

async fn me(app: &Http, token: &str) -> reqwest::StatusCode {
    app.get("/api/v1/me", Some(token)).await.status
}

async fn rotation_signs_nobody_out_and_every_instance_follows(backend: Backend) {
    let first = spawn(backend).await;
    // A second instance on the same database, started before the rotation.
    let second = spawn_on(backend, first.db.clone(), |_| {}).await;
    let before = first.token(ADMIN_USER, ADMIN_PASSWORD).await;
    let old_kid = kid_of(JWT_SECRET.as_bytes());
    assert_eq!(
        kid(&before).as_deref(),
        Some(old_kid.as_str()),
        "the configured key is the first"
    );
    assert_eq!(me(&second, &before).await, 200);

    let (ok, text) = keys(&first, &["rotate"]);
    assert!(ok, "{text}");
    assert!(text.contains(&old_kid) && text.contains("retires"), "{text}");

    // Nobody is signed out, on either instance.
    assert_eq!(me(&first, &before).await, 200);
    assert_eq!(me(&second, &before).await, 200);

    // New tokens carry the new kid, from either instance, and each verifies the other's.
    let after = first.token(ADMIN_USER, ADMIN_PASSWORD).await;
    let new_kid = kid(&after).expect("kid");
    assert_ne!(new_kid, old_kid);
    assert!(text.contains(&new_kid), "the command names the new key: {text}");
    assert_eq!(me(&second, &after).await, 200, "the second instance re-reads the keys");
    let from_second = second.token(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(kid(&from_second).as_deref(), Some(new_kid.as_str()));
    assert_eq!(me(&first, &from_second).await, 200);

    let (ok, list) = keys(&first, &["list"]);
    assert!(ok, "{list}");
    let line = |kid: &str| list.lines().find(|l| l.starts_with(kid)).unwrap_or_default().to_owned();
    assert!(line(&old_kid).contains("verifies until"), "{list}");
    assert!(line(&new_kid).contains("signer"), "{list}");

    let (intact, report) = audit_verify(&first.db.url);
    assert!(intact, "{report}");
    let mut conn = first.state.pool.get().expect("conn");
    use granulo::store::schema::audit_log;
    let actions: Vec<String> = audit_log::table
        .filter(audit_log::entity_type.eq("signing_key"))
        .order(audit_log::id)
        .select(audit_log::action)
        .load(&mut *conn)
        .expect("audit");
    assert_eq!(actions, ["signing_key.create", "signing_key.rotate"]);
}

async fn unknown_missing_and_retired_kids_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let before = app.token(ADMIN_USER, ADMIN_PASSWORD).await;
    let claims = claims_of(&before);
    let secret = JWT_SECRET.as_bytes();
    let old_kid = kid_of(secret);

    // The right key and claims under our own header: accepted (the forgeries below differ only
    // in their header or key).
    let genuine = sign(&with_kid(Algorithm::HS256, Some(&old_kid)), &claims, secret);
    assert_eq!(me(&app, &genuine).await, 200);

    // No kid; an unknown kid (repeatedly: the re-reads are throttled, the answers the same);
    // the right kid over another key; the right kid and key under another algorithm.
    let refused = [
        sign(&with_kid(Algorithm::HS256, None), &claims, secret),
        sign(&with_kid(Algorithm::HS256, Some("00000000deadbeef")), &claims, secret),
        sign(&with_kid(Algorithm::HS256, Some("0000000000000001")), &claims, secret),
        sign(&with_kid(Algorithm::HS256, Some("0000000000000002")), &claims, secret),
        sign(
            &with_kid(Algorithm::HS256, Some(&old_kid)),
            &claims,
            b"another-key-another-key-another-key!!",
        ),
        sign(&with_kid(Algorithm::HS384, Some(&old_kid)), &claims, secret),
        sign(&with_kid(Algorithm::HS512, Some(&old_kid)), &claims, secret),
    ];
    for token in &refused {
        app.get("/api/v1/me", Some(token)).await.problem(401, "invalid_token");
    }

    let (ok, text) = keys(&app, &["rotate"]);
    assert!(ok, "{text}");
    let after = app.token(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(me(&app, &before).await, 200, "the old key verifies until it retires");

    // The old key's retire time passes (the clock is the database's row).
    {
        let mut conn = app.state.pool.get().expect("conn");
        let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1);
        let changed = diesel::update(signing_keys::table.find(&old_kid))
            .set(signing_keys::retire_after.eq(Some(past)))
            .execute(&mut *conn)
            .expect("retire");
        assert_eq!(changed, 1);
    }
    // An issuance re-reads the keys (as does a copy older than a minute).
    let latest = app.token(ADMIN_USER, ADMIN_PASSWORD).await;
    app.get("/api/v1/me", Some(&before)).await.problem(401, "invalid_token");
    app.get("/api/v1/me", Some(&genuine))
        .await
        .problem(401, "invalid_token");
    assert_eq!(me(&app, &after).await, 200);
    assert_eq!(me(&app, &latest).await, 200);

    // An instance started now agrees.
    let other = spawn_on(backend, app.db.clone(), |_| {}).await;
    other
        .get("/api/v1/me", Some(&before))
        .await
        .problem(401, "invalid_token");
    assert_eq!(me(&other, &after).await, 200);
}

async fn signing_keys_are_sealed_at_rest_and_reseal(backend: Backend) {
    use base64::Engine as _;
    let app = spawn(backend).await;
    let (ok, text) = keys(&app, &["rotate"]);
    assert!(ok, "{text}");
    let (ok, list) = keys(&app, &["list"]);
    assert!(ok && !list.contains(JWT_SECRET), "{list}");
    let old_kid = kid_of(JWT_SECRET.as_bytes());
    let signer = list
        .lines()
        .find(|l| l.ends_with("signer"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a signer")
        .to_owned();
    let (ok, text) = keys(&app, &["retire", "--kid", &signer]);
    assert!(!ok && text.contains("rotate"), "the signer is not retired: {text}");
    let (ok, text) = keys(&app, &["retire", "--kid", &old_kid]);
    assert!(ok, "{text}");
    let (_, list) = keys(&app, &["list"]);
    assert!(
        list.lines().any(|l| l.starts_with(&old_kid) && l.contains("retired")),
        "{list}"
    );

    let mut conn = app.state.pool.get().expect("conn");
    let rows: Vec<(String, String)> = signing_keys::table
        .select((signing_keys::kid, signing_keys::sealed_key))
        .load(&mut *conn)
        .expect("rows");
    assert_eq!(rows.len(), 2);
    let ring = Keyring::new(&SecretString::from(SECRETS_KEY), &[]).expect("ring");
    let mut opened = Vec::new();
    for (kid, sealed) in &rows {
        assert!(sealed.starts_with("gs1."), "{sealed}");
        let key = ring.open(sealed, "signing-key").expect("opens with the secrets key");
        assert!(key.len() >= 32, "at least 256 bits");
        assert_eq!(&kid_of(&key), kid);
        for clear in [
            String::from_utf8_lossy(&key).into_owned(),
            hex::encode(&key),
            base64::engine::general_purpose::STANDARD.encode(&key),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key),
        ] {
            assert!(!sealed.contains(&clear) && !kid.contains(&clear));
        }
        opened.push(key);
    }
    assert!(
        opened.iter().any(|k| k == JWT_SECRET.as_bytes()),
        "the configured key is the first"
    );
    // A dump without the secrets key opens none of them.
    let stranger = Keyring::new(&SecretString::from("z".repeat(40)), &[]).expect("ring");
    assert!(rows.iter().all(|(_, s)| stranger.open(s, "signing-key").is_err()));

    // A new secrets key: every key is re-sealed under it, once.
    let rotated = Keyring::new(
        &SecretString::from("the-next-sealing-key-that-is-long-enough-42"),
        &[SecretString::from(SECRETS_KEY)],
    )
    .expect("ring");
    let signer = granulo::store::signing_keys::load(&mut conn, &ring)
        .expect("load")
        .signer()
        .kid()
        .to_owned();
    let n = granulo::store::write_tx(&mut conn, |c| granulo::store::signing_keys::reseal(c, &rotated)).expect("reseal");
    assert_eq!(n, 2);
    let again =
        granulo::store::write_tx(&mut conn, |c| granulo::store::signing_keys::reseal(c, &rotated)).expect("reseal");
    assert_eq!(again, 0);
    let only_new = Keyring::new(&SecretString::from("the-next-sealing-key-that-is-long-enough-42"), &[]).expect("ring");
    let set = granulo::store::signing_keys::load(&mut conn, &only_new).expect("opens under the new key alone");
    assert_eq!(set.signer().kid(), signer);
    assert!(
        granulo::store::signing_keys::load(&mut conn, &ring).is_err(),
        "the old key alone no longer opens them"
    );
}
