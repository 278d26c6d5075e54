//! Bridging legacy devices (pure): the MQTT 3.1.1 CONNECT a plaintext device
//! sends its edge, and the CONNECT the edge sends upstream as that device —
//! its own client id, no credentials, no will — so the gateway's
//! certificate-bound ACLs apply unchanged.

/// Largest CONNECT packet accepted from a legacy device.
pub const MAX_CONNECT: usize = 64 * 1024;

/// What the bridge keeps of a legacy CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Clean session flag.
    pub clean: bool,
    /// Keep-alive seconds.
    pub keep_alive: u16,
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("CONNECT is truncated".into());
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn take_str<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let l = take(b, 2)?;
    let n = usize::from(u16::from_be_bytes([l[0], l[1]]));
    take(b, n)
}

/// Parses the body of an MQTT 3.1.1 CONNECT (after the fixed header).
pub fn parse_connect(body: &[u8]) -> Result<Connect, String> {
    let mut b = body;
    if take_str(&mut b)? != b"MQTT" {
        return Err("not MQTT 3.1.1 (protocol name)".into());
    }
    if take(&mut b, 1)?[0] != 4 {
        return Err("only MQTT 3.1.1 (level 4) is bridged".into());
    }
    let flags = take(&mut b, 1)?[0];
    if flags & 1 != 0 {
        return Err("reserved CONNECT flag set".into());
    }
    let ka = take(&mut b, 2)?;
    let _client_id = take_str(&mut b)?;
    if flags & 0x04 != 0 {
        take_str(&mut b)?;
        take_str(&mut b)?;
    }
    if flags & 0x80 != 0 {
        take_str(&mut b)?;
    }
    if flags & 0x40 != 0 {
        take_str(&mut b)?;
    }
    if !b.is_empty() {
        return Err("CONNECT has trailing bytes".into());
    }
    Ok(Connect {
        clean: flags & 0x02 != 0,
        keep_alive: u16::from_be_bytes([ka[0], ka[1]]),
    })
}

/// The CONNECT sent upstream: the device's own client id, no credentials,
/// no will.
pub fn upstream_connect(c: &Connect, device: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    body.push(if c.clean { 0x02 } else { 0 });
    body.extend_from_slice(&c.keep_alive.to_be_bytes());
    body.extend_from_slice(&u16::try_from(device.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(device.as_bytes());
    let mut out = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_are_parsed_and_rewritten() {
        // CONNECT from mosquitto_pub: client id "x", username "u", password "p", clean.
        let body = [
            0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60, 0, 1, b'x', 0, 1, b'u', 0, 1, b'p',
        ];
        let c = parse_connect(&body).unwrap();
        assert_eq!(
            c,
            Connect {
                clean: true,
                keep_alive: 60
            }
        );
        let up = upstream_connect(&c, "lamp-1");
        assert_eq!(up[0], 0x10);
        assert_eq!(usize::from(up[1]), up.len() - 2);
        assert_eq!(
            parse_connect(&up[2..]).unwrap(),
            Connect {
                clean: true,
                keep_alive: 60
            }
        );
        assert!(parse_connect(&body[..body.len() - 1]).is_err());
        assert!(parse_connect(&[0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0]).is_err());
    }
}
