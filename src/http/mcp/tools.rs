//! The MCP server of one app: the tools `list_datasources`, `list_tables`, `describe_table` and
//! `query`, and one schema resource per datasource. Statements run through the query service
//! (permission, limits, policy, database, audit marked `via: mcp`), schemas come from the same
//! listing as `GET /v1/datasources/{id}/schema`; this file only shapes requests and answers.
//!
//! A refusal or a database error is a tool result with `isError: true` carrying the code and
//! message, so a model can read it and correct its SQL; protocol errors are kept for requests
//! that cannot be routed (an unknown tool or resource).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, InitializeRequestParams, InitializeResult, JsonObject, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{Value, json};

use super::McpCall;
use super::cancel::Cancels;
use crate::code::{Class, Code, Coded};
use crate::http::AppState;
use crate::model::{Access, DatasourceKind};
use crate::query::{
    Answer, AppDatasource, AppSchema, Context, DatasourceRef, Origin, QueryError, QueryRequest,
};

/// The revision this endpoint implements; older ones a client may ask for are answered too
/// (rmcp negotiates), newer ones are not offered.
const REVISION: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// Tables named in a tool description at most; the rest are a `list_tables` call away.
const TABLES_IN_DESCRIPTION: usize = 60;

const TOOL_NAMES: [&str; 4] = ["list_datasources", "list_tables", "describe_table", "query"];

const RESOURCE_PREFIX: &str = "sluice://datasources/";
const RESOURCE_SUFFIX: &str = "/schema";

#[derive(Clone)]
pub(crate) struct AppServer {
    state: Arc<AppState>,
    cancels: Arc<Cancels>,
}

impl AppServer {
    pub fn new(state: Arc<AppState>, cancels: Arc<Cancels>) -> Self {
        AppServer { state, cancels }
    }
}

/// The caller and app the endpoint authenticated (put in the HTTP request it handed to rmcp).
fn call_of(context: &RequestContext<RoleServer>) -> Result<Arc<McpCall>, ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Arc<McpCall>>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the request reached no app", None))
}

fn datasource_json(d: &DatasourceRef) -> Value {
    json!({"id": d.id, "name": d.name})
}

/// A refusal or failure as the tool result a model reads: the code and message the HTTP API
/// would answer with.
fn refused(e: &impl Coded) -> CallToolResult {
    CallToolResult::structured_error(json!({
        "error": {"code": e.code().as_str(), "message": e.message(), "retryable": e.retryable()}
    }))
}

/// A structured answer with its JSON as text too (for clients that show only text).
fn answered(v: Value) -> CallToolResult {
    CallToolResult::structured(v)
}

fn dialect(kind: DatasourceKind) -> &'static str {
    match kind {
        DatasourceKind::Postgres => "PostgreSQL (placeholders $1, $2, …)",
        DatasourceKind::Mysql => "MySQL/MariaDB (placeholders ?)",
        DatasourceKind::Sqlite => "SQLite (placeholders ?)",
    }
}

fn access(a: Access) -> &'static str {
    match a {
        Access::ReadOnly => "read-only: SELECT only",
        Access::ReadWrite => "read-write: SELECT, INSERT, UPDATE, DELETE (never DDL)",
    }
}

fn access_code(a: Access) -> &'static str {
    match a {
        Access::ReadOnly => "read_only",
        Access::ReadWrite => "read_write",
    }
}

/// One line of a tool description per datasource: name, dialect, access mode, tables.
fn datasource_line(ds: &AppDatasource, schema: Option<&AppSchema>) -> String {
    let mut line = format!(
        "- \"{}\" (id {}): {}; {}",
        ds.datasource.name,
        ds.datasource.id,
        dialect(ds.kind),
        access(ds.policy.access)
    );
    if !ds.enabled {
        line.push_str("; its integration is turned off, so it answers nothing now");
        return line;
    }
    match schema {
        Some(s) => {
            let names: Vec<String> = s
                .tables
                .iter()
                .take(TABLES_IN_DESCRIPTION)
                .map(|t| format!("{}.{}", t.schema, t.name))
                .collect();
            line.push_str(&format!("; tables: {}", names.join(", ")));
            if s.tables.len() > names.len() {
                line.push_str(&format!(
                    " and {} more (list_tables)",
                    s.tables.len() - names.len()
                ));
            }
            if !s.default_schema.is_empty() {
                line.push_str(&format!(
                    "; unqualified names resolve in schema {}",
                    s.default_schema
                ));
            }
        }
        None => line.push_str("; call list_tables for its tables"),
    }
    line
}

