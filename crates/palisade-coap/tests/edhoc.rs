//! EDHOC between lakers' Initiator (as a device runs it) and the server's
//! Responder, ending in OSCORE contexts that talk to each other; refusals for
//! a tampered message_3, an unknown session, and a credential by reference.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use lakers::{
    ConnId, Credential, CredentialTransfer, EDHOCMethod, EDHOCSuite, EdhocInitiator,
    EdhocMessageBuffer,
};
use lakers_crypto_rustcrypto::Crypto;
use palisade_coap::edhoc::{EdhocError, Responder, ServerIdentity, ccs, ccs_key};
use palisade_oscore::{Params, SecurityContext};
use rand_core::OsRng;

struct DeviceKey {
    d: [u8; 32],
    ccs: Vec<u8>,
    point: Vec<u8>,
}

fn device(subject: &str) -> DeviceKey {
    let secret = p256::SecretKey::random(&mut OsRng);
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    let (x, y) = (point.x().unwrap(), point.y().unwrap());
    DeviceKey {
        d: secret.to_bytes().into(),
        ccs: ccs(subject, b"d", x, y),
        point: point.as_bytes().to_vec(),
    }
}

/// Runs the device's side up to message_3; returns message_3 and the device's
/// OSCORE context.
fn initiate(
    server: &mut Responder,
    server_cred: &[u8],
    dev: &DeviceKey,
    transfer: CredentialTransfer,
) -> (Vec<u8>, Vec<u8>, SecurityContext) {
    let init = EdhocInitiator::new(
        Crypto::new(OsRng),
        EDHOCMethod::StatStat,
        EDHOCSuite::CipherSuite2,
    );
    let c_i = ConnId::from_slice(&[0x07]).unwrap();
    let (init, m1) = init.prepare_message_1(Some(c_i), &None).unwrap();
    let m2 = server.message_1(m1.as_slice(), Instant::now()).unwrap();
    let (mut init, c_r, _id_cred_r, _ead) = init
        .parse_message_2(&EdhocMessageBuffer::new_from_slice(&m2).unwrap())
        .unwrap();
    init.set_identity(dev.d, Credential::parse_ccs(&dev.ccs).unwrap())
        .unwrap();
    let init = init
        .verify_message_2(Credential::parse_ccs(server_cred).unwrap())
        .unwrap();
    let (init, m3, _prk) = init.prepare_message_3(transfer, &None).unwrap();
    let mut done = init.completed_without_message_4().unwrap();
    let secret = done.edhoc_exporter(0, &[], 16);
    let salt = done.edhoc_exporter(1, &[], 8);
    // RFC 9528 Appendix A.1: the Initiator's Sender ID is C_R, its
    // Recipient ID C_I.
    let ctx = SecurityContext::derive(&Params {
        master_secret: &secret[..16],
        master_salt: &salt[..8],
        sender_id: c_r.as_slice(),
        recipient_id: c_i.as_slice(),
        id_context: None,
    })
    .unwrap();
    (m3.as_slice().to_vec(), c_r.as_slice().to_vec(), ctx)
}

#[test]
fn edhoc_ends_in_oscore_contexts_that_understand_each_other() {
    let id = ServerIdentity::generate("palisade").unwrap();
    let mut server = Responder::new(&id).unwrap();
    let dev = device("m-1");
    let (m3, c_r, mut client) = initiate(
        &mut server,
        id.credential(),
        &dev,
        CredentialTransfer::ByValue,
    );
    assert_eq!(c_r.len(), 4, "the server's C_R is four bytes");
    let claim = server.message_3(&c_r, &m3).unwrap();
    assert_eq!(claim.key.subject, "m-1");
    assert_eq!(
        claim.key.point, dev.point,
        "the key the inventory's certificate must hold"
    );
    assert_eq!(claim.recipient_id(), &c_r[..]);
    let mut ctx = claim.finish().unwrap();
    assert_eq!(server.pending(), 0);
    // The device protects a request under its Sender ID (C_R); the server's
    // context opens it.
    let mut req = Packet::new();
    req.header.code = MessageClass::Request(RequestType::Post);
    req.add_option(CoapOption::UriPath, b"telemetry".to_vec());
    req.payload = b"{\"t\":1}".to_vec();
    let (outer, client_binding) = client.protect_request(&req, false).unwrap();
    let (inner, binding) = ctx.unprotect_request(&outer).unwrap();
    assert_eq!(inner.payload, req.payload);
    assert_eq!(ctx.recipient_id(), &c_r[..]);
    assert_eq!(
        ctx.sender_id(),
        &[0x07],
        "the server's Sender ID is the device's C_I"
    );
    // And the answer goes back.
    let mut resp = Packet::new();
    resp.header.code = MessageClass::Response(ResponseType::Changed);
    let protected = ctx.protect_response(&resp, &binding, false).unwrap();
    let opened = client
        .unprotect_response(&protected, &client_binding)
        .unwrap();
    assert_eq!(
        opened.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
}

#[test]
fn a_tampered_message_3_or_an_unknown_session_is_refused() {
    let id = ServerIdentity::generate("palisade").unwrap();
    let mut server = Responder::new(&id).unwrap();
    let dev = device("m-1");
    let (mut m3, c_r, _) = initiate(
        &mut server,
        id.credential(),
        &dev,
        CredentialTransfer::ByValue,
    );
    let last = m3.len() - 1;
    m3[last] ^= 1;
    assert!(matches!(
        server.message_3(&c_r, &m3),
        Err(EdhocError::Protocol { .. })
    ));
    // The session is gone: the same message_3 again finds nothing.
    assert!(matches!(
        server.message_3(&c_r, &m3),
        Err(EdhocError::NoSession(_))
    ));
    assert!(matches!(
        server.message_3(b"nope", &m3),
        Err(EdhocError::NoSession(_))
    ));
}

#[test]
fn a_credential_by_reference_cannot_name_a_device() {
    let id = ServerIdentity::generate("palisade").unwrap();
    let mut server = Responder::new(&id).unwrap();
    let dev = device("m-1");
    let (m3, c_r, _) = initiate(
        &mut server,
        id.credential(),
        &dev,
        CredentialTransfer::ByReference,
    );
    assert!(matches!(
        server.message_3(&c_r, &m3),
        Err(EdhocError::Credential)
    ));
}

#[test]
fn sessions_without_message_3_expire_and_garbage_is_refused() {
    let id = ServerIdentity::generate("palisade").unwrap();
    let mut server = Responder::new(&id).unwrap();
    let dev = device("m-1");
    let _ = initiate(
        &mut server,
        id.credential(),
        &dev,
        CredentialTransfer::ByValue,
    );
    assert_eq!(server.pending(), 1);
    server.expire(Instant::now() + Duration::from_secs(31));
    assert_eq!(server.pending(), 0);
    for junk in [&b""[..], b"\x03", b"\xf5\xf5", &[0x42; 300]] {
        assert!(server.message_1(junk, Instant::now()).is_err(), "{junk:?}");
    }
    assert!(ccs_key(&dev.ccs).is_some());
}
