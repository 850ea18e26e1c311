//! PostgreSQL result values: decodes the binary wire format of each column type into the API's
//! JSON mapping, written straight into a [`RowWriter`]. Numeric, interval and the date/time types
//! are decoded by hand so that the output is exact (no float rounding, no chrono range limits on
//! `infinity`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use tokio_postgres::types::{FromSql, Kind, Type};

use bytes::Bytes;
use tokio_postgres::Statement;

use crate::datasource::ExecError;
use crate::encode::RowWriter;

/// How one column's values are decoded; chosen once per statement from the column type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decoder {
    Bool,
    Int2,
    Int4,
    Int8,
    /// oid and other unsigned 32-bit identifiers.
    Oid,
    Float4,
    Float8,
    Numeric,
    /// UTF-8 text on the wire: text, varchar, bpchar, name, enums, citext, xml, unknown.
    Text,
    /// The one-byte `"char"` type.
    Char,
    Uuid,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Json,
    /// jsonb: a version byte, then JSON text.
    Jsonb,
    /// jsonpath: a version byte, then the path text.
    JsonPath,
    Bytea,
    Inet,
    Cidr,
    MacAddr,
    MacAddr8,
    /// Functions returning void (`SELECT pg_sleep(1)`): always null.
    Void,
    Array(Box<Decoder>),
}

impl Decoder {
    /// The decoder for a column type, or `None` when the gateway cannot encode it (the caller
    /// reports `UnsupportedType` and suggests a cast to text).
    pub(crate) fn for_type(ty: &Type) -> Option<Decoder> {
        match ty.kind() {
            Kind::Enum(_) => return Some(Decoder::Text),
            Kind::Domain(base) => return Decoder::for_type(base),
            Kind::Array(elem) => {
                return Decoder::for_type(elem).map(|d| Decoder::Array(Box::new(d)));
            }
            // void and unknown are pseudo-types; the match below picks only those.
            Kind::Simple | Kind::Pseudo => {}
            _ => return None,
        }
        let d = match *ty {
            Type::BOOL => Decoder::Bool,
            Type::INT2 => Decoder::Int2,
            Type::INT4 => Decoder::Int4,
            Type::INT8 => Decoder::Int8,
            Type::OID | Type::XID | Type::CID => Decoder::Oid,
            Type::FLOAT4 => Decoder::Float4,
            Type::FLOAT8 => Decoder::Float8,
            Type::NUMERIC => Decoder::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
                Decoder::Text
            }
            Type::CHAR => Decoder::Char,
            Type::UUID => Decoder::Uuid,
            Type::DATE => Decoder::Date,
            Type::TIME => Decoder::Time,
            Type::TIMETZ => Decoder::TimeTz,
            Type::TIMESTAMP => Decoder::Timestamp,
            Type::TIMESTAMPTZ => Decoder::TimestampTz,
            Type::INTERVAL => Decoder::Interval,
            Type::JSON => Decoder::Json,
            Type::JSONB => Decoder::Jsonb,
            Type::JSONPATH => Decoder::JsonPath,
            Type::BYTEA => Decoder::Bytea,
            Type::INET => Decoder::Inet,
            Type::CIDR => Decoder::Cidr,
            Type::MACADDR => Decoder::MacAddr,
            Type::MACADDR8 => Decoder::MacAddr8,
            Type::VOID => Decoder::Void,
            // Extension types are only known by name; citext's binary form is its text.
            _ if ty.name() == "citext" => Decoder::Text,
            _ => return None,
        };
        Some(d)
    }
}

/// The type name shown in `Column.type`: PostgreSQL's own name (`int4`, `timestamptz`, an enum's
/// name), with arrays written `int4[]` rather than the internal `_int4`.
pub(crate) fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(elem) => format!("{}[]", type_name(elem)),
        _ => ty.name().to_owned(),
    }
}

