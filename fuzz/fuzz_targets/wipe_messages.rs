//! A wipe command as the agent receives it (arguments from the commands
//! topic) and a wipe receipt as the server receives it (an acknowledgement's
//! `result`): any bytes are refused with a clear error or accepted only when
//! the checks hold; nothing panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_core::wipe::{MAX_DESTROYED, parse_receipt, verify_command, verify_receipt};

/// A fixed Ed25519 public key: no input can carry a signature for it, so
/// every command must be refused without a panic.
const DIRECTOR: [u8; 32] = [7; 32];
/// A fixed (invalid) P-256 point for the receipt check.
const DEVICE: [u8; 65] = [4; 65];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let args: Vec<String> = text.split('\0').map(str::to_owned).take(4).collect();
        assert!(verify_command(&args, &DIRECTOR, "cam-1", "0a", 1_000).is_err());
    } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
        if let Ok((r, payload, sig)) = parse_receipt(&v) {
            assert!(r.destroyed.len() <= MAX_DESTROYED);
            let _ = verify_receipt(&r, &payload, &sig, &DEVICE, "cam-1", "0a", "n");
        }
    }
});
