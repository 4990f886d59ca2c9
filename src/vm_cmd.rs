//! `vmform vm`: act on one VM of a cluster.
//!
//! `start`, `stop` and `restart` are KubeVirt's own actions, called as `virtctl` calls them
//! (`PUT /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/ACTION`), so
//! they mean the same on the local control plane and on any KubeVirt cluster
//! (`specs/kubevirt-semantics.md`). `console` and `ports` read what the local runtime's
//! handler records on the VM's VirtualMachineInstance (`specs/runtime-contract.md`): the
//! path of the serial console log on this machine (`vmform.io/console`) and the forwarded
//! ports (`vmform.io/ports`).
//!
//! Exit codes: 0 done; 1 the cluster refused the action, the VM does not exist or is not
//! running; 2 usage or target errors (no cluster, refused credentials, no KubeVirt, a
//! cluster whose consoles are not on this machine).

use crate::cli::{VmArgs, VmCommand};
use crate::error::{Done, Error, Outcome};
use crate::print_stdout;
use crate::vm_lookup::{cluster_error, connect, connect_to_instance, instance, not_found, vms};
use kube::api::{DynamicObject, PostParams};
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vmform_cluster::kubevirt::{CONSOLE_ANNOTATION, PORTS_ANNOTATION};
use vmform_cluster::Target;

/// How often `console` looks for new output, and for a new VMI.
const POLL: Duration = Duration::from_millis(200);
const VMI_POLL_EVERY: u32 = 5;

pub fn run(command: VmCommand) -> Outcome {
    crate::process::runtime().block_on(async move {
        match command {
            VmCommand::Start { vm, paused, dry_run, wait } => {
                let mut body = json!({});
                if paused {
                    body["paused"] = json!(true);
                }
                act_and_wait(&vm, "start", body, dry_run, wait).await
            }
            VmCommand::Stop { vm, grace_period, force, dry_run } => {
                let mut body = json!({});
                if let Some(seconds) = grace_period.or(force.then_some(0)) {
                    body["gracePeriod"] = json!(seconds);
                }
                act(&vm, "stop", body, dry_run).await
            }
            VmCommand::Restart { vm, force, dry_run, wait } => {
                let mut body = json!({});
                if force {
                    body["gracePeriodSeconds"] = json!(0);
                }
                act_and_wait(&vm, "restart", body, dry_run, wait).await
            }
            VmCommand::Console { vm, tail, no_follow } => console(&vm, tail, !no_follow).await,
            VmCommand::Ports { vm } => ports(&vm).await,
            VmCommand::Migrate { vm, to, detach, timeout } => crate::migration_cmd::migrate(&vm, to.as_deref(), detach, timeout).await,
            VmCommand::MigrateCancel { vm } => crate::migration_cmd::cancel(&vm).await,
        }
    })
}

/// [`act`], then with `--wait` wait until the VM runs: a VMI other than the one running
/// before (a restart makes a new one), Running, or a state it will not leave by itself.
async fn act_and_wait(args: &VmArgs, action: &str, body: Value, dry_run: bool, wait: crate::cli::WaitArgs) -> Outcome {
    if !wait.wait || dry_run {
        return act(args, action, body, dry_run).await;
    }
    let (target, namespace) = connect(args).await?;
    let before = instance(&target, &namespace, &args.name).await.ok().flatten().and_then(|i| i.metadata.uid);
    act(args, action, body, dry_run).await?;
    wait_running(&target, &namespace, &args.name, before.as_deref(), wait.timeout).await
}

