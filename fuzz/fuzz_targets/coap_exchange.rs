//! Any sequence of datagrams as CoAP messages from a device to its session
//! (split on a two-byte length prefix), with notifications and timer ticks
//! in between: no panic, every answer is valid CoAP of bounded size, and the
//! session's queues stay within their limits.
#![no_main]
use std::time::{Duration, Instant};

use bytes::Bytes;
use coap_lite::Packet;
use libfuzzer_sys::fuzz_target;
use palisade_coap::exchange::{Act, Exchange, Limits, Notice};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_body: 4096,
        max_queued: 4,
        rate: 1000,
        burst: 1000,
    };
    let t0 = Instant::now();
    let mut x = Exchange::new(limits, 1, 0);
    let mut rest = data;
    let mut step = 0u64;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 1500;
        rest = &rest[2..];
        let (msg, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        step += 1;
        let now = t0 + Duration::from_millis(step * 700);
        let mut acts = x.incoming(msg, now, i64::try_from(step).unwrap_or(0) * 700);
        if step % 3 == 0 {
            acts.extend(x.notify(
                Notice {
                    topic: "palisade/d/d1/commands".into(),
                    payload: Bytes::from(vec![b'x'; (step as usize * 97) % 3000]),
                    command: Some(format!("c{step}")),
                },
                now,
            ));
        }
        acts.extend(x.tick(now));
        for a in acts {
            if let Act::Send(b) = a {
                assert!(b.len() <= 1280, "a datagram larger than one block allows");
                Packet::from_bytes(&b).expect("the session sends valid CoAP");
            }
        }
    }
});
