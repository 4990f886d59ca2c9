//! Compile benchmark: generated fleets of 1,000 and 10,000 VMs over 100 files.
//!
//! Reports wall time, throughput, the time of each stage against KDL parsing, and peak
//! memory against input size. Run: `cargo bench -p vmform-compiler --bench compile`.
//! Figures are recorded in book/src/benchmarks.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmform_compiler::{compile, emit, MemoryLoader, Options};

/// Counts live heap bytes and their peak: the compiler's own memory, free of the
/// allocator's retention that RSS also shows.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Peak live heap while running `f`, above what was live before it.
fn heap_peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

const FILES: usize = 100;
const RUNS: usize = 5;
// BENCH_VMS=1000,10000 picks the fleet sizes; BENCH_EXPLICIT=1 writes every VM out in
// full instead of expanding a template; BENCH_LOAD_PEAK=1 measures loading alone
// (and nothing else, so each measurement starts from a fresh process).


/// A realistic fleet: shared definitions in one file, VMs spread over the rest. With
/// `explicit`, every VM spells out what the template and instancetype would give it, so
/// the output is about as large as the input (no expansion).
fn fleet(vms: usize, explicit: bool) -> MemoryLoader {
    let mut files = MemoryLoader::new();
    let common = r##"param "env" default="staging"
defaults {
    namespace "fleet-${env}"
    labels team="platform" env="${env}"
    run-strategy "always"
}
instancetype "small" {
    cpu 2
    memory "4Gi"
}
template "linux" {
    machine "q35"
    firmware "bios"
    disk "root" {
        image "quay.io/containerdisks/fedora:41"
        bus "virtio"
        boot-order 1
    }
    network "default" masquerade=#true
    cloud-init {
        user-data "#cloud-config\npackages: [nginx]\n"
    }
}
"##;
    files = files.with("fleet/common.kdl", common);
    let per_file = vms / (FILES - 1) + 1;
    let mut made = 0;
    for f in 1..FILES {
        let mut s = String::new();
        for i in 0..per_file {
            if made == vms {
                break;
            }
            made += 1;
            s.push_str(&format!(
                r#"// service {f}-{i}
vm "svc-{f}-{i}"{header} {{
{inline}    labels app="svc-{f}" tier="backend"
    annotations "fleet.example/owner"="team-{f}" "fleet.example/ticket"="OPS-{i}"
    port "http" 8080
    port "metrics" 9100
    disk "data" {{
        volume size="{size}Gi" storage-class="fast-ssd" access-mode="ReadWriteMany"
    }}
    node-selector zone="zone-{zone}"
    eviction "live-migrate"
    termination-grace "60s"
}}
"#,
                header = if explicit { "" } else { " template=\"linux\" instancetype=\"small\"" },
                inline = if explicit { INLINE } else { "" },
                size = 10 + i % 90,
                zone = f % 3
            ));
        }
        files = files.with(format!("fleet/svc-{f:03}.kdl"), s);
    }
    files
}

/// What `template "linux"` and `instancetype "small"` give a VM, written out.
const INLINE: &str = r##"    cpu 2
    memory "4Gi"
    machine "q35"
    firmware "bios"
    disk "root" {
        image "quay.io/containerdisks/fedora:41"
        bus "virtio"
        boot-order 1
    }
    network "default" masquerade=#true
    cloud-init {
        user-data "#cloud-config\npackages: [nginx]\n"
    }
