//! Delta updates: sizes, and the time and peak memory to make a delta (controller) and to apply
//! and verify it (the agent's code path: `verify_delta_artifact`, the capped decoder with the
//! base as reference prefix), for:
//! - the committed fixtures `delta_base` → `delta_tuned` (last layer changed) and →
//!   `delta_retrained` (every weight changed, the control);
//! - Magika (`tests/testdata/magika.onnx`) → Magika with the weights of its last MatMul changed;
//! - a 100 MB model made here (one 25M-float backbone and a 256K-float head) → the same with
//!   only the head changed.
//!
//! Each make and apply runs in a child process of this binary, so its peak RSS (`VmHWM`) is its
//! own. Run: `cargo bench -p edgefleet-controller --bench delta` (release build).
#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use edgefleet_shared::compress::{DEFAULT_LEVEL, DELTA_LEVEL, compress, delta_compress};
use edgefleet_shared::deployment::{ArtifactDelta, DeployedArtifact};
use edgefleet_shared::verify::{sha256_hex, verify_delta_artifact};
use prost::Message as _;
use tract_onnx::pb::{ModelProto, TensorProto, tensor_proto};

const CHILD: &str = "EDGEFLEET_DELTA_BENCH_CHILD";

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Child: `make BASE TARGET OUT` or `apply BASE DELTA TARGET`; prints `ms=… peak_kib=…`.
fn child(args: &[String]) {
    let read = |p: &String| std::fs::read(p).expect("read");
    let started = Instant::now();
    match args[0].as_str() {
        "make" => {
            let delta = delta_compress(&read(&args[1]), &read(&args[2]), DELTA_LEVEL).expect("delta");
            std::fs::write(&args[3], delta).expect("write");
        }
        "apply" => {
            let (base, target) = (read(&args[1]), std::fs::metadata(&args[3]).expect("target").len());
            let delta = std::fs::File::open(&args[2]).expect("delta");
            let delta_len = delta.metadata().expect("meta").len();
            let artifact = DeployedArtifact {
                name: "model.onnx".into(),
                sha256: sha256_hex(&read(&args[3])),
                size: target,
                compressed_sha256: String::new(),
                compressed_size: 0,
                delta: Some(ArtifactDelta {
                    base_sha256: sha256_hex(&base),
                    sha256: sha256_hex(&read(&args[2])),
                    size: delta_len,
                }),
            };
            // The target's digest was computed above, before the clock matters; reset it.
            let started = Instant::now();
            let out = std::io::BufWriter::new(std::fs::File::create(format!("{}.out", args[2])).expect("out"));
            verify_delta_artifact(&artifact, &base, std::io::BufReader::new(delta), out).expect("verifies");
            println!("ms={} peak_kib={}", started.elapsed().as_millis(), peak_rss_kib());
            return;
        }
        other => panic!("unknown child mode {other}"),
    }
    println!("ms={} peak_kib={}", started.elapsed().as_millis(), peak_rss_kib());
}

fn run_child(args: &[&str]) -> String {
    let out = Command::new(std::env::current_exe().expect("exe")).env(CHILD, "1").args(args).output().expect("child");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Floats like trained weights (xorshift, roughly normal around 0).
fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            let mut sum = 0.0;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                sum += (x >> 40) as f32 / (1u64 << 24) as f32;
            }
            (sum - 2.0) * 0.35
        })
        .collect()
}

fn initializer(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A model of two initializers: a 25M-float backbone and a 256K-float head (~101 MB).
fn big_model(head_seed: u64) -> Vec<u8> {
    let graph = tract_onnx::pb::GraphProto {
        name: "big".into(),
        initializer: vec![
            initializer("backbone", &[5000, 5000], &weights(7, 25_000_000)),
            initializer("head", &[1000, 256], &weights(head_seed, 256_000)),
        ],
        ..Default::default()
    };
    ModelProto { ir_version: 8, graph: Some(graph), ..Default::default() }.encode_to_vec()
}

/// Magika with the weights of its last MatMul (the classifier head) changed.
fn magika_with_a_new_head(bytes: &[u8]) -> Vec<u8> {
    let mut model = ModelProto::decode(bytes).expect("magika decodes");
    let graph = model.graph.as_mut().expect("graph");
    let names: Vec<String> = graph.initializer.iter().map(|i| i.name.clone()).collect();
    let head = graph
        .node
        .iter()
        .rev()
        .filter(|n| n.op_type == "MatMul" || n.op_type == "Gemm")
        .find_map(|n| n.input.iter().find(|i| names.contains(i)).cloned())
        .expect("a MatMul with a weight initializer");
    let init = graph.initializer.iter_mut().find(|i| i.name == head).expect("head initializer");
    let floats: Vec<f32> = if init.raw_data.is_empty() {
        init.float_data.clone()
    } else {
        init.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    let noise = weights(99, floats.len());
    let tuned: Vec<f32> = floats.iter().zip(noise).map(|(w, n)| w + 0.1 * n).collect();
    init.float_data.clear();
    init.raw_data = tuned.iter().flat_map(|v| v.to_le_bytes()).collect();
    eprintln!("magika: head {head:?}, {} weights changed", tuned.len());
    model.encode_to_vec()
}

fn measure(label: &str, dir: &Path, base: &[u8], target: &[u8]) {
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let (base_path, target_path, delta_path) =
        (write("base", base), write("target", target), dir.join("delta").display().to_string());
    let full = compress(target, DEFAULT_LEVEL).expect("full").len();
    let (b, t) = (base_path.display().to_string(), target_path.display().to_string());
    let made = run_child(&["make", &b, &t, &delta_path]);
    let delta = std::fs::metadata(&delta_path).expect("delta").len();
    let applied = run_child(&["apply", &b, &delta_path, &t]);
    println!(
        "delta {label:<34} model={:>11} B full_zstd={:>11} B delta={:>10} B ({:>5.1}%)  make: {made}  apply+verify: {applied}",
        target.len(),
        full,
        delta,
        100.0 * delta as f64 / full as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if std::env::var_os(CHILD).is_some() {
        return child(&args);
    }
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata");
    let read = |name: &str| std::fs::read(testdata.join(name)).expect("fixture (tests/fixtures/make_fixtures.py)");
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "delta: zstd level {DELTA_LEVEL} with the base as reference prefix and long-distance matching; full: level {DEFAULT_LEVEL}"
    );
    let base = read("delta_base.onnx");
    measure("mlp, last layer changed", dir.path(), &base, &read("delta_tuned.onnx"));
    measure("mlp, retrained (control)", dir.path(), &base, &read("delta_retrained.onnx"));
    let magika = read("magika.onnx");
    measure("magika, last MatMul changed", dir.path(), &magika, &magika_with_a_new_head(&magika));
    measure("101 MB model, 1% head changed", dir.path(), &big_model(1), &big_model(2));
}
