//! The built-in lists of functions each dialect may call: pure, side-effect-free built-ins only.
//!
//! These are allow-lists on purpose: a deny-list always misses one (`dblink`, `query_to_xml`,
//! `lo_import`…). A name belongs here only if calling it can neither change state (data, session,
//! locks, sequences), nor read outside the tables the policy checks (files, other databases, SQL
//! text run by the function), nor stall the server on its own (sleeps, benchmarks). Resource
//! abuse through allowed functions (`generate_series(1, 1e12)`, `repeat('x', 1e9)`) is left to the
//! server-side timeout and the row/byte caps. Names are stored in their normalised form (lower
//! case); a datasource extends a list through `ScopePolicy::extra_functions`.

use super::catalog::Catalog;
use crate::model::DatasourceKind;

/// Aggregates and window functions common to the three dialects.
#[rustfmt::skip]
const COMMON: &[&str] = &[
    // aggregates
    "count", "sum", "avg", "min", "max",
    // window functions
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
    // conditional
    "coalesce", "nullif",
    // string
    "lower", "upper", "length", "trim", "ltrim", "rtrim", "replace", "substr", "substring",
    "concat", "concat_ws", "instr",
    // math
    "abs", "round", "ceil", "ceiling", "floor", "sign", "sqrt", "power", "pow", "exp", "ln", "log",
    "log10", "mod", "pi", "degrees", "radians", "sin", "cos", "tan", "asin", "acos", "atan",
    "atan2",
];

/// PostgreSQL: no `pg_sleep*`, `set_config`, `current_setting`, `pg_advisory_*`, `nextval` /
/// `setval` / `currval`, `lo_*`, `pg_read_*file` / `pg_ls_dir` / `pg_stat_file`, `dblink*`,
/// `query_to_xml` / `table_to_xml` / `cursor_to_xml`, `pg_terminate_backend` /
/// `pg_cancel_backend`, `txid_current` (assigns a transaction id), `setseed`, nor the identity and
/// server-information functions (`current_user`, `version`, `inet_server_addr`…).
#[rustfmt::skip]
const POSTGRES: &[&str] = &[
    // aggregates
    "array_agg", "string_agg", "bool_and", "bool_or", "every", "bit_and", "bit_or", "bit_xor",
    "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "json_agg_strict",
    "jsonb_agg_strict", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
    "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy", "regr_count", "regr_intercept",
    "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "percentile_cont",
    "percentile_disc", "mode", "any_value", "range_agg", "grouping",
    // conditional and comparison
    "greatest", "least", "num_nulls", "num_nonnulls",
    // string
    "char_length", "character_length", "octet_length", "bit_length", "initcap", "btrim", "lpad",
    "rpad", "left", "right", "position", "strpos", "translate", "reverse", "repeat", "split_part",
    "format", "md5", "sha224", "sha256", "sha384", "sha512", "encode", "decode", "ascii", "chr",
    "regexp_replace", "regexp_match", "regexp_matches", "regexp_split_to_array",
    "regexp_split_to_table", "regexp_like", "regexp_count", "regexp_instr", "regexp_substr",
    "starts_with", "overlay", "quote_ident", "quote_literal", "quote_nullable", "to_hex",
    "string_to_array", "string_to_table", "array_to_string", "normalize", "unistr", "to_ascii",
    "convert_from", "convert_to",
    // math
    "cbrt", "trunc", "div", "width_bucket", "gcd", "lcm", "factorial", "scale", "min_scale",
    "trim_scale", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "cot", "sind", "cosd", "tand",
    "asind", "acosd", "atand", "atan2d", "random", "random_normal",
    // date and time
    "now", "current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
    "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "date_trunc",
    "date_part", "date_bin", "age", "make_date", "make_time", "make_timestamp", "make_timestamptz",
    "make_interval", "to_char", "to_date", "to_timestamp", "to_number", "justify_days",
    "justify_hours", "justify_interval", "isfinite", "timezone", "extract",
    // JSON
    "to_json", "to_jsonb", "json_build_object", "jsonb_build_object", "json_build_array",
    "jsonb_build_array", "json_object", "jsonb_object", "row_to_json", "array_to_json",
    "json_extract_path", "json_extract_path_text", "jsonb_extract_path", "jsonb_extract_path_text",
    "json_array_length", "jsonb_array_length", "json_array_elements", "jsonb_array_elements",
    "json_array_elements_text", "jsonb_array_elements_text", "json_each", "jsonb_each",
    "json_each_text", "jsonb_each_text", "json_object_keys", "jsonb_object_keys", "json_typeof",
    "jsonb_typeof", "jsonb_set", "jsonb_set_lax", "jsonb_insert", "json_strip_nulls",
    "jsonb_strip_nulls", "jsonb_pretty", "jsonb_path_query", "jsonb_path_query_array",
    "jsonb_path_query_first", "jsonb_path_exists", "jsonb_path_match", "json_to_record",
    "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset", "json_scalar", "json_serialize",
    // arrays and rows
    "array", "row", "array_length", "cardinality", "array_append", "array_prepend", "array_cat",
    "array_position", "array_positions", "array_remove", "array_replace", "array_lower",
    "array_upper", "array_ndims", "array_dims", "array_fill", "trim_array", "array_reverse",
    "array_sort", "unnest", "generate_series", "generate_subscripts",
    // ranges
    "isempty", "lower_inc", "upper_inc", "lower_inf", "upper_inf", "range_merge",
    // ranges and multiranges (constructors)
    "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
    "int4multirange", "int8multirange", "nummultirange", "tsmultirange", "tstzmultirange",
    "datemultirange", "multirange",
    // network addresses
    "host", "hostmask", "masklen", "netmask", "network", "broadcast", "family", "abbrev",
    "inet_merge", "inet_same_family", "set_masklen",
    // sizes
    "pg_size_pretty", "pg_size_bytes",
    // a date from a timestamp (also the function-style cast date('…'))
    "date",
    // types, uuids, text search
    "pg_typeof", "gen_random_uuid", "uuidv4", "uuidv7", "to_tsvector", "to_tsquery",
    "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery", "ts_rank", "ts_rank_cd",
    "ts_headline", "setweight", "numnode", "querytree", "strip",
];

