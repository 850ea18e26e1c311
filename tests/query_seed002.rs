//! Seed 002 through the HTTP API: one service account per audience, one datasource and one app
//! per account, and users who reach data only through the apps shared with them. Run on
//! PostgreSQL and MariaDB (the database's own grants refuse), and on SQLite (the scope's
//! `allowed_tables` emulates the grants). Everything is set up over HTTP as a real admin would.
mod support;

use serde_json::{Value, json};
use support::gateway::{Gateway, mysql_acme, pg_acme, sqlite_acme, sqlite_datasource};

/// How a refusal of a table looks on this datasource kind.
#[derive(Clone, Copy)]
struct Refusal {
    status: u16,
    code: &'static str,
}

/// The database's own permission error, passed on as the statement's failure.
const BY_THE_DATABASE: Refusal = Refusal {
    status: 422,
    code: "query_failed",
};
/// The scope policy's table list, before the statement reaches the database.
const BY_THE_SCOPE: Refusal = Refusal {
    status: 403,
    code: "table_not_allowed",
};

/// The three datasource create bodies: analysts, sales reps, executives.
struct Datasources {
    kind: &'static str,
    analysts: Value,
    sales: Value,
    executives: Value,
    refusal: Refusal,
}

struct Audience {
    app: String,
    user_id: String,
    token: String,
}

struct Company {
    admin: String,
    analysts: Audience,
    sales: Audience,
    executives: Audience,
}

/// The owner invites an admin; the admin turns the integration on, invites the three audiences,
/// registers the three datasources with the service accounts' passwords, creates one app per
/// audience and shares each with its audience only.
async fn set_up(gw: &Gateway, ds: &Datasources) -> Company {
    let (_, admin) = gw.invite(&gw.owner, "admin@acme.example", "admin").await;
    gw.set_integration(&admin, ds.kind, true).await;
    let mut audiences = Vec::new();
    for (key, body) in [
        ("analysts", &ds.analysts),
        ("sales", &ds.sales),
        ("executives", &ds.executives),
    ] {
        let (user_id, token) = gw
            .invite(&admin, &format!("{key}@acme.example"), "consumer")
            .await;
        let ds_id = gw.datasource(&admin, body.clone()).await;
        let app = gw.app(&admin, &format!("acme {key}"), &[&ds_id]).await;
        gw.share(&admin, &app, &user_id).await;
        audiences.push(Audience {
            app,
            user_id,
            token,
        });
    }
    let [analysts, sales, executives] = <[_; 3]>::try_from(audiences).ok().unwrap();
    Company {
        admin,
        analysts,
        sales,
        executives,
    }
}

/// `SELECT count(*) FROM table` through the audience's app must answer `expected`.
async fn count_is(gw: &Gateway, who: &Audience, table: &str, expected: i64) {
    let v = gw
        .rows(
            &who.token,
            &who.app,
            json!({"sql": format!("SELECT count(*) AS n FROM {table}")}),
        )
        .await;
    assert_eq!(v["rows"], json!([[expected]]), "count of {table}: {v}");
}

async fn refused(gw: &Gateway, who: &Audience, sql: &str, r: Refusal) {
    let (status, v) = gw.query(&who.token, &who.app, json!({"sql": sql})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (r.status, Some(r.code)),
        "{sql}: {v}"
    );
    // The database's refusal is its permission error, not some other failure.
    let message = v["error"]["message"].as_str().unwrap_or_default();
    let expected = if r.code == "query_failed" {
        "denied"
    } else {
        "not allowed"
    };
    assert!(message.contains(expected), "{sql}: {message}");
}

