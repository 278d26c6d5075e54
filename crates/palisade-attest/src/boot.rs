//! The boot event log: what was measured into which PCR, in order. A device's
//! boot chain (a shim in simulation) appends an event and extends the PCR with
//! the same digest; replaying the log must reproduce the PCR values the TPM
//! quotes.

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::AttestError;

/// The PCR firmware measurements go to (the bootloader's code PCR in the TCG
/// PC Client convention for OS loaders: not resettable at locality 0).
pub const FIRMWARE_PCR: u8 = 9;

/// Event kind of a firmware image measurement.
pub const KIND_FIRMWARE: &str = "firmware";

/// Most events accepted in one log.
pub const MAX_EVENTS: usize = 1024;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootEvent {
    /// The PCR extended.
    pub pcr: u8,
    /// SHA-256 of what was measured (hex).
    pub digest: String,
    /// What kind of thing (`firmware`, …).
    pub kind: String,
    /// A human description, e.g. the firmware version.
    pub description: String,
}

impl BootEvent {
    /// The event for booting a firmware image.
    pub fn firmware(image: &[u8], version: &str) -> Self {
        Self {
            pcr: FIRMWARE_PCR,
            digest: hex::encode(digest::digest(&digest::SHA256, image)),
            kind: KIND_FIRMWARE.into(),
            description: version.into(),
        }
    }

    /// The digest as bytes.
    pub fn digest_bytes(&self) -> Result<[u8; 32], AttestError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.digest, &mut out).map_err(|_| {
            AttestError::Refused(format!(
                "event digest {:?} is not 32 hex bytes",
                self.digest
            ))
        })?;
        Ok(out)
    }
}

/// PCR value after extending `pcr` with `digest`: SHA-256(pcr || digest).
pub fn extend(pcr: &[u8; 32], digest_: &[u8; 32]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(pcr);
    ctx.update(digest_);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Replays `events` from reset (all zeros) and returns the value of `pcr`.
pub fn replay(events: &[BootEvent], pcr: u8) -> Result<[u8; 32], AttestError> {
    if events.len() > MAX_EVENTS {
        return Err(AttestError::Refused(format!(
            "event log has {} events; at most {MAX_EVENTS}",
            events.len()
        )));
    }
    let mut value = [0u8; 32];
    for e in events.iter().filter(|e| e.pcr == pcr) {
        value = extend(&value, &e.digest_bytes()?);
    }
    Ok(value)
}

/// The last firmware measured, if any.
pub fn booted_firmware(events: &[BootEvent]) -> Option<&BootEvent> {
    events
        .iter()
        .rev()
        .find(|e| e.pcr == FIRMWARE_PCR && e.kind == KIND_FIRMWARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_extends_in_order() {
        let a = BootEvent::firmware(b"image-a", "1.0");
        let b = BootEvent::firmware(b"image-b", "1.1");
        let ab = replay(&[a.clone(), b.clone()], FIRMWARE_PCR).unwrap();
        let ba = replay(&[b.clone(), a.clone()], FIRMWARE_PCR).unwrap();
        assert_ne!(ab, ba);
        assert_eq!(replay(&[], FIRMWARE_PCR).unwrap(), [0; 32]);
        assert_eq!(booted_firmware(&[a, b.clone()]), Some(&b));
        let mut bad = b;
        bad.digest = "zz".into();
        assert!(replay(&[bad], FIRMWARE_PCR).is_err());
    }
}