/// The server sent bytes that do not match the type's binary format (a server bug or a type we
/// misidentified); reported rather than written as garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A column's raw binary value, borrowed from the row without any conversion.
pub(crate) struct RawCell<'a>(pub &'a [u8]);

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawCell(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Reads big-endian fields off a value, failing instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.take(N)?.try_into().map_err(|_| Malformed)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, Malformed> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32, Malformed> {
        Ok(f32::from_be_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, Malformed> {
        Ok(f64::from_be_bytes(self.array()?))
    }
    /// The whole value must have been consumed.
    fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }
}

fn utf8(b: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(b).map_err(|_| Malformed)
}

/// Writes one cell (`None` is SQL NULL).
pub(crate) fn write_cell(
    w: &mut RowWriter,
    dec: &Decoder,
    raw: Option<&[u8]>,
) -> Result<(), Malformed> {
    let Some(raw) = raw else {
        w.null();
        return Ok(());
    };
    let mut r = Reader(raw);
    match dec {
        Decoder::Bool => {
            let b = r.u8()?;
            r.end()?;
            w.bool(b != 0);
        }
        Decoder::Int2 => {
            let v = r.i16()?;
            r.end()?;
            w.i64(v.into());
        }
        Decoder::Int4 => {
            let v = r.i32()?;
            r.end()?;
            w.i64(v.into());
        }
        Decoder::Int8 => {
            let v = r.i64()?;
            r.end()?;
            w.i64(v);
        }
        Decoder::Oid => {
            let v = r.u32()?;
            r.end()?;
            w.u64(v.into());
        }
        Decoder::Float4 => {
            let v = r.f32()?;
            r.end()?;
            w.f64(f32_to_f64_shortest(v));
        }
        Decoder::Float8 => {
            let v = r.f64()?;
            r.end()?;
            w.f64(v);
        }
        Decoder::Numeric => w.str(&numeric_to_string(raw)?),
        Decoder::Text => w.str(utf8(raw)?),
        Decoder::Char => w.str(&String::from_utf8_lossy(raw)),
        Decoder::Uuid => {
            let u = uuid::Uuid::from_slice(raw).map_err(|_| Malformed)?;
            w.str(
                u.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            );
        }
        Decoder::Date => {
            let d = r.i32()?;
            r.end()?;
            w.str(&date_to_string(d));
        }
        Decoder::Time => {
            let us = r.i64()?;
            r.end()?;
            let mut s = String::with_capacity(15);
            write_time_of_day(&mut s, us);
            w.str(&s);
        }
        Decoder::TimeTz => {
            let us = r.i64()?;
            let zone_west = r.i32()?;
            r.end()?;
            let mut s = String::with_capacity(21);
            write_time_of_day(&mut s, us);
            write_offset(&mut s, -i64::from(zone_west));
            w.str(&s);
        }
        Decoder::Timestamp => {
            let us = r.i64()?;
            r.end()?;
            w.str(&timestamp_to_string(us, false));
        }
        Decoder::TimestampTz => {
            let us = r.i64()?;
            r.end()?;
            w.str(&timestamp_to_string(us, true));
        }
        Decoder::Interval => {
            let us = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            r.end()?;
            w.str(&interval_to_iso(months, days, us));
        }
        Decoder::Json => w.raw_json(utf8(raw)?),
        Decoder::Jsonb => {
            if r.u8()? != 1 {
                return Err(Malformed);
            }
            w.raw_json(utf8(r.0)?);
        }
        Decoder::JsonPath => {
            if r.u8()? != 1 {
                return Err(Malformed);
            }
            w.str(utf8(r.0)?);
        }
        Decoder::Bytea => w.base64(raw),
        Decoder::Inet | Decoder::Cidr => w.str(&inet_to_string(raw, *dec == Decoder::Cidr)?),
        Decoder::MacAddr | Decoder::MacAddr8 => {
            let n = if *dec == Decoder::MacAddr { 6 } else { 8 };
            if raw.len() != n {
                return Err(Malformed);
            }
            let mut s = String::with_capacity(3 * n);
            for (i, b) in raw.iter().enumerate() {
                if i > 0 {
                    s.push(':');
                }
                let _ = write!(s, "{b:02x}");
            }
            w.str(&s);
        }
        Decoder::Void => w.null(),
        Decoder::Array(elem) => write_array(w, elem, raw)?,
    }
    Ok(())
}

/// A float4 as the shortest decimal that reads back as the same float4 (`0.1`, not
/// `0.10000000149011612`), carried as an f64.
fn f32_to_f64_shortest(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    ryu::Buffer::new()
        .format_finite(v)
        .parse()
        .unwrap_or(f64::from(v))
}

/// Binary array: ndim, has-null flag, element oid, (length, lower bound) per dimension, then the
/// elements in row-major order, each length-prefixed (-1 for NULL). n-D arrays become nested JSON
/// arrays; lower bounds are dropped (JSON arrays start at 0).
fn write_array(w: &mut RowWriter, elem: &Decoder, raw: &[u8]) -> Result<(), Malformed> {
    let mut r = Reader(raw);
    let ndim = r.i32()?;
    let _has_null = r.i32()?;
    let _elem_oid = r.u32()?;
    if !(0..=6).contains(&ndim) {
        return Err(Malformed);
    }
    let mut dims = Vec::with_capacity(ndim as usize);
    for _ in 0..ndim {
        let len = r.i32()?;
        let _lower = r.i32()?;
        dims.push(usize::try_from(len).map_err(|_| Malformed)?);
    }
    let mut result = Ok(());
    w.array(|a| result = write_dims(a, elem, &dims, &mut r));
    result?;
    r.end()
}

fn write_dims(
    w: &mut RowWriter,
    elem: &Decoder,
    dims: &[usize],
    r: &mut Reader<'_>,
) -> Result<(), Malformed> {
    let Some((&n, inner)) = dims.split_first() else {
        return Ok(());
    };
    for _ in 0..n {
        if inner.is_empty() {
            let len = r.i32()?;
            if len < 0 {
                w.null();
            } else {
                let bytes = r.take(len as usize)?;
                write_cell(w, elem, Some(bytes))?;
            }
        } else {
            let mut result = Ok(());
            w.array(|a| result = write_dims(a, elem, inner, r));
            result?;
        }
    }
    Ok(())
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// Numeric's binary form (digit count, weight, sign, display scale, base-10000 digits) as the
/// exact decimal text PostgreSQL itself would print.
pub(crate) fn numeric_to_string(raw: &[u8]) -> Result<String, Malformed> {
    let mut r = Reader(raw);
    let ndigits = r.i16()?;
    let weight = r.i16()?;
    let sign = r.u16()?;
    let dscale = r.u16()?;
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        NUMERIC_POS | NUMERIC_NEG => {}
        _ => return Err(Malformed),
    }
    let ndigits = usize::try_from(ndigits).map_err(|_| Malformed)?;
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        let d = r.i16()?;
        if !(0..10000).contains(&d) {
            return Err(Malformed);
        }
        digits.push(d as u32);
    }
    r.end()?;
    // dscale is at most 0x3FFF in PostgreSQL; refuse anything that could make a huge string.
    if dscale > 0x3FFF {
        return Err(Malformed);
    }
    let weight = i32::from(weight);
    let digit_at = |i: i32| -> u32 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut s = String::with_capacity(ndigits * 4 + dscale as usize + 3);
    if sign == NUMERIC_NEG {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            let d = digit_at(i);
            if i == 0 {
                let _ = write!(s, "{d}");
            } else {
                let _ = write!(s, "{d:04}");
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut frac = String::with_capacity(dscale as usize + 4);
        let mut i = weight + 1;
        while frac.len() < dscale as usize {
            let _ = write!(frac, "{:04}", digit_at(i));
            i += 1;
        }
        frac.truncate(dscale as usize);
        s.push_str(&frac);
    }
    Ok(s)
}

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;

fn pg_epoch() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

/// Days since 2000-01-01 as `YYYY-MM-DD` (years before 1 as ISO 8601 expanded years), or
/// `infinity` / `-infinity`.
pub(crate) fn date_to_string(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => match pg_epoch().checked_add_signed(chrono::Duration::days(d.into())) {
            // Written by hand: chrono's `format` parses the pattern on every call, and was the
            // largest single cost of streaming date and timestamp columns (bench/run).
            Some(date) if (0..=9999).contains(&chrono::Datelike::year(&date)) => {
                let mut s = String::with_capacity(10);
                push_digits(&mut s, chrono::Datelike::year(&date).unsigned_abs(), 4);
                s.push('-');
                push_digits(&mut s, chrono::Datelike::month(&date), 2);
                s.push('-');
                push_digits(&mut s, chrono::Datelike::day(&date), 2);
                s
            }
            // Signed or five-digit years, as chrono writes them.
            Some(date) => date.format("%Y-%m-%d").to_string(),
            // Outside chrono's range (±262,000 years), beyond PostgreSQL's own date range.
            None => d.to_string(),
        },
    }
}

