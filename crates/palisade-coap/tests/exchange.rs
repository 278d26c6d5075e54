//! The CoAP layer of a device's session, driven with messages and time (no
//! sockets): deduplication, pings, Observe, confirmable notifications and
//! their retransmission, block-wise transfer both ways, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use palisade_coap::block::Block;
use palisade_coap::exchange::{Act, Exchange, Limits, Notice};
use palisade_mqtt::TopicKind;
use std::time::Instant;

fn request(t: MessageType, method: RequestType, mid: u16, path: &str, body: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(t);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(vec![0xa0, mid as u8]);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p.payload = body.to_vec();
    p
}

fn sent(acts: &[Act]) -> Vec<Packet> {
    acts.iter()
        .filter_map(|a| match a {
            Act::Send(b) => Some(Packet::from_bytes(b).expect("the server sends valid CoAP")),
            _ => None,
        })
        .collect()
}

fn code(p: &Packet) -> MessageClass {
    p.header.code
}

fn response(r: ResponseType) -> MessageClass {
    MessageClass::Response(r)
}

#[test]
fn telemetry_is_published_once_and_a_duplicate_gets_the_same_answer() {
    let now = Instant::now();
    let mut x = Exchange::new(Limits::default(), 100, 0);
    let post = request(
        MessageType::Confirmable,
        RequestType::Post,
        7,
        "telemetry",
        b"{\"t\":1}",
    );
    let raw = post.to_bytes().unwrap();
    let first = x.incoming(&raw, now, 0);
    assert!(first.contains(&Act::Publish {
        kind: TopicKind::Telemetry,
        payload: Bytes::from_static(b"{\"t\":1}"),
    }));
    let ack = &sent(&first)[0];
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 7);
    assert_eq!(ack.get_token(), post.get_token());
    assert_eq!(code(ack), response(ResponseType::Changed));
    // The retransmission of the same CON (its ACK was lost) is not published
    // again, and gets the same ACK.
    let again = x.incoming(&raw, now + Duration::from_secs(2), 0);
    assert!(!again.iter().any(|a| matches!(a, Act::Publish { .. })));
    assert_eq!(sent(&again), vec![ack.clone()]);
    // Events and acks map to their MQTT kinds; NON gets a NON answer.
    let ev = request(
        MessageType::NonConfirmable,
        RequestType::Post,
        8,
        "events",
        b"{}",
    );
    let acts = x.incoming(&ev.to_bytes().unwrap(), now, 0);
    assert!(acts.iter().any(|a| matches!(
        a,
        Act::Publish {
            kind: TopicKind::Events,
            ..
        }
    )));
    assert_eq!(
        sent(&acts)[0].header.get_type(),
        MessageType::NonConfirmable
    );
}

#[test]
fn unknown_resources_methods_options_and_formats_are_refused_with_coap_codes() {
    let now = Instant::now();
    let mut x = Exchange::new(Limits::default(), 1, 0);
    let cases: Vec<(Packet, ResponseType)> = vec![
        (
            request(
                MessageType::Confirmable,
                RequestType::Get,
                1,
                "devices/other/commands",
                b"",
            ),
            ResponseType::NotFound,
        ),
        (
            request(
                MessageType::Confirmable,
                RequestType::Delete,
                2,
                "telemetry",
                b"",
            ),
            ResponseType::MethodNotAllowed,
        ),
        (
            request(
                MessageType::Confirmable,
                RequestType::Post,
                3,
                "commands",
                b"",
            ),
            ResponseType::MethodNotAllowed,
        ),
        (
            {
                let mut p = request(
                    MessageType::Confirmable,
                    RequestType::Post,
                    4,
                    "telemetry",
                    b"x",
                );
                p.add_option(CoapOption::ContentFormat, vec![60]); // CBOR
                p
            },
            ResponseType::UnsupportedContentFormat,
        ),
        (
            {
                let mut p = request(
                    MessageType::Confirmable,
                    RequestType::Get,
                    5,
                    "commands",
                    b"",
                );
                p.add_option(CoapOption::Unknown(65001), vec![1]); // critical, unknown
                p
            },
            ResponseType::BadOption,
        ),
        (
            {
                let mut p = request(
                    MessageType::Confirmable,
                    RequestType::Get,
                    6,
                    "commands",
                    b"",
                );
                p.add_option(CoapOption::ProxyUri, b"coap://elsewhere/".to_vec());
                p
            },
            ResponseType::ProxyingNotSupported,
        ),
        (
            {
                let mut p = request(
                    MessageType::Confirmable,
                    RequestType::Get,
                    7,
                    "commands",
                    b"",
                );
                p.add_option(CoapOption::Block2, vec![0x07]); // BERT
                p
            },
            ResponseType::BadOption,
        ),
    ];
    for (p, want) in cases {
        let acts = x.incoming(&p.to_bytes().unwrap(), now, 0);
        assert_eq!(code(&sent(&acts)[0]), response(want), "{p:?}");
        assert!(!acts.iter().any(|a| matches!(a, Act::Publish { .. })));
    }
}

