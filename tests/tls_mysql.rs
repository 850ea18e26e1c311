//! TLS from the MySQL/MariaDB driver to real, throwaway MariaDB servers (`support::
//! throwaway_mysql`) that use certificates the test makes (`support::certs`): each mode connects,
//! or is refused with a message naming the cause, as libpq's `sslmode` would; mutual TLS with a
//! `REQUIRE X509` account; statements killed and read-only refused over TLS (on a server that
//! refuses plain connections, so the killer connection must be TLS too); and a relay in the test
//! that records every byte between the driver and the server, to show that with TLS neither a
//! result value nor the SQL text nor the user crosses in clear, and that with `disable` they do.
//!
//! Everything goes through `driver::open`, as the gateway does.
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use serde_json::Value;
use sluice::datasource::driver::{self, Driver};
use sluice::datasource::tls::{TlsMode, TlsSettings};
use sluice::datasource::{
    Connection, DatasourceSpec, ExecError, Execute, Execution, RegistrySettings, Secret, ServerInfo,
};
use sluice::model::{DatasourceId, DatasourceKind};
use support::certs::{CertKey, TestCa};
use support::relay::{Relay, contains};
use support::throwaway_mysql::ThrowawayMariadb;

const PASSWORD: &str = "Tls_svc_pw_8812_qx";
const USER: &str = "tls_svc_user";
const X509_USER: &str = "tls_x509_user";
/// A value only the table holds: it crosses the network only inside a result.
const MARKER: &str = "Sluice-Capture-7Q4Z-Marker";
/// Text that appears only in the SQL the test sends (and the column name it returns).
const SQL_ALIAS: &str = "capture_alias_k9w";

/// A TLS server with a certificate for `localhost` (a DNS name only: registering `127.0.0.1`
/// is a host name mismatch) signed by `ca`, which also signs the client certificates it takes.
fn tls_server(ca: &TestCa, server: &CertKey, require_secure_transport: bool) -> ThrowawayMariadb {
    let b = ThrowawayMariadb::builder().tls(&server.cert_pem, &server.key_pem, Some(&ca.cert_pem));
    if require_secure_transport {
        b.require_secure_transport().start()
    } else {
        b.start()
    }
}

/// The database `tlsdb` with `t (1, MARKER)`, the service account (read and write on it) and
/// an account that needs a client certificate.
async fn provision(server: &ThrowawayMariadb) {
    let create_user = format!("CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'");
    let grant = format!("GRANT SELECT, INSERT, UPDATE, DELETE ON tlsdb.* TO '{USER}'@'%'");
    let create_x509 =
        format!("CREATE USER '{X509_USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE X509");
    let grant_x509 = format!("GRANT SELECT ON tlsdb.* TO '{X509_USER}'@'%'");
    let insert = format!("INSERT INTO tlsdb.t VALUES (1, '{MARKER}')");
    server
        .admin_sql(&[
            "CREATE DATABASE tlsdb",
            "CREATE TABLE tlsdb.t (id INT PRIMARY KEY, v VARCHAR(40))",
            &insert,
            &create_user,
            &grant,
            &create_x509,
            &grant_x509,
        ])
        .await;
}

fn settings() -> RegistrySettings {
    RegistrySettings {
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
        pool_timeout: Duration::from_secs(2),
        ..RegistrySettings::default()
    }
}

fn tls(mode: TlsMode, ca_pem: Option<&str>, client: Option<&CertKey>) -> TlsSettings {
    TlsSettings {
        mode,
        ca_pem: ca_pem.map(str::to_owned),
        client_cert_pem: client.map(|c| c.cert_pem.clone()),
        client_key_pem: client.map(|c| Secret::new(c.key_pem.clone())),
    }
}

fn spec(host: &str, port: u16, user: &str, tls: TlsSettings) -> DatasourceSpec {
    DatasourceSpec {
        id: DatasourceId::from("ds_tls_mysql"),
        kind: DatasourceKind::Mysql,
        connection: Connection::Network {
            host: host.into(),
            port,
            database: "tlsdb".into(),
            user: user.into(),
            password: Secret::new(PASSWORD),
            options: BTreeMap::new(),
            tls,
        },
        pool_max_size: 2,
        generation: 1,
    }
}

async fn open(host: &str, port: u16, user: &str, tls: TlsSettings) -> Arc<dyn Driver> {
    driver::open(&spec(host, port, user, tls), &settings())
        .await
        .expect("the pool opens (connections are made on first use)")
}

