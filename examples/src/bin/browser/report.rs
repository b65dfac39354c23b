//! Numbers for people: latency percentiles, sizes, counts, rates, and the
//! traffic of a connection.

use ferry_transport::TransportStats;
use hdrhistogram::Histogram;
use std::time::Duration;

/// Latencies of one kind of operation.
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // 1 ns to 100 s, three significant digits.
            histogram: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl Latency {
    /// Records one operation.
    pub fn record(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(nanos);
    }

    /// `p50 … p90 … p99 … max … (n=…)`.
    pub fn summary(&self) -> String {
        if self.histogram.is_empty() {
            return "(none)".into();
        }
        let at = |q: f64| duration(self.histogram.value_at_quantile(q));
        format!(
            "p50 {:>8}  p90 {:>8}  p99 {:>8}  max {:>8}  (n={})",
            at(0.50),
            at(0.90),
            at(0.99),
            duration(self.histogram.max()),
            self.histogram.len()
        )
    }
}

/// `812 ns`, `62.1 µs`, `3.10 ms`, `1.20 s`.
pub fn duration(nanos: u64) -> String {
    let n = nanos as f64;
    if nanos < 1_000 {
        format!("{nanos} ns")
    } else if nanos < 1_000_000 {
        format!("{:.1} µs", n / 1e3)
    } else if nanos < 1_000_000_000 {
        format!("{:.2} ms", n / 1e6)
    } else {
        format!("{:.2} s", n / 1e9)
    }
}

/// `812 B`, `41.3 KiB`, `25.4 MiB`.
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if n < 1 << 20 {
        format!("{:.1} KiB", f / 1024.0)
    } else if n < 1 << 30 {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    }
}

/// `1 request`, `3 requests`, `1,024 requests`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2.15 M/s`, `812 k/s`, `95/s`.
pub fn rate(events: u64, over: Duration) -> String {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        return "-".into();
    }
    let per_sec = events as f64 / secs;
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.0} k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}/s")
    }
}

/// The sum of several connections' counters.
pub fn total<'a>(all: impl IntoIterator<Item = &'a TransportStats>) -> TransportStats {
    let mut total = TransportStats::default();
    for stats in all {
        add(&mut total, stats);
    }
    total
}

/// Adds `b`'s counters to `a`'s.
pub fn add(a: &mut TransportStats, b: &TransportStats) {
    a.frames_sent += b.frames_sent;
    a.frames_received += b.frames_received;
    a.out_of_line_sent += b.out_of_line_sent;
    a.out_of_line_received += b.out_of_line_received;
    a.fds_sent += b.fds_sent;
    a.fds_received += b.fds_received;
    a.tx_ring.frames += b.tx_ring.frames;
    a.tx_ring.bytes += b.tx_ring.bytes;
    a.tx_ring.parks += b.tx_ring.parks;
    a.tx_ring.wakes += b.tx_ring.wakes;
    a.rx_ring.frames += b.rx_ring.frames;
    a.rx_ring.bytes += b.rx_ring.bytes;
    a.rx_ring.parks += b.rx_ring.parks;
    a.rx_ring.wakes += b.rx_ring.wakes;
}

/// `sent 210 messages (1.2 MiB), received 380 (3.4 KiB + 2 out of line)`:
/// messages and the bytes they took in the rings; out-of-line bodies
/// travelled in sealed memfds instead.
pub fn traffic(stats: &TransportStats) -> String {
    let out_of_line = |n: u64| {
        if n > 0 {
            format!(" + {} out of line", count(n))
        } else {
            String::new()
        }
    };
    format!(
        "sent {} ({}{}), received {} ({}{})",
        plural(stats.frames_sent, "message", "messages"),
        bytes(stats.tx_ring.bytes),
        out_of_line(stats.out_of_line_sent),
        count(stats.frames_received),
        bytes(stats.rx_ring.bytes),
        out_of_line(stats.out_of_line_received),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(plural(1, "page", "pages"), "1 page");
        assert_eq!(plural(1000, "page", "pages"), "1,000 pages");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(812), "812 ns");
        assert_eq!(duration(62_100), "62.1 µs");
        assert_eq!(duration(3_100_000), "3.10 ms");
        assert_eq!(rate(2_150_000, Duration::from_secs(1)), "2.15 M/s");
        let mut latency = Latency::default();
        for micros in 1..=100 {
            latency.record(Duration::from_micros(micros));
        }
        assert!(latency.summary().contains("(n=100)"));
    }
}
