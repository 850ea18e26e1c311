//! A real browser for the console tests: Debian's headless Chromium driven by its chromedriver
//! through the W3C WebDriver protocol, spoken here over reqwest (already a dev-dependency; the
//! dozen commands the tests use do not need a client crate).
//!
//! When Chromium or chromedriver is missing the test fails (never skips) and says how to install
//! them. Each browser gets a fresh profile directory and the flags that keep Chromium from
//! reaching out to the network (this machine has none; without them Chromium stalls on refused
//! connections).

#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const INSTALL_HINT: &str = "the console tests need Debian's Chromium and its WebDriver: \
    apt-get install -y chromium chromium-driver (or set SLUICE_TEST_CHROMIUM and \
    SLUICE_TEST_CHROMEDRIVER to their paths)";

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `wait_*` helpers wait before failing.
pub const WAIT: Duration = Duration::from_secs(15);

fn program(env: &str, default: &str) -> PathBuf {
    let p = std::env::var(env)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(default));
    assert!(
        p.exists(),
        "{} not found at {}: {INSTALL_HINT}",
        default,
        p.display()
    );
    p
}

/// An error answer of the driver: `error` is WebDriver's code (`no such element`, …).
#[derive(Debug)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

pub struct Browser {
    http: reqwest::Client,
    driver_url: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Clone, Debug)]
