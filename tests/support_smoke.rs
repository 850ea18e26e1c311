//! The throwaway-database helpers work against the real local servers.
mod support;

use support::db::{MysqlTestDb, PgTestDb};

#[tokio::test]
async fn a_throwaway_postgres_database_is_created_usable_and_dropped() {
    let db = PgTestDb::create().await;
    let name = db.name.clone();
    let c = db.admin_client().await;
    let row = c.query_one("SELECT current_database()", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), name);
    drop(c);
    drop(db);
    let admin = support::db::pg_connect(&support::db::pg_admin_url()).await;
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the test database is dropped with its guard");
}

#[tokio::test]
async fn a_throwaway_mysql_database_is_created_usable_and_dropped() {
    use mysql_async::prelude::Queryable;
    let db = MysqlTestDb::create().await;
    let name = db.name.clone();
    let mut c = db.admin_conn().await;
    let cur: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(cur.as_deref(), Some(name.as_str()));
    c.disconnect().await.unwrap();
    drop(db);
    let mut admin = support::db::mysql_connect(&support::db::mysql_admin_url()).await;
    let n: Option<i64> = admin
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
            (name,),
        )
        .await
        .unwrap();
    assert_eq!(n, Some(0), "the test database is dropped with its guard");
}
