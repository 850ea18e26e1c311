//! `connection.tls` through the HTTP API: registration defaults to `verify-full`; malformed
//! settings are 400 naming the field and quoting nothing; the client key is write-only (never in
//! an answer, a listing or the audit log, sealed at rest); PATCH replaces the settings but keeps a
//! key left out while its certificate stays; datasources stored before TLS existed come back as an
//! explicit `disable` and keep working; and against the local PostgreSQL (ssl on, Debian's
//! self-signed certificate) `verify-full` is refused with 503 naming the certificate's fault
//! while `require` connects.

mod support;

use serde_json::{Value, json};
use support::db::PgTestDb;
use support::gateway::{Gateway, pg_server};

/// A self-signed certificate for `name` and its key, both PEM.
fn identity(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

/// The first base64 line of a PEM: what any copy of it would contain.
fn pem_line(pem: &str) -> String {
    pem.lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a PEM body")
        .to_owned()
}

/// A PostgreSQL connection that is never dialled (no check, no query), with `tls` if given.
fn remote(tls: Option<Value>) -> Value {
    let mut c = json!({"host": "db.example.com", "database": "d", "user": "u", "password": "pw"});
    if let Some(t) = tls {
        c["tls"] = t;
    }
    c
}

async fn start() -> Gateway {
    let gw = Gateway::start().await;
    for kind in ["postgres", "mysql", "sqlite"] {
        gw.set_integration(&gw.owner, kind, true).await;
    }
    gw
}

/// The store's own record of a datasource: its generation and its sealed client key.
fn stored(gw: &Gateway, id: &str) -> (i64, Option<Vec<u8>>) {
    let db = rusqlite::Connection::open(gw.data_dir.join("sluice.db")).expect("store file");
    db.query_row(
        "SELECT generation, tls_client_key_enc FROM datasources WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("datasource row")
}

#[tokio::test]
async fn registration_defaults_to_verify_full_and_shows_the_tls_settings_but_never_the_key() {
    let gw = start().await;
    let owner = gw.owner.clone();
    let (ca, _) = identity("ca.example.com");
    let (cert, key) = identity("sluice-client");

    let cases = [
        (
            "no-tls",
            "postgres",
            remote(None),
            json!({"mode": "verify-full", "client_key_set": false}),
        ),
        (
            "no-mode",
            "mysql",
            remote(Some(json!({}))),
            json!({"mode": "verify-full", "client_key_set": false}),
        ),
        (
            "required",
            "mysql",
            remote(Some(json!({"mode": "require"}))),
            json!({"mode": "require", "client_key_set": false}),
        ),
        (
            "mtls",
            "postgres",
            remote(Some(
                json!({"mode": "verify-ca", "ca_pem": ca, "client_cert_pem": cert,
                               "client_key_pem": key}),
            )),
            json!({"mode": "verify-ca", "ca_pem": ca, "client_cert_pem": cert,
                   "client_key_set": true}),
        ),
    ];
    let mut ids = Vec::new();
    for (name, kind, connection, want) in cases {
        let (s, v) = gw
            .call(
                &owner,
                "POST",
                "/v1/datasources",
                Some(json!({"name": name, "kind": kind, "connection": connection})),
            )
            .await;
        assert_eq!(s, 201, "{name}: {v}");
        assert_eq!(v["connection"]["tls"], want, "{name}: {v}");
        let id = v["id"].as_str().expect("id").to_owned();
        let got = gw
            .ok(&owner, "GET", &format!("/v1/datasources/{id}"), None)
            .await;
        assert_eq!(got["connection"]["tls"], want, "{name}: GET {got}");
        ids.push(id);
    }
    // SQLite has no network connection: no `tls` at all.
    let path = gw.sqlite_dir().join("x.db").display().to_string();
    let lite = gw
        .ok(
            &owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": "lite", "kind": "sqlite", "connection": {"path": path}})),
        )
        .await;
    assert!(lite["connection"].get("tls").is_none(), "{lite}");

    // The key is sealed at rest, bound to its datasource; in no answer and no audit record.
    let (_, sealed) = stored(&gw, &ids[3]);
    let sealed = sealed.expect("the key is stored");
    assert!(!sealed.windows(key.len()).any(|w| w == key.as_bytes()));
    let store = std::fs::read(gw.data_dir.join("sluice.db")).expect("store file");
    let needle = pem_line(&key);
    assert!(!store.windows(needle.len()).any(|w| w == needle.as_bytes()));
    let list = gw.ok(&owner, "GET", "/v1/datasources", None).await;
    let audit = gw.audit(&owner, "action=datasource.create").await;
    assert_eq!(audit.len(), 5, "{audit:?}");
    let mtls = audit
        .iter()
        .find(|r| r["detail"]["name"] == "mtls")
        .expect("the mtls record");
    assert_eq!(mtls["detail"]["tls_mode"], "verify-ca", "{mtls}");
    for (what, text) in [
        ("the listing", list.to_string()),
        ("the audit log", json!(audit).to_string()),
    ] {
        assert!(!text.contains(&needle), "the key is in {what}: {text}");
        assert!(!text.contains("PRIVATE KEY"), "a key is in {what}: {text}");
        assert!(!text.contains("client_key_pem"), "{what}: {text}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn malformed_tls_settings_are_400_naming_the_field_and_quoting_nothing() {
    let gw = start().await;
    let owner = gw.owner.clone();
    let (cert, key) = identity("sluice-client");
    let (_, other_key) = identity("someone-else");
    let secret_cert = "-----BEGIN CERTIFICATE-----\nTOPSECRETBYTES\n-----END CERTIFICATE-----\n";
    let secret_key = "-----BEGIN PRIVATE KEY-----\nTOPSECRETBYTES\n-----END PRIVATE KEY-----\n";
    let pg =
        |tls: Value| json!({"name": "bad", "kind": "postgres", "connection": remote(Some(tls))});
    let path = gw.sqlite_dir().join("x.db").display().to_string();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "sqlite with tls",
            json!({"name": "bad", "kind": "sqlite",
                   "connection": {"path": path, "tls": {"mode": "disable"}}}),
            "connection.tls is only for postgres and mysql",
        ),
        (
            "unknown mode",
            pg(json!({"mode": "prefer"})),
            "connection.tls.mode",
        ),
        (
            "mode of the wrong case",
            pg(json!({"mode": "VERIFY-FULL"})),
            "connection.tls.mode",
        ),
        (
            "ca_pem not PEM",
            pg(json!({"ca_pem": "TOPSECRET hello"})),
            "connection.tls.ca_pem",
        ),
        (
            "ca_pem not a certificate",
            pg(json!({"ca_pem": secret_cert})),
            "connection.tls.ca_pem",
        ),
        (
            "ca_pem a key",
            pg(json!({"ca_pem": key})),
            "connection.tls.ca_pem",
        ),
        (
            "certificate without its key",
            pg(json!({"client_cert_pem": cert})),
            "connection.tls.client_key_pem",
        ),
        (
            "key without its certificate",
            pg(json!({"client_key_pem": key})),
            "connection.tls.client_cert_pem",
        ),
        (
            "key not a key",
            pg(json!({"client_cert_pem": cert, "client_key_pem": secret_key})),
            "connection.tls.client_key_pem",
        ),
        (
            "key of another certificate",
            pg(json!({"client_cert_pem": cert, "client_key_pem": other_key})),
            "connection.tls.client_key_pem",
        ),
        (
            "certificate not a certificate",
            pg(json!({"client_cert_pem": secret_cert, "client_key_pem": key})),
            "connection.tls.client_cert_pem",
        ),
        (
            "unknown field",
            pg(json!({"sslmode": "require"})),
            "sslmode",
        ),
    ];
    // The same settings sent by PATCH to a datasource that exists are refused alike.
    let target = gw
        .ok(
            &owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": "target", "kind": "postgres", "connection": remote(None)})),
        )
        .await;
    let target = format!("/v1/datasources/{}", target["id"].as_str().expect("id"));
    let before = gw.ok(&owner, "GET", &target, None).await;
    // What an answer must never contain: the submitted PEM bodies and key material.
    let quoted = [
        "TOPSECRET".to_owned(),
        "PRIVATE KEY".to_owned(),
        pem_line(&cert),
        pem_line(&key),
        pem_line(&other_key),
    ];
    let mut failures = Vec::new();
    for (label, body, names) in cases {
        let mut attempts = vec![("POST", "/v1/datasources".to_owned(), body.clone())];
        if body["kind"] == "postgres" {
            attempts.push((
                "PATCH",
                target.clone(),
                json!({"connection": body["connection"]}),
            ));
            let tls_only = json!({"connection": {"tls": body["connection"]["tls"]}});
            attempts.push(("PATCH", target.clone(), tls_only));
        }
        for (method, path, body) in attempts {
            let (s, v) = gw.call(&owner, method, &path, Some(body)).await;
            let message = v["error"]["message"].as_str().unwrap_or_default();
            if (s, v["error"]["code"].as_str()) != (400, Some("bad_request")) {
                failures.push(format!("{label} ({method}): {s} {v}"));
            } else if !message.contains(names) {
                failures.push(format!(
                    "{label} ({method}): does not name {names}: {message}"
                ));
            } else if quoted.iter().any(|q| message.contains(q.as_str())) {
                failures.push(format!("{label} ({method}): quotes the input: {message}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let list = gw.ok(&owner, "GET", "/v1/datasources", None).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(1),
        "nothing registered: {list}"
    );
    assert_eq!(
        gw.ok(&owner, "GET", &target, None).await,
        before,
        "nothing changed"
    );
    gw.stop().await;
}

#[tokio::test]
async fn patch_replaces_the_tls_settings_and_keeps_a_key_left_out_only_with_its_certificate() {
    let gw = start().await;
    let owner = gw.owner.clone();
    let (ca, _) = identity("ca.example.com");
    let (cert_a, key_a) = identity("client-a");
    let (cert_b, key_b) = identity("client-b");
    let ds = gw
        .ok(
            &owner,
            "POST",
            "/v1/datasources",
            Some(
                json!({"name": "pg", "kind": "postgres", "connection": remote(Some(json!({
                "mode": "verify-ca", "ca_pem": ca, "client_cert_pem": cert_a,
                "client_key_pem": key_a})))}),
            ),
        )
        .await;
    let id = ds["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/datasources/{id}");
    let (gen0, key0) = stored(&gw, &id);
    let tls_of = |v: &Value| v["connection"]["tls"].clone();

    // `tls` alone, the key left out and the certificate the same (with other line endings, as a
    // form's textarea sends it back): the key stays, the rest is what was sent (`ca_pem` left
    // out is gone), the generation moves on.
    let same_a = if cert_a.contains("\r\n") {
        cert_a.replace("\r\n", "\n")
    } else {
        cert_a.replace('\n', "\r\n")
    };
    let v = gw
        .ok(
            &owner,
            "PATCH",
            &path,
            Some(json!({"connection": {"tls": {"mode": "require", "client_cert_pem": same_a}}})),
        )
        .await;
    assert_eq!(
        tls_of(&v),
        json!({"mode": "require", "client_cert_pem": same_a, "client_key_set": true})
    );
    assert_eq!(
        v["connection"]["host"], "db.example.com",
        "the rest is kept: {v}"
    );
    let (gen1, key1) = stored(&gw, &id);
    assert_eq!(gen1, gen0 + 1, "a TLS change rebuilds the pool");
    assert_eq!(key1, key0, "the very same sealed key");

    // A whole connection without `tls`: the TLS settings stay, as a password left out does.
    let v = gw
        .ok(
            &owner,
            "PATCH",
            &path,
            Some(json!({"connection": {"host": "db2.example.com", "database": "d", "user": "u"}})),
        )
        .await;
    assert_eq!(
        tls_of(&v),
        json!({"mode": "require", "client_cert_pem": same_a, "client_key_set": true})
    );
    assert_eq!(v["connection"]["host"], "db2.example.com");
    let (gen2, key2) = stored(&gw, &id);
    assert_eq!((gen2, &key2), (gen1 + 1, &key0));

    // A new certificate without its key: refused (the stored key belongs to the old one), and
    // nothing changes.
    let (s, v) = gw
        .call(
            &owner,
            "PATCH",
            &path,
            Some(json!({"connection": {"tls": {"mode": "require", "client_cert_pem": cert_b}}})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("connection.tls.client_key_pem"), "{m}");
    assert_eq!(stored(&gw, &id), (gen2, key2.clone()));

    // With its key: both replaced; the audit names the changed fields, never a value.
    let v = gw
        .ok(
            &owner,
            "PATCH",
            &path,
            Some(
                json!({"connection": {"tls": {"mode": "verify-full", "client_cert_pem": cert_b,
                                                "client_key_pem": key_b}}}),
            ),
        )
        .await;
    assert_eq!(
        tls_of(&v),
        json!({"mode": "verify-full", "client_cert_pem": cert_b, "client_key_set": true})
    );
    let (gen3, key3) = stored(&gw, &id);
    assert_eq!(gen3, gen2 + 1);
    assert!(key3.is_some() && key3 != key0, "a new sealed key");

    // No certificate any more: the key goes with it.
    let v = gw
        .ok(
            &owner,
            "PATCH",
            &path,
            Some(json!({"connection": {"tls": {"mode": "disable"}}})),
        )
        .await;
    assert_eq!(
        tls_of(&v),
        json!({"mode": "disable", "client_key_set": false})
    );
    assert_eq!(stored(&gw, &id), (gen3 + 1, None));

    // A change elsewhere does not touch the connection or the pool.
    gw.ok(
        &owner,
        "PATCH",
        &path,
        Some(json!({"description": "moved"})),
    )
    .await;
    assert_eq!(stored(&gw, &id).0, gen3 + 1);

    let audit = gw.audit(&owner, "action=datasource.update").await;
    let changed: Vec<Value> = audit
        .iter()
        .rev()
        .map(|r| r["detail"]["changed"].clone())
        .collect();
    assert_eq!(
        changed,
        vec![
            json!(["tls"]),
            json!(["connection"]),
            json!(["tls.client_key_pem", "tls"]),
            json!(["tls"]),
            json!(["description"]),
        ],
        "{audit:?}"
    );
    let text = json!(audit).to_string();
    for key in [&key_a, &key_b] {
        assert!(
            !text.contains(&pem_line(key)),
            "a key in the audit log: {text}"
        );
    }
    assert!(
        !text.contains(&pem_line(&cert_b)),
        "PEM values are not audited: {text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn datasources_stored_before_tls_come_back_as_an_explicit_disable_and_keep_working() {
    let pg = PgTestDb::create().await;
    let role = pg.create_role("tls_mig", "mig_pw").await;
    let mut gw = start().await;
    let owner = gw.owner.clone();
    let (host, port) = pg_server();
    // Registered by this version (the plain local server needs `disable` to answer now), then
    // the store is put back as the version before TLS left it.
    let local = gw
        .ok(
            &owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": "old-pg", "kind": "postgres", "connection": {
                "host": host, "port": port, "database": pg.name, "user": role,
                "password": "mig_pw", "tls": {"mode": "disable"}}})),
        )
        .await;
    let local = local["id"].as_str().expect("id").to_owned();
    let remote_my = gw
        .ok(
            &owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": "old-my", "kind": "mysql", "connection": remote(None)})),
        )
        .await;
    let remote_my = remote_my["id"].as_str().expect("id").to_owned();
    let path = gw.sqlite_dir().join("x.db").display().to_string();
    let lite = gw
        .ok(
            &owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": "old-lite", "kind": "sqlite", "connection": {"path": path}})),
        )
        .await;
    let lite = lite["id"].as_str().expect("id").to_owned();
    // Checked once before (the check also records the default schema it read, so nothing of
    // the registration is still being written when the server stops).
    let v = gw
        .ok(
            &owner,
            "POST",
            &format!("/v1/datasources/{local}/check"),
            None,
        )
        .await;
    assert_eq!(v["tls"], Value::Null, "{v}");

    gw.restart(|data_dir| {
        let db = rusqlite::Connection::open(data_dir.join("sluice.db")).expect("store file");
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(
            version, 5,
            "this puts the store back one migration: the TLS one"
        );
        db.execute_batch(&format!(
            "UPDATE datasources SET connection = json_remove(connection, '$.tls');
             ALTER TABLE datasources DROP COLUMN tls_client_key_enc;
             PRAGMA user_version = {};",
            version - 1
        ))
        .expect("back to the schema before TLS");
        let text: String = db
            .query_row(
                "SELECT group_concat(connection) FROM datasources",
                [],
                |r| r.get(0),
            )
            .expect("connections");
        assert!(!text.contains("\"tls\""), "{text}");
    })
    .await;

    let list = gw.ok(&owner, "GET", "/v1/datasources", None).await;
    let tls_of = |id: &str| {
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["connection"].get("tls").cloned())
            .expect("listed")
    };
    let disabled = json!({"mode": "disable", "client_key_set": false});
    assert_eq!(tls_of(&local), Some(disabled.clone()), "{list}");
    assert_eq!(tls_of(&remote_my), Some(disabled), "{list}");
    assert_eq!(tls_of(&lite), None, "{list}");

    // It keeps working: the check connects in plain TCP and says so.
    let v = gw
        .ok(
            &owner,
            "POST",
            &format!("/v1/datasources/{local}/check"),
            None,
        )
        .await;
    assert_eq!(
        (v["ok"].clone(), v["tls"].clone()),
        (json!(true), Value::Null),
        "{v}"
    );
    gw.stop().await;
}

// ---- Against the local PostgreSQL: ssl=on with Debian's self-signed snakeoil certificate ----

async fn local_pg(gw: &Gateway, pg: &PgTestDb, role: &str, name: &str, tls: Value) -> String {
    let (host, port) = pg_server();
    gw.datasource(
        &gw.owner,
        json!({"name": name, "kind": "postgres", "connection": {
            "host": host, "port": port, "database": pg.name, "user": role,
            "password": "tls_local_pw", "tls": tls}}),
    )
    .await
}

/// A refused check: 503 `datasource_unavailable` (never a 500), its message in lower case.
async fn refused_check(gw: &Gateway, id: &str) -> String {
    let (s, v) = gw
        .call(
            &gw.owner,
            "POST",
            &format!("/v1/datasources/{id}/check"),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("datasource_unavailable")),
        "{v}"
    );
    let m = v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(!m.contains("tls_local_pw"), "{m}");
    m
}

#[tokio::test]
async fn verify_full_refuses_the_local_server_with_503_naming_the_certificate_never_500() {
    let pg = PgTestDb::create().await;
    let role = pg.create_role("tls_vf", "tls_local_pw").await;
    let gw = start().await;

    // No `ca_pem`: the system's roots. Where they do not hold Debian's self-signed certificate it
    // is untrusted; where they do (this image links it into /etc/ssl/certs) the chain passes and
    // the host fails: it names `localhost`, the datasource was registered as 127.0.0.1.
    let id = local_pg(&gw, &pg, &role, "strict", json!({"mode": "verify-full"})).await;
    let m = refused_check(&gw, &id).await;
    assert!(
        m.contains("certificate")
            && (m.contains("not trusted") || m.contains("does not name the host \"127.0.0.1\"")),
        "the message names the certificate's fault: {m}"
    );
    // The same through a query: 503, never a 500.
    let app = gw.app(&gw.owner, "strict-app", &[id.as_str()]).await;
    let (s, v) = gw.query(&gw.owner, &app, json!({"sql": "SELECT 1"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("datasource_unavailable")),
        "{v}"
    );

    // A CA that did not sign the server's certificate: untrusted, whatever the system holds.
    let (other_ca, _) = identity("some-other-ca.example.com");
    let tls = json!({"mode": "verify-full", "ca_pem": other_ca});
    let id = local_pg(&gw, &pg, &role, "wrong-ca", tls).await;
    let m = refused_check(&gw, &id).await;
    assert!(
        m.contains("certificate") && m.contains("not trusted"),
        "the message says the certificate is untrusted: {m}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn require_connects_to_the_local_server_and_check_reports_an_unverified_tls_session() {
    let pg = PgTestDb::create().await;
    let role = pg.create_role("tls_rq", "tls_local_pw").await;
    let gw = start().await;
    let id = local_pg(&gw, &pg, &role, "encrypted", json!({"mode": "require"})).await;
    let (s, v) = gw
        .call(
            &gw.owner,
            "POST",
            &format!("/v1/datasources/{id}/check"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let tls = &v["tls"];
    let version = tls["version"].as_str().unwrap_or_default();
    assert!(version.starts_with("TLSv1."), "{v}");
    assert_eq!(
        (
            &tls["verified"],
            &tls["chain_verified"],
            &tls["host_verified"]
        ),
        (&json!(false), &json!(false), &json!(false)),
        "{v}"
    );
    // The server agrees: the gateway's session is encrypted.
    let admin = pg.admin_client().await;
    let app = gw.app(&gw.owner, "encrypted-app", &[id.as_str()]).await;
    let rows = gw
        .rows(&gw.owner, &app, json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(rows["rows"], json!([[1]]));
    let ssl: bool = admin
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = $1",
            &[&role],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the gateway's connections use TLS");

    // Switched to disable by a PATCH of `tls` alone: the pool is rebuilt, the check says so.
    gw.ok(
        &gw.owner,
        "PATCH",
        &format!("/v1/datasources/{id}"),
        Some(json!({"connection": {"tls": {"mode": "disable"}}})),
    )
    .await;
    let v = gw
        .ok(
            &gw.owner,
            "POST",
            &format!("/v1/datasources/{id}/check"),
            None,
        )
        .await;
    assert_eq!(v["tls"], Value::Null, "{v}");
    gw.stop().await;
}
