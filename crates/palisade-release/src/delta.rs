//! Delta updates: the new image compressed by zstd with the old image as its
//! reference prefix (what `zstd --patch-from` does), so only what changed
//! travels. The device rebuilds the full image from the image it runs and the
//! delta, and installs it only if the rebuilt image's SHA-256 and length are
//! the ones the signed metadata give: a delta is an encoding, never trusted.

use std::io::{Read, Write};

/// Why a delta could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// zstd failed (a corrupt or foreign delta, or a window beyond the limit).
    #[error("delta: {0}")]
    Codec(#[from] std::io::Error),
    /// The rebuilt image is longer than the metadata allow.
    #[error("the rebuilt image exceeds its signed length of {0} bytes")]
    TooLong(u64),
}

/// zstd's window covering `old` and `new` (log2, 10..=31).
fn window_log(old: usize, new: usize) -> u32 {
    let span = old.saturating_add(new).max(1 << 10) as u64;
    (64 - (span - 1).leading_zeros()).clamp(10, 31)
}

/// The delta from `old` to `new` (zstd `level`, 1..=19).
pub fn make(old: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, DeltaError> {
    let mut enc = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), level, old)?;
    enc.window_log(window_log(old.len(), new.len()))?;
    enc.long_distance_matching(true)?;
    enc.set_pledged_src_size(Some(new.len() as u64))?;
    enc.include_checksum(true)?;
    enc.write_all(new)?;
    Ok(enc.finish()?)
}

/// Rebuilds the new image from `old` and the `delta` stream, handing it to
/// `sink` chunk by chunk; stops with [`DeltaError::TooLong`] past `max_len`.
/// Returns the number of bytes rebuilt.
pub fn apply(
    old: &[u8],
    delta: impl Read,
    max_len: u64,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, DeltaError> {
    let mut dec =
        zstd::stream::read::Decoder::with_ref_prefix(std::io::BufReader::new(delta), old)?;
    // The window a genuine delta needs is bounded by the two images; a frame
    // asking for more (up to 2 GiB) is refused before zstd allocates it.
    dec.window_log_max(window_log(
        old.len(),
        usize::try_from(max_len).unwrap_or(usize::MAX),
    ))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = dec.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
        if n > max_len {
            return Err(DeltaError::TooLong(max_len));
        }
        sink(&buf[..k])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seed: u8, len: usize) -> Vec<u8> {
        let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn a_small_change_makes_a_small_delta_that_rebuilds_the_image() {
        let old = image(1, 1 << 20);
        let mut new = old.clone();
        new[1000..1100].copy_from_slice(&image(2, 100));
        new.splice(500_000..500_000, image(3, 4096));
        let d = make(&old, &new, 19).unwrap();
        assert!(d.len() < 16 * 1024, "delta is {} bytes", d.len());
        let mut out = vec![];
        let n = apply(&old, &d[..], new.len() as u64, |c| {
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, new.len() as u64);
        assert_eq!(out, new);
    }

    #[test]
    fn a_delta_against_another_base_or_corrupted_or_too_long_is_refused() {
        let old = image(1, 200_000);
        let mut new = old.clone();
        new[5000..6000].copy_from_slice(&image(4, 1000));
        let d = make(&old, &new, 3).unwrap();
        let other = image(9, 200_000);
        let sink = |_: &[u8]| Ok(());
        // zstd's checksum catches a wrong reference or corruption.
        assert!(apply(&other, &d[..], 1 << 20, sink).is_err());
        let mut bad = d.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(apply(&old, &bad[..], 1 << 20, sink).is_err());
        assert!(matches!(
            apply(&old, &d[..], 1000, sink),
            Err(DeltaError::TooLong(1000))
        ));
        assert!(apply(&old, &b"not zstd"[..], 1 << 20, sink).is_err());
    }
}