/// MySQL / MariaDB: no `SLEEP`, `BENCHMARK`, `GET_LOCK` / `RELEASE_LOCK` / `IS_FREE_LOCK` /
/// `IS_USED_LOCK` / `RELEASE_ALL_LOCKS`, `LOAD_FILE`, `MASTER_POS_WAIT` / `SOURCE_POS_WAIT`,
/// `LAST_INSERT_ID` (it can set session state), nor the identity and server-information functions
/// (`USER`, `CURRENT_USER`, `DATABASE`, `VERSION`, `CONNECTION_ID`…).
#[rustfmt::skip]
const MYSQL: &[&str] = &[
    // aggregates
    "group_concat", "json_arrayagg", "json_objectagg", "std", "stddev", "stddev_pop",
    "stddev_samp", "variance", "var_pop", "var_samp", "bit_and", "bit_or", "bit_xor", "any_value",
    "grouping",
    // conditional
    "if", "ifnull", "isnull", "greatest", "least",
    // string
    "char_length", "character_length", "octet_length", "bit_length", "lcase", "ucase", "lpad",
    "rpad", "left", "right", "locate", "position", "substring_index", "reverse", "repeat", "space",
    "field", "find_in_set", "elt", "format", "hex", "unhex", "md5", "sha", "sha1", "sha2",
    "to_base64", "from_base64", "ascii", "ord", "char", "strcmp", "soundex", "quote",
    "regexp_like", "regexp_replace", "regexp_substr", "regexp_instr", "bin", "oct", "conv",
    "crc32", "uuid", "make_set", "export_set", "insert",
    // math
    "truncate", "log2", "cot", "rand", "bit_count",
    // MariaDB and Oracle-compatible spellings
    "mid", "nvl", "nvl2", "lengthb", "chr", "add_months", "to_char", "natural_sort_key",
    "median", "percentile_cont", "percentile_disc",
    // network addresses
    "inet_aton", "inet_ntoa", "inet6_aton", "inet6_ntoa", "is_ipv4", "is_ipv6",
    "is_ipv4_compat", "is_ipv4_mapped",
    // date and time
    "now", "current_date", "curdate", "current_time", "curtime", "current_timestamp",
    "localtime", "localtimestamp", "sysdate", "utc_date", "utc_time", "utc_timestamp", "date",
    "time", "year", "month", "day", "dayofmonth", "dayofweek", "dayofyear", "dayname",
    "monthname", "hour", "minute", "second", "microsecond", "week", "weekday", "weekofyear",
    "yearweek", "quarter", "last_day", "date_add", "date_sub", "adddate", "subdate", "addtime",
    "subtime", "datediff", "timediff", "timestampdiff", "timestampadd", "date_format",
    "time_format", "str_to_date", "from_unixtime", "unix_timestamp", "makedate", "maketime",
    "extract", "to_days", "from_days", "to_seconds", "sec_to_time", "time_to_sec", "period_add",
    "period_diff", "convert_tz", "get_format", "timestamp",
    // JSON
    "json_extract", "json_unquote", "json_object", "json_array", "json_contains",
    "json_contains_path", "json_keys", "json_length", "json_type", "json_valid", "json_depth",
    "json_search", "json_set", "json_insert", "json_replace", "json_remove", "json_merge_patch",
    "json_merge_preserve", "json_merge", "json_quote", "json_pretty", "json_overlaps",
    "json_value", "json_table", "json_array_append", "json_array_insert", "json_query",
    "json_exists", "json_equals", "json_normalize", "json_compact", "json_loose",
    "json_detailed",
    // INSERT … ON DUPLICATE KEY UPDATE c = VALUES(c)
    "values",
];

