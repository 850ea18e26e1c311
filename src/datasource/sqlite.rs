//! PLACEHOLDER (not committed): replaced by the driver branch at merge.
use super::*;
pub struct SqlitePool;
impl SqlitePool {
    pub async fn open(_: &DatasourceSpec, _: &RegistrySettings) -> Result<Self, ExecError> {
        Err(ExecError::Unavailable("driver not merged".into()))
    }
    pub async fn execute(&self, _: Execute) -> Result<Execution, ExecError> {
        Err(ExecError::Unavailable("x".into()))
    }
    pub async fn check(&self) -> Result<ServerInfo, ExecError> {
        Err(ExecError::Unavailable("x".into()))
    }
    pub async fn schema(&self) -> Result<Vec<TableInfo>, ExecError> {
        Err(ExecError::Unavailable("x".into()))
    }
    pub fn stats(&self) -> PoolStats {
        PoolStats::default()
    }
    pub fn close(&self) {}
}
