//! Certificate profiles and issuance: what each kind of certificate says is decided
//! here, from server policy, never copied from a request.

use std::net::IpAddr;
use std::sync::Arc;

use palisade_core::Signer;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};

use crate::inspect::{CertInfo, hex_lower, inspect_certificate};
use crate::key::SignerKey;

/// How far back `notBefore` is set, to tolerate devices whose clocks run slow.
const BACKDATE: Duration = Duration::minutes(5);

/// The kinds of certificate Palisade issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// An issuing CA below the root (path length 0).
    Intermediate,
    /// A TLS server (the control plane's listeners).
    Server,
    /// A device's operational identity (TLS client).
    DeviceIdentity,
    /// A site edge gateway (TLS client and server).
    EdgeGateway,
    /// A device's birth identity (IDevID, 802.1AR style), issued in the factory
    /// by a supplier's manufacturer CA (TLS client).
    BirthIdentity,
}

impl Profile {
    /// Name as stored in the inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Intermediate => "intermediate",
            Profile::Server => "server",
            Profile::DeviceIdentity => "device",
            Profile::EdgeGateway => "edge",
            Profile::BirthIdentity => "idevid",
        }
    }
}

/// A subject alternative name set by server policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// A URI, e.g. `urn:palisade:device:sensor-1`.
    Uri(String),
}

/// Why the CA refused or failed to issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The issuing CA certificate has expired or is not yet valid.
    #[error(
        "the issuing CA {subject} is not valid at {now} (valid until {not_after}): rotate the CA"
    )]
    IssuerNotValid {
        /// CA subject.
        subject: String,
        /// When asked.
        now: OffsetDateTime,
        /// CA expiry.
        not_after: OffsetDateTime,
    },
    /// A name that cannot be encoded (not IA5, say).
    #[error("invalid name {0:?} for a certificate")]
    BadName(String),
    /// The certificate does not match the key offered as its CA key.
    #[error("CA certificate and signing key do not match")]
    KeyMismatch,
    /// Not a CA certificate.
    #[error("certificate {0} is not a CA certificate")]
    NotCa(String),
    /// The public key to certify is not one rcgen can encode.
    #[error("unsupported public key: {0}")]
    PublicKey(String),
    /// Random number generation failed.
    #[error("the system random number generator failed")]
    Random,
    /// rcgen or the signer failed.
    #[error("certificate encoding or signing failed: {0}")]
    Encode(String),
    /// Reading a certificate back failed.
    #[error(transparent)]
    Inspect(#[from] crate::InspectError),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Encode(e.to_string())
    }
}

/// A certificate serial number: 17 bytes, the first non-zero and positive, the other
/// 16 (128 bits) from a secure random source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// Draws a fresh serial.
    pub fn random(rng: &dyn SecureRandom) -> Result<Self, CaError> {
        let mut b = [0u8; 17];
        rng.fill(&mut b).map_err(|_| CaError::Random)?;
        b[0] = (b[0] % 0x7f) + 1;
        Ok(Serial(b.to_vec()))
    }

    /// Lower-case hex, as stored and shown.
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// Parses lower- or upper-case hex (at most 20 bytes).
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches("0x");
        if s.is_empty() || s.len() > 40 || !s.len().is_multiple_of(2) {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() / 2);
        for i in (0..s.len()).step_by(2) {
            out.push(u8::from_str_radix(s.get(i..i + 2)?, 16).ok()?);
        }
        Some(Serial(out))
    }
}

/// What to certify.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// The profile.
    pub profile: Profile,
    /// The subject CN, from a checked identifier or the operator's configuration.
    pub common_name: &'a str,
    /// Subject alternative names, from server policy.
    pub sans: Vec<San>,
    /// The DER SubjectPublicKeyInfo to certify (from a verified CSR or a local key).
    pub spki_der: &'a [u8],
    /// Requested lifetime; shortened to the issuer's.
    pub validity: Duration,
    /// A CRL distribution point URL to embed.
    pub crl_url: Option<String>,
}

/// A freshly issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// DER encoding.
    pub der: Vec<u8>,
    /// Inventory facts read back from it.
    pub info: CertInfo,
    /// The serial (hex) of the CA certificate it was issued by.
    pub issuer_serial: String,
}

/// A revoked certificate, as listed in a CRL.
#[derive(Debug, Clone)]
pub struct CrlEntry {
    /// Serial in hex.
    pub serial_hex: String,
    /// When the CA processed the revocation.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// RFC 5280 revocation reasons (those that apply to end-entity certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The private key is known or suspected to be compromised.
    KeyCompromise,
    /// Subject's affiliation changed.
    AffiliationChanged,
    /// Replaced by a new certificate.
    Superseded,
    /// The device was retired.
    CessationOfOperation,
    /// The privilege was withdrawn.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// All reasons, for help texts.
    pub const ALL: [RevocationReason; 6] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The reason's name as used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
            RevocationReason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    /// Parses a reason name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// A CA: its certificate and the signer that holds its key.
pub struct CertificateAuthority {
    der: Vec<u8>,
    info: CertInfo,
    issuer: Issuer<'static, SignerKey>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.info.subject)
            .field("not_after", &self.info.not_after)
            .finish_non_exhaustive()
    }
}

