//! The query service: one statement for one caller through one app, whatever the transport
//! (the HTTP route, MCP). In the order of the brief: resolve the app and datasource →
//! permission → concurrency limits → the server's catalogue → SQL policy → pool and database →
//! the answer, whose audit record and metrics are finished in one place ([`answer::Attempt`]).
//!
//! Every attempt by an authenticated caller is audited (allowed, denied or failed); by default
//! (`audit.wait_for_commit`) an answer, or for rows its end, is released only after its record
//! is committed. Nothing here knows HTTP: transports translate requests into [`QueryRequest`]
//! and [`Answer`]s and [`QueryError`]s into their own shapes.

mod answer;
mod error;
mod schema;

pub use answer::{Answer, DatasourceRef, RowAnswer, Summary};
pub use error::QueryError;
pub use schema::{AppDatasource, AppSchema};

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::audit::{AuditRecord, AuditWriter, Outcome};
use crate::code::Code;
use crate::datasource::registry::Registry;
use crate::datasource::{Execute, Execution};
use crate::identity::Caller;
use crate::limits::Limiters;
use crate::metrics::Metrics;
use crate::model::*;
use crate::permission::{self, Decision};
use crate::policy::StatementClass;
use crate::policy::cache::PolicyCache;
use crate::store::{App, CompanyView, Datasource};
use answer::{Attempt, Counted, End};

/// Where a request came in; recorded in its audit record when it is not the HTTP route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Http,
    Mcp,
}

/// One statement as a caller sends it.
#[derive(Clone, Debug, Default)]
pub struct QueryRequest {
    pub sql: String,
    /// JSON values bound to `$1..` (postgres) or `?` (mysql, sqlite) placeholders.
    pub params: Vec<serde_json::Value>,
    /// Id or name of an attached datasource; may be left out when the app has exactly one.
    pub datasource: Option<String>,
    pub max_rows: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// Who asks, through which app, and how the answer will be read.
pub struct Context<'a> {
    pub caller: &'a Caller,
    /// As the transport received it (it may name no app at all).
    pub app_id: &'a str,
    pub request_id: String,
    pub origin: Origin,
    /// The rows go to the client at the client's pace (a stream), not read at once.
    pub paced_by_client: bool,
}

/// What the service shares with the answers it hands out (they finish their attempts later).
pub(crate) struct Shared {
    pub registry: Arc<Registry>,
    pub audit: Arc<AuditWriter>,
    pub metrics: Arc<Metrics>,
    pub limits: Limiters,
    /// Query attempts begun and not yet done with (their audit records not yet committed),
    /// whether or not they hold a concurrency permit ([`answer::Counted`]).
    pub attempts: AtomicUsize,
}

pub struct QueryService {
    shared: Arc<Shared>,
    policy_cache: PolicyCache,
    max_sql_bytes: usize,
}

impl QueryService {
    pub fn new(
        registry: Arc<Registry>,
        audit: Arc<AuditWriter>,
        metrics: Arc<Metrics>,
        limits: Limiters,
        policy_cache: PolicyCache,
        max_sql_bytes: usize,
    ) -> Self {
        QueryService {
            shared: Arc::new(Shared {
                registry,
                audit,
                metrics,
                limits,
                attempts: AtomicUsize::new(0),
            }),
            policy_cache,
            max_sql_bytes,
        }
    }

    /// Queries running in the whole gateway.
    pub fn in_flight(&self) -> usize {
        self.shared.limits.in_flight()
    }

    /// Runs one statement. A refusal or failure is audited and counted before it is returned;
    /// an [`Answer::Affected`] was audited before it is returned; an [`Answer::Rows`] is audited
    /// when the transport ends it. `request` is the caller's request, or why it could not be read
    /// (which is audited like any refusal).
    pub async fn run(
        &self,
        ctx: Context<'_>,
        request: Result<QueryRequest, QueryError>,
    ) -> Result<Answer, QueryError> {
        let caller = ctx.caller;
        let mut rec = AuditRecord::new(
            caller.user.company_id.clone(),
            Some(caller.user.id.clone()),
            "query",
            Outcome::Allowed,
        );
        rec.request_id = Some(ctx.request_id.clone());
        if ctx.origin == Origin::Mcp {
            rec.detail = Some(json!({"via": "mcp"}));
        }
        // Finished below whatever happens; if this future is dropped first (the client went away
        // before the answer), the guard records that instead.
        let mut pending = Unanswered(Some(Attempt {
            rec,
            started: Instant::now(),
            kind: "-",
            shared: Counted::new(self.shared.clone()),
        }));
        let ran = self.run_inner(&ctx, request, pending.attempt()).await;
        let attempt = pending.answered();
        match ran {
            Ok(Running::Affected(rows_affected, datasource)) => {
                let elapsed_ms = attempt.elapsed_ms();
                attempt.finish(End::Answered(rows_affected)).await?;
                Ok(Answer::Affected {
                    rows_affected,
                    datasource,
                    elapsed_ms,
                })
            }
            Ok(Running::Rows(rows, datasource, permit)) => Ok(Answer::Rows(RowAnswer::new(
                rows, datasource, attempt, permit,
            ))),
            Err(e) => match attempt.finish(End::Refused(&e, None)).await {
                Ok(()) => Err(e),
                Err(audit) => Err(audit),
            },
        }
    }

