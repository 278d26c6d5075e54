//! Deltas as a device receives them (zstd against the running image): applying
//! one must never panic, never use unbounded memory, and never produce more
//! than the signed length.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |b| *b as usize)
        .min(data.len().saturating_sub(1));
    let (old, rest) = data.split_at(split);
    // Start every input with zstd's frame magic so the fuzzer explores frames.
    let mut delta = vec![0x28, 0xb5, 0x2f, 0xfd];
    delta.extend_from_slice(rest.get(1..).unwrap_or_default());
    let mut out = 0u64;
    let r = palisade_release::delta::apply(old, &delta[..], 1 << 20, |c| {
        out += c.len() as u64;
        Ok(())
    });
    assert!(out <= 1 << 20);
    if let Ok(n) = r {
        assert_eq!(n, out);
    }
});