/// Appends `value` as exactly `width` decimal digits, zero-padded; `value` must be below
/// 10^`width` (callers check), higher digits would be dropped.
fn push_digits(s: &mut String, value: u32, width: u32) {
    for i in (0..width).rev() {
        let digit = (value / 10u32.pow(i)) % 10;
        s.push(char::from(b'0' + digit as u8));
    }
}

/// `HH:MM:SS[.ffffff]` with trailing fractional zeros dropped (PostgreSQL allows 24:00:00).
fn write_time_of_day(s: &mut String, us: i64) {
    let secs = us.div_euclid(USECS_PER_SEC);
    let frac = us.rem_euclid(USECS_PER_SEC);
    let hours = secs / 3600;
    if (0..100).contains(&hours) {
        push_digits(s, hours as u32, 2);
        s.push(':');
        push_digits(s, ((secs / 60) % 60) as u32, 2);
        s.push(':');
        push_digits(s, (secs % 60) as u32, 2);
    } else {
        let _ = write!(s, "{hours:02}:{:02}:{:02}", (secs / 60) % 60, secs % 60);
    }
    write_fraction(s, frac);
}

fn write_fraction(s: &mut String, frac_us: i64) {
    if frac_us != 0 {
        // 0 < frac_us < 1,000,000: six digits, then the trailing zeros dropped.
        s.push('.');
        push_digits(s, frac_us as u32, 6);
        let kept = s.trim_end_matches('0').len();
        s.truncate(kept);
    }
}

