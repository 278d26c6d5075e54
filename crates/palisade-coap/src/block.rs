//! The Block1 / Block2 option (RFC 7959 §2.2): a 0–3 byte unsigned value
//! holding the block number (20 bits), the More flag and the size exponent.
//! (coap-lite's `BlockValue` keeps the number in 16 bits, which cannot
//! address the blocks of an image larger than 64 MiB, hence this.)

use coap_lite::{CoapOption, Packet};

/// The largest block this server sends: 2^(6+4) = 1024 bytes, so that a
/// block, its headers and the DTLS record fit a 1280-byte IPv6 MTU.
pub const MAX_SZX: u8 = 6;

/// A block option longer than 3 bytes, or asking for BERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Block1/Block2 option")]
pub struct BadBlock;

/// One block option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The block number.
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: the block holds 2^(szx+4) bytes.
    pub szx: u8,
}

impl Block {
    /// The block size in bytes.
    pub fn size(self) -> usize {
        1 << (usize::from(self.szx.min(MAX_SZX)) + 4)
    }

    /// Decodes an option value; `None` when malformed (longer than 3 bytes)
    /// or asking for BERT (szx 7, only for CoAP over TCP).
    pub fn decode(v: &[u8]) -> Option<Block> {
        if v.len() > 3 {
            return None;
        }
        let n = v.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = (n & 7) as u8;
        if szx == 7 {
            return None;
        }
        Some(Block {
            num: n >> 4,
            more: n & 8 != 0,
            szx,
        })
    }

    /// The option in `p`, if present; `Err` if malformed.
    pub fn option(p: &Packet, which: CoapOption) -> Result<Option<Block>, BadBlock> {
        match p.get_first_option(which) {
            None => Ok(None),
            Some(v) => Block::decode(v).map(Some).ok_or(BadBlock),
        }
    }

    /// The option's value.
    pub fn encode(self) -> Vec<u8> {
        let n = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 7);
        trim(&n.to_be_bytes())
    }

    /// Sets the option on `p`.
    pub fn set(self, p: &mut Packet, which: CoapOption) {
        p.clear_option(which);
        p.add_option(which, self.encode());
    }
}

/// An unsigned option value without leading zero bytes (RFC 7252 §3.2).
pub(crate) fn trim(v: &[u8]) -> Vec<u8> {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    v[first..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_values_round_trip_and_bert_is_refused() {
        for (num, more, szx) in [
            (0, false, 0),
            (1, true, 6),
            (0xfffff, false, 2),
            (15, true, 4),
        ] {
            let b = Block { num, more, szx };
            assert_eq!(Block::decode(&b.encode()), Some(b));
        }
        assert_eq!(
            Block {
                num: 0,
                more: false,
                szx: 0
            }
            .encode(),
            Vec::<u8>::new()
        );
        assert_eq!(Block::decode(&[0x07]), None, "szx 7 is BERT");
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None, "at most 3 bytes");
        assert_eq!(
            Block {
                num: 2,
                more: false,
                szx: 6
            }
            .size(),
            1024
        );
    }
}
