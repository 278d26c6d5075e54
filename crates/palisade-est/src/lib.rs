//! EST (RFC 7030) message formats, with no I/O:
//!
//! - request bodies: base64 (RFC 4648, line breaks allowed) DER PKCS#10, bounded;
//! - responses: certs-only CMS `SignedData` (RFC 5652 §5, "degenerate"), base64;
//! - `/csrattrs`: the `CsrAttrs` sequence telling a client which key to make;
//! - HTTP Basic credentials (RFC 7030 §3.2.3, RFC 7617), for enrolment tokens;
//! - the URL path: operation and optional CA label.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cms::content_info::ContentInfo;
use der::{Decode, Encode};

/// Content type of a PKCS#10 request body.
pub const CT_PKCS10: &str = "application/pkcs10";
/// Content type of a certs-only response.
pub const CT_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
/// Content type of `/csrattrs`.
pub const CT_CSRATTRS: &str = "application/csrattrs";

/// Largest request body accepted (base64 of a CSR of at most a few KiB).
pub const MAX_BODY: usize = 16 * 1024;

/// A malformed EST message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EstError {
    /// Body larger than [`MAX_BODY`].
    #[error("request body is {0} bytes; at most {MAX_BODY} are accepted")]
    TooLarge(usize),
    /// Not base64.
    #[error("request body is not base64 (RFC 7030 §4.2.1 bodies are base64-encoded DER)")]
    NotBase64,
    /// Empty.
    #[error("request body is empty")]
    Empty,
    /// Wrong content type.
    #[error("content type must be application/pkcs10, got {0:?}")]
    ContentType(String),
    /// A certificate would not encode.
    #[error("cannot encode certificate into CMS: {0}")]
    Encode(String),
    /// Malformed Basic credentials.
    #[error("malformed HTTP Basic credentials: {0}")]
    BadCredentials(&'static str),
    /// Unknown path.
    #[error("unknown EST path: {0}")]
    UnknownPath(String),
}

/// Decodes a base64 PKCS#10 request body (whitespace and line breaks allowed).
pub fn decode_pkcs10_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, EstError> {
    if body.len() > MAX_BODY {
        return Err(EstError::TooLarge(body.len()));
    }
    let ct = content_type.unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(CT_PKCS10) {
        return Err(EstError::ContentType(ct.chars().take(80).collect()));
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(EstError::Empty);
    }
    B64.decode(&compact).map_err(|_| EstError::NotBase64)
}

/// Encodes DER certificates as a certs-only CMS message (DER), as EST over
/// CoAP sends it (RFC 9148, content-format 281).
pub fn certs_only_der(ders: &[&[u8]]) -> Result<Vec<u8>, EstError> {
    let mut path = Vec::with_capacity(ders.len());
    for der in ders {
        path.push(
            x509_cert::Certificate::from_der(der).map_err(|e| EstError::Encode(e.to_string()))?,
        );
    }
    let ci = ContentInfo::try_from(path).map_err(|e| EstError::Encode(e.to_string()))?;
    ci.to_der().map_err(|e| EstError::Encode(e.to_string()))
}

/// Encodes DER certificates as a base64 certs-only CMS message (with line breaks
/// every 64 characters, as RFC 7030 examples show).
pub fn certs_only_base64(ders: &[&[u8]]) -> Result<String, EstError> {
    Ok(wrap64(&B64.encode(certs_only_der(ders)?)))
}

/// Decodes a base64 certs-only CMS message (an EST response) into DER certificates.
pub fn decode_certs_only(body: &[u8]) -> Result<Vec<Vec<u8>>, EstError> {
    use cms::cert::CertificateChoices;
    use cms::signed_data::SignedData;
    if body.len() > 4 * MAX_BODY {
        return Err(EstError::TooLarge(body.len()));
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = B64.decode(&compact).map_err(|_| EstError::NotBase64)?;
    let ci = ContentInfo::from_der(&der).map_err(|e| EstError::Encode(e.to_string()))?;
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(|e| EstError::Encode(e.to_string()))?;
    let mut out = Vec::new();
    for c in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let CertificateChoices::Certificate(cert) = c {
            out.push(cert.to_der().map_err(|e| EstError::Encode(e.to_string()))?);
        }
    }
    if out.is_empty() {
        return Err(EstError::Encode("the response holds no certificate".into()));
    }
    Ok(out)
}

fn wrap64(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 64 + 1);
    for chunk in s.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// `/csrattrs` asking for an EC P-256 key (id-ecPublicKey with prime256v1), base64.
