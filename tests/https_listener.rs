//! HTTPS on the listener, driven by real clients against the real binary: a throwaway CA and
//! server certificates made with rcgen, `tls.cert_file`/`tls.key_file` set through the
//! environment, then reqwest (rustls, trusting only the test CA) and curl over HTTP/2 and
//! HTTP/1.1 through ALPN; a certificate swapped on disk and SIGHUP (new connections get it, open
//! ones keep working); bad files at startup and at reload; the handshake and first-bytes
//! deadlines; the SIGTERM drain over TLS; and plain HTTP when no file is set.
mod support;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::db::PgTestDb;
use support::gateway::pg_server;
use support::throwaway::SluiceProcess;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

// ---------------------------------------------------------------------------------------------
// Certificates

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with this serial.
    fn leaf(&self, cn: &str, serial: &[u8]) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// A line of the key's base64, to check no message ever quotes it.
    fn key_line(&self) -> String {
        self.key_pem.lines().nth(1).expect("key body").to_owned()
    }
}

/// Where the gateway reads its certificate and key.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        Files {
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
        }
    }

    /// Writes both files and renames them into place, as certificate tools do.
    fn install(&self, leaf: &Leaf) {
        write_atomically(&self.cert, &leaf.cert_pem);
        write_atomically(&self.key, &leaf.key_pem);
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SLUICE_TLS__CERT_FILE", self.cert.display().to_string()),
            ("SLUICE_TLS__KEY_FILE", self.key.display().to_string()),
        ]
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

// ---------------------------------------------------------------------------------------------
// The gateway and its clients

/// `sluice serve` with the certificate files (if any) and extra variables.
fn start(data_dir: &Path, files: Option<&Files>, extra: &[(&str, &str)]) -> SluiceProcess {
    let mut env: Vec<(&str, String)> = files.map(Files::env).unwrap_or_default();
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    SluiceProcess::start(BIN, data_dir, &env)
}

fn port(p: &SluiceProcess) -> u16 {
    p.base
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no port in {}", p.base))
}

fn https(p: &SluiceProcess) -> String {
    format!("https://localhost:{}", port(p))
}

/// A reqwest client (rustls) that trusts only `ca_pem` and reports the peer certificate.
fn client(ca_pem: &str, http1_only: bool) -> reqwest::Client {
    client_with(&[ca_pem], http1_only, true)
}

/// `client` trusting several CAs; not `pooled`: a new connection for every request (the TLS
/// session may still be resumed from the previous one).
fn client_with(cas: &[&str], http1_only: bool, pooled: bool) -> reqwest::Client {
    let cas = cas
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).expect("ca pem"));
    let mut builder = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only(cas)
        .pool_max_idle_per_host(if pooled { usize::MAX } else { 0 })
        .tls_info(true)
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)))
        .timeout(Duration::from_secs(10));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("client")
}

/// GET `url`: the status, the HTTP version and the certificate the server presented.
async fn get(c: &reqwest::Client, url: &str) -> (u16, reqwest::Version, Vec<u8>) {
    let res = c
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let peer = res
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("the server presented no certificate");
    (res.status().as_u16(), res.version(), peer)
}

/// The first log line whose message starts with `message` and that `matches`, waiting for it.
fn wait_for_log(p: &SluiceProcess, message: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = p
            .logs
            .lock()
            .expect("logs")
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                    && matches(v)
            });
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {message:?} within 10 s:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A company made before the server starts; the owner's token.
fn company(data_dir: &Path) -> String {
    let config = sluice::config::Config {
        data_dir: data_dir.to_owned(),
        ..Default::default()
    };
    sluice::cli::create_company(&config, "Acme", "owner@acme.example").expect("create company")
}

