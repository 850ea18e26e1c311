//! The browser console, in a real headless Chromium against the real `sluice` binary and the
//! real local PostgreSQL with the acme fixture: the admin-to-consumer walk, what a consumer is
//! offered (and what the API refuses anyway), hostile names rendered as text, a 100,000-row
//! stream with its live count and a Cancel that stops the statement on the server, and keyboard
//! and narrow-screen use. The walk saves a screenshot of each screen: under `docs/console/` with
//! `SLUICE_TEST_CONSOLE_SCREENSHOTS=docs` (how the README's pictures are refreshed), else under
//! `target/console-screenshots/`.
//!
//! Also the API addition the console needed: `GET /v1/users?q=` (the share picker's search).

#[path = "support/browser.rs"]
mod browser;
mod support;

use browser::{Browser, El};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::db::pg_connect;
use support::gateway::{Gateway, PgAcme, pg_acme, pg_server};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

// ---- The real binary ------------------------------------------------------------------------

/// `sluice serve` on a random port with a fresh data directory, and the owner token from
/// `sluice company create`.
struct Sluice {
    child: Child,
    base: String,
    owner: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Sluice {
    fn start(env: &[(&str, &str)]) -> Sluice {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("sqlite")).expect("sqlite root");
        let out = Command::new(BIN)
            .args([
                "company",
                "create",
                "Acme",
                "--owner-email",
                "owner@acme.example",
                "--data-dir",
            ])
            .arg(&data)
            .output()
            .expect("run sluice company create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let owner = String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .last()
            .expect("token line")
            .trim()
            .to_owned();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-networks",
            "127.0.0.0/8",
            "--data-dir",
        ])
        .arg(&data)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start sluice");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "sluice listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sluice did not report its listening address");
        Sluice {
            child,
            base: format!("http://{addr}"),
            owner,
            http: reqwest::Client::new(),
            dir,
        }
    }

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

    /// Invites a person; returns (id, token).
    async fn invite(&self, email: &str, name: &str, role: &str) -> (String, String) {
        let v = self
            .ok(
                &self.owner,
                "POST",
                "/v1/users",
                Some(json!({"email": email, "name": name, "role": role})),
            )
            .await;
        (
            v["user"]["id"].as_str().expect("id").to_owned(),
            v["token"].as_str().expect("token").to_owned(),
        )
    }

    async fn enable(&self, kind: &str) {
        self.ok(
            &self.owner,
            "PATCH",
            &format!("/v1/integrations/{kind}"),
            Some(json!({"enabled": true})),
        )
        .await;
    }

    fn url(&self, fragment: &str) -> String {
        format!("{}/{fragment}", self.base)
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Console steps, as a user does them ------------------------------------------------------

async fn sign_in(b: &Browser, s: &Sluice, token: &str) {
    b.goto(&s.url("")).await;
    let input = b
        .xpath("//label[normalize-space()='Token']/following-sibling::input[@type='password']")
        .await;
    b.type_into(&input, token, true).await;
    let button = b.button("Sign in").await;
    b.click(&button).await;
    b.css("#who-role").await;
}

async fn sign_out(b: &Browser) {
    let out = b.button("Sign out").await;
    b.click(&out).await;
    b.css("#token").await;
}

async fn open(b: &Browser, screen: &str) {
    let link = b
        .xpath(&format!("//nav//a[normalize-space()='{screen}']"))
        .await;
    b.click(&link).await;
    b.xpath(&format!("//main//h1[normalize-space()='{screen}']"))
        .await;
}

/// The input of the form field labelled `label` (inside `scope`, an XPath prefix).
async fn input(b: &Browser, scope: &str, label: &str) -> El {
    b.xpath(&format!(
        "{scope}//label[normalize-space()='{label}']/following-sibling::*[1]"
    ))
    .await
}

/// A button of a form whose aria-label is `form`.
async fn form_button(b: &Browser, form: &str, text: &str) -> El {
    b.xpath(&format!(
        "//form[@aria-label='{form}']//button[normalize-space()='{text}' and not(@disabled)]"
    ))
    .await
}

/// Fails when the page logged an uncaught error or a Content-Security-Policy violation.
async fn no_page_errors(b: &Browser) {
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
}

/// Where the screenshots go: `docs/console/` (what the README shows) when
/// `SLUICE_TEST_CONSOLE_SCREENSHOTS=docs` asks to refresh them, else the target directory, so an
/// ordinary test run never rewrites tracked files (the pictures differ run to run: ids, times).
fn shots() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::env::var("SLUICE_TEST_CONSOLE_SCREENSHOTS").as_deref() == Ok("docs") {
        root.join("docs/console")
    } else {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("console-screenshots")
    }
}

/// Saves `<shots>/<name>.png` with the page scrolled to `scroll_to` (a CSS selector, or
/// the top), after the last notice has faded, so the picture shows the screen itself.
async fn shot(b: &Browser, name: &str, scroll_to: Option<&str>) {
    let script = "document.getElementById('toast').classList.remove('shown');
         const el = arguments[0] && document.querySelector(arguments[0]);
         if (el) el.scrollIntoView(); else window.scrollTo(0, 0);";
    b.exec(script, vec![json!(scroll_to)]).await;
    // The toast fades out over 0.2 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.screenshot(&shots().join(format!("{name}.png"))).await;
}

/// Waits until the playground's status line reaches `state` (`done`, `error`, `cancelled`).
async fn query_state(b: &Browser, state: &str) {
    let status = b.css("#query-status").await;
    b.wait_for(&format!("query state {state}"), || async {
        let v = b.prop(&status, "dataset").await;
        (v["state"] == state).then_some(())
    })
    .await;
}

