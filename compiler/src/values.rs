//! Parsing of typed values written as strings: quantities, durations, names, labels, MACs.

/// A Kubernetes resource quantity, kept in canonical text form with its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    /// As emitted: the user's number with a Kubernetes suffix (`MiB` becomes `Mi`).
    pub text: String,
    pub bytes: u128,
}

const SUFFIXES: &[(&str, u128)] = &[
    ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("Pi", 1 << 50), ("Ei", 1 << 60),
    ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000), ("E", 1_000_000_000_000_000_000), ("", 1),
];

/// Parse `"4Gi"`, `"512Mi"`, `"4GiB"`, `"1G"` or a plain byte count. Only whole numbers:
/// fractional quantities are legal in Kubernetes but never what a VM size means.
pub fn parse_quantity(s: &str) -> Result<Quantity, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() {
        return Err(format!("`{s}` does not start with a number"));
    }
    let suffix = suffix.strip_suffix('B').filter(|x| x.ends_with('i')).unwrap_or(suffix);
    let Some((k8s_suffix, mult)) = SUFFIXES.iter().find(|(x, _)| *x == suffix) else {
        return Err(format!("`{suffix}` is not a size unit"));
    };
    let n: u128 = num.parse().map_err(|_| format!("`{num}` is too large"))?;
    let bytes = n.checked_mul(*mult).filter(|b| *b < 1 << 100).ok_or_else(|| format!("`{s}` is too large"))?;
    let n = num.trim_start_matches('0');
    let n = if n.is_empty() { "0" } else { n };
    Ok(Quantity { text: format!("{n}{k8s_suffix}"), bytes })
}

/// Parse a duration such as `"30s"`, `"2m"`, `"1h30m"` or `"0s"` into whole seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("the duration is empty".into());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| "the number is too large".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let mult = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "" => return Err(format!("`{s}` has a number without a unit (s, m or h)")),
            u => return Err(format!("`{u}` is not a unit; use s, m or h")),
        };
        rest = &rest[unit_len..];
        total = n.checked_mul(mult).and_then(|x| total.checked_add(x)).ok_or("the duration is too large")?;
    }
    Ok(total)
}

/// RFC 1123 label, as Kubernetes requires for names and namespaces: at most 63
/// characters of `a-z`, `0-9` and `-`, starting and ending with an alphanumeric.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the name is empty".into());
    }
    if s.len() > 63 {
        return Err(format!("the name is {} characters long; at most 63 are allowed", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("`{c}` is not allowed; use lowercase letters, digits and `-`"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("the name must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_` and `.`, alphanumeric at both ends.
pub fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(|l| check_dns_label(l).is_ok())) {
            return Err(format!("the prefix `{p}` is not a DNS subdomain"));
        }
    check_label_name(name).map_err(|e| format!("the key {e}"))
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`,
/// alphanumeric at both ends.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() { Ok(()) } else { check_label_name(v).map_err(|e| format!("the value {e}")) }
}

fn check_label_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 63 {
        return Err(format!("`{n}` must be 1 to 63 characters"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || !edge_ok(n.chars().next()) || !edge_ok(n.chars().last()) {
        return Err(format!("`{n}` may hold only letters, digits, `-`, `_` and `.`, with a letter or digit at each end"));
    }
    Ok(())
}

/// Six colon-separated hex octets.
pub fn check_mac(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
        Ok(())
    } else {
        Err(format!("`{s}` is not six colon-separated hex octets, e.g. 02:00:00:00:00:01"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("2Gi").unwrap(), Quantity { text: "2Gi".into(), bytes: 2 << 30 });
        assert_eq!(parse_quantity("512MiB").unwrap().text, "512Mi");
        assert_eq!(parse_quantity("1G").unwrap().bytes, 1_000_000_000);
        assert_eq!(parse_quantity("0").unwrap().bytes, 0);
        assert!(parse_quantity("2 Gi").is_err());
        assert!(parse_quantity("Gi").is_err());
        assert!(parse_quantity("1.5Gi").is_err());
        assert!(parse_quantity("4GB").is_err(), "GB is ambiguous and not a Kubernetes suffix");
        assert!(parse_quantity("99999999999999999999999999999999999999999Ei").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn names() {
        assert!(check_dns_label("web-0").is_ok());
        assert!(check_dns_label("Web").is_err());
        assert!(check_dns_label("-web").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        assert!(check_label_key("app.kubernetes.io/name").is_ok());
        assert!(check_label_key("shop.example/replica").is_ok());
        assert!(check_label_key("bad key").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("has space").is_err());
        assert!(check_mac("02:00:00:aa:bb:cc").is_ok());
        assert!(check_mac("02:00:00:aa:bb").is_err());
    }
}
