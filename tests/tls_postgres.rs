//! TLS to PostgreSQL datasources, on real servers: throwaway clusters (tests/support/throwaway.rs)
//! with `ssl = on`, certificates the test makes (tests/support/certs.rs) and a `hostssl`-only
//! `pg_hba.conf`, reached through `driver::open` as the gateway opens its pools.
//!
//! - each `connection.tls.mode` connects, or is refused with a message naming the cause, as
//!   libpq's `sslmode` would;
//! - statements are still stopped on the server (cancel requests go over TLS too);
//! - a TCP relay inside the test records every byte between the driver and the server: with TLS
//!   neither the password nor a result value crosses in clear, and with `disable` both do (so
//!   the test can fail).
//!
//! A missing PostgreSQL installation fails the tests with what to install; nothing is skipped.
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sluice::datasource::driver::{self, Driver};
use sluice::datasource::tls::{TlsMode, TlsReport, TlsSettings};
use sluice::datasource::{
    Connection, DatasourceSpec, ExecError, Execute, Execution, RegistrySettings, Secret, ServerInfo,
};
use sluice::model::{DatasourceId, DatasourceKind};
use support::certs::{CertKey, TestCa};
use support::relay::{Relay, contains};
use support::throwaway::ThrowawayPg;

/// The service account's password: no message may contain it, and no byte on the wire under TLS.
const PASSWORD: &str = "Svc_tls_pw_8842_kv";
/// A value only the result carries (the statement selects it from a table).
const SECRET_VALUE: &str = "quokka-zebra-5501";
/// The account that logs in with its password.
const SVC: &str = "svc";
/// The account that logs in with a client certificate only (`hostssl … cert`).
const CERT_USER: &str = "cert_user";

/// TLS only: unencrypted connections are rejected outright, the certificate user needs a
/// client certificate, everyone else a password. Local (Unix socket) connections are the
/// test's own admin access.
const TLS_ONLY_HBA: &str = "\
local all all trust
hostssl all cert_user 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 0.0.0.0/0 reject
";

// ---------------------------------------------------------------------------------------------
// Servers, specs, drivers

/// A cluster with ssl on, serving `server` and trusting `client_ca_pem` for client
/// certificates, with `hba`; the accounts and the fixture are created.
async fn tls_server(server: &CertKey, client_ca_pem: &str, hba: &str) -> ThrowawayPg {
    let pg = ThrowawayPg::builder()
        .file("server.crt", &server.cert_pem)
        .file("server.key", &server.key_pem)
        .file("client_ca.crt", client_ca_pem)
        .conf("ssl = on")
        .conf("ssl_cert_file = 'server.crt'")
        .conf("ssl_key_file = 'server.key'")
        .conf("ssl_ca_file = 'client_ca.crt'")
        .hba(hba)
        .start();
    fixture(&pg).await;
    pg
}

async fn fixture(pg: &ThrowawayPg) {
    pg.admin_local()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {SVC} LOGIN PASSWORD '{PASSWORD}';
             CREATE ROLE {CERT_USER} LOGIN;
             CREATE TABLE public.vault (v text);
             INSERT INTO public.vault VALUES ('{SECRET_VALUE}');
             GRANT SELECT ON public.vault TO {SVC}, {CERT_USER};"
        ))
        .await
        .expect("create the accounts and the fixture");
}

fn tls(mode: TlsMode, ca: Option<&TestCa>) -> TlsSettings {
    TlsSettings {
        mode,
        ca_pem: ca.map(|c| c.cert_pem.clone()),
        client_cert_pem: None,
        client_key_pem: None,
    }
}

fn with_client_cert(mut settings: TlsSettings, cert: &CertKey) -> TlsSettings {
    settings.client_cert_pem = Some(cert.cert_pem.clone());
    settings.client_key_pem = Some(Secret::new(cert.key_pem.clone()));
    settings
}