pub fn csrattrs_p256_base64() -> String {
    // CsrAttrs ::= SEQUENCE OF AttrOrOID; one Attribute { id-ecPublicKey, SET { prime256v1 } }
    let curve = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let alg = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let set = tlv(0x31, &curve);
    let attr = tlv(0x30, &[&alg[..], &set[..]].concat());
    wrap64(&B64.encode(tlv(0x30, &attr)))
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    // Short-form lengths only: every structure here is under 128 bytes.
    let mut out = vec![tag, u8::try_from(content.len()).unwrap_or(0x7f)];
    out.extend_from_slice(content);
    out
}

/// Credentials from an `Authorization: Basic` header.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The user name (the device id the token enrols).
    pub user: String,
    /// The password (the enrolment token).
    pub password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Parses `Basic base64(user:password)`; `None` if the header is not Basic.
pub fn parse_basic(header: &str) -> Option<Result<BasicCredentials, EstError>> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim();
    if rest.len() > 1024 {
        return Some(Err(EstError::BadCredentials("too long")));
    }
    let Ok(raw) = B64.decode(rest) else {
        return Some(Err(EstError::BadCredentials("not base64")));
    };
    let Ok(text) = String::from_utf8(raw) else {
        return Some(Err(EstError::BadCredentials("not UTF-8")));
    };
    let Some((user, password)) = text.split_once(':') else {
        return Some(Err(EstError::BadCredentials(
            "no ':' between user and password",
        )));
    };
    Some(Ok(BasicCredentials {
        user: user.to_owned(),
        password: password.to_owned(),
    }))
}

/// An EST operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET cacerts`.
    CaCerts,
    /// `POST simpleenroll`.
    SimpleEnroll,
    /// `POST simplereenroll`.
    SimpleReenroll,
    /// `GET csrattrs`.
    CsrAttrs,
}

/// Splits the part after `/.well-known/est/` into an optional label and the
/// operation.
pub fn parse_path(rest: &str) -> Result<(Option<&str>, Operation), EstError> {
    let mut parts = rest.trim_matches('/').split('/');
    let (label, op) = match (parts.next(), parts.next(), parts.next()) {
        (Some(op), None, None) => (None, op),
        (Some(label), Some(op), None) if !label.is_empty() => (Some(label), op),
        _ => return Err(EstError::UnknownPath(rest.chars().take(80).collect())),
    };
    let op = match op {
        "cacerts" => Operation::CaCerts,
        "simpleenroll" => Operation::SimpleEnroll,
        "simplereenroll" => Operation::SimpleReenroll,
        "csrattrs" => Operation::CsrAttrs,
        other => return Err(EstError::UnknownPath(other.chars().take(80).collect())),
    };
    Ok((label, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_bodies_with_line_breaks_and_refuses_others() {
        let body = b"MIIB\r\nAAAA\n";
        assert_eq!(
            decode_pkcs10_body(Some("application/pkcs10"), body).unwrap(),
            B64.decode("MIIBAAAA").unwrap()
        );
        assert!(matches!(
            decode_pkcs10_body(Some("application/json"), body),
            Err(EstError::ContentType(_))
        ));
        assert_eq!(
            decode_pkcs10_body(Some("application/pkcs10"), b"***"),
            Err(EstError::NotBase64)
        );
        assert_eq!(
            decode_pkcs10_body(Some("application/pkcs10"), b" \n"),
            Err(EstError::Empty)
        );
        assert!(matches!(
            decode_pkcs10_body(Some("application/pkcs10"), &vec![b'A'; MAX_BODY + 1]),
            Err(EstError::TooLarge(_))
        ));
    }

    #[test]
    fn parses_basic_credentials() {
        let h = format!("Basic {}", B64.encode("dev-1:pet_abc"));
        let c = parse_basic(&h).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("dev-1", "pet_abc"));
        assert!(parse_basic("Bearer x").is_none());
        assert!(parse_basic("Basic !!!").unwrap().is_err());
        assert!(
            parse_basic(&format!("Basic {}", B64.encode("nocolon")))
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn parses_paths_with_and_without_labels() {
        assert_eq!(parse_path("cacerts").unwrap(), (None, Operation::CaCerts));
        assert_eq!(
            parse_path("thermostat/simpleenroll").unwrap(),
            (Some("thermostat"), Operation::SimpleEnroll)
        );
        assert!(parse_path("a/b/simpleenroll").is_err());
        assert!(parse_path("fullcmc").is_err());
    }

    #[test]
    fn csrattrs_is_well_formed_der() {
        let der = B64
            .decode(csrattrs_p256_base64().replace('\n', ""))
            .unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(usize::from(der[1]), der.len() - 2);
    }
}