async fn row_count(b: &Browser) -> u64 {
    let v = b
        .exec(
            "return document.getElementById('row-count').dataset.rows",
            vec![],
        )
        .await;
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn run_sql(b: &Browser, sql: &str) {
    let editor = b.css("textarea[name=sql]").await;
    b.type_into(&editor, sql, true).await;
    let run = b.button("Run").await;
    b.click(&run).await;
}

fn datasource_body(acme: &PgAcme, name: &str, policy: Value) -> Value {
    acme.datasource(name, &acme.accounts.analyst, policy)
}

// ---- The walk --------------------------------------------------------------------------------

/// Sign in as an admin, enable postgres, register the acme datasource, test it, deny a table
/// in its scope, create an app, attach the datasource, share it with a consumer; then as the
/// consumer run a query and see its rows and a refused one; then as the admin see both in the
/// audit log. Screenshots of every screen are taken on the way (see `shots`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_up_a_datasource_and_app_and_a_consumer_queries_it_in_the_browser() {
    let acme = pg_acme().await;
    let s = Sluice::start(&[]);
    let (_, admin) = s.invite("ada@acme.example", "Ada Admin", "admin").await;
    let (consumer_id, consumer) = s.invite("con@acme.example", "Con Sumer", "consumer").await;
    let b = Browser::start().await;
    b.set_window(1280, 1000).await;

    // Sign-in page, then the admin's frame: who, role, company.
    b.goto(&s.url("")).await;
    b.css("#token").await;
    shot(&b, "signin", None).await;
    sign_in(&b, &s, &admin).await;
    assert_eq!(b.text(&b.css("#who-name").await).await, "ada@acme.example");
    assert_eq!(b.text(&b.css("#who-role").await).await, "admin");
    assert_eq!(b.text(&b.css("#who-company").await).await, "Acme");

    // Integrations: turn PostgreSQL on with its toggle.
    open(&b, "Integrations").await;
    let toggle = b.css("article[data-kind=postgres] .toggle input").await;
    assert_eq!(
        b.prop(&toggle, "checked").await,
        false,
        "integrations start off"
    );
    b.click(&toggle).await;
    b.xpath("//article[@data-kind='postgres']//span[contains(@class,'badge') and normalize-space()='On']").await;
    let ints = s.ok(&admin, "GET", "/v1/integrations", None).await;
    let pg = ints["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "postgres")
        .unwrap()
        .clone();
    assert_eq!(
        pg["enabled"], true,
        "the toggle changed the integration: {pg}"
    );
    let actions = b
        .css("article[data-kind=postgres] details.available-actions summary")
        .await;
    b.click(&actions).await;
    b.wait_text("Read rows (SELECT)").await;
    shot(&b, "integrations", None).await;

    // Datasources: register acme with the connection form.
    open(&b, "Datasources").await;
    let register = b.button("Register datasource").await;
    b.click(&register).await;
    let form = "//form[@aria-label='Register a datasource']";
    let (host, port) = pg_server();
    let (user, password) = acme.accounts.analyst.clone();
    for (label, value) in [
        ("Name", "acme-warehouse"),
        ("Host", host.as_str()),
        ("Port", &port.to_string()),
        ("Database", acme.db.name.as_str()),
        ("User", user.as_str()),
        ("Password", password.as_str()),
    ] {
        let el = input(&b, form, label).await;
        b.type_into(&el, value, true).await;
    }
    // TLS starts on the strictest mode; the local server's self-signed certificate would fail
    // it, so this datasource says `disable`, and the hint says what that means.
    let mode = input(&b, form, "TLS mode").await;
    assert_eq!(b.prop(&mode, "value").await, "verify-full");
    b.choose(&mode, "Disable").await;
    b.wait_text("Plain TCP: the password and every row cross the network unencrypted.")
        .await;
    b.click(&form_button(&b, "Register a datasource", "Register").await)
        .await;
    b.xpath("//main//h1[normalize-space()='acme-warehouse']")
        .await;

    // Test connection answers from the real server, and says the connection is not encrypted.
    b.click(&b.button("Test connection").await).await;
    b.xpath("//div[contains(@class,'ok')]/strong[normalize-space()='Connected']")
        .await;
    b.xpath("//p[contains(@class,'tls-result') and normalize-space()='Not encrypted (TLS mode disable).']")
        .await;
    // The check read the account's default schema; the form shows it, so saving keeps it.
    let schema = b.css("input[name=default_schema]").await;
    assert_eq!(b.prop(&schema, "value").await, "public");

    // The scope policy: deny public.invoices, picked in the schema browser.
    let deny = b
        .css("input[data-table='public.invoices'][data-list='denied']")
        .await;
    b.click(&deny).await;
    b.click(&form_button(&b, "Scope policy", "Save scope policy").await)
        .await;
    b.wait_text("Scope policy saved").await;
    let list = s.ok(&admin, "GET", "/v1/datasources", None).await;
    let ds = list["items"][0].clone();
    assert_eq!(
        ds["policy"]["denied_tables"],
        json!(["public.invoices"]),
        "{ds}"
    );
    assert_eq!(ds["policy"]["default_schema"], "public", "{ds}");
    assert_eq!(
        ds["connection"]["tls"],
        json!({"mode": "disable", "client_key_set": false}),
        "{ds}"
    );
    let ds_id = ds["id"].as_str().unwrap().to_owned();
    shot(&b, "datasources", None).await;

    // Apps: create one, attach the datasource, share it with the consumer.
    open(&b, "Apps").await;
    b.click(&b.button("Create app").await).await;
    let name = input(&b, "//form[@aria-label='Create an app']", "Name").await;
    b.type_into(&name, "Sales dashboard", true).await;
    b.click(&form_button(&b, "Create an app", "Create app").await)
        .await;
    b.xpath("//main//h1[normalize-space()='Sales dashboard']")
        .await;
    let attach = input(&b, "", "Attach a datasource").await;
    b.choose(&attach, "acme-warehouse").await;
    b.click(&b.button("Attach").await).await;
    b.xpath("//table[contains(@class,'attached')]//a[normalize-space()='acme-warehouse']")
        .await;
    let search = input(&b, "", "Add people or groups by name or email").await;
    b.type_into(&search, "con@", true).await;
    let hit = b
        .xpath("//ul[contains(@class,'picker-results')]//button[contains(., 'con@acme.example')]")
        .await;
    b.click(&hit).await;
    b.click(&b.button("Add").await).await;
    b.xpath("//table[contains(@class,'members')]//td[contains(., 'con@acme.example')]")
        .await;
    let apps = s.ok(&admin, "GET", "/v1/apps", None).await;
    let app_id = apps["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(apps["items"][0]["datasources"][0]["id"], ds_id.as_str());
    let members = s
        .ok(&admin, "GET", &format!("/v1/apps/{app_id}/members"), None)
        .await;
    assert_eq!(
        members["items"],
        json!([{"principal_id": consumer_id, "principal_kind": "user", "role": "viewer"}])
    );
    shot(&b, "apps", Some("main section.panel:nth-of-type(2)")).await;

    // People, as the admin sees it.
    open(&b, "People").await;
    b.xpath("//table[contains(@class,'users')]//td[normalize-space()='con@acme.example']")
        .await;
    shot(&b, "people", None).await;

    // The consumer: sign out, sign in, query through the shared app.
    sign_out(&b).await;
    assert_eq!(
        b.exec("return sessionStorage.length", vec![]).await,
        0,
        "sign-out clears the token"
    );
    sign_in(&b, &s, &consumer).await;
    assert_eq!(b.text(&b.css("#who-role").await).await, "consumer");
    open(&b, "Query").await;
    run_sql(&b, "SELECT id, name FROM customers ORDER BY id LIMIT 5").await;
    query_state(&b, "done").await;
    let db = acme.db.admin_client().await;
    let first: String = db
        .query_one("SELECT name FROM customers ORDER BY id LIMIT 1", &[])
        .await
        .expect("first customer")
        .get(0);
    b.wait_text(&first).await;
    assert_eq!(b.find_all("table.result tbody tr").await.len(), 5);
    b.xpath("//table[contains(@class,'result')]//th[span='id' and span='int4']")
        .await;
    assert_eq!(row_count(&b).await, 5);
    shot(&b, "query", None).await;

    // A refused query shows its code and message.
    run_sql(&b, "SELECT * FROM invoices").await;
    query_state(&b, "error").await;
    let code = b.css(".notices .error-code").await;
    assert_eq!(b.text(&code).await, "table_not_allowed");
    let message = b.text(&b.css(".notices .error-message").await).await;
    assert!(!message.is_empty());

    // The admin sees both queries in the audit log.
    sign_out(&b).await;
    sign_in(&b, &s, &admin).await;
    open(&b, "Audit").await;
    let action = input(&b, "//form[@aria-label='Audit filters']", "Action").await;
    b.type_into(&action, "query", true).await;
    b.click(&form_button(&b, "Audit filters", "Apply filters").await)
        .await;
    b.wait_for("two query records", || async {
        (b.find_all("table.audit tbody tr").await.len() == 2).then_some(())
    })
    .await;
    b.xpath("//table[contains(@class,'audit')]//tr[@data-outcome='allowed']//code[contains(., 'FROM customers')]").await;
    b.xpath("//table[contains(@class,'audit')]//tr[@data-outcome='denied']//code[normalize-space()='table_not_allowed']").await;
    b.xpath("//table[contains(@class,'audit')]//tr[@data-outcome='denied']//code[contains(., 'FROM invoices')]").await;
    shot(&b, "audit", None).await;
    no_page_errors(&b).await;
}

// ---- Roles -----------------------------------------------------------------------------------

/// A consumer is offered no register, invite, create or toggle controls (an admin in the same
/// browser is, so their absence is the role's doing), and the API refuses those calls anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_is_offered_no_register_or_invite_and_the_api_refuses_them_anyway() {
    let s = Sluice::start(&[]);
    s.enable("postgres").await;
    let (_, admin) = s.invite("ada@acme.example", "Ada Admin", "admin").await;
    let (_, consumer) = s.invite("con@acme.example", "Con Sumer", "consumer").await;
    let b = Browser::start().await;

    // A token the gateway does not know is refused at the door, and not kept.
    b.goto(&s.url("")).await;
    b.type_into(&b.css("#token").await, "slc.tok_nope.secret", true)
        .await;
    b.click(&b.button("Sign in").await).await;
    b.wait_text("That token was not accepted").await;
    assert_eq!(b.exec("return sessionStorage.length", vec![]).await, 0);

    // Each role in turn: (token, sees the controls?)
    for (token, offered) in [(&admin, true), (&consumer, false)] {
        sign_in(&b, &s, token).await;
        let nav = b.text(&b.css("nav").await).await;
        assert_eq!(
            nav.contains("Audit"),
            offered,
            "Audit in the navigation: {nav}"
        );

        open(&b, "Datasources").await;
        b.xpath("//main//*[contains(@class,'empty') or self::table]")
            .await;
        assert_eq!(
            b.has_xpath("//*[normalize-space()='Register datasource']")
                .await,
            offered
        );

        open(&b, "People").await;
        b.xpath("//table[contains(@class,'users')]").await;
        for control in ["Invite", "Create group", "Create API user"] {
            assert_eq!(
                b.has_xpath(&format!("//*[normalize-space()='{control}']"))
                    .await,
                offered,
                "{control} offered to {}",
                if offered { "the admin" } else { "the consumer" }
            );
        }

        open(&b, "Integrations").await;
        let toggle = b.css("article[data-kind=postgres] .toggle input").await;
        assert_eq!(
            b.prop(&toggle, "disabled").await,
            !offered,
            "integration toggles"
        );

        open(&b, "Apps").await;
        b.xpath("//main//*[contains(@class,'empty') or self::table]")
            .await;
        assert_eq!(
            b.has_xpath("//*[normalize-space()='Create app']").await,
            offered
        );
        sign_out(&b).await;
    }

    // An API user is offered its apps and the playground, nothing else.
    let robot = s
        .ok(
            &s.owner,
            "POST",
            "/v1/api-users",
            Some(json!({"name": "report-bot"})),
        )
        .await;
    sign_in(&b, &s, robot["token"].as_str().unwrap()).await;
    assert_eq!(b.text(&b.css("#who-role").await).await, "API user");
    let links = b
        .exec(
            "return [...document.querySelectorAll('nav a')].map((a) => a.textContent)",
            vec![],
        )
        .await;
    assert_eq!(links, json!(["Apps", "Query"]));
    open(&b, "Apps").await;
    b.xpath("//main//*[contains(@class,'empty')]").await;
    no_page_errors(&b).await;

    // The API refuses the consumer whatever a page offers.
    for (method, path, body) in [
        (
            "POST",
            "/v1/datasources",
            json!({"name": "x", "kind": "postgres", "connection": {"host": "127.0.0.1", "database": "d", "user": "u"}}),
        ),
        (
            "POST",
            "/v1/users",
            json!({"email": "eve@acme.example", "role": "consumer"}),
        ),
        ("POST", "/v1/groups", json!({"name": "g"})),
        ("POST", "/v1/api-users", json!({"name": "bot"})),
        (
            "PATCH",
            "/v1/integrations/postgres",
            json!({"enabled": false}),
        ),
        ("POST", "/v1/apps", json!({"name": "a"})),
    ] {
        let (status, v) = s.call(&consumer, method, path, Some(body)).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {v}"
        );
    }
    let (status, _) = s.call(&consumer, "GET", "/v1/audit", None).await;
    assert_eq!(status, 403);
}

