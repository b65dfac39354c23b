//! Message sizes drawn from a distribution (`--sizes-from FILE`) instead of
//! one fixed size.
//!
//! The file lists sizes, one a line (`SIZE`), or a histogram (`SIZE COUNT`
//! lines), or both mixed; sizes take K/M suffixes (binary), `#` starts a
//! comment, blank lines are skipped, a size listed twice adds up. Each
//! round trip's size is drawn from the distribution by a hash of its
//! sequence number and a seed, so a run is reproducible and both processes
//! could compute it; the request carries its length in its second word
//! (see [`crate::payload::stamp_sized`]) and the reply has the request's
//! size.

use crate::payload::MIN_SIZED;
use crate::{BoxError, Result};

/// Most distinct sizes a distribution may hold (it travels to the peer in
/// the job line).
pub const MAX_DISTINCT: usize = 1024;
/// The largest size a distribution may hold.
pub const MAX_SIZE: usize = 64 << 20;

/// Parses a size as people write it: `64`, `4K`, `1M`, `2KiB`.
pub fn parse_size(text: &str) -> Result<usize> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let digits = upper.trim_end_matches("IB").trim_end_matches('B');
    let (number, shift) = match digits.chars().last() {
        Some('K') => (&digits[..digits.len() - 1], 10),
        Some('M') => (&digits[..digits.len() - 1], 20),
        Some('G') => (&digits[..digits.len() - 1], 30),
        _ => (digits, 0),
    };
    let value: usize = number
        .parse()
        .map_err(|_| BoxError::from(format!("bad size {text:?}")))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} is too large").into())
}

/// A distribution of message sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// Distinct sizes, ascending, with their weights.
    entries: Vec<(usize, u64)>,
    /// Running totals of the weights, for drawing.
    cumulative: Vec<u64>,
    /// The seed of the draws.
    seed: u64,
}

impl Sizes {
    /// A distribution from `(size, weight)` pairs (any order, repeats add
    /// up), checked: sizes from [`MIN_SIZED`] to [`MAX_SIZE`] bytes, weights
    /// at least 1, at most [`MAX_DISTINCT`] sizes.
    pub fn new(pairs: impl IntoIterator<Item = (usize, u64)>, seed: u64) -> Result<Sizes> {
        let mut entries: Vec<(usize, u64)> = Vec::new();
        for (size, weight) in pairs {
            if !(MIN_SIZED..=MAX_SIZE).contains(&size) {
                return Err(format!(
                    "size {size} is outside {MIN_SIZED} to {MAX_SIZE} bytes (a drawn message carries its tag and its length)"
                )
                .into());
            }
            if weight == 0 {
                return Err(format!("size {size} has a count of 0").into());
            }
            entries.push((size, weight));
        }
        entries.sort_unstable();
        let mut merged: Vec<(usize, u64)> = Vec::with_capacity(entries.len());
        for (size, weight) in entries {
            match merged.last_mut() {
                Some((last, total)) if *last == size => {
                    *total = total
                        .checked_add(weight)
                        .ok_or("the counts add up beyond 2^64")?;
                }
                _ => merged.push((size, weight)),
            }
        }
        if merged.is_empty() {
            return Err("the distribution lists no size".into());
        }
        if merged.len() > MAX_DISTINCT {
            return Err(format!(
                "{} distinct sizes; at most {MAX_DISTINCT} are supported",
                merged.len()
            )
            .into());
        }
        let mut cumulative = Vec::with_capacity(merged.len());
        let mut total = 0u64;
        for &(_, weight) in &merged {
            total = total
                .checked_add(weight)
                .ok_or("the counts add up beyond 2^64")?;
            cumulative.push(total);
        }
        Ok(Sizes {
            entries: merged,
            cumulative,
            seed,
        })
    }

