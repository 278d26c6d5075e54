//! Any bytes as a CoAP message to an OSCORE server context, as a response to
//! a client's request, and as an OSCORE option value: parsed without a panic;
//! nothing made up verifies (the fuzzer cannot forge AES-CCM tags), and a
//! refused request leaves the replay window as it was.
#![no_main]
use coap_lite::Packet;
use libfuzzer_sys::fuzz_target;
use palisade_oscore::{OscoreOption, Params, RequestBinding, SecurityContext};

fn context(sender: &[u8], recipient: &[u8]) -> SecurityContext {
    SecurityContext::derive(&Params {
        master_secret: &[7; 16],
        master_salt: &[],
        sender_id: sender,
        recipient_id: recipient,
        id_context: None,
    })
    .expect("context")
}

fuzz_target!(|data: &[u8]| {
    let _ = OscoreOption::decode(data);
    let Ok(p) = Packet::from_bytes(data) else {
        return;
    };
    let mut server = context(&[1], &[]);
    let before = server.replay_window().clone();
    if server.unprotect_request(&p).is_ok() {
        panic!("a made-up request verified");
    }
    assert_eq!(server.replay_window(), &before);
    let mut client = context(&[], &[1]);
    let binding = RequestBinding {
        kid: vec![],
        piv: vec![0],
        nonce: client.nonce(&[], &[0]).expect("nonce"),
    };
    assert!(client.unprotect_response(&p, &binding).is_err());
});