async fn scenario(gw: &Gateway, ds: Datasources) {
    let c = set_up(gw, &ds).await;
    let r = ds.refusal;

    // The sales reps read customers (and their orders), never the financial summary.
    let v = gw
        .rows(
            &c.sales.token,
            &c.sales.app,
            json!({"sql": "SELECT id, name FROM customers ORDER BY id"}),
        )
        .await;
    assert_eq!(v["row_count"], 500, "{}", v["row_count"]);
    assert_eq!(v["rows"][0][0], 1);
    assert!(v["rows"][0][1].is_string(), "{}", v["rows"][0]);
    assert_eq!(v["truncated"], false);
    count_is(gw, &c.sales, "orders", 5_000).await;
    count_is(gw, &c.sales, "order_items", 15_000).await;
    refused(gw, &c.sales, "SELECT * FROM financial_summary", r).await;
    refused(gw, &c.sales, "SELECT count(*) FROM invoices", r).await;

    // The executives read the summary and nothing else.
    let v = gw
        .rows(
            &c.executives.token,
            &c.executives.app,
            json!({"sql": "SELECT month, revenue FROM financial_summary ORDER BY month"}),
        )
        .await;
    assert_eq!(v["row_count"], 36);
    assert!(
        v["rows"][0][0].is_string(),
        "a month is an ISO date: {}",
        v["rows"][0]
    );
    for table in ["customers", "orders", "order_items", "invoices", "products"] {
        refused(
            gw,
            &c.executives,
            &format!("SELECT count(*) FROM {table}"),
            r,
        )
        .await;
    }

    // The analysts read most tables; the private sales_reps columns stay closed.
    for (table, n) in [
        ("customers", 500),
        ("products", 200),
        ("orders", 5_000),
        ("order_items", 15_000),
        ("invoices", 5_000),
        ("financial_summary", 36),
    ] {
        count_is(gw, &c.analysts, table, n).await;
    }
    refused(gw, &c.analysts, "SELECT salary FROM sales_reps", r).await;

    // Each consumer may use only the app shared with them: the others do not exist for them.
    for (who, others) in [
        (&c.sales, [&c.analysts, &c.executives]),
        (&c.executives, [&c.analysts, &c.sales]),
        (&c.analysts, [&c.sales, &c.executives]),
    ] {
        for other in others {
            let code = gw
                .refused(
                    &who.token,
                    &other.app,
                    json!({"sql": "SELECT 1 AS one"}),
                    404,
                )
                .await;
            assert_eq!(code, "not_found");
        }
        let listed = gw.ok(&who.token, "GET", "/v1/apps", None).await;
        let ids: Vec<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [who.app.as_str()], "apps listed for {}", who.user_id);
    }

    // The audit shows every attempt through the sales app, allowed and refused.
    let sales_audit = gw
        .audit(
            &c.admin,
            &format!(
                "action=query&app_id={}&actor_id={}",
                c.sales.app, c.sales.user_id
            ),
        )
        .await;
    assert_eq!(sales_audit.len(), 5, "{sales_audit:?}");
    let denied: Vec<&Value> = sales_audit
        .iter()
        .filter(|e| e["outcome"] != "allowed")
        .collect();
    assert_eq!(denied.len(), 2, "{sales_audit:?}");
    assert!(denied.iter().all(|e| e["code"] == r.code), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_on_postgres_each_audience_reads_what_its_service_account_may() {
    let acme = pg_acme().await;
    let gw = Gateway::start().await;
    let a = &acme.accounts;
    let ds = Datasources {
        kind: "postgres",
        analysts: acme.datasource("acme-pg-analysts", &a.analyst, json!({})),
        sales: acme.datasource("acme-pg-sales", &a.sales, json!({})),
        executives: acme.datasource("acme-pg-executives", &a.executive, json!({})),
        refusal: BY_THE_DATABASE,
    };
    scenario(&gw, ds).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_on_mysql_each_audience_reads_what_its_service_account_may() {
    let acme = mysql_acme().await;
    let gw = Gateway::start().await;
    let a = &acme.accounts;
    let ds = Datasources {
        kind: "mysql",
        analysts: acme.datasource("acme-my-analysts", &a.analyst, json!({})),
        sales: acme.datasource("acme-my-sales", &a.sales, json!({})),
        executives: acme.datasource("acme-my-executives", &a.executive, json!({})),
        refusal: BY_THE_DATABASE,
    };
    scenario(&gw, ds).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_on_sqlite_allowed_tables_stand_in_for_the_grants() {
    let gw = Gateway::start().await;
    let path = sqlite_acme(&gw, "acme.sqlite");
    let tables = |t: &[&str]| json!({"allowed_tables": t});
    let ds = Datasources {
        kind: "sqlite",
        analysts: sqlite_datasource(
            "acme-sqlite-analysts",
            &path,
            tables(&[
                "main.customers",
                "main.products",
                "main.orders",
                "main.order_items",
                "main.invoices",
                "main.financial_summary",
            ]),
        ),
        sales: sqlite_datasource(
            "acme-sqlite-sales",
            &path,
            tables(&["main.customers", "main.orders", "main.order_items"]),
        ),
        executives: sqlite_datasource(
            "acme-sqlite-executives",
            &path,
            tables(&["main.financial_summary"]),
        ),
        refusal: BY_THE_SCOPE,
    };
    scenario(&gw, ds).await;
    gw.stop().await;
}
