//! PostgreSQL parameter binding: converts each JSON param to the type the prepared statement
//! expects. Values travel in PostgreSQL's text format (the server's own input functions parse
//! them), after a check here for the common types so a mismatch is reported as `BadParams` naming
//! the position and the expected type instead of a server error.

use bytes::BytesMut;
use serde_json::Value;
use tokio_postgres::types::{Format, IsNull, Kind, ToSql, Type};

use super::values::type_name;
use crate::datasource::ExecError;

/// One bound parameter in text format; `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextParam(pub Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Converts `values` for a statement whose placeholders have `types`.
pub(crate) fn convert_params(
    values: &[Value],
    types: &[Type],
) -> Result<Vec<TextParam>, ExecError> {
    if values.len() != types.len() {
        return Err(ExecError::BadParams(format!(
            "the statement has {} placeholder(s) but {} param(s) were given",
            types.len(),
            values.len()
        )));
    }
    values
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, ty))| {
            if v.is_null() {
                return Ok(TextParam(None));
            }
            to_text(v, ty).map(|s| TextParam(Some(s))).map_err(|why| {
                ExecError::BadParams(format!(
                    "parameter ${} expects {}: {why}",
                    i + 1,
                    type_name(ty)
                ))
            })
        })
        .collect()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The text form of a non-null value for `ty`, or why it does not fit.
fn to_text(v: &Value, ty: &Type) -> Result<String, String> {
    match ty.kind() {
        Kind::Domain(base) => return to_text(v, base),
        Kind::Array(elem) => return array_literal(v, elem),
        Kind::Enum(labels) => {
            return match v {
                Value::String(s) if labels.is_empty() || labels.contains(s) => Ok(s.clone()),
                Value::String(s) => Err(format!("{s:?} is not one of its labels")),
                _ => Err(format!("got {}", kind_of(v))),
            };
        }
        _ => {}
    }
    let got = || format!("got {}", kind_of(v));
    match *ty {
        Type::BOOL => match v {
            Value::Bool(b) => Ok(if *b { "t" } else { "f" }.into()),
            _ => Err(got()),
        },
        Type::INT2 => integer(v, i16::MIN.into(), i16::MAX.into()),
        Type::INT4 => integer(v, i32::MIN.into(), i32::MAX.into()),
        Type::INT8 => integer(v, i64::MIN.into(), i64::MAX.into()),
        Type::OID => integer(v, 0, u32::MAX.into()),
        Type::FLOAT4 | Type::FLOAT8 => match v {
            Value::Number(n) => n
                .as_f64()
                .map(|f| ryu::Buffer::new().format(f).to_owned())
                .ok_or_else(got),
            Value::String(s) => match s.trim() {
                "NaN" | "Infinity" | "-Infinity" => Ok(s.trim().to_owned()),
                t if t.parse::<f64>().is_ok_and(f64::is_finite) => Ok(t.to_owned()),
                _ => Err("the string is not a number".into()),
            },
            _ => Err(got()),
        },
        Type::NUMERIC => match v {
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) if is_decimal(s.trim()) => Ok(s.trim().to_owned()),
            Value::String(_) => Err("the string is not a decimal number".into()),
            _ => Err(got()),
        },
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::CHAR
        | Type::XML => match v {
            Value::String(s) => Ok(s.clone()),
            // `SELECT $1` infers text: let numbers and booleans through as their JSON text.
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(got()),
        },
        Type::JSON | Type::JSONB => Ok(v.to_string()),
        Type::UUID => match v {
            Value::String(s) => uuid::Uuid::parse_str(s)
                .map(|u| u.hyphenated().to_string())
                .map_err(|_| "the string is not a UUID".into()),
            _ => Err(got()),
        },
        Type::DATE => string_matching(v, |s| {
            is_infinity(s) || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        })
        .map_err(|e| e.unwrap_or_else(|| "the string is not a date (YYYY-MM-DD)".into())),
        Type::TIME => string_matching(v, |s| {
            ["%H:%M:%S%.f", "%H:%M"]
                .iter()
                .any(|f| chrono::NaiveTime::parse_from_str(s, f).is_ok())
        })
        .map_err(|e| e.unwrap_or_else(|| "the string is not a time (HH:MM:SS)".into())),
        Type::TIMESTAMP => string_matching(v, |s| is_infinity(s) || parse_naive(s).is_some())
            .map_err(|e| {
                e.unwrap_or_else(|| "the string is not a timestamp (YYYY-MM-DDTHH:MM:SS)".into())
            }),
        Type::TIMESTAMPTZ => match v {
            Value::String(s) if is_infinity(s) => Ok(s.clone()),
            Value::String(s) => parse_timestamptz(s).ok_or_else(|| {
                "the string is not a timestamp (RFC 3339, e.g. 2024-01-31T12:00:00Z)".into()
            }),
            _ => Err(got()),
        },
        Type::BYTEA => match v {
            Value::String(s) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| "the string is not base64".to_owned())?;
                Ok(format!("\\x{}", hex::encode(bytes)))
            }
            _ => Err(got()),
        },
        // Everything else (interval, inet, cidr, macaddr, timetz, citext, ranges…) goes to the
        // server's input function as a string.
        _ => match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(format!("{}; pass it as a string", got())),
        },
    }
}

