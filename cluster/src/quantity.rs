//! Kubernetes quantities, as everything that reads objects off a cluster reads them. The
//! parser is the compiler's ([`vmform_compiler::values::parse_amount`]: pure, so the
//! compiler can use it without kube); this is its door for the rest.

pub use vmform_compiler::values::{parse_amount, Amount};
use serde_json::Value;

/// A quantity in an object: a string (`"512Mi"`, `"1.5Gi"`, `"500m"`, `"129e6"`) or a
/// JSON number.
pub fn of_json(v: &Value) -> Option<Amount> {
    match v {
        Value::String(s) => parse_amount(s).ok(),
        Value::Number(n) => parse_amount(&n.to_string()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_numbers() {
        assert_eq!(of_json(&json!("1.5Gi")).and_then(|a| a.whole()), Some(3 << 29));
        assert_eq!(of_json(&json!(3)).and_then(|a| a.whole()), Some(3));
        assert_eq!(of_json(&json!(1.5)).map(|a| a.as_f64()), Some(1.5));
        assert_eq!(of_json(&json!("500m")).and_then(|a| a.millis_ceil()), Some(500));
        assert!(of_json(&json!("3x")).is_none() && of_json(&json!(null)).is_none() && of_json(&json!(true)).is_none());
    }
}