/// `check` through a fresh pool (settings the driver cannot use are refused when it opens).
async fn check(
    host: &str,
    port: u16,
    user: &str,
    tls: TlsSettings,
) -> Result<ServerInfo, ExecError> {
    let d = driver::open(&spec(host, port, user, tls), &settings()).await?;
    let r = d.check().await;
    d.close();
    r
}

/// The connection was refused as the datasource being unavailable; its message, which must not
/// hold the password.
fn refused(what: &str, r: Result<ServerInfo, ExecError>) -> String {
    match r {
        Err(ExecError::Unavailable(m)) => {
            assert!(!m.contains(PASSWORD), "{what}: the password in {m}");
            m
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

fn assert_mentions(what: &str, message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "{what}: {p:?} not in {message:?}");
    }
}

fn query(sql: &str) -> Execute {
    Execute {
        sql: sql.into(),
        params: vec![],
        is_query: true,
        read_only: true,
        max_rows: 1_000_000,
        timeout: Duration::from_secs(30),
        may_change_session: false,
        search_path: None,
        paced_by_client: false,
    }
}

async fn rows(d: &dyn Driver, req: Execute) -> Vec<Value> {
    let Execution::Rows(mut stream) = d.execute(req).await.expect("the query runs") else {
        panic!("expected rows");
    };
    let mut out = Vec::new();
    while let Some(r) = stream.next().await {
        out.push(serde_json::from_slice(&r.expect("a row")).expect("JSON"));
    }
    out
}

#[tokio::test]
async fn each_mode_connects_or_is_refused_as_libpq_would() {
    let ca = TestCa::new("sluice mysql test CA");
    let stranger = TestCa::new("someone else's CA");
    let server = tls_server(&ca, &ca.server_cert(&["localhost"]), true);
    provision(&server).await;
    let port = server.port;
    let ca_pem = Some(ca.cert_pem.as_str());

    // verify-full with the right CA and the name the certificate holds.
    let info = check(
        "localhost",
        port,
        USER,
        tls(TlsMode::VerifyFull, ca_pem, None),
    )
    .await
    .expect("verify-full with the right CA connects");
    let report = info.tls.expect("a TLS report");
    assert!(report.version.starts_with("TLSv1."), "{report:?}");
    assert!(
        report.verified && report.chain_verified && report.host_verified,
        "{report:?}"
    );

    // verify-full where the registered host is not in the certificate.
    let m = refused(
        "verify-full, host mismatch",
        check(
            "127.0.0.1",
            port,
            USER,
            tls(TlsMode::VerifyFull, ca_pem, None),
        )
        .await,
    );
    assert_mentions(
        "verify-full, host mismatch",
        &m,
        &["does not name the host \"127.0.0.1\"; it names localhost"],
    );

    // verify-ca does not look at the name, but does at the chain.
    let info = check(
        "127.0.0.1",
        port,
        USER,
        tls(TlsMode::VerifyCa, ca_pem, None),
    )
    .await
    .expect("verify-ca with a mismatched host name connects");
    let report = info.tls.expect("a TLS report");
    assert!(
        report.verified && report.chain_verified && !report.host_verified,
        "{report:?}"
    );
    for mode in [TlsMode::VerifyCa, TlsMode::VerifyFull] {
        let what = format!("{mode} with another CA");
        let m = refused(
            &what,
            check(
                "localhost",
                port,
                USER,
                tls(mode, Some(&stranger.cert_pem), None),
            )
            .await,
        );
        assert_mentions(
            &what,
            &m,
            &[
                "certificate is not trusted",
                "a certificate of connection.tls.ca_pem",
            ],
        );
    }
    // Without ca_pem the system's roots are the trusted ones, and they did not sign it.
    let m = refused(
        "verify-full with the system's roots",
        check(
            "localhost",
            port,
            USER,
            tls(TlsMode::VerifyFull, None, None),
        )
        .await,
    );
    // (Or, on a machine without any, the settings' own error naming the field.)
    assert!(
        m.contains("does not lead to the system's trusted roots")
            || m.starts_with("connection.tls.ca_pem"),
        "{m}"
    );

    // require: encrypted, nothing verified; with a ca_pem it verifies the chain, as libpq does.
    let info = check("127.0.0.1", port, USER, tls(TlsMode::Require, None, None))
        .await
        .expect("require connects whatever the certificate");
    let report = info.tls.expect("a TLS report");
    assert!(
        report.version.starts_with("TLSv1.") && !report.verified && !report.chain_verified,
        "{report:?}"
    );
    let m = refused(
        "require with another CA's ca_pem",
        check(
            "127.0.0.1",
            port,
            USER,
            tls(TlsMode::Require, Some(&stranger.cert_pem), None),
        )
        .await,
    );
    assert_mentions(
        "require with another CA's ca_pem",
        &m,
        &["certificate is not trusted"],
    );

    // disable, against a server that takes TLS connections only.
    let m = refused(
        "disable against require_secure_transport",
        check("localhost", port, USER, TlsSettings::disabled()).await,
    );
    assert_mentions(
        "disable against require_secure_transport",
        &m,
        &[
            "Access denied",
            "require_secure_transport",
            "connection.tls.mode",
        ],
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_unless_nothing_is_verified() {
    let ca = TestCa::new("sluice mysql test CA");
    let server = tls_server(&ca, &ca.expired_server_cert(&["localhost"]), true);
    provision(&server).await;
    let ca_pem = Some(ca.cert_pem.as_str());
    for mode in [TlsMode::VerifyFull, TlsMode::VerifyCa] {
        let what = format!("{mode} with an expired certificate");
        let m = refused(
            &what,
            check("localhost", server.port, USER, tls(mode, ca_pem, None)).await,
        );
        assert_mentions(&what, &m, &["TLS certificate has expired"]);
    }
    // libpq's require checks nothing about the certificate.
    check(
        "localhost",
        server.port,
        USER,
        tls(TlsMode::Require, None, None),
    )
    .await
    .expect("require accepts an expired certificate");
}

#[tokio::test]
async fn a_server_without_tls_is_refused_under_require_and_stricter() {
    let ca = TestCa::new("sluice mysql test CA");
    let server = ThrowawayMariadb::start();
    provision(&server).await;
    for settings in [
        tls(TlsMode::Require, None, None),
        tls(TlsMode::VerifyCa, Some(&ca.cert_pem), None),
        tls(TlsMode::VerifyFull, Some(&ca.cert_pem), None),
    ] {
        let what = format!("{} against a server without TLS", settings.mode);
        let m = refused(&what, check("localhost", server.port, USER, settings).await);
        assert_mentions(&what, &m, &["does not offer TLS"]);
    }
    let info = check("localhost", server.port, USER, TlsSettings::disabled())
        .await
        .expect("disable connects to a plain server");
    assert!(info.tls.is_none(), "{info:?}");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_servers_ca() {
    let ca = TestCa::new("sluice mysql test CA");
    let stranger = TestCa::new("someone else's CA");
    let server = tls_server(&ca, &ca.server_cert(&["localhost"]), true);
    provision(&server).await;
    let ca_pem = Some(ca.cert_pem.as_str());

    let client = ca.client_cert(X509_USER);
    let d = open(
        "localhost",
        server.port,
        X509_USER,
        tls(TlsMode::VerifyFull, ca_pem, Some(&client)),
    )
    .await;
    d.check()
        .await
        .expect("the right client certificate is accepted");
    let got = rows(&*d, query("SELECT v FROM tlsdb.t WHERE id = 1")).await;
    assert_eq!(got, vec![serde_json::json!([MARKER])]);
    d.close();

    let m = refused(
        "REQUIRE X509 without a client certificate",
        check(
            "localhost",
            server.port,
            X509_USER,
            tls(TlsMode::VerifyFull, ca_pem, None),
        )
        .await,
    );
    assert_mentions(
        "REQUIRE X509 without a client certificate",
        &m,
        &["Access denied", "connection.tls.client_cert_pem"],
    );

    let foreign = stranger.client_cert(X509_USER);
    let m = refused(
        "a client certificate from another CA",
        check(
            "localhost",
            server.port,
            X509_USER,
            tls(TlsMode::VerifyFull, ca_pem, Some(&foreign)),
        )
        .await,
    );
    assert_mentions(
        "a client certificate from another CA",
        &m,
        &["refused the client certificate"],
    );
}

/// Statements of `user` running on the server right now (anything but idle).
async fn running(server: &ThrowawayMariadb, user: &str) -> Vec<String> {
    let mut admin = server.admin().await;
    let rows: Vec<String> = admin
        .exec(
            "SELECT CONCAT(COMMAND, ': ', LEFT(COALESCE(INFO, ''), 60)) \
             FROM information_schema.PROCESSLIST WHERE USER = ? AND COMMAND <> 'Sleep'",
            (user,),
        )
        .await
        .expect("read the process list");
    admin.disconnect().await.expect("disconnect");
    rows
}

async fn assert_nothing_running_soon(server: &ThrowawayMariadb, what: &str) {
    let started = Instant::now();
    loop {
        let now = running(server, USER).await;
        if now.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: still running after five seconds: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ten billion rows from cross-joined digit tables, streamed: a statement that runs until it is
/// stopped.
fn endless() -> String {
    const DIGITS: &str = "(SELECT 0 n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
         UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
         UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let tables: Vec<String> = (0..10).map(|i| format!("{DIGITS} d{i}")).collect();
    format!("SELECT d0.n FROM {}", tables.join(" CROSS JOIN "))
}

#[tokio::test]
async fn over_tls_statements_are_stopped_on_the_server_and_read_only_holds() {
    // The server takes TLS connections only, so the killer connection is TLS or nothing.
    let ca = TestCa::new("sluice mysql test CA");
    let server = tls_server(&ca, &ca.server_cert(&["localhost"]), true);
    provision(&server).await;
    let d = open(
        "localhost",
        server.port,
        USER,
        tls(TlsMode::VerifyFull, Some(&ca.cert_pem), None),
    )
    .await;

    // A statement past its timeout.
    let slow = Execute {
        timeout: Duration::from_millis(700),
        ..query("SELECT BENCHMARK(100000000000, SHA2('x', 256))")
    };
    let started = Instant::now();
    match d.execute(slow).await {
        Err(ExecError::Timeout(_)) => {}
        Ok(Execution::Rows(mut s)) => match s.next().await {
            Some(Err(ExecError::Timeout(_))) => {}
            other => panic!("the slow statement was not stopped: {other:?}"),
        },
        other => panic!("the slow statement was not stopped: {:?}", other.err()),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_nothing_running_soon(&server, "a statement past its timeout").await;

    // A statement whose reader went away: only `KILL QUERY`, from the killer connection, stops
    // it (the server's own timeout is 30 s).
    let paced = Execute {
        paced_by_client: true,
        ..query(&endless())
    };
    let Execution::Rows(mut stream) = d.execute(paced).await.expect("the endless query starts")
    else {
        panic!("expected rows");
    };
    stream
        .next()
        .await
        .expect("a first row")
        .expect("a first row");
    assert!(
        !running(&server, USER).await.is_empty(),
        "the endless statement should be running"
    );
    drop(stream);
    assert_nothing_running_soon(&server, "a statement whose reader went away").await;

    // A write through a read-only execution is refused by the server's read-only transaction.
    let write = Execute {
        is_query: false,
        ..query("INSERT INTO tlsdb.t VALUES (2, 'written')")
    };
    match d.execute(write).await {
        Err(ExecError::QueryFailed {
            sqlstate: Some(s), ..
        }) if s == "25006" => {}
        other => panic!("a write in a read-only execution: {:?}", other.err()),
    }
    let mut admin = server.admin().await;
    let n: Option<i64> = admin
        .query_first("SELECT COUNT(*) FROM tlsdb.t")
        .await
        .expect("count");
    assert_eq!(n, Some(1), "the refused write left a row");
    admin.disconnect().await.expect("disconnect");
    d.close();
}

/// Runs the capture query through a relay under `settings`; what crossed the wire.
async fn capture(server: &ThrowawayMariadb, settings: TlsSettings) -> Vec<u8> {
    let relay = Relay::start(server.port).await;
    let d = open("localhost", relay.port, USER, settings).await;
    let got = rows(
        &*d,
        query(&format!(
            "SELECT v AS {SQL_ALIAS} FROM tlsdb.t WHERE id = 1"
        )),
    )
    .await;
    assert_eq!(
        got,
        vec![serde_json::json!([MARKER])],
        "the driver got the row"
    );
    d.close();
    let (mut bytes, to_client, _) = relay.take();
    bytes.extend_from_slice(&to_client);
    bytes
}

#[tokio::test]
async fn with_tls_no_value_sql_or_user_crosses_in_clear_and_without_it_they_do() {
    // A server that takes both, so only the datasource's mode differs.
    let ca = TestCa::new("sluice mysql test CA");
    let server = tls_server(&ca, &ca.server_cert(&["localhost"]), false);
    provision(&server).await;

    let wire = capture(&server, tls(TlsMode::VerifyFull, Some(&ca.cert_pem), None)).await;
    assert!(
        wire.len() > 1000,
        "the relay saw the handshake and the query"
    );
    for secret in [MARKER, SQL_ALIAS, USER, PASSWORD] {
        assert!(
            !contains(&wire, secret),
            "{secret:?} crossed in clear under verify-full"
        );
    }

    // The same through plain TCP: the relay does see them (MySQL never sends the password
    // itself, only a hash of it mixed with the server's nonce, after the user name).
    let wire = capture(&server, TlsSettings::disabled()).await;
    for clear in [MARKER, SQL_ALIAS, USER] {
        assert!(
            contains(&wire, clear),
            "{clear:?} did not cross in clear under disable: the capture sees nothing"
        );
    }
    assert!(!contains(&wire, PASSWORD));
}
