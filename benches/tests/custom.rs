//! Runs the `own_protocol` example — a protocol declared outside
//! ferry-bench, benchmarked through its library API — closed and open loop,
//! and checks what it reports.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The example's binary, next to the tool's; built if this test runs
/// alone (`cargo test --test custom` builds no example).
fn example() -> PathBuf {
    let tool = PathBuf::from(env!("CARGO_BIN_EXE_ferry-bench"));
    let path = tool
        .parent()
        .expect("the binaries' directory")
        .join("examples")
        .join("own_protocol");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "ferry-bench", "--example", "own_protocol"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo");
        assert!(status.success(), "building the example");
    }
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-bench-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(name: &str, args: &[&str]) -> Value {
    let json = scratch(&format!("{name}.json"));
    let output = Command::new(example())
        .args(args)
        .args(["--warmup", "20", "--json", json.to_str().unwrap()])
        .output()
        .expect("running the example");
    assert!(
        output.status.success(),
        "own_protocol {args:?} failed: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("place-order (ferry)"), "{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("valid JSON")
}

#[test]
fn a_users_protocol_is_measured_closed_and_open_loop() {
    let closed = run("closed", &["--iters", "300"]);
    let results = closed["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let row = &results[0];
    // Every reply passed the workload's own check (id and acceptance),
    // in order, or the run would have failed.
    assert_eq!(row["samples"], 300);
    assert_eq!(row["workload"], "place-order");
    assert_eq!(row["size"], 96);
    assert!(row["p50_ns"].as_f64().unwrap() <= row["p99_ns"].as_f64().unwrap());
    assert_eq!(closed["meta"]["workload"], "place-order");

    let plot = scratch("orders.svg");
    let open = run(
        "open",
        &[
            "--iters",
            "200",
            "--rate",
            "2k,1000M",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    let results = open["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for row in results {
        let intended = row["intended_rate"].as_f64().unwrap();
        let achieved = row["achieved_rate"].as_f64().unwrap();
        assert!(
            achieved > 0.0 && achieved <= intended * 200.0 / 199.0,
            "{row}"
        );
        assert_eq!(
            row["completed"].as_u64().unwrap() + row["unsent"].as_u64().unwrap(),
            200
        );
    }
    // Far beyond what the handler sustains: queueing shows.
    let overloaded = &results[1];
    assert!(overloaded["achieved_rate"].as_f64().unwrap() < 1e9 / 2.0);
    let timeline: Vec<f64> = overloaded["timeline_p50_ns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        timeline.len() >= 2 && timeline[timeline.len() - 1] > timeline[0],
        "{timeline:?}"
    );
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    assert!(svg.contains("place-order (ferry) p50"));
}

#[test]
fn a_bad_command_line_fails_cleanly() {
    let output = Command::new(example())
        .args(["--rate", "soon"])
        .output()
        .expect("running the example");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad rate"));
}