// ---- TLS settings --------------------------------------------------------------------------

/// A datasource registered with a mutual-TLS identity: the listing shows its mode, its page shows
/// the certificate and that a key is set, never the key; editing the connection with the key
/// left empty keeps it (the certificate comes back from the textarea with other line endings,
/// and is still the same certificate), and the form sends the TLS settings the admin chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_key_shows_as_set_never_as_text_and_an_edit_without_it_keeps_it() {
    let s = Sluice::start(&[]);
    s.enable("postgres").await;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["sluice-client".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    let key_pem = key.serialize_pem();
    let key_line = key_pem.lines().nth(1).unwrap().to_owned();
    let ds = s
        .ok(
            &s.owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": "mtls", "kind": "postgres", "connection": {
                "host": "db.example.com", "database": "d", "user": "u",
                "tls": {"mode": "verify-ca", "ca_pem": cert, "client_cert_pem": cert,
                        "client_key_pem": key_pem}}})),
        )
        .await;
    let id = ds["id"].as_str().unwrap().to_owned();
    let b = Browser::start().await;
    sign_in(&b, &s, &s.owner).await;
    open(&b, "Datasources").await;
    b.xpath("//table[contains(@class,'datasources')]//span[contains(@class,'tls-verify-ca') and normalize-space()='verify-ca']")
        .await;
    b.goto(&s.url(&format!("#/datasources/{id}"))).await;
    b.click(
        &b.xpath("//summary[normalize-space()='Edit connection']")
            .await,
    )
    .await;
    let form = "//form[@aria-label='Edit connection']";
    let mode = input(&b, form, "TLS mode").await;
    assert_eq!(b.prop(&mode, "value").await, "verify-ca");
    // A textarea gives its text back with LF line endings; rcgen writes CRLF.
    let lf = |pem: &str| pem.replace("\r\n", "\n");
    let shown = input(&b, form, "Client certificate (PEM)").await;
    assert_eq!(b.prop(&shown, "value").await, json!(lf(&cert)));
    let new_key = input(&b, form, "New client key (PEM)").await;
    assert_eq!(
        b.prop(&new_key, "value").await,
        "",
        "the key is never filled in"
    );
    b.xpath(&format!(
        "{form}//span[contains(@class,'key-set') and normalize-space()='set']"
    ))
    .await;
    let html = b
        .exec("return document.documentElement.outerHTML", vec![])
        .await;
    assert!(
        !html.as_str().unwrap_or_default().contains(&key_line),
        "the key is not on the page"
    );

    // Save with the key left empty and the mode changed: the key stays, the mode is the new one.
    b.choose(&mode, "Require").await;
    b.click(&form_button(&b, "Edit connection", "Save connection").await)
        .await;
    b.wait_text("Connection saved").await;
    let after = s
        .ok(&s.owner, "GET", &format!("/v1/datasources/{id}"), None)
        .await;
    let tls = &after["connection"]["tls"];
    assert_eq!(tls["mode"], "require", "{after}");
    assert_eq!(tls["client_key_set"], true, "{after}");
    assert_eq!(tls["client_cert_pem"], json!(lf(&cert)), "{after}");
    assert_eq!(tls["ca_pem"], json!(lf(&cert)), "{after}");
    assert!(!after.to_string().contains(&key_line));
    no_page_errors(&b).await;
}

