//! The pool registry on real SQLite files: one pool per datasource, reused while the settings are
//! unchanged, rebuilt for a new generation, closed on request and after the idle timeout.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sluice::datasource::registry::Registry;
use sluice::datasource::{Connection, DatasourceSpec, Execute, Execution, RegistrySettings};
use sluice::model::{DatasourceId, DatasourceKind};

fn spec(id: &str, path: &std::path::Path, generation: u64) -> DatasourceSpec {
    DatasourceSpec {
        id: DatasourceId(id.into()),
        kind: DatasourceKind::Sqlite,
        connection: Connection::Sqlite {
            path: path.to_path_buf(),
        },
        pool_max_size: 2,
        generation,
    }
}

async fn one_value(reg: &Registry, spec: &DatasourceSpec, sql: &str) -> String {
    let exec = Execute {
        sql: sql.into(),
        params: vec![],
        is_query: true,
        read_only: true,
        max_rows: 10,
        timeout: Duration::from_secs(5),
        may_change_session: false,
        search_path: None,
        paced_by_client: false,
    };
    match reg.execute(spec, exec).await.expect("execute") {
        Execution::Rows(mut rows) => {
            let row = rows.next().await.expect("a row").expect("ok row");
            String::from_utf8(row.to_vec()).expect("utf-8")
        }
        Execution::Affected { .. } => panic!("expected rows"),
    }
}

fn make_db(dir: &std::path::Path, name: &str, value: i64) -> std::path::PathBuf {
    let p = dir.join(name);
    let c = rusqlite::Connection::open(&p).expect("open");
    c.execute_batch(&format!(
        "CREATE TABLE t (v INTEGER); INSERT INTO t VALUES ({value});"
    ))
    .expect("create");
    p
}

fn registry(root: &std::path::Path, idle: Duration) -> Arc<Registry> {
    Registry::new(RegistrySettings {
        sqlite_roots: vec![root.to_path_buf()],
        idle_timeout: idle,
        ..Default::default()
    })
}

#[tokio::test]
async fn pools_are_reused_rebuilt_for_new_settings_and_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = make_db(dir.path(), "a.sqlite", 1);
    let b = make_db(dir.path(), "b.sqlite", 2);
    let reg = registry(dir.path(), Duration::from_secs(3600));

    let s1 = spec("ds_1", &a, 1);
    assert_eq!(one_value(&reg, &s1, "SELECT v FROM t").await, "[1]");
    assert_eq!(one_value(&reg, &s1, "SELECT v FROM t").await, "[1]");
    assert_eq!(reg.open_pools(), 1, "the second query reuses the pool");

    // New connection settings (another file) come with a new generation: the pool is rebuilt.
    let s1b = spec("ds_1", &b, 2);
    assert_eq!(one_value(&reg, &s1b, "SELECT v FROM t").await, "[2]");
    assert_eq!(reg.open_pools(), 1);

    let s2 = spec("ds_2", &a, 1);
    assert_eq!(one_value(&reg, &s2, "SELECT v FROM t").await, "[1]");
    assert_eq!(reg.open_pools(), 2);

    reg.close(&s2.id);
    assert_eq!(reg.open_pools(), 1);
    assert_eq!(reg.close_idle(), 0, "nothing is idle yet");
}

#[tokio::test]
async fn idle_pools_are_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = make_db(dir.path(), "a.sqlite", 1);
    let reg = registry(dir.path(), Duration::from_millis(50));
    let s = spec("ds_1", &a, 1);
    one_value(&reg, &s, "SELECT v FROM t").await;
    assert_eq!(reg.open_pools(), 1);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(reg.close_idle(), 1);
    assert_eq!(reg.open_pools(), 0);
    // And a later query opens it again.
    assert_eq!(one_value(&reg, &s, "SELECT v FROM t").await, "[1]");
}

#[tokio::test]
async fn a_file_outside_the_roots_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let outside = make_db(other.path(), "x.sqlite", 1);
    let reg = registry(root.path(), Duration::from_secs(60));
    let exec = Execute {
        sql: "SELECT 1".into(),
        params: vec![],
        is_query: true,
        read_only: true,
        max_rows: 1,
        timeout: Duration::from_secs(5),
        may_change_session: false,
        search_path: None,
        paced_by_client: false,
    };
    let err = match reg.execute(&spec("ds_x", &outside, 1), exec).await {
        Err(e) => e,
        Ok(_) => panic!("a file outside sqlite_roots must be refused"),
    };
    assert!(
        matches!(err, sluice::datasource::ExecError::NotAllowed(_)),
        "{err:?}"
    );
}
