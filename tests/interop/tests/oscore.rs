//! OSCORE (RFC 8613) against another implementation: aiocoap's (PyPI,
//! `aiocoap[oscore]`), driven through `peers/aiocoap_oscore.py`. With random
//! security contexts (Sender and Recipient IDs of 0 to 7 bytes, with and
//! without an ID Context) and random messages (codes, Uri-Path and Uri-Query
//! segments, Content-Format, Observe, an outer Uri-Host, payloads), each side
//! verifies what the other protected, in both roles, with responses under
//! the request's nonce and under their own Partial IV; each refuses a
//! replayed request: 1 000 rounds. Repeatable from the printed seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use coap_lite::{CoapOption, MessageClass, Packet};
use palisade_interop::*;
use palisade_oscore::{OscoreError, Params, RequestBinding, SecurityContext};
use serde_json::{Value, json};

const ROUNDS: usize = 1000;

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .arg(peer_script("aiocoap_oscore.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn call(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("peer said {line:?}: {e}"))
    }

    fn ok(&mut self, cmd: Value) -> Value {
        let v = self.call(cmd.clone());
        assert!(v.get("error").is_none(), "aiocoap refused {cmd}: {v}");
        v
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Material {
    secret: Vec<u8>,
    salt: Vec<u8>,
    client: Vec<u8>,
    server: Vec<u8>,
    id_context: Option<Vec<u8>>,
}

fn bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// `lo` to `lo + span - 1` random bytes.
fn some_bytes(rng: &mut Rng, lo: u64, span: u64) -> Vec<u8> {
    let n = lo + rng.below(span);
    bytes(rng, n as usize)
}

fn material(rng: &mut Rng) -> Material {
    let client = some_bytes(rng, 0, 8);
    let mut server = some_bytes(rng, 0, 8);
    if server == client {
        server.push(0x7f);
        server.truncate(7);
        if server == client {
            server = vec![0xee];
        }
    }
    Material {
        secret: some_bytes(rng, 16, 17),
        salt: some_bytes(rng, 0, 9),
        client,
        server,
        id_context: (rng.below(2) == 0).then(|| some_bytes(rng, 1, 8)),
    }
}

impl Material {
    fn ours(&self, sender: &[u8], recipient: &[u8]) -> SecurityContext {
        SecurityContext::derive(&Params {
            master_secret: &self.secret,
            master_salt: &self.salt,
            sender_id: sender,
            recipient_id: recipient,
            id_context: self.id_context.as_deref(),
        })
        .unwrap()
    }

    fn theirs(&self, sender: &[u8], recipient: &[u8]) -> Value {
        json!({
            "op": "context",
            "secret": hex::encode(&self.secret),
            "salt": hex::encode(&self.salt),
            "sender": hex::encode(sender),
            "recipient": hex::encode(recipient),
            "id_context": self.id_context.as_ref().map(hex::encode),
        })
    }
}

fn word(rng: &mut Rng) -> Vec<u8> {
    let n = 1 + rng.below(10) as usize;
    (0..n)
        .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789-"[rng.below(37) as usize])
        .collect()
}

fn request(rng: &mut Rng, mid: u16) -> Packet {
    let mut p = Packet::new();
    p.header.message_id = mid;
    p.header.code = MessageClass::from([1u8, 2, 3, 4][rng.below(4) as usize]);
    p.set_token(some_bytes(rng, 0, 9));
    p.add_option(CoapOption::UriHost, b"device.example".to_vec());
    for _ in 0..1 + rng.below(3) {
        p.add_option(CoapOption::UriPath, word(rng));
    }
    if rng.below(2) == 0 {
        p.add_option(CoapOption::UriQuery, word(rng));
    }
    if rng.below(4) == 0 {
        p.add_option(CoapOption::Observe, vec![]);
    }
    if rng.below(2) == 0 {
        p.add_option(CoapOption::ContentFormat, vec![1 + rng.below(60) as u8]);
        let n = rng.below(300) as usize;
        p.payload = bytes(rng, n);
    }
    p
}

fn response(rng: &mut Rng, to: &Packet) -> Packet {
    let mut p = Packet::new();
    p.header.message_id = to.header.message_id;
    p.header.set_type(coap_lite::MessageType::Acknowledgement);
    p.header.code = MessageClass::from([0x45u8, 0x44, 0x84, 0x80][rng.below(4) as usize]);
    p.set_token(to.get_token().to_vec());
    if rng.below(2) == 0 {
        p.add_option(CoapOption::ContentFormat, vec![1 + rng.below(60) as u8]);
    }
    let n = rng.below(300) as usize;
    p.payload = bytes(rng, n);
    p
}

/// Code, protected options and payload: what OSCORE carries end to end
/// (Uri-Host stays outside and a peer need not hand it back).
/// Code, options (number, value) and payload.
type Inner = (u8, Vec<(u16, Vec<u8>)>, Vec<u8>);

fn inner(p: &Packet) -> Inner {
    let mut opts = vec![];
    for (&n, values) in p.options() {
        if matches!(n, 3 | 7 | 9 | 35 | 39) {
            continue;
        }
        for v in values {
            opts.push((n, v.clone()));
        }
    }
    opts.sort_by_key(|(n, _)| *n);
    (u8::from(p.header.code), opts, p.payload.clone())
}

fn packet(v: &Value) -> Packet {
    Packet::from_bytes(&hex::decode(v["msg"].as_str().unwrap()).unwrap()).unwrap()
}

fn hexp(p: &Packet) -> String {
    hex::encode(p.to_bytes().unwrap())
}

#[test]
fn our_oscore_and_aiocoaps_verify_each_other_in_both_roles() {
    if !have_python_module("aiocoap.oscore", "aiocoap[oscore]") {
        return;
    }
    let seed = 0x05c0_8e13_u64 ^ u64::from(std::process::id());
    eprintln!("seed {seed:#x}");
    let mut rng = Rng(seed | 1);
    // One aiocoap process per role; each round installs a new context.
    let mut server = Peer::start();
    let mut peer = Peer::start();
    for round in 0..ROUNDS {
        let m = material(&mut rng);
        let mid = round as u16;
        // Our client, aiocoap's server.
        let mut client = m.ours(&m.client, &m.server);
        server.ok(m.theirs(&m.server, &m.client));
        let req = request(&mut rng, mid);
        let (protected, binding) = client
            .protect_request(&req, m.id_context.is_some())
            .unwrap();
        let got = server.ok(json!({ "op": "unprotect_request", "msg": hexp(&protected) }));
        assert_eq!(
            inner(&packet(&got)),
            inner(&req),
            "round {round}: request to aiocoap"
        );
        let replay = server.call(json!({ "op": "unprotect_request", "msg": hexp(&protected) }));
        assert!(
            replay["error"].as_str().unwrap_or("").contains("Replay"),
            "{replay}"
        );
        let resp = response(&mut rng, &req);
        let own_piv = rng.below(2) == 0;
        let sealed = server.ok(json!({ "op": "protect_response", "msg": hexp(&resp),
            "request": got["request"], "piv": own_piv }));
        let opened = client
            .unprotect_response(&packet(&sealed), &binding)
            .unwrap();
        assert_eq!(
            inner(&opened),
            inner(&resp),
            "round {round}: response from aiocoap"
        );

        // aiocoap's client, our server.
        peer.ok(m.theirs(&m.client, &m.server));
        let mut ours = m.ours(&m.server, &m.client);
        let req = request(&mut rng, mid);
        let sealed = peer.ok(json!({ "op": "protect_request", "msg": hexp(&req) }));
        let (opened, at_server): (Packet, RequestBinding) =
            ours.unprotect_request(&packet(&sealed)).unwrap();
        assert_eq!(
            inner(&opened),
            inner(&req),
            "round {round}: request from aiocoap"
        );
        assert!(matches!(
            ours.unprotect_request(&packet(&sealed)),
            Err(OscoreError::Replay { .. })
        ));
        let resp = response(&mut rng, &req);
        let own_piv = rng.below(2) == 0;
        let protected = ours.protect_response(&resp, &at_server, own_piv).unwrap();
        let got = peer.ok(json!({ "op": "unprotect_response", "msg": hexp(&protected),
            "request": sealed["request"] }));
        assert_eq!(
            inner(&packet(&got)),
            inner(&resp),
            "round {round}: response to aiocoap"
        );
    }
}

/// RFC 8613 Appendix B.1.2 with RFC 9175's Echo: our server restored without
/// its replay window challenges aiocoap's first request with a protected
/// 4.01 carrying an Echo value, takes the request that brings it back, and
/// from then on refuses everything sent before it.
#[test]
fn a_server_that_lost_its_replay_window_takes_aiocoaps_request_only_with_its_echo() {
    if !have_python_module("aiocoap.oscore", "aiocoap[oscore]") {
        return;
    }
    let mut rng = Rng(0x0ec0_1234_5678_9abd);
    let m = material(&mut rng);
    let mut peer = Peer::start();
    peer.ok(m.theirs(&m.client, &m.server));
    let mut ours = m.ours(&m.server, &m.client);
    let req = request(&mut rng, 1);
    let before = peer.ok(json!({ "op": "protect_request", "msg": hexp(&req) }));
    ours.forget_replay_window();
    let first = peer.ok(json!({ "op": "protect_request", "msg": hexp(&req) }));
    let Err(OscoreError::NeedsEcho(binding)) = ours.unprotect_request(&packet(&first)) else {
        panic!("the first request after the restart was not challenged");
    };
    let echo = some_bytes(&mut rng, 8, 1);
    let challenge = ours
        .echo_response(&packet(&first), &binding, &echo)
        .unwrap();
    let answer = packet(&peer.ok(json!({ "op": "unprotect_response",
        "msg": hexp(&challenge), "request": first["request"] })));
    assert_eq!(u8::from(answer.header.code), 0x81, "aiocoap reads a 4.01");
    let echoed = answer
        .get_option(CoapOption::from(palisade_oscore::ECHO_OPTION))
        .and_then(|v| v.front().cloned())
        .unwrap();
    assert_eq!(echoed, echo);
    let mut again = req.clone();
    again.add_option(CoapOption::from(palisade_oscore::ECHO_OPTION), echoed);
    let fresh = peer.ok(json!({ "op": "protect_request", "msg": hexp(&again) }));
    let (opened, _) = ours.unprotect_request(&packet(&fresh)).unwrap();
    assert_eq!(inner(&opened).2, req.payload);
    for stale in [&before, &first, &fresh] {
        assert!(matches!(
            ours.unprotect_request(&packet(stale)),
            Err(OscoreError::Replay { .. })
        ));
    }
}
