//! The command line, defined once: `main` parses it, and the man pages, shell
//! completions and the book's CLI reference are generated from the same definition.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "vmform",
    version,
    about = "VM-as-code for KubeVirt-style clusters",
    long_about = "vmform compiles virtual machine specs written in KDL into kubevirt.io/v1 \
VirtualMachine objects, with precise errors for every mistake.\n\n\
Exit codes, the same in every command: 0 success; 1 a failure (errors in the specs, policy findings, \
files to format with `fmt --check`, a change or action refused or failed, a cluster that cannot be reached); \
2 usage (the command line, a path that cannot be read or written, a local control plane that cannot start as \
asked) or, with --detailed-exitcode, changes present.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check specs and report every error and warning; writes nothing
    Validate {
        #[command(flatten)]
        input: Input,
    },
    /// Compile specs to KubeVirt VirtualMachine manifests
    Build {
        #[command(flatten)]
        input: Input,
        /// Output format of the manifests
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
        output: OutputFormat,
        /// Write one file per object, DIR/NAMESPACE/NAME.yaml, instead of printing them
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Show what changes between two versions of the specs, and what each change does to
    /// a running VM
    #[command(after_help = "Examples:\n  vmform diff old/ new/\n  vmform diff --base origin/main examples/shop   # in a pull-request job")]
    Diff {
        /// OLD NEW (files or directories), or with --base the PATHS to compare with the
        /// same paths at that git revision
        #[arg(required = true, value_name = "PATHS")]
        paths: Vec<PathBuf>,
        /// Compare PATHS in the work tree with PATHS as they were at this git revision
        /// (read through git, includes too)
        #[arg(long, value_name = "REV")]
        base: Option<String>,
        /// Set a declared param on both sides (repeatable)
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Output format
        #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
        format: DiffFormat,
        /// Exit 0 when nothing changes, 2 when something does (1 stays an error)
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Check compiled VMs against policy rules (built-in and your own, CEL over the objects)
    #[command(after_help = "Examples:\n  vmform check examples/shop\n  vmform check specs/ --policy policies/ --format sarif > vmform.sarif\n  vmform check --test policies/tests --policy policies/")]
    Check {
        /// Spec files or directories (not needed with --test)
        #[arg(value_name = "PATHS", required_unless_present = "test")]
        paths: Vec<PathBuf>,
        /// A policy file, or a directory of them (repeatable)
        #[arg(long, value_name = "FILE|DIR")]
        policy: Vec<PathBuf>,
        /// Run only these built-in rules (comma-separated ids); `none` runs none
        #[arg(long, value_name = "IDS", value_delimiter = ',')]
        rules: Option<Vec<String>>,
        /// Fail (exit 1) on findings at or above this level
        #[arg(long, value_enum, default_value_t = FailOn::Error)]
        fail_on: FailOn,
        #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
        format: CheckFormat,
        /// Set a declared param (repeatable)
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Run the policy test cases in DIR: each *.kdl file is a spec whose
        /// `// expect: RULE NAMESPACE/NAME` lines list the findings it must produce
        #[arg(long, value_name = "DIR")]
        test: Option<PathBuf>,
    },
    /// Rewrite spec files in the canonical layout, keeping comments
    #[command(after_help = "Examples:\n  vmform fmt --check examples/     # every project below it\n  vmform fmt - < web.kdl           # standard input to standard output, for editors")]
    Fmt {
        /// Files, or directories whose .kdl files to format (a directory with none of its
        /// own is searched recursively); `-` reads standard input and writes standard output
        #[arg(required = true, value_name = "PATHS")]
        paths: Vec<PathBuf>,
        /// Change nothing; list the files that are not formatted and exit 1 if any
        #[arg(long)]
        check: bool,
        /// With --check, also print a unified diff of each change
        #[arg(long, requires = "check")]
        diff: bool,
        /// Also format .kdl files in subdirectories of a directory that has its own
        #[arg(short, long)]
        recursive: bool,
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
        format: DiagnosticFormat,
    },
    /// Run a language server over standard input and output (LSP), for editors
    #[command(after_help = "Diagnostics as `vmform validate` reports them (and, with --policy, the findings of `vmform check`), completion, hover, go to definition and references, the outline and workspace symbols, rename, quick fixes and formatting. Editors start it themselves; see the book's chapter \"Editor support\".")]
    Lsp {
        /// A policy file, or a directory of them (repeatable): `vmform check` findings become diagnostics too
        #[arg(long, value_name = "PATH")]
        policy: Vec<PathBuf>,
    },
    /// Show what applying the specs would change on the cluster, and what each change does
    /// to a running VM
    #[command(after_help = "Exit codes: 0 success (no changes, with --detailed-exitcode), 1 error, 2 usage error or (with --detailed-exitcode) changes present.\n\nExamples:\n  vmform plan examples/shop\n  vmform plan examples/shop --out shop.plan && vmform apply shop.plan")]
    Plan {
        #[command(flatten)]
        project: ProjectArgs,
        /// Save the plan here, for `vmform apply FILE`
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 0 when nothing changes, 2 when something does (1 stays an error)
        #[arg(long)]
        detailed_exitcode: bool,
        /// Only report drift: changes made outside vmform to fields the specs set
        #[arg(long)]
        refresh_only: bool,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Apply the specs, or a saved plan, to the cluster
    #[command(after_help = "Exit codes: 0 applied (or nothing to do), 1 error or refused, 2 usage error.\n\nExamples:\n  vmform apply examples/shop                 # plan, show, ask for yes\n  vmform apply examples/shop --auto-approve --wait\n  vmform apply shop.plan                     # exactly a saved plan")]
    Apply {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        guards: ApplyArgs,
        /// Wait until every touched VM is Running (run strategy always) or Stopped (halted)
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, as `90s` or `5m`
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Delete everything the project owns from the cluster
    Destroy {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        guards: ApplyArgs,
    },
    /// Print a saved plan, or the project's VMs on the cluster now
    #[command(
        visible_alias = "output",
        after_help = "Examples:\n  vmform show                  # the VMs of the project in this directory\n  vmform show examples/shop\n  vmform show shop.plan"
    )]
    Show {
        /// A saved plan, or the specs (file or directory) of the project whose live VMs to show
        #[arg(value_name = "PATH", default_value = ".")]
        path: PathBuf,
        /// The project whose VMs to show [default: PATH's directory name]
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
        format: PlanFormat,
    },
    /// Start, stop, restart or migrate a VM, or read its serial console and forwarded ports
    #[command(
        long_about = "Start, stop, restart or migrate a VM, or read its serial console and forwarded ports.\n\n\
start, stop and restart are KubeVirt's own VM actions (what virtctl calls), so they do the same on the local \
control plane and on any KubeVirt cluster: by the VM's run strategy they change it (Halted and Always), ask the \
controller to act (Manual, RerunOnFailure), or are refused with KubeVirt's reason. migrate creates a KubeVirt \
VirtualMachineInstanceMigration and follows it. console and ports read what vmform's local runtime records on the \
VM's VirtualMachineInstance (and follow it to another node after a migration).\n\n\
Exit codes: 0 done; 1 the action was refused or failed (the VM does not exist or is not running, the cluster \
cannot be reached or refuses the credentials, no KubeVirt, consoles that are not on this machine); 2 usage.",
        after_help = "Examples:\n  vmform vm start web\n  vmform vm stop web -n shop --grace-period 10\n  vmform vm restart web --force\n  vmform vm migrate web --to local-1\n  vmform vm console web --tail 100\n  vmform vm ports web"
    )]
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Cordon, uncordon or drain a node: move its VMs off it for maintenance
    #[command(after_help = "Examples:\n  vmform node drain local-0\n  vmform node uncordon local-0")]
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Start the local control plane: a Kubernetes-compatible API server on this machine
    #[command(after_help = "Examples:\n  vmform up                      # in the foreground; Ctrl-C stops it\n  vmform up --detach             # in the background; `vmform down` stops it\n  KUBECONFIG=$(vmform status --kubeconfig) kubectl get vm -A")]
    Up {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Address to listen on (loopback by default; port 0 picks a free port)
        #[arg(long, value_name = "ADDR", default_value = vmform_apiserver::local::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Run in the background, with a pid file and a log file in the data dir
        #[arg(long)]
        detach: bool,
        /// Serve the API only: no controller, no handler, no VMs run
        #[arg(long)]
        no_runtime: bool,
        /// The node lease's duration: how long a silent handler's node stays Ready
        #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_duration)]
        node_lease_duration: std::time::Duration,
        /// How many nodes to run: 1 is node `local`; N ≥ 2 are `local-0` … `local-(N-1)`,
        /// each in its own network namespace with its own address and libvirtd (needs
        /// CAP_SYS_ADMIN and CAP_NET_ADMIN, else one node)
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=200))]
        nodes: u16,
        #[command(flatten)]
        accel: AccelArgs,
        /// Label every node KEY=VALUE (repeatable), so VMs with a node-selector find one;
        /// labels set with `kubectl label node` are kept across restarts too
        #[arg(long = "node-label", value_name = "KEY=VALUE", value_parser = parse_node_label)]
        node_labels: Vec<(String, String)>,
    },
    /// Stop the local control plane cleanly
    Down {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Say whether the local control plane runs, where, its version and object counts
    /// (exit 0 running, 1 not running)
    Status {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Print only the path of the kubeconfig
        #[arg(long)]
        kubeconfig: bool,
    },
    /// Manage the local control plane's bearer tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The local runtime's image cache: the container disks its nodes boot
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Run a part of the VM runtime against a cluster (`vmform up` runs them for you)
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one per command into a directory
    Man {
        /// Write vmform.1 and vmform-COMMAND.1 files here instead of printing vmform.1
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Run the controller (KubeVirt's virt-controller): VMs to VMIs, scheduling, node health
    Controller {
        #[command(flatten)]
        target: TargetArgs,
        /// Provision the VMs' data volumes as files in this dir (the local runtime's storage)
        #[arg(long, value_name = "DIR")]
        volumes_dir: Option<PathBuf>,
        #[command(flatten)]
        migrations: MigrationArgs,
    },
    /// Run the handler of one node (KubeVirt's virt-handler): starts, watches and stops its guests
    Handler {
        #[command(flatten)]
        target: TargetArgs,
        /// The node's name
        #[arg(long, value_name = "NAME")]
        node: String,
        /// The node's own dir: its launchers' files (and its private libvirtd with --own-libvirtd)
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
        /// Where PVC and data volume files are
        #[arg(long, value_name = "DIR")]
        volumes_dir: PathBuf,
        /// The node's libvirt daemon
        #[arg(long, value_name = "URI", conflicts_with = "own_libvirtd", required_unless_present = "own_libvirtd")]
        libvirt_uri: Option<String>,
        /// Start (or adopt) a private libvirtd in the node dir
        #[arg(long)]
        own_libvirtd: bool,
        /// The node lease's duration; the controller marks the node NotReady when it runs out
        #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_duration)]
        lease_duration: std::time::Duration,
        /// The node's InternalIP address (default 127.0.0.1); with it the Node also carries
        /// the libvirt migration URI qemu+tcp://ADDR/system
        #[arg(long, value_name = "ADDR")]
        node_address: Option<std::net::IpAddr>,
        #[command(flatten)]
        accel: AccelArgs,
        /// Label the node KEY=VALUE (repeatable)
        #[arg(long = "node-label", value_name = "KEY=VALUE", value_parser = parse_node_label)]
        node_labels: Vec<(String, String)>,
    },
    /// Run one VMI's guest (KubeVirt's virt-launcher); started by the handler
    #[command(hide = true)]
    Launcher {
        #[arg(long, value_name = "DIR")]
        vmi_dir: PathBuf,
        #[arg(long, value_name = "URI")]
        libvirt_uri: String,
        #[arg(long, value_name = "DIR")]
        volumes_dir: PathBuf,
        #[arg(long, value_name = "ACCEL", default_value = "tcg")]
        accel: vmform_runtime::accel::Accel,
        #[arg(long, value_name = "PATH")]
        emulator: Option<PathBuf>,
        /// Receive the guest of this live migration (its uid) instead of starting one
        #[arg(long, value_name = "MIGRATION_UID")]
        incoming: Option<String>,
    },
}

/// Waiting for a VM to run after an action.
#[derive(Debug, Args, Clone, Copy)]
pub struct WaitArgs {
    /// Wait until the VM is Running; a VM that cannot start (CrashLoopBackOff,
    /// ErrorUnschedulable, …) ends the wait at once with exit 1
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, as `90s` or `5m`
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// How a node's guests are accelerated (book: Running VMs locally, "KVM or TCG").
#[derive(Debug, Args, Clone)]
pub struct AccelArgs {
    /// How guests are accelerated: `auto` (KVM when a probe guest proves that guests run
    /// under it, else QEMU's emulator, TCG; a guest that still fails under KVM turns the
    /// node to TCG), `kvm` (KVM or a clear error) or `tcg` (KubeVirt's useEmulation)
    #[arg(long, value_name = "auto|kvm|tcg", default_value = "auto")]
    pub accel: vmform_runtime::accel::AccelChoice,
    /// The QEMU binary guests run in (default: libvirt's qemu-system-x86_64)
    #[arg(long, value_name = "PATH")]
    pub emulator: Option<PathBuf>,
    /// How long the KVM probe may take before a node runs its guests under TCG
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub accel_probe_timeout: std::time::Duration,
    /// Say KVM without the probe (a test hook: a guest's KVM failure still turns the node to TCG)
    #[arg(long, hide = true)]
    pub trust_kvm: bool,
}

impl AccelArgs {
    pub fn config(&self) -> vmform_runtime::handler::AccelConfig {
        vmform_runtime::handler::AccelConfig {
            choice: self.accel,
            emulator: self.emulator.clone(),
            probe_timeout: self.accel_probe_timeout,
            trust_kvm: self.trust_kvm,
        }
    }
}

/// The cluster's migration settings (KubeVirt's `spec.configuration.migrations`); a
/// MigrationPolicy overrides them for the VMIs it selects.
#[derive(Debug, Args)]
pub struct MigrationArgs {
    /// Live migrations at once in the whole cluster; more wait in Pending
    #[arg(long, value_name = "N", default_value_t = vmform_runtime::controller::MigrationConfig::default().parallel_migrations_per_cluster)]
    pub parallel_migrations_per_cluster: u32,
    /// Live migrations at once out of one node
    #[arg(long, value_name = "N", default_value_t = vmform_runtime::controller::MigrationConfig::default().parallel_outbound_migrations_per_node)]
    pub parallel_outbound_migrations_per_node: u32,
    /// Seconds a migration may take per GiB it moves, then it is aborted
    #[arg(long, value_name = "SECONDS", default_value_t = vmform_runtime::kubevirt::DEFAULT_COMPLETION_TIMEOUT_PER_GIB)]
    pub migration_completion_timeout_per_gib: u64,
    /// Bytes per second one migration may use, as a quantity (64Mi); none by default
    #[arg(long, value_name = "QUANTITY")]
    pub migration_bandwidth: Option<String>,
    /// Milliseconds the guest may be paused at a migration's switch-over
    #[arg(long, value_name = "MS", default_value_t = vmform_runtime::controller::DEFAULT_MAX_DOWNTIME_MS)]
    pub migration_max_downtime: u64,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a bearer token for the local control plane and print it (it is shown once)
    Create {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// A viewer token: get, list and watch only; writes are refused with 403
        #[arg(long)]
        read_only: bool,
        /// A name for the token, shown as the user in errors
        #[arg(long, default_value = "token")]
        name: String,
    },
}

/// Which cluster: as kubectl picks it; with neither flag, the local control plane when it
/// runs, else the current context.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The kubeconfig to read [default: the local control plane's when it runs, else $KUBECONFIG or ~/.kube/config]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The local control plane's data dir (for the default target)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl TargetArgs {
    /// What vmform-cluster chooses the cluster from: the one conversion.
    pub fn wanted(&self) -> vmform_cluster::TargetArgs {
        vmform_cluster::TargetArgs { kubeconfig: self.kubeconfig.clone(), context: self.context.clone(), data_dir: self.data_dir.clone() }
    }
}

/// A project: its specs, its name, its cluster.
#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// Spec files or directories (or, for apply, one saved plan file)
    #[arg(value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// Set a declared param (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// The project's name: what it owns on the cluster is recorded under it [default: the first path's directory name]
    #[arg(long)]
    pub project: Option<String>,
    /// Only these VMs (`NAME` or `NAMESPACE/NAME`, repeatable)
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Leave these VMs alone (`NAME` or `NAMESPACE/NAME`, repeatable)
    #[arg(long = "exclude", value_name = "NAME")]
    pub excludes: Vec<String>,
    /// For plan and apply: keep run strategies that VM actions (start, stop) changed, or
    /// revert them to the specs' [default: each VM's lifecycle vm-actions, else keep]
    #[arg(long, value_name = "keep|revert", value_parser = parse_vm_actions)]
    pub vm_actions: Option<vmform_compiler::model::VmActions>,
    #[command(flatten)]
    pub target: TargetArgs,
}

fn parse_vm_actions(s: &str) -> Result<vmform_compiler::model::VmActions, String> {
    vmform_compiler::model::VmActions::parse(s).ok_or_else(|| format!("`{s}` is not keep or revert"))
}

/// What an apply may do.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Apply without asking [default: ask, reading the answer from stdin, a terminal or a pipe]
    #[arg(long)]
    pub auto_approve: bool,
    /// Apply changes that lose data (deleting data volumes, shrinking them, …)
    #[arg(long)]
    pub allow_data_loss: bool,
    /// Take over fields another field manager owns instead of stopping
    #[arg(long)]
    pub force_conflicts: bool,
    /// Restart running VMs whose changes take effect only at a restart
    #[arg(long)]
    pub restart: bool,
    /// How long to wait for another apply of the project to finish
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Human,
    Json,
}

