//! Runs the browser demo as a user would — normal mode, `--crash`
//! (`webcontent` and `network`), `--evil`, and a run that cannot succeed —
//! and checks its exit status and the key lines of its output. A run that hangs is killed with its whole process group (the
//! UI process and every child it spawned).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Far more than a run needs (well under a second in release, a few
/// seconds in a debug build on a busy machine).
const TIMEOUT: Duration = Duration::from_secs(180);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(&self, needle: &str) {
        assert!(
            self.stdout.contains(needle),
            "expected {needle:?} in the output:\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Either `needle` is in the output, or a line starts with `prefix` and
    /// contains `then`.
    fn expect_either(&self, needle: &str, prefix: &str, then: &str) {
        assert!(
            self.stdout.contains(needle)
                || self
                    .stdout
                    .lines()
                    .any(|line| line.starts_with(prefix) && line.contains(then)),
            "expected {needle:?}, or a line {prefix:?}…{then:?}, in the output:\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Whether some output line starts with `prefix`.
    fn expect_line(&self, prefix: &str) {
        assert!(
            self.stdout.lines().any(|line| line.starts_with(prefix)),
            "expected a line starting with {prefix:?}:\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Reads a pipe to its end on a thread of its own.
fn reader(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Runs the demo with `args`, waiting at most [`TIMEOUT`].
fn run(args: &[&str]) -> Run {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_browser"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a hung run can be killed with
        // every process it spawned.
        .process_group(0)
        .spawn()
        .expect("the demo starts");
    let stdout = reader(child.stdout.take().expect("piped stdout"));
    let stderr = reader(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            break status;
        }
        if Instant::now() >= deadline {
            // The UI process is not reaped yet, so the group id is still
            // this run's.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            let output = stdout
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_default();
            panic!("the demo {args:?} did not finish within {TIMEOUT:?}; its output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The UI process reaps its children before it exits, so the pipes
    // close now; a child left behind holding them is a failure too.
    let collect = |pipe: Receiver<String>| {
        pipe.recv_timeout(Duration::from_secs(30))
            .expect("a child of the demo outlived it, holding its output open")
    };
    Run {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

#[test]
fn every_page_loads_and_verifies() {
    let run = run(&[]);
    assert!(
        run.status.success(),
        "exit {:?}:\n{}\n--- stderr ---\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    // Every child reaches the UI process through the broker.
    for child in ["network#1", "gpu#2", "webcontent#3", "webcontent#4"] {
        run.expect(&format!(
            "[ui] broker: introduced {child} to ui#0, the UI process's own service"
        ));
    }
    // Access control in the Network process, by the broker's identity.
    run.expect("[network] REFUSED ferry://gazette/account/inbox.json to webcontent#4: only webcontent#3 may load it");
    run.expect("[ui] webcontent#4   ferry://gazette/account/inbox.json: REFUSED by the Network process (403): 403 Forbidden");
    run.expect("[ui] webcontent#3   ferry://gazette/account/inbox.json: served (200)");
    run.expect("access control: 1 resource restricted to one tab; 1 served, 1 refused");
    run.expect("/account/inbox.json served to webcontent#3 only, refused to 1 other tab");
    run.expect("[ui] broker: introduced webcontent#3 to network#1");
    run.expect("[ui] broker: introduced webcontent#4 to gpu#2");
    run.expect("[ui] broker: policy denied webcontent#3 a connection to webcontent");
    run.expect("[ui] broker: policy denied webcontent#4 a connection to webcontent");
    run.expect("\"Ferry Gazette — Gallery\"");
    for process in [
        "ui (broker)",
        "network#1",
        "gpu#2",
        "webcontent#3",
        "webcontent#4",
    ] {
        run.expect_line(process);
    }
    run.expect("resource loads   p50");
    run.expect("sync GetCookies  p50");
    run.expect("out of line");
    run.expect("commands/s");
    run.expect("shows all 2 visitor cookies");
    // Leaving a page mid-load cancels its loads: the Network process stops
    // streaming what was still in flight and says so; what was already on
    // its way is dropped on arrival, and the connection carries on.
    for web in ["webcontent#3", "webcontent#4"] {
        run.expect_line(&format!(
            "[{web}] navigated away from /news.html mid-load: cancelled "
        ));
        run.expect_line(&format!("[network] {web} cancelled "));
    }
    run.expect("mid-load: stopped streaming ");
    run.expect("/data/archive.json (");
    run.expect("cancelled by their page");
    run.expect("for them dropped on arrival");
    // GetCookies is answered on the cookie store's own thread.
    run.expect("synchronous reads answered by the cookie store's thread");
    run.expect_line("PASS: 10 pages loaded and verified by 2 WebContent processes");
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
}

#[test]
fn a_killed_webcontent_process_leaves_the_others_running() {
    let run = run(&["--crash"]);
    assert!(
        run.status.success(),
        "exit {:?}:\n{}\n--- stderr ---\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    run.expect("[ui] --crash: killing webcontent#4");
    run.expect("[ui] CRASH: webcontent#4 died (signal 9, SIGKILL)");
    run.expect("crashed: killed by SIGKILL");
    run.expect("policy denied webcontent#3 a connection to webcontent");
    // The Network process saw it go and kept serving the other one.
    run.expect_line("network#1");
    run.expect("webcontent#4: ");
    run.expect("[ui] webcontent#3   page 5/5 loaded");
    run.expect_line("PASS: 5 pages loaded and verified by the surviving WebContent process");
    run.expect("webcontent#4 crashed as planned");
}

#[test]
fn crash_webcontent_is_the_plain_crash() {
    let run = run(&["--crash", "webcontent", "--pages", "3"]);
    assert!(
        run.status.success(),
        "exit {:?}:\n{}\n--- stderr ---\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    run.expect("[ui] --crash: killing webcontent#4");
    run.expect_line("PASS: 3 pages loaded and verified by the surviving WebContent process");
}

#[test]
fn a_killed_network_process_is_relaunched_and_every_page_verifies() {
    let run = run(&["--crash", "network"]);
    assert!(
        run.status.success(),
        "exit {:?}:\n{}\n--- stderr ---\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    run.expect("[ui] --crash network: killing network#1");
    run.expect("[ui] CRASH: network#1 died (killed by SIGKILL)");
    run.expect("[ui] RELAUNCH: the broker relaunched network#1 as network#5");
    // The relaunched process reaches the UI process and gets the rule again.
    run.expect("[ui] broker: introduced network#5 to ui#0");
    run.expect("[ui] told network#5: only webcontent#3 (the signed-in tab) may load");
    for web in ["webcontent#3", "webcontent#4"] {
        // A WebContent process that was still starting when the Network
        // process died (a loaded machine) meets only the relaunched one.
        run.expect_either(
            &format!(
                "[{web}] network#1 is gone; reconnected to the relaunched network#5 through the broker"
            ),
            &format!("[{web}] pid "),
            ": connected to network#5 and gpu#2 through the broker",
        );
        run.expect(&format!("[ui] broker: introduced {web} to network#5"));
    }
    run.expect("] reloading what was in flight (");
    run.expect("crashed: killed by SIGKILL during");
    run.expect_line("PASS: 10 pages loaded and verified by 2 WebContent processes; network#1 crashed as planned and was relaunched as network#5, 2 WebContent processes reconnected");
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
}

#[test]
fn an_evil_webcontent_process_is_reported_and_killed() {
    let run = run(&["--evil"]);
    assert!(
        run.status.success(),
        "exit {:?}:\n{}\n--- stderr ---\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    run.expect("[webcontent#5] pid ");
    run.expect("(evil): connected to network#1; sending it 3 frames that are no message");
    run.expect("[network] CUT OFF webcontent#5: it sent a frame that is no message of the schema");
    run.expect("reported it to the broker");
    run.expect("[ui] PUNISH: network#1 reported webcontent#5 to the broker (\"sent a frame that is no message of the schema");
    run.expect("the report policy (the Network process may accuse a WebContent process) terminates it: killed with SIGKILL");
    run.expect("[ui] webcontent#5 (evil) is gone: killed by SIGKILL");
    run.expect("evil: sent garbage, reported by the Network process, killed by SIGKILL");
    run.expect_line("PASS: 10 pages loaded and verified by 2 WebContent processes; webcontent#5 (evil) reported by the Network process and killed");
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
}

#[test]
fn a_run_that_cannot_finish_fails_with_a_reason() {
    // No time at all: the UI process gives up at once, says why, and exits
    // non-zero (after collecting what it can and reaping every child).
    let run = run(&["--timeout", "0"]);
    assert!(!run.status.success(), "{}", run.stdout);
    run.expect("FAIL: ");
    run.expect("timed out after 0 s");
}

#[test]
fn a_child_role_without_a_broker_refuses_to_start() {
    let run = run(&["--role", "network"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("FERRY_BOOTSTRAP_FD"),
        "stderr: {}",
        run.stderr
    );
}
