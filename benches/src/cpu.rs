//! Pinning the two processes to their cores.

/// CPUs this process may run on.
pub fn allowed() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// The 1-, 5- and 15-minute load averages, if readable.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Microseconds, since boot, during which some runnable task waited for a
/// CPU (`/proc/pressure/cpu`, "some" line), if the kernel reports it.
pub fn pressure_stall_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_ascii_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Measures how contended the CPUs were over a stretch of time: the share
/// of it during which some task waited for a CPU.
pub struct Pressure {
    start: std::time::Instant,
    stalled: Option<u64>,
}

impl Pressure {
    /// Starts measuring.
    pub fn start() -> Pressure {
        Pressure {
            start: std::time::Instant::now(),
            stalled: pressure_stall_us(),
        }
    }

    /// The share (0 to 1) since [`start`](Self::start), if known.
    pub fn share(&self) -> Option<f64> {
        let elapsed = self.start.elapsed().as_micros() as f64;
        let stalled = pressure_stall_us()?.checked_sub(self.stalled?)? as f64;
        (elapsed > 0.0).then(|| (stalled / elapsed).min(1.0))
    }
}
