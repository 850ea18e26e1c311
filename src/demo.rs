//! PLACEHOLDER
pub async fn run(_c: crate::config::Config) -> anyhow::Result<()> {
    anyhow::bail!("demo not built")
}
