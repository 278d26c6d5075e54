//! RFC 8613 Appendix C's test vectors, byte for byte: key derivation (C.1–C.3),
//! protected requests (C.4–C.6) and responses (C.7, C.8), each verified by the
//! other side; then what the other side refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coap_lite::Packet;
use palisade_oscore::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const SECRET: &str = "0102030405060708090a0b0c0d0e0f10";
const SALT: &str = "9e7ca92223786340";
const ID_CONTEXT: &str = "37cbf3210017a2d3";

fn ctx(salt: &str, sender: &str, recipient: &str, id_context: Option<&str>) -> SecurityContext {
    let (secret, salt, s, r) = (h(SECRET), h(salt), h(sender), h(recipient));
    let c = id_context.map(h);
    SecurityContext::derive(&Params {
        master_secret: &secret,
        master_salt: &salt,
        sender_id: &s,
        recipient_id: &r,
        id_context: c.as_deref(),
    })
    .unwrap()
}

/// C.1 client and server, C.2 client, C.3 client.
fn c1_client() -> SecurityContext {
    ctx(SALT, "", "01", None)
}
fn c1_server() -> SecurityContext {
    ctx(SALT, "01", "", None)
}
fn c2_client() -> SecurityContext {
    ctx("", "00", "01", None)
}
fn c2_server() -> SecurityContext {
    ctx("", "01", "00", None)
}
fn c3_client() -> SecurityContext {
    ctx(SALT, "", "01", Some(ID_CONTEXT))
}
fn c3_server() -> SecurityContext {
    ctx(SALT, "01", "", Some(ID_CONTEXT))
}

fn check_keys(c: &SecurityContext, sk: &str, rk: &str, iv: &str, sn: &str, rn: &str) {
    assert_eq!(c.sender_key().to_vec(), h(sk), "sender key");
    assert_eq!(c.recipient_key().to_vec(), h(rk), "recipient key");
    assert_eq!(c.common_iv().to_vec(), h(iv), "common IV");
    assert_eq!(
        c.nonce(c.sender_id(), &[0]).unwrap().to_vec(),
        h(sn),
        "sender nonce"
    );
    assert_eq!(
        c.nonce(c.recipient_id(), &[0]).unwrap().to_vec(),
        h(rn),
        "recipient nonce"
    );
}

#[test]
fn c1_to_c3_key_derivation() {
    let (k1, k2, iv) = (
        "f0910ed7295e6ad4b54fc793154302ff",
        "ffb14e093c94c9cac9471648b4f98710",
        "4622d4dd6d944168eefb54987c",
    );
    check_keys(&c1_client(), k1, k2, iv, iv, "4722d4dd6d944169eefb54987c");
    check_keys(&c1_server(), k2, k1, iv, "4722d4dd6d944169eefb54987c", iv);
    check_keys(
        &c2_client(),
        "321b26943253c7ffb6003b0b64d74041",
        "e57b5635815177cd679ab4bcec9d7dda",
        "be35ae297d2dace910c52e99f9",
        "bf35ae297d2dace910c52e99f9",
        "bf35ae297d2dace810c52e99f9",
    );
    check_keys(
        &c3_client(),
        "af2a1300a5e95788b356336eeecd2b92",
        "e39a0c7c77b43f03b4b39ab9a268699f",
        "2ca58fb85ff1b81c0b7181b85e",
        "2ca58fb85ff1b81c0b7181b85e",
        "2da58fb85ff1b81d0b7181b85e",
    );
}

#[test]
fn the_section_5_4_aad_example() {
    assert_eq!(
        aad(&[0x00], &[0x25]),
        h("8368456e63727970743040498501810a4100412540")
    );
    assert_eq!(
        aad(&[], &[0x14]),
        h("8368456e63727970743040488501810a40411440")
    );
}

fn protect_and_verify(
    mut client: SecurityContext,
    mut server: SecurityContext,
    plain: &str,
    protected: &str,
    kid_context: bool,
) -> RequestBinding {
    client.set_sender_seq(20).unwrap();
    let req = Packet::from_bytes(&h(plain)).unwrap();
    let (out, binding) = client.protect_request(&req, kid_context).unwrap();
    assert_eq!(hex::encode(out.to_bytes().unwrap()), protected);
    assert_eq!(binding.piv, [0x14]);
    let (inner, at_server) = server
        .unprotect_request(&Packet::from_bytes(&h(protected)).unwrap())
        .unwrap();
    assert_eq!(hex::encode(inner.to_bytes().unwrap()), plain);
    assert_eq!(at_server, binding);
    // The same request again is a replay.
    let again = server.unprotect_request(&Packet::from_bytes(&h(protected)).unwrap());
    assert!(
        matches!(again, Err(OscoreError::Replay { seq: 20, .. })),
        "{again:?}"
    );
    binding
}

#[test]
fn c4_to_c6_protected_requests() {
    protect_and_verify(
        c1_client(),
        c1_server(),
        "44015d1f00003974396c6f63616c686f737483747631",
        "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e",
        false,
    );
    protect_and_verify(
        c2_client(),
        c2_server(),
        "440171c30000b932396c6f63616c686f737483747631",
        "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0",
        false,
    );
    protect_and_verify(
        c3_client(),
        c3_server(),
        "44012f8eef9bbf7a396c6f63616c686f737483747631",
        "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3",
        true,
    );
}

