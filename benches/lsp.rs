//! `vmform lsp`'s figures (book/src/benchmarks.md): on a project of 1,000 VMs in 10 files
//! (plus one of params, templates and instancetypes), the time from a keystroke (an
//! incremental change) to the diagnostics published for it, the time to answer a
//! completion, and the server's peak RSS. The server runs as editors run it: the binary
//! over stdio, driven by a small JSON-RPC client here.
//!
//!   cargo bench --bench lsp
//!   KEYSTROKES=500 cargo bench --bench lsp
//!
//! Goals: diagnostics p99 < 50 ms, completion p99 < 20 ms, peak RSS < 200 MiB.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 10;
const VMS_PER_FILE: usize = 100;

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
}

impl Client {
    fn send(&mut self, msg: Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }
    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let msg = self.read();
            if msg["id"] == json!(id) {
                return msg["result"].clone();
            }
        }
    }
    fn read(&mut self) -> Value {
        let mut len = 0;
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "the server closed its output");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                len = n.parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }
    /// Wait for the diagnostics of `uri` at `version`.
    fn diagnostics(&mut self, uri: &str, version: i64) -> Value {
        loop {
            let msg = self.read();
            if msg["method"] == "textDocument/publishDiagnostics" && msg["params"]["uri"] == uri && msg["params"]["version"] == json!(version) {
                return msg["params"]["diagnostics"].clone();
            }
        }
    }
    /// Peak resident set size of the server, in MiB (Linux).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()).unwrap_or(0.0);
        kb / 1024.0
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn summary(what: &str, values: &[f64], goal: &str) {
    println!(
        "{what:<28} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms   (n={}; goal {goal})",
        percentile(values, 0.5),
        percentile(values, 0.99),
        percentile(values, 1.0),
        values.len()
    );
}

/// One file of 100 vms, each a little different, as a fleet is written.
fn vms(file: usize) -> String {
    let mut s = String::new();
    for i in 0..VMS_PER_FILE {
        let n = file * VMS_PER_FILE + i;
        let (template, size) = (["linux", "windows"][n % 2], ["small", "large"][n % 2]);
        s.push_str(&format!(
            "vm \"vm-{n}\" template=\"{template}\" instancetype=\"{size}\" {{\n    namespace \"shop-${{env}}\"\n    labels app=\"shop\" tier=\"t{}\"\n    disk \"root\" {{\n        image \"quay.io/containerdisks/fedora:41\"\n    }}\n    disk \"data\" {{\n        volume size=\"{}Gi\"\n    }}\n    network \"default\" masquerade=#true\n    port \"http\" 80\n}}\n\n",
            n % 3,
            10 + n % 90
        ));
    }
    s
}

const BASE: &str = "param \"env\" default=\"prod\"\n\ntemplate \"linux\" {\n    run-strategy \"always\"\n    firmware \"efi\"\n}\n\ntemplate \"windows\" {\n    run-strategy \"manual\"\n}\n\ninstancetype \"small\" {\n    cpu 2\n    memory \"4Gi\"\n}\n\ninstancetype \"large\" {\n    cpu 8\n    memory \"32Gi\"\n}\n";

fn main() {
    let keystrokes: usize = std::env::var("KEYSTROKES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("base.kdl"), BASE).unwrap();
    let mut texts = vec![];
    for f in 0..FILES {
        let text = vms(f);
        std::fs::write(root.join(format!("vms-{f}.kdl")), &text).unwrap();
        texts.push(text);
    }
    let bytes: usize = texts.iter().map(String::len).sum::<usize>() + BASE.len();
    println!("project: {} VMs in {FILES} files and base.kdl, {:.0} KiB", FILES * VMS_PER_FILE, bytes as f64 / 1024.0);

    let mut child = Command::new(env!("CARGO_BIN_EXE_vmform")).arg("lsp").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let (stdin, stdout) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
    let mut c = Client { child, stdin, stdout, next_id: 0 };
    let root_uri = format!("file://{}", root.display());
    c.request("initialize", json!({"processId": null, "rootUri": root_uri, "capabilities": {}}));
    c.notify("initialized", json!({}));

    // Every file open, as after a session's worth of work; the first compile.
    let started = Instant::now();
    for f in 0..FILES {
        let uri = format!("{root_uri}/vms-{f}.kdl");
        c.notify("textDocument/didOpen", json!({"textDocument": {"uri": uri, "languageId": "kdl", "version": 1, "text": texts[f]}}));
    }
    c.request("textDocument/documentSymbol", json!({"textDocument": {"uri": format!("{root_uri}/vms-0.kdl")}}));
    println!("open 10 files, first compile: {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);

    // Keystrokes in vms-3.kdl: the unit of the 42nd vm's volume size (`"52Gi"`) replaced by
    // an `x` and back in turn, so each change flips an error on and off and is published.
    let uri = format!("{root_uri}/vms-3.kdl");
    let text = &texts[3];
    let at = text.match_indices("size=\"").nth(42).unwrap().0 + "size=\"".len() + 2;
    let line = text[..at].matches('\n').count();
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1);
    let original = &text[at..at + 1];
    let mut diag_ms = vec![];
    for k in 0..keystrokes {
        let version = 2 + k as i64;
        let range = json!({"start": {"line": line, "character": col}, "end": {"line": line, "character": col + 1}});
        let new = if k % 2 == 0 { "x" } else { original };
        let t = Instant::now();
        c.notify("textDocument/didChange", json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"range": range, "text": new}]}));
        let d = c.diagnostics(&uri, version);
        diag_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(d.as_array().map(Vec::len), Some(if k % 2 == 0 { 1 } else { 0 }), "{d}");
    }

    // Completions with no edit pending: a template name, a node in a vm body.
    let mut completion_ms = vec![];
    let template_at = text.find("template=\"").unwrap() + "template=\"".len();
    for k in 0..keystrokes {
        let (line, character) = if k % 2 == 0 { (0, template_at) } else { (1, 4) };
        let t = Instant::now();
        let items = c.request("textDocument/completion", json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}));
        completion_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(items.as_array().is_some_and(|i| !i.is_empty()));
    }
    // And completion right after a keystroke, which first compiles what it left pending.
    let mut after_edit_ms = vec![];
    for k in 0..keystrokes / 4 {
        let version = 10_000 + k as i64;
        let new = if k % 2 == 0 { "x" } else { original };
        let range = json!({"start": {"line": line, "character": col}, "end": {"line": line, "character": col + 1}});
        c.notify("textDocument/didChange", json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"range": range, "text": new}]}));
        let t = Instant::now();
        c.request("textDocument/completion", json!({"textDocument": {"uri": uri}, "position": {"line": 1, "character": 4}}));
        after_edit_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    summary("diagnostics after a keystroke", &diag_ms, "p99 < 50 ms");
    summary("completion", &completion_ms, "p99 < 20 ms");
    summary("completion after a keystroke", &after_edit_ms, "");
    println!("peak RSS of the server: {:.0} MiB (goal < 200 MiB)", c.peak_rss_mib());
    c.request("shutdown", Value::Null);
    c.notify("exit", Value::Null);
    let _ = c.child.wait_timeout_or_kill();
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self) -> std::io::Result<()>;
}

impl WaitOrKill for Child {
    fn wait_timeout_or_kill(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()
    }
}
