//! The supply-chain gate for firmware releases (pure: no I/O).
//!
//! A release is accepted only with
//! * a **provenance attestation**: an in-toto Statement v1 whose predicate is a
//!   SLSA Provenance v1, in a DSSE envelope signed by one of the supplier's
//!   registered keys, whose subject digest is the image's SHA-256; and
//! * a **CycloneDX SBOM** (JSON) that parses and validates (cyclonedx-bom).
//!
//! DSSE is small enough to implement here (pre-authentication encoding and a
//! signature check with ring); no maintained Rust crate implements it alone.

pub mod delta;
pub mod director;
pub mod rollout;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use ring::signature::{self, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Largest DSSE envelope accepted.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;
/// Largest SBOM accepted.
pub const MAX_SBOM_BYTES: usize = 8 << 20;
/// The DSSE payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// Why a release was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GateError {
    /// The provenance envelope or statement is malformed.
    #[error("provenance: {0}")]
    Provenance(String),
    /// No registered key of the supplier signed it.
    #[error(
        "provenance is not signed by a key registered for supplier {supplier} (palisade supplier key add)"
    )]
    Unsigned {
        /// The supplier.
        supplier: String,
    },
    /// It attests a different image.
    #[error("provenance subject digest does not match the image (sha256 {image})")]
    Subject {
        /// The image's SHA-256.
        image: String,
    },
    /// The SBOM is missing, malformed or invalid.
    #[error("SBOM: {0}")]
    Sbom(String),
    /// A key could not be read.
    #[error("public key: {0}")]
    Key(String),
}

/// A supplier's signing key (public half).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupplierKey {
    /// SHA-256 (hex) of the SubjectPublicKeyInfo.
    pub keyid: String,
    /// The SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    kind: KeyKind,
    raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Ed25519,
    P256,
    P384,
}

impl SupplierKey {
    /// Reads a PEM `PUBLIC KEY` (Ed25519, ECDSA P-256 or P-384).
    pub fn from_pem(text: &str) -> Result<Self, GateError> {
        let p = pem::parse(text).map_err(|e| GateError::Key(e.to_string()))?;
        if p.tag() != "PUBLIC KEY" {
            return Err(GateError::Key(format!(
                "expected a PEM PUBLIC KEY, found {}",
                p.tag()
            )));
        }
        Self::from_spki_der(p.contents())
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, GateError> {
        use x509_parser::prelude::FromDer;
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| GateError::Key(format!("not a SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(GateError::Key("trailing bytes after the key".into()));
        }
        let oid = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        let kind = match (oid.as_str(), curve.as_deref()) {
            ("1.3.101.112", _) => KeyKind::Ed25519,
            ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => KeyKind::P256,
            ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => KeyKind::P384,
            _ => {
                return Err(GateError::Key(
                    "supplier keys are Ed25519, ECDSA P-256 or ECDSA P-384".into(),
                ));
            }
        };
        Ok(Self {
            keyid: hex::encode(ring::digest::digest(&ring::digest::SHA256, der)),
            spki_der: der.to_vec(),
            kind,
            raw: spki.subject_public_key.data.to_vec(),
        })
    }

    fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        let algs: &[&'static dyn signature::VerificationAlgorithm] = match self.kind {
            KeyKind::Ed25519 => &[&signature::ED25519],
            KeyKind::P256 => &[
                &signature::ECDSA_P256_SHA256_ASN1,
                &signature::ECDSA_P256_SHA256_FIXED,
            ],
            KeyKind::P384 => &[
                &signature::ECDSA_P384_SHA384_ASN1,
                &signature::ECDSA_P384_SHA384_FIXED,
            ],
        };
        algs.iter().any(|a| {
            UnparsedPublicKey::new(*a, &self.raw)
                .verify(msg, sig)
                .is_ok()
        })
    }
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload.
    pub payload: String,
    /// The payload's type.
    pub payload_type: String,
    /// Signatures over PAE(payloadType, payload).
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Key hint (not trusted: every registered key is tried).
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the signature.
    pub sig: String,
}

/// DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

fn b64(text: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

/// Signs `payload` into an envelope with an Ed25519 key (PKCS#8): for tests and
/// for suppliers without their own tooling.
pub fn sign_envelope(
    payload_type: &str,
    payload: &[u8],
    pkcs8: &[u8],
) -> Result<Envelope, GateError> {
    let key = signature::Ed25519KeyPair::from_pkcs8(pkcs8)
        .map_err(|e| GateError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))?;
    let sig = key.sign(&pae(payload_type, payload));
    Ok(Envelope {
        payload: STANDARD.encode(payload),
        payload_type: payload_type.to_string(),
        signatures: vec![EnvelopeSignature {
            keyid: String::new(),
            sig: STANDARD.encode(sig.as_ref()),
        }],
    })
}

/// Verifies a DSSE envelope against `keys`: returns the payload and the key
/// that signed it.
pub fn verify_envelope<'k>(
    env: &Envelope,
    keys: &'k [SupplierKey],
    supplier: &str,
) -> Result<(Vec<u8>, &'k SupplierKey), GateError> {
    let payload = b64(&env.payload)
        .ok_or_else(|| GateError::Provenance("the envelope payload is not base64".into()))?;
    if env.signatures.is_empty() || env.signatures.len() > 16 {
        return Err(GateError::Provenance(
            "the envelope has no signatures (or more than 16)".into(),
        ));
    }
    let msg = pae(&env.payload_type, &payload);
    for s in &env.signatures {
        let Some(sig) = b64(&s.sig) else { continue };
        if let Some(k) = keys.iter().find(|k| k.verifies(&msg, &sig)) {
            return Ok((payload, k));
        }
    }
    Err(GateError::Unsigned {
        supplier: supplier.to_string(),
    })
}