/// Runs curl against the gateway: `<status> <http version>`.
fn curl(ca: &Path, port: u16, protocol_flag: &str, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}", protocol_flag])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl is not installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl {protocol_flag} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the server closes `s` (end of stream or reset): true if it did within `limit`.
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A TLS alert or an HTTP error answer may come first; the close follows.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_http2_and_http1_through_alpn_to_reqwest_and_curl() {
    let ca = Ca::new("Sluice Test CA one");
    let leaf = ca.leaf("sluice-one", &[0x11]);
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Files::new(dir.path());
    files.install(&leaf);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("ca file");
    let data = dir.path().join("data");
    let token = company(&data);
    let p = start(&data, Some(&files), &[]);

    let line = wait_for_log(&p, "sluice listening", |_| true);
    assert_eq!(line["scheme"], "https", "{line}");
    assert_eq!(line["cert_serial"], "11", "{line}");
    assert_eq!(line["cert_subject"], "CN=sluice-one", "{line}");
    assert_eq!(line["cert_dns_names"], "localhost", "{line}");
    let base = https(&p);

    let h2 = client(&ca.pem, false);
    let (status, version, peer) = get(&h2, &format!("{base}/healthz")).await;
    assert_eq!(
        (status, version),
        (200, reqwest::Version::HTTP_2),
        "ALPN h2"
    );
    assert!(peer == leaf.der, "the server presented another certificate");
    let me: Value = h2
        .get(format!("{base}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /v1/me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["company"]["name"], "Acme", "{me}");
    let unauthenticated = h2
        .get(format!("{base}/v1/me"))
        .send()
        .await
        .expect("GET /v1/me");
    assert_eq!(unauthenticated.status(), 401);

    let h1 = client(&ca.pem, true);
    let (status, version, _) = get(&h1, &format!("{base}/healthz")).await;
    assert_eq!((status, version), (200, reqwest::Version::HTTP_11));

    let port = port(&p);
    let (ca_for_curl, port_for_curl) = (ca_file.clone(), port);
    let curls = tokio::task::spawn_blocking(move || {
        (
            curl(&ca_for_curl, port_for_curl, "--http2", "/healthz"),
            curl(&ca_for_curl, port_for_curl, "--http1.1", "/readyz"),
        )
    })
    .await
    .expect("curl");
    assert_eq!(curls.0, "200 2");
    assert_eq!(curls.1, "200 1.1");

    // TLS only: plain HTTP on the port is no answer, and a client that does not trust the CA
    // refuses the certificate.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP was answered: {:?}",
        plain.map(|r| r.status())
    );
    let stranger = client(&Ca::new("Another CA").pem, false)
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(stranger.is_err(), "a certificate from an untrusted CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_gives_new_connections_the_new_certificate_and_open_connections_keep_working() {
    let (ca1, ca2) = (Ca::new("Sluice Test CA old"), Ca::new("Sluice Test CA new"));
    let (old, new) = (ca1.leaf("old", &[0x21]), ca2.leaf("new", &[0x22]));
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Files::new(dir.path());
    files.install(&old);
    let p = start(&dir.path().join("data"), Some(&files), &[]);
    let base = https(&p);
    let url = format!("{base}/healthz");

    // Two connections opened before the reload, each trusting only the old CA.
    let open_h2 = client(&ca1.pem, false);
    let open_h1 = client(&ca1.pem, true);
    let (s, v, peer) = get(&open_h2, &url).await;
    assert_eq!((s, v), (200, reqwest::Version::HTTP_2));
    assert!(peer == old.der);
    let (s, v, peer) = get(&open_h1, &url).await;
    assert_eq!((s, v), (200, reqwest::Version::HTTP_11));
    assert!(peer == old.der);
    // A connection per request, trusting both CAs, with a TLS session to resume.
    let resumer = client_with(&[&ca1.pem, &ca2.pem], true, false);
    let (s, _, peer) = get(&resumer, &url).await;
    assert_eq!(s, 200);
    assert!(peer == old.der);

    files.install(&new);
    p.signal("HUP");
    let line = wait_for_log(&p, "reloaded the TLS certificate", |_| true);
    assert_eq!(line["cert_serial"], "22", "{line}");

    // New connections get the new certificate...
    let (s, _, peer) = get(&client(&ca2.pem, false), &url).await;
    assert_eq!(s, 200);
    assert!(
        peer == new.der,
        "a new connection still got the old certificate"
    );
    // Resuming the session made with the old certificate would keep that certificate's
    // identity: the reload starts a new session cache, so this is a full handshake.
    let (s, _, peer) = get(&resumer, &url).await;
    assert_eq!(s, 200);
    assert!(
        peer == new.der,
        "a resumed TLS session kept the old certificate"
    );
    let refused = client(&ca1.pem, true).get(&url).send().await;
    assert!(
        refused.is_err(),
        "a new connection trusting only the old CA was accepted"
    );

    // ...and the connections opened before carry on. Their clients trust only the old CA, so
    // had either connection been dropped, its replacement would have failed as just above.
    for (c, version) in [
        (&open_h2, reqwest::Version::HTTP_2),
        (&open_h1, reqwest::Version::HTTP_11),
    ] {
        let (s, v, peer) = get(c, &url).await;
        assert_eq!((s, v), (200, version), "{}", p.log_text());
        assert!(peer == old.der);
    }
}

/// `SLUICE_*` variables for a run.
type Env = Vec<(&'static str, String)>;

/// Runs `sluice serve` expected to refuse to start; its stderr.
fn refused_startup(data_dir: &Path, env: &[(&str, String)]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("SLUICE_LOG", "info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err);
            panic!("sluice started with {env:?}:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(!status.success(), "exit {status} with {env:?}:\n{err}");
    assert!(!err.contains("sluice listening"), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_fails_startup_naming_the_field_and_a_bad_reload_keeps_the_certificate() {
    let ca = Ca::new("Sluice Test CA bad files");
    let good = ca.leaf("good", &[0x31]);
    let stranger = ca.leaf("stranger", &[0x32]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let files = Files::new(dir.path());
    files.install(&good);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    let stranger_key = dir.path().join("stranger-key.pem");
    std::fs::write(&stranger_key, &stranger.key_pem).expect("write");

    let cert = || files.cert.display().to_string();
    let key = || files.key.display().to_string();
    let cases: Vec<(Env, Vec<&str>)> = vec![
        (
            vec![
                ("SLUICE_TLS__CERT_FILE", garbage.display().to_string()),
                ("SLUICE_TLS__KEY_FILE", key()),
            ],
            vec!["tls.cert_file", "garbage.pem", "no certificate"],
        ),
        (
            vec![
                ("SLUICE_TLS__CERT_FILE", cert()),
                (
                    "SLUICE_TLS__KEY_FILE",
                    dir.path().join("absent.pem").display().to_string(),
                ),
            ],
            vec!["tls.key_file", "absent.pem", "cannot read"],
        ),
        (
            vec![
                ("SLUICE_TLS__CERT_FILE", cert()),
                ("SLUICE_TLS__KEY_FILE", stranger_key.display().to_string()),
            ],
            vec!["tls.key_file", "does not belong"],
        ),
        (
            vec![("SLUICE_TLS__CERT_FILE", cert())],
            vec!["tls.key_file is not"],
        ),
    ];
    for (env, wanted) in cases {
        let data = data.clone();
        let shown = format!("{env:?}");
        let err = tokio::task::spawn_blocking(move || refused_startup(&data, &env))
            .await
            .expect("startup");
        for w in wanted {
            assert!(err.contains(w), "{shown}: no {w:?} in:\n{err}");
        }
        assert!(!err.contains(&stranger.key_line()) && !err.contains(&good.key_line()));
    }

    // Started with the good pair, then two bad reloads: nothing changes for new connections.
    let p = start(&data, Some(&files), &[]);
    let url = format!("{}/healthz", https(&p));
    write_atomically(&files.cert, "not a certificate either\n");
    p.signal("HUP");
    let line = wait_for_log(&p, "could not reload the TLS certificate", |_| true);
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("tls.cert_file")),
        "{line}"
    );
    let (s, _, peer) = get(&client(&ca.pem, false), &url).await;
    assert_eq!(s, 200);
    assert!(peer == good.der, "a failed reload changed the certificate");

    write_atomically(&files.cert, &good.cert_pem);
    write_atomically(&files.key, &stranger.key_pem);
    p.signal("HUP");
    let line = wait_for_log(&p, "could not reload the TLS certificate", |l| {
        l["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("tls.key_file"))
    });
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not belong")),
        "{line}"
    );
    let (s, _, peer) = get(&client(&ca.pem, true), &url).await;
    assert_eq!(s, 200);
    assert!(peer == good.der);
    let logs = p.log_text();
    assert!(!logs.contains(&stranger.key_line()) && !logs.contains(&good.key_line()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_a_client_hello_is_dropped_after_the_handshake_timeout() {
    let ca = Ca::new("Sluice Test CA deadlines");
    let leaf = ca.leaf("deadlines", &[0x41]);
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Files::new(dir.path());
    files.install(&leaf);
    let p = start(
        &dir.path().join("data"),
        Some(&files),
        &[
            ("SLUICE_TLS__HANDSHAKE_TIMEOUT_MS", "500"),
            ("SLUICE_LIMITS__HEADER_READ_TIMEOUT_MS", "800"),
        ],
    );
    let line = wait_for_log(&p, "sluice listening", |_| true);
    assert_eq!(line["handshake_timeout_ms"], 500, "{line}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port(&p)));

    // TCP open, no ClientHello.
    let mut silent = std::net::TcpStream::connect(addr).expect("connect");
    let closed =
        tokio::task::spawn_blocking(move || closed_within(&mut silent, Duration::from_secs(10)))
            .await
            .expect("wait");
    assert!(
        closed,
        "a connection without a handshake was still open after 10 s"
    );

    // Handshake done, then silence: the header read deadline closes it.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("ca der"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .connect("localhost".try_into().expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a TLS connection that sent no request was still open after 10 s: {read:?}"
    );

    // The listener itself is fine.
    let (s, _, _) = get(&client(&ca.pem, false), &format!("{}/healthz", https(&p))).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_https_requests_and_a_pending_handshake_does_not_hold_it_up() {
    let db = PgTestDb::create().await;
    let role = db.create_role("tls", "tls_pw").await;
    let ca = Ca::new("Sluice Test CA drain");
    let leaf = ca.leaf("drain", &[0x51]);
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Files::new(dir.path());
    files.install(&leaf);
    let data = dir.path().join("data");
    let token = company(&data);
    // A handshake may take a minute, the drain at most 30 s (the default): only cutting the
    // pending handshake at SIGTERM lets the process exit at once.
    let mut p = start(
        &data,
        Some(&files),
        &[("SLUICE_TLS__HANDSHAKE_TIMEOUT_MS", "60000")],
    );
    let base = https(&p);
    let c = client(&ca.pem, false);
    let call = |method: reqwest::Method, path: &str, body: Value| {
        c.request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let ok = |res: reqwest::Result<reqwest::Response>| {
        let res = res.expect("request");
        assert!(res.status().is_success(), "{}", res.status());
        res
    };
    ok(call(
        reqwest::Method::PATCH,
        "/v1/integrations/postgres",
        json!({"enabled": true}),
    )
    .await);
    let (host, pg_port) = pg_server();
    let ds: Value = ok(call(
        reqwest::Method::POST,
        "/v1/datasources",
        json!({
            "name": "pg", "kind": "postgres",
            "connection": {"host": host, "port": pg_port, "database": db.name,
                           "user": role, "password": "tls_pw",
                           "tls": {"mode": "disable"}},
            "policy": {"extra_functions": ["pg_sleep"]},
        }),
    )
    .await)
    .json()
    .await
    .expect("json");
    let app: Value = ok(call(
        reqwest::Method::POST,
        "/v1/apps",
        json!({"name": "ops", "datasource_ids": [ds["id"]]}),
    )
    .await)
    .json()
    .await
    .expect("json");

    let pending = std::net::TcpStream::connect(("127.0.0.1", port(&p))).expect("connect");
    let query = call(
        reqwest::Method::POST,
        &format!("/v1/apps/{}/query", app["id"].as_str().expect("app id")),
        json!({"sql": "SELECT pg_sleep(1.5) AS slept, 42 AS answer"}),
    );
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        p.signal("TERM");
    };
    let (res, ()) = tokio::join!(query, terminate);
    let res = res.expect("the in-flight query was cut off");
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["rows"][0][1], 42, "{body}");
    let exit = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(10)));
    let exit = exit.unwrap_or_else(|| panic!("no exit 10 s after SIGTERM\n{}", p.log_text()));
    assert!(exit.success(), "exit {exit}\n{}", p.log_text());
    drop(pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_files_the_listener_is_plain_http_and_drops_silent_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start(
        &dir.path().join("data"),
        None,
        &[("SLUICE_LIMITS__HEADER_READ_TIMEOUT_MS", "500")],
    );
    let line = wait_for_log(&p, "sluice listening", |_| true);
    assert_eq!(line["scheme"], "http", "{line}");
    let res = reqwest::get(format!("{}/healthz", p.base))
        .await
        .expect("plain GET");
    assert_eq!(
        (res.status().as_u16(), res.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // Connected and silent, or stopped part-way into the HTTP/2 preface: hyper's header timeout
    // cannot start before the protocol is known, the first-bytes deadline closes them.
    let addr = SocketAddr::from(([127, 0, 0, 1], port(&p)));
    let closed = tokio::task::spawn_blocking(move || {
        let mut silent = std::net::TcpStream::connect(addr).expect("connect");
        let mut preface = std::net::TcpStream::connect(addr).expect("connect");
        preface.write_all(b"PRI * HTTP/2.0\r\n").expect("write");
        (
            closed_within(&mut silent, Duration::from_secs(10)),
            closed_within(&mut preface, Duration::from_secs(10)),
        )
    })
    .await
    .expect("wait");
    assert_eq!(
        closed,
        (true, true),
        "(silent, part of the preface) still open after 10 s"
    );
}
