//! Webhook secrets at rest (sealed; a dump cannot sign; plain text from an earlier release is
//! sealed at start-up; `granulo secrets rotate`) and webhook destinations (SSRF: refused ranges at
//! subscription and at delivery, DNS rebinding, the allow-list).

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use diesel::prelude::*;
use granulo::credentials::sealed::{self, Keyring};
use granulo::domain::destinations::{AllowList, NameLookup};
use granulo::store::schema::webhook_subscriptions;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::alerts::{Receiver, receiver};
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_database_dump_cannot_sign_deliveries,
    plain_text_secrets_are_sealed_at_start_up,
    secrets_rotate_re_seals_under_the_new_key,
    refused_destinations_are_refused_at_subscription,
    refused_destinations_are_refused_at_delivery_and_nothing_connects,
);

const SECRET: &str = "the shared webhook secret 0123456789";
const OTHER_KEY: &str = "another-sealing-key-that-is-long-enough-9876543210";

fn hmac_hex(secret: &str, body: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The raw rows, as a backup or `pg_dump` holds them.
fn raw_subscriptions(db: &TestDb) -> Vec<(i64, String, String, String)> {
    let mut conn = granulo::store::establish(&db.target()).expect("connect");
    webhook_subscriptions::table
        .select((
            webhook_subscriptions::id,
            webhook_subscriptions::url,
            webhook_subscriptions::events,
            webhook_subscriptions::secret,
        ))
        .order(webhook_subscriptions::id.asc())
        .load(&mut conn)
        .expect("raw rows")
}

/// An alert that every `*` subscription gets.
fn raise(app: &TestApp, key: &str) {
    let alert = granulo::services::alerts::Raise {
        kind: granulo::domain::alerts::AlertKind::UnitQuarantined,
        severity: granulo::domain::alerts::AlertSeverity::Urgent,
        entity_id: 1,
        condition_key: key.to_owned(),
        message: "a unit was quarantined".to_owned(),
        details: json!({}),
        threshold_hours: None,
        at: chrono::Utc::now(),
    };
    let mut conn = app.state.pool.get().expect("conn");
    granulo::store::write_tx(&mut conn, |c| granulo::services::alerts::raise(c, alert.clone()))
        .expect("raise")
        .expect("a new alert");
}

async fn subscribe(app: &mut TestApp, url: &str) -> i64 {
    let admin = app.admin_token().await;
    app.post(
        "/api/v1/webhooks",
        Some(&admin),
        &json!({"url": url, "events": ["*"], "secret": SECRET}),
    )
    .await
    .ok(201)["id"]
        .as_i64()
        .expect("id")
}

async fn last_delivery(app: &mut TestApp, subscription: i64) -> Value {
    let admin = app.admin_token().await;
    app.get(&format!("/api/v1/webhooks/{subscription}/deliveries"), Some(&admin))
        .await
        .ok(200)["items"][0]
        .clone()
}

fn assert_verifies(got: &Receiver, secret: &str) {
    let got = got.got.lock().expect("lock").clone();
    assert!(!got.is_empty(), "something was delivered");
    for (signature, _, _, body) in &got {
        assert_eq!(signature, &hmac_hex(secret, body), "signed with the original secret");
    }
}

/// API3/API8: the secret is stored sealed. The raw rows hold it in no form (text, hex, base64),
/// and restored into a database served with another key they cannot sign: the delivery fails
/// with a clear error and nothing is sent (not a delivery signed with garbage).
async fn a_database_dump_cannot_sign_deliveries(backend: Backend) {
    use base64::Engine as _;
    let mut app = spawn_with(backend, allow_local_webhooks).await;
    let hook = receiver(0).await;
    subscribe(&mut app, &hook.url).await;

    let rows = raw_subscriptions(&app.db);
    assert_eq!(rows.len(), 1);
    let stored = &rows[0].3;
    let forms = [
        SECRET.to_owned(),
        hex::encode(SECRET),
        base64::engine::general_purpose::STANDARD.encode(SECRET),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET),
        "shared webhook".to_owned(),
    ];
    for form in &forms {
        assert!(!stored.contains(form.as_str()), "the dump holds the secret as {form:?}");
    }
    assert!(sealed::is_sealed(stored), "{stored}");
    // Nor is the stored value itself a key that signs what the receiver verifies.
    raise(&app, "dump-original");
    deliver_webhooks(&app, chrono::Utc::now()).await.expect("delivery runs");
    assert_verifies(&hook, SECRET);
    let (_, _, _, body) = hook.got.lock().expect("lock")[0].clone();
    assert_ne!(hmac_hex(stored, &body), hmac_hex(SECRET, &body));

    // Restore the raw rows into a fresh database served with a different key.
    let mut restored = spawn_with(backend, |s| {
        allow_local_webhooks(s);
        s.secrets_key = Some(SecretString::from(OTHER_KEY));
    })
    .await;
    let other = receiver(0).await;
    {
        let mut conn = restored.state.pool.get().expect("conn");
        granulo::store::webhooks::insert(
            &mut conn,
            &granulo::store::webhooks::NewSubscription {
                url: &other.url,
                events: rows[0].2.clone(),
                secret: stored,
                hospital_id: None,
                active: true,
                created_by: "restore",
                created_at: granulo::store::now(),
            },
        )
        .expect("restore the row");
    }
    raise(&restored, "dump-restored");
    let report = deliver_webhooks(&restored, chrono::Utc::now())
        .await
        .expect("the worker carries on");
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert!(
        other.got.lock().expect("lock").is_empty(),
        "nothing is sent without the key"
    );
    let last = last_delivery(&mut restored, 1).await;
    let error = last["last_error"].as_str().expect("last_error");
    assert!(error.contains("does not open"), "{error}");
    assert!(!error.contains(stored.as_str()), "the stored value is not echoed");
}