fn object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

const DATASOURCE_ARG: &str = "Id or name of one of the app's datasources (list_datasources); may be left out when the app has exactly one.";

fn tools(app_name: &str, lines: &str, max_rows: u64, all_read_only: bool) -> Vec<Tool> {
    let read_only = ToolAnnotations::new().read_only(true).idempotent(true);
    let query_annotations = if all_read_only {
        read_only.clone()
    } else {
        ToolAnnotations::new().read_only(false).destructive(true)
    };
    vec![
        Tool::new(
            "list_datasources",
            format!(
                "List the datasources of the sluice app \"{app_name}\": id, name, kind (SQL \
                 dialect) and access mode.\n{lines}"
            ),
            object(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_annotations(read_only.clone()),
        Tool::new(
            "list_tables",
            "List the tables of one of the app's datasources that its scope lets statements \
             reach (schema and name).",
            object(json!({
                "type": "object",
                "properties": {"datasource": {"type": "string", "description": DATASOURCE_ARG}},
                "additionalProperties": false,
            })),
        )
        .with_annotations(read_only.clone()),
        Tool::new(
            "describe_table",
            "Describe one table the datasource's scope lets statements reach: its columns with \
             their database types and nullability.",
            object(json!({
                "type": "object",
                "properties": {
                    "table": {"type": "string", "description": "`name` or `schema.name`"},
                    "datasource": {"type": "string", "description": DATASOURCE_ARG},
                },
                "required": ["table"],
                "additionalProperties": false,
            })),
        )
        .with_annotations(read_only),
        Tool::new(
            "query",
            format!(
                "Run one SQL statement through the sluice app \"{app_name}\" and get typed rows. \
                 Datasources:\n{lines}\nsluice checks every statement before the database sees \
                 it: one statement per call; only what the access mode allows; only the tables \
                 above; only the dialect's built-in safe functions. A refusal or a database \
                 error comes back as an error result with a code (e.g. table_not_allowed, \
                 function_not_allowed, statement_not_allowed, sql_parse_error, query_failed) \
                 and a message: correct the SQL and call again. At most {max_rows} rows are \
                 returned; `truncated: true` means there were more: filter, aggregate or add \
                 LIMIT. Pass values as `params` rather than in the SQL text."
            ),
            object(json!({
                "type": "object",
                "properties": {
                    "sql": {"type": "string", "description": "One SQL statement in the datasource's dialect."},
                    "params": {"type": "array", "description": "Values for the placeholders, in order.", "items": {}},
                    "datasource": {"type": "string", "description": DATASOURCE_ARG},
                    "max_rows": {"type": "integer", "minimum": 0, "maximum": max_rows,
                                 "description": format!("Rows to return at most (at most {max_rows}).")},
                },
                "required": ["sql"],
                "additionalProperties": false,
            })),
        )
        .with_raw_output_schema(object(json!({
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                    "required": ["name", "type"],
                }},
                "rows": {"type": "array", "items": {"type": "array"}},
                "row_count": {"type": "integer"},
                "truncated": {"type": "boolean"},
                "rows_affected": {"type": "integer"},
                "datasource": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                }},
                "elapsed_ms": {"type": "number"},
                // A refusal's structured content: clients validate error results against this
                // schema too.
                "error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "retryable": {"type": "boolean"},
                }, "required": ["code", "message"]},
            },
        })))
        .with_annotations(query_annotations),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryArgs {
    sql: String,
    #[serde(default)]
    params: Vec<Value>,
    datasource: Option<String>,
    max_rows: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasourceArgs {
    datasource: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableArgs {
    table: String,
    datasource: Option<String>,
}

fn args<T: serde::de::DeserializeOwned>(
    tool: &str,
    arguments: Option<JsonObject>,
) -> Result<T, QueryError> {
    serde_json::from_value(Value::Object(arguments.unwrap_or_default())).map_err(|e| {
        QueryError::request(Code::BadRequest, format!("invalid {tool} arguments: {e}"))
    })
}

/// Resolves when the client cancelled the call: its stream closed (rmcp's token) or it sent
/// `notifications/cancelled` (our registry).
type Cancelled<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

fn cancelled_by_client() -> ErrorData {
    ErrorData::new(ErrorCode::INVALID_REQUEST, "cancelled by the client", None)
}

impl AppServer {
    async fn app_tools(&self, call: &McpCall) -> Result<Vec<Tool>, QueryError> {
        let q = &self.state.query;
        let (app, datasources) = q.app_datasources(&call.caller, &call.app_id)?;
        // The tables named in the descriptions come from the same listing as list_tables; a
        // datasource that cannot be read now is described without them.
        let schemas = futures::future::join_all(datasources.iter().map(|d| async {
            if !d.enabled {
                return None;
            }
            q.app_schema(&call.caller, &call.app_id, Some(d.datasource.id.as_str()))
                .await
                .ok()
        }))
        .await;
        let lines: Vec<String> = datasources
            .iter()
            .zip(&schemas)
            .map(|(d, s)| datasource_line(d, s.as_ref()))
            .collect();
        let all_read_only = datasources
            .iter()
            .all(|d| d.policy.access == Access::ReadOnly);
        Ok(tools(
            &app.name,
            &lines.join("\n"),
            self.state.config.mcp.max_rows,
            all_read_only,
        ))
    }

    fn list_datasources(&self, call: &McpCall) -> Result<Value, QueryError> {
        let (app, datasources) = self
            .state
            .query
            .app_datasources(&call.caller, &call.app_id)?;
        let cap = self.state.config.mcp.max_rows;
        let list: Vec<Value> = datasources
            .iter()
            .map(|d| {
                json!({
                    "id": d.datasource.id,
                    "name": d.datasource.name,
                    "kind": d.kind.as_str(),
                    "dialect": dialect(d.kind),
                    "access": access_code(d.policy.access),
                    "max_rows": d.policy.max_rows.min(cap),
                    "timeout_ms": d.policy.timeout_ms,
                    "enabled": d.enabled,
                })
            })
            .collect();
        Ok(json!({"app": {"id": app.id, "name": app.name}, "datasources": list}))
    }

    async fn list_tables(&self, call: &McpCall, a: DatasourceArgs) -> Result<Value, QueryError> {
        let s = self
            .state
            .query
            .app_schema(&call.caller, &call.app_id, a.datasource.as_deref())
            .await?;
        let tables: Vec<Value> = s
            .tables
            .iter()
            .map(|t| json!({"schema": t.schema, "name": t.name}))
            .collect();
        Ok(json!({
            "datasource": datasource_json(&s.datasource.datasource),
            "default_schema": s.default_schema,
            "tables": tables,
        }))
    }

    async fn describe_table(&self, call: &McpCall, a: TableArgs) -> Result<Value, QueryError> {
        let s = self
            .state
            .query
            .app_schema(&call.caller, &call.app_id, a.datasource.as_deref())
            .await?;
        let wanted = a.table.trim();
        let (schema, name) = match wanted.rsplit_once('.') {
            Some((sc, n)) => (Some(sc), n),
            None => (None, wanted),
        };
        let matches = |exact: bool| {
            s.tables
                .iter()
                .filter(|t| {
                    let eq = |x: &str, y: &str| {
                        if exact {
                            x == y
                        } else {
                            x.eq_ignore_ascii_case(y)
                        }
                    };
                    eq(&t.name, name) && schema.is_none_or(|sc| eq(&t.schema, sc))
                })
                .collect::<Vec<_>>()
        };
        let mut found = matches(true);
        if found.is_empty() {
            found = matches(false);
        }
        // An unqualified name found in several schemas means the one names resolve in.
        if found.len() > 1 {
            found.retain(|t| t.schema == s.default_schema);
        }
        match found.as_slice() {
            [t] => Ok(json!({
                "datasource": datasource_json(&s.datasource.datasource),
                "schema": t.schema,
                "name": t.name,
                "columns": t.columns,
            })),
            [] => Err(QueryError::request(
                Code::NotFound,
                format!(
                    "no table {wanted:?} that this datasource's scope reaches (list_tables lists them)"
                ),
            )),
            _ => Err(QueryError::request(
                Code::Conflict,
                format!("{wanted:?} names tables in several schemas: write schema.name"),
            )),
        }
    }

    /// Runs the statement through the query service and reads at most the MCP row cap. The
    /// answer ends (`finish`/`failed`/`abandon`) before this returns, so its audit record is
    /// written and, when the client went away, the statement stops on the server.
    async fn query(
        &self,
        call: &McpCall,
        arguments: Option<JsonObject>,
        mut cancelled: Cancelled<'_>,
    ) -> Result<CallToolResult, ErrorData> {
        let cfg = &self.state.config.mcp;
        let request = args::<QueryArgs>("query", arguments).map(|a| QueryRequest {
            sql: a.sql,
            params: a.params,
            datasource: a.datasource,
            max_rows: Some(a.max_rows.map_or(cfg.max_rows, |r| r.min(cfg.max_rows))),
            timeout_ms: None,
        });
        let ctx = Context {
            caller: &call.caller,
            app_id: &call.app_id,
            request_id: call.request_id.clone(),
            origin: Origin::Mcp,
            paced_by_client: false,
        };
        // Dropping the service's future (the client cancelled) drops the statement with it.
        let answer = tokio::select! {
            biased;
            () = &mut cancelled => return Err(cancelled_by_client()),
            a = self.state.query.run(ctx, request) => a,
        };
        let mut rows = match answer {
            Err(e) => return Ok(refused(&e)),
            Ok(Answer::Affected {
                rows_affected,
                datasource,
                elapsed_ms,
            }) => {
                return Ok(answered(json!({
                    "rows_affected": rows_affected,
                    "datasource": datasource_json(&datasource),
                    "elapsed_ms": elapsed_ms,
                })));
            }
            Ok(Answer::Rows(rows)) => rows,
        };
        let budget = usize::try_from(cfg.max_result_bytes).unwrap_or(usize::MAX);
        let mut used = 0usize;
        let mut out: Vec<Value> = Vec::new();
        let mut cut = false;
        loop {
            let next = tokio::select! {
                biased;
                () = &mut cancelled => {
                    rows.abandon().await;
                    return Err(cancelled_by_client());
                }
                n = rows.next() => n,
            };
            match next {
                Some(Ok(row)) => {
                    if used + row.len() > budget {
                        // The rest would not fit a model's context: stop reading; ending the
                        // answer below cancels the rest of the statement.
                        cut = true;
                        break;
                    }
                    used += row.len();
                    out.push(serde_json::from_slice(&row).unwrap_or(Value::Null));
                }
                Some(Err(e)) => return Ok(refused(&rows.failed(e).await)),
                None => break,
            }
        }
        let columns = serde_json::to_value(&rows.columns).unwrap_or(Value::Null);
        let datasource = datasource_json(&rows.datasource);
        let summary = match rows.finish().await {
            Ok(s) => s,
            Err(e) => return Ok(refused(&e)),
        };
        let truncated = summary.truncated || cut;
        let row_count = out.len();
        let mut result = answered(json!({
            "columns": columns,
            "rows": out,
            "row_count": row_count,
            "truncated": truncated,
            "datasource": datasource,
            "elapsed_ms": summary.elapsed_ms,
        }));
        if truncated {
            result.content.push(ContentBlock::text(format!(
                "truncated: only the first {row_count} rows are shown and more exist; filter, \
                 aggregate or add LIMIT to see what you need"
            )));
        }
        Ok(result)
    }

    async fn schema_resource(&self, call: &McpCall, uri: &str) -> Result<String, ErrorData> {
        let id = uri
            .strip_prefix(RESOURCE_PREFIX)
            .and_then(|r| r.strip_suffix(RESOURCE_SUFFIX))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| ErrorData::resource_not_found(format!("no resource {uri:?}"), None))?;
        let s = self
            .state
            .query
            .app_schema(&call.caller, &call.app_id, Some(id))
            .await
            .map_err(|e| match e.code() {
                Code::Conflict | Code::NotFound => {
                    ErrorData::resource_not_found(format!("no resource {uri:?}"), None)
                }
                c => {
                    let data = Some(json!({"code": c.as_str(), "message": e.message()}));
                    let message = format!("{c}: {}", e.message());
                    match c.class() {
                        Class::Denied => ErrorData::invalid_request(message, data),
                        _ => ErrorData::internal_error(message, data),
                    }
                }
            })?;
        let body = json!({
            "datasource": datasource_json(&s.datasource.datasource),
            "kind": s.datasource.kind.as_str(),
            "default_schema": s.default_schema,
            "tables": s.tables,
        });
        Ok(body.to_string())
    }
}

impl ServerHandler for AppServer {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_protocol_version(REVISION)
        .with_server_info(
            Implementation::new("sluice", env!("CARGO_PKG_VERSION"))
                .with_title("sluice SQL gateway"),
        )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&REVISION))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        let mut info = self.negotiate_initialize(&request)?;
        let call = call_of(&context)?;
        if let Ok((app, datasources)) = self.state.query.app_datasources(&call.caller, &call.app_id)
        {
            let names: Vec<String> = datasources
                .iter()
                .map(|d| format!("{} ({})", d.datasource.name, d.kind.as_str()))
                .collect();
            info.instructions = Some(format!(
                "The sluice app \"{}\" answers SQL on its datasources: {}. Learn the schema \
                 with list_tables and describe_table, then run statements with query. sluice \
                 decides what this app may read or write; a refused statement comes back with a \
                 code and a message to correct it by.",
                app.name,
                names.join(", ")
            ));
        }
        Ok(info)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let call = call_of(&context)?;
        let tools = self
            .app_tools(&call)
            .await
            .map_err(|e| ErrorData::internal_error(format!("{e}"), None))?;
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = call_of(&context)?;
        let id = serde_json::to_string(&context.id).unwrap_or_default();
        let (_registered, by_notification) =
            self.cancels.register(call.caller.token_id.as_str(), id);
        let ct = context.ct.clone();
        let cancelled: Cancelled<'_> = Box::pin(async move {
            tokio::select! {
                () = ct.cancelled() => {}
                // Only a sent cancellation counts; a sender dropped unsent is no signal.
                Ok(()) = by_notification => {}
            }
        });
        let name = request.name.as_ref();
        if !TOOL_NAMES.contains(&name) {
            // An unknown tool is a protocol error (-32602), as the specification asks.
            return Err(ErrorData::invalid_params(format!("no tool {name:?}"), None));
        }
        let result = if name == "query" {
            self.query(&call, request.arguments, cancelled).await?
        } else {
            let arguments = request.arguments;
            let work = async {
                match name {
                    "list_datasources" => {
                        args::<JsonObject>(name, arguments)?;
                        self.list_datasources(&call)
                    }
                    "list_tables" => self.list_tables(&call, args(name, arguments)?).await,
                    _ => self.describe_table(&call, args(name, arguments)?).await,
                }
            };
            let out = tokio::select! {
                biased;
                () = cancelled => return Err(cancelled_by_client()),
                out = work => out,
            };
            match out {
                Ok(v) => answered(v),
                Err(e) => refused(&e),
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let call = call_of(&context)?;
        let (_, datasources) = self
            .state
            .query
            .app_datasources(&call.caller, &call.app_id)
            .map_err(|e| ErrorData::internal_error(format!("{e}"), None))?;
        let resources = datasources
            .iter()
            .map(|d| {
                Resource::new(
                    format!("{RESOURCE_PREFIX}{}{RESOURCE_SUFFIX}", d.datasource.id),
                    format!("{} schema", d.datasource.name),
                )
                .with_description(format!(
                    "Tables and columns of the {} datasource \"{}\" that its scope lets \
                     statements reach",
                    d.kind.as_str(),
                    d.datasource.name
                ))
                .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let call = call_of(&context)?;
        let text = self.schema_resource(&call, &request.uri).await?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, request.uri).with_mime_type("application/json"),
        ])
        .into())
    }
}
