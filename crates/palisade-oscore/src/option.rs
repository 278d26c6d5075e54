//! The OSCORE option's value (RFC 8613 §6.1): a flag byte, the Partial IV,
//! the kid context and the kid, compressed from the COSE object's headers.

use crate::OscoreError;

/// The longest Partial IV (five bytes: sequence numbers below 2^40).
pub const MAX_PIV: usize = 5;

/// What an OSCORE option says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OscoreOption {
    /// The Partial IV (the sender's sequence number, big-endian, minimal).
    pub piv: Option<Vec<u8>>,
    /// The kid context (the ID Context), when sent.
    pub kid_context: Option<Vec<u8>>,
    /// The kid (the sender's Sender ID), when sent.
    pub kid: Option<Vec<u8>>,
}

impl OscoreOption {
    /// The option's value; empty when there is nothing to say.
    pub fn encode(&self) -> Vec<u8> {
        let piv = self.piv.as_deref().unwrap_or_default();
        if piv.is_empty() && self.kid.is_none() && self.kid_context.is_none() {
            return vec![];
        }
        let mut flags = piv.len() as u8;
        if self.kid.is_some() {
            flags |= 0x08;
        }
        if self.kid_context.is_some() {
            flags |= 0x10;
        }
        let mut out = vec![flags];
        out.extend_from_slice(piv);
        if let Some(c) = &self.kid_context {
            out.push(c.len() as u8);
            out.extend_from_slice(c);
        }
        if let Some(k) = &self.kid {
            out.extend_from_slice(k);
        }
        out
    }

    /// Reads an option's value. Reserved flags (including Group OSCORE's),
    /// a Partial IV longer than five bytes, and truncated fields are refused.
    pub fn decode(v: &[u8]) -> Result<Self, OscoreError> {
        let Some((&flags, mut rest)) = v.split_first() else {
            return Ok(Self::default());
        };
        let bad = |why: &str| OscoreError::BadOption(why.to_owned());
        if flags & 0xe0 != 0 {
            return Err(bad("reserved flag bits are set"));
        }
        let n = usize::from(flags & 0x07);
        if n > MAX_PIV {
            return Err(bad("the Partial IV length is reserved (6 or 7)"));
        }
        let piv = if n > 0 {
            let (p, r) = rest
                .split_at_checked(n)
                .ok_or_else(|| bad("truncated Partial IV"))?;
            rest = r;
            Some(p.to_vec())
        } else {
            None
        };
        let kid_context = if flags & 0x10 != 0 {
            let (&s, r) = rest
                .split_first()
                .ok_or_else(|| bad("missing kid context length"))?;
            let (c, r) = r
                .split_at_checked(usize::from(s))
                .ok_or_else(|| bad("truncated kid context"))?;
            rest = r;
            Some(c.to_vec())
        } else {
            None
        };
        let kid = if flags & 0x08 != 0 {
            Some(std::mem::take(&mut rest).to_vec())
        } else {
            None
        };
        if !rest.is_empty() {
            return Err(bad("bytes after the last field"));
        }
        Ok(Self {
            piv,
            kid_context,
            kid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compressed_forms_of_rfc_8613_round_trip() {
        for (value, o) in [
            (vec![], OscoreOption::default()),
            (
                vec![0x09, 0x14],
                OscoreOption {
                    piv: Some(vec![0x14]),
                    kid: Some(vec![]),
                    kid_context: None,
                },
            ),
            (
                vec![
                    0x19, 0x14, 0x08, 0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3,
                ],
                OscoreOption {
                    piv: Some(vec![0x14]),
                    kid: Some(vec![]),
                    kid_context: Some(vec![0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3]),
                },
            ),
            (
                vec![0x01, 0x00],
                OscoreOption {
                    piv: Some(vec![0x00]),
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(OscoreOption::decode(&value).unwrap(), o);
            assert_eq!(o.encode(), value);
        }
    }

    #[test]
    fn reserved_and_truncated_values_are_refused() {
        for v in [
            &[0x20][..],
            &[0x80],
            &[0x06, 1, 2, 3, 4, 5, 6],
            &[0x03, 1],
            &[0x10],
            &[0x10, 0x05, 1],
            &[0x01, 0x00, 0x99],
        ] {
            assert!(OscoreOption::decode(v).is_err(), "{v:02x?}");
        }
    }
}