#[test]
fn malformed_messages_are_reset_or_dropped_and_pings_answered() {
    let now = Instant::now();
    let mut x = Exchange::new(Limits::default(), 1, 0);
    // A CON with a token length of 9 (reserved): Reset with its message id.
    let acts = x.incoming(&[0x49, 0x01, 0x12, 0x34, 1, 2, 3], now, 0);
    let rst = &sent(&acts)[0];
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.message_id, 0x1234);
    assert!(acts.contains(&Act::Refused("malformed")));
    // A truncated NON, an option delta of 15 (payload marker misuse): no answer.
    for bad in [&[0x50, 0x01][..], &[0x50, 0x01, 0, 1, 0xf0][..], &[][..]] {
        let acts = x.incoming(bad, now, 0);
        assert!(sent(&acts).is_empty(), "{bad:?}");
        assert!(acts.contains(&Act::Refused("malformed")));
    }
    // An empty CON is a ping: Reset.
    let mut ping = Packet::new();
    ping.header.set_type(MessageType::Confirmable);
    ping.header.code = MessageClass::Empty;
    ping.header.message_id = 77;
    let acts = x.incoming(&ping.to_bytes().unwrap(), now, 0);
    assert_eq!(sent(&acts)[0].header.get_type(), MessageType::Reset);
}

fn observe(x: &mut Exchange, mid: u16, path: &str, now: Instant) -> Vec<Act> {
    let mut p = request(MessageType::Confirmable, RequestType::Get, mid, path, b"");
    p.set_observe_value(0);
    x.incoming(&p.to_bytes().unwrap(), now, 0)
}

fn command(id: &str, body: &[u8]) -> Notice {
    Notice {
        topic: "palisade/d/th-1/commands".into(),
        payload: Bytes::copy_from_slice(body),
        command: Some(id.into()),
    }
}

#[test]
fn commands_arrive_as_confirmable_notifications_acknowledged_one_at_a_time() {
    let t0 = Instant::now();
    let mut x = Exchange::new(Limits::default(), 500, 0);
    // Not observed: nothing is sent (the commands service sends it again).
    assert!(
        x.notify(command("c0", b"{}"), t0)
            .contains(&Act::Refused("not_observed"))
    );
    let acts = observe(&mut x, 1, "commands", t0);
    assert!(acts.contains(&Act::CommandsObserved));
    let first = &sent(&acts)[0];
    assert_eq!(code(first), response(ResponseType::Content));
    assert_eq!(first.get_observe_value(), Some(Ok(0)));
    let token = first.get_token().to_vec();

    let n1 = sent(&x.notify(command("c1", b"{\"n\":1}"), t0))[0].clone();
    assert_eq!(n1.header.get_type(), MessageType::Confirmable);
    assert_eq!(n1.get_token(), token);
    assert_eq!(n1.get_observe_value(), Some(Ok(1)));
    assert_eq!(n1.payload, b"{\"n\":1}");
    // NSTART 1: the second waits for the first's ACK.
    assert!(sent(&x.notify(command("c2", b"{\"n\":2}"), t0)).is_empty());
    let mut ack = Packet::new();
    ack.header.set_type(MessageType::Acknowledgement);
    ack.header.code = MessageClass::Empty;
    ack.header.message_id = n1.header.message_id;
    let acts = x.incoming(&ack.to_bytes().unwrap(), t0, 0);
    assert!(acts.contains(&Act::Delivered("c1".into())));
    let n2 = &sent(&acts)[0];
    assert_eq!(n2.get_observe_value(), Some(Ok(2)));

    // Unacknowledged: sent again at growing intervals, then given up (the
    // observation ends; the command stays undelivered).
    let mut at = t0;
    let mut resent = 0;
    for _ in 0..200 {
        at += Duration::from_millis(500);
        let acts = x.tick(at);
        if acts.contains(&Act::Retransmitted) {
            assert_eq!(sent(&acts)[0], *n2);
            resent += 1;
        }
        if acts.contains(&Act::Refused("notification_unacknowledged")) {
            break;
        }
    }
    assert_eq!(resent, 4, "MAX_RETRANSMIT");
    assert!(!x.observes_commands());
    assert!(
        at - t0 >= Duration::from_secs(2 + 4 + 8 + 16),
        "binary backoff from 2 s"
    );
}

