//! Helper processes: a test re-executes its own binary as its peer, the way
//! ipc-channel's tests do, and holds it in a [`ChildGuard`].
//!
//! [`ReExec::command`] builds `current_exe() --exact <child test>
//! --nocapture --test-threads=1`, with an environment variable naming the
//! role the child plays and one variable per parameter. The child test
//! function returns at once when [`ReExec::role`] is `None`, so in a normal
//! run it is a no-op that passes. A child reports failure through its exit
//! status (a panic makes libtest exit 101) and its stderr, which it shares
//! with the parent.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long any single blocking operation may take before a test calls it
/// a hang. Generous: the machine is shared, and this only bounds bugs.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for a child to exit once it should.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a test binary re-executes itself as a helper process: the names of
/// the environment variables that carry the child's role and parameters.
#[derive(Debug, Clone, Copy)]
pub struct ReExec {
    role_env: &'static str,
    param_prefix: &'static str,
}

impl ReExec {
    /// Roles in the variable `role_env`; parameter `NAME` in
    /// `{param_prefix}NAME`.
    pub const fn new(role_env: &'static str, param_prefix: &'static str) -> ReExec {
        ReExec {
            role_env,
            param_prefix,
        }
    }

    /// The variable naming the child's role.
    pub fn role_env(&self) -> &'static str {
        self.role_env
    }

    /// The command that re-executes this test binary to run `child_test`
    /// (a test function's name, matched exactly) in `role`, with `params`.
    /// Its stdin and stdout (libtest's chatter) are null; its stderr is the
    /// parent's. It dies with SIGKILL if the thread that spawned it ends
    /// first. More `pre_exec` hooks may be added; they run after this one.
    pub fn command(&self, child_test: &str, role: &str, params: &[(&str, String)]) -> Command {
        let mut cmd = self.command_outliving_parent(child_test, role, params);
        let die_with_parent = || -> std::io::Result<()> {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        };
        // SAFETY: runs between fork and exec, where only async-signal-safe
        // work is allowed: one prctl(PR_SET_PDEATHSIG) system call through
        // rustix's raw-syscall backend, no allocation, no lock.
        unsafe { cmd.pre_exec(die_with_parent) };
        cmd
    }

    /// Like [`command`](Self::command), but the child does not die with
    /// its parent: for tests of what a child does when its parent dies.
    /// Such a child must bound its own life (and its test should hold it
    /// through something that ends, e.g. a pipe it writes to).
    pub fn command_outliving_parent(
        &self,
        child_test: &str,
        role: &str,
        params: &[(&str, String)],
    ) -> Command {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env(self.role_env, role)
            .stdin(Stdio::null())
            // libtest's own chatter; the child's panics go to the shared stderr.
            .stdout(Stdio::null());
        for (key, value) in params {
            cmd.env(format!("{}{key}", self.param_prefix), value);
        }
        cmd
    }

    /// The role this process was started in, or `None` in a normal test run.
    pub fn role(&self) -> Option<String> {
        std::env::var(self.role_env).ok()
    }

    /// A parameter the parent passed to this child; panics if it is missing
    /// or does not parse.
    pub fn param<T: FromStr>(&self, name: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        let raw = std::env::var(format!("{}{name}", self.param_prefix))
            .unwrap_or_else(|_| panic!("parameter {name} missing"));
        raw.parse()
            .unwrap_or_else(|e| panic!("parameter {name}={raw}: {e:?}"))
    }
}

/// A helper process. Dropping it kills (SIGKILL) and reaps the process if
/// it still runs, so a failing test leaves no process behind; every wait
/// for it is bounded.
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
    label: String,
}

impl ChildGuard {
    /// Guards `child`, which plays `role` (named in messages).
    pub fn new(child: Child, role: &str) -> ChildGuard {
        let pid = child.id();
        ChildGuard {
            child: Some(child),
            pid,
            label: format!("helper process {pid} ({role})"),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// How messages name the child: `helper process <pid> (<role>)`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends SIGKILL (if the child has not been reaped yet).
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill().expect("kill(SIGKILL)");
        }
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().expect("waitpid")?;
        self.child = None;
        Some(status)
    }

    /// Waits (waitpid) for the child to exit, for at most `limit`; on
    /// timeout kills it and panics.
    pub fn wait_timeout(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(self.child.is_some(), "{} was already reaped", self.label);
            if Instant::now() >= deadline {
                self.kill();
                panic!("{} still running after {limit:?}: killed", self.label);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits (at most [`EXIT_TIMEOUT`]) for the child to exit and requires
    /// success.
    pub fn expect_success(mut self) {
        let status = self.wait_timeout(EXIT_TIMEOUT);
        assert!(
            status.success(),
            "{} failed ({status}); its stderr is above",
            self.label
        );
    }

    /// Kills the child and reaps it.
    pub fn kill_and_reap(mut self) -> ExitStatus {
        self.kill();
        self.wait_timeout(EXIT_TIMEOUT)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
