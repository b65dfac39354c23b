//! Runs the `ferry-bench` binary briefly in open loop (`--rate`), with a
//! background stream, and checks the accounting its JSON reports: the
//! achieved rate never beats the schedule, latencies count from the
//! intended send time, and a rate no transport sustains shows latencies
//! growing through the run. No absolute timing is asserted.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-bench-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(args)
        .args(["--quiet", "--warmup", "20"])
        .output()
        .expect("running ferry-bench")
}

fn run(args: &[&str]) -> String {
    let output = bench(args);
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
    document["results"].as_array().expect("results").clone()
}

fn number(result: &Value, field: &str) -> f64 {
    result[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {result}"))
}

#[test]
fn a_sustainable_rate_is_kept_and_accounted_from_the_intended_time() {
    let json = scratch("sustainable.json");
    let plot = scratch("sweep.svg");
    let cdf = scratch("cdf.svg");
    let stdout = run(&[
        "latency",
        "--transport",
        "floor-spin,uds,ferry,ferry-sync",
        "--size",
        "64",
        "--rate",
        "2k,5k",
        "--iters",
        "100",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--cdf",
        cdf.to_str().unwrap(),
    ]);
    assert!(stdout.contains("achieved"), "{stdout}");
    let results = results(&json);
    assert_eq!(results.len(), 8, "4 transports at 2 rates");
    check_open_loop_accounting(&results, 100);
    let sweep = std::fs::read_to_string(&plot).expect("the sweep plot");
    assert!(sweep.starts_with("<svg") && sweep.trim_end().ends_with("</svg>"));
    assert!(sweep.contains("intended rate"));
    for name in ["floor-spin p50", "uds p99 (dashed)", "ferry p50"] {
        assert!(sweep.contains(name), "{name} in the sweep plot");
    }
    let cdf = std::fs::read_to_string(&cdf).expect("the CDF plot");
    assert!(
        cdf.contains("ferry @ 5.0K/s"),
        "a CDF per transport and rate"
    );
}

/// What every open-loop row must show after a run of `n` requests at a
/// rate the transport sustains.
fn check_open_loop_accounting(results: &[Value], n: u64) {
    for result in results {
        let intended = number(result, "intended_rate");
        assert_eq!(result["rate"].as_f64(), Some(intended));
        assert_eq!(result["scheduled"], n);
        assert_eq!(result["completed"], n);
        assert_eq!(result["unsent"], 0);
        assert_eq!(result["samples"], n);
        // The last of n replies comes after the last request was due, at
        // (n - 1) / rate: the achieved rate cannot beat n / (n - 1) × rate.
        let achieved = number(result, "achieved_rate");
        assert!(
            achieved > 0.0 && achieved <= intended * n as f64 / (n - 1) as f64 + 1e-6,
            "achieved {achieved} at {intended}: {result}"
        );
        // Counted from the intended send time, each latency is at least
        // the one from the actual send.
        let from_send = &result["from_send_runs"][0];
        for p in ["p50_ns", "p99_ns", "max_ns"] {
            assert!(number(result, p) >= number(from_send, p), "{p}: {result}");
        }
        let window = result["in_flight_limit"].as_u64().unwrap();
        if result["transport"] == "ferry-sync" {
            assert_eq!(window, 1, "a synchronous call cannot pipeline");
        } else {
            assert!(window > 1, "{result}");
        }
        assert_eq!(result["timeline_p50_ns"].as_array().unwrap().len(), 10);
        let percentiles = result["percentiles_ns"].as_object().expect("percentiles");
        assert!(percentiles.len() >= 10);
        assert!(percentiles["0"].as_f64() <= percentiles["99.9"].as_f64());
    }
}

#[test]
fn every_transport_runs_open_loop() {
    let json = scratch("every.json");
    run(&[
        "latency",
        "--transport",
        "floor-futex,pipe,ferry-raw,ferry-ring",
        "--size",
        "1K",
        "--rate",
        "5k",
        "--iters",
        "50",
        "--trust",
        "untrusted",
        "--wait",
        "park",
        "--json",
        json.to_str().unwrap(),
    ]);
    let results = results(&json);
    assert_eq!(results.len(), 4);
    check_open_loop_accounting(&results, 50);
}

#[test]
fn an_unsustainable_rate_shows_latencies_growing_through_the_run() {
    let json = scratch("overload.json");
    run(&[
        "latency",
        "--transport",
        "floor-spin,uds,ferry,ferry-sync",
        "--size",
        "64",
        "--rate",
        "1000M",
        "--iters",
        "1000",
        "--json",
        json.to_str().unwrap(),
    ]);
    let results = results(&json);
    assert_eq!(results.len(), 4);
    for result in &results {
        let intended = number(result, "intended_rate");
        let achieved = number(result, "achieved_rate");
        assert!(achieved < intended / 2.0, "{result}");
        // A count of requests is sent whole, however late.
        assert_eq!(result["completed"], 1000, "{result}");
        assert_eq!(result["unsent"], 0);
        // All 1000 requests were due within 1 µs: each waits for those
        // before it, so the last tenth waits longer than the first.
        let timeline: Vec<f64> = result["timeline_p50_ns"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert!(timeline.len() >= 2, "{result}");
        assert!(
            timeline[timeline.len() - 1] > timeline[0],
            "latency did not grow: {timeline:?}"
        );
        // The queue is in the sender: measured from the actual send, the
        // latencies stay far below those from the intended time.
        let from_send = &result["from_send_runs"][0];
        assert!(
            number(result, "p99_ns") > number(from_send, "p99_ns"),
            "{result}"
        );
    }
}

#[test]
fn a_timed_run_gives_up_sending_and_says_so() {
    let json = scratch("give-up.json");
    run(&[
        "latency",
        "--transport",
        "uds",
        "--size",
        "64",
        "--rate",
        "1000M",
        "--seconds",
        "0.001",
        "--json",
        json.to_str().unwrap(),
    ]);
    let results = results(&json);
    let result = &results[0];
    // A million requests due within a millisecond: sending stops a second
    // after the schedule's end, and what was not sent is counted.
    assert_eq!(result["scheduled"], 1_000_000);
    let completed = result["completed"].as_u64().unwrap();
    let unsent = result["unsent"].as_u64().unwrap();
    assert!(completed > 0 && unsent > 0, "{result}");
    assert_eq!(completed + unsent, 1_000_000);
    assert_eq!(result["samples"].as_u64(), Some(completed));
}

#[test]
fn a_background_stream_runs_beside_the_round_trips() {
    let json = scratch("background.json");
    let stdout = run(&[
        "latency",
        "--transport",
        "floor-futex,uds,ferry-sync,ferry-raw",
        "--size",
        "64",
        "--iters",
        "300",
        "--background-stream",
        "1K",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(stdout.contains("background stream beside"), "{stdout}");
    let rows = results(&json);
    assert_eq!(rows.len(), 4);
    for result in &rows {
        assert_eq!(result["samples"], 300);
        let background = &result["background"];
        assert_eq!(background["size"], 1024, "{result}");
        assert!(number(background, "msgs_per_s") > 0.0, "{result}");
        let runs = background["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        assert!(runs[0]["messages"].as_u64().unwrap() > 0);
    }
    // ferry-sync cannot stream: its background stream is ferry's.
    assert_eq!(rows[2]["background"]["transport"], "ferry");
    assert_eq!(rows[1]["background"]["transport"], "uds");
    // Open loop and a background stream together.
    let json = scratch("background-open.json");
    run(&[
        "latency",
        "--transport",
        "pipe,ferry",
        "--size",
        "64",
        "--rate",
        "3k",
        "--iters",
        "100",
        "--background-stream",
        "64",
        "--json",
        json.to_str().unwrap(),
    ]);
    for result in &results(&json) {
        assert_eq!(result["completed"], 100);
        assert!(number(&result["background"], "msgs_per_s") > 0.0);
    }
}

#[test]
fn open_loop_options_refuse_bad_input() {
    let output = bench(&["latency", "--rate", "fast", "--iters", "10"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad rate"));
    let output = bench(&["throughput", "--rate", "10k", "--iters", "10"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rate"));
    let output = bench(&["throughput", "--background-stream", "1K", "--iters", "10"]);
    assert!(!output.status.success());
}
