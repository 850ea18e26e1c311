//! Result encoding: writes one row as a JSON array straight into bytes, so rows stream out
//! without building a `serde_json::Value` per cell. The value mapping is API.md's: NaN and
//! infinities become strings, exact decimals are strings, bytes are base64.

use base64::Engine;
use bytes::Bytes;

/// Builds one row: `[v1,v2,…]`.
pub struct RowWriter {
    buf: Vec<u8>,
    first: bool,
}

impl RowWriter {
    pub fn with_capacity(cap: usize) -> Self {
        let mut buf = Vec::with_capacity(cap.max(2));
        buf.push(b'[');
        RowWriter { buf, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    pub fn null(&mut self) {
        self.sep();
        self.buf.extend_from_slice(b"null");
    }

    pub fn bool(&mut self, v: bool) {
        self.sep();
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    pub fn i64(&mut self, v: i64) {
        self.sep();
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.sep();
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// Finite floats as numbers; NaN and infinities as the strings `"NaN"`, `"Infinity"`,
    /// `"-Infinity"` (JSON has no such numbers).
    pub fn f64(&mut self, v: f64) {
        if v.is_nan() {
            self.str("NaN");
        } else if v.is_infinite() {
            self.str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        } else {
            self.sep();
            self.buf
                .extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
        }
    }

    /// A JSON string, escaped.
    pub fn str(&mut self, v: &str) {
        self.sep();
        // serde_json's escaping into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, v);
    }

    /// Bytes as a base64 string.
    pub fn base64(&mut self, v: &[u8]) {
        self.sep();
        self.buf.push(b'"');
        let engine = base64::engine::general_purpose::STANDARD;
        let start = self.buf.len();
        self.buf
            .resize(start + base64::encoded_len(v.len(), true).unwrap_or(0), 0);
        let n = engine.encode_slice(v, &mut self.buf[start..]).unwrap_or(0);
        self.buf.truncate(start + n);
        self.buf.push(b'"');
    }

    /// JSON text from the database (json/jsonb columns), embedded as nested JSON after checking
    /// it really is JSON; text that is not is sent as a string rather than corrupting the output.
    pub fn raw_json(&mut self, text: &str) {
        if serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok() {
            self.sep();
            self.buf.extend_from_slice(text.trim().as_bytes());
        } else {
            self.str(text);
        }
    }

    pub fn value(&mut self, v: &serde_json::Value) {
        self.sep();
        let _ = serde_json::to_writer(&mut self.buf, v);
    }

    /// A nested array (database arrays); `f` writes its elements.
    pub fn array(&mut self, f: impl FnOnce(&mut RowWriter)) {
        self.sep();
        let mut inner = RowWriter {
            buf: std::mem::take(&mut self.buf),
            first: true,
        };
        inner.buf.push(b'[');
        f(&mut inner);
        inner.buf.push(b']');
        self.buf = inner.buf;
    }

    /// Bytes written so far (for result-size limits).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first
    }

    pub fn finish(mut self) -> Bytes {
        self.buf.push(b']');
        Bytes::from(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Bytes) -> serde_json::Value {
        serde_json::from_slice(&b).expect("row is valid JSON")
    }

    #[test]
    fn a_row_of_every_kind_of_value_is_valid_json_with_the_api_mapping() {
        let mut w = RowWriter::with_capacity(64);
        w.null();
        w.bool(true);
        w.i64(i64::MIN);
        w.u64(u64::MAX);
        w.f64(1.5);
        w.f64(f64::NAN);
        w.f64(f64::NEG_INFINITY);
        w.str("quote \" backslash \\ newline \n");
        w.base64(b"\x00\xffhi");
        w.raw_json(r#" {"a": [1, 2]} "#);
        w.raw_json("not json");
        w.array(|a| {
            a.i64(1);
            a.null();
        });
        let v = parse(w.finish());
        assert_eq!(
            v,
            serde_json::json!([
                null,
                true,
                i64::MIN,
                u64::MAX,
                1.5,
                "NaN",
                "-Infinity",
                "quote \" backslash \\ newline \n",
                "AP9oaQ==",
                {"a": [1, 2]},
                "not json",
                [1, null]
            ])
        );
    }

    #[test]
    fn an_empty_row_is_an_empty_array() {
        let w = RowWriter::with_capacity(0);
        assert!(w.is_empty());
        assert_eq!(&w.finish()[..], b"[]");
    }
}
