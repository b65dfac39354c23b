//! Runs the `ferry-bench` binary briefly (two real processes) and checks the
//! shape of its JSON output and of its plot. No timing is asserted: this
//! machine is shared, and only the benchmarks themselves measure.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(args)
        .args(["--quiet", "--warmup", "50"])
        .output()
        .expect("running ferry-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "ferry-bench {args:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn results(path: &PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the JSON file");
    let document: Value = serde_json::from_str(&text).expect("valid JSON");
    document["results"]
        .as_array()
        .expect("a results array")
        .clone()
}

#[test]
fn latency_json_and_plot() {
    let json = scratch("latency.json");
    let plot = scratch("latency.svg");
    let stdout = run(&[
        "latency",
        "--iters",
        "200",
        "--size",
        "64",
        "--transport",
        "ferry,ferry-raw,floor-spin,uds",
        "--max-pressure",
        "100",
        "--attempts",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(stdout.contains("p99.9"), "{stdout}");
    let results = results(&json);
    assert_eq!(results.len(), 4);
    let text = std::fs::read_to_string(&json).unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    let pressures = document["meta"]["cpu_pressure"]
        .as_array()
        .expect("cpu_pressure");
    assert_eq!(pressures.len(), 4, "one CPU pressure per measurement kept");
    for result in &results {
        for field in ["transport", "wait", "trust"] {
            assert!(result[field].is_string(), "{field} in {result}");
        }
        for field in [
            "size", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns", "samples",
        ] {
            assert!(result[field].is_number(), "{field} in {result}");
        }
        assert_eq!(result["size"], 64);
        assert_eq!(result["samples"], 200);
        let p = |f: &str| result[f].as_f64().unwrap();
        assert!(p("p50_ns") <= p("p90_ns") && p("p90_ns") <= p("p99_ns"));
        assert!(p("p99_ns") <= p("p999_ns") && p("p999_ns") <= p("max_ns"));
    }
    let names: Vec<_> = results
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ferry", "ferry-raw", "floor-spin", "uds"]);
    let floor = &results[2];
    assert_eq!(floor["ratio_floor_spin"].as_f64(), Some(1.0));
    // Spin mode: ferry made no futex wake-up.
    assert_eq!(results[0]["wakes_per_msg"].as_f64(), Some(0.0));
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // The CDF (plotters): one legend entry per transport.
    for name in ["ferry", "ferry-raw", "floor-spin", "uds"] {
        assert!(svg.contains(&format!("{name} (p50 ")), "{name} in the CDF");
    }
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&plot);
}

#[test]
fn throughput_json() {
    let json = scratch("throughput.json");
    run(&[
        "throughput",
        "--iters",
        "2000",
        "--size",
        "1K",
        "--transport",
        "ferry,ferry-raw,ferry-ring-batch,floor-futex,pipe",
        "--wait",
        "park",
        "--trust",
        "untrusted",
        "--json",
        json.to_str().unwrap(),
    ]);
    let results = results(&json);
    assert_eq!(results.len(), 5);
    for result in &results {
        assert!(result["transport"].is_string(), "{result}");
        assert_eq!(result["size"], 1024);
        assert_eq!(result["messages"], 2000);
        let rate = result["msgs_per_s"].as_f64().expect("msgs_per_s");
        let bytes = result["bytes_per_s"].as_f64().expect("bytes_per_s");
        assert!(rate > 0.0 && (bytes / rate - 1024.0).abs() < 1e-6);
    }
    assert_eq!(results[0]["wait"], "park");
    assert_eq!(results[0]["trust"], "untrusted");
    assert_eq!(results[4]["wait"], "kernel");
    let _ = std::fs::remove_file(&json);
}

#[test]
fn refuses_bad_input() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(["latency", "--size", "4"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("minimum"));
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(["throughput", "--transport", "ferry-sync"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}
