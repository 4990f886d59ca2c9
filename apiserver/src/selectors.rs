//! Label and field selectors: the `labelSelector` and `fieldSelector` query parameters of
//! list and watch requests, parsed and matched as kube-apiserver does
//! (`k8s.io/apimachinery/pkg/labels/selector.go`, `pkg/fields/selector.go`).
//!
//! Label selectors take the whole grammar: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a` (exists), `!a` (does not exist), and the numeric `a>1`, `a<1`,
//! comma-separated, with blanks anywhere between tokens. Keys must be qualified names and
//! values label values. A malformed selector is a 400 with the real server's words, such as
//! `unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt`.
//!
//! Field selectors take `=`, `==` and `!=` on `metadata.name` and `metadata.namespace`, the
//! only fields a custom resource (and so a KubeVirt object) can be selected by; any other
//! field is `field label not supported: <field>`.

use super::error::ApiError;
use super::validation::{go_quote, label_key_problems, label_value_problems};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    Exists,
    DoesNotExist,
}

/// One condition on one label; a selector is the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without duplicates, as the Go string set the parser builds.
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        // A label whose value is not a string cannot pass validation; treat it as absent.
        let value = labels.and_then(|l| l.get(&self.key)).and_then(Value::as_str);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(|v| self.has_value(v)),
            // As in Kubernetes, a missing label satisfies `!=` and `notin`.
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) =
                    (value.and_then(|v| v.parse::<i64>().ok()), self.values.first().and_then(|v| v.parse::<i64>().ok()))
                else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }

    fn has_value(&self, value: &str) -> bool {
        self.values.iter().any(|v| v == value)
    }
}

/// A parsed `labelSelector`. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parse the `labelSelector` query parameter. Errors are 400 BadRequest with the message
    /// kube-apiserver gives for the same input.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut requirements = Parser { items: scan(s), position: 0 }.parse().map_err(ApiError::bad_request)?;
        // Sorted by key, as the Go parser does, so equal selectors compare equal.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether an object with these `metadata.labels` is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

// ---- the label selector lexer: tokens as `labels.Lexer` produces them ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

#[derive(Debug, Clone, Copy)]
struct Scanned<'a> {
    token: Token,
    literal: &'a str,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The whole input as tokens, ending with `EndOfString`.
fn scan(input: &str) -> Vec<Scanned<'_>> {
    let bytes = input.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos == bytes.len() {
            items.push(Scanned { token: Token::EndOfString, literal: "" });
            return items;
        }
        let start = pos;
        if is_special_symbol(bytes[pos]) {
            // The longest operator wins: `!=` and `==` are the only two-byte ones.
            let two = bytes.get(pos..pos + 2);
            let token = match two {
                Some(b"!=") => Token::NotEquals,
                Some(b"==") => Token::DoubleEquals,
                _ => match bytes[pos] {
                    b'=' => Token::Equals,
                    b'!' => Token::DoesNotExist,
                    b'(' => Token::OpenPar,
                    b')' => Token::ClosedPar,
                    b',' => Token::Comma,
                    b'>' => Token::GreaterThan,
                    _ => Token::LessThan,
                },
            };
            pos += if matches!(token, Token::NotEquals | Token::DoubleEquals) { 2 } else { 1 };
            items.push(Scanned { token, literal: &input[start..pos] });
        } else {
            // Identifiers end at ASCII bytes only, so the slice is on UTF-8 boundaries.
            while pos < bytes.len() && !is_special_symbol(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            let literal = &input[start..pos];
            let token = match literal {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            items.push(Scanned { token, literal });
        }
    }
}

