//! The dispatch harness runs millions of times in one process: it must not
//! leak descriptors (nor must the connection code under it). Its own test
//! binary, so no other test opens descriptors meanwhile.

use std::path::Path;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
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
    assert_eq!(open_fds(), before, "descriptors leaked");
}
