//! Parsing of typed values written as strings: quantities, durations, names, labels, MACs.

/// A Kubernetes resource quantity, kept in canonical text form with its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    /// As emitted: the user's number with a Kubernetes suffix (`MiB` becomes `Mi`).
    pub text: String,
    pub bytes: u128,
}

/// The suffixes a size in the specs may have: Kubernetes' binary and decimal ones of a
/// byte count (no `m`, `n` or `u`, no exponents).
const SIZE_SUFFIXES: &[&str] = &["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", ""];

/// A quantity as Kubernetes reads one (`resource.Quantity`), exactly: a decimal mantissa
/// times a power of ten times a power of two. The one quantity parser of vmform: the
/// scheduler, the launcher and the specs' sizes ([`parse_quantity`]) all read through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// Parse a Kubernetes quantity: `<sign><number><suffix>`, the number `12`, `1.5`, `1.` or
/// `.5`, the suffix binary (`Ki` `Mi` `Gi` `Ti` `Pi` `Ei`), decimal (`n` `u` `m` `` `k` `M`
/// `G` `T` `P` `E`) or an exponent (`e3`, `E-2`, `e+1`): `1.5Gi`, `500m`, `128974848`,
/// `129e6`, `-1`.
pub fn parse_amount(s: &str) -> Result<Amount, String> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let whole = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    let (int_part, rest) = unsigned.split_at(whole);
    let (frac_part, suffix) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(r.bytes().take_while(u8::is_ascii_digit).count()),
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(format!("`{s}` does not start with a number"));
    }
    let (exp10, exp2): (i64, u32) = match suffix {
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "" => (0, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).filter(|e| {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            });
            match exponent {
                Some(e) => (e.parse::<i64>().map_err(|_| format!("the exponent of `{s}` is too large"))?, 0),
                None => return Err(format!("`{suffix}` is not a quantity suffix")),
            }
        }
    };
    // Significant digits only: leading zeros dropped, trailing zeros into the exponent.
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    let exp10 = exp10 - frac_part.len() as i64 + (digits.len() - trimmed.len()) as i64;
    let mantissa: u128 = if trimmed.is_empty() { 0 } else { trimmed.parse().map_err(|_| format!("`{s}` has too many digits"))? };
    let exp10 = if mantissa == 0 { 0 } else { i32::try_from(exp10).ok().filter(|e| e.abs() < 10_000).ok_or_else(|| format!("`{s}` is too large"))? };
    Ok(Amount { negative: negative && mantissa != 0, mantissa, exp10, exp2 })
}

impl Amount {
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The value, as near as a float gets.
    pub fn as_f64(&self) -> f64 {
        let scaled = self.mantissa as f64 * 2f64.powi(self.exp2 as i32);
        let value = if self.exp10 >= 0 { scaled * 10f64.powi(self.exp10) } else { scaled / 10f64.powi(-self.exp10) };
        if self.negative { -value } else { value }
    }

    /// The value when it is a whole number of at most 2^127 (and not negative).
    pub fn whole(&self) -> Option<u128> {
        let (n, d) = self.fraction()?;
        (n % d == 0).then_some(n / d)
    }

    /// The value rounded up to a whole number, as Kubernetes rounds a quantity's `Value()`;
    /// `None` when negative or too large.
    pub fn ceil(&self) -> Option<u128> {
        let (n, d) = self.fraction()?;
        Some(n.div_ceil(d))
    }

    /// The value in thousandths, rounded up (Kubernetes' `MilliValue()`); `None` when
    /// negative or too large.
    pub fn millis_ceil(&self) -> Option<u128> {
        Amount { exp10: self.exp10 + 3, ..*self }.ceil()
    }

    /// numerator / denominator, both within u128.
    fn fraction(&self) -> Option<(u128, u128)> {
        if self.negative {
            return None;
        }
        let pow10 = |e: i32| 10u128.checked_pow(e.unsigned_abs());
        let n = self.mantissa.checked_mul(1u128.checked_shl(self.exp2).filter(|_| self.exp2 < 127)?)?;
        if self.exp10 >= 0 { Some((n.checked_mul(pow10(self.exp10)?)?, 1)) } else { Some((n, pow10(self.exp10)?)) }
    }
}

