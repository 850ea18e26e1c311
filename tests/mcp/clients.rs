//! The MCP clients the tests drive, none of them written here: the official MCP Python SDK
//! (through `tests/mcp/client.py`) and the MCP Inspector CLI, installed by `.ci/run` under
//! `target/mcp-clients/`. A missing client fails the test with how to install it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-clients")
}

const INSTALL_HINT: &str = "the MCP test clients are installed by `bash .ci/run`, or by hand:\n  \
    python3 -m venv target/mcp-clients/venv && target/mcp-clients/venv/bin/pip install mcp==2.3.0\n  \
    npm install --prefix target/mcp-clients/npm @modelcontextprotocol/inspector@2.12.0";

fn python() -> PathBuf {
    let p = clients_dir().join("venv/bin/python");
    let ok = std::process::Command::new(&p)
        .args(["-c", "import mcp.client.streamable_http"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "the MCP Python SDK is missing ({p:?}); {INSTALL_HINT}");
    p
}

fn inspector() -> PathBuf {
    let p = clients_dir().join("npm/node_modules/.bin/mcp-inspector");
    assert!(
        p.exists(),
        "the MCP Inspector is missing ({p:?}); {INSTALL_HINT}"
    );
    p
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py")
}

/// Starts `client.py COMMAND URL TOKEN` with the plan on its standard input.
pub async fn spawn_python(
    command: &str,
    url: &str,
    token: &str,
    plan: &Value,
) -> tokio::process::Child {
    let mut child = Command::new(python())
        .arg(client_script())
        .args([command, url, token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python MCP client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(plan.to_string().as_bytes())
        .await
        .expect("write the plan");
    drop(stdin);
    child
}

/// One Python SDK session: what it saw, as JSON.
pub async fn python_session(url: &str, token: &str, steps: Value) -> Value {
    let child = spawn_python("session", url, token, &json!({"steps": steps})).await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the Python MCP session took over a minute")
        .expect("run the Python MCP client");
    assert!(
        out.status.success(),
        "the Python MCP client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The Inspector CLI's JSON answer to one method, and what it said on standard error when it
/// exited with an error (it does for a tool result with `isError`).
pub async fn inspector_call(url: &str, token: &str, args: &[&str]) -> (Value, Option<String>) {
    let catalog = tempfile::tempdir().expect("tempdir");
    let run = Command::new(inspector())
        .args(["--cli", url, "--transport", "http"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(args)
        // Its own catalogue file, not the user's home.
        .env("MCP_CATALOG_PATH", catalog.path().join("mcp.json"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the Inspector took over a minute")
        .expect("run the Inspector CLI");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the Inspector answered no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (v, (!out.status.success()).then_some(stderr))
}
