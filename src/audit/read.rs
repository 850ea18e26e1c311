//! Reading the audit log: filtered, company-scoped pages, newest first, with keyset cursors.

use super::{AuditError, AuditRecord, Dialect, Field, Outcome, columns};
use crate::model::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rusqlite::types::Type;
use rusqlite::{Connection, Row};

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// The most items one page may hold, whatever the request asks.
pub const MAX_LIMIT: usize = 1000;

/// Which records to read. Every field but `company_id` narrows the result further; the company
/// scope cannot be left out.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditFilter {
    pub company_id: CompanyId,
    pub action: Option<String>,
    pub actor_id: Option<UserId>,
    pub app_id: Option<AppId>,
    pub datasource_id: Option<DatasourceId>,
    pub outcome: Option<Outcome>,
    /// Inclusive lower bound on `at`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `at`, so consecutive windows never count a record twice.
    pub until: Option<DateTime<Utc>>,
    /// Page size; 0 means [`DEFAULT_LIMIT`], more than [`MAX_LIMIT`] is capped.
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl AuditFilter {
    /// Everything of one company, first page, default size.
    pub fn new(company_id: CompanyId) -> Self {
        AuditFilter {
            company_id,
            action: None,
            actor_id: None,
            app_id: None,
            datasource_id: None,
            outcome: None,
            since: None,
            until: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }

    fn effective_limit(&self) -> usize {
        match self.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        }
    }
}

/// One page of records, newest first; `next_cursor` is `None` on the last page.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}

/// The position after a record in newest-first order: its time and id (the id breaks ties
/// between records of the same microsecond).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    at_us: i64,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at_us, self.id))
    }

    fn decode(s: &str) -> Result<Cursor, AuditError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuditError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| AuditError::BadCursor)?;
        let (at, id) = text.split_once(':').ok_or(AuditError::BadCursor)?;
        let at_us = at.parse::<i64>().map_err(|_| AuditError::BadCursor)?;
        if id.is_empty() {
            return Err(AuditError::BadCursor);
        }
        Ok(Cursor {
            at_us,
            id: id.to_owned(),
        })
    }
}

const COLUMNS: &str = columns!();

/// Newest first, keyset-paginated by `(at, id)`, always scoped to `filter.company_id`.
///
/// A cursor only positions the page; the company scope always comes from the filter, so a cursor
/// taken from another company's page reveals nothing.
pub fn query(conn: &Connection, filter: &AuditFilter) -> Result<AuditPage, AuditError> {
    let page = Page::new(filter, Dialect::Sqlite)?;
    let mut stmt = conn.prepare_cached(&page.sql)?;
    let items = stmt
        .query_map(
            rusqlite::params_from_iter(page.params.iter().map(Param::field)),
            |r| record_from(r),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items))
}

/// [`query`] on the PostgreSQL store database: the same filters, cursors, order and limits.
pub fn query_pg(
    client: &mut postgres::Client,
    filter: &AuditFilter,
) -> Result<AuditPage, AuditError> {
    let page = Page::new(filter, Dialect::Postgres)?;
    let fields: Vec<Field<'_>> = page.params.iter().map(Param::field).collect();
    let items = client
        .query(page.sql.as_str(), &pg_params(&fields))?
        .iter()
        .map(record_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items))
}

