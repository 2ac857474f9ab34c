//! The byte formats ThingsBoard's Python code writes to devices: `str(value)` for attribute
//! updates and RPC params, `json.dumps(value)` for attribute-request responses.

use std::fmt::Write;

use serde_json::{Number, Value};

/// Python's `str(value)` of the JSON value ThingsBoard sent: strings as they are, `True`, `None`,
/// containers in Python's repr (`{'a': 1}`).
pub fn str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => repr(other),
    }
}

fn repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(number) => number_repr(number),
        Value::String(text) => string_repr(text),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(repr).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", string_repr(k), repr(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits, always with `.0` or an exponent.
fn number_repr(number: &Number) -> String {
    if number.is_f64() {
        let f = number.as_f64().unwrap_or_default();
        if f.is_finite() && f == f.trunc() && f.abs() < 1e16 {
            return format!("{f:.1}");
        }
        let text = format!("{f:e}");
        // Rust: 1e16, 1.5e-7; Python: 1e+16, 1.5e-07.
        match text.split_once('e') {
            Some((mantissa, exponent)) if f.abs() >= 1e16 || f.abs() < 1e-4 => {
                let (sign, digits) = match exponent.strip_prefix('-') {
                    Some(digits) => ('-', digits),
                    None => ('+', exponent),
                };
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            _ => f.to_string(),
        }
    } else {
        number.to_string()
    }
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`.
fn string_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `json.dumps(value)` with its defaults: `", "` and `": "` separators, non-ASCII
/// escaped as `\uXXXX`.
pub fn json_dumps(value: &Value) -> String {
    let mut out = String::new();
    dump(value, &mut out);
    out
}

fn dump(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(number) => out.push_str(&number_repr(number)),
        Value::String(text) => dump_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                dump(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                dump_string(key, out);
                out.push_str(": ");
                dump(item, out);
            }
            out.push('}');
        }
    }
}

fn dump_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_str_of_thingsboard_values() {
        assert_eq!(str(&json!("new")), "new");
        assert_eq!(str(&json!(1)), "1");
        assert_eq!(str(&json!(1.5)), "1.5");
        assert_eq!(str(&json!(2.0)), "2.0");
        assert_eq!(str(&json!(true)), "True");
        assert_eq!(str(&json!(null)), "None");
        assert_eq!(str(&json!({"a": 1, "b": "x"})), "{'a': 1, 'b': 'x'}");
        assert_eq!(str(&json!(["it's", false])), "[\"it's\", False]");
        assert_eq!(str(&json!(1e16)), "1e+16");
        assert_eq!(str(&json!(0.00001)), "1e-05");
    }

    #[test]
    fn python_json_dumps() {
        assert_eq!(json_dumps(&json!("abc")), "\"abc\"");
        assert_eq!(json_dumps(&json!(42)), "42");
        assert_eq!(
            json_dumps(&json!({"k1": "v", "k2": 2})),
            "{\"k1\": \"v\", \"k2\": 2}"
        );
        assert_eq!(json_dumps(&json!([1, 2.5, null])), "[1, 2.5, null]");
        assert_eq!(json_dumps(&json!("é\n😀")), "\"\\u00e9\\n\\ud83d\\ude00\"");
        assert_eq!(json_dumps(&json!(0)), "0");
        assert_eq!(json_dumps(&json!(false)), "false");
    }
}
