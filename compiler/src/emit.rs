//! Serialise compiled objects: multi-document YAML or a JSON `List`, byte-for-byte
//! deterministic (typed structs in a fixed field order, sorted maps, sorted objects).

use crate::kubevirt::VirtualMachine;

/// One YAML document per object, each starting with `---`.
pub fn to_yaml<'a>(objects: impl IntoIterator<Item = &'a VirtualMachine>) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).expect("typed objects always serialise"));
    }
    out
}

/// A Kubernetes `v1/List` of the objects, pretty-printed, ending in a newline.
pub fn to_json<'a>(objects: impl IntoIterator<Item = &'a VirtualMachine>) -> String {
    let items: Vec<&VirtualMachine> = objects.into_iter().collect();
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
    let mut s = serde_json::to_string_pretty(&list).expect("typed objects always serialise");
    s.push('\n');
    s
}

/// One object alone, for `--out-dir`.
pub fn object_yaml(o: &VirtualMachine) -> String {
    to_yaml([o])
}
