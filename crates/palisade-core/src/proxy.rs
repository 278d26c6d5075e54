//! The PROXY protocol version 2 header that a TCP balancer (HAProxy with
//! `send-proxy-v2`) puts before the first byte of each connection it passes
//! on, so that a node behind it learns the device's own address. The header
//! is untrusted input: its length is bounded before anything is read, and it
//! is parsed by the `ppp` crate. Only version 2 (binary) is accepted; a
//! listener that expects a header refuses a connection without one.

use std::net::SocketAddr;

use ppp::v2;

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of a header: the signature, version and command, family
/// and protocol, and the length of what follows.
pub const FIXED_LEN: usize = 16;

/// The most address and TLV bytes accepted after the fixed part. TCP over
/// IPv6 needs 36; HAProxy adds TLVs only when told to. A longer header is
/// refused before it is read.
pub const MAX_REST: usize = 512;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The balancer's own connection (a health check, `LOCAL`): the TCP peer
    /// is the balancer itself.
    Local,
    /// A proxied connection whose source the balancer does not know (family
    /// `UNSPEC` or a UNIX socket): keep the TCP peer.
    Unknown,
    /// A proxied TCP connection from this address.
    From(SocketAddr),
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection does not start with a version 2 header.
    #[error(
        "the connection does not start with a PROXY protocol v2 header; send-proxy-v2 must be set for this server in the balancer, or proxy_protocol turned off for this listener"
    )]
    Missing,
    /// The header announces more bytes than accepted.
    #[error(
        "the PROXY header announces {0} bytes of addresses and TLVs; at most {MAX_REST} are accepted"
    )]
    TooLong(usize),
    /// The header is malformed.
    #[error("malformed PROXY protocol v2 header: {0}")]
    Malformed(String),
}

/// From the fixed part of a header, how many bytes follow it.
pub fn rest_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, ProxyError> {
    if fixed[..12] != SIGNATURE || fixed[12] >> 4 != 2 {
        return Err(ProxyError::Missing);
    }
    let n = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if n > MAX_REST {
        return Err(ProxyError::TooLong(n));
    }
    Ok(n)
}

/// Parses a whole header (the fixed part and exactly the bytes it announces).
pub fn parse(header: &[u8]) -> Result<Proxied, ProxyError> {
    let fixed: &[u8; FIXED_LEN] = header
        .get(..FIXED_LEN)
        .and_then(|f| f.try_into().ok())
        .ok_or(ProxyError::Missing)?;
    let n = rest_len(fixed)?;
    if header.len() != FIXED_LEN + n {
        return Err(ProxyError::Malformed(format!(
            "{} bytes follow the fixed part, the header announces {n}",
            header.len() - FIXED_LEN
        )));
    }
    let h = v2::Header::try_from(header).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    if h.command == v2::Command::Local {
        return Ok(Proxied::Local);
    }
    Ok(match h.addresses {
        v2::Addresses::IPv4(a) => {
            Proxied::From(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        v2::Addresses::IPv6(a) => {
            Proxied::From(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Proxied::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cmd: u8, fam: u8, rest: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
        h.extend_from_slice(rest);
        h
    }

    #[test]
    fn a_proxied_ipv4_connection_names_its_source() {
        let rest = [192, 0, 2, 7, 127, 0, 0, 1, 0xd4, 0x31, 0x22, 0xb3];
        let h = header(1, 0x11, &rest);
        assert_eq!(
            parse(&h),
            Ok(Proxied::From("192.0.2.7:54321".parse().unwrap()))
        );
    }

    #[test]
    fn a_proxied_ipv6_connection_names_its_source() {
        let mut rest = vec![0u8; 36];
        rest[0] = 0x20;
        rest[1] = 0x01;
        rest[2] = 0x0d;
        rest[3] = 0xb8;
        rest[15] = 9;
        rest[32..34].copy_from_slice(&1883u16.to_be_bytes());
        let h = header(1, 0x21, &rest);
        assert_eq!(
            parse(&h),
            Ok(Proxied::From("[2001:db8::9]:1883".parse().unwrap()))
        );
    }

    #[test]
    fn a_health_check_is_local_and_unspec_is_unknown() {
        assert_eq!(parse(&header(0, 0, &[])), Ok(Proxied::Local));
        assert_eq!(parse(&header(1, 0, &[])), Ok(Proxied::Unknown));
    }

    #[test]
    fn what_is_not_a_v2_header_is_refused() {
        // A TLS ClientHello where a header was expected.
        let hello = [0x16, 3, 1, 0, 0xc8, 1, 0, 0, 0xc4, 3, 3, 0, 0, 0, 0, 0];
        assert_eq!(rest_len(&hello), Err(ProxyError::Missing));
        // Version 1 (text) is not accepted.
        let mut v1 = [0u8; 16];
        v1.copy_from_slice(b"PROXY TCP4 1.2.3");
        assert_eq!(rest_len(&v1), Err(ProxyError::Missing));
        // Too long to read.
        let mut long = [0u8; 16];
        long.copy_from_slice(&header(1, 0x11, &[])[..16]);
        long[14..].copy_from_slice(&600u16.to_be_bytes());
        assert_eq!(rest_len(&long), Err(ProxyError::TooLong(600)));
        // Addresses shorter than the family needs.
        assert!(matches!(
            parse(&header(1, 0x11, &[1, 2, 3])),
            Err(ProxyError::Malformed(_))
        ));
        // Bytes beyond what the header announces.
        let mut extra = header(1, 0, &[]);
        extra.push(0);
        assert!(matches!(parse(&extra), Err(ProxyError::Malformed(_))));
        assert_eq!(parse(&[]), Err(ProxyError::Missing));
    }
}