fn dn(org: &str, cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

impl CertificateAuthority {
    /// Creates a self-signed root CA (path length 1: one intermediate below it).
    pub fn create_root(
        signer: Arc<dyn Signer>,
        organization: &str,
        common_name: &str,
        now: OffsetDateTime,
        validity: Duration,
        serial: &Serial,
    ) -> Result<Self, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(organization, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        params.serial_number = Some(SerialNumber::from_slice(&serial.0));
        params.key_identifier_method = KeyIdMethod::Sha256;
        let key = SignerKey(signer.clone());
        let cert = params.self_signed(&key)?;
        Self::from_parts(cert.der().to_vec(), signer)
    }

    /// Loads a CA from its certificate and the signer holding its key; checks that
    /// they belong together.
    pub fn from_parts(der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self, CaError> {
        let info = inspect_certificate(&der)?;
        if !info.is_ca {
            return Err(CaError::NotCa(info.subject));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Encode(e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != signer.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), SignerKey(signer))?;
        Ok(Self { der, info, issuer })
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.der
    }

    /// The CA certificate's inventory facts.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Issues a certificate under `profile`. Validity starts a few minutes before
    /// `now` and never outlasts the issuer.
    pub fn issue(
        &self,
        req: &IssueRequest<'_>,
        organization: &str,
        serial: &Serial,
        now: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        if now < self.info.not_before || now >= self.info.not_after {
            return Err(CaError::IssuerNotValid {
                subject: self.info.subject.clone(),
                now,
                not_after: self.info.not_after,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(organization, req.common_name);
        params.not_before = (now - BACKDATE).max(self.info.not_before);
        params.not_after = (now + req.validity).min(self.info.not_after);
        params.serial_number = Some(SerialNumber::from_slice(&serial.0));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        match req.profile {
            Profile::Intermediate => {
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
            }
            Profile::Server => {
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Profile::DeviceIdentity | Profile::BirthIdentity => {
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            Profile::EdgeGateway => {
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ClientAuth,
                    ExtendedKeyUsagePurpose::ServerAuth,
                ];
            }
        }
        for san in &req.sans {
            params.subject_alt_names.push(match san {
                San::Dns(d) => SanType::DnsName(
                    d.as_str()
                        .try_into()
                        .map_err(|_| CaError::BadName(d.clone()))?,
                ),
                San::Ip(ip) => SanType::IpAddress(*ip),
                San::Uri(u) => SanType::URI(
                    u.as_str()
                        .try_into()
                        .map_err(|_| CaError::BadName(u.clone()))?,
                ),
            });
        }
        if let Some(url) = &req.crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(req.spki_der)
            .map_err(|e| CaError::PublicKey(e.to_string()))?;
        let cert = params.signed_by(&public_key, &self.issuer)?;
        let der = cert.der().to_vec();
        let info = inspect_certificate(&der)?;
        Ok(Issued {
            der,
            info,
            issuer_serial: self.info.serial_hex.clone(),
        })
    }

    /// Cross-certifies another CA: a CA certificate with `other`'s subject and
    /// public key, signed by this CA, so that a chain through `other` also
    /// reaches this CA's trust anchor. A new root cross-certified by the old
    /// one lets devices that trust only the old root accept the new one (RFC
    /// 4210's new-with-old); an issuing CA cross-certified by another root
    /// lets its certificates chain to either. `path_len` bounds the CAs below
    /// (0 for an issuing CA). Validity: the overlap of both CAs'. Only for CAs
    /// whose subject is organisation and common name (the ones Palisade makes);
    /// the subject is checked to come out byte for byte the same.
    pub fn cross_certify(
        &self,
        other_der: &[u8],
        path_len: u8,
        serial: &Serial,
        now: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        let (_, other) = x509_parser::parse_x509_certificate(other_der)
            .map_err(|e| CaError::Encode(e.to_string()))?;
        let other_info = inspect_certificate(other_der)?;
        if !other_info.is_ca {
            return Err(CaError::NotCa(other_info.subject));
        }
        let bad = || CaError::BadName(other_info.subject.clone());
        let org = other
            .subject()
            .iter_organization()
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or_else(bad)?;
        let cn = other
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or_else(bad)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(org, cn);
        params.not_before = other_info
            .not_before
            .max(self.info.not_before)
            .max(now - BACKDATE);
        params.not_after = other_info.not_after.min(self.info.not_after);
        if params.not_after <= params.not_before {
            return Err(CaError::IssuerNotValid {
                subject: self.info.subject.clone(),
                now,
                not_after: self.info.not_after,
            });
        }
        params.serial_number = Some(SerialNumber::from_slice(&serial.0));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(other.public_key().raw)
            .map_err(|e| CaError::PublicKey(e.to_string()))?;
        let cert = params.signed_by(&public_key, &self.issuer)?;
        let der = cert.der().to_vec();
        let (_, made) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Encode(e.to_string()))?;
        if made.subject().as_raw() != other.subject().as_raw() {
            return Err(CaError::BadName(other_info.subject));
        }
        let info = inspect_certificate(&der)?;
        Ok(Issued {
            der,
            info,
            issuer_serial: self.info.serial_hex.clone(),
        })
    }

    /// Signs a CRL listing `revoked`, numbered `number`, valid until `next_update`.
    pub fn crl(
        &self,
        revoked: &[CrlEntry],
        number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for r in revoked {
            let serial =
                Serial::from_hex(&r.serial_hex).ok_or(CaError::BadName(r.serial_hex.clone()))?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial.0),
                revocation_time: r.revoked_at,
                reason_code: Some(r.reason.rcgen()),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}