/// SQLite: no `load_extension`, `randomblob` / `zeroblob` (a single call allocates up to a
/// gigabyte), `fts3_tokenizer`, `sqlite_*` information functions, `last_insert_rowid`,
/// `changes` / `total_changes`, nor the `pragma_*` table-valued functions.
#[rustfmt::skip]
const SQLITE: &[&str] = &[
    // aggregates
    "group_concat", "string_agg", "total", "json_group_array", "json_group_object",
    "jsonb_group_array", "jsonb_group_object",
    // conditional
    "ifnull", "iif", "if", "likely", "unlikely", "likelihood",
    // string
    "char", "format", "printf", "glob", "like", "hex", "unhex", "unicode", "quote", "soundex",
    "octet_length", "typeof", "subtype",
    // math
    "trunc", "log2", "acosh", "asinh", "atanh", "cosh", "sinh", "tanh", "random",
    // date and time
    "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
    "current_date", "current_time", "current_timestamp",
    // JSON
    "json", "jsonb", "json_array", "jsonb_array", "json_array_length", "json_extract",
    "jsonb_extract", "json_insert", "jsonb_insert", "json_object", "jsonb_object", "json_patch",
    "jsonb_patch", "json_remove", "jsonb_remove", "json_replace", "jsonb_replace", "json_set",
    "jsonb_set", "json_type", "json_valid", "json_quote", "json_error_position", "json_pretty",
    "json_each", "json_tree", "jsonb_each", "jsonb_tree",
    // table-valued
    "generate_series",
];

/// Names the server parses as syntax rather than looking up as functions, whatever its catalogue
/// holds: no user or stored function can stand in for them, and no catalogue lists them.
#[rustfmt::skip]
const POSTGRES_GRAMMAR: &[&str] = &[
    "coalesce", "nullif", "greatest", "least", "grouping", "array", "row", "current_date",
    "current_time", "current_timestamp", "localtime", "localtimestamp", "extract", "position",
    "overlay", "substring", "trim", "normalize",
];
#[rustfmt::skip]
const MYSQL_GRAMMAR: &[&str] = &[
    "if", "date", "time", "timestamp", "year", "month", "day", "hour", "minute", "second",
    "char", "insert", "left", "right", "repeat", "replace", "current_date", "current_time",
    "current_timestamp", "localtime", "localtimestamp", "utc_date", "utc_time",
    "utc_timestamp", "sysdate", "values", "truncate", "timestampdiff", "timestampadd",
    "get_format", "json_table", "ascii", "avg", "row_number", "interval", "current_user",
    "current_role", "user", "trim", "substring", "position", "extract", "convert", "cast",
    "count", "min", "max", "sum",
];
#[rustfmt::skip]
const SQLITE_GRAMMAR: &[&str] = &["current_date", "current_time", "current_timestamp"];

fn grammar(kind: DatasourceKind) -> &'static [&'static str] {
    match kind {
        DatasourceKind::Postgres => POSTGRES_GRAMMAR,
        DatasourceKind::Mysql => MYSQL_GRAMMAR,
        DatasourceKind::Sqlite => SQLITE_GRAMMAR,
    }
}