/// A UTC offset in seconds east as `+HH:MM` (`+HH:MM:SS` when it has seconds).
fn write_offset(s: &mut String, east: i64) {
    let sign = if east < 0 { '-' } else { '+' };
    let a = east.abs();
    let _ = write!(s, "{sign}{:02}:{:02}", a / 3600, (a / 60) % 60);
    if a % 60 != 0 {
        let _ = write!(s, ":{:02}", a % 60);
    }
}

/// Microseconds since 2000-01-01 00:00 as `YYYY-MM-DDTHH:MM:SS[.ffffff]`, with `Z` for
/// timestamptz (sessions are pinned to UTC), or `infinity` / `-infinity`.
pub(crate) fn timestamp_to_string(us: i64, utc: bool) -> String {
    match us {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let days = us.div_euclid(USECS_PER_DAY);
    let time = us.rem_euclid(USECS_PER_DAY);
    let date = i32::try_from(days)
        .map(date_to_string)
        .unwrap_or_else(|_| days.to_string());
    let mut s = String::with_capacity(date.len() + 17);
    s.push_str(&date);
    s.push('T');
    write_time_of_day(&mut s, time);
    if utc {
        s.push('Z');
    }
    s
}

/// An interval as an ISO 8601 duration in PostgreSQL's `iso_8601` style: each field keeps its own
/// sign (`P1Y-2M3DT-4H5.5S`), zero is `PT0S`.
pub(crate) fn interval_to_iso(months: i32, days: i32, us: i64) -> String {
    if months == 0 && days == 0 && us == 0 {
        return "PT0S".into();
    }
    let mut s = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (v, unit) in [
        (i64::from(years), 'Y'),
        (i64::from(months), 'M'),
        (i64::from(days), 'D'),
    ] {
        if v != 0 {
            let _ = write!(s, "{v}{unit}");
        }
    }
    if us != 0 {
        s.push('T');
        let hours = us / (3600 * USECS_PER_SEC);
        let minutes = (us / (60 * USECS_PER_SEC)) % 60;
        let sec_us = us % (60 * USECS_PER_SEC);
        if hours != 0 {
            let _ = write!(s, "{hours}H");
        }
        if minutes != 0 {
            let _ = write!(s, "{minutes}M");
        }
        if sec_us != 0 {
            if sec_us < 0 {
                s.push('-');
            }
            let a = sec_us.abs();
            let _ = write!(s, "{}", a / USECS_PER_SEC);
            write_fraction(&mut s, a % USECS_PER_SEC);
            s.push('S');
        }
    }
    s
}

/// inet/cidr binary (family, bits, is_cidr, length, address) as PostgreSQL prints it: an inet
/// with a full-length mask is the bare address, a cidr always carries `/bits`.
fn inet_to_string(raw: &[u8], cidr: bool) -> Result<String, Malformed> {
    let mut r = Reader(raw);
    let family = r.u8()?;
    let bits = r.u8()?;
    let _is_cidr = r.u8()?;
    let len = r.u8()?;
    let (addr, max) = match (family, len) {
        (2, 4) => (Ipv4Addr::from(r.array::<4>()?).to_string(), 32),
        (3, 16) => (Ipv6Addr::from(r.array::<16>()?).to_string(), 128),
        _ => return Err(Malformed),
    };
    r.end()?;
    if bits > max {
        return Err(Malformed);
    }
    Ok(if cidr || bits != max {
        format!("{addr}/{bits}")
    } else {
        addr
    })
}

/// One decoder per result column, or `UnsupportedType` naming the first column the gateway
/// cannot encode.
pub(super) fn column_decoders(stmt: &Statement) -> Result<Vec<Decoder>, ExecError> {
    stmt.columns()
        .iter()
        .map(|c| {
            Decoder::for_type(c.type_()).ok_or_else(|| {
                ExecError::UnsupportedType(format!(
                    "column {:?} has type {}, which the gateway cannot encode; cast it to text \
                     (e.g. {}::text)",
                    c.name(),
                    type_name(c.type_()),
                    c.name()
                ))
            })
        })
        .collect()
}

pub(super) fn encode_row(
    row: &tokio_postgres::Row,
    stmt: &Statement,
    decoders: &[Decoder],
) -> Result<Bytes, ExecError> {
    let mut w = RowWriter::with_capacity(16 + row.raw_size_bytes() * 2);
    for (i, dec) in decoders.iter().enumerate() {
        let raw = row
            .try_get::<_, Option<RawCell<'_>>>(i)
            .map_err(|_| undecodable(stmt, i))?;
        write_cell(&mut w, dec, raw.map(|r| r.0)).map_err(|_| undecodable(stmt, i))?;
    }
    Ok(w.finish())
}

pub(super) fn undecodable(stmt: &Statement, i: usize) -> ExecError {
    let (name, ty) = stmt
        .columns()
        .get(i)
        .map(|c| (c.name().to_owned(), type_name(c.type_())))
        .unwrap_or_default();
    ExecError::UnsupportedType(format!(
        "column {name:?} of type {ty} held a value the gateway could not decode; cast it to text \
         (e.g. {name}::text)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ndigits.to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_binary_decodes_to_exact_decimal_text() {
        // 12345.678 = [1, 2345, 6780], weight 1, dscale 3
        assert_eq!(
            numeric_to_string(&numeric(3, 1, 0, 3, &[1, 2345, 6780])).unwrap(),
            "12345.678"
        );
        // -0.0001 = [1], weight -1, dscale 4
        assert_eq!(
            numeric_to_string(&numeric(1, -1, NUMERIC_NEG, 4, &[1])).unwrap(),
            "-0.0001"
        );
        // 100000000 = [1], weight 2, dscale 0 (trailing zero groups are not sent)
        assert_eq!(
            numeric_to_string(&numeric(1, 2, 0, 0, &[1])).unwrap(),
            "100000000"
        );
        // 0.00 = no digits, dscale 2
        assert_eq!(
            numeric_to_string(&numeric(0, 0, 0, 2, &[])).unwrap(),
            "0.00"
        );
        // 0.00001234 = [0012, 3400]? weight -2: 0.0000|1234
        assert_eq!(
            numeric_to_string(&numeric(1, -2, 0, 8, &[1234])).unwrap(),
            "0.00001234"
        );
        assert_eq!(
            numeric_to_string(&numeric(0, 0, NUMERIC_NAN, 0, &[])).unwrap(),
            "NaN"
        );
        assert_eq!(
            numeric_to_string(&numeric(0, 0, NUMERIC_PINF, 0, &[])).unwrap(),
            "Infinity"
        );
        assert_eq!(
            numeric_to_string(&numeric(0, 0, NUMERIC_NINF, 0, &[])).unwrap(),
            "-Infinity"
        );
    }

    #[test]
    fn malformed_numeric_is_an_error_not_a_panic() {
        assert_eq!(numeric_to_string(&[0, 1]), Err(Malformed));
        assert_eq!(
            numeric_to_string(&numeric(2, 0, 0, 0, &[1])),
            Err(Malformed)
        );
        assert_eq!(
            numeric_to_string(&numeric(1, 0, 0x1234, 0, &[1])),
            Err(Malformed)
        );
        assert_eq!(
            numeric_to_string(&numeric(1, 0, 0, 0, &[10000])),
            Err(Malformed)
        );
        assert_eq!(
            numeric_to_string(&numeric(-1, 0, 0, 0, &[])),
            Err(Malformed)
        );
    }

    #[test]
    fn intervals_print_as_iso_8601_durations_with_per_field_signs() {
        assert_eq!(interval_to_iso(0, 0, 0), "PT0S");
        assert_eq!(
            interval_to_iso(14, 3, (4 * 3600 + 5 * 60 + 6) * USECS_PER_SEC + 500_000),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(interval_to_iso(-1, 0, -1_500_000), "P-1MT-1.5S");
        assert_eq!(interval_to_iso(0, 0, -500_000), "PT-0.5S");
        assert_eq!(interval_to_iso(0, 7, 0), "P7D");
    }

    #[test]
    fn dates_and_timestamps_are_iso_8601_and_infinity_survives() {
        assert_eq!(date_to_string(0), "2000-01-01");
        assert_eq!(date_to_string(-1), "1999-12-31");
        assert_eq!(date_to_string(i32::MAX), "infinity");
        assert_eq!(date_to_string(i32::MIN), "-infinity");
        assert_eq!(timestamp_to_string(0, false), "2000-01-01T00:00:00");
        assert_eq!(timestamp_to_string(-1, true), "1999-12-31T23:59:59.999999Z");
        assert_eq!(
            timestamp_to_string(USECS_PER_DAY + 1_230_000, true),
            "2000-01-02T00:00:01.23Z"
        );
        assert_eq!(timestamp_to_string(i64::MAX, true), "infinity");
        let mut s = String::new();
        write_time_of_day(&mut s, USECS_PER_DAY);
        assert_eq!(s, "24:00:00");
        let mut s = String::new();
        write_offset(&mut s, -(5 * 3600 + 30 * 60));
        assert_eq!(s, "-05:30");
    }

    #[test]
    fn hand_written_dates_and_times_match_chrono_formatting() {
        // Every 3rd day from year 1 to 9999 and beyond both ends, where chrono takes over.
        let first = -730_119 - 1_000; // 1000 days before 0001-01-01
        let last = 2_921_939 + 1_000; // 1000 days after 9999-12-31
        for d in (first..=last).step_by(3) {
            let expected = pg_epoch()
                .checked_add_signed(chrono::Duration::days(d.into()))
                .map(|date| date.format("%Y-%m-%d").to_string());
            assert_eq!(Some(date_to_string(d)), expected, "day {d}");
        }
        for us in [
            0,
            1,
            999_999,
            1_000_000,
            59_999_999,
            86_399_999_999,
            12_345_678_900,
        ] {
            let mut s = String::new();
            write_time_of_day(&mut s, us);
            let t = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                (us / 1_000_000) as u32,
                (us % 1_000_000) as u32 * 1000,
            )
            .map(|t| t.format("%H:%M:%S%.f").to_string())
            .map(|f| match f.split_once('.') {
                Some((hms, frac)) if frac.trim_end_matches('0').is_empty() => hms.to_owned(),
                Some((hms, frac)) => format!("{hms}.{}", frac.trim_end_matches('0')),
                None => f,
            });
            assert_eq!(Some(s), t, "{us} us");
        }
    }

    #[test]
    fn inet_and_cidr_print_like_postgres() {
        assert_eq!(
            inet_to_string(&[2, 32, 0, 4, 10, 0, 0, 1], false).unwrap(),
            "10.0.0.1"
        );
        assert_eq!(
            inet_to_string(&[2, 24, 0, 4, 10, 0, 0, 1], false).unwrap(),
            "10.0.0.1/24"
        );
        assert_eq!(
            inet_to_string(&[2, 32, 1, 4, 10, 0, 0, 0], true).unwrap(),
            "10.0.0.0/32"
        );
        let mut v6 = vec![3, 128, 0, 16];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(inet_to_string(&v6, false).unwrap(), "::1");
        assert_eq!(
            inet_to_string(&[2, 33, 0, 4, 1, 2, 3, 4], false),
            Err(Malformed)
        );
        assert_eq!(inet_to_string(&[9, 1, 0, 4], false), Err(Malformed));
    }

    #[test]
    fn arrays_nest_by_dimension_and_keep_nulls() {
        // int4[2][2] = {{1,NULL},{3,4}}
        let mut raw = Vec::new();
        for v in [2i32, 1, 23, 2, 1, 2, 1] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        for e in [Some(1i32), None, Some(3), Some(4)] {
            match e {
                Some(v) => {
                    raw.extend_from_slice(&4i32.to_be_bytes());
                    raw.extend_from_slice(&v.to_be_bytes());
                }
                None => raw.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut w = RowWriter::with_capacity(16);
        write_cell(&mut w, &Decoder::Array(Box::new(Decoder::Int4)), Some(&raw)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v, serde_json::json!([[[1, null], [3, 4]]]));

        // A truncated array is an error, not a panic.
        let mut w = RowWriter::with_capacity(16);
        let dec = Decoder::Array(Box::new(Decoder::Int4));
        assert_eq!(
            write_cell(&mut w, &dec, Some(&raw[..raw.len() - 2])),
            Err(Malformed)
        );
    }

    #[test]
    fn float4_prints_its_shortest_decimal() {
        assert_eq!(f32_to_f64_shortest(0.1), 0.1);
        assert!(f32_to_f64_shortest(f32::NAN).is_nan());
        assert_eq!(f32_to_f64_shortest(f32::INFINITY), f64::INFINITY);
    }
}