/// Upgrade: a secret an earlier release stored in plain text is sealed when the new release
/// starts (audited), and deliveries still verify with the original secret.
async fn plain_text_secrets_are_sealed_at_start_up(backend: Backend) {
    let old = spawn_with(backend, allow_local_webhooks).await;
    let hook = receiver(0).await;
    {
        // As the earlier release wrote it.
        let mut conn = old.state.pool.get().expect("conn");
        granulo::store::webhooks::insert(
            &mut conn,
            &granulo::store::webhooks::NewSubscription {
                url: &hook.url,
                events: r#"["*"]"#.to_owned(),
                secret: SECRET,
                hospital_id: None,
                active: true,
                created_by: "admin",
                created_at: granulo::store::now(),
            },
        )
        .expect("plain row");
    }
    assert_eq!(raw_subscriptions(&old.db)[0].3, SECRET);

    let mut upgraded = spawn_on(backend, old.db.clone(), allow_local_webhooks).await;
    let stored = raw_subscriptions(&upgraded.db)[0].3.clone();
    assert!(sealed::is_sealed(&stored) && !stored.contains(SECRET), "{stored}");
    let admin = upgraded.admin_token().await;
    let trail = upgraded.get("/api/v1/audit?entity_type=webhook", Some(&admin)).await;
    let sealed_rows: Vec<&Value> = trail.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["action"] == "webhook.seal_secret")
        .collect();
    assert_eq!(sealed_rows.len(), 1, "{}", trail.text);
    assert!(!trail.text.contains(SECRET));
    // A second start has nothing left to seal.
    let again = spawn_on(backend, upgraded.db.clone(), allow_local_webhooks).await;
    assert_eq!(raw_subscriptions(&again.db)[0].3, stored);

    raise(&upgraded, "upgrade");
    let report = deliver_webhooks(&upgraded, chrono::Utc::now()).await.expect("delivery");
    assert_eq!(report.delivered, 1);
    assert_verifies(&hook, SECRET);
}