/// Whether the connected server provides the built-in `name` (lower case): a grammar construct,
/// or a function its catalogue lists. A catalogue that lists nothing (one never read from a
/// server: tests, benches, the fuzzer) is taken at its word for the static lists.
pub fn server_has(kind: DatasourceKind, catalog: &Catalog, name: &str) -> bool {
    catalog.builtin_functions.is_empty()
        || grammar(kind).contains(&name)
        || catalog.builtin_functions.contains(name)
}

/// Whether `name` is a built-in of the connected server at all (on the allow-list or not): a
/// grammar construct or a function its catalogue lists. An `extra_functions` entry naming one
/// allows that built-in rather than a user function.
pub fn is_server_builtin(kind: DatasourceKind, catalog: &Catalog, name: &str) -> bool {
    grammar(kind).contains(&name) || catalog.builtin_functions.contains(name)
}

/// MySQL (not MariaDB) built-ins on the allow-list that only newer versions have, with the first
/// version that has each: a server older than that resolves the name to a stored function.
/// MariaDB lists its built-ins in `information_schema.SQL_FUNCTIONS` instead.
#[rustfmt::skip]
const MYSQL_SINCE: &[(&str, (u32, u32, u32))] = &[
    ("any_value", (5, 7, 5)), ("grouping", (8, 0, 1)), ("regexp_like", (8, 0, 4)),
    ("regexp_replace", (8, 0, 4)), ("regexp_substr", (8, 0, 4)), ("regexp_instr", (8, 0, 4)),
    ("json_table", (8, 0, 4)), ("json_overlaps", (8, 0, 17)), ("json_value", (8, 0, 21)),
    ("json_arrayagg", (5, 7, 22)), ("json_objectagg", (5, 7, 22)),
    ("json_merge_patch", (5, 7, 22)), ("json_merge_preserve", (5, 7, 22)),
    ("json_pretty", (5, 7, 22)), ("row_number", (8, 0, 2)), ("rank", (8, 0, 2)),
    ("dense_rank", (8, 0, 2)), ("percent_rank", (8, 0, 2)), ("cume_dist", (8, 0, 2)),
    ("ntile", (8, 0, 2)), ("lag", (8, 0, 2)), ("lead", (8, 0, 2)), ("first_value", (8, 0, 2)),
    ("last_value", (8, 0, 2)), ("nth_value", (8, 0, 2)),
];

/// MariaDB-only names on the allow-list: never built-ins on MySQL.
#[rustfmt::skip]
const MARIADB_ONLY: &[&str] = &[
    "nvl", "nvl2", "lengthb", "chr", "add_months", "to_char", "natural_sort_key", "median",
    "percentile_cont", "percentile_disc", "json_query", "json_exists", "json_equals",
    "json_normalize", "json_compact", "json_loose", "json_detailed", "decode_histogram",
];

/// The built-ins a MySQL (not MariaDB) server of `version` (`8.0.36`) provides among the names
/// the policy knows: the MySQL allow-list and grammar, cut by [`MYSQL_SINCE`].
pub fn mysql_builtins(version: &str) -> std::collections::BTreeSet<String> {
    let v = parse_version(version);
    builtin_names(DatasourceKind::Mysql)
        .chain(MYSQL_GRAMMAR.iter().copied())
        .filter(|n| !MARIADB_ONLY.contains(n))
        .filter(|n| {
            MYSQL_SINCE
                .iter()
                .find(|(name, _)| name == n)
                .is_none_or(|(_, since)| v >= *since)
        })
        .map(str::to_owned)
        .collect()
}

/// `8.0.36-0ubuntu…` → (8, 0, 36); missing parts are 0.
pub fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut nums = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (
        nums.next().unwrap_or(0),
        nums.next().unwrap_or(0),
        nums.next().unwrap_or(0),
    )
}

/// Whether `name` (already normalised: lower case) is a built-in safe function of `kind`.
pub fn is_builtin(kind: DatasourceKind, name: &str) -> bool {
    let dialect = match kind {
        DatasourceKind::Postgres => POSTGRES,
        DatasourceKind::Mysql => MYSQL,
        DatasourceKind::Sqlite => SQLITE,
    };
    COMMON.contains(&name) || dialect.contains(&name)
}

