//! `sluice demo` works as its printout promises: the real binary on a random port, its printed
//! curl lines replayed over HTTP for each audience (on every datasource it lists), and the printed
//! refused query refused.
mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

struct Demo {
    child: Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One printed curl line: where it posts, with which token, and the JSON body.
#[derive(Debug)]
struct Curl {
    url: String,
    token: String,
    body: Value,
}

/// An audience block of the printout.
#[derive(Debug)]
struct Audience {
    key: String,
    datasources: Vec<String>,
    curl: Curl,
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let from = s
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in {s:?}"))
        + start.len();
    let len = s[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not after {start:?} in {s:?}"));
    &s[from..from + len]
}

/// A curl command printed over two lines (the second starts with the content type).
fn parse_curl(first: &str, second: &str) -> Curl {
    Curl {
        url: between(first, "curl -s ", " ").to_owned(),
        token: between(first, "Bearer ", "'").to_owned(),
        body: serde_json::from_str(between(second, "-d '", "'")).expect("printed JSON body"),
    }
}

/// What the demo printed: the listen address, one entry per audience, the refused query's curl,
/// and every line up to it.
type Guide = (String, Vec<Audience>, Curl, Vec<String>);

/// Reads the guide from stdout until the refused query's curl, then parses it.
fn read_guide(lines: &std::sync::mpsc::Receiver<String>) -> Guide {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out: Vec<String> = Vec::new();
    let next = |out: &mut Vec<String>| {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the demo stopped printing; so far:\n{}", out.join("\n")));
        out.push(line.clone());
        line
    };
    let mut base = None;
    let mut audiences = Vec::new();
    let mut pending: Option<(String, Vec<String>)> = None;
    loop {
        let line = next(&mut out);
        if line.contains("sluice demo is running on ") {
            base = Some(between(&line, "running on ", " ").to_owned());
        } else if let Some(rest) = line.strip_prefix("== ")
            && rest.contains(" app (")
        {
            pending = Some((between(rest, " app (", ")").to_owned(), Vec::new()));
        } else if let Some(list) = line.trim().strip_prefix("datasources: ") {
            if let Some((_, ds)) = pending.as_mut() {
                *ds = list.split(", ").map(str::to_owned).collect();
            }
        } else if line.trim_start().starts_with("curl ") {
            let second = next(&mut out);
            let curl = parse_curl(&line, &second);
            match pending.take() {
                Some((key, datasources)) => audiences.push(Audience {
                    key,
                    datasources,
                    curl,
                }),
                None => {
                    let base = base.expect("the listen address was printed first");
                    return (base, audiences, curl, out);
                }
            }
        }
    }
}

async fn post(http: &reqwest::Client, curl: &Curl, body: &Value) -> (u16, Value) {
    let res = http
        .post(&curl.url)
        .bearer_auth(&curl.token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_its_printed_queries_and_refuses_the_printed_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("demo"))
        .env("SLUICE_LOG", "warn")
        // The demo loads acme on the same servers the rest of the suite uses.
        .env("SLUICE_DEMO_PG_URL", support::db::pg_admin_url())
        .env("SLUICE_DEMO_MYSQL_URL", support::db::mysql_admin_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut demo = Demo { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (base, audiences, refused, printed) = read_guide(&rx);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    // The demo states the TLS mode of its PostgreSQL and MySQL datasources (the queries below
    // show that the local servers answer with it).
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("TLS to the databases: mode disable")),
        "no TLS mode printed:\n{}",
        printed.join("\n")
    );
    let keys: Vec<&str> = audiences.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["analysts", "sales", "executives"]);

    let http = reqwest::Client::new();
    for a in &audiences {
        assert!(a.curl.url.starts_with(&base), "{:?}", a.curl);
        // The local servers are up in this suite, so every kind is listed.
        assert_eq!(a.datasources.len(), 3, "{a:?}");
        assert_eq!(a.curl.body["datasource"], json!(a.datasources[0]));
        for ds in &a.datasources {
            let mut body = a.curl.body.clone();
            body["datasource"] = json!(ds);
            let (status, v) = post(&http, &a.curl, &body).await;
            assert_eq!(status, 200, "{} on {ds}: {v}", a.key);
            let rows = v["rows"].as_array().expect("rows");
            assert!(!rows.is_empty(), "{} on {ds}: {v}", a.key);
            assert_eq!(v["datasource"]["name"], json!(ds));
        }
    }

    let sales = audiences.iter().find(|a| a.key == "sales").expect("sales");
    assert_eq!(refused.token, sales.curl.token);
    for ds in &sales.datasources {
        let mut body = refused.body.clone();
        body["datasource"] = json!(ds);
        let (status, v) = post(&http, &refused, &body).await;
        let code = v["error"]["code"].as_str().unwrap_or_default();
        assert!(
            (status, code) == (403, "table_not_allowed") || (status, code) == (422, "query_failed"),
            "refused query on {ds}: {status} {v}"
        );
    }
    // A token printed for one audience does not open another audience's app.
    let exec = audiences
        .iter()
        .find(|a| a.key == "executives")
        .expect("executives");
    let (status, _) = post(
        &http,
        &Curl {
            url: exec.curl.url.clone(),
            token: sales.curl.token.clone(),
            body: Value::Null,
        },
        &exec.curl.body,
    )
    .await;
    assert_eq!(status, 404);

    let _ = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = demo.child.try_wait().expect("wait") {
            assert!(status.success(), "sluice demo exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sluice demo did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The README's run command on a machine with no database server: the demo still starts, with
/// the SQLite datasources only, and its printed queries answer.
#[tokio::test]
async fn the_demo_runs_on_sqlite_alone_when_no_database_server_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1 on loopback: nothing listens, the connection is refused at once.
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
    let _demo = Demo { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (_base, audiences, _refused, printed) = read_guide(&rx);
    assert!(
        !printed
            .iter()
            .any(|l| l.starts_with("TLS to the databases")),
        "no network datasource, no TLS mode to state"
    );
    let http = reqwest::Client::new();
    for a in &audiences {
        assert_eq!(a.datasources.len(), 1, "only SQLite: {a:?}");
        assert!(a.datasources[0].starts_with("acme-sqlite-"), "{a:?}");
        let (status, v) = post(&http, &a.curl, &a.curl.body).await;
        assert_eq!(status, 200, "{}: {v}", a.key);
        assert!(!v["rows"].as_array().expect("rows").is_empty());
    }
}