/// in-toto Statement v1 (the fields the gate reads).
#[derive(Debug, Clone, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    ty: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
struct Subject {
    #[serde(default)]
    name: String,
    digest: std::collections::BTreeMap<String, String>,
}

/// SLSA Provenance v1 (required fields).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Provenance {
    build_definition: BuildDefinition,
    run_details: RunDetails,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition {
    build_type: String,
    external_parameters: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
struct RunDetails {
    builder: Builder,
}

#[derive(Debug, Clone, Deserialize)]
struct Builder {
    id: String,
}

/// What a verified release's evidence says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The supplier key that signed the provenance.
    pub signed_by: String,
    /// SLSA builder id.
    pub builder_id: String,
    /// SLSA build type.
    pub build_type: String,
    /// The subject's name in the statement.
    pub subject_name: String,
    /// CycloneDX spec version of the SBOM.
    pub sbom_spec: String,
    /// Components listed in the SBOM.
    pub sbom_components: usize,
}

/// Checks a DSSE provenance envelope (JSON) for the image with SHA-256
/// `image_sha256` (hex), signed by one of `keys` of `supplier`.
pub fn check_provenance(
    envelope_json: &[u8],
    image_sha256: &str,
    keys: &[SupplierKey],
    supplier: &str,
) -> Result<(String, String, String, String), GateError> {
    if envelope_json.len() > MAX_ENVELOPE_BYTES {
        return Err(GateError::Provenance(format!(
            "envelope is larger than {MAX_ENVELOPE_BYTES} bytes"
        )));
    }
    let env: Envelope = serde_json::from_slice(envelope_json)
        .map_err(|e| GateError::Provenance(format!("not a DSSE envelope: {e}")))?;
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(GateError::Provenance(format!(
            "payload type {:?} is not {IN_TOTO_PAYLOAD_TYPE}",
            env.payload_type
        )));
    }
    let (payload, key) = verify_envelope(&env, keys, supplier)?;
    let st: Statement = serde_json::from_slice(&payload)
        .map_err(|e| GateError::Provenance(format!("not an in-toto statement: {e}")))?;
    if st.ty != STATEMENT_V1 {
        return Err(GateError::Provenance(format!(
            "statement type {:?} is not {STATEMENT_V1}",
            st.ty
        )));
    }
    if st.predicate_type != SLSA_PROVENANCE_V1 {
        return Err(GateError::Provenance(format!(
            "predicate type {:?} is not {SLSA_PROVENANCE_V1}",
            st.predicate_type
        )));
    }
    let prov: Provenance = serde_json::from_value(st.predicate)
        .map_err(|e| GateError::Provenance(format!("not a SLSA Provenance v1 predicate: {e}")))?;
    if prov.run_details.builder.id.is_empty()
        || prov.build_definition.build_type.is_empty()
        || !prov.build_definition.external_parameters.is_object()
    {
        return Err(GateError::Provenance(
            "SLSA provenance lacks builder.id, buildType or externalParameters".into(),
        ));
    }
    let want = image_sha256.to_ascii_lowercase();
    let subject = st
        .subject
        .iter()
        .find(|s| s.digest.get("sha256").map(|d| d.to_ascii_lowercase()) == Some(want.clone()))
        .ok_or(GateError::Subject { image: want })?;
    Ok((
        key.keyid.clone(),
        prov.run_details.builder.id,
        prov.build_definition.build_type,
        subject.name.clone(),
    ))
}