    async fn run_inner(
        &self,
        ctx: &Context<'_>,
        request: Result<QueryRequest, QueryError>,
        attempt: &mut Attempt,
    ) -> Result<Running, QueryError> {
        let caller = ctx.caller;
        let cv = caller.company.clone();
        let app = cv.apps.get(&AppId(ctx.app_id.to_owned()));
        match app {
            Some(a) => attempt.rec.app_id = Some(a.id.clone()),
            None => attempt.rec.target_id = Some(ctx.app_id.chars().take(128).collect()),
        }
        let req = request?;
        attempt.rec.sql = Some(req.sql.chars().take(self.max_sql_bytes).collect());
        let p = caller.principal();
        let Some(app) =
            app.filter(|a| permission::app(&p, &a.acl(), permission::AppAction::Use).is_allow())
        else {
            return Err(Decision::NotFound.into());
        };
        let (ds, attached) = resolve_datasource(&cv, app, req.datasource.as_deref())?;
        attempt.kind = ds.kind.as_str();
        if attached {
            attempt.rec.datasource_id = Some(ds.id.clone());
        }
        let decision = permission::query(&p, &app.acl(), attached, cv.integration(ds.kind).enabled);
        match decision {
            Decision::Allow => {}
            Decision::Conflict(_) => {
                return Err(QueryError::request(
                    Code::Conflict,
                    format!(
                        "datasource {:?} is not attached to this app",
                        req.datasource.as_deref().unwrap_or_default()
                    ),
                ));
            }
            d => return Err(d.into()),
        }
        let permit = self
            .shared
            .limits
            .acquire(caller.token_id.as_str(), app.id.as_str())?;
        // What the server holds (schemas, children, views, functions), for the policy to
        // resolve names as the server will.
        let catalog = self.shared.registry.catalog(&ds.spec).await?;
        let default_schema =
            crate::policy::default_schema(ds.kind, &ds.policy, &catalog.known.catalog).to_owned();
        let checked = self
            .policy_cache
            .check(
                req.sql.clone(),
                ds.kind,
                default_schema,
                self.max_sql_bytes,
                ds.policy.clone(),
                catalog.known.clone(),
            )
            .await?;
        if checked.param_count != req.params.len() {
            return Err(QueryError::request(
                Code::BadParams,
                format!(
                    "the statement has {} placeholder(s) but {} param(s) were given",
                    checked.param_count,
                    req.params.len()
                ),
            ));
        }
        let max_rows = req
            .max_rows
            .map_or(ds.policy.max_rows, |r| r.min(ds.policy.max_rows));
        let timeout_ms = req
            .timeout_ms
            .map_or(ds.policy.timeout_ms, |t| t.clamp(1, ds.policy.timeout_ms));
        let exec = Execute {
            sql: checked.sql.clone(),
            params: req.params,
            is_query: checked.class == StatementClass::Query,
            read_only: ds.policy.access == Access::ReadOnly,
            max_rows,
            timeout: Duration::from_millis(timeout_ms),
            may_change_session: checked.calls_user_functions,
            search_path: (ds.kind == DatasourceKind::Postgres)
                .then(|| catalog.known.catalog.search_path(&ds.policy.extensions)),
            paced_by_client: ctx.paced_by_client,
        };
        let datasource = DatasourceRef {
            id: ds.id.clone(),
            name: ds.name.clone(),
        };
        match self.shared.registry.execute(&ds.spec, exec).await? {
            Execution::Affected { rows_affected } => {
                Ok(Running::Affected(rows_affected, datasource))
            }
            Execution::Rows(rows) => Ok(Running::Rows(rows, datasource, permit)),
        }
    }
}

/// An attempt whose `run` future may be dropped before it answers (an HTTP client that hung up,
/// an MCP call cancelled): the record still goes in, as a client that went away.
struct Unanswered(Option<Attempt>);

impl Unanswered {
    fn attempt(&mut self) -> &mut Attempt {
        self.0.as_mut().expect("present until answered")
    }

    /// The run got as far as an answer (or a refusal): the caller finishes the attempt.
    fn answered(mut self) -> Attempt {
        self.0.take().expect("answered once")
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(attempt) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = attempt.finish(End::Gone(None)).await;
            });
        }
    }
}

/// A statement that ran and has something to answer.
enum Running {
    Affected(u64, DatasourceRef),
    Rows(
        crate::datasource::RowStream,
        DatasourceRef,
        crate::limits::Permit,
    ),
}

/// The app's datasource this statement is for: by id or name, or the only one. The bool says
/// whether it is attached to the app.
fn resolve_datasource<'a>(
    cv: &'a CompanyView,
    app: &App,
    wanted: Option<&str>,
) -> Result<(&'a Datasource, bool), QueryError> {
    let attached: Vec<&Datasource> = app
        .datasources
        .iter()
        .filter_map(|d| cv.datasources.get(d))
        .collect();
    let conflict = |m: String| QueryError::request(Code::Conflict, m);
    match wanted {
        Some(w) => {
            if let Some(d) = attached.iter().find(|d| d.id.as_str() == w || d.name == w) {
                return Ok((d, true));
            }
            // A datasource of the company that is not attached: 409 as PERMISSIONS.md says. One
            // the caller cannot name at all is "not attached" too (no existence leak).
            if let Some(d) = cv
                .datasources
                .values()
                .find(|d| d.id.as_str() == w || d.name == w)
            {
                return Ok((d, false));
            }
            Err(conflict(format!(
                "datasource {w:?} is not attached to this app"
            )))
        }
        None => match attached.as_slice() {
            [only] => Ok((only, true)),
            [] => Err(conflict("this app has no datasource attached".into())),
            _ => Err(conflict(
                "this app has several datasources: name one in \"datasource\"".into(),
            )),
        },
    }
}
