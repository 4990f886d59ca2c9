//! Kubernetes protobuf request bodies, for the one case a client sends them to us:
//! client-go's typed clients (`kubectl create namespace`) write core objects as
//! `application/vnd.kubernetes.protobuf` and do not fall back to JSON on a 415.
//!
//! Namespace and ConfigMap are decoded — the served core kinds kubectl creates through a
//! typed client (`create namespace`, `create configmap`) — with the ObjectMeta fields a
//! client sets. Everything else is refused with
//! 415 and says so. Field numbers are those of `k8s.io/api/core/v1/generated.proto` and
//! `k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto`.

use super::error::ApiError;
use serde_json::{json, Map, Value};

/// The envelope's magic prefix: `k8s\0`.
const MAGIC: &[u8] = b"k8s\x00";

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!("{what}: this server reads protobuf bodies for Namespace and ConfigMap only; send application/json"),
    )
}

/// A protobuf field: its number and its value (varint or length-delimited bytes).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Iterate over the fields of one message; `None` on malformed input.
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut out = vec![];
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut buf)?),
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                if len > buf.len() {
                    return None;
                }
                let (bytes, rest) = buf.split_at(len);
                buf = rest;
                Field::Bytes(bytes)
            }
            // Fixed-width fields do not occur in the messages decoded here.
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

fn text(bytes: &[u8]) -> Option<Value> {
    std::str::from_utf8(bytes).ok().map(|s| Value::String(s.to_string()))
}

/// A `map<string, string>` entry: key 1, value 2.
fn map_entry(bytes: &[u8]) -> Option<(String, Value)> {
    map_entry_with(bytes, text)
}

/// A `map<string, V>` entry, its value read by `value_of`.
fn map_entry_with(bytes: &[u8], value_of: fn(&[u8]) -> Option<Value>) -> Option<(String, Value)> {
    let mut key = String::new();
    let mut value = value_of(&[])?;
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = std::str::from_utf8(b).ok()?.to_string(),
            (2, Field::Bytes(b)) => value = value_of(b)?,
            _ => {}
        }
    }
    Some((key, value))
}

/// Bytes, as JSON carries them: base64.
fn base64_bytes(bytes: &[u8]) -> Option<Value> {
    use base64::Engine;
    Some(Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// A ConfigMap: metadata 1, data 2, binaryData 3, immutable 4 (what `kubectl create
/// configmap` sends).
fn config_map(bytes: &[u8]) -> Option<Value> {
    let mut object = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {} });
    let (mut data, mut binary) = (Map::new(), Map::new());
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => object["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                data.insert(k, v);
            }
            (3, Field::Bytes(b)) => {
                let (k, v) = map_entry_with(b, base64_bytes)?;
                binary.insert(k, v);
            }
            (4, Field::Varint(v)) => object["immutable"] = json!(v != 0),
            _ => {}
        }
    }
    if !data.is_empty() {
        object["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        object["binaryData"] = Value::Object(binary);
    }
    Some(object)
}

fn object_meta(bytes: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = vec![];
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => drop(meta.insert("name".into(), text(b)?)),
            (2, Field::Bytes(b)) => drop(meta.insert("generateName".into(), text(b)?)),
            (3, Field::Bytes(b)) => drop(meta.insert("namespace".into(), text(b)?)),
            (6, Field::Bytes(b)) => drop(meta.insert("resourceVersion".into(), text(b)?)),
            (11, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                annotations.insert(k, v);
            }
            (14, Field::Bytes(b)) => finalizers.push(text(b)?),
            // Server-owned fields (uid, timestamps, managedFields, …) are not taken
            // from a request anyway.
            _ => {}
        }
    }
    for (key, map) in [("labels", labels), ("annotations", annotations)] {
        if !map.is_empty() {
            meta.insert(key.into(), Value::Object(map));
        }
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(meta))
}

fn namespace(bytes: &[u8]) -> Option<Value> {
    let mut object = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": {} });
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => object["metadata"] = object_meta(b)?,
            (2, Field::Bytes(b)) => {
                let mut finalizers = vec![];
                for (n, f) in fields(b)? {
                    if let (1, Field::Bytes(s)) = (n, f) {
                        finalizers.push(text(s)?);
                    }
                }
                object["spec"] = json!({ "finalizers": finalizers });
            }
            _ => {}
        }
    }
    Some(object)
}

/// Decode a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let malformed = || ApiError::bad_request("the protobuf body of the request could not be decoded");
    let envelope = body.strip_prefix(MAGIC).ok_or_else(malformed)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (number, field) in fields(envelope).ok_or_else(malformed)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta).ok_or_else(malformed)? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => api_version = String::from_utf8_lossy(b).into_owned(),
                        (2, Field::Bytes(b)) => kind = String::from_utf8_lossy(b).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = Some(b),
            (3 | 4, Field::Bytes(b)) if !b.is_empty() => return Err(unsupported("an encoded or nested protobuf body")),
            _ => {}
        }
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(raw.unwrap_or_default()).ok_or_else(malformed),
        ("v1", "ConfigMap") => config_map(raw.unwrap_or_default()).ok_or_else(malformed),
        _ => Err(unsupported(&format!("a protobuf {api_version} {kind}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length_delimited(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    /// The bytes `kubectl create namespace shop --dry-run=…` sends, built field by field.
    fn namespace_body(name: &str, label: (&str, &str)) -> Vec<u8> {
        let entry = [length_delimited(1, label.0.as_bytes()), length_delimited(2, label.1.as_bytes())].concat();
        let meta = [length_delimited(1, name.as_bytes()), length_delimited(11, &entry)].concat();
        let namespace = [length_delimited(1, &meta), length_delimited(2, &[]), length_delimited(3, &[])].concat();
        let type_meta = [length_delimited(1, b"v1"), length_delimited(2, b"Namespace")].concat();
        let unknown = [length_delimited(1, &type_meta), length_delimited(2, &namespace)].concat();
        [MAGIC.to_vec(), unknown].concat()
    }

    #[test]
    fn a_namespace_decodes_to_its_json() {
        let object = decode(&namespace_body("shop", ("team", "web"))).unwrap();
        assert_eq!(object["kind"], "Namespace");
        assert_eq!(object["metadata"]["name"], "shop");
        assert_eq!(object["metadata"]["labels"]["team"], "web");
    }

    #[test]
    fn other_kinds_and_garbage_are_refused_without_panicking() {
        let mut body = namespace_body("shop", ("a", "b"));
        let at = body.windows(9).position(|w| w == b"Namespace").unwrap();
        body[at..at + 9].copy_from_slice(b"Deploymen");
        assert_eq!(decode(&body).unwrap_err().code, 415);
        assert_eq!(decode(b"not protobuf").unwrap_err().code, 400);
        let good = namespace_body("shop", ("a", "b"));
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert_eq!(decode(&[MAGIC, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]].concat()).unwrap_err().code, 400);
    }
}