// ---- XSS -------------------------------------------------------------------------------------

/// Names chosen by users reach the page as text: a datasource, an app, a user and a group named
/// `<img src=x onerror=alert(1)>` show those characters, no image element appears and no dialog
/// opens, on every screen that shows them. The console's answers carry the strict headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_render_as_text_and_open_no_dialog() {
    let s = Sluice::start(&[]);
    s.enable("sqlite").await;
    let path = s.dir.path().join("data/sqlite/x.db").display().to_string();
    let ds = s
        .ok(
            &s.owner,
            "POST",
            "/v1/datasources",
            Some(json!({"name": HOSTILE, "kind": "sqlite", "connection": {"path": path}})),
        )
        .await;
    let ds_id = ds["id"].as_str().unwrap().to_owned();
    s.ok(
        &s.owner,
        "POST",
        "/v1/apps",
        Some(json!({"name": HOSTILE, "description": HOSTILE, "datasource_ids": [ds_id]})),
    )
    .await;
    s.invite("eve@acme.example", HOSTILE, "consumer").await;
    s.ok(
        &s.owner,
        "POST",
        "/v1/groups",
        Some(json!({"name": HOSTILE})),
    )
    .await;

    let res = reqwest::get(s.url("")).await.expect("GET /");
    let h = res.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");

    let b = Browser::start().await;
    sign_in(&b, &s, &s.owner).await;
    let check = |what: &'static str| {
        let b = &b;
        async move {
            let imgs = b
                .exec("return document.querySelectorAll('img').length", vec![])
                .await;
            assert_eq!(imgs, 0, "{what}: an <img> element was created from a name");
            assert_eq!(b.dialog_text().await, None, "{what}: a dialog opened");
        }
    };
    open(&b, "Datasources").await;
    let link = b.css("a.ds-name").await;
    assert_eq!(b.text(&link).await, HOSTILE);
    check("datasources").await;
    b.click(&link).await;
    b.xpath(&format!("//main//h1[normalize-space()='{HOSTILE}']"))
        .await;
    check("datasource page").await;

    open(&b, "Apps").await;
    let app = b.css("a.app-name").await;
    assert_eq!(b.text(&app).await, HOSTILE);
    b.click(&app).await;
    b.wait_for("the app page", || async {
        (b.find_all("main h1").await.len() == 1
            && b.page_text().await.contains("Security & Permissions"))
        .then_some(())
    })
    .await;
    assert_eq!(b.text(&b.css("main h1").await).await, HOSTILE);
    check("app page").await;

    open(&b, "People").await;
    b.xpath("//table[contains(@class,'users')]//td[normalize-space()='eve@acme.example']")
        .await;
    let text = b.page_text().await;
    assert!(
        text.matches(HOSTILE).count() >= 2,
        "the user's and the group's names: {text}"
    );
    check("people").await;

    open(&b, "Audit").await;
    b.css("table.audit").await;
    b.wait_text(&format!("\"name\":\"{}\"", HOSTILE.replace('"', "\\\"")))
        .await;
    check("audit").await;

    open(&b, "Query").await;
    let app_sel = input(&b, "", "App").await;
    assert!(b.text(&app_sel).await.contains(HOSTILE));
    check("query").await;
    no_page_errors(&b).await;
}

