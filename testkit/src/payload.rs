//! Self-checking payloads: frames whose every byte is derived from their
//! sequence number, and reproducible payload lengths.
//!
//! A sender fills frame `seq` with [`write_frame`]; a receiver that knows
//! which frame it expects checks it with [`check_frame`], which catches a
//! lost, duplicated, reordered, torn or corrupted frame. Both sides draw the
//! lengths from [`Sizes`] seeded alike, so the receiver also knows how long
//! each frame must be.

/// Payload lengths from 0 to a maximum inclusive, reproducible from a seed,
/// so the receiver knows the length of every frame it should get. Mostly
/// small payloads (soaks stay fast in debug builds), with every size up to
/// the maximum, and the maximum itself, mixed in. The [`SizeMix`] says in
/// what proportions.
pub struct Sizes {
    rng: fastrand::Rng,
    max: usize,
    mix: SizeMix,
}

/// The proportions in which [`Sizes`] draws its lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeMix {
    /// Ring frames: per mille, 1 of any length, 1 within `near_max` bytes
    /// below the maximum (the padding and wrap-around cases), 28 up to
    /// 2 KiB, the rest up to 128 bytes.
    Frames {
        /// How far below the maximum the near-maximum lengths reach.
        near_max: usize,
    },
    /// Messages: per cent, 5 of any length, 1 of the maximum, 1 empty, 23 up
    /// to 4 KiB, the rest up to 256 bytes.
    Messages,
}

impl Sizes {
    /// Lengths up to `max`, drawn in the proportions of `mix` from `seed`.
    pub fn new(seed: u64, max: usize, mix: SizeMix) -> Sizes {
        Sizes {
            rng: fastrand::Rng::with_seed(seed),
            max,
            mix,
        }
    }

    /// Ring-frame lengths ([`SizeMix::Frames`]).
    pub fn frames(seed: u64, max: usize, near_max: usize) -> Sizes {
        Sizes::new(seed, max, SizeMix::Frames { near_max })
    }

    /// Message lengths ([`SizeMix::Messages`]).
    pub fn messages(seed: u64, max: usize) -> Sizes {
        Sizes::new(seed, max, SizeMix::Messages)
    }

    /// The next length.
    pub fn next_len(&mut self) -> usize {
        let max = self.max;
        match self.mix {
            SizeMix::Frames { near_max } => match self.rng.u32(0..1000) {
                0 => self.rng.usize(0..=max),
                1 => max - self.rng.usize(0..=max.min(near_max)),
                2..=29 => self.rng.usize(0..=max.min(2048)),
                _ => self.rng.usize(0..=max.min(128)),
            },
            SizeMix::Messages => match self.rng.u32(0..100) {
                0..=4 => self.rng.usize(0..=max),
                5 => max,
                6 => 0,
                7..=29 => self.rng.usize(0..=max.min(4096)),
                _ => self.rng.usize(0..=max.min(256)),
            },
        }
    }
}

/// The word stream a frame's bytes are made of, determined by its sequence
/// number (xorshift64 seeded by splitmix64).
struct Words(u64);

impl Words {
    fn new(seq: u64) -> Words {
        let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Words((z ^ (z >> 31)) | 1)
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[inline]
fn mix(sum: u64, word: u64) -> u64 {
    (sum ^ word)
        .wrapping_mul(0x0000_0100_0000_01B3)
        .rotate_left(29)
}

/// Fills a whole payload for frame `seq`: when there is room (16 bytes or
/// more), the sequence number and a checksum of the rest come first; every
/// byte is written.
pub fn write_frame(seq: u64, buf: &mut [u8]) {
    let len = buf.len();
    let (head, body) = if len >= 16 {
        buf.split_at_mut(16)
    } else {
        buf.split_at_mut(0)
    };
    let mut words = Words::new(seq);
    let mut sum = mix(0xCBF2_9CE4_8422_2325, len as u64);
    let mut chunks = body.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = words.next();
        chunk.copy_from_slice(&word.to_le_bytes());
        sum = mix(sum, word);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let bytes = words.next().to_le_bytes();
        rest.copy_from_slice(&bytes[..rest.len()]);
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        sum = mix(sum, u64::from_le_bytes(last));
    }
    if !head.is_empty() {
        head[..8].copy_from_slice(&seq.to_le_bytes());
        head[8..].copy_from_slice(&sum.to_le_bytes());
    }
}

/// A frame for `seq` of `len` bytes, made by [`write_frame`].
pub fn make_frame(seq: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    write_frame(seq, &mut buf);
    buf
}

/// Checks every byte of frame `seq` as [`write_frame`] made it, and its
/// embedded sequence number and checksum; the error says what differs.
pub fn check_frame(seq: u64, buf: &[u8]) -> Result<(), String> {
    let len = buf.len();
    let (head, body) = if len >= 16 {
        buf.split_at(16)
    } else {
        buf.split_at(0)
    };
    let mut words = Words::new(seq);
    let mut sum = mix(0xCBF2_9CE4_8422_2325, len as u64);
    let mut chunks = body.chunks_exact(8);
    for (i, chunk) in (&mut chunks).enumerate() {
        let got = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let want = words.next();
        if got != want {
            return Err(format!(
                "frame {seq} ({len} B): word {i} of the body is {got:#x}, expected {want:#x}"
            ));
        }
        sum = mix(sum, got);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let want = words.next().to_le_bytes();
        if rest != &want[..rest.len()] {
            return Err(format!("frame {seq} ({len} B): last bytes differ"));
        }
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        sum = mix(sum, u64::from_le_bytes(last));
    }
    if !head.is_empty() {
        let got_seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if got_seq != seq {
            return Err(format!("frame {seq} ({len} B) carries sequence {got_seq}"));
        }
        let got_sum = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
        if got_sum != sum {
            return Err(format!("frame {seq} ({len} B): checksum mismatch"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_check_and_detect_damage() {
        for len in [0, 1, 7, 8, 15, 16, 17, 24, 100, 4099] {
            let mut frame = make_frame(42, len);
            assert_eq!(check_frame(42, &frame), Ok(()), "{len} B");
            if len > 0 {
                assert!(check_frame(43, &frame).is_err(), "{len} B, wrong seq");
                frame[len - 1] ^= 1;
                assert!(check_frame(42, &frame).is_err(), "{len} B, flipped bit");
            }
        }
    }

    #[test]
    fn sizes_are_reproducible_and_bounded() {
        for mix in [SizeMix::Frames { near_max: 16 }, SizeMix::Messages] {
            let mut a = Sizes::new(7, 5000, mix);
            let mut b = Sizes::new(7, 5000, mix);
            for _ in 0..10_000 {
                let len = a.next_len();
                assert_eq!(len, b.next_len());
                assert!(len <= 5000);
            }
        }
    }
}
