//! Secrets never leak: a full session against the real binary at debug log level, with working
//! and failing datasources on PostgreSQL and MariaDB (wrong passwords, an unreachable server,
//! database errors, checks, schema listings, a password rotation, a mutual-TLS client key), after
//! which every log line, every HTTP answer, the audit log and every file of the data directory
//! are searched for the datasource passwords, the client key and the master key. Zero hits.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;
use support::db::{MysqlTestDb, PgTestDb};
use support::throwaway::{SluiceProcess, spare_port};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A password no fixture or log could contain by chance.
fn secret(tag: &str) -> String {
    format!("Sx{tag}{}", hex::encode(rand::random::<[u8; 12]>()))
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                hits.extend(files_containing(&p, needle));
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

struct Session {
    http: reqwest::Client,
    base: String,
    answers: Vec<String>,
}

impl Session {
    async fn call(&mut self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let text = res.text().await.expect("body");
        self.answers.push(text.clone());
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

#[tokio::test]
async fn no_password_or_master_key_appears_in_logs_answers_audit_or_data_dir() {
    // Real service accounts with unique passwords, on throwaway databases.
    let pg = PgTestDb::create().await;
    let pg_pw = secret("pg");
    let pg_role = pg.create_role("sec_pg", &pg_pw).await;
    pg.admin_client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1); GRANT SELECT ON t TO {pg_role}"
        ))
        .await
        .expect("pg setup");
    let my = MysqlTestDb::create().await;
    let my_pw = secret("my");
    let my_user = my.create_user("sec_my", &my_pw).await;
    {
        use mysql_async::prelude::Queryable;
        let mut c = my.admin_conn().await;
        c.query_drop(format!(
            "CREATE TABLE t (id INT); INSERT INTO t VALUES (1); \
             GRANT SELECT ON {}.t TO '{my_user}'@'%'; GRANT SELECT ON {}.t TO '{my_user}'@'localhost'",
            my.name, my.name
        ))
        .await
        .expect("mysql setup");
        let _ = c.disconnect().await;
    }
    let wrong_pg = secret("wrongpg");
    let wrong_my = secret("wrongmy");
    let unreachable_pw = secret("unreach");
    let rotated = secret("rotated");
    let key_bytes: [u8; 32] = rand::random();
    let key_hex = hex::encode(key_bytes);
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(key_bytes);

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = std::process::Command::new(BIN)
        .args([
            "company",
            "create",
            "Acme",
            "--owner-email",
            "o@acme.test",
            "--data-dir",
        ])
        .arg(&data)
        .env("SLUICE_MASTER_KEY", &key_hex)
        .output()
        .expect("company create");
    assert!(out.status.success());
    let owner = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .last()
        .expect("token")
        .trim()
        .to_owned();
    let server = SluiceProcess::start(
        BIN,
        &data,
        &[
            ("SLUICE_LOG", "debug"),
            ("SLUICE_MASTER_KEY", key_hex.as_str()),
            ("SLUICE_POOLS__CONNECT_TIMEOUT_MS", "2000"),
        ],
    );
    let mut s = Session {
        http: reqwest::Client::new(),
        base: server.base.clone(),
        answers: Vec::new(),
    };
    for kind in ["postgres", "mysql"] {
        s.call(
            &owner,
            "PATCH",
            &format!("/v1/integrations/{kind}"),
            Some(json!({"enabled": true})),
        )
        .await;
    }
    let (pg_host, pg_port) = support::gateway::pg_server();
    let (my_host, my_port) = support::gateway::mysql_server();
    let mut ids = Vec::new();
    for (name, kind, host, port, db, user, pw) in [
        (
            "pg-good",
            "postgres",
            pg_host.as_str(),
            pg_port,
            pg.name.as_str(),
            pg_role.as_str(),
            pg_pw.as_str(),
        ),
        (
            "pg-wrong",
            "postgres",
            pg_host.as_str(),
            pg_port,
            pg.name.as_str(),
            pg_role.as_str(),
            wrong_pg.as_str(),
        ),
        (
            "pg-down",
            "postgres",
            "127.0.0.1",
            spare_port(),
            "x",
            "x",
            unreachable_pw.as_str(),
        ),
        (
            "my-good",
            "mysql",
            my_host.as_str(),
            my_port,
            my.name.as_str(),
            my_user.as_str(),
            my_pw.as_str(),
        ),
        (
            "my-wrong",
            "mysql",
            my_host.as_str(),
            my_port,
            my.name.as_str(),
            my_user.as_str(),
            wrong_my.as_str(),
        ),
    ] {
        let ds = s
            .call(
                &owner,
                "POST",
                "/v1/datasources",
                Some(json!({"name": name, "kind": kind, "connection": {
                    "host": host, "port": port, "database": db, "user": user, "password": pw,
                    "tls": {"mode": "disable"}}})),
            )
            .await;
        ids.push(ds["id"].as_str().expect("created").to_owned());
    }
    // A mutual-TLS client key goes the same ways as a password: registered, checked, listed,
    // its datasource edited with the key left out (kept) and sent again.
    let client = rcgen::KeyPair::generate().expect("client key");
    let client_cert = rcgen::CertificateParams::new(vec!["sluice-client".to_owned()])
        .expect("params")
        .self_signed(&client)
        .expect("client certificate")
        .pem();
    let client_key = client.serialize_pem();
    let mtls = |key: Option<&str>| {
        let mut tls = json!({"mode": "require", "client_cert_pem": client_cert});
        if let Some(k) = key {
            tls["client_key_pem"] = json!(k);
        }
        json!({"host": pg_host, "port": pg_port, "database": pg.name, "user": pg_role,
               "password": pg_pw, "tls": tls})
    };
    let ds = s
        .call(
            &owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": "pg-mtls", "kind": "postgres",
                        "connection": mtls(Some(&client_key))})),
        )
        .await;
    assert_eq!(ds["connection"]["tls"]["client_key_set"], true, "{ds}");
    let mtls_id = ds["id"].as_str().expect("created").to_owned();
    for body in [mtls(None), mtls(Some(&client_key))] {
        s.call(
            &owner,
            "PATCH",
            &format!("/v1/datasources/{mtls_id}"),
            Some(json!({ "connection": body })),
        )
        .await;
    }
    ids.push(mtls_id);
    let app = s
        .call(
            &owner,
            "POST",
            "/v1/apps",
            Some(json!({"name": "all", "datasource_ids": ids})),
        )
        .await;
    let app_id = app["id"].as_str().expect("app").to_owned();
    let q = format!("/v1/apps/{app_id}/query");
    for name in [
        "pg-good", "pg-wrong", "pg-down", "my-good", "my-wrong", "pg-mtls",
    ] {
        for sql in [
            "SELECT id FROM t",
            "SELECT nosuchcolumn FROM t",
            "SELECT 1/0",
        ] {
            s.call(
                &owner,
                "POST",
                &q,
                Some(json!({"datasource": name, "sql": sql})),
            )
            .await;
        }
    }
    for id in &ids {
        s.call(&owner, "POST", &format!("/v1/datasources/{id}/check"), None)
            .await;
        s.call(&owner, "GET", &format!("/v1/datasources/{id}/schema"), None)
            .await;
        s.call(&owner, "GET", &format!("/v1/datasources/{id}"), None)
            .await;
    }
    // Rotate a password to a wrong one and back: both values pass through the API.
    let good = &ids[0];
    s.call(
        &owner,
        "PATCH",
        &format!("/v1/datasources/{good}"),
        Some(
            json!({"connection": {"host": pg_host, "port": pg_port, "database": pg.name,
                                    "user": pg_role, "password": rotated}}),
        ),
    )
    .await;
    s.call(
        &owner,
        "POST",
        &q,
        Some(json!({"datasource": "pg-good", "sql": "SELECT id FROM t"})),
    )
    .await;
    s.call(
        &owner,
        "PATCH",
        &format!("/v1/datasources/{good}"),
        Some(
            json!({"connection": {"host": pg_host, "port": pg_port, "database": pg.name,
                                    "user": pg_role, "password": pg_pw}}),
        ),
    )
    .await;
    let answered = s
        .call(
            &owner,
            "POST",
            &q,
            Some(json!({"datasource": "pg-good", "sql": "SELECT id FROM t"})),
        )
        .await;
    assert_eq!(
        answered["rows"],
        json!([[1]]),
        "the session really reached the database"
    );
    // The local PostgreSQL trusts loopback, so only MariaDB can refuse a wrong password here.
    let refused = s
        .call(
            &owner,
            "POST",
            &q,
            Some(json!({"datasource": "my-wrong", "sql": "SELECT id FROM t"})),
        )
        .await;
    assert_eq!(
        refused["error"]["code"], "datasource_unavailable",
        "{refused}"
    );
    let down = s
        .call(
            &owner,
            "POST",
            &q,
            Some(json!({"datasource": "pg-down", "sql": "SELECT id FROM t"})),
        )
        .await;
    assert_eq!(down["error"]["code"], "datasource_unavailable", "{down}");
    s.call(&owner, "GET", "/v1/audit?limit=1000", None).await;
    s.call(&owner, "GET", "/metrics", None).await;
    // Let the audit writer and the logs settle, then stop the server cleanly.
    server.signal("TERM");
    let mut server = server;
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(30))
            .is_some_and(|st| st.success())
    );
    let logs = server.log_text();
    assert!(
        logs.lines().count() > 20,
        "debug logging was on: {} lines",
        logs.lines().count()
    );

    // The key's first line of base64: what any copy of the PEM, or of the key, would contain.
    let key_body = client_key
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a PEM body")
        .to_owned();
    let needles = [
        ("postgres password", pg_pw.as_str()),
        ("mysql password", my_pw.as_str()),
        ("wrong postgres password", wrong_pg.as_str()),
        ("wrong mysql password", wrong_my.as_str()),
        ("unreachable server's password", unreachable_pw.as_str()),
        ("rotated password", rotated.as_str()),
        ("master key (hex)", key_hex.as_str()),
        ("master key (base64)", key_b64.as_str()),
        ("TLS client key", key_body.as_str()),
    ];
    let mut leaks = Vec::new();
    for (what, needle) in needles {
        if logs.contains(needle) {
            leaks.push(format!("{what} in the logs"));
        }
        for a in &s.answers {
            if a.contains(needle) {
                leaks.push(format!("{what} in an HTTP answer: {a}"));
            }
        }
        for f in files_containing(&data, needle.as_bytes()) {
            leaks.push(format!("{what} in {f}"));
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
