//! What an operator's probes see: /readyz turns not-ready when the control-plane store file is
//! removed or replaced under the running gateway (and ready again when it is put back), while
//! /healthz stays up; /metrics shows each datasource's pool and counts its failures.
mod support;

use serde_json::{Value, json};
use support::gateway::{Gateway, sqlite_acme, sqlite_datasource};

async fn probe(gw: &Gateway, path: &str) -> (u16, Value) {
    let res = gw
        .http
        .get(format!("{}{path}", gw.base))
        .send()
        .await
        .expect("probe");
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_store_file_is_gone_and_ready_when_it_is_back() {
    let gw = Gateway::start().await;
    let store = gw.data_dir.join("sluice.db");
    let aside = gw.data_dir.join("sluice.db.aside");
    assert_eq!(probe(&gw, "/readyz").await.0, 200);

    std::fs::rename(&store, &aside).expect("move the store file away");
    let (status, body) = probe(&gw, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(
        probe(&gw, "/healthz").await.0,
        200,
        "the process is still alive"
    );

    std::fs::rename(&aside, &store).expect("put the store file back");
    let (status, body) = probe(&gw, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    // A different file in its place (a restore over a running gateway) is not the file the
    // gateway writes to: not ready until it is restarted on it.
    std::fs::copy(&store, &aside).expect("copy the store");
    std::fs::rename(&aside, &store).expect("replace the store file");
    let (status, body) = probe(&gw, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_each_pool_and_count_a_failing_datasource_by_id_and_code() {
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "sqlite", true).await;
    let good_path = sqlite_acme(&gw, "good.db");
    let bad_path = sqlite_acme(&gw, "bad.db");
    let good = gw
        .datasource(&gw.owner, sqlite_datasource("good", &good_path, json!({})))
        .await;
    let bad = gw
        .datasource(&gw.owner, sqlite_datasource("bad", &bad_path, json!({})))
        .await;
    let app = gw.app(&gw.owner, "probe", &[&good, &bad]).await;
    let sql = |ds: &str| json!({"sql": "SELECT count(*) AS n FROM customers", "datasource": ds});
    gw.rows(&gw.owner, &app, sql("good")).await;

    // The file behind "bad" disappears: its queries fail, "good" is unaffected.
    std::fs::remove_file(&bad_path).expect("remove the datasource file");
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (status, body) = gw.query(&gw.owner, &app, sql("bad")).await;
        assert!(status >= 500, "{status} {body}");
        codes.push(body["error"]["code"].as_str().expect("code").to_owned());
    }
    gw.rows(&gw.owner, &app, sql("good")).await;

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!("sluice_pool_size{{datasource=\"{good}\"}}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("sluice_pool_in_use{{datasource=\"{good}\"}} 0")),
        "{metrics}"
    );
    let failing = format!(
        "sluice_datasource_errors_total{{datasource=\"{bad}\",code=\"{}\"}} 3",
        codes[0]
    );
    assert!(metrics.contains(&failing), "no {failing} in\n{metrics}");
    assert!(
        !metrics.contains(&format!(
            "sluice_datasource_errors_total{{datasource=\"{good}\""
        )),
        "{metrics}"
    );
    gw.stop().await;
}
