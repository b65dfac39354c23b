//! One measurement, as the parent describes it to the peer process: what
//! to run, over which transport, with which settings. It travels as one
//! line of `key=value` words over the control channel, with the
//! transport's descriptors attached.

use crate::catalog::Transport;
use crate::mode::Mode;
use crate::sizes::Sizes;
use crate::{BoxError, Result};
use ferry_transport::{Trust, WaitStrategy};

/// The name of a trust mode.
pub fn trust_name(trust: Trust) -> &'static str {
    match trust {
        Trust::Trusted => "trusted",
        Trust::Untrusted => "untrusted",
    }
}

/// Parses a trust mode.
pub fn parse_trust(text: &str) -> Result<Trust> {
    match text {
        "trusted" => Ok(Trust::Trusted),
        "untrusted" => Ok(Trust::Untrusted),
        other => Err(format!("unknown trust mode {other} (trusted, untrusted)").into()),
    }
}

/// One measurement's settings.
#[derive(Debug, Clone)]
pub struct Job {
    /// What is measured.
    pub mode: Mode,
    /// Over what.
    pub transport: Transport,
    /// Message size in bytes.
    pub size: usize,
    /// How ferry's endpoints wait.
    pub wait: WaitStrategy,
    /// How ferry's receivers treat their peer.
    pub trust: Trust,
    /// Data area of each ring (ferry) or lane (floors), in bytes.
    pub ring: usize,
    /// Messages per publish for the batching transport.
    pub batch: usize,
    /// CPU the peer pins itself to.
    pub cpu: Option<usize>,
    /// A name unique to this job (service names of the peer crates).
    pub name: String,
    /// Transport metadata (ferry's endpoint metadata), hex on the wire.
    pub meta: Vec<u8>,
    /// Round trips of sizes drawn from this distribution (`size` is its
    /// largest); `None`: every message has `size` bytes.
    pub sizes: Option<Sizes>,
}

impl Job {
    /// The line sent to the peer.
    pub fn encode(&self) -> String {
        let hex: String = self.meta.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "job mode={} transport={} size={} wait={} trust={} ring={} batch={} cpu={} name={} meta={} sizes={}",
            self.mode.name(),
            self.transport.name(),
            self.size,
            self.wait,
            trust_name(self.trust),
            self.ring,
            self.batch,
            self.cpu
                .map_or_else(|| "-".to_owned(), |cpu| cpu.to_string()),
            self.name,
            if hex.is_empty() { "-" } else { &hex },
            self.sizes
                .as_ref()
                .map_or_else(|| "-".to_owned(), Sizes::encode),
        )
    }

    /// Parses [`encode`](Self::encode)'s line.
    pub fn decode(line: &str) -> Result<Job> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("job") {
            return Err(format!("not a job: {line:?}").into());
        }
        let mut get = |key: &str| -> Result<String> {
            let word = words.next().ok_or_else(|| format!("job lacks {key}"))?;
            let value = word
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| format!("expected {key}=..., found {word:?}"))?;
            Ok(value.to_owned())
        };
        let number = |text: String| -> Result<usize> {
            text.parse()
                .map_err(|_| BoxError::from(format!("bad number {text:?}")))
        };
        let mode = Mode::parse(&get("mode")?)?;
        let transport = Transport::parse(&get("transport")?)?;
        let size = number(get("size")?)?;
        let wait = get("wait")?.parse::<WaitStrategy>()?;
        let trust = parse_trust(&get("trust")?)?;
        let ring = number(get("ring")?)?;
        let batch = number(get("batch")?)?;
        let cpu = match get("cpu")?.as_str() {
            "-" => None,
            text => Some(number(text.to_owned())?),
        };
        let name = get("name")?;
        let hex = get("meta")?;
        let meta = if hex == "-" {
            Vec::new()
        } else {
            (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| BoxError::from("bad metadata"))?
        };
        let sizes = match get("sizes")?.as_str() {
            "-" => None,
            word => Some(Sizes::decode(word)?),
        };
        Ok(Job {
            sizes,
            mode,
            transport,
            size,
            wait,
            trust,
            ring,
            batch,
            cpu,
            name,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let job = Job {
            mode: Mode::Throughput,
            transport: Transport::FerryRaw,
            size: 4096,
            wait: WaitStrategy::default(),
            trust: Trust::Untrusted,
            ring: 1 << 20,
            batch: 64,
            cpu: Some(1),
            name: "ferry-bench-1-2".into(),
            meta: vec![0, 1, 0xab, 0xff],
            sizes: Some(Sizes::parse("64 3\n1K 1\n", 9).unwrap()),
        };
        let back = Job::decode(&job.encode()).unwrap();
        assert_eq!(back.encode(), job.encode());
        assert_eq!(back.meta, job.meta);
        assert_eq!(back.cpu, Some(1));
        assert_eq!(back.sizes, job.sizes);
    }
}
