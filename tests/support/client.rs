//! The JSON API as a client sees it, for any gateway base URL: the in-process test server
//! (`gateway::Gateway`) or a real `sluice` process.

use serde_json::Value;

/// Any call: the status and the body as JSON (`Null` when empty, a string when not JSON).
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// A call that must succeed (2xx).
pub async fn ok(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (s, v) = call(http, base, token, method, path, body).await;
    assert!((200..300).contains(&s), "{method} {base}{path} -> {s} {v}");
    v
}