#[test]
fn a_reset_to_a_notification_ends_the_observation() {
    let t0 = Instant::now();
    let mut x = Exchange::new(Limits::default(), 9, 0);
    observe(&mut x, 1, "commands", t0);
    let n = sent(&x.notify(command("c1", b"{}"), t0))[0].clone();
    let mut rst = Packet::new();
    rst.header.set_type(MessageType::Reset);
    rst.header.code = MessageClass::Empty;
    rst.header.message_id = n.header.message_id;
    let acts = x.incoming(&rst.to_bytes().unwrap(), t0, 0);
    assert!(!acts.iter().any(|a| matches!(a, Act::Delivered(_))));
    assert!(!x.observes_commands());
}

#[test]
fn large_notifications_go_block_wise_and_the_rest_is_fetched_with_block2() {
    let t0 = Instant::now();
    let mut x = Exchange::new(Limits::default(), 9, 0);
    observe(&mut x, 1, "commands", t0);
    let body: Vec<u8> = (0..2500u32).map(|i| b'a' + (i % 26) as u8).collect();
    let n = sent(&x.notify(command("big", &body), t0))[0].clone();
    let b0 = Block::decode(n.get_first_option(CoapOption::Block2).unwrap()).unwrap();
    assert_eq!((b0.num, b0.more, b0.size()), (0, true, 1024));
    let mut got = n.payload.clone();
    for (mid, num) in [(2u16, 1u32), (3, 2)] {
        let mut get = request(
            MessageType::Confirmable,
            RequestType::Get,
            mid,
            "commands",
            b"",
        );
        Block {
            num,
            more: false,
            szx: 6,
        }
        .set(&mut get, CoapOption::Block2);
        let r = sent(&x.incoming(&get.to_bytes().unwrap(), t0, 0))[0].clone();
        let b = Block::decode(r.get_first_option(CoapOption::Block2).unwrap()).unwrap();
        assert_eq!(b.num, num);
        assert_eq!(b.more, num < 2);
        got.extend_from_slice(&r.payload);
    }
    assert_eq!(got, body);
    // A block past the end is refused.
    let mut get = request(
        MessageType::Confirmable,
        RequestType::Get,
        4,
        "commands",
        b"",
    );
    Block {
        num: 9,
        more: false,
        szx: 6,
    }
    .set(&mut get, CoapOption::Block2);
    let r = sent(&x.incoming(&get.to_bytes().unwrap(), t0, 0))[0].clone();
    assert_eq!(code(&r), response(ResponseType::BadOption));
}

fn block1(mid: u16, num: u32, more: bool, szx: u8, body: &[u8]) -> Packet {
    let mut p = request(
        MessageType::Confirmable,
        RequestType::Post,
        mid,
        "telemetry",
        body,
    );
    Block { num, more, szx }.set(&mut p, CoapOption::Block1);
    p
}

#[test]
fn block1_uploads_are_assembled_in_order_and_bounded() {
    let t0 = Instant::now();
    let limits = Limits {
        max_body: 200,
        ..Limits::default()
    };
    let mut x = Exchange::new(limits, 9, 0);
    let body: Vec<u8> = (0..150u8).collect();
    let mut acts = Vec::new();
    for (i, chunk) in body.chunks(64).enumerate() {
        let more = (i + 1) * 64 < body.len();
        acts = x.incoming(
            &block1(10 + i as u16, i as u32, more, 2, chunk)
                .to_bytes()
                .unwrap(),
            t0,
            0,
        );
        let r = &sent(&acts)[0];
        let want = if more {
            ResponseType::Continue
        } else {
            ResponseType::Changed
        };
        assert_eq!(code(r), response(want));
    }
    assert!(acts.contains(&Act::Publish {
        kind: TopicKind::Telemetry,
        payload: Bytes::from(body.clone()),
    }));
    // Out of order: 4.08, and nothing is published.
    x.incoming(
        &block1(20, 0, true, 2, &body[..64]).to_bytes().unwrap(),
        t0,
        0,
    );
    let acts = x.incoming(
        &block1(21, 2, true, 2, &body[..64]).to_bytes().unwrap(),
        t0,
        0,
    );
    assert_eq!(
        code(&sent(&acts)[0]),
        response(ResponseType::RequestEntityIncomplete)
    );
    // A block that is not the announced size: 4.08.
    let acts = x.incoming(
        &block1(22, 0, true, 2, &body[..10]).to_bytes().unwrap(),
        t0,
        0,
    );
    assert_eq!(
        code(&sent(&acts)[0]),
        response(ResponseType::RequestEntityIncomplete)
    );
    // Past the limit: 4.13 with Size1.
    let mut last = Vec::new();
    for i in 0..4u32 {
        last = x.incoming(
            &block1(30 + i as u16, i, true, 2, &[0u8; 64])
                .to_bytes()
                .unwrap(),
            t0,
            0,
        );
    }
    let r = &sent(&last)[0];
    assert_eq!(code(r), response(ResponseType::RequestEntityTooLarge));
    assert_eq!(r.get_first_option(CoapOption::Size1), Some(&vec![200u8]));
    assert!(!last.iter().any(|a| matches!(a, Act::Publish { .. })));
}