/// Where a token is read: `in` and `notin` are operators after a key, but plain values
/// (`x in (in)`) and keys everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// A recursive-descent parser with the structure (and so the error messages) of the Go one.
struct Parser<'a> {
    items: Vec<Scanned<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn at(&self, position: usize, context: Context) -> (Token, &'a str) {
        // `scan` always ends with EndOfString; reading past it keeps returning it.
        let item = self.items[position.min(self.items.len() - 1)];
        let token = match (context, item.token) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, token) => token,
        };
        (token, item.literal)
    }

    fn lookahead(&self, context: Context) -> (Token, &'a str) {
        self.at(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, &'a str) {
        let item = self.at(self.position, context);
        self.position = (self.position + 1).min(self.items.len());
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self.parse_requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!("found '{next_literal}', expected: identifier after ','"));
                            }
                        }
                        _ => return Err(format!("found '{literal}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => return Err(format!("found '{literal}', expected: !, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, operator) = self.parse_key_and_infer_operator()?;
        if let Some(operator @ (Operator::Exists | Operator::DoesNotExist)) = operator {
            return new_requirement(key, operator, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, operator, values)
    }

    /// The key, and the operator when it is unary: `!key`, or a bare `key` before `,` or
    /// the end.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let problems = label_key_problems(literal);
        if !problems.is_empty() {
            // The Go parser validates with a nil field path, which prints as `<nil>`.
            return Err(field_invalid("<nil>", literal, &problems));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal.to_string(), operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{literal}', expected: in, notin, =, ==, !=, gt, lt")),
        })
    }

    /// `(x,y,z)`; empty members (`(,x)`, `()`) are the empty string.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                if self.consume(Context::Values).0 != Token::ClosedPar {
                    // The Go parser names the token after '(' here, not the one it found.
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{literal}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.push(literal.to_string());
                    let (next, next_literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{next_literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new()); // `(,`
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedPar => {
                            values.push(String::new()); // `,)`
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.push(String::new()); // `,,`
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing before `,` or the end is "".
    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (next, _) = self.lookahead(Context::Values);
        if next == Token::EndOfString || next == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            return Ok(vec![literal.to_string()]);
        }
        Err(format!("found '{literal}', expected: identifier"))
    }
}

/// `labels.NewRequirement`: the checks on the values, reported as a Go `field.ErrorList`
/// aggregate. (The key was checked by the parser already.)
fn new_requirement(key: String, operator: Operator, mut values: Vec<String>) -> Result<Requirement, String> {
    values.sort();
    values.dedup();
    let mut errors = Vec::new();
    if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
        for (i, v) in values.iter().enumerate() {
            if v.parse::<i64>().is_err() {
                errors.push(field_invalid(
                    &format!("values[{i}]"),
                    v,
                    &["for 'Gt', 'Lt' operators, the value must be an integer".to_string()],
                ));
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let problems = label_value_problems(v);
        if !problems.is_empty() {
            errors.push(field_invalid(&format!("values[{i}][{key}]"), v, &problems));
        }
    }
    if !errors.is_empty() {
        return Err(aggregate(errors));
    }
    Ok(Requirement { key, operator, values })
}

/// A Go `field.Invalid` error as text: `path: Invalid value: "value": problem; problem`.
fn field_invalid(path: &str, value: &str, problems: &[String]) -> String {
    format!("{path}: Invalid value: {}: {}", go_quote(value), problems.join("; "))
}

/// A Go error aggregate as text: one error as itself, several as `[a, b]`, duplicates once.
fn aggregate(mut errors: Vec<String>) -> String {
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.clone()));
    if errors.len() == 1 {
        errors.remove(0)
    } else {
        format!("[{}]", errors.join(", "))
    }
}

// ---- field selectors ----

/// The fields a custom resource can be selected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelectableField {
    Name,
    Namespace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: SelectableField,
    value: String,
    /// `!=` rather than `=` or `==`.
    negated: bool,
}

/// A parsed `fieldSelector`. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parse the `fieldSelector` query parameter. A term that is not `field=value`,
    /// `field==value` or `field!=value` is a 400 `invalid selector: …`; a field other than
    /// `metadata.name` and `metadata.namespace` is a 400 `field label not supported: …`.
    /// Values may escape `\`, `,` and `=` with a backslash; field names are taken as
    /// written, blanks included, as the real server does.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut parts = split_terms(s);
        // Sorted first, as the Go parser does: it decides which bad term is reported.
        parts.sort();
        let mut parsed = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((lhs, operator, rhs)) = split_term(part) else {
                return Err(ApiError::bad_request(format!("invalid selector: '{s}'; can't understand '{part}'")));
            };
            let value = unescape_value(rhs).map_err(ApiError::bad_request)?;
            parsed.push((lhs, operator == "!=", value));
        }
        // Field names are checked only once the whole string has parsed, as in Go.
        let mut terms = Vec::new();
        for (lhs, negated, value) in parsed {
            let field = match lhs {
                "metadata.name" => SelectableField::Name,
                "metadata.namespace" => SelectableField::Namespace,
                _ => return Err(ApiError::bad_request(format!("field label not supported: {lhs}"))),
            };
            terms.push(FieldTerm { field, value, negated });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the object is selected. A missing name or namespace (a cluster-scoped
    /// object) is the empty string, so `metadata.namespace!=x` selects it.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let key = match term.field {
                SelectableField::Name => "name",
                SelectableField::Namespace => "namespace",
            };
            let actual = object.get("metadata").and_then(|m| m.get(key)).and_then(Value::as_str).unwrap_or("");
            (actual == term.value) != term.negated
        })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// Split at commas that are not escaped by a backslash; the backslashes stay.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// `lhs`, operator and `rhs` at the first operator in the term; `!=` and `==` are tried