fn granulo(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_granulo"));
    cmd.args(args)
        .env("GRANULO_DATABASE_URL", db_url)
        .env("GRANULO_LOG", "warn")
        .env_remove("GRANULO_SECRETS_KEY")
        .env_remove("GRANULO_SECRETS_KEY_FILE")
        .env_remove("GRANULO_SECRETS_KEY_PREVIOUS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run granulo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ring(key: &str) -> Keyring {
    Keyring::new(&SecretString::from(key), &[]).expect("key")
}

/// `granulo secrets rotate`: on PostgreSQL with the new key set and the old one as
/// `_PREVIOUS`; on SQLite with the generated key file, generating the new key itself (and
/// finishing a rotation that stopped after writing `.next`). Afterwards the values are under
/// the new key, the old key alone opens none, and deliveries still verify.
async fn secrets_rotate_re_seals_under_the_new_key(backend: Backend) {
    let generated = backend == Backend::Sqlite;
    let app = spawn_with(backend, |s| {
        allow_local_webhooks(s);
        if generated {
            s.secrets_key = None;
        }
    })
    .await;
    let mut app = app;
    let hook = receiver(0).await;
    subscribe(&mut app, &hook.url).await;
    let before = raw_subscriptions(&app.db)[0].3.clone();
    let url = app.db.url.clone();

    let (old_key, new_key) = match &app.db.target() {
        granulo::config::DatabaseTarget::Sqlite(path) => {
            let key_file = granulo::config::sidecar_path(path, "secrets-key");
            let old = std::fs::read_to_string(&key_file)
                .expect("generated key")
                .trim()
                .to_owned();
            // A rotation that stopped after writing the next key: this run finishes it.
            let next = "a-next-key-left-by-an-interrupted-rotation-0123456789";
            let next_file = granulo::config::sidecar_path(path, "secrets-key.next");
            granulo::config::write_private_file(&next_file, next).expect("next");
            let (ok, text) = granulo(&url, &["secrets", "rotate"], &[]);
            assert!(ok, "{text}");
            assert!(!next_file.exists(), "the next key took the key file's place");
            let now = std::fs::read_to_string(&key_file).expect("key").trim().to_owned();
            assert_eq!(now, next);
            assert!(text.contains("webhook-secret: 1"), "{text}");
            (old, next.to_owned())
        }
        granulo::config::DatabaseTarget::Postgres(_) => {
            // Without the old key nothing is re-sealed, and it says why.
            let (ok, text) = granulo(&url, &["secrets", "rotate"], &[("GRANULO_SECRETS_KEY", OTHER_KEY)]);
            assert!(!ok && text.contains("GRANULO_SECRETS_KEY_PREVIOUS"), "{text}");
            assert_eq!(raw_subscriptions(&app.db)[0].3, before, "nothing changed");
            let (ok, text) = granulo(
                &url,
                &["secrets", "rotate"],
                &[
                    ("GRANULO_SECRETS_KEY", OTHER_KEY),
                    ("GRANULO_SECRETS_KEY_PREVIOUS", SECRETS_KEY),
                ],
            );
            assert!(ok, "{text}");
            assert!(text.contains("webhook-secret: 1"), "{text}");
            (SECRETS_KEY.to_owned(), OTHER_KEY.to_owned())
        }
    };
    let after = raw_subscriptions(&app.db)[0].3.clone();
    assert_ne!(after, before);
    assert!(ring(&new_key).is_current(&after), "under the new key");
    assert!(
        ring(&old_key).open(&after, "webhook-secret").is_err(),
        "the old key alone opens nothing"
    );
    assert!(!after.contains(SECRET));

    // Audited.
    let admin = app.admin_token().await;
    let trail = app.get("/api/v1/audit?entity_type=secrets_key", Some(&admin)).await;
    assert!(trail.ok(200).to_string().contains("secrets.rotate"), "{}", trail.text);

    // Served with the new key (and nothing else), deliveries verify.
    let rotated = spawn_on(backend, app.db.clone(), |s| {
        allow_local_webhooks(s);
        s.secrets_key = (!generated).then(|| SecretString::from(new_key.as_str()));
    })
    .await;
    assert_eq!(rotated.state.secrets.current_id(), ring(&new_key).current_id());
    raise(&rotated, "rotated");
    let report = deliver_webhooks(&rotated, chrono::Utc::now()).await.expect("delivery");
    assert_eq!(report.delivered, 1);
    assert_verifies(&hook, SECRET);
    // A second rotation with nothing to do re-seals nothing.
    if generated {
        let (ok, text) = granulo(&url, &["secrets", "rotate"], &[]);
        assert!(ok && text.contains("webhook-secret: 1"), "the new key re-seals: {text}");
    }
}

/// A name lookup the test controls: fixed answers, or a sequence (rebinding).
struct Lookup {
    answers: HashMap<String, Vec<Vec<IpAddr>>>,
    calls: Mutex<HashMap<String, usize>>,
}

impl Lookup {
    fn new(table: &[(&str, &[&[&str]])]) -> Arc<Self> {
        let answers = table
            .iter()
            .map(|(name, seq)| {
                (
                    (*name).to_owned(),
                    seq.iter()
                        .map(|ips| ips.iter().map(|ip| ip.parse().expect("ip")).collect())
                        .collect(),
                )
            })
            .collect();
        Arc::new(Self {
            answers,
            calls: Mutex::default(),
        })
    }
}

impl NameLookup for Lookup {
    fn lookup(
        &self,
        host: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let mut calls = self.calls.lock().expect("lock");
        let n = calls.entry(host.to_owned()).or_default();
        let answer = self.answers.get(host).map(|seq| seq[(*n).min(seq.len() - 1)].clone());
        *n += 1;
        Box::pin(async move { answer.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")) })
    }
}

fn inject(s: &mut granulo::config::Settings, lookup: Arc<Lookup>, allow: &str) {
    s.webhook_lookup = granulo::config::WebhookLookup(Some(lookup));
    s.webhook_allow = AllowList::parse(allow).expect("allow-list");
}

/// API7: every refused range, IPv6 and the IPv4-in-IPv6 forms included, is refused when the
/// subscription is made (422 `webhook_destination_refused` naming the host and the range, and
/// nothing written); so are plain http to a public host and a name with one internal address
/// among public ones. What the allow-list names is accepted, over http too.
async fn refused_destinations_are_refused_at_subscription(backend: Backend) {
    let lookup = Lookup::new(&[
        ("localhost.test", &[&["127.0.0.1"]]),
        ("metadata.test", &[&["169.254.169.254"]]),
        ("mixed.test", &[&["93.184.215.14", "10.0.0.7"]]),
        ("ula.test", &[&["fd00::1"]]),
        (
            "public.test",
            &[&["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]],
        ),
        ("lis.test", &[&["10.20.3.4"]]),
        ("intranet.test", &[&["192.168.7.7"]]),
    ]);
    let mut app = spawn_with(backend, |s| inject(s, lookup, "10.20.0.0/16, intranet.test")).await;
    let admin = app.admin_token().await;
    let refused: &[(&str, &str, &str)] = &[
        ("https://127.0.0.1/hook", "127.0.0.1", "loopback"),
        ("https://127.255.255.254:8443/hook", "127.255.255.254", "loopback"),
        ("https://2130706433/hook", "127.0.0.1", "loopback"),
        ("https://0.0.0.0/hook", "0.0.0.0", "unspecified"),
        ("https://10.1.2.3/hook", "10.1.2.3", "private"),
        ("https://172.16.0.1/hook", "172.16.0.1", "private"),
        ("https://172.31.255.255/hook", "172.31.255.255", "private"),
        ("https://192.168.0.1/hook", "192.168.0.1", "private"),
        ("https://100.64.0.1/hook", "100.64.0.1", "CGNAT"),
        (
            "https://169.254.169.254/latest/meta-data",
            "169.254.169.254",
            "metadata",
        ),
        ("https://169.254.1.1/hook", "169.254.1.1", "link-local"),
        ("https://224.0.0.1/hook", "224.0.0.1", "multicast"),
        ("https://255.255.255.255/hook", "255.255.255.255", "broadcast"),
        ("https://240.0.0.1/hook", "240.0.0.1", "reserved"),
        ("https://192.0.2.10/hook", "192.0.2.10", "documentation"),
        ("https://198.51.100.10/hook", "198.51.100.10", "documentation"),
        ("https://203.0.113.10/hook", "203.0.113.10", "documentation"),
        ("https://198.18.0.1/hook", "198.18.0.1", "benchmarking"),
        ("https://192.0.0.8/hook", "192.0.0.8", "protocol assignments"),
        ("https://[::1]/hook", "::1", "loopback"),
        ("https://[::]/hook", "::", "unspecified"),
        ("https://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1", "loopback"),
        (
            "https://[::ffff:169.254.169.254]/hook",
            "::ffff:169.254.169.254",
            "metadata",
        ),
        ("https://[::10.0.0.1]/hook", "::a00:1", "private"),
        ("https://[64:ff9b::127.0.0.1]/hook", "64:ff9b::7f00:1", "loopback"),
        ("https://[64:ff9b::192.168.1.1]/hook", "64:ff9b::c0a8:101", "private"),
        ("https://[fc00::1]/hook", "fc00::1", "unique-local"),
        ("https://[fd12:3456::1]/hook", "fd12:3456::1", "unique-local"),
        ("https://[fe80::1]/hook", "fe80::1", "link-local"),
        ("https://[ff02::1]/hook", "ff02::1", "multicast"),
        ("https://[2001:db8::1]/hook", "2001:db8::1", "documentation"),
        ("https://localhost.test/hook", "localhost.test", "loopback"),
        ("https://metadata.test/hook", "metadata.test", "metadata"),
        ("https://mixed.test/hook", "mixed.test", "private"),
        ("https://ula.test/hook", "ula.test", "unique-local"),
        ("http://public.test/hook", "public.test", "https://"),
        ("http://93.184.215.14/hook", "93.184.215.14", "https://"),
        ("http://unknown.test/hook", "unknown.test", "does not resolve"),
    ];
    for (url, host, range) in refused {
        let r = app
            .post(
                "/api/v1/webhooks",
                Some(&admin),
                &json!({"url": url, "events": ["*"], "secret": SECRET}),
            )
            .await;
        let problem = r.problem(422, "webhook_destination_refused");
        let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
        assert!(
            detail.contains(host) && detail.to_lowercase().contains(&range.to_lowercase()),
            "{url}: {detail}"
        );
    }
    assert!(raw_subscriptions(&app.db).is_empty(), "nothing written");
    for url in [
        "https://public.test/hook",
        "https://93.184.215.14/hook",
        "https://unknown.test/hook",
        "http://10.20.1.2:8080/hook",
        "http://lis.test/hook",
        "http://intranet.test/hook",
    ] {
        app.post(
            "/api/v1/webhooks",
            Some(&admin),
            &json!({"url": url, "events": ["*"], "secret": SECRET}),
        )
        .await
        .ok(201);
    }
}

/// A local listener that counts the connections it accepts (of any protocol).
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// API7/API10: at delivery every address is checked again and the connection goes only to a
/// checked one. A name that resolved to a public address when subscribed and to 127.0.0.1 now
/// (DNS rebinding) is refused and nothing connects; so is an address allowed when subscribed
/// and no longer allowed. Each is a failed attempt with the reason, the worker carries on, and
/// `last_error` of a transport failure says only its kind.
async fn refused_destinations_are_refused_at_delivery_and_nothing_connects(backend: Backend) {
    let (port, connections) = counting_listener();
    let lookup = Lookup::new(&[("rebind.test", &[&["93.184.215.14"], &["127.0.0.1"]])]);
    let mut app = spawn_with(backend, |s| inject(s, lookup.clone(), "")).await;
    let rebinding = subscribe(&mut app, &format!("https://rebind.test:{port}/hook")).await;
    raise(&app, "rebinding");
    let report = deliver_webhooks(&app, chrono::Utc::now())
        .await
        .expect("the worker carries on");
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing connected to the rebound address"
    );
    let last = last_delivery(&mut app, rebinding).await;
    let error = last["last_error"].as_str().expect("error");
    assert!(error.contains("rebind.test") && error.contains("loopback"), "{error}");
    assert!(
        !error.contains("127.0.0.1"),
        "the resolved address is not shown: {error}"
    );
    assert!(
        lookup.calls.lock().expect("lock")["rebind.test"] >= 2,
        "resolved again at delivery"
    );

    // Allowed when subscribed, no longer allowed: refused at the next delivery.
    let db = std::sync::Arc::new(TestDb::new(backend));
    let mut allowed = spawn_on(backend, db.clone(), allow_local_webhooks).await;
    let literal = subscribe(&mut allowed, &format!("http://127.0.0.1:{port}/hook")).await;
    let closed = subscribe(&mut allowed, "http://127.0.0.1:9/hook").await;
    let mut strict = spawn_on(backend, db.clone(), |_| {}).await;
    raise(&strict, "no-longer-allowed");
    let report = deliver_webhooks(&strict, chrono::Utc::now()).await.expect("runs");
    assert_eq!((report.delivered, report.failed), (0, 2));
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    let last = last_delivery(&mut strict, literal).await;
    let error = last["last_error"].as_str().expect("error");
    assert!(
        error.starts_with("refused: 127.0.0.1") && error.contains("loopback"),
        "{error}"
    );

    // Allowed again: a closed port is "could not connect", nothing more.
    raise(&allowed, "closed-port");
    let report = deliver_webhooks(&allowed, chrono::Utc::now() + chrono::TimeDelta::hours(2))
        .await
        .expect("runs");
    assert!(report.failed >= 1);
    let last = last_delivery(&mut allowed, closed).await;
    assert_eq!(last["last_error"], "could not connect", "{last}");
    assert!(connections.load(Ordering::SeqCst) >= 1, "the allowed literal connected");
}
