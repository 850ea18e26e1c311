//! Values both ways: JSON params bound as MySQL values, and rows encoded as JSON with API.md's
//! value mapping (module notes).

use super::*;

/// JSON params to MySQL values. The server converts by the placeholder's context (MySQL's
/// prepared statements do not report parameter types), so only the count can be checked here;
/// arrays and objects are bound as JSON text.
pub(super) fn to_params(
    params: &[serde_json::Value],
    expected: usize,
) -> Result<Params, ExecError> {
    if params.len() != expected {
        return Err(ExecError::BadParams(format!(
            "the statement has {expected} placeholders but {} params were given",
            params.len()
        )));
    }
    if params.is_empty() {
        return Ok(Params::Empty);
    }
    let mut out = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        out.push(match p {
            serde_json::Value::Null => Value::NULL,
            serde_json::Value::Bool(b) => Value::Int(i64::from(*b)),
            serde_json::Value::Number(n) => {
                if let Some(v) = n.as_i64() {
                    Value::Int(v)
                } else if let Some(v) = n.as_u64() {
                    Value::UInt(v)
                } else if let Some(v) = n.as_f64() {
                    Value::Double(v)
                } else {
                    return Err(ExecError::BadParams(format!(
                        "param {} is a number MySQL cannot hold",
                        i + 1
                    )));
                }
            }
            serde_json::Value::String(s) => Value::Bytes(s.as_bytes().to_vec()),
            other => Value::Bytes(other.to_string().into_bytes()),
        });
    }
    Ok(Params::Positional(out))
}

/// How a column's values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enc {
    Number,
    Decimal,
    Date,
    DateTime,
    /// TIMESTAMP is an instant (read in the pinned UTC session): written with `Z`.
    Timestamp,
    Time,
    Json,
    Text,
    Binary,
    Bit,
}

#[derive(Clone, Debug)]
pub(super) struct ColKind {
    pub(super) name: String,
    pub(super) type_name: String,
    enc: Enc,
}

/// The binary character set: BINARY/VARBINARY/BLOB columns carry it.
const BINARY_CHARSET: u16 = 63;

impl ColKind {
    pub(super) fn of(c: &mysql_async::Column) -> Result<ColKind, ExecError> {
        let flags = c.flags();
        let binary = c.character_set() == BINARY_CHARSET;
        let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
        let int = |name: &str| {
            if unsigned {
                (format!("{name} unsigned"), Enc::Number)
            } else {
                (name.to_owned(), Enc::Number)
            }
        };
        let text_or_bin = |text: &str, bin: &str| {
            if binary {
                (bin.to_owned(), Enc::Binary)
            } else {
                (text.to_owned(), Enc::Text)
            }
        };
        let name = c.name_str().into_owned();
        let (type_name, enc) = match c.column_type() {
            ColumnType::MYSQL_TYPE_TINY => int("tinyint"),
            ColumnType::MYSQL_TYPE_SHORT => int("smallint"),
            ColumnType::MYSQL_TYPE_INT24 => int("mediumint"),
            ColumnType::MYSQL_TYPE_LONG => int("int"),
            ColumnType::MYSQL_TYPE_LONGLONG => int("bigint"),
            ColumnType::MYSQL_TYPE_YEAR => ("year".to_owned(), Enc::Number),
            ColumnType::MYSQL_TYPE_FLOAT => ("float".to_owned(), Enc::Number),
            ColumnType::MYSQL_TYPE_DOUBLE => ("double".to_owned(), Enc::Number),
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => {
                ("decimal".to_owned(), Enc::Decimal)
            }
            ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => {
                ("date".to_owned(), Enc::Date)
            }
            ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => {
                ("datetime".to_owned(), Enc::DateTime)
            }
            ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => {
                ("timestamp".to_owned(), Enc::Timestamp)
            }
            ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => {
                ("time".to_owned(), Enc::Time)
            }
            ColumnType::MYSQL_TYPE_JSON => ("json".to_owned(), Enc::Json),
            ColumnType::MYSQL_TYPE_BIT => ("bit".to_owned(), Enc::Bit),
            ColumnType::MYSQL_TYPE_NULL => ("null".to_owned(), Enc::Text),
            ColumnType::MYSQL_TYPE_ENUM => ("enum".to_owned(), Enc::Text),
            ColumnType::MYSQL_TYPE_SET => ("set".to_owned(), Enc::Text),
            ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::ENUM_FLAG) => {
                ("enum".to_owned(), Enc::Text)
            }
            ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::SET_FLAG) => {
                ("set".to_owned(), Enc::Text)
            }
            ColumnType::MYSQL_TYPE_STRING => text_or_bin("char", "binary"),
            ColumnType::MYSQL_TYPE_VAR_STRING | ColumnType::MYSQL_TYPE_VARCHAR => {
                text_or_bin("varchar", "varbinary")
            }
            ColumnType::MYSQL_TYPE_TINY_BLOB => text_or_bin("tinytext", "tinyblob"),
            ColumnType::MYSQL_TYPE_BLOB => text_or_bin("text", "blob"),
            ColumnType::MYSQL_TYPE_MEDIUM_BLOB => text_or_bin("mediumtext", "mediumblob"),
            ColumnType::MYSQL_TYPE_LONG_BLOB => text_or_bin("longtext", "longblob"),
            other => {
                let t = match other {
                    ColumnType::MYSQL_TYPE_GEOMETRY => "geometry".to_owned(),
                    ColumnType::MYSQL_TYPE_VECTOR => "vector".to_owned(),
                    o => format!("{o:?}")
                        .trim_start_matches("MYSQL_TYPE_")
                        .to_lowercase(),
                };
                return Err(ExecError::UnsupportedType(format!(
                    "column {name:?} has type {t}, which the gateway cannot encode; \
                     cast it to text in the query (e.g. CAST(… AS CHAR) or ST_AsText(…))"
                )));
            }
        };
        Ok(ColKind {
            name,
            type_name,
            enc,
        })
    }
}

