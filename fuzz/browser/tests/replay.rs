//! Replays the committed seeds and regression inputs of every target on
//! stable (`cargo test`), so a seed that finds something fails here too.

use std::path::Path;

/// The checkers count the process's descriptors: no other test may open
/// files (read its inputs) meanwhile.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn replay(target: &str, run: impl Fn(&[u8])) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut inputs = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(Path::new(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            inputs.push(std::fs::read(&path).expect("read an input"));
        }
    }
    assert!(!inputs.is_empty(), "no seeds for {target}");
    for input in inputs {
        run(&input);
    }
}

#[test]
fn decode() {
    replay("decode", |data| {
        let decoded =
            ferry_transport::fuzzing::decode::check::<ferry_fuzz_browser::AllProtocols>(data);
        assert_eq!(
            decoded,
            Ok(ferry_transport::fuzzing::decode::Decoded::Accepted)
        );
    });
}

#[test]
fn network_dispatch() {
    let target = ferry_fuzz_browser::network();
    replay("network_dispatch", |data| {
        target.dispatch(data).unwrap_or_else(|f| panic!("{f}"));
    });
}

#[test]
fn network_session() {
    let target = ferry_fuzz_browser::network();
    replay("network_session", |data| {
        let report = target.session(data).unwrap_or_else(|f| panic!("{f}"));
        assert!(report.handled > 0, "{report:?}");
    });
}

#[test]
fn gpu_session() {
    let target = ferry_fuzz_browser::gpu();
    replay("gpu_session", |data| {
        let report = target.session(data).unwrap_or_else(|f| panic!("{f}"));
        assert!(report.handled > 0, "{report:?}");
    });
}

#[test]
fn webcontent_session() {
    let target = ferry_fuzz_browser::web_content();
    replay("webcontent_session", |data| {
        let report = target.session(data).unwrap_or_else(|f| panic!("{f}"));
        assert!(report.handled > 0, "{report:?}");
    });
}
