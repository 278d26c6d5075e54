//! The few CBOR items OSCORE builds (RFC 8949 deterministic encoding): the
//! HKDF `info` array and the AEAD's `Enc_structure` with its `external_aad`.
//! Only encoding: OSCORE never parses CBOR from the wire. (Public: the CoAP
//! endpoint builds its EDHOC credential with it.)

/// Appends a CBOR head: major type `major`, argument `n`, shortest form.
pub fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

/// An unsigned integer.
pub fn uint(out: &mut Vec<u8>, n: u64) {
    head(out, 0, n);
}

/// A byte string.
pub fn bstr(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// A text string.
pub fn tstr(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The head of a map of `n` pairs.
pub fn map(out: &mut Vec<u8>, n: u64) {
    head(out, 5, n);
}

/// A signed integer (major type 0 or 1).
pub fn int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        head(out, 0, i.unsigned_abs());
    } else {
        head(out, 1, (-1 - i).unsigned_abs());
    }
}

/// An array header.
pub fn array(out: &mut Vec<u8>, n: u64) {
    head(out, 4, n);
}

/// `null`.
pub fn null(out: &mut Vec<u8>) {
    out.push(0xf6);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_take_the_shortest_form() {
        let enc = |n| {
            let mut v = vec![];
            uint(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(23), [0x17]);
        assert_eq!(enc(24), [0x18, 24]);
        assert_eq!(enc(256), [0x19, 1, 0]);
        assert_eq!(enc(65_536), [0x1a, 0, 1, 0, 0]);
        assert_eq!(enc(1 << 32), [0x1b, 0, 0, 0, 1, 0, 0, 0, 0]);
    }
}