"##;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    println!("machine: {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()));
    let sizes: Vec<usize> = std::env::var("BENCH_VMS").map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect()).unwrap_or_else(|_| vec![1_000, 10_000]);
    let explicit = std::env::var_os("BENCH_EXPLICIT").is_some();
    println!("fleet: {}", if explicit { "explicit (every VM written out)" } else { "template-expanded" });
    for vms in sizes {
        let loader = fleet(vms, explicit);
        let input: usize = loader.size();
        let paths = [PathBuf::from("fleet")];
        if std::env::var_os("BENCH_LOAD_PEAK").is_some() {
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let before = rss_kib("VmRSS:");
            let mut d = vmform_compiler::Diagnostics::default();
            let (loaded, heap) = heap_peak(|| vmform_compiler::load::load(&loader, &paths, &mut d));
            println!("  heap peak of loading alone: {:.1} MB = {:.1}x input", heap as f64 / 1e6, heap as f64 / input as f64);
            let input_mb = input as f64 / 1e6;
            let peak = (rss_kib("VmHWM:") - before) as f64 / 1024.0;
            println!("{vms} VMs, {input_mb:.1} MB: loading alone (read, parse, decode) peaks {peak:.1} MB above baseline = {:.1}x input", peak / input_mb);
            drop(loaded);
            // Measured alone: memory freed here would hide the compile's own peak.
            continue;
        }
        let mut best: Option<(Duration, vmform_compiler::Timings, Duration)> = None;
        let mut peak_delta = 0;
        let mut peak_compile = 0;
        let mut heap_peak_bytes = 0;
        let mut held_after = 0;
        for _ in 0..RUNS {
            // Reset the high-water mark so each run's peak is its own (Linux ≥ 4.0).
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let before = rss_kib("VmRSS:");
            let started = Instant::now();
            let live_before = LIVE.load(Ordering::Relaxed);
            let (c, heap) = heap_peak(|| compile(&loader, &paths, &Options::default()));
            held_after = LIVE.load(Ordering::Relaxed) - live_before;
            heap_peak_bytes = heap_peak_bytes.max(heap);
            let compiled = started.elapsed();
            peak_compile = peak_compile.max(rss_kib("VmHWM:").saturating_sub(before));
            assert!(!c.has_errors(), "the generated fleet compiles");
            assert_eq!(c.objects.len(), vms);
            let started = Instant::now();
            let yaml = emit::to_yaml(c.objects.iter().map(|o| &o.object));
            let emitted = started.elapsed();
            std::hint::black_box(&yaml);
            peak_delta = peak_delta.max(rss_kib("VmHWM:").saturating_sub(before));
            if best.as_ref().is_none_or(|b| compiled < b.0) {
                best = Some((compiled, c.timings, emitted));
            }
        }
        let (wall, t, emitted) = best.unwrap();
        let after_parse = t.decode_cpu + t.resolve + t.validate + t.lower;
        let mb = input as f64 / 1e6;
        println!("\n{vms} VMs in {FILES} files, {:.1} MB of KDL", mb);
        println!("  compile wall (best of {RUNS}): {:.1} ms = {:.1} MB/s", ms(wall), mb / wall.as_secs_f64());
        println!("  load wall {:.1} ms; KDL parse CPU {:.1} ms; decode CPU {:.1} ms", ms(t.load_wall), ms(t.parse_cpu), ms(t.decode_cpu));
        println!("  resolve {:.1} ms; validate {:.1} ms; lower {:.1} ms; emit YAML {:.1} ms", ms(t.resolve), ms(t.validate), ms(t.lower), ms(emitted));
        println!(
            "  stages after parsing (decode+resolve+validate+lower): {:.1} ms = {:.0}% of parse time (target < 25%)",
            ms(after_parse),
            100.0 * after_parse.as_secs_f64() / t.parse_cpu.as_secs_f64()
        );
        println!("  parallel parse: {:.2}x (parse+decode CPU / load wall)", (t.parse_cpu + t.decode_cpu).as_secs_f64() / t.load_wall.as_secs_f64());
        println!(
            "  peak heap of compile (live bytes allocated): {:.1} MB = {:.1}x input (target < 10x)",
            heap_peak_bytes as f64 / 1e6,
            heap_peak_bytes as f64 / input as f64
        );
        println!("  heap held by the result (objects and sources): {:.1} MB = {:.1}x input", held_after as f64 / 1e6, held_after as f64 / input as f64);
        println!(
            "  peak RSS above baseline, compile: {:.1} MB = {:.1}x input",
            peak_compile as f64 / 1024.0,
            (peak_compile * 1024) as f64 / input as f64
        );
        println!(
            "  peak RSS above baseline, compile + YAML text: {:.1} MB = {:.1}x input",
            peak_delta as f64 / 1024.0,
            (peak_delta * 1024) as f64 / input as f64
        );
    }
}
