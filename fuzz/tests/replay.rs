//! Replays the committed seeds and every regression input through the
//! harnesses, on stable, without libFuzzer: `cargo test` in fuzz/.
//! Regressions live in `regressions/<target>/` (crash inputs that were fixed,
//! kept so they stay fixed).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    // One target at a time: `dispatch` counts the process's descriptors
    // before and after each input, which another target's would disturb.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            run(&bytes);
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn frame_header() {
    replay("frame_header", ferry_fuzz::frame_header::run);
}

#[test]
fn message() {
    replay("message", ferry_fuzz::message::run);
}

#[test]
fn control() {
    replay("control", ferry_fuzz::control::run);
}

#[test]
fn ring_consumer() {
    replay("ring_consumer", ferry_fuzz::ring_consumer::run);
}

#[test]
fn dispatch() {
    replay("dispatch", ferry_fuzz::dispatch::run);
}
