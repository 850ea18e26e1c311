//! The HTTP edge: a slow client that never finishes its headers is disconnected after
//! `limits.header_read_timeout_ms`, and a panicking handler answers 500 with the error body while
//! the server keeps serving.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tower::ServiceExt;

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = support::app::spawn_app_with(&["acme"], |c| {
        c.limits.header_read_timeout_ms = 300;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // Half a request: the blank line that ends the headers never comes.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        let started = Instant::now();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        (
            n,
            started.elapsed(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        )
    })
    .await
    .expect("join");
    let (_n, waited, text) = result;
    assert!(
        waited < Duration::from_secs(3),
        "the connection was held for {waited:?}"
    );
    assert!(
        !text.contains("200 OK"),
        "no answer to a request never sent: {text}"
    );
    // And a complete request on a new connection is answered as usual.
    let ok = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
}

async fn boom() -> &'static str {
    panic!("a bug in a handler")
}

#[tokio::test]
async fn a_panicking_handler_answers_500_with_the_error_body_and_the_server_keeps_serving() {
    let app = sluice::http::with_middleware(
        Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "fine" })),
        1024,
    );
    let res = app
        .clone()
        .oneshot(Request::get("/boom").body(Body::empty()).expect("request"))
        .await
        .expect("an answer, not a crash");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.headers().contains_key("x-request-id"));
    let body = axum::body::to_bytes(res.into_body(), 4096)
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "internal");
    assert!(
        !v.to_string().contains("a bug in a handler"),
        "the panic message is not sent to the client: {v}"
    );
    let res = app
        .oneshot(Request::get("/ok").body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(res.status(), StatusCode::OK);
}