fn spec(host: &str, port: u16, user: &str, tls: TlsSettings) -> DatasourceSpec {
    DatasourceSpec {
        id: DatasourceId::from("ds_tls"),
        kind: DatasourceKind::Postgres,
        connection: Connection::Network {
            host: host.to_owned(),
            port,
            database: "postgres".to_owned(),
            user: user.to_owned(),
            password: Secret::new(PASSWORD),
            options: BTreeMap::new(),
            tls,
        },
        pool_max_size: 2,
        generation: 1,
    }
}

fn settings() -> RegistrySettings {
    RegistrySettings {
        pool_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..RegistrySettings::default()
    }
}

async fn open(spec: &DatasourceSpec) -> Arc<dyn Driver> {
    match driver::open(spec, &settings()).await {
        Ok(d) => d,
        Err(e) => panic!("the pool does not open: {e:?}"),
    }
}

/// Opens a pool and checks the server through it.
async fn check(spec: &DatasourceSpec) -> Result<ServerInfo, ExecError> {
    let d = driver::open(spec, &settings()).await?;
    let info = d.check().await;
    d.close();
    info
}

fn query(sql: &str) -> Execute {
    Execute {
        sql: sql.to_owned(),
        params: Vec::new(),
        is_query: true,
        read_only: true,
        max_rows: 1000,
        timeout: Duration::from_secs(30),
        may_change_session: false,
        search_path: Some("public".to_owned()),
        paced_by_client: false,
    }
}

/// Every row of a statement that must succeed, and whether it was truncated.
async fn rows(d: &dyn Driver, req: Execute) -> (Vec<Value>, bool) {
    let sql = req.sql.clone();
    let mut s = match d.execute(req).await {
        Ok(Execution::Rows(s)) => s,
        Ok(Execution::Affected { .. }) => panic!("{sql}: expected rows"),
        Err(e) => panic!("{sql}: {e:?}"),
    };
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        let bytes = r.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        out.push(serde_json::from_slice(&bytes).expect("each row is JSON"));
    }
    (out, s.truncated())
}

/// The refusal of `result`: `Unavailable`, its message holding every one of `expect` and no
/// secret. Returns the message.
fn refused(result: Result<ServerInfo, ExecError>, expect: &[&str], case: &str) -> String {
    let message = match result {
        Err(ExecError::Unavailable(m)) => m,
        other => panic!("{case}: expected Unavailable, got {other:?}"),
    };
    for fragment in expect {
        assert!(
            message.contains(fragment),
            "{case}: the message should say {fragment:?}: {message}"
        );
    }
    for secret in [PASSWORD, "PRIVATE KEY", "BEGIN CERTIFICATE"] {
        assert!(
            !message.contains(secret),
            "{case}: the message leaks {secret:?}: {message}"
        );
    }
    message
}

fn report(info: Result<ServerInfo, ExecError>, case: &str) -> Option<TlsReport> {
    match info {
        Ok(info) => {
            assert!(
                info.server_version.starts_with("PostgreSQL"),
                "{case}: {}",
                info.server_version
            );
            info.tls
        }
        Err(e) => panic!("{case}: expected to connect, got {e:?}"),
    }
}

fn tls13(verified: bool, chain: bool, host: bool) -> Option<TlsReport> {
    Some(TlsReport {
        version: "TLSv1.3".to_owned(),
        verified,
        chain_verified: chain,
        host_verified: host,
    })
}

