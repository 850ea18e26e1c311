//! PostgreSQL resolves names its own way: through the service account's search path, through
//! extensions, through whatever shares their schemas. These tests run the gateway over HTTP in
//! front of a real server configured the way real ones are (a role whose search_path is not
//! `public`; pg_trgm, hstore and PostGIS installed in `public` beside user objects), and check
//! what the server actually ran, through marker tables the planted functions would write.
mod support;

use serde_json::{Value, json};
use support::db::PgTestDb;
use support::gateway::{Gateway, pg_server};

const PASSWORD: &str = "resolution_pw";

/// Fails with a hint when PostGIS is not installed for the local server (CI installs it).
const POSTGIS_HINT: &str = "PostGIS is not installed for the local PostgreSQL. Install it with:\n  \
    apt-get install postgresql-$(ls /etc/postgresql)-postgis-3\n(.ci/run does this on CI)";

struct World {
    gw: Gateway,
    db: PgTestDb,
    role: String,
    admin: tokio_postgres::Client,
}

/// A throwaway database prepared by `setup` (as its admin; `{role}` is the service account),
/// and a gateway with the postgres integration on.
async fn world(setup: &str) -> World {
    let db = PgTestDb::create().await;
    let role = db.create_role("sluice_res", PASSWORD).await;
    let admin = db.admin_client().await;
    let setup = setup.replace("{role}", &role).replace("{db}", &db.name);
    if let Err(e) = admin.batch_execute(&setup).await {
        let message = e.to_string();
        if message.contains("postgis")
            || e.as_db_error()
                .is_some_and(|d| d.message().contains("postgis"))
        {
            panic!("{POSTGIS_HINT}\n({e})");
        }
        panic!("fixture setup: {e:?}");
    }
    let gw = Gateway::start().await;
    gw.set_integration(&gw.owner, "postgres", true).await;
    World {
        gw,
        db,
        role,
        admin,
    }
}

impl World {
    /// Registers a datasource with this scope and an app on it; returns (datasource, app).
    async fn app(&self, name: &str, policy: Value) -> (String, String) {
        let (host, port) = pg_server();
        let ds = self
            .gw
            .datasource(
                &self.gw.owner,
                json!({
                    "name": name, "kind": "postgres",
                    "connection": {"host": host, "port": port, "database": self.db.name,
                                   "user": self.role, "password": PASSWORD,
                                   "tls": {"mode": "disable"}},
                    "policy": policy,
                }),
            )
            .await;
        let app = self.gw.app(&self.gw.owner, name, &[&ds]).await;
        (ds, app)
    }

    async fn rows(&self, app: &str, sql: &str) -> Value {
        self.gw.rows(&self.gw.owner, app, json!({"sql": sql})).await["rows"].clone()
    }

    async fn refused(&self, app: &str, sql: &str, code: &str) {
        let (status, v) = self
            .gw
            .query(&self.gw.owner, app, json!({"sql": sql}))
            .await;
        assert_eq!(v["error"]["code"], code, "{sql} -> {status} {v}");
    }