/// `90s`, `5m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?} is not a duration such as 90s, 5m or 1h")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

/// Where the local control plane keeps its state.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The data dir [default: $VMFORM_HOME, else ~/.local/share/vmform]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub fn resolve(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(vmform_cluster::local::default_data_dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image into the cache as a VM's launcher would (verified, kept by digest)
    Pull {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// `host[:port]/repo[:tag|@digest]`, or a Docker Hub short name
        #[arg(value_name = "REF")]
        reference: String,
        /// Always, IfNotPresent or Never [default: KubeVirt's: Always for :latest or no tag]
        #[arg(long, value_name = "POLICY")]
        pull_policy: Option<String>,
    },
    /// List the cached images: references, digest, disk, size, last use
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Remove every cached image no guest boots from now
    Prune {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
}

/// What to compile, shared by every command that compiles.
#[derive(Debug, Args)]
pub struct Input {
    /// Spec files, or directories whose .kdl files (not subdirectories) form the run
    #[arg(required = true, value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// Set a declared param, overriding its default (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// How to print errors and warnings
    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
    pub format: DiagnosticFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Multi-document YAML, sorted by namespace and name
    Yaml,
    /// A JSON v1 List
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Error,
    Warning,
    Note,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Findings with their place in the specs
    Human,
    /// One JSON document (schema in specs/policy.md)
    Json,
    /// SARIF 2.1.0, for code-scanning tools
    Sarif,
    /// GitHub Actions workflow commands (annotations on the pull request)
    Github,
    /// JUnit XML, one test case per VM and rule
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// Terraform-style plan text
    Human,
    /// A pull-request comment: summary first, data loss and replacements first
    Markdown,
    /// The changes as JSON (schema in specs/diff-json.md)
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagnosticFormat {
    /// Annotated source snippets
    Human,
    /// One JSON document: file, line, column, code, severity and message of each
    Json,
}

fn parse_node_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = parse_var(s)?;
    vmform_compiler::values::check_label_key(&key).map_err(|e| format!("label key `{key}`: {e}"))?;
    vmform_compiler::values::check_label_value(&value).map_err(|e| format!("label value `{value}`: {e}"))?;
    Ok((key, value))
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Start a VM: a Halted one becomes Always; a Manual or RerunOnFailure one gets a start request
    Start {
        #[command(flatten)]
        vm: VmArgs,
        /// Start the guest paused
        #[arg(long)]
        paused: bool,
        /// Have the cluster check the request without doing it
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop a VM: an Always (or Once) one becomes Halted; a Manual or RerunOnFailure one gets a stop request
    Stop {
        #[command(flatten)]
        vm: VmArgs,
        /// Give the guest this long to shut down (replaces the VMI's terminationGracePeriodSeconds)
        #[arg(long, value_name = "SECONDS", conflicts_with = "force")]
        grace_period: Option<u64>,
        /// Do not wait for the guest to shut down: --grace-period 0
        #[arg(long)]
        force: bool,
        /// Have the cluster check the request without doing it
        #[arg(long)]
        dry_run: bool,
    },
    /// Restart a VM: its VirtualMachineInstance is stopped and a new one started
    Restart {
        #[command(flatten)]
        vm: VmArgs,
        /// Do not wait for the guest to shut down (it gets one second)
        #[arg(long)]
        force: bool,
        /// Have the cluster check the request without doing it
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print a VM's serial console log and follow it, across restarts, until Ctrl-C (local runtime)
    Console {
        #[command(flatten)]
        vm: VmArgs,
        /// Lines of the log to print first; -1 for all of it
        #[arg(long, value_name = "N", default_value_t = 20, allow_negative_numbers = true)]
        tail: i64,
        /// Print the log and exit instead of following it
        #[arg(long)]
        no_follow: bool,
    },
    /// List the ports forwarded from this machine to a VM's guest (local runtime)
    Ports {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Live-migrate a running VM to another node and follow the migration to its end
    #[command(
        long_about = "Live-migrate a running VM to another node and follow the migration to its end.\n\n\
Creates a KubeVirt VirtualMachineInstanceMigration for the VM's instance: the controller picks a target node \
(Ready, schedulable, with room, matching the VM's node selector, never the one it is on), and the guest moves \
without a restart. Prints each phase, then where the VM went, how long it took and how long the guest was paused. \
Works the same on any KubeVirt cluster.\n\n\
Exit codes: 0 migrated (or, with --detach, the migration was created), 1 the migration failed or was refused \
(the VM is not running, cannot live-migrate, no node can take it, the cluster cannot be reached), or it did not \
end within --timeout; 2 usage.",
        after_help = "Examples:\n  vmform vm migrate web\n  vmform vm migrate web -n shop --to local-1\n  vmform vm migrate web --detach && kubectl get vmim -w"
    )]
    Migrate {
        #[command(flatten)]
        vm: VmArgs,
        /// Migrate to this node (its kubernetes.io/hostname label), not the one the controller picks
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
        /// Create the migration and exit without following it
        #[arg(long)]
        detach: bool,
        /// How long to follow the migration before giving up on it (it goes on)
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Cancel a VM's running migration: the guest stays where it is
    #[command(after_help = "Exit codes: 0 cancelled (or it had ended before it could be), 1 no migration of the VM runs (or the cluster cannot be reached), 2 usage.")]
    MigrateCancel {
        #[command(flatten)]
        vm: VmArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Mark a node unschedulable: no new VM is placed on it, the ones it runs stay
    Cordon {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Make a node schedulable again
    Uncordon {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Cordon a node and move every VM off it: live-migrate those that may, stop the others
    #[command(
        long_about = "Cordon a node and move every VM off it, as `kubectl drain` does for a KubeVirt node.\n\n\
Each VirtualMachineInstance on the node is handled by its evictionStrategy: LiveMigrate live-migrates it (and \
leaves it running, reported as not moved, when it cannot migrate); LiveMigrateIfPossible migrates it when it can and \
stops it otherwise; None (or none set) stops it; External leaves it to whoever set that. A stopped VM then does what \
its run strategy says: Always starts it again on another node, Manual and RerunOnFailure keep it stopped. Migrations \
run under the cluster's limits (2 at once out of one node). Prints what happened to each VM.\n\n\
Exit codes: 0 the node is drained (no VM left on it, External ones aside), 1 a VM could not be moved off it, \
--timeout passed, or the cluster cannot be reached; 2 usage.",
        after_help = "Examples:\n  vmform node drain local-0\n  vmform node drain local-0 --timeout 20m && vmform node uncordon local-0"
    )]
    Drain {
        #[command(flatten)]
        node: NodeArgs,
        /// How long to wait for the node to empty
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
}

/// Which node, on which cluster.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's name
    #[arg(value_name = "NODE")]
    pub name: String,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Which VM, on which cluster.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// The VM's name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The VM's namespace [default: the context's namespace, else default]
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vmform show` with no argument shows the project of the current directory.
    #[test]
    fn show_defaults_to_the_current_directory() {
        let cli = Cli::try_parse_from(["vmform", "show"]).expect("PATH is optional");
        assert!(matches!(cli.command, Command::Show { path, project: None, .. } if path == std::path::Path::new(".")));
    }
}