/// Parses and validates a CycloneDX JSON SBOM; returns its spec version and
/// component count.
pub fn check_sbom(sbom_json: &[u8]) -> Result<(String, usize), GateError> {
    use cyclonedx_bom::prelude::*;
    if sbom_json.len() > MAX_SBOM_BYTES {
        return Err(GateError::Sbom(format!(
            "larger than {MAX_SBOM_BYTES} bytes"
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(sbom_json).map_err(|e| GateError::Sbom(format!("not JSON: {e}")))?;
    if value.get("bomFormat").and_then(|v| v.as_str()) != Some("CycloneDX") {
        return Err(GateError::Sbom("bomFormat is not \"CycloneDX\"".into()));
    }
    let spec = value
        .get("specVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    // cyclonedx-bom knows CycloneDX up to 1.5; 1.6 (what current generators
    // such as cyclonedx-py write by default) added fields but changed none,
    // so a 1.6 document is checked against the 1.5 model: what 1.5 knows is
    // validated, and a 1.6-only field the model does not know is refused.
    let mut value = value;
    if spec == "1.6" {
        value["specVersion"] = "1.5".into();
    }
    let bom = Bom::parse_json_value(value)
        .map_err(|e| GateError::Sbom(format!("not a valid CycloneDX document: {e}")))?;
    let result = bom.validate();
    if result.has_errors() {
        return Err(GateError::Sbom(format!(
            "CycloneDX validation failed: {result:?}"
        )));
    }
    let components = bom.components.as_ref().map(|c| c.0.len()).unwrap_or(0);
    Ok((spec, components))
}

/// The whole gate: provenance and SBOM for one image.
pub fn check_release(
    image_sha256: &str,
    sbom_json: &[u8],
    provenance_json: &[u8],
    keys: &[SupplierKey],
    supplier: &str,
) -> Result<Verified, GateError> {
    let (signed_by, builder_id, build_type, subject_name) =
        check_provenance(provenance_json, image_sha256, keys, supplier)?;
    let (sbom_spec, sbom_components) = check_sbom(sbom_json)?;
    Ok(Verified {
        signed_by,
        builder_id,
        build_type,
        subject_name,
        sbom_spec,
        sbom_components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    fn key() -> (Vec<u8>, SupplierKey) {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(kp.public_key().as_ref());
        (
            pkcs8.as_ref().to_vec(),
            SupplierKey::from_spki_der(&spki).unwrap(),
        )
    }

    fn statement(sha: &str) -> Vec<u8> {
        serde_json::json!({
            "_type": STATEMENT_V1,
            "subject": [{"name": "fw.bin", "digest": {"sha256": sha}}],
            "predicateType": SLSA_PROVENANCE_V1,
            "predicate": {
                "buildDefinition": {"buildType": "https://example.com/make@v1", "externalParameters": {"ref": "v1"}},
                "runDetails": {"builder": {"id": "https://ci.example.com/builder"}}
            }
        })
        .to_string()
        .into_bytes()
    }

    const SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    fn sbom() -> Vec<u8> {
        serde_json::json!({
            "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
            "components": [{"type": "library", "name": "zlib", "version": "1.3"}]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn cyclonedx_1_6_is_checked_against_the_1_5_model() {
        let doc = |spec: &str, extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "bomFormat": "CycloneDX", "specVersion": spec, "version": 1,
                "components": [{"type": "library", "name": "zlib", "version": "1.3",
                                "purl": "pkg:generic/zlib@1.3"}]
            });
            v["components"][0]["type"] = extra;
            serde_json::to_vec(&v).unwrap()
        };
        assert_eq!(
            check_sbom(&doc("1.6", "library".into())).unwrap(),
            ("1.6".to_owned(), 1)
        );
        // A component type only 1.6 has is refused with the reason.
        assert!(check_sbom(&doc("1.6", "cryptographic-asset".into())).is_err());
        assert!(check_sbom(&doc("1.7", "library".into())).is_err());
    }

    #[test]
    fn a_signed_matching_release_passes() {
        let (sk, pk) = key();
        let env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, &statement(SHA), &sk).unwrap();
        let json = serde_json::to_vec(&env).unwrap();
        let v = check_release(SHA, &sbom(), &json, std::slice::from_ref(&pk), "acme").unwrap();
        assert_eq!(v.signed_by, pk.keyid);
        assert_eq!(v.builder_id, "https://ci.example.com/builder");
        assert_eq!(v.sbom_components, 1);
    }

    #[test]
    fn each_defect_is_refused_with_its_reason() {
        let (sk, pk) = key();
        let (_, other) = key();
        let keys = [pk];
        let good = sign_envelope(IN_TOTO_PAYLOAD_TYPE, &statement(SHA), &sk).unwrap();
        let j = |e: &Envelope| serde_json::to_vec(e).unwrap();
        // Signed by a key the supplier did not register.
        assert!(matches!(
            check_provenance(&j(&good), SHA, &[other], "acme"),
            Err(GateError::Unsigned { .. })
        ));
        // For another image.
        let wrong = "00".repeat(32);
        assert!(matches!(
            check_provenance(&j(&good), &wrong, &keys, "acme"),
            Err(GateError::Subject { .. })
        ));
        // Payload changed after signing.
        let mut tampered = good.clone();
        tampered.payload = STANDARD.encode(statement(&wrong));
        assert!(matches!(
            check_provenance(&j(&tampered), &wrong, &keys, "acme"),
            Err(GateError::Unsigned { .. })
        ));
        // Unsigned, wrong payload type, not JSON, not SLSA.
        let mut unsigned = good.clone();
        unsigned.signatures.clear();
        assert!(check_provenance(&j(&unsigned), SHA, &keys, "acme").is_err());
        let mut ty = good.clone();
        ty.payload_type = "text/plain".into();
        assert!(check_provenance(&j(&ty), SHA, &keys, "acme").is_err());
        assert!(check_provenance(b"{", SHA, &keys, "acme").is_err());
        let not_slsa = serde_json::to_vec(&serde_json::json!({
            "_type": STATEMENT_V1, "subject": [{"name": "x", "digest": {"sha256": SHA}}],
            "predicateType": "https://example.com/other", "predicate": {}
        }))
        .unwrap();
        let env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, &not_slsa, &sk).unwrap();
        assert!(matches!(
            check_provenance(&j(&env), SHA, &keys, "acme"),
            Err(GateError::Provenance(m)) if m.contains("predicate type")
        ));
        // SBOMs.
        assert!(check_sbom(b"{}").is_err());
        assert!(check_sbom(br#"{"bomFormat":"SPDX"}"#).is_err());
        assert!(check_sbom(&vec![b' '; MAX_SBOM_BYTES + 1]).is_err());
    }
}