async fn wait_running(target: &Target, namespace: &str, name: &str, before: Option<&str>, timeout: std::time::Duration) -> Outcome {
    use vmform_deploy::vm_state;
    let vms = vms(target, namespace);
    let started = std::time::Instant::now();
    let mut said = String::new();
    loop {
        let vm = match vms.get_opt(name).await {
            Ok(Some(vm)) => vm,
            Ok(None) => return Err(not_found(namespace, name)),
            Err(e) => return Err(cluster_error(target, e)),
        };
        let state = vm_state::printable_status(&vm.data);
        if state != said {
            eprintln!("{namespace}/{name}: {}", if state.is_empty() { "(no status yet)" } else { state });
            said = state.to_string();
        }
        let vmi = match instance(target, namespace, name).await {
            Ok(vmi) => vmi.filter(|i| i.metadata.uid.is_some() && i.metadata.uid.as_deref() != before),
            Err(e) => return Err(cluster_error(target, e)),
        };
        if state == "Running" && vmi.is_some() {
            return Ok(Done::Ok);
        }
        // A run strategy that does not restart (Manual) leaves a failed instance as it is.
        if let Some(vmi) = vmi.as_ref().filter(|i| i.data.pointer("/status/phase").and_then(Value::as_str) == Some("Failed")) {
            let why = vmi.data.pointer("/status/conditions").and_then(Value::as_array).and_then(|c| c.iter().find(|c| c["type"] == "Ready")).and_then(|c| c["message"].as_str());
            return Err(Error::failed(format!("{namespace}/{name} did not start: its instance failed: {}", why.unwrap_or("no condition says why"))));
        }
        // The timeout is for slowness only.
        if let Some(stuck) = vm_state::stuck(&vm.data) {
            return Err(Error::failed(format!("{namespace}/{name} is {}, which it will not leave by itself soon: {}", stuck.state, stuck.reason)));
        }
        if started.elapsed() >= timeout {
            return Err(Error::failed(format!("timed out after {} s waiting for {namespace}/{name} to be Running (it is {})", timeout.as_secs(), if said.is_empty() { "without status" } else { &said })));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

async fn act(args: &VmArgs, action: &str, mut body: Value, dry_run: bool) -> Outcome {
    let (target, namespace) = connect(args).await?;
    if dry_run {
        body["dryRun"] = json!(["All"]);
    }
    let name = &args.name;
    let url = format!("/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines");
    let request = match kube::core::Request::new(url).replace_subresource(action, name, &PostParams::default(), body.to_string().into_bytes()) {
        Ok(r) => r,
        Err(e) => return Err(Error::usage(e)),
    };
    match target.client.request_text(request).await {
        Ok(_) => {
            let done = if dry_run { "accepted (dry run: nothing changed)" } else { "requested" };
            print_stdout(&format!("{namespace}/{name}: {action} {done}\n"));
            Ok(Done::Ok)
        }
        Err(kube::Error::Api(s)) if s.code == 404 && s.message.contains(" not found") && s.message.contains(&format!("\"{name}\"")) => {
            Err(not_found(&namespace, name))
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::cluster(format!(
            "the cluster at {} does not serve KubeVirt's VM actions (subresources.kubevirt.io/v1): {}",
            target.server, s.message
        ))),
        Err(kube::Error::Api(s)) if s.code == 401 => Err(cluster_error(&target, kube::Error::Api(s))),
        Err(kube::Error::Api(s)) => Err(Error::failed(format!("cannot {action} {namespace}/{name}: {}", s.message))),
        Err(e) => Err(cluster_error(&target, e)),
    }
}

fn annotation<'a>(vmi: &'a DynamicObject, key: &str) -> Option<&'a str> {
    vmi.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

fn not_local(target: &Target, namespace: &str, name: &str, what: &str) -> Error {
    Error::cluster(format!(
        "VM {namespace}/{name} has no {what} on this machine: the cluster at {} is not vmform's local runtime (on KubeVirt, use virtctl)",
        target.server
    ))
}

/// The console log of a VMI, if it is on this machine.
fn console_path(vmi: &DynamicObject) -> Option<PathBuf> {
    annotation(vmi, CONSOLE_ANNOTATION).map(PathBuf::from).filter(|p| p.is_file())
}

async fn console(args: &VmArgs, tail: i64, follow: bool) -> Outcome {
    let (target, namespace, vmi) = connect_to_instance(args).await?;
    let name = &args.name;
    let Some(path) = console_path(&vmi) else {
        return match annotation(&vmi, CONSOLE_ANNOTATION) {
            Some(p) => Err(Error::cluster(format!("the console log of VM {namespace}/{name} ({p}) is not on this machine"))),
            None => Err(not_local(&target, &namespace, name, "console log")),
        };
    };
    let mut out = std::io::stdout();
    let mut offset = match print_tail(&path, tail, &mut out) {
        Ok(o) => o,
        Err(e) => {
            return Err(Error::failed(format!("cannot read {}: {e}", path.display())));
        }
    };
    if !follow {
        return Ok(Done::Ok);
    }
    let mut path = path;
    let mut uid = vmi.metadata.uid.clone();
    let mut stopped = false;
    let mut ticks = 0u32;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(Done::Ok),
            _ = tokio::time::sleep(POLL) => {}
        }
        match copy_new(&path, &mut offset, &mut out) {
            Ok(()) => {}
            // The reader went away (`vmform vm console web | head`).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Done::Ok),
            // The old VMI's log may be gone; the next VMI brings a new one.
            Err(_) => {}
        }
        ticks += 1;
        if !ticks.is_multiple_of(VMI_POLL_EVERY) {
            continue;
        }
        match instance(&target, &namespace, name).await {
            Ok(None) if !stopped => {
                stopped = true;
                eprintln!("--- {namespace}/{name}: the VirtualMachineInstance is gone; waiting for the VM to run again (Ctrl-C to leave)");
            }
            Ok(Some(next)) if next.metadata.uid != uid => {
                if let Some(next_path) = console_path(&next) {
                    // Whatever the old guest wrote last, then the new one from its start.
                    let _ = copy_new(&path, &mut offset, &mut out);
                    eprintln!("--- {namespace}/{name}: a new VirtualMachineInstance; following its console");
                    path = next_path;
                    offset = 0;
                    uid = next.metadata.uid.clone();
                    stopped = false;
                }
            }
            // The same guest, live-migrated: its console goes on in the new node's log.
            Ok(Some(next)) => {
                if let Some(next_path) = console_path(&next).filter(|p| *p != path) {
                    let _ = copy_new(&path, &mut offset, &mut out);
                    let node = next.data.pointer("/status/nodeName").and_then(Value::as_str).unwrap_or("another node");
                    eprintln!("--- {namespace}/{name}: migrated to {node}; following its console there");
                    path = next_path;
                    offset = 0;
                }
            }
            _ => {}
        }
    }
}