    async fn marks(&self) -> i64 {
        self.admin
            .query_one("SELECT count(*) FROM public.marks", &[])
            .await
            .expect("marks")
            .get(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accounts_own_search_path_decides_where_unqualified_names_go_and_check_records_it() {
    let w = world(
        "CREATE SCHEMA lib;
         CREATE TABLE lib.secrets (v text); INSERT INTO lib.secrets VALUES ('lib secret');
         CREATE TABLE public.secrets (v text); INSERT INTO public.secrets VALUES ('harmless');
         CREATE TABLE lib.members (id int); INSERT INTO lib.members VALUES (1), (2);
         CREATE TABLE lib.pg_notes (v text); INSERT INTO lib.pg_notes VALUES ('a note');
         ALTER ROLE {role} SET search_path = lib;
         GRANT USAGE ON SCHEMA lib TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA lib, public TO {role};",
    )
    .await;
    let (ds, app) = w
        .app("lib", json!({"denied_tables": ["lib.secrets"]}))
        .await;
    // The check reads the account's search path and records it in the policy.
    let check =
        w.gw.ok(
            &w.gw.owner,
            "POST",
            &format!("/v1/datasources/{ds}/check"),
            None,
        )
        .await;
    assert_eq!(check["default_schema"], "lib", "{check}");
    let shown =
        w.gw.ok(&w.gw.owner, "GET", &format!("/v1/datasources/{ds}"), None)
            .await;
    assert_eq!(shown["policy"]["default_schema"], "lib", "{shown}");

    w.refused(&app, "SELECT v FROM secrets", "table_not_allowed")
        .await;
    w.refused(
        &app,
        "SELECT * FROM (SELECT v FROM SECRETS) s",
        "table_not_allowed",
    )
    .await;
    assert_eq!(
        w.rows(&app, "SELECT v FROM public.secrets").await,
        json!([["harmless"]])
    );
    // pg_notes is no pg_catalog relation: it is lib's, as the server resolves it.
    assert_eq!(
        w.rows(&app, "SELECT v FROM pg_notes").await,
        json!([["a note"]])
    );

    // The reverse: only lib.members allowed, and the unqualified name is that table.
    let (_, members_only) = w
        .app("members", json!({"allowed_tables": ["lib.members"]}))
        .await;
    assert_eq!(
        w.rows(&members_only, "SELECT count(*) FROM members").await,
        json!([[2]])
    );
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_schema_an_admin_set_is_kept_and_used() {
    let w = world(
        "CREATE SCHEMA sales; CREATE TABLE sales.orders (id int); INSERT INTO sales.orders VALUES (7);
         GRANT USAGE ON SCHEMA sales TO {role}; GRANT SELECT ON sales.orders TO {role};",
    )
    .await;
    let (ds, app) = w.app("sales", json!({"default_schema": "sales"})).await;
    let check =
        w.gw.ok(
            &w.gw.owner,
            "POST",
            &format!("/v1/datasources/{ds}/check"),
            None,
        )
        .await;
    assert_eq!(check["default_schema"], "sales", "{check}");
    assert_eq!(w.rows(&app, "SELECT id FROM orders").await, json!([[7]]));
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_extensions_work_by_name_and_objects_planted_beside_them_never_run() {
    let w = world(
        "CREATE EXTENSION pg_trgm; CREATE EXTENSION hstore; CREATE EXTENSION postgis;
         CREATE TABLE public.marks (what text);
         GRANT INSERT, SELECT ON public.marks TO {role};
         CREATE TABLE public.places (name varchar, tags hstore, geom geometry);
         INSERT INTO public.places VALUES
           ('Cafe', 'kind=>cafe', ST_MakePoint(1, 1)), ('Bakery', 'kind=>shop', ST_MakePoint(50, 50));
         GRANT SELECT ON public.places TO {role};
         -- Planted beside the extensions: an overload that outranks pg_catalog.lower(text) for a
         -- varchar argument, and an operator % for varchar that outranks pg_trgm's for text.
         CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS
           $$ INSERT INTO public.marks VALUES ('lower ran'); SELECT 'planted' $$;
         CREATE FUNCTION public.planted_pct(varchar, varchar) RETURNS boolean LANGUAGE sql AS
           $$ INSERT INTO public.marks VALUES ('% ran'); SELECT true $$;
         CREATE OPERATOR public.% (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.planted_pct);",
    )
    .await;
    let (_, trusting) = w
        .app(
            "trusting",
            json!({"access": "read_write", "extensions": ["pg_trgm", "hstore", "postgis"]}),
        )
        .await;
    let sim = w
        .rows(
            &trusting,
            "SELECT name, round(similarity(name, 'cafe')::numeric, 2) FROM places ORDER BY 1",
        )
        .await;
    assert_eq!(sim[1][0], "Cafe", "{sim}");
    assert_eq!(
        w.rows(&trusting, "SELECT tags -> 'kind' FROM places ORDER BY name")
            .await,
        json!([["shop"], ["cafe"]])
    );
    assert_eq!(
        w.rows(
            &trusting,
            "SELECT name FROM places WHERE geom && ST_MakeEnvelope(0, 0, 10, 10)"
        )
        .await,
        json!([["Cafe"]])
    );
    assert_eq!(
        w.rows(&trusting, "SELECT ST_AsText(ST_MakePoint(1, 2))")
            .await,
        json!([["POINT(1 2)"]])
    );
    assert_eq!(
        w.rows(&trusting, "SELECT 'cafe' <-> 'cafes' < 1").await,
        json!([[true]])
    );
    // Names a planted object answers to are refused while public is on the path.
    w.refused(
        &trusting,
        "SELECT lower(name) FROM places",
        "function_not_allowed",
    )
    .await;
    w.refused(
        &trusting,
        "SELECT name % 'x' FROM places",
        "function_not_allowed",
    )
    .await;

    // Trusting nothing: public is not on the path, so lower() is pg_catalog's and the
    // extension functions are unknown names.
    let (_, plain) = w.app("plain", json!({})).await;
    assert_eq!(
        w.rows(&plain, "SELECT lower(name) FROM places ORDER BY 1")
            .await,
        json!([["bakery"], ["cafe"]])
    );
    w.refused(
        &plain,
        "SELECT similarity('a', 'b')",
        "function_not_allowed",
    )
    .await;
    w.refused(&plain, "SELECT 'a' <-> 'b'", "function_not_allowed")
        .await;
    assert_eq!(w.marks().await, 0, "no planted object ran");
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_fields_that_only_postgres_has_are_refused_elsewhere_and_bad_values_are_400() {
    let gw = Gateway::start().await;
    for kind in ["mysql", "sqlite"] {
        gw.set_integration(&gw.owner, kind, true).await;
    }
    gw.set_integration(&gw.owner, "postgres", true).await;
    let connection = |kind: &str| match kind {
        "sqlite" => json!({"path": "/nonexistent.db"}),
        _ => json!({"host": "127.0.0.1", "database": "d", "user": "u", "password": "p"}),
    };
    for (kind, policy, field) in [
        (
            "mysql",
            json!({"default_schema": "x"}),
            "policy.default_schema",
        ),
        (
            "sqlite",
            json!({"extensions": ["fts5"]}),
            "policy.extensions",
        ),
        (
            "postgres",
            json!({"extensions": ["postgis; DROP"]}),
            "policy.extensions",
        ),
        (
            "postgres",
            json!({"default_schema": ""}),
            "policy.default_schema",
        ),
        (
            "postgres",
            json!({"default_schema": "s".repeat(64)}),
            "policy.default_schema",
        ),
    ] {
        let (status, v) = gw
            .call(
                &gw.owner,
                "POST",
                "/v1/datasources",
                Some(json!({"name": format!("bad-{kind}-{field}"), "kind": kind,
                            "connection": connection(kind), "policy": policy})),
            )
            .await;
        assert_eq!(status, 400, "{kind} {policy} -> {v}");
        assert_eq!(v["error"]["code"], "bad_request");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(field),
            "{v}"
        );
    }
    gw.stop().await;
}

/// A built-in off the list that the admin allowed is as opaque as a user function: a setting it
/// leaves in the session (here a custom one, as a row-level security policy would read) is gone
/// before the next request on the same pooled connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_left_by_an_admin_allowed_built_in_never_reaches_the_next_request() {
    let w = world("SELECT 1").await;
    let (host, port) = pg_server();
    let ds =
        w.gw.datasource(
            &w.gw.owner,
            json!({
                "name": "tenant", "kind": "postgres",
                "connection": {"host": host, "port": port, "database": w.db.name,
                               "user": w.role, "password": PASSWORD,
                               "tls": {"mode": "disable"}},
                "policy": {"extra_functions": ["set_config", "current_setting", "pg_backend_pid"]},
                "pool": {"max_size": 1},
            }),
        )
        .await;
    let app = w.gw.app(&w.gw.owner, "tenant", &[&ds]).await;
    let backend = w.rows(&app, "SELECT pg_backend_pid()").await;
    assert_eq!(
        w.rows(&app, "SELECT set_config('app.tenant', 'acme', false)")
            .await,
        json!([["acme"]])
    );
    let left = w
        .rows(&app, "SELECT current_setting('app.tenant', true)")
        .await;
    assert_ne!(
        left,
        json!([["acme"]]),
        "the setting reached the next request"
    );
    assert_eq!(
        w.rows(&app, "SELECT pg_backend_pid()").await,
        backend,
        "all on one connection (pool of one)"
    );
    w.gw.stop().await;
}
