//! What a caller may see of a datasource's schema: its tables and columns, limited to what the
//! scope policy lets a statement reach. The one source for `GET /v1/datasources/{id}/schema`
//! (a datasource viewer) and the MCP tools and resources (a user of an app the datasource is
//! attached to), so both always list the same tables.

use crate::code::Code;
use crate::datasource::{ExecError, TableInfo};
use crate::identity::Caller;
use crate::model::{AppId, DatasourceKind, ScopePolicy};
use crate::permission::{self, Decision};
use crate::store::{App, Datasource};

use super::{DatasourceRef, QueryError, QueryService, resolve_datasource};

/// One datasource of an app as a caller of the app may see it.
#[derive(Clone, Debug)]
pub struct AppDatasource {
    pub datasource: DatasourceRef,
    pub kind: DatasourceKind,
    pub policy: ScopePolicy,
    /// Whether the company has the datasource's integration turned on (queries are refused
    /// with `integration_disabled` while it is off).
    pub enabled: bool,
}

/// The tables of one of an app's datasources that its scope lets a statement reach.
#[derive(Clone, Debug)]
pub struct AppSchema {
    pub datasource: AppDatasource,
    /// The schema unqualified names resolve in.
    pub default_schema: String,
    pub tables: Vec<TableInfo>,
}

impl QueryService {
    /// The datasource's tables and columns that its scope policy lets a statement reach, as the
    /// server reports them. Who may see them is the caller's decision.
    pub async fn visible_tables(&self, ds: &Datasource) -> Result<Vec<TableInfo>, ExecError> {
        Ok(self.visible(ds).await?.1)
    }

    /// The default schema and the visible tables.
    async fn visible(&self, ds: &Datasource) -> Result<(String, Vec<TableInfo>), ExecError> {
        let registry = &self.shared.registry;
        let tables = registry.schema(&ds.spec).await?;
        let catalog = registry.catalog(&ds.spec).await?;
        let target = crate::policy::Target {
            kind: ds.kind,
            default_schema: crate::policy::default_schema(
                ds.kind,
                &ds.policy,
                &catalog.known.catalog,
            ),
            max_sql_bytes: self.max_sql_bytes,
            catalog: &catalog.known.catalog,
        };
        let tables = tables
            .into_iter()
            .filter(|t| crate::policy::table_visible(&t.schema, &t.name, &target, &ds.policy))
            .collect();
        Ok((target.default_schema.to_owned(), tables))
    }

    /// The datasources attached to an app the caller may use, in attachment order. An app the
    /// caller may not use does not exist for them (`not_found`, as for a query).
    pub fn app_datasources(
        &self,
        caller: &Caller,
        app_id: &str,
    ) -> Result<(App, Vec<AppDatasource>), QueryError> {
        let cv = &caller.company;
        let app = usable_app(caller, app_id)?;
        let list = app
            .datasources
            .iter()
            .filter_map(|id| cv.datasources.get(id))
            .map(|ds| app_datasource(caller, ds))
            .collect();
        Ok((app.clone(), list))
    }

    /// What a user of the app may see of one of its datasources (by id or name, or the only
    /// one): under the same rules as a query through the app (the app usable, the datasource
    /// attached, its integration on) and the same concurrency limits, but needing no role on
    /// the datasource itself, like a query.
    pub async fn app_schema(
        &self,
        caller: &Caller,
        app_id: &str,
        datasource: Option<&str>,
    ) -> Result<AppSchema, QueryError> {
        let cv = caller.company.clone();
        let app = usable_app(caller, app_id)?;
        let (ds, attached) = resolve_datasource(&cv, app, datasource)?;
        if !attached {
            return Err(QueryError::request(
                Code::Conflict,
                format!(
                    "datasource {:?} is not attached to this app",
                    datasource.unwrap_or_default()
                ),
            ));
        }
        match permission::query(
            &caller.principal(),
            &app.acl(),
            attached,
            cv.integration(ds.kind).enabled,
        ) {
            Decision::Allow => {}
            d => return Err(d.into()),
        }
        let _permit = self
            .shared
            .limits
            .acquire(caller.token_id.as_str(), app.id.as_str())?;
        let (default_schema, tables) = self.visible(ds).await?;
        Ok(AppSchema {
            datasource: app_datasource(caller, ds),
            default_schema,
            tables,
        })
    }
}

fn usable_app<'a>(caller: &'a Caller, app_id: &str) -> Result<&'a App, QueryError> {
    caller
        .company
        .apps
        .get(&AppId(app_id.to_owned()))
        .filter(|a| {
            permission::app(&caller.principal(), &a.acl(), permission::AppAction::Use).is_allow()
        })
        .ok_or(QueryError::Permission(Decision::NotFound))
}

fn app_datasource(caller: &Caller, ds: &Datasource) -> AppDatasource {
    AppDatasource {
        datasource: DatasourceRef {
            id: ds.id.clone(),
            name: ds.name.clone(),
        },
        kind: ds.kind,
        policy: ds.policy.clone(),
        enabled: caller.company.integration(ds.kind).enabled,
    }
}