// ---- Streaming -------------------------------------------------------------------------------

async fn active_statements(admin: &tokio_postgres::Client, db: &str, role: &str) -> Vec<String> {
    admin
        .query(
            "SELECT coalesce(query, '') FROM pg_stat_activity \
             WHERE datname = $1 AND usename = $2 AND state <> 'idle'",
            &[&db, &role],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// 100,000 rows stream into the playground with a live count (only the first 1,000 are drawn),
/// and Cancel on an endless stream aborts the request, which stops the statement on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_streams_with_a_live_count_and_cancel_stops_the_statement_on_the_server() {
    let acme = pg_acme().await;
    // A row limit far above anything the test reads, so only Cancel can end the second stream.
    let s = Sluice::start(&[("SLUICE_LIMITS__MAX_ROWS", "10000000000")]);
    s.enable("postgres").await;
    let ds = s
        .ok(
            &s.owner,
            "POST",
            "/v1/datasources",
            Some(datasource_body(
                &acme,
                "big",
                json!({"max_rows": 10_000_000_000u64, "timeout_ms": 300_000}),
            )),
        )
        .await;
    let app = s
        .ok(
            &s.owner,
            "POST",
            "/v1/apps",
            Some(json!({"name": "Stream", "datasource_ids": [ds["id"]]})),
        )
        .await;
    let app_id = app["id"].as_str().unwrap();
    let b = Browser::start().await;
    sign_in(&b, &s, &s.owner).await;
    b.goto(&s.url(&format!("#/query/{app_id}"))).await;
    b.css("textarea[name=sql]").await;

    run_sql(
        &b,
        "SELECT g AS n, 'row ' || g AS label FROM generate_series(1, 100000) AS g",
    )
    .await;
    query_state(&b, "done").await;
    assert_eq!(row_count(&b).await, 100_000);
    assert_eq!(b.text(&b.css("#row-count").await).await, "100,000");
    assert_eq!(
        b.find_all("table.result tbody tr").await.len(),
        1000,
        "only the first rows are drawn"
    );
    b.wait_text("Showing the first 1,000 of 100,000 rows").await;

    // An endless stream: the count climbs while it runs, the statement runs on the server.
    let admin = pg_connect(&acme.db.url()).await;
    let role = &acme.accounts.analyst.0;
    run_sql(&b, "SELECT a.g AS a, b.g AS b FROM generate_series(1, 100000) AS a(g), generate_series(1, 100000) AS b(g)").await;
    let first = b
        .wait_for("100,000 rows counted while running", || async {
            let n = row_count(&b).await;
            (n >= 100_000).then_some(n)
        })
        .await;
    let status = b.css("#query-status").await;
    assert_eq!(b.prop(&status, "dataset").await["state"], "running");
    b.wait_for("the live count to climb", || async {
        (row_count(&b).await > first).then_some(())
    })
    .await;
    let running = active_statements(&admin, &acme.db.name, role).await;
    assert!(
        running.iter().any(|q| q.contains("generate_series")),
        "the statement is running on the server: {running:?}"
    );

    b.click(&b.button("Cancel").await).await;
    query_state(&b, "cancelled").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = active_statements(&admin, &acme.db.name, role).await;
        if !left.iter().any(|q| q.contains("generate_series")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the statement still runs after Cancel: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(&b, "query-cancelled", None).await;
    let stopped = row_count(&b).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        row_count(&b).await,
        stopped,
        "the count stops with the stream"
    );
    // The gateway saw the client go away and recorded it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = s
            .ok(
                &s.owner,
                "GET",
                "/v1/audit?action=query&outcome=failed",
                None,
            )
            .await;
        if audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "client_disconnected")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no client_disconnected record: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    no_page_errors(&b).await;
}