fn is_infinity(s: &str) -> bool {
    matches!(s, "infinity" | "-infinity")
}

/// A string the check accepts; `Err(None)` is "a string, but not this type", `Err(Some)` names
/// the wrong JSON kind.
fn string_matching(v: &Value, ok: impl Fn(&str) -> bool) -> Result<String, Option<String>> {
    match v {
        Value::String(s) if ok(s.trim()) => Ok(s.trim().to_owned()),
        Value::String(_) => Err(None),
        _ => Err(Some(format!("got {}", kind_of(v)))),
    }
}

fn integer(v: &Value, min: i128, max: i128) -> Result<String, String> {
    let n: Option<i128> = match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                // 3.0 is an integer; 3.5 is not.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e19)
                    .map(|f| f as i128)
            }),
        // Large ids arrive as strings from JavaScript clients.
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => return Err(format!("got {}", kind_of(v))),
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n.to_string()),
        Some(_) => Err("the number is out of range".into()),
        None => Err(format!("got {} that is not an integer", kind_of(v))),
    }
}

/// `[+-]digits[.digits][e[+-]digits]`, or NaN / ±Infinity.
fn is_decimal(s: &str) -> bool {
    if matches!(s, "NaN" | "Infinity" | "+Infinity" | "-Infinity") {
        return true;
    }
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.len() <= 6 && digits(e)
    });
    mantissa_ok && exp_ok
}

fn parse_naive(s: &str) -> Option<chrono::NaiveDateTime> {
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t);
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// RFC 3339 (with `T` or a space), or a naive timestamp taken as UTC like the pinned session.
fn parse_timestamptz(s: &str) -> Option<String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.to_rfc3339());
    }
    if let Ok(t) = chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.to_rfc3339());
    }
    parse_naive(s).map(|t| format!("{}+00:00", t.format("%Y-%m-%dT%H:%M:%S%.f")))
}