// ---------------------------------------------------------------------------------------------
// Modes

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_reports_tls13_and_runs_statements() {
    let ca = TestCa::new("sluice test CA");
    let pg = tls_server(&ca.server_cert(&["localhost"]), &ca.cert_pem, TLS_ONLY_HBA).await;
    let spec = spec(
        "localhost",
        pg.port,
        SVC,
        tls(TlsMode::VerifyFull, Some(&ca)),
    );
    let d = open(&spec).await;
    let info = report(d.check().await, "verify-full");
    assert_eq!(info, tls13(true, true, true));
    let (values, _) = rows(&*d, query("SELECT v FROM public.vault")).await;
    assert_eq!(values, vec![json!([SECRET_VALUE])]);
    // The server sees the statement's connection encrypted too.
    let (ssl, _) = rows(
        &*d,
        query(
            "SELECT s.ssl, s.version FROM pg_catalog.pg_stat_ssl s \
             WHERE s.pid = pg_catalog.pg_backend_pid()",
        ),
    )
    .await;
    assert_eq!(ssl, vec![json!([true, "TLSv1.3"])]);
    d.close();
}

#[tokio::test]
async fn each_mode_connects_or_is_refused_as_libpq_would() {
    let ca = TestCa::new("sluice test CA");
    let stranger = TestCa::new("an unrelated CA");
    // The certificate names `localhost` only: registered as 127.0.0.1 the host does not match.
    let pg = tls_server(&ca.server_cert(&["localhost"]), &ca.cert_pem, TLS_ONLY_HBA).await;
    let port = pg.port;
    let s = |host: &str, mode: TlsMode, ca: Option<&TestCa>| spec(host, port, SVC, tls(mode, ca));

    use TlsMode::*;
    let accepted = [
        (
            "verify-full, right CA, right name",
            s("localhost", VerifyFull, Some(&ca)),
            tls13(true, true, true),
        ),
        (
            "verify-ca, right CA, other name",
            s("127.0.0.1", VerifyCa, Some(&ca)),
            tls13(true, true, false),
        ),
        (
            "require, no CA",
            s("127.0.0.1", Require, None),
            tls13(false, false, false),
        ),
        // libpq: with a root certificate, require verifies the chain as verify-ca does.
        (
            "require, right CA",
            s("127.0.0.1", Require, Some(&ca)),
            tls13(true, true, false),
        ),
    ];
    for (case, spec, expected) in accepted {
        assert_eq!(report(check(&spec).await, case), expected, "{case}");
    }

    let refusals: [(&str, DatasourceSpec, &[&str]); 6] = [
        (
            "verify-full, right CA, other name",
            s("127.0.0.1", VerifyFull, Some(&ca)),
            &[
                "does not name the host \"127.0.0.1\"",
                "localhost",
                "verify-ca",
            ],
        ),
        (
            "verify-full, wrong CA",
            s("localhost", VerifyFull, Some(&stranger)),
            &["not trusted", "connection.tls.ca_pem"],
        ),
        (
            "verify-ca, wrong CA",
            s("localhost", VerifyCa, Some(&stranger)),
            &["not trusted", "connection.tls.ca_pem"],
        ),
        (
            "require, wrong CA",
            s("localhost", Require, Some(&stranger)),
            &["not trusted"],
        ),
        // Without ca_pem the system's roots are used, and they do not know the test's CA.
        (
            "verify-full, system roots",
            s("localhost", VerifyFull, None),
            &["ca_pem"],
        ),
        (
            "disable against a TLS-only server",
            s("localhost", Disable, None),
            &[
                "only over TLS",
                "connection.tls.mode is disable",
                "verify-full",
            ],
        ),
    ];
    for (case, spec, expect) in refusals {
        refused(check(&spec).await, expect, case);
    }
}

#[tokio::test]
async fn an_expired_certificate_is_refused_wherever_the_chain_is_verified() {
    let ca = TestCa::new("sluice test CA");
    let pg = tls_server(
        &ca.expired_server_cert(&["localhost"]),
        &ca.cert_pem,
        TLS_ONLY_HBA,
    )
    .await;
    let s = |mode: TlsMode, ca: Option<&TestCa>| spec("localhost", pg.port, SVC, tls(mode, ca));
    refused(
        check(&s(TlsMode::VerifyFull, Some(&ca))).await,
        &["expired", "2001-01-01"],
        "verify-full",
    );
    refused(
        check(&s(TlsMode::VerifyCa, Some(&ca))).await,
        &["expired"],
        "verify-ca",
    );
    // libpq's require looks at no certificate (without a root certificate), expired or not.
    assert_eq!(
        report(check(&s(TlsMode::Require, None)).await, "require"),
        tls13(false, false, false)
    );
}