/// One row as a JSON array.
pub(super) fn encode_row(kinds: &[ColKind], row: &Row) -> Result<Bytes, ExecError> {
    let mut w = RowWriter::with_capacity(16 * kinds.len() + 2);
    for (i, k) in kinds.iter().enumerate() {
        let v = row.as_ref(i).unwrap_or(&Value::NULL);
        write_value(&mut w, k, v)?;
    }
    Ok(w.finish())
}

fn write_value(w: &mut RowWriter, k: &ColKind, v: &Value) -> Result<(), ExecError> {
    match v {
        Value::NULL => w.null(),
        Value::Int(i) => w.i64(*i),
        Value::UInt(u) => w.u64(*u),
        Value::Float(f) => w.f64(f32_to_f64(*f)),
        Value::Double(d) => w.f64(*d),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let date = format!("{y:04}-{mo:02}-{d:02}");
            match k.enc {
                Enc::Date => w.str(&date),
                _ => {
                    let mut out = format!("{date}T{h:02}:{mi:02}:{s:02}");
                    if *us != 0 {
                        out.push_str(&format!(".{us:06}"));
                    }
                    if k.enc == Enc::Timestamp {
                        out.push('Z');
                    }
                    w.str(&out);
                }
            }
        }
        Value::Time(neg, days, h, mi, s, us) => {
            // MySQL TIME is a duration (up to ±838:59:59), so hours may exceed 24.
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            let mut out = format!("{sign}{hours:02}:{mi:02}:{s:02}");
            if *us != 0 {
                out.push_str(&format!(".{us:06}"));
            }
            w.str(&out);
        }
        Value::Bytes(b) => match k.enc {
            Enc::Binary => w.base64(b),
            Enc::Json => w.raw_json(&String::from_utf8_lossy(b)),
            Enc::Bit => {
                if b.len() > 8 {
                    w.base64(b);
                } else {
                    w.u64(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)));
                }
            }
            Enc::Number => {
                // Numbers normally arrive as Int/Double; text here is a server oddity: keep it
                // exact as a string rather than guess.
                w.str(&String::from_utf8_lossy(b))
            }
            Enc::Decimal | Enc::Text | Enc::Date | Enc::DateTime | Enc::Timestamp | Enc::Time => {
                w.str(&String::from_utf8_lossy(b))
            }
        },
    }
    Ok(())
}

/// FLOAT columns are single precision: widen through the shortest decimal form so `1.1` stays
/// `1.1` instead of `1.100000023841858`.
fn f32_to_f64(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    ryu::Buffer::new()
        .format_finite(f)
        .parse::<f64>()
        .unwrap_or(f64::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_number_of_params_is_refused_before_reaching_the_server() {
        let err = to_params(&[serde_json::json!(1)], 2).unwrap_err();
        assert!(matches!(err, ExecError::BadParams(m) if m.contains('2')));
        assert!(matches!(to_params(&[], 0), Ok(Params::Empty)));
    }

    #[test]
    fn single_precision_floats_keep_their_short_form() {
        assert_eq!(f32_to_f64(1.1), 1.1);
        assert!(f32_to_f64(f32::NAN).is_nan());
    }
}
