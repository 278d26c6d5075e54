//! Who a device is, as established by the credential it presented: a birth
//! certificate (IDevID), an operational certificate, or an enrolment token.

use palisade_core::DeviceId;
use palisade_store::DeviceRecord;
use rustls::pki_types::CertificateDer;

/// Who is asking to enrol.
#[derive(Debug)]
pub enum Credential<'a> {
    /// A TLS client certificate chain (leaf first).
    ClientCert(&'a [CertificateDer<'static>]),
    /// HTTP Basic: device id and enrolment token.
    Token {
        /// Device id asked for.
        device: &'a str,
        /// Token text.
        token: &'a str,
    },
    /// Nothing.
    None,
}

/// A device that proved who it is for the attestation steps before enrolment.
#[derive(Debug, Clone)]
pub struct Identified {
    /// Audit actor.
    pub actor: String,
    /// The device.
    pub device: DeviceId,
    /// Its inventory record, if it exists yet (token enrolment creates it).
    pub existing: Option<DeviceRecord>,
}
