//! The dispatch harness runs millions of times in one process: it must not
//! leak descriptors (nor must the connection code under it). Its own test
//! binary, so no other test opens descriptors meanwhile.

use std::path::Path;

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            Some(format!("{} -> {}", path.display(), target.display()))
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn dispatch_seeds_leak_no_descriptor() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/dispatch");
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty());
    // Warm up: the hang-up watcher's epoll thread and descriptor are made once.
    for input in &inputs {
        ferry_fuzz::dispatch::run(input);
    }
    let before = open_fds();
    for _ in 0..3 {
        for input in &inputs {
            ferry_fuzz::dispatch::run(input);
        }
    }
    // The hang-up watcher's thread may drop a closed connection's callback
    // (which holds a descriptor) a moment later: give it time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut after = open_fds();
    while after.len() > before.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        after = open_fds();
    }
    assert_eq!(
        after.len(),
        before.len(),
        "descriptors leaked: {after:#?} (before: {before:#?})"
    );
}