/// before `=` at each position.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        for operator in ["!=", "==", "="] {
            if term[i..].starts_with(operator) {
                return Some((&term[..i], operator, &term[i + operator.len()..]));
            }
        }
    }
    None
}

/// Undo the escaping of `\`, `,` and `=` in a value; an unknown escape or a bare `,` or `=`
/// is an error with the real server's words.
fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!("invalid field selector: invalid escape sequence: \\{c}"));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Go prints the rune with %v, which is its number.
            ',' | '=' => return Err(format!("invalid field selector: unescaped character in value: {}", c as u32)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn selects(selector: &str, l: Value) -> bool {
        LabelSelector::parse(selector).unwrap().matches(Some(&labels(l)))
    }

    fn label_error(selector: &str) -> String {
        let e = LabelSelector::parse(selector).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"), "{selector}");
        e.message
    }

    fn field_error(selector: &str) -> String {
        let e = FieldSelector::parse(selector).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"), "{selector}");
        e.message
    }

    #[test]
    fn equality_operators_match_like_kubernetes() {
        let l = json!({"app": "web", "tier": "front"});
        for s in ["app=web", "app==web", "app = web", " app==web , tier=front "] {
            assert!(selects(s, l.clone()), "{s}");
        }
        assert!(!selects("app=db", l.clone()));
        assert!(selects("app!=db", l.clone()));
        assert!(!selects("app!=web", l.clone()));
        // A missing label satisfies != and notin, not = or in.
        assert!(selects("env!=prod", l.clone()));
        assert!(selects("env notin (prod)", l.clone()));
        assert!(!selects("env=prod", l.clone()));
        assert!(!selects("env in (prod)", l));
    }

    #[test]
    fn set_and_existence_operators_match_like_kubernetes() {
        let l = json!({"app": "web", "empty": ""});
        assert!(selects("app in (db,web)", l.clone()));
        assert!(selects("app in(db, web)", l.clone()));
        assert!(!selects("app notin (db,web)", l.clone()));
        assert!(selects("app", l.clone()));
        assert!(!selects("!app", l.clone()));
        assert!(selects("!env", l.clone()));
        assert!(!selects("env", l.clone()));
        // Empty members are the empty string: `()` and `(,x)`.
        assert!(selects("empty in ()", l.clone()));
        assert!(selects("empty in (,x)", l.clone()));
        assert!(selects("empty=", l.clone()));
        assert!(selects("empty==", l.clone()));
        // `in` and `notin` are plain values and keys where no operator is expected.
        assert!(selects("in", json!({"in": "x"})));
        assert!(selects("x in (in,notin)", json!({"x": "notin"})));
        // The Go example: `x in (foo,,baz),y,z notin ()`.
        assert!(selects("x in (foo,,baz),y,z notin ()", json!({"x": "", "y": "1"})));
        assert!(!selects("x in (foo,,baz),y,z notin ()", json!({"x": "", "y": "1", "z": ""})));
    }

    #[test]
    fn numeric_operators_compare_integers() {
        let l = json!({"gen": "5", "name": "five"});
        assert!(selects("gen>4", l.clone()));
        assert!(!selects("gen>5", l.clone()));
        assert!(selects("gen<6", l.clone()));
        assert!(!selects("name>1", l.clone()), "a label that is not a number never matches");
        assert!(!selects("missing<1", l));
    }

    #[test]
    fn empty_selector_selects_everything_even_without_labels() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(None));
        assert!(LabelSelector::parse("  ").unwrap().is_empty());
        let s = LabelSelector::parse("a!=b").unwrap();
        assert!(!s.is_empty());
        assert!(s.matches(None));
        assert!(!LabelSelector::parse("a").unwrap().matches(None));
    }

    #[test]
    fn non_string_label_values_count_as_absent() {
        assert!(!selects("app", json!({"app": 1})));
        assert!(selects("app!=1", json!({"app": 1})));
    }

    #[test]
    fn syntax_errors_have_the_real_servers_messages() {
        assert_eq!(label_error("a b"), "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt");
        assert_eq!(label_error("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(label_error("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(label_error("=b"), "found '=', expected: !, identifier, or 'end of string'");
        assert_eq!(label_error("a in x"), "unable to parse requirement: found 'x' expected: '('");
        assert_eq!(label_error("a in (x"), "unable to parse requirement: found '', expected: ',' or ')'");
        assert_eq!(label_error("a in (="), "unable to parse requirement: found '=', expected: ',', ')' or identifier");
        assert_eq!(label_error("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(label_error("!"), "unable to parse requirement: found '', expected: identifier");
        assert_eq!(label_error("a=(b)"), "unable to parse requirement: found '(', expected: identifier");
    }

    #[test]
    fn invalid_keys_and_values_have_the_real_servers_messages() {
        // Word for word what kube-apiserver answered to `kubectl get pods -l app:monolith`.
        assert_eq!(
            label_error("app:monolith"),
            "unable to parse requirement: <nil>: Invalid value: \"app:monolith\": name part must consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', \
             regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            label_error("app.kubernetes_io/name=x"),
            "unable to parse requirement: <nil>: Invalid value: \"app.kubernetes_io/name\": prefix part a lowercase RFC 1123 subdomain \
             must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
             (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            label_error("a=b@c"),
            "unable to parse requirement: values[0][a]: Invalid value: \"b@c\": a valid label must be an empty string or consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
             'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let both = label_error("a in (-x,y-)");
        assert!(both.starts_with("unable to parse requirement: [values[0][a]: Invalid value: \"-x\": "), "{both}");
        assert!(both.contains(", values[1][a]: Invalid value: \"y-\": "), "{both}");
        assert_eq!(
            label_error("a>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        let long = "k".repeat(64);
        assert!(label_error(&long).contains("name part must be no more than 63 characters"));
        assert!(label_error("a/b/c").contains("a qualified name must consist of"));
    }

    #[test]
    fn parsing_never_panics() {
        let pieces = ["a", "!", "=", "==", "!=", "(", ")", ",", " ", "in", "notin", ">", "<", "é", "\\", "b/c", "", "\t"];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in pieces {
                        let s = format!("{a}{b}{c}{d}");
                        let _ = LabelSelector::parse(&s);
                        let _ = FieldSelector::parse(&s);
                    }
                }
            }
        }
    }

    fn object(name: &str, namespace: Option<&str>) -> Value {
        match namespace {
            Some(ns) => json!({"metadata": {"name": name, "namespace": ns}}),
            None => json!({"metadata": {"name": name}}),
        }
    }

    #[test]
    fn field_selectors_match_name_and_namespace() {
        let vm = object("web-0", Some("shop"));
        let sel = |s: &str| FieldSelector::parse(s).unwrap();
        assert!(sel("metadata.name=web-0").matches(&vm));
        assert!(sel("metadata.name==web-0").matches(&vm));
        assert!(!sel("metadata.name!=web-0").matches(&vm));
        assert!(sel("metadata.namespace=shop,metadata.name!=web-1").matches(&vm));
        assert!(!sel("metadata.namespace=shop,metadata.name=web-1").matches(&vm));
        // A cluster-scoped object has the empty namespace.
        let node = object("n1", None);
        assert!(sel("metadata.namespace=").matches(&node));
        assert!(sel("metadata.namespace!=shop").matches(&node));
        assert!(sel("").is_empty());
        assert!(sel("").matches(&json!(null)));
        assert!(sel(",").is_empty());
        // Escaped commas and equals signs belong to the value.
        assert!(sel("metadata.name=a\\,b\\=c\\\\").matches(&object("a,b=c\\", None)));
    }

    #[test]
    fn field_selector_errors_have_the_real_servers_messages() {
        assert_eq!(field_error("spec.running=true"), "field label not supported: spec.running");
        assert_eq!(field_error("metadata.name=x,status.phase=Running"), "field label not supported: status.phase");
        assert_eq!(field_error("metadata.labels"), "invalid selector: 'metadata.labels'; can't understand 'metadata.labels'");
        // Terms are sorted before parsing, so the bad syntax is found before the bad field.
        assert_eq!(field_error("spec.x=1,zzz"), "invalid selector: 'spec.x=1,zzz'; can't understand 'zzz'");
        assert_eq!(field_error("metadata.name=a=b"), "invalid field selector: unescaped character in value: 61");
        assert_eq!(field_error("metadata.name=a\\x"), "invalid field selector: invalid escape sequence: \\x");
        assert_eq!(field_error("metadata.name=a\\"), "invalid field selector: invalid escape sequence: \\");
        // Blanks are part of the field name.
        assert_eq!(field_error("metadata.name =x"), "field label not supported: metadata.name ");
    }
}