/// The names of the built-in list of `kind`, for documentation and tests.
pub fn builtin_names(kind: DatasourceKind) -> impl Iterator<Item = &'static str> {
    let dialect = match kind {
        DatasourceKind::Postgres => POSTGRES,
        DatasourceKind::Mysql => MYSQL,
        DatasourceKind::Sqlite => SQLITE,
    };
    COMMON.iter().chain(dialect.iter()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Functions with effects, or that read outside the checked tables, from THREATS.md.
    #[rustfmt::skip]
    const DANGEROUS: &[(DatasourceKind, &[&str])] = &[
        (
            DatasourceKind::Postgres,
            &[
                "pg_sleep", "pg_sleep_for", "pg_sleep_until", "set_config", "current_setting",
                "pg_advisory_lock", "pg_advisory_xact_lock", "pg_try_advisory_lock",
                "pg_terminate_backend", "pg_cancel_backend", "nextval", "setval", "currval",
                "lo_import", "lo_export", "lo_get", "lo_from_bytea", "pg_read_file",
                "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "dblink", "dblink_exec",
                "query_to_xml", "table_to_xml", "cursor_to_xml", "txid_current", "setseed",
                "current_user", "version", "pg_reload_conf", "pg_notify",
            ],
        ),
        (
            DatasourceKind::Mysql,
            &[
                "sleep", "benchmark", "get_lock", "release_lock", "is_free_lock", "is_used_lock",
                "release_all_locks", "load_file", "master_pos_wait", "source_pos_wait",
                "last_insert_id", "user", "current_user", "database", "version", "connection_id",
            ],
        ),
        (
            DatasourceKind::Sqlite,
            &[
                "load_extension", "randomblob", "zeroblob", "fts3_tokenizer", "sqlite_version",
                "last_insert_rowid", "changes", "total_changes", "pragma_table_info",
                "readfile", "writefile",
            ],
        ),
    ];

    #[test]
    fn no_dangerous_function_is_on_any_built_in_list() {
        for (kind, names) in DANGEROUS {
            for name in *names {
                assert!(!is_builtin(*kind, name), "{name} is on the {kind} list");
            }
        }
    }

    #[test]
    fn built_in_names_are_stored_in_lower_case_without_duplicates() {
        for kind in DatasourceKind::ALL {
            let names: Vec<_> = builtin_names(*kind).collect();
            for name in &names {
                assert_eq!(*name, name.to_ascii_lowercase(), "{name} on {kind}");
            }
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "duplicate on the {kind} list");
        }
    }

    #[test]
    fn a_mysql_server_gets_only_the_built_ins_its_version_has() {
        let old = mysql_builtins("5.7.44-log");
        assert!(old.contains("any_value") && !old.contains("grouping"));
        assert!(!old.contains("row_number") && !old.contains("json_value"));
        let new = mysql_builtins("8.0.36");
        assert!(new.contains("grouping") && new.contains("json_value"));
        assert!(
            !new.contains("nvl"),
            "MariaDB-only names are not MySQL built-ins"
        );
        assert_eq!(parse_version("10.11.19-MariaDB-0+deb12u1"), (10, 11, 19));
    }

    #[test]
    fn the_server_decides_which_listed_names_exist_except_for_grammar() {
        let mut c = Catalog::default();
        assert!(
            server_has(DatasourceKind::Postgres, &c, "uuidv7"),
            "nothing read yet"
        );
        c.builtin_functions.insert("lower".into());
        assert!(server_has(DatasourceKind::Postgres, &c, "lower"));
        assert!(!server_has(DatasourceKind::Postgres, &c, "uuidv7"));
        assert!(server_has(DatasourceKind::Postgres, &c, "coalesce"));
        assert!(server_has(DatasourceKind::Mysql, &c, "if"));
    }

    #[test]
    fn everyday_analytic_functions_are_on_every_list() {
        for kind in DatasourceKind::ALL {
            for name in [
                "count",
                "sum",
                "coalesce",
                "row_number",
                "lag",
                "lower",
                "round",
            ] {
                assert!(is_builtin(*kind, name), "{name} missing on {kind}");
            }
        }
        assert!(is_builtin(DatasourceKind::Postgres, "date_trunc"));
        assert!(is_builtin(DatasourceKind::Mysql, "date_format"));
        assert!(is_builtin(DatasourceKind::Sqlite, "strftime"));
    }
}