// ---- Keyboard and narrow screens ---------------------------------------------------------------

/// Sign in and move between screens with the keyboard alone; on a phone-sized window no screen
/// scrolls sideways (tables scroll inside their own box).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_with_the_keyboard_alone_and_fits_a_narrow_screen() {
    let s = Sluice::start(&[]);
    s.enable("sqlite").await;
    let path = s.dir.path().join("data/sqlite/k.db").display().to_string();
    let ds = s
        .ok(&s.owner, "POST", "/v1/datasources", Some(json!({"name": "a-rather-long-datasource-name-for-a-phone", "kind": "sqlite", "connection": {"path": path}})))
        .await;
    s.ok(
        &s.owner,
        "POST",
        "/v1/apps",
        Some(json!({"name": "Phone app", "datasource_ids": [ds["id"]]})),
    )
    .await;
    let b = Browser::start().await;
    b.set_window(390, 844).await;
    b.goto(&s.url("")).await;
    b.css("#token").await;
    // The token field has focus on arrival: type and press Enter.
    b.keys(&s.owner).await;
    b.keys("\u{E007}").await;
    b.css("#who-role").await;

    // Tab to "People" in the navigation and follow it with Enter.
    let mut reached = false;
    for _ in 0..30 {
        b.keys("\u{E004}").await;
        let focused = b
            .exec(
                "return document.activeElement ? document.activeElement.textContent : ''",
                vec![],
            )
            .await;
        if focused == "People" {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab never reached the People link");
    b.keys("\u{E007}").await;
    b.xpath("//main//h1[normalize-space()='People']").await;
    let focused = b
        .exec("return document.activeElement.tagName", vec![])
        .await;
    assert_eq!(focused, "H1", "focus moves to the new screen's heading");

    for screen in [
        "Integrations",
        "Datasources",
        "Apps",
        "People",
        "Audit",
        "Query",
    ] {
        open(&b, screen).await;
        b.wait_for(&format!("{screen} loaded"), || async {
            let busy = b
                .exec(
                    "return document.querySelectorAll('main .loading').length",
                    vec![],
                )
                .await;
            (busy == 0).then_some(())
        })
        .await;
        let overflow = b
            .exec("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
            .await;
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{screen} scrolls sideways by {overflow} px at 390 px wide"
        );
    }
    shot(&b, "narrow-query", None).await;
}

// ---- Clone, transfer, delete ----------------------------------------------------------------

/// A creator clones an app and is shown the datasource the clone dropped (one they cannot
/// view); the owner is asked before a delete (Cancel keeps the datasource), and transfers an
/// app's ownership to the creator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_shows_dropped_datasources_and_delete_and_transfer_ask_first() {
    let s = Sluice::start(&[]);
    s.enable("sqlite").await;
    let (creator_id, creator) = s.invite("cy@acme.example", "Cy Creator", "creator").await;
    let path = |f: &str| {
        s.dir
            .path()
            .join("data/sqlite")
            .join(f)
            .display()
            .to_string()
    };
    let mut ids = Vec::new();
    for (name, file) in [("finance-private", "f.db"), ("sales-shared", "s.db")] {
        let v = s
            .ok(
                &s.owner,
                "POST",
                "/v1/datasources",
                Some(json!({"name": name, "kind": "sqlite", "connection": {"path": path(file)}})),
            )
            .await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let (private_ds, shared_ds) = (ids[0].clone(), ids[1].clone());
    s.ok(
        &s.owner,
        "PUT",
        &format!("/v1/datasources/{shared_ds}/members/{creator_id}"),
        Some(json!({"role": "viewer"})),
    )
    .await;
    let app = s
        .ok(
            &s.owner,
            "POST",
            "/v1/apps",
            Some(json!({"name": "Board", "datasource_ids": [private_ds, shared_ds]})),
        )
        .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    s.ok(
        &s.owner,
        "PUT",
        &format!("/v1/apps/{app_id}/members/{creator_id}"),
        Some(json!({"role": "viewer"})),
    )
    .await;

    let b = Browser::start().await;
    sign_in(&b, &s, &creator).await;
    b.goto(&s.url(&format!("#/apps/{app_id}"))).await;
    let name = input(
        &b,
        "//form[@aria-label='Clone this app']",
        "Name of the copy",
    )
    .await;
    b.type_into(&name, "Board copy", true).await;
    b.click(&form_button(&b, "Clone this app", "Clone").await)
        .await;
    let dropped = b.css("ul.dropped").await;
    assert_eq!(
        b.text(&dropped).await,
        "finance-private",
        "only the datasource the creator cannot view"
    );
    let apps = s.ok(&creator, "GET", "/v1/apps", None).await;
    let copy = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Board copy")
        .expect("the clone")
        .clone();
    assert_eq!(
        copy["datasources"],
        json!([{"id": shared_ds, "name": "sales-shared", "kind": "sqlite"}])
    );
    sign_out(&b).await;

    // The owner: Cancel keeps the datasource, Delete removes it.
    sign_in(&b, &s, &s.owner).await;
    b.goto(&s.url(&format!("#/datasources/{private_ds}"))).await;
    b.click(&b.button("Delete datasource").await).await;
    b.click(
        &b.xpath("//dialog//button[normalize-space()='Cancel']")
            .await,
    )
    .await;
    assert!(!b.has_xpath("//dialog").await, "the dialog closed");
    let (status, _) = s
        .call(
            &s.owner,
            "GET",
            &format!("/v1/datasources/{private_ds}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "Cancel deleted nothing");
    b.click(&b.button("Delete datasource").await).await;
    b.click(
        &b.xpath("//dialog//button[normalize-space()='Delete']")
            .await,
    )
    .await;
    b.xpath("//main//h1[normalize-space()='Datasources']").await;
    let (status, _) = s
        .call(
            &s.owner,
            "GET",
            &format!("/v1/datasources/{private_ds}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "confirmed delete removed it");

    // Transfer the app to the creator.
    b.goto(&s.url(&format!("#/apps/{app_id}"))).await;
    let owner_sel = input(&b, "", "New owner").await;
    b.choose(&owner_sel, "Cy Creator").await;
    b.click(&b.button("Transfer ownership").await).await;
    b.click(
        &b.xpath("//dialog//button[normalize-space()='Transfer']")
            .await,
    )
    .await;
    b.wait_text("Ownership transferred").await;
    let after = s
        .ok(&s.owner, "GET", &format!("/v1/apps/{app_id}"), None)
        .await;
    assert_eq!(after["owner_id"], creator_id.as_str());
    no_page_errors(&b).await;
}

// ---- People and the audit pages ----------------------------------------------------------------

/// An admin invites a person and is shown the first token once, with a copy button, and that
/// token signs in with the role given; groups get members through the picker; the audit screen
/// pages with `next_cursor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_shows_the_token_once_groups_get_members_and_the_audit_pages() {
    let s = Sluice::start(&[]);
    let (_, admin) = s.invite("ada@acme.example", "Ada Admin", "admin").await;
    let b = Browser::start().await;
    sign_in(&b, &s, &admin).await;
    open(&b, "People").await;
    b.click(&b.xpath("//summary[normalize-space()='Invite']").await)
        .await;
    let form = "//form[@aria-label='Invite a person']";
    b.type_into(&input(&b, form, "Email").await, "newbie@acme.example", true)
        .await;
    b.type_into(&input(&b, form, "Name").await, "New Bie", true)
        .await;
    b.choose(&input(&b, form, "Role").await, "creator").await;
    b.click(&form_button(&b, "Invite a person", "Invite").await)
        .await;
    let revealed = b.css(".token-reveal input.token-value").await;
    let token = b
        .prop(&revealed, "value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    b.click(
        &b.xpath("//div[contains(@class,'token-reveal')]//button[normalize-space()='Copy']")
            .await,
    )
    .await;
    b.xpath("//span[contains(@class,'copied') and string-length(normalize-space()) > 0]")
        .await;
    let me = s.ok(&token, "GET", "/v1/me", None).await;
    assert_eq!(
        (me["user"]["email"].as_str(), me["user"]["role"].as_str()),
        (Some("newbie@acme.example"), Some("creator"))
    );

    // A group, and a member added through the search.
    let group = input(&b, "//form[@aria-label='Create a group']", "New group").await;
    b.type_into(&group, "Analysts team", true).await;
    b.click(&form_button(&b, "Create a group", "Create group").await)
        .await;
    let search = input(&b, "", "Add a person to Analysts team").await;
    b.type_into(&search, "bie", true).await;
    b.click(
        &b.xpath(
            "//ul[contains(@class,'picker-results')]//button[contains(., 'newbie@acme.example')]",
        )
        .await,
    )
    .await;
    b.click(&b.button("Add to group").await).await;
    b.xpath("//article[contains(@class,'group')]//li[contains(., 'newbie@acme.example')]")
        .await;
    let groups = s.ok(&admin, "GET", "/v1/groups", None).await;
    assert_eq!(
        groups["items"][0]["members"].as_array().map(Vec::len),
        Some(1),
        "{groups}"
    );

    // 60 more records than one page holds: the first page, then Load more.
    for i in 0..60 {
        s.ok(
            &admin,
            "PATCH",
            "/v1/company",
            Some(json!({"name": format!("Acme {i}")})),
        )
        .await;
    }
    open(&b, "Audit").await;
    b.wait_for("a first page of 50", || async {
        (b.find_all("table.audit tbody tr").await.len() == 50).then_some(())
    })
    .await;
    b.click(&b.button("Load more").await).await;
    b.wait_for("the next page appended", || async {
        (b.find_all("table.audit tbody tr").await.len() > 50).then_some(())
    })
    .await;
    let ids = b
        .exec("return [...document.querySelectorAll('table.audit tbody tr')].map((r) => r.dataset.id)", vec![])
        .await;
    let ids: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "no record is listed twice across pages"
    );
    let total = s.ok(&admin, "GET", "/v1/audit?limit=500", None).await;
    assert_eq!(
        ids.len(),
        total["items"].as_array().unwrap().len(),
        "the two pages hold every record"
    );
    no_page_errors(&b).await;
}

// ---- The demo ----------------------------------------------------------------------------------

/// `sluice demo` prints the console's address and an owner token, and that token signs in there.
/// (Its database servers are pointed at a closed port, so this demo builds SQLite datasources
/// only and leaves the shared demo databases of tests/query_demo.rs alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_the_console_address_and_an_owner_token_that_signs_in_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("demo"))
        .env("SLUICE_LOG", "warn")
        .env(
            "SLUICE_DEMO_PG_URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .env("SLUICE_DEMO_MYSQL_URL", "mysql://root@127.0.0.1:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice demo");
    let stdout = child.stdout.take().expect("stdout");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _demo = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut console, mut owner) = (None, None);
    let mut seen = Vec::new();
    while console.is_none() || owner.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the demo stopped printing; so far:\n{}", seen.join("\n")));
        if let Some(rest) = line.strip_prefix("console: ") {
            console = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("owner token: ") {
            owner = Some(rest.trim().to_owned());
        }
        seen.push(line);
    }
    let (console, owner) = (console.unwrap(), owner.unwrap());
    assert!(
        console.starts_with("http://127.0.0.1:") && console.ends_with('/'),
        "{console}"
    );

    let b = Browser::start().await;
    b.goto(&console).await;
    let token = b.css("#token").await;
    b.type_into(&token, &owner, true).await;
    b.click(&b.button("Sign in").await).await;
    assert_eq!(b.text(&b.css("#who-role").await).await, "owner");
    open(&b, "Apps").await;
    for app in ["Analysts", "Sales reps", "Executives"] {
        b.xpath(&format!(
            "//a[contains(@class,'app-name') and normalize-space()='{app}']"
        ))
        .await;
    }
}

// ---- The user search the share picker uses ----------------------------------------------------

/// `GET /v1/users?q=` matches name or email, ignoring case; it is the listing with a filter, so
/// it follows the listing's rule (person users only) and stays inside the company.
#[tokio::test]
async fn the_user_search_matches_name_or_email_ignoring_case_within_the_listing_rule() {
    let gw = Gateway::start().await;
    // A consumer: every person user may list users, so every one may search them.
    let ada = gw.invite(&gw.owner, "ada@acme.example", "consumer").await;
    gw.ok(&gw.owner, "POST", "/v1/users", Some(json!({"email": "bob@elsewhere.example", "name": "Robert Lovelace", "role": "consumer"})))
        .await;
    let robot = gw
        .ok(
            &gw.owner,
            "POST",
            "/v1/api-users",
            Some(json!({"name": "report-bot"})),
        )
        .await;
    let robot_token = robot["token"].as_str().unwrap();

    let emails = |v: &Value| -> Vec<String> {
        let mut e: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                u["email"]
                    .as_str()
                    .unwrap_or(u["name"].as_str().unwrap())
                    .to_owned()
            })
            .collect();
        e.sort();
        e
    };
    let search = |q: &str| format!("/v1/users?q={}", urlencode(q));
    assert_eq!(
        emails(&gw.ok(&ada.1, "GET", &search("ADA@"), None).await),
        ["ada@acme.example"]
    );
    assert_eq!(
        emails(&gw.ok(&ada.1, "GET", &search("lovelace"), None).await),
        ["bob@elsewhere.example"]
    );
    assert_eq!(
        emails(&gw.ok(&ada.1, "GET", &search("BOT"), None).await),
        ["report-bot"]
    );
    assert_eq!(
        emails(&gw.ok(&ada.1, "GET", &search("acme.example"), None).await),
        ["ada@acme.example", "owner@acme.example"]
    );
    assert!(emails(&gw.ok(&ada.1, "GET", &search("nobody"), None).await).is_empty());
    let all = gw.ok(&ada.1, "GET", "/v1/users", None).await;
    assert_eq!(
        emails(&gw.ok(&ada.1, "GET", &search("  "), None).await),
        emails(&all),
        "blank q lists everyone"
    );

    let (status, v) = gw.call(robot_token, "GET", &search("ada"), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "API users may not list or search"
    );
    let (status, _) = gw
        .call(&ada.1, "GET", &search(&"x".repeat(300)), None)
        .await;
    assert_eq!(status, 400, "an over-long search is refused");
    let (status, _) = gw.call(&ada.1, "GET", "/v1/users?name=ada", None).await;
    assert_eq!(status, 400, "unknown parameters are refused");
    gw.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
