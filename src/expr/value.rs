//! How JSON values read as text, numbers and booleans, and JEXL's loose equality.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

/// The text form of a value: strings as they are, numbers and booleans as JSON writes them,
/// `null` as the empty string, objects and arrays as compact JSON (DESIGN §5).
pub fn render(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Number(n) => Cow::Owned(n.to_string()),
        // Cannot fail: every map key is a string.
        other => Cow::Owned(serde_json::to_string(other).unwrap_or_default()),
    }
}

/// A number as JEXL arithmetic sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A whole number.
    Int(i64),
    /// Anything else.
    Float(f64),
}

impl Num {
    /// As a float, for mixed comparisons.
    pub fn as_f64(self) -> f64 {
        match self {
            // Precision loss past 2^53 is accepted, as in JEXL's double comparisons.
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    /// Back to JSON; `None` for NaN or infinity.
    pub fn to_value(self) -> Option<Value> {
        match self {
            Self::Int(i) => Some(Value::from(i)),
            Self::Float(f) => Number::from_f64(f).map(Value::Number),
        }
    }

    /// Numeric order (NaN never occurs: it cannot come out of JSON or [`number_of`]).
    pub fn order(self, other: Num) -> Ordering {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a.cmp(&b),
            (a, b) => a.as_f64().total_cmp(&b.as_f64()),
        }
    }
}

/// The number a JSON number holds.
pub fn json_number(n: &Number) -> Num {
    match n.as_i64() {
        Some(i) => Num::Int(i),
        None => Num::Float(n.as_f64().unwrap_or(f64::MAX)),
    }
}

/// A number, or a string that reads as one (`" 42 "`, `"-1.5"`); `None` otherwise.
pub fn number_of(value: &Value) -> Option<Num> {
    match value {
        Value::Number(n) => Some(json_number(n)),
        Value::String(s) => parse_number(s.trim()),
        _ => None,
    }
}

fn parse_number(text: &str) -> Option<Num> {
    if text.is_empty() {
        return None;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Num::Int(i));
    }
    // Only plain decimal forms: Rust would also accept "inf", "NaN" and "1e400".
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    text.parse::<f64>()
        .ok()
        .filter(|f| plain && f.is_finite())
        .map(Num::Float)
}

/// JEXL truthiness: `false`, `null`, `0`, `""`, `"false"`, `[]` and `{}` are false.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => json_number(n).as_f64() != 0.0,
        Value::String(s) => !s.is_empty() && s != "false",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// JEXL's loose equality: `null` equals only `null`; against a boolean both sides are read as
/// booleans (a string is true when it is `"true"`, any case); a number equals a string that
/// reads as the same number (`"1" == 1`); otherwise values of the same type compare by value.
pub fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Bool(x), other) | (other, Value::Bool(x)) => as_bool(other) == Some(*x),
        (Value::Number(x), Value::Number(y)) => json_number(x).order(json_number(y)).is_eq(),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            parse_number(s.trim()).is_some_and(|m| json_number(n).order(m).is_eq())
        }
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| loose_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => x == y,
        _ => false,
    }
}

fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::String(s) => Some(s.eq_ignore_ascii_case("true")),
        Value::Number(n) => Some(json_number(n).as_f64() != 0.0),
        _ => None,
    }
}

/// A short name of the value's type, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_render_as_harness_text() {
        assert_eq!(render(&json!("a")), "a");
        assert_eq!(render(&json!(null)), "");
        assert_eq!(render(&json!(3)), "3");
        assert_eq!(render(&json!(1.5)), "1.5");
        assert_eq!(render(&json!(true)), "true");
        assert_eq!(render(&json!({"a": [1, "x"]})), r#"{"a":[1,"x"]}"#);
    }

    #[test]
    fn loose_equality_follows_jexl() {
        assert!(loose_eq(&json!("1"), &json!(1)));
        assert!(loose_eq(&json!(1.0), &json!(1)));
        assert!(loose_eq(&json!(" 2.5 "), &json!(2.5)));
        assert!(!loose_eq(&json!("1x"), &json!(1)));
        assert!(loose_eq(&json!("TRUE"), &json!(true)));
        assert!(loose_eq(&json!(0), &json!(false)));
        assert!(!loose_eq(&json!(null), &json!("")));
        assert!(loose_eq(&json!(null), &json!(null)));
        assert!(loose_eq(&json!(["1", 2]), &json!([1, "2"])));
        assert!(!loose_eq(&json!("inf"), &json!(f64::MAX)));
    }

    #[test]
    fn truthiness_follows_jexl() {
        for falsy in [
            json!(null),
            json!(0),
            json!(""),
            json!("false"),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for t in [json!(1), json!("no"), json!([0]), json!(true)] {
            assert!(truthy(&t), "{t}");
        }
    }
}