fn pg_params<'a>(fields: &'a [Field<'_>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    fields
        .iter()
        .map(|f| f as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// A value bound to a page's statement.
#[derive(Clone, Debug, PartialEq)]
enum Param {
    Text(String),
    Int(i64),
}

impl Param {
    fn field(&self) -> Field<'_> {
        match self {
            Param::Text(s) => Field::Text(Some(s)),
            Param::Int(n) => Field::Int(Some(*n)),
        }
    }
}

/// The statement reading one page, in one dialect, and its parameters.
struct Page {
    sql: String,
    params: Vec<Param>,
    limit: usize,
}

impl Page {
    /// Records are in the log or, on SQLite for a moment after their commit, in the staging
    /// table (see [`super::STAGING_SQL`]); the page is read from both. SQLite merges the two
    /// ordered arms: the log's from its index in order, stopping after the page, the staging
    /// table's (a few hundred rows at most) sorted. Both arms use the same numbered parameters.
    fn new(filter: &AuditFilter, dialect: Dialect) -> Result<Page, AuditError> {
        let cursor = filter.cursor.as_deref().map(Cursor::decode).transpose()?;
        let limit = filter.effective_limit();
        let mut params = vec![Param::Text(filter.company_id.as_str().to_owned())];
        let mut cond = format!("company_id = {}", dialect.placeholder(1));
        // Each `?` of `sql` becomes the placeholder of the next parameter.
        let mut add = |sql: &str, values: Vec<Param>| {
            let mut parts = sql.split('?');
            cond.push_str(" AND ");
            cond.push_str(parts.next().unwrap_or_default());
            for (part, v) in parts.zip(values) {
                params.push(v);
                cond.push_str(&dialect.placeholder(params.len()));
                cond.push_str(part);
            }
        };
        let text = |v: &str| vec![Param::Text(v.to_owned())];
        let eqs = [
            ("action = ?", filter.action.as_deref()),
            ("actor_id = ?", filter.actor_id.as_ref().map(UserId::as_str)),
            ("app_id = ?", filter.app_id.as_ref().map(AppId::as_str)),
            (
                "datasource_id = ?",
                filter.datasource_id.as_ref().map(DatasourceId::as_str),
            ),
            ("outcome = ?", filter.outcome.map(Outcome::as_str)),
        ];
        for (sql, value) in eqs {
            if let Some(v) = value {
                add(sql, text(v));
            }
        }
        if let Some(since) = filter.since {
            add("at_us >= ?", vec![Param::Int(since.timestamp_micros())]);
        }
        if let Some(until) = filter.until {
            add("at_us < ?", vec![Param::Int(until.timestamp_micros())]);
        }
        if let Some(c) = cursor {
            add(
                "(at_us, id) < (?, ?)",
                vec![Param::Int(c.at_us), Param::Text(c.id)],
            );
        }
        // One extra row tells whether another page exists, so the last page has no cursor.
        params.push(Param::Int(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
        let arms: Vec<String> = dialect
            .tables()
            .iter()
            .map(|t| format!("SELECT {COLUMNS} FROM {t} WHERE {cond}"))
            .collect();
        let sql = format!(
            "{} ORDER BY at_us DESC, id DESC LIMIT {}",
            arms.join(" UNION ALL "),
            dialect.placeholder(params.len())
        );
        Ok(Page { sql, params, limit })
    }

    /// The page of `items` (up to one more than the limit, newest first) and its cursor.
    fn finish(&self, mut items: Vec<AuditRecord>) -> AuditPage {
        let next_cursor = if items.len() > self.limit {
            items.truncate(self.limit);
            items.last().map(|last| {
                Cursor {
                    at_us: last.at.timestamp_micros(),
                    id: last.id.as_str().to_owned(),
                }
                .encode()
            })
        } else {
            None
        };
        AuditPage { items, next_cursor }
    }
}

/// The statement counting a company's records, in one dialect.
fn count_sql(dialect: Dialect) -> String {
    let company = dialect.placeholder(1);
    let parts: Vec<String> = dialect
        .tables()
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {t} WHERE company_id = {company})"))
        .collect();
    format!("SELECT {}", parts.join(" + "))
}

/// How many records a company has.
pub fn count(conn: &Connection, company_id: &CompanyId) -> Result<u64, AuditError> {
    let n: i64 = conn.query_row(&count_sql(Dialect::Sqlite), [company_id.as_str()], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// [`count`] on the PostgreSQL store database.
pub fn count_pg(client: &mut postgres::Client, company_id: &CompanyId) -> Result<u64, AuditError> {
    let n: i64 = client
        .query_one(
            count_sql(Dialect::Postgres).as_str(),
            &[&company_id.as_str()],
        )?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A stored value outside what the writer ever stores (a hand-edited row).
#[derive(Debug, thiserror::Error)]
#[error("stored {0} out of range")]
struct OutOfRange(&'static str);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A result row of either database, read by column index in [`columns!`] order.
trait StoredRow {
    type Error;
    fn text(&self, idx: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, idx: usize) -> Result<Option<i64>, Self::Error>;
    fn real(&self, idx: usize) -> Result<Option<f64>, Self::Error>;
    /// A value of column `idx` that is not a valid record field.
    fn invalid(idx: usize, e: BoxError) -> Self::Error;

    /// A column that is never NULL.
    fn required<T>(
        &self,
        idx: usize,
        get: impl Fn(&Self, usize) -> Result<Option<T>, Self::Error>,
    ) -> Result<T, Self::Error> {
        get(self, idx)?.ok_or_else(|| Self::invalid(idx, "unexpected NULL".into()))
    }
}

impl StoredRow for Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, idx: usize) -> rusqlite::Result<Option<String>> {
        self.get(idx)
    }
    fn int(&self, idx: usize) -> rusqlite::Result<Option<i64>> {
        self.get(idx)
    }
    fn real(&self, idx: usize) -> rusqlite::Result<Option<f64>> {
        self.get(idx)
    }
    fn invalid(idx: usize, e: BoxError) -> rusqlite::Error {
        let ty = if matches!(idx, 1 | 11) {
            Type::Integer
        } else {
            Type::Text
        };
        rusqlite::Error::FromSqlConversionFailure(idx, ty, e)
    }
}

impl StoredRow for postgres::Row {
    type Error = AuditError;
    fn text(&self, idx: usize) -> Result<Option<String>, AuditError> {
        Ok(self.try_get(idx)?)
    }
    fn int(&self, idx: usize) -> Result<Option<i64>, AuditError> {
        Ok(self.try_get(idx)?)
    }
    fn real(&self, idx: usize) -> Result<Option<f64>, AuditError> {
        Ok(self.try_get(idx)?)
    }
    fn invalid(idx: usize, e: BoxError) -> AuditError {
        AuditError::Unreadable(format!("column {idx}: {e}"))
    }
}

fn record_from<R: StoredRow>(r: &R) -> Result<AuditRecord, R::Error> {
    let at_us = r.required(1, R::int)?;
    let at = DateTime::from_timestamp_micros(at_us)
        .ok_or_else(|| R::invalid(1, OutOfRange("time").into()))?;
    let outcome = r
        .required(8, R::text)?
        .parse::<Outcome>()
        .map_err(|e| R::invalid(8, e.into()))?;
    let row_count = r
        .int(11)?
        .map(|n| u64::try_from(n).map_err(|e| R::invalid(11, e.into())))
        .transpose()?;
    let detail = r
        .text(14)?
        .map(|s| serde_json::from_str(&s).map_err(|e| R::invalid(14, e.into())))
        .transpose()?;
    Ok(AuditRecord {
        id: AuditId(r.required(0, R::text)?),
        at,
        company_id: CompanyId(r.required(2, R::text)?),
        actor_id: r.text(3)?.map(UserId),
        action: r.required(4, R::text)?,
        app_id: r.text(5)?.map(AppId),
        datasource_id: r.text(6)?.map(DatasourceId),
        target_id: r.text(7)?,
        outcome,
        code: r.text(9)?,
        sql: r.text(10)?,
        row_count,
        duration_ms: r.real(12)?,
        request_id: r.text(13)?,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{STAGING_TABLE, TABLE};
    use super::*;
    use chrono::TimeZone;
    use std::collections::HashSet;

    fn ts(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    /// 60 records of one company varying every filterable field independently, one per second.
    fn varied(company: &CompanyId) -> Vec<AuditRecord> {
        let actors = [UserId::generate(), UserId::generate()];
        let apps = [AppId::generate(), AppId::generate()];
        let dss = [DatasourceId::generate(), DatasourceId::generate()];
        (0..60)
            .map(|i| AuditRecord {
                at: ts(i),
                actor_id: Some(actors[(i % 2) as usize].clone()),
                action: ["query", "app.share", "user.role"][(i % 3) as usize].into(),
                app_id: Some(apps[(i / 2 % 2) as usize].clone()),
                datasource_id: (i % 5 != 0).then(|| dss[(i / 3 % 2) as usize].clone()),
                outcome: Outcome::ALL[(i / 4 % 3) as usize],
                ..sample(company, "query")
            })
            .collect()
    }

    /// The records `keep` selects, newest first, as `query` should return them.
    fn expected(recs: &[AuditRecord], keep: impl Fn(&AuditRecord) -> bool) -> Vec<AuditRecord> {
        let mut v: Vec<_> = recs.iter().filter(|r| keep(r)).cloned().collect();
        v.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        v
    }

    fn all_pages(db: &TestDb, mut filter: AuditFilter) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        loop {
            let page = db.query(&filter).unwrap();
            assert!(page.items.len() <= filter.effective_limit());
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => filter.cursor = Some(c),
                None => return out,
            }
        }
    }

    on_both_databases! {
    fn each_filter_selects_exactly_the_matching_records(db) {
        let company = CompanyId::generate();
        let recs = varied(&company);
        db.insert_all(&recs);
        let r0 = &recs[7];
        let base = || AuditFilter {
            limit: MAX_LIMIT,
            ..AuditFilter::new(company.clone())
        };

        type Keep<'a> = Box<dyn Fn(&AuditRecord) -> bool + 'a>;
        let cases: Vec<(AuditFilter, Keep)> = vec![
            (base(), Box::new(|_| true)),
            (
                AuditFilter {
                    action: Some("app.share".into()),
                    ..base()
                },
                Box::new(|r| r.action == "app.share"),
            ),
            (
                AuditFilter {
                    actor_id: r0.actor_id.clone(),
                    ..base()
                },
                Box::new(|r| r.actor_id == r0.actor_id),
            ),
            (
                AuditFilter {
                    app_id: r0.app_id.clone(),
                    ..base()
                },
                Box::new(|r| r.app_id == r0.app_id),
            ),
            (
                AuditFilter {
                    datasource_id: r0.datasource_id.clone(),
                    ..base()
                },
                Box::new(|r| r.datasource_id == r0.datasource_id),
            ),
            (
                AuditFilter {
                    outcome: Some(Outcome::Denied),
                    ..base()
                },
                Box::new(|r| r.outcome == Outcome::Denied),
            ),
            (
                AuditFilter {
                    since: Some(ts(10)),
                    ..base()
                },
                Box::new(|r| r.at >= ts(10)),
            ),
            (
                AuditFilter {
                    until: Some(ts(10)),
                    ..base()
                },
                Box::new(|r| r.at < ts(10)),
            ),
        ];
        for (i, (filter, keep)) in cases.into_iter().enumerate() {
            let want = expected(&recs, keep);
            assert!(!want.is_empty(), "case {i} should select something");
            assert_eq!(db.query(&filter).unwrap().items, want, "case {i}");
        }
    }
    }

    on_both_databases! {
    fn filters_combine_as_a_conjunction(db) {
        let company = CompanyId::generate();
        let recs = varied(&company);
        db.insert_all(&recs);
        let r0 = &recs[13];
        let filter = AuditFilter {
            action: Some(r0.action.clone()),
            actor_id: r0.actor_id.clone(),
            app_id: r0.app_id.clone(),
            outcome: Some(r0.outcome),
            since: Some(ts(5)),
            until: Some(ts(50)),
            ..AuditFilter::new(company.clone())
        };
        let want = expected(&recs, |r| {
            r.action == r0.action
                && r.actor_id == r0.actor_id
                && r.app_id == r0.app_id
                && r.outcome == r0.outcome
                && r.at >= ts(5)
                && r.at < ts(50)
        });
        let got = db.query(&filter).unwrap().items;
        assert!(got.contains(r0));
        assert_eq!(got, want);
        // Fewer than any single filter would give: the conditions really are combined.
        let action_only = AuditFilter {
            action: Some(r0.action.clone()),
            ..AuditFilter::new(company)
        };
        assert!(db.query(&action_only).unwrap().items.len() > got.len());
    }
    }

    on_both_databases! {
    fn paging_returns_every_record_once_newest_first_even_when_timestamps_tie(db) {
        let company = CompanyId::generate();
        // Five records per second, so page boundaries fall inside groups of equal time.
        let recs: Vec<_> = (0..23)
            .map(|i| AuditRecord {
                at: ts(i / 5),
                ..sample(&company, "query")
            })
            .collect();
        db.insert_all(&recs);

        for limit in [1, 3, 4, 5, 22, 23, 24] {
            let got = all_pages(
                &db,
                AuditFilter {
                    limit,
                    ..AuditFilter::new(company.clone())
                },
            );
            assert_eq!(got, expected(&recs, |_| true), "limit {limit}");
            let ids: HashSet<_> = got.iter().map(|r| r.id.clone()).collect();
            assert_eq!(ids.len(), recs.len(), "limit {limit}");
        }
    }
    }

    #[test]
    fn pages_merge_the_log_and_the_staging_table_in_order() {
        let db = TestDb::new(Backend::Sqlite);
        let mut conn = Connection::open(db.path()).unwrap();
        let company = CompanyId::generate();
        let other = CompanyId::generate();
        // Every third record still staged, the rest moved; times tie in groups of four, so
        // pages and ties straddle the two tables. Another company's staged records stay out.
        let recs: Vec<_> = (0..40)
            .map(|i| AuditRecord {
                at: ts(i / 4),
                outcome: Outcome::ALL[(i % 2) as usize],
                ..sample(&company, "query")
            })
            .collect();
        let (staged, logged): (Vec<_>, Vec<_>) = recs
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 3 == 0);
        let logged: Vec<_> = logged.into_iter().map(|(_, r)| r).collect();
        insert_all(&mut conn, &logged);
        for (_, r) in &staged {
            super::super::stage(&conn, r).unwrap();
        }
        super::super::stage(&conn, &sample(&other, "query")).unwrap();

        assert_eq!(count(&conn, &company).unwrap(), 40);
        assert_eq!(count(&conn, &other).unwrap(), 1);
        for limit in [1, 3, 7, 40, 41] {
            let filter = AuditFilter {
                limit,
                ..AuditFilter::new(company.clone())
            };
            assert_eq!(
                all_pages(&db, filter),
                expected(&recs, |_| true),
                "limit {limit}"
            );
            let denied = AuditFilter {
                limit,
                outcome: Some(Outcome::Denied),
                ..AuditFilter::new(company.clone())
            };
            assert_eq!(
                all_pages(&db, denied),
                expected(&recs, |r| r.outcome == Outcome::Denied),
                "limit {limit}"
            );
        }
    }

    on_both_databases! {
    fn paging_with_a_filter_keeps_the_filter_on_every_page(db) {
        let company = CompanyId::generate();
        let recs = varied(&company);
        db.insert_all(&recs);
        let got = all_pages(
            &db,
            AuditFilter {
                outcome: Some(Outcome::Allowed),
                limit: 3,
                ..AuditFilter::new(company)
            },
        );
        assert_eq!(got, expected(&recs, |r| r.outcome == Outcome::Allowed));
    }
    }

    on_both_databases! {
    fn the_last_page_has_no_cursor(db) {
        let company = CompanyId::generate();
        let recs: Vec<_> = (0..4).map(|_| sample(&company, "query")).collect();
        db.insert_all(&recs);
        let mut f = AuditFilter {
            limit: 2,
            ..AuditFilter::new(company)
        };
        let first = db.query(&f).unwrap();
        assert!(first.next_cursor.is_some());
        f.cursor = first.next_cursor;
        let second = db.query(&f).unwrap();
        assert_eq!(second.items.len(), 2);
        assert_eq!(second.next_cursor, None);
    }
    }

    on_both_databases! {
    fn another_companys_records_never_appear(db) {
        let ours = CompanyId::generate();
        let theirs = CompanyId::generate();
        let mut recs = varied(&ours);
        let their_recs = varied(&theirs);
        recs.truncate(10);
        db.insert_all(&recs);
        db.insert_all(&their_recs);

        let got = all_pages(
            &db,
            AuditFilter {
                limit: 4,
                ..AuditFilter::new(ours.clone())
            },
        );
        assert_eq!(got, expected(&recs, |_| true));
        assert_eq!(db.count(&ours), 10);
        assert_eq!(db.count(&theirs), 60);

        // Filtering on an id of the other company finds nothing, and their cursor pages ours.
        let f = AuditFilter {
            actor_id: their_recs[0].actor_id.clone(),
            ..AuditFilter::new(ours.clone())
        };
        assert!(db.query(&f).unwrap().items.is_empty());
        let their_page = db.query(
            &AuditFilter {
                limit: 1,
                ..AuditFilter::new(theirs)
            },
        )
        .unwrap();
        let f = AuditFilter {
            cursor: their_page.next_cursor,
            ..AuditFilter::new(ours.clone())
        };
        assert!(
            db.query(&f)
                .unwrap()
                .items
                .iter()
                .all(|r| r.company_id == ours)
        );
    }
    }

    on_both_databases! {
    fn a_malformed_cursor_is_refused(db) {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let bad = [
            String::new(),
            "not base64!".into(),
            "%%%".into(),
            enc("no separator"),
            enc("notanumber:aud_x"),
            enc("123:"),
            enc("99999999999999999999999:aud_x"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, b':', b'a']),
        ];
        for c in bad {
            let f = AuditFilter {
                cursor: Some(c.clone()),
                ..AuditFilter::new(CompanyId::generate())
            };
            assert!(
                matches!(db.query(&f), Err(AuditError::BadCursor)),
                "{c:?} should be refused"
            );
        }
    }
    }

    #[test]
    fn cursors_round_trip_and_are_opaque() {
        let c = Cursor {
            at_us: -5,
            id: "aud_a:b".into(),
        };
        let s = c.encode();
        assert!(
            !s.contains("aud_"),
            "the cursor does not show its content plainly"
        );
        assert_eq!(Cursor::decode(&s).unwrap(), c);
    }

    on_both_databases! {
    fn page_size_defaults_when_zero_and_is_capped(db) {
        let company = CompanyId::generate();
        let recs: Vec<_> = (0..MAX_LIMIT + 5)
            .map(|_| sample(&company, "query"))
            .collect();
        db.insert_all(&recs);
        let page = |limit| {
            db.query(
                &AuditFilter {
                    limit,
                    ..AuditFilter::new(company.clone())
                },
            )
            .unwrap()
        };
        assert_eq!(page(0).items.len(), DEFAULT_LIMIT);
        assert_eq!(page(7).items.len(), 7);
        let capped = page(usize::MAX);
        assert_eq!(capped.items.len(), MAX_LIMIT);
        assert!(capped.next_cursor.is_some());
    }
    }

    #[test]
    fn filtered_pages_are_read_in_index_order_without_sorting() {
        let (_dir, _path, conn) = fresh_db();
        let filter = AuditFilter {
            action: Some("query".into()),
            ..AuditFilter::new(CompanyId::generate())
        };
        let cursor = Cursor {
            at_us: 0,
            id: "aud_x".into(),
        };
        let filter = AuditFilter {
            cursor: Some(cursor.encode()),
            limit: 10,
            ..filter
        };
        let page = Page::new(&filter, Dialect::Sqlite).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", page.sql))
            .unwrap()
            .query_map(
                rusqlite::params_from_iter(page.params.iter().map(Param::field)),
                |r| r.get::<_, String>(3),
            )
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The two arms are merged in order (not gathered and sorted as a whole); the log's arm
        // is read from the action index in order; only the staging arm (a few hundred rows at
        // most) is sorted.
        assert!(plan.iter().any(|l| l == "MERGE (UNION ALL)"), "{plan:#?}");
        let log_arm = plan
            .iter()
            .find(|l| l.contains(TABLE) && !l.contains(STAGING_TABLE));
        assert!(
            log_arm.is_some_and(|l| l.contains("audit_log_company_action_at")),
            "{plan:#?}"
        );
        let sorts = plan.iter().filter(|l| l.contains("TEMP B-TREE")).count();
        assert!(sorts <= 1, "{plan:#?}");
        let staging_at = plan.iter().position(|l| l.contains(STAGING_TABLE));
        let sort_at = plan.iter().position(|l| l.contains("TEMP B-TREE"));
        assert!(sort_at.is_none() || sort_at > staging_at, "{plan:#?}");
    }
}