/// A JSON array as a PostgreSQL array literal: `{"a","b",NULL}`, nested arrays as further
/// dimensions. Every element is quoted, so no element text can break out of the literal.
fn array_literal(v: &Value, elem: &Type) -> Result<String, String> {
    let Value::Array(items) = v else {
        return Err(format!("got {}; pass an array", kind_of(v)));
    };
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(_) if !matches!(*elem, Type::JSON | Type::JSONB) => {
                out.push_str(&array_literal(item, elem)?)
            }
            _ => {
                let text =
                    to_text(item, elem).map_err(|why| format!("element {}: {why}", i + 1))?;
                out.push('"');
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value, ty: Type) -> Result<Option<String>, ExecError> {
        convert_params(&[v], &[ty]).map(|mut p| p.remove(0).0)
    }

    #[test]
    fn numbers_bind_to_integer_float_and_numeric_placeholders() {
        assert_eq!(one(json!(42), Type::INT4).unwrap().as_deref(), Some("42"));
        assert_eq!(one(json!(3.0), Type::INT8).unwrap().as_deref(), Some("3"));
        assert_eq!(
            one(json!("9007199254740993"), Type::INT8)
                .unwrap()
                .as_deref(),
            Some("9007199254740993")
        );
        assert_eq!(
            one(json!(0.1), Type::FLOAT8).unwrap().as_deref(),
            Some("0.1")
        );
        assert_eq!(
            one(json!("NaN"), Type::FLOAT8).unwrap().as_deref(),
            Some("NaN")
        );
        assert_eq!(
            one(json!(1.25), Type::NUMERIC).unwrap().as_deref(),
            Some("1.25")
        );
        assert_eq!(
            one(json!("-12345678901234567890.0001"), Type::NUMERIC)
                .unwrap()
                .as_deref(),
            Some("-12345678901234567890.0001")
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_its_position_and_type() {
        let err = convert_params(&[json!(1), json!("x")], &[Type::INT4, Type::INT4]).unwrap_err();
        let ExecError::BadParams(m) = err else {
            panic!("{err:?}")
        };
        assert!(m.contains("$2") && m.contains("int4"), "{m}");
        assert!(matches!(
            one(json!(70000), Type::INT2),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            one(json!(1.5), Type::INT4),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            one(json!("1e5x"), Type::NUMERIC),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            one(json!("nope"), Type::UUID),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            one(json!("2024-13-01"), Type::DATE),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            one(json!(true), Type::INT4),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            one(json!(1), Type::BOOL),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            one(json!(1), Type::INTERVAL),
            Err(ExecError::BadParams(_))
        ));
    }

    #[test]
    fn the_param_count_must_match_the_placeholders() {
        assert!(matches!(
            convert_params(&[json!(1)], &[]),
            Err(ExecError::BadParams(_))
        ));
        assert!(matches!(
            convert_params(&[], &[Type::INT4]),
            Err(ExecError::BadParams(_))
        ));
    }

    #[test]
    fn strings_bind_to_dates_timestamps_uuids_json_and_bytes() {
        assert_eq!(
            one(json!("2024-02-29"), Type::DATE).unwrap().as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            one(json!("2024-02-29T10:00:00.5"), Type::TIMESTAMP)
                .unwrap()
                .as_deref(),
            Some("2024-02-29T10:00:00.5")
        );
        assert_eq!(
            one(json!("2024-02-29T10:00:00+02:00"), Type::TIMESTAMPTZ)
                .unwrap()
                .as_deref(),
            Some("2024-02-29T10:00:00+02:00")
        );
        assert_eq!(
            one(json!("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), Type::UUID)
                .unwrap()
                .as_deref(),
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
        assert_eq!(
            one(json!({"a": [1]}), Type::JSONB).unwrap().as_deref(),
            Some(r#"{"a":[1]}"#)
        );
        assert_eq!(
            one(json!("AP8="), Type::BYTEA).unwrap().as_deref(),
            Some("\\x00ff")
        );
        assert_eq!(one(json!(null), Type::INT4).unwrap(), None);
    }

    #[test]
    fn arrays_become_quoted_literals_that_no_element_can_escape() {
        let ty = Type::TEXT_ARRAY;
        assert_eq!(
            one(json!(["a\"}", "b\\", null, "NULL"]), ty)
                .unwrap()
                .as_deref(),
            Some(r#"{"a\"}","b\\",NULL,"NULL"}"#)
        );
        assert_eq!(
            one(json!([[1, 2], [3, null]]), Type::INT4_ARRAY)
                .unwrap()
                .as_deref(),
            Some(r#"{{"1","2"},{"3",NULL}}"#)
        );
        assert!(matches!(
            one(json!([1, "x"]), Type::INT4_ARRAY),
            Err(ExecError::BadParams(_))
        ));
    }

    #[test]
    fn decimal_syntax_is_checked() {
        for ok in ["1", "-1.5", ".5", "5.", "1e10", "1E-3", "NaN", "-Infinity"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".", "1e", "1.2.3", "abc", "1e1234567", "--1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