#[test]
fn a_flooding_device_is_told_to_wait() {
    let t0 = Instant::now();
    let limits = Limits {
        rate: 1,
        burst: 3,
        ..Limits::default()
    };
    let mut x = Exchange::new(limits, 9, 0);
    let mut published = 0;
    let mut limited = 0;
    for mid in 0..10u16 {
        let p = request(
            MessageType::NonConfirmable,
            RequestType::Post,
            mid,
            "telemetry",
            b"{}",
        );
        let acts = x.incoming(&p.to_bytes().unwrap(), t0, 0);
        if acts.iter().any(|a| matches!(a, Act::Publish { .. })) {
            published += 1;
        }
        if code(&sent(&acts)[0]) == response(ResponseType::TooManyRequests) {
            limited += 1;
        }
    }
    assert_eq!((published, limited), (3, 7));
}

#[test]
fn est_requests_wait_for_the_service_and_only_est_reaches_a_birth_certificate() {
    use palisade_coap::exchange::{CF_PKCS10, EstMode, EstOp};
    let t0 = Instant::now();
    let csr = |mid: u16, path: &str, cf: u8| {
        let mut p = request(
            MessageType::Confirmable,
            RequestType::Post,
            mid,
            path,
            b"\x30\x82",
        );
        p.add_option(CoapOption::ContentFormat, vec![1, cf]);
        p
    };
    let mut x = Exchange::new(Limits::default(), 9, 0).with_est(EstMode::EnrolmentOnly);
    // Telemetry from a birth certificate: 4.01, nothing published.
    let acts = x.incoming(
        &request(
            MessageType::Confirmable,
            RequestType::Post,
            1,
            "telemetry",
            b"{}",
        )
        .to_bytes()
        .unwrap(),
        t0,
        0,
    );
    assert_eq!(code(&sent(&acts)[0]), response(ResponseType::Unauthorized));
    assert!(!acts.iter().any(|a| matches!(a, Act::Publish { .. })));
    // sen with a CSR (286): handed to the service, no answer yet; its
    // retransmission meanwhile is dropped; the answer is then remembered.
    let p = csr(2, ".well-known/est/sen", (CF_PKCS10 & 0xff) as u8);
    let acts = x.incoming(&p.to_bytes().unwrap(), t0, 0);
    let Some(req) = acts.iter().find_map(|a| match a {
        Act::Est(r) => Some(r.clone()),
        _ => None,
    }) else {
        panic!("no EST act: {acts:?}");
    };
    assert_eq!(req.op, EstOp::Enroll);
    assert!(sent(&acts).is_empty());
    assert!(sent(&x.incoming(&p.to_bytes().unwrap(), t0, 0)).is_empty());
    let answer = x.est_answer(&req, ResponseType::Changed, Some(281), b"pkcs7".to_vec());
    let r = Packet::from_bytes(&answer).unwrap();
    assert_eq!((r.header.message_id, r.get_token()), (2, p.get_token()));
    assert_eq!(
        sent(&x.incoming(&p.to_bytes().unwrap(), t0, 0)),
        vec![r],
        "the same answer again"
    );
    // The wrong content format, the wrong method, an unknown operation.
    let acts = x.incoming(
        &csr(3, ".well-known/est/sen", 50).to_bytes().unwrap(),
        t0,
        0,
    );
    assert_eq!(
        code(&sent(&acts)[0]),
        response(ResponseType::UnsupportedContentFormat)
    );
    let acts = x.incoming(
        &request(
            MessageType::Confirmable,
            RequestType::Get,
            4,
            ".well-known/est/sen",
            b"",
        )
        .to_bytes()
        .unwrap(),
        t0,
        0,
    );
    assert_eq!(
        code(&sent(&acts)[0]),
        response(ResponseType::MethodNotAllowed)
    );
    let acts = x.incoming(
        &request(
            MessageType::Confirmable,
            RequestType::Get,
            5,
            ".well-known/est/skg",
            b"",
        )
        .to_bytes()
        .unwrap(),
        t0,
        0,
    );
    assert_eq!(code(&sent(&acts)[0]), response(ResponseType::NotFound));
    // Over OSCORE there is no EST.
    let mut o = Exchange::new(Limits::default(), 9, 0);
    let acts = o.incoming(
        &request(
            MessageType::Confirmable,
            RequestType::Get,
            6,
            ".well-known/est/crts",
            b"",
        )
        .to_bytes()
        .unwrap(),
        t0,
        0,
    );
    assert_eq!(code(&sent(&acts)[0]), response(ResponseType::NotFound));
}
