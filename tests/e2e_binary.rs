//! End to end: the real `sluice` binary on a random port with a fresh data directory, driven only
//! over HTTP and the CLI as a real client would, then restarted on the same data directory.

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const DS_PASSWORD: &str = "pw-e2e-Zq8Lw3Xr";

struct Server {
    child: Child,
    base: String,
    /// Every log line the server wrote to stderr so far.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `sluice serve` on port 0 and reads the bound address from its startup log line.
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log sink").push(line.clone());
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "sluice listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                // Keep draining so the child never blocks on a full pipe.
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sluice did not report its listening address");
        Server {
            child,
            base: format!("http://{addr}"),
            logs,
        }
    }

    /// SIGTERM and wait: a graceful stop must exit 0.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "sluice exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "sluice did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli_company_create(data_dir: &Path, name: &str, email: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "company",
            "create",
            name,
            "--owner-email",
            email,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .expect("run sluice company create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    stdout
        .lines()
        .last()
        .expect("a last line with the token")
        .trim()
        .to_owned()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        support::client::call(&self.http, &self.base, token, method, path, body).await
    }

    async fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        support::client::ok(&self.http, &self.base, token, method, path, body).await
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Every file under `dir`, read whole (the store, its WAL, the key file).
fn any_file_contains(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read data dir") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            hits.extend(any_file_contains(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

#[tokio::test]
async fn a_company_is_set_up_shared_and_audited_over_http_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let owner = cli_company_create(&data, "Acme", "owner@acme.test");
    let server = Server::start(&data);
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };

    // A client's request id comes back on the answer and is on the request's log line.
    let res = c
        .http
        .get(format!("{}/v1/me", c.base))
        .bearer_auth(&owner)
        .header("x-request-id", "e2e-req-42")
        .send()
        .await
        .expect("request");
    assert_eq!(res.headers()["x-request-id"], "e2e-req-42");
    let res = c
        .http
        .get(format!("{}/healthz", c.base))
        .send()
        .await
        .expect("request");
    let minted = res.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        minted.len(),
        36,
        "a request without an id gets a fresh UUID"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = server.logs.lock().expect("logs").iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["span"]["request_id"] == "e2e-req-42" || v["request_id"] == "e2e-req-42"
            })
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line carries the request id"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let me = c.ok(&owner, "GET", "/v1/me", None).await;
    assert_eq!(me["user"]["role"], "owner");
    assert_eq!(me["company"]["name"], "Acme");

    // The owner invites an admin; the admin invites the rest.
    let admin = c
        .ok(
            &owner,
            "POST",
            "/v1/users",
            Some(json!({"email": "ada@acme.test", "role": "admin"})),
        )
        .await;
    let admin_tok = admin["token"].as_str().unwrap().to_owned();
    let creator = c
        .ok(
            &admin_tok,
            "POST",
            "/v1/users",
            Some(json!({"email": "cy@acme.test", "role": "creator"})),
        )
        .await;
    let creator_tok = creator["token"].as_str().unwrap().to_owned();
    let consumer = c
        .ok(
            &admin_tok,
            "POST",
            "/v1/users",
            Some(json!({"email": "con@acme.test", "role": "consumer"})),
        )
        .await;
    let consumer_tok = consumer["token"].as_str().unwrap().to_owned();
    let api = c
        .ok(
            &admin_tok,
            "POST",
            "/v1/api-users",
            Some(json!({"name": "reporting-bot"})),
        )
        .await;
    let api_tok = api["token"].as_str().unwrap().to_owned();
    let api_id = api["user"]["id"].as_str().unwrap().to_owned();

    // Registration needs the integration on.
    let (s, v) = c
        .call(&creator_tok, "POST", "/v1/datasources", Some(json!({
            "name": "warehouse", "kind": "postgres",
            "connection": {"host": "db.example.com", "database": "acme", "user": "analyst", "password": DS_PASSWORD}
        })))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("integration_disabled"))
    );
    c.ok(
        &admin_tok,
        "PATCH",
        "/v1/integrations/postgres",
        Some(json!({"enabled": true})),
    )
    .await;
    let ds = c
        .ok(&creator_tok, "POST", "/v1/datasources", Some(json!({
            "name": "warehouse", "kind": "postgres",
            "connection": {"host": "db.example.com", "database": "acme", "user": "analyst", "password": DS_PASSWORD},
            "policy": {"access": "read_only", "max_rows": 500}
        })))
        .await;
    let ds_id = ds["id"].as_str().unwrap().to_owned();
    assert!(
        ds["connection"].get("password").is_none(),
        "the password is write-only"
    );
    assert_eq!(
        ds["connection"]["tls"],
        json!({"mode": "verify-full", "client_key_set": false}),
        "TLS left out is the strictest mode"
    );
    assert_eq!(ds["my_role"], "owner");

    // The creator makes a public app and a private one, both on the datasource.
    let public = c
        .ok(
            &creator_tok,
            "POST",
            "/v1/apps",
            Some(json!({"name": "Sales dashboard", "datasource_ids": [ds_id]})),
        )
        .await;
    let public_id = public["id"].as_str().unwrap().to_owned();
    c.ok(
        &creator_tok,
        "PATCH",
        &format!("/v1/apps/{public_id}"),
        Some(json!({"visibility": "public"})),
    )
    .await;
    let private = c
        .ok(
            &creator_tok,
            "POST",
            "/v1/apps",
            Some(json!({"name": "Finance notebook", "datasource_ids": [ds_id]})),
        )
        .await;
    let private_id = private["id"].as_str().unwrap().to_owned();
    let bot_app = c
        .ok(
            &creator_tok,
            "POST",
            "/v1/apps",
            Some(json!({"name": "Bot app"})),
        )
        .await;
    let bot_app_id = bot_app["id"].as_str().unwrap().to_owned();
    c.ok(
        &creator_tok,
        "PUT",
        &format!("/v1/apps/{bot_app_id}/members/{api_id}"),
        Some(json!({"role": "viewer"})),
    )
    .await;

    // The consumer sees the public app, and a private one is 404 as if it did not exist.
    let apps = c.ok(&consumer_tok, "GET", "/v1/apps", None).await;
    assert_eq!(ids(&apps), vec![public_id.clone()]);
    let (s, v) = c
        .call(
            &consumer_tok,
            "GET",
            &format!("/v1/apps/{private_id}"),
            None,
        )
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));

    // The API user sees only the app it was added to, not the public one.
    let apps = c.ok(&api_tok, "GET", "/v1/apps", None).await;
    assert_eq!(ids(&apps), vec![bot_app_id.clone()]);
    let (s, _) = c
        .call(&api_tok, "GET", &format!("/v1/apps/{public_id}"), None)
        .await;
    assert_eq!(s, 404);

    // The admin reads the audit log: the private app's events are there, their detail is not.
    let audit = c.ok(&admin_tok, "GET", "/v1/audit?limit=100", None).await;
    let items = audit["items"].as_array().unwrap();
    let private_events: Vec<&Value> = items
        .iter()
        .filter(|i| i["app_id"].as_str() == Some(private_id.as_str()))
        .collect();
    assert!(
        !private_events.is_empty(),
        "the private app's events are listed"
    );
    for e in &private_events {
        assert!(
            e.get("detail").is_none() && e.get("sql").is_none(),
            "redacted for the admin: {e}"
        );
    }
    let public_create = items
        .iter()
        .find(|i| i["app_id"].as_str() == Some(public_id.as_str()) && i["action"] == "app.create")
        .expect("public app.create event");
    assert!(
        public_create.get("detail").is_some(),
        "public apps are not redacted"
    );
    // The company owner sees everything.
    let audit_owner = c.ok(&owner, "GET", "/v1/audit?limit=100", None).await;
    assert!(
        audit_owner["items"].as_array().unwrap().iter().any(|i| {
            i["app_id"].as_str() == Some(private_id.as_str()) && i.get("detail").is_some()
        }),
        "owners see private apps' detail"
    );
    let (s, _) = c.call(&consumer_tok, "GET", "/v1/audit", None).await;
    assert_eq!(s, 403);

    // Restart on the same data directory: everything is still there.
    server.stop();
    let server = Server::start(&data);
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    for tok in [&owner, &admin_tok, &creator_tok, &consumer_tok, &api_tok] {
        c.ok(tok, "GET", "/v1/me", None).await;
    }
    let apps = c.ok(&consumer_tok, "GET", "/v1/apps", None).await;
    assert_eq!(ids(&apps), vec![public_id.clone()]);
    let apps = c.ok(&api_tok, "GET", "/v1/apps", None).await;
    assert_eq!(ids(&apps), vec![bot_app_id.clone()]);
    let apps = c.ok(&creator_tok, "GET", "/v1/apps", None).await;
    assert_eq!(ids(&apps).len(), 3);
    let priv_app = c
        .ok(&creator_tok, "GET", &format!("/v1/apps/{private_id}"), None)
        .await;
    assert_eq!(priv_app["datasources"][0]["id"], ds_id.as_str());
    let ds_again = c
        .ok(
            &creator_tok,
            "GET",
            &format!("/v1/datasources/{ds_id}"),
            None,
        )
        .await;
    assert_eq!(ds_again["policy"]["max_rows"], 500);
    let members = c
        .ok(
            &creator_tok,
            "GET",
            &format!("/v1/apps/{bot_app_id}/members"),
            None,
        )
        .await;
    assert_eq!(members["items"][0]["principal_id"], api_id.as_str());
    let integrations = c.ok(&admin_tok, "GET", "/v1/integrations", None).await;
    assert!(
        integrations["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "postgres" && i["enabled"] == true)
    );
    server.stop();

    let hits = any_file_contains(&data, DS_PASSWORD.as_bytes());
    assert!(
        hits.is_empty(),
        "the datasource password is stored in plain text in {hits:?}"
    );
}