/// Print the last `lines` lines of a file (all of it when negative); returns where the
/// file ended.
fn print_tail(path: &Path, lines: i64, out: &mut impl Write) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let start = if lines < 0 { 0 } else { tail_start(&bytes, lines as usize) };
    write_out(out, &bytes[start..])?;
    Ok(bytes.len() as u64)
}

/// Where the last `lines` lines of `bytes` begin (a final newline ends the last line, it
/// does not start an empty one).
fn tail_start(bytes: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return bytes.len();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    0
}

/// Print what was appended to the file since `offset`; a file that shrank was rewritten,
/// and is printed from its start.
fn copy_new(path: &Path, offset: &mut u64, out: &mut impl Write) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len < *offset {
        *offset = 0;
    }
    if len == *offset {
        return Ok(());
    }
    file.seek(SeekFrom::Start(*offset))?;
    let mut buf = Vec::with_capacity((len - *offset) as usize);
    file.take(len - *offset).read_to_end(&mut buf)?;
    *offset += buf.len() as u64;
    write_out(out, &buf)
}

fn write_out(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}

/// One forwarded port, as the handler records it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Port {
    #[serde(default)]
    name: String,
    #[serde(default)]
    protocol: String,
    port: u16,
    #[serde(rename = "hostIP", default)]
    host_ip: String,
    host_port: u16,
}

async fn ports(args: &VmArgs) -> Outcome {
    let (target, namespace, vmi) = connect_to_instance(args).await?;
    let name = &args.name;
    let Some(raw) = annotation(&vmi, PORTS_ANNOTATION) else {
        if annotation(&vmi, CONSOLE_ANNOTATION).is_none() {
            return Err(not_local(&target, &namespace, name, "forwarded ports"));
        }
        print_stdout(&format!("{namespace}/{name} forwards no ports\n"));
        return Ok(Done::Ok);
    };
    let ports: Vec<Port> = match serde_json::from_str(raw) {
        Ok(p) => p,
        Err(e) => {
            return Err(Error::failed(format!("the {PORTS_ANNOTATION} annotation of VMI {namespace}/{name} is not a list of ports: {e}")));
        }
    };
    if ports.is_empty() {
        print_stdout(&format!("{namespace}/{name} forwards no ports\n"));
        return Ok(Done::Ok);
    }
    print_stdout(&ports_table(&ports));
    Ok(Done::Ok)
}

fn ports_table(ports: &[Port]) -> String {
    let rows: Vec<[String; 4]> = ports
        .iter()
        .map(|p| {
            let host = if p.host_ip.contains(':') { format!("[{}]:{}", p.host_ip, p.host_port) } else { format!("{}:{}", p.host_ip, p.host_port) };
            let protocol = if p.protocol.is_empty() { "TCP".to_string() } else { p.protocol.clone() };
            let name = if p.name.is_empty() { "-".to_string() } else { p.name.clone() };
            [name, protocol, p.port.to_string(), host]
        })
        .collect();
    let header = ["NAME", "PROTOCOL", "GUEST PORT", "HOST"].map(String::from);
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut text = String::new();
    for row in [&header].into_iter().chain(rows.iter()) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        text.push_str(cells.join("   ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(&log[tail_start(log, 1)..], b"three\n");
        assert_eq!(&log[tail_start(log, 2)..], b"two\nthree\n");
        assert_eq!(&log[tail_start(log, 9)..], log);
        assert_eq!(&log[tail_start(log, 0)..], b"");
        let partial = b"one\ntwo";
        assert_eq!(&partial[tail_start(partial, 1)..], b"two");
    }

    #[test]
    fn ports_print_as_a_table() {
        let ports: Vec<Port> = serde_json::from_str(
            r#"[{"name":"http","protocol":"TCP","port":80,"hostIP":"127.0.0.1","hostPort":40123},{"port":22,"hostIP":"::1","hostPort":2222}]"#,
        )
        .unwrap();
        assert_eq!(
            ports_table(&ports),
            "NAME   PROTOCOL   GUEST PORT   HOST\nhttp   TCP        80           127.0.0.1:40123\n-      TCP        22           [::1]:2222\n"
        );
    }
}