/// Parse a size in the specs: `"4Gi"`, `"512Mi"`, `"4GiB"`, `"1G"` or a plain byte count.
/// Only whole numbers with a byte suffix: fractional quantities are legal in Kubernetes
/// (and [`parse_amount`] reads them) but never what a VM size means.
pub fn parse_quantity(s: &str) -> Result<Quantity, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() {
        return Err(format!("`{s}` does not start with a number"));
    }
    let suffix = suffix.strip_suffix('B').filter(|x| x.ends_with('i')).unwrap_or(suffix);
    let Some(k8s_suffix) = SIZE_SUFFIXES.iter().find(|x| **x == suffix) else {
        return Err(format!("`{suffix}` is not a size unit"));
    };
    if num.parse::<u128>().is_err() {
        return Err(format!("`{num}` is too large"));
    }
    let n = num.trim_start_matches('0');
    let n = if n.is_empty() { "0" } else { n };
    let text = format!("{n}{k8s_suffix}");
    let bytes = parse_amount(&text).ok().and_then(|a| a.whole()).filter(|b| *b < 1 << 100).ok_or_else(|| format!("`{s}` is too large"))?;
    Ok(Quantity { text, bytes })
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
    if is_dns1123_label(s) {
        return Ok(());
    }
    // Why not, in the words of the specs' diagnostics.
    if s.is_empty() {
        return Err("the name is empty".into());
    }
    if s.len() > 63 {
        return Err(format!("the name is {} characters long; at most 63 are allowed", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("`{c}` is not allowed; use lowercase letters, digits and `-`"));
    }
    Err("the name must start and end with a letter or digit".into())
}

/// Kubernetes' DNS-1123 label pattern, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, length aside. The
/// one definition: the specs' diagnostics ([`check_dns_label`]) and the API server's 422s
/// both check names through it.
pub fn matches_dns1123_label(s: &str) -> bool {
    let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = s.as_bytes();
    !b.is_empty() && lower_alnum(b[0]) && lower_alnum(b[b.len() - 1]) && b.iter().all(|&c| lower_alnum(c) || c == b'-')
}

/// A DNS-1123 label (namespaces, most names): the pattern, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && matches_dns1123_label(s)
}

/// Kubernetes' DNS-1123 subdomain pattern: labels joined by `.`, length aside.
pub fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// A DNS-1123 subdomain (object names of most kinds): the pattern, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && matches_dns1123_subdomain(s)
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_` and `.`, alphanumeric at both ends.
pub fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(is_dns1123_label)) {
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
    fn amounts_are_read_as_kubernetes_reads_quantities() {
        let whole = |s: &str| parse_amount(s).unwrap().whole();
        assert_eq!(whole("1.5Gi"), Some(3 << 29));
        assert_eq!(whole("512Mi"), Some(512 << 20));
        assert_eq!(whole("2G"), Some(2_000_000_000));
        assert_eq!(whole("129e6"), Some(129_000_000));
        assert_eq!(whole("1E3"), Some(1000));
        assert_eq!(whole("1E"), Some(1_000_000_000_000_000_000), "E alone is exa");
        assert_eq!(whole("12e+2"), Some(1200));
        assert_eq!(whole("1200e-2"), Some(12));
        assert_eq!(whole("007"), Some(7));
        assert_eq!(whole("1."), Some(1));
        assert_eq!(whole("0.000"), Some(0));
        assert_eq!(whole("1.5"), None);
        assert_eq!(whole("500m"), None);
        let amount = |s: &str| parse_amount(s).unwrap();
        assert_eq!(amount("500m").as_f64(), 0.5);
        assert_eq!(amount("500m").ceil(), Some(1));
        assert_eq!(amount("500m").millis_ceil(), Some(500));
        assert_eq!(amount("1.5").millis_ceil(), Some(1500));
        assert_eq!(amount(".5").as_f64(), 0.5);
        assert_eq!(amount("100n").millis_ceil(), Some(1));
        assert_eq!(amount("3u").as_f64(), 3e-6);
        assert_eq!(amount("1.5Gi").as_f64(), 1610612736.0);
        assert_eq!(amount("+2k").whole(), Some(2000));
        assert!(amount("-1").is_negative() && amount("-1").ceil().is_none() && amount("-1").as_f64() == -1.0);
        assert!(!amount("-0").is_negative());
        assert_eq!(amount("1Ei").whole(), Some(1 << 60));
        assert_eq!(amount("100000000000000000000000000000000000000000000000Ei").whole(), None, "too large for a whole number");
        for bad in ["", "-", ".", "Gi", "1 Gi", "1GB", "1MiB", "1e", "1e2.5", "1x", "1.2.3", "--1", "e3", "1ki"] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_in_specs_are_whole_byte_counts_read_through_the_one_parser() {
        assert_eq!(parse_quantity("1.5Gi").unwrap_err(), "`.5Gi` is not a size unit");
        assert_eq!(parse_quantity("500m").unwrap_err(), "`m` is not a size unit");
        assert_eq!(parse_quantity("1e3").unwrap_err(), "`e3` is not a size unit");
        assert_eq!(parse_quantity("-1Gi").unwrap_err(), "`-1Gi` does not start with a number");
        assert_eq!(parse_quantity("0010Gi").unwrap(), Quantity { text: "10Gi".into(), bytes: 10 << 30 });
        assert_eq!(parse_quantity("1048576Ei").unwrap().bytes, 1 << 80);
        assert_eq!(parse_quantity("1099511627776Ei").unwrap_err(), "`1099511627776Ei` is too large", "2^100 bytes");
    }

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
