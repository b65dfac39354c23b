//! The two measurements: round trips and one-way streams.

use crate::Result;

/// What a job measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ping-pong round trips of `size`-byte messages.
    Latency,
    /// A one-way stream of `size`-byte messages, acknowledged at the end.
    Throughput,
}

impl Mode {
    /// The name on the command line and in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Latency => "latency",
            Mode::Throughput => "throughput",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Mode> {
        match text {
            "latency" => Ok(Mode::Latency),
            "throughput" => Ok(Mode::Throughput),
            other => Err(format!("unknown mode {other}").into()),
        }
    }
}
