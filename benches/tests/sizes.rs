//! Runs the `ferry-bench` binary with `--sizes-from`: round trips of sizes
//! drawn from a file, closed and open loop, over every transport; and a
//! malformed file refused with a clear error and a failing exit status.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-bench-sizes-{}", std::process::id()));
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

fn succeed(name: &str, args: &[&str]) -> Vec<Value> {
    let json = scratch(&format!("{name}.json"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", json.to_str().unwrap()]);
    let output = bench(&all);
    assert!(
        output.status.success(),
        "ferry-bench {all:?} failed: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("valid JSON");
    assert_eq!(document["meta"]["sizes_from"]["max"], 4096);
    document["results"].as_array().expect("results").clone()
}

fn distribution() -> PathBuf {
    let path = scratch("sizes.txt");
    std::fs::write(
        &path,
        "# a histogram and plain sizes mixed\n24 40\n100 30\n1K 20\n4K\n4K 9\n",
    )
    .unwrap();
    path
}

#[test]
fn drawn_sizes_travel_over_every_transport() {
    let path = distribution();
    let results = succeed(
        "closed",
        &[
            "latency",
            "--transport",
            "floor-spin,floor-futex,uds,pipe,ferry,ferry-sync,ferry-raw,ferry-ring",
            "--sizes-from",
            path.to_str().unwrap(),
            "--iters",
            "200",
        ],
    );
    assert_eq!(results.len(), 8);
    for result in &results {
        // Each round trip's reply was checked (size, length word, stamps)
        // by the tool: a run that completes moved every drawn size.
        assert_eq!(result["samples"], 200, "{result}");
        let sizes = &result["sizes_from"];
        assert_eq!(sizes["distinct"], 4);
        assert_eq!(sizes["min"], 24);
        assert_eq!(sizes["max"], 4096);
        assert_eq!(sizes["messages_in_file"], 100);
        assert!(sizes["file"].as_str().unwrap().ends_with("sizes.txt"));
        assert_eq!(result["size"], 4096, "the largest size keys the row");
    }
}

#[test]
fn drawn_sizes_run_open_loop() {
    let path = distribution();
    let results = succeed(
        "open",
        &[
            "latency",
            "--transport",
            "floor-spin,uds,ferry,ferry-sync",
            "--sizes-from",
            path.to_str().unwrap(),
            "--seed",
            "7",
            "--rate",
            "4k",
            "--iters",
            "100",
        ],
    );
    assert_eq!(results.len(), 4);
    for result in &results {
        assert_eq!(result["completed"], 100, "{result}");
        assert_eq!(result["sizes_from"]["seed"], 7);
    }
}

#[test]
fn a_malformed_distribution_is_refused_clearly() {
    for (text, needle) in [
        ("64\n1K 3\nlots 2\n", "line 3: bad size \"lots\""),
        ("64 many\n", "line 1: bad count \"many\""),
        ("16\n", "line 1: size 16 is outside"),
        ("# only a comment\n", "lists no size"),
    ] {
        let path = scratch("bad.txt");
        std::fs::write(&path, text).unwrap();
        let output = bench(&["latency", "--sizes-from", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text:?} was accepted");
        assert!(
            stderr.contains("--sizes-from") && stderr.contains(needle),
            "{text:?}: {stderr}"
        );
    }
    let output = bench(&["latency", "--sizes-from", "/nonexistent/sizes.txt"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/sizes.txt"));
    let output = bench(&["throughput", "--sizes-from", "/nonexistent/sizes.txt"]);
    assert!(!output.status.success(), "round trips only");
}