#[tokio::test]
async fn a_server_without_tls_is_refused_under_every_mode_but_disable() {
    let pg = ThrowawayPg::builder()
        .hba("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        .start();
    fixture(&pg).await;
    let ca = TestCa::new("sluice test CA");
    for (mode, ca) in [
        (TlsMode::Require, None),
        (TlsMode::VerifyCa, Some(&ca)),
        (TlsMode::VerifyFull, Some(&ca)),
    ] {
        refused(
            check(&spec("localhost", pg.port, SVC, tls(mode, ca))).await,
            &["does not offer TLS", mode.as_str()],
            mode.as_str(),
        );
    }
    // The same account reaches the same server in clear, and check says there is no TLS.
    let plain = spec("localhost", pg.port, SVC, TlsSettings::disabled());
    assert_eq!(report(check(&plain).await, "disable"), None);
}

#[tokio::test]
async fn mutual_tls_lets_the_certificate_user_in_with_a_client_certificate_of_the_trusted_ca_only()
{
    let ca = TestCa::new("sluice test CA");
    let stranger = TestCa::new("an unrelated CA");
    let pg = tls_server(&ca.server_cert(&["localhost"]), &ca.cert_pem, TLS_ONLY_HBA).await;
    let s = |client: Option<&CertKey>| {
        let mut settings = tls(TlsMode::VerifyFull, Some(&ca));
        if let Some(cert) = client {
            settings = with_client_cert(settings, cert);
        }
        spec("localhost", pg.port, CERT_USER, settings)
    };

    let right = ca.client_cert(CERT_USER);
    let d = open(&s(Some(&right))).await;
    assert_eq!(
        report(d.check().await, "right client certificate"),
        tls13(true, true, true)
    );
    let (values, _) = rows(&*d, query("SELECT v FROM public.vault")).await;
    assert_eq!(values, vec![json!([SECRET_VALUE])]);
    let (user, _) = rows(&*d, query("SELECT current_user::text")).await;
    assert_eq!(user, vec![json!([CERT_USER])]);
    d.close();

    refused(
        check(&s(None)).await,
        &["requires a client certificate", "client_cert_pem"],
        "no client certificate",
    );
    refused(
        check(&s(Some(&stranger.client_cert(CERT_USER)))).await,
        &["refused the client certificate"],
        "a client certificate of another CA",
    );
    refused(
        check(&s(Some(&ca.client_cert("someone_else")))).await,
        &["common name"],
        "a client certificate for another user",
    );
}

#[tokio::test]
async fn tls_settings_that_cannot_be_used_are_refused_when_the_pool_opens_naming_the_field() {
    let ca = TestCa::new("sluice test CA");
    let client = ca.client_cert(CERT_USER);
    let base = with_client_cert(tls(TlsMode::VerifyFull, Some(&ca)), &client);
    let cases: [(&str, TlsSettings, &str); 4] = [
        (
            "a CA that is not PEM",
            TlsSettings {
                ca_pem: Some("TOPSECRET not a certificate".into()),
                ..base.clone()
            },
            "connection.tls.ca_pem",
        ),
        (
            "a client certificate without its key",
            TlsSettings {
                client_key_pem: None,
                ..base.clone()
            },
            "connection.tls.client_key_pem",
        ),
        (
            "a key that is not PEM",
            TlsSettings {
                client_key_pem: Some(Secret::new("TOPSECRET not a key")),
                ..base.clone()
            },
            "connection.tls.client_key_pem",
        ),
        (
            "a key of another certificate",
            TlsSettings {
                client_key_pem: Some(Secret::new(ca.client_cert("x").key_pem)),
                ..base.clone()
            },
            "connection.tls.client_key_pem",
        ),
    ];
    for (case, tls_settings, field) in cases {
        // No server is needed: the port is never reached.
        let spec = spec("localhost", 9, SVC, tls_settings);
        let message = match driver::open(&spec, &settings()).await {
            Err(ExecError::Unavailable(m)) => m,
            Err(e) => panic!("{case}: expected Unavailable, got {e:?}"),
            Ok(_) => panic!("{case}: the pool opened"),
        };
        assert!(message.starts_with(field), "{case}: {message}");
        assert!(
            !message.contains("TOPSECRET") && !message.contains("PRIVATE KEY"),
            "{case}: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Cancel requests over TLS

/// What the service account runs right now (not idle), and whether each of those backends is
/// encrypted.
async fn running(admin: &tokio_postgres::Client) -> Vec<(String, bool)> {
    admin
        .query(
            "SELECT coalesce(a.query, ''), coalesce(s.ssl, false) FROM pg_stat_activity a \
             LEFT JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.usename = $1 AND a.state IS DISTINCT FROM 'idle'",
            &[&SVC],
        )
        .await
        .expect("read pg_stat_activity")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until the service account runs nothing; fails after `limit`.
async fn stopped_within(admin: &tokio_postgres::Client, limit: Duration, case: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let now = running(admin).await;
        if now.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: still running on the server after {limit:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn statements_are_stopped_on_the_server_over_tls() {
    let ca = TestCa::new("sluice test CA");
    let pg = tls_server(&ca.server_cert(&["localhost"]), &ca.cert_pem, TLS_ONLY_HBA).await;
    let admin = pg.admin_local().await;
    let mut ds = spec(
        "localhost",
        pg.port,
        SVC,
        tls(TlsMode::VerifyFull, Some(&ca)),
    );
    ds.pool_max_size = 1;
    let d = open(&ds).await;

    // Past its timeout: the statement ends with Timeout and nothing of it is left running.
    let slow = Execute {
        timeout: Duration::from_secs(1),
        ..query("SELECT 1 FROM pg_sleep(30)")
    };
    match d.execute(slow).await {
        Err(ExecError::Timeout(_)) => {}
        Err(e) => panic!("a statement past its timeout: expected Timeout, got {e:?}"),
        Ok(Execution::Rows(mut s)) => match s.next().await {
            Some(Err(ExecError::Timeout(_))) => {}
            other => panic!("a statement past its timeout: expected Timeout, got {other:?}"),
        },
        Ok(Execution::Affected { .. }) => panic!("expected rows"),
    }
    stopped_within(&admin, Duration::from_secs(5), "past its timeout").await;

    // The reader goes away mid-result, long before the timeout. The server would sleep on for
    // 30 s (it does not notice a closed socket while it sleeps): only the cancel request, sent
    // over TLS to a TLS-only server, stops it in time.
    let rows_then_slow = Execute {
        timeout: Duration::from_secs(60),
        paced_by_client: true,
        ..query(
            "SELECT g, repeat('x', 20000) AS pad, (CASE WHEN g > 8 THEN pg_sleep(30) END) IS NULL \
             FROM generate_series(1, 9) g",
        )
    };
    let mut s = match d.execute(rows_then_slow).await {
        Ok(Execution::Rows(s)) => s,
        Ok(Execution::Affected { .. }) => panic!("expected rows"),
        Err(e) => panic!("rows then a sleep: {e:?}"),
    };
    for _ in 0..2 {
        s.next().await.expect("a row").expect("a row, not an error");
    }
    let now = running(&admin).await;
    assert!(
        !now.is_empty() && now.iter().all(|(_, ssl)| *ssl),
        "the statement runs on an encrypted connection: {now:?}"
    );
    drop(s);
    stopped_within(&admin, Duration::from_secs(5), "the reader went away").await;

    // Cut at max_rows: the driver cancels the rest (confirmed, over TLS) and reads what is
    // left, so the same connection serves the next statement; had the cancel failed, the
    // connection would have been thrown away and the next statement would get a new backend.
    let pid = |rows: Vec<Value>| rows[0][0].as_i64().expect("a pid");
    let before = pid(rows(&*d, query("SELECT pg_backend_pid()")).await.0);
    let endless = Execute {
        max_rows: 5,
        ..query("SELECT generate_series(1, 2000000000) AS n")
    };
    let (cut, truncated) = rows(&*d, endless).await;
    assert_eq!(cut.len(), 5);
    assert!(truncated, "the result reports it was cut");
    let after = pid(rows(&*d, query("SELECT pg_backend_pid()")).await.0);
    assert_eq!(
        before, after,
        "the connection was kept after a cancel over TLS"
    );
    stopped_within(&admin, Duration::from_secs(5), "cut at max_rows").await;
    d.close();
}

// ---------------------------------------------------------------------------------------------
// What crosses the wire

#[tokio::test]
async fn with_tls_neither_the_password_nor_a_result_value_crosses_in_clear_and_with_disable_both_do()
 {
    let ca = TestCa::new("sluice test CA");
    // `password` authentication sends the password itself (SCRAM would not, even in clear), so
    // a plain connection must show it: the comparison below can fail.
    let hba = "local all all trust\nhost all all 127.0.0.1/32 password\n";
    let pg = tls_server(&ca.server_cert(&["localhost"]), &ca.cert_pem, hba).await;
    let relay = Relay::start(pg.port).await;

    // The value, then a result cut at max_rows: the driver sends a cancel request on a
    // connection of its own.
    let run = async |settings: TlsSettings| {
        let d = open(&spec("localhost", relay.port, SVC, settings)).await;
        let (values, _) = rows(&*d, query("SELECT v FROM public.vault")).await;
        assert_eq!(values, vec![json!([SECRET_VALUE])]);
        let endless = Execute {
            max_rows: 5,
            ..query("SELECT generate_series(1, 2000000000) AS n")
        };
        let (cut, truncated) = rows(&*d, endless).await;
        assert!(cut.len() == 5 && truncated);
        d.close();
        drop(d);
        relay.take()
    };
    // Length and code of an SSLRequest (80877103) and of a CancelRequest (80877102).
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    const CANCEL_REQUEST: [u8; 8] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];

    let (up, down, openings) = run(tls(TlsMode::VerifyFull, Some(&ca))).await;
    assert!(
        up.len() > 100 && down.len() > 100,
        "the relay saw the encrypted session ({} bytes up, {} down)",
        up.len(),
        down.len()
    );
    assert!(
        !contains(&up, PASSWORD),
        "under verify-full the password crossed in clear"
    );
    assert!(
        !contains(&down, SECRET_VALUE) && !contains(&up, SECRET_VALUE),
        "under verify-full a result value crossed in clear"
    );
    // The session and the cancel request: both asked for TLS before anything else.
    assert!(
        openings.len() >= 2 && openings.iter().all(|o| *o == SSL_REQUEST),
        "under verify-full every connection, the cancel request's too, starts TLS: {openings:?}"
    );

    let (up, down, openings) = run(TlsSettings::disabled()).await;
    assert!(
        contains(&up, PASSWORD),
        "under disable the password is on the wire (the capture works)"
    );
    assert!(
        contains(&down, SECRET_VALUE),
        "under disable the result value is on the wire (the capture works)"
    );
    assert!(
        openings.contains(&CANCEL_REQUEST) && !openings.contains(&SSL_REQUEST),
        "under disable the cancel request is sent in clear (the capture sees it): {openings:?}"
    );
}