    /// Reads a distribution file (see the module documentation); errors
    /// name the file and the line.
    pub fn from_file(path: &std::path::Path, seed: u64) -> Result<Sizes> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--sizes-from {}: {e}", path.display()))?;
        Sizes::parse(&text, seed)
            .map_err(|e| format!("--sizes-from {}: {e}", path.display()).into())
    }

    /// Parses a distribution file's text.
    pub fn parse(text: &str, seed: u64) -> Result<Sizes> {
        let mut pairs = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let at = |e: BoxError| BoxError::from(format!("line {}: {e}", index + 1));
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            let size = parse_size(words.next().unwrap_or("")).map_err(at)?;
            let weight = match words.next() {
                None => 1,
                Some(word) => word.parse::<u64>().map_err(|_| {
                    at(format!("bad count {word:?} (a whole number of messages)").into())
                })?,
            };
            if let Some(extra) = words.next() {
                return Err(at(format!(
                    "unexpected {extra:?}: a line is SIZE or SIZE COUNT"
                )
                .into()));
            }
            Sizes::new([(size, weight)], seed).map_err(at)?;
            pairs.push((size, weight));
        }
        Sizes::new(pairs, seed)
    }

    /// The size of round trip `seq`.
    #[inline]
    pub fn draw(&self, seq: u64) -> usize {
        let total = *self.cumulative.last().expect("a distribution has a size");
        let point = splitmix64(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % total;
        let index = self.cumulative.partition_point(|&c| c <= point);
        self.entries[index].0
    }

    /// The largest size.
    pub fn max(&self) -> usize {
        self.entries.last().map_or(0, |e| e.0)
    }

    /// The smallest size.
    pub fn min(&self) -> usize {
        self.entries.first().map_or(0, |e| e.0)
    }

    /// The mean size, weighted.
    pub fn mean(&self) -> f64 {
        let total = *self.cumulative.last().unwrap_or(&1) as f64;
        self.entries
            .iter()
            .map(|&(size, weight)| size as f64 * weight as f64)
            .sum::<f64>()
            / total
    }

    /// The size at quantile `q` (0 to 1) of the distribution.
    pub fn quantile(&self, q: f64) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let point = ((q.clamp(0.0, 1.0) * total as f64) as u64).min(total - 1);
        let index = self.cumulative.partition_point(|&c| c <= point);
        self.entries[index].0
    }

    /// Distinct sizes.
    pub fn distinct(&self) -> usize {
        self.entries.len()
    }

    /// The seed of the draws.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The distribution as one word for the job line: `SIZE:COUNT,...`
    /// and the seed.
    pub fn encode(&self) -> String {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|(size, weight)| format!("{size}:{weight}"))
            .collect();
        format!("{}/{}", self.seed, entries.join(","))
    }

    /// Parses [`encode`](Self::encode)'s word (checked like a file).
    pub fn decode(word: &str) -> Result<Sizes> {
        let bad = || BoxError::from(format!("bad size distribution {word:?}"));
        let (seed, list) = word.split_once('/').ok_or_else(bad)?;
        let seed = seed.parse().map_err(|_| bad())?;
        let pairs = list
            .split(',')
            .map(|pair| {
                let (size, weight) = pair.split_once(':').ok_or_else(bad)?;
                Ok((
                    size.parse().map_err(|_| bad())?,
                    weight.parse().map_err(|_| bad())?,
                ))
            })
            .collect::<Result<Vec<(usize, u64)>>>()?;
        Sizes::new(pairs, seed)
    }

    /// A summary for the JSON output.
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "distinct": self.distinct(),
            "messages_in_file": self.cumulative.last(),
            "min": self.min(),
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "max": self.max(),
            "mean": self.mean(),
            "seed": self.seed,
        })
    }
}

/// A 64-bit mix with good avalanche (SplitMix64's finalizer).
#[inline]
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_sizes_and_histogram_lines_parses() {
        let sizes = Sizes::parse("# comment\n64\n\n1K 3  # three of these\n64\n", 7).unwrap();
        assert_eq!(sizes.entries, vec![(64, 2), (1024, 3)]);
        assert_eq!((sizes.min(), sizes.max(), sizes.distinct()), (64, 1024, 2));
        assert!((sizes.mean() - (2.0 * 64.0 + 3.0 * 1024.0) / 5.0).abs() < 1e-9);
        assert_eq!(Sizes::decode(&sizes.encode()).unwrap(), sizes);
    }

    #[test]
    fn draws_are_deterministic_and_follow_the_weights() {
        let sizes = Sizes::parse("64 1\n4K 9\n", 1).unwrap();
        let again = Sizes::parse("64 1\n4K 9\n", 1).unwrap();
        let draws: Vec<usize> = (0..10_000).map(|s| sizes.draw(s)).collect();
        assert_eq!(
            draws,
            (0..10_000).map(|s| again.draw(s)).collect::<Vec<_>>()
        );
        let small = draws.iter().filter(|&&s| s == 64).count();
        assert!(
            (500..1500).contains(&small),
            "{small} of 10000 at weight 1/10"
        );
        assert!(draws.iter().all(|&s| s == 64 || s == 4096));
        let other_seed = Sizes::parse("64 1\n4K 9\n", 2).unwrap();
        assert_ne!(
            draws,
            (0..10_000).map(|s| other_seed.draw(s)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn malformed_files_are_refused_with_the_line() {
        for (text, needle) in [
            ("64\nbig\n", "line 2: bad size"),
            ("64 x\n", "line 1: bad count"),
            ("64 1 2\n", "line 1: unexpected"),
            ("8\n", "line 1: size 8 is outside"),
            ("64 0\n", "line 1: size 64 has a count of 0"),
            ("# nothing\n\n", "no size"),
            ("128M\n", "outside"),
        ] {
            let error = Sizes::parse(text, 0).unwrap_err().to_string();
            assert!(error.contains(needle), "{text:?}: {error}");
        }
        let many: String = (0..=MAX_DISTINCT)
            .map(|i| format!("{}\n", 64 + i))
            .collect();
        assert!(
            Sizes::parse(&many, 0)
                .unwrap_err()
                .to_string()
                .contains("distinct")
        );
    }
}