pub struct El(pub String);

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub async fn start() -> Browser {
        let chromium = program("SLUICE_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("SLUICE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start {}: {e}; {INSTALL_HINT}",
                    chromedriver.display()
                )
            });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let driver_url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{driver_url}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start: {INSTALL_HINT}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-extensions".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            // A dialog (alert) stays open for the test to see, rather than being dismissed.
            "unhandledPromptBehavior": "ignore",
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            http,
            driver_url,
            session: String::new(),
            driver,
            _profile: profile,
        };
        let v = browser
            .raw("POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| {
                panic!("chromedriver could not start Chromium: {e:?}; {INSTALL_HINT}")
            });
        browser.session = v["sessionId"].as_str().expect("session id").to_owned();
        browser
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let url = format!("{}{path}", self.driver_url);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let res = req.send().await.map_err(|e| WdError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let ok = res.status().is_success();
        let v: Value = res.json().await.map_err(|e| WdError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            // New-session answers carry sessionId inside value.
            Ok(value)
        } else {
            Err(WdError {
                error: value["error"].as_str().unwrap_or("unknown").to_owned(),
                message: value["message"].as_str().unwrap_or("").to_owned(),
            })
        }
    }

    /// A session command; panics on a driver error.
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {} {}", e.error, e.message))
    }

    async fn try_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Runs a script in the page (`arguments[i]` are `args`; elements as `El`) and returns its value.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// An element as a script argument.
    pub fn arg(el: &El) -> Value {
        json!({ ELEMENT: el.0 })
    }

    async fn find_with(&self, using: &str, value: &str) -> Option<El> {
        let v = self
            .try_cmd(
                "POST",
                "/element",
                Some(json!({"using": using, "value": value})),
            )
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|s| El(s.to_owned()))
    }

    pub async fn find_all(&self, css: &str) -> Vec<El> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| El(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for an element matching a CSS selector that is displayed.
    pub async fn css(&self, css: &str) -> El {
        self.wait_el("css selector", css).await
    }

    /// Waits for an element matching an XPath expression that is displayed.
    pub async fn xpath(&self, xpath: &str) -> El {
        self.wait_el("xpath", xpath).await
    }

    /// Waits for a displayed, enabled button (or link styled as one) whose text is `text`.
    pub async fn button(&self, text: &str) -> El {
        self.xpath(&format!(
            "//*[(self::button or self::a) and normalize-space()='{text}' and not(@disabled)]"
        ))
        .await
    }

    async fn wait_el(&self, using: &str, value: &str) -> El {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(el) = self.find_with(using, value).await
                && self.displayed(&el).await
            {
                return el;
            }
            if Instant::now() > deadline {
                let text = self.page_text().await;
                panic!(
                    "no displayed element for {using} {value:?} after {WAIT:?}; the page says:\n{text}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Is there a displayed element for this XPath right now (no waiting)?
    pub async fn has_xpath(&self, xpath: &str) -> bool {
        match self.find_with("xpath", xpath).await {
            Some(el) => self.displayed(&el).await,
            None => false,
        }
    }

    pub async fn displayed(&self, el: &El) -> bool {
        self.try_cmd("GET", &format!("/element/{}/displayed", el.0), None)
            .await
            .map(|v| v == true)
            .unwrap_or(false)
    }

    pub async fn click(&self, el: &El) {
        // Scrolled into view by the driver; a toast or sticky element over it is retried.
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .try_cmd("POST", &format!("/element/{}/click", el.0), None)
                .await
            {
                Ok(_) => return,
                Err(e) if e.error == "element click intercepted" && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click: {} {}", e.error, e.message),
            }
        }
    }

    /// Types into an element (after clearing it when `clear`).
    pub async fn type_into(&self, el: &El, text: &str, clear: bool) {
        if clear {
            self.cmd("POST", &format!("/element/{}/clear", el.0), None)
                .await;
        }
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Presses keys on whatever has focus (WebDriver key codes, e.g. "\u{E004}" for Tab).
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
        self.cmd("DELETE", "/actions", None).await;
    }

    pub async fn text(&self, el: &El) -> String {
        self.cmd("GET", &format!("/element/{}/text", el.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A DOM property (`value`, `checked`, `dataset`…).
    pub async fn prop(&self, el: &El, name: &str) -> Value {
        self.cmd("GET", &format!("/element/{}/property/{name}", el.0), None)
            .await
    }

    /// Picks the option whose visible text contains `text` in a <select>, as a user would.
    pub async fn choose(&self, select: &El, text: &str) {
        let found = self
            .exec(
                "const s = arguments[0]; const o = [...s.options].find((o) => o.textContent.includes(arguments[1]));
                 if (!o) return false; s.value = o.value; s.dispatchEvent(new Event('change', {bubbles: true})); return true;",
                vec![Self::arg(select), json!(text)],
            )
            .await;
        assert_eq!(found, true, "no option containing {text:?}");
    }

    /// The visible text of the whole page (for failure messages and text checks).
    pub async fn page_text(&self) -> String {
        self.exec(
            "return document.body ? document.body.innerText : ''",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until `check` returns Some, polling every 50 ms.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.page_text().await;
                panic!("timed out waiting for {what}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page's text contains `needle`.
    pub async fn wait_text(&self, needle: &str) {
        self.wait_for(&format!("the text {needle:?}"), || async {
            self.page_text().await.contains(needle).then_some(())
        })
        .await
    }

    /// The text of an open dialog (alert, confirm, prompt), if one is open.
    pub async fn dialog_text(&self) -> Option<String> {
        self.try_cmd("GET", "/alert/text", None)
            .await
            .ok()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("base64 png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Messages the page logged at SEVERE level (uncaught errors, CSP violations).
    pub async fn console_errors(&self) -> Vec<String> {
        let v = self
            .try_cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .await
            .unwrap_or(Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    // A refused API call (403, 404…) is logged by Chromium as a failed load;
                    // that is the API answering, not the page failing.
                    .filter(|e| {
                        !e["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("Failed to load resource")
                    })
                    .filter_map(|e| e["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; then the driver itself.
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.driver_url, self.session);
            let _ = std::thread::spawn(move || {
                blocking_delete(&url);
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A DELETE from `Drop`, which may run inside the test's runtime (where blocking on it is not
/// allowed): a short-lived runtime on this thread.
fn blocking_delete(url: &str) {
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        rt.block_on(async {
            let _ = reqwest::Client::new()
                .delete(url)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
        });
    }
}