#[test]
fn c7_and_c8_protected_responses() {
    let request = "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e";
    let response = Packet::from_bytes(&h("64455d1f00003974ff48656c6c6f20576f726c6421")).unwrap();
    for (own_piv, server_seq, expected) in [
        (
            false,
            20,
            "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106",
        ),
        (
            true,
            0,
            "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e",
        ),
    ] {
        let mut server = c1_server();
        server.set_sender_seq(server_seq).unwrap();
        let (_, binding) = server
            .unprotect_request(&Packet::from_bytes(&h(request)).unwrap())
            .unwrap();
        let out = server
            .protect_response(&response, &binding, own_piv)
            .unwrap();
        assert_eq!(hex::encode(out.to_bytes().unwrap()), expected);
        let mut client = c1_client();
        client.set_sender_seq(20).unwrap();
        let inner = client
            .unprotect_response(&Packet::from_bytes(&h(expected)).unwrap(), &binding)
            .unwrap();
        assert_eq!(inner.to_bytes().unwrap(), response.to_bytes().unwrap());
    }
}

#[test]
fn altered_misaddressed_and_malformed_messages_are_refused() {
    let protected = h("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e");
    // A flipped ciphertext bit.
    let mut bad = protected.clone();
    *bad.last_mut().unwrap() ^= 1;
    let mut server = c1_server();
    assert_eq!(
        server
            .unprotect_request(&Packet::from_bytes(&bad).unwrap())
            .err(),
        Some(OscoreError::Decrypt)
    );
    // A failed request does not move the window: the genuine one still passes.
    server
        .unprotect_request(&Packet::from_bytes(&protected).unwrap())
        .unwrap();
    // Another context's server does not take it.
    assert_eq!(
        c2_server()
            .unprotect_request(&Packet::from_bytes(&protected).unwrap())
            .err(),
        Some(OscoreError::WrongContext)
    );
    // A plain CoAP request is not OSCORE.
    let plain = Packet::from_bytes(&h("44015d1f00003974396c6f63616c686f737483747631")).unwrap();
    assert_eq!(
        c1_server().unprotect_request(&plain).err(),
        Some(OscoreError::NotOscore)
    );
    assert_eq!(
        request_kid(&Packet::from_bytes(&protected).unwrap()).unwrap(),
        (vec![], None)
    );
    // Identifiers too long for the nonce.
    let long = [0u8; 8];
    assert_eq!(
        SecurityContext::derive(&Params {
            master_secret: &h(SECRET),
            master_salt: &[],
            sender_id: &long,
            recipient_id: &[],
            id_context: None,
        })
        .err(),
        Some(OscoreError::IdTooLong(8))
    );
    // A sender that used every sequence number stops.
    let mut client = c1_client();
    client.set_sender_seq(MAX_SEQ + 1).unwrap();
    assert_eq!(
        client.protect_request(&plain, false).err(),
        Some(OscoreError::SequenceExhausted)
    );
}

#[test]
fn requests_out_of_order_within_the_window_pass_once() {
    let mut client = c1_client();
    let mut server = c1_server();
    let plain = Packet::from_bytes(&h("44015d1f00003974396c6f63616c686f737483747631")).unwrap();
    let sent: Vec<Packet> = (0..40)
        .map(|_| client.protect_request(&plain, false).unwrap().0)
        .collect();
    for i in [5usize, 2, 39, 30, 10] {
        server.unprotect_request(&sent[i]).unwrap();
    }
    assert!(matches!(
        server.unprotect_request(&sent[30]),
        Err(OscoreError::Replay {
            seq: 30,
            why: Replay::Duplicate
        })
    ));
    assert!(matches!(
        server.unprotect_request(&sent[2]),
        Err(OscoreError::Replay {
            seq: 2,
            why: Replay::TooOld
        })
    ));
    server.unprotect_request(&sent[8]).unwrap();
}

#[test]
fn after_losing_its_window_a_server_wants_its_echo_back_before_it_answers() {
    let mut client = c1_client();
    let mut server = c1_server();
    let plain = Packet::from_bytes(&h("44015d1f00003974396c6f63616c686f737483747631")).unwrap();
    let (old, _) = client.protect_request(&plain, false).unwrap();
    server.forget_replay_window();
    let (first, binding) = client.protect_request(&plain, false).unwrap();
    let Err(OscoreError::NeedsEcho(at_server)) = server.unprotect_request(&first) else {
        panic!("a request after the window was lost must be challenged");
    };
    let challenge = server
        .echo_response(&first, &at_server, &[9, 8, 7, 6, 5, 4, 3, 2])
        .unwrap();
    let answer = client.unprotect_response(&challenge, &binding).unwrap();
    assert_eq!(u8::from(answer.header.code), 0x81, "4.01 Unauthorized");
    let echo = answer
        .get_option(coap_lite::CoapOption::from(ECHO_OPTION))
        .and_then(|v| v.front().cloned())
        .unwrap();
    assert_eq!(echo, [9, 8, 7, 6, 5, 4, 3, 2]);
    // A request with another Echo value, or none, is challenged again.
    let mut wrong = plain.clone();
    wrong.add_option(coap_lite::CoapOption::from(ECHO_OPTION), vec![1]);
    let (w, _) = client.protect_request(&wrong, false).unwrap();
    assert!(matches!(
        server.unprotect_request(&w),
        Err(OscoreError::NeedsEcho(_))
    ));
    let mut again = plain.clone();
    again.add_option(coap_lite::CoapOption::from(ECHO_OPTION), echo);
    let (fresh, _) = client.protect_request(&again, false).unwrap();
    let (inner, _) = server.unprotect_request(&fresh).unwrap();
    assert_eq!(inner.payload, plain.payload);
    assert!(!server.replay_window().is_lost());
    // Everything sent before the proven request counts as received.
    for stale in [&old, &first, &w, &fresh] {
        assert!(
            matches!(
                server.unprotect_request(stale),
                Err(OscoreError::Replay { .. })
            ),
            "a request from before the restart was taken"
        );
    }
    let (next, _) = client.protect_request(&plain, false).unwrap();
    server.unprotect_request(&next).unwrap();
}
