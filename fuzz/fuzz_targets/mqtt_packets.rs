//! Bytes from a device connection as the gateway reads them, through the
//! gateway's own code (`palisade_mqtt::session`): the version probe, the
//! bounded v3.1.1 or v5 codec, the CONNECT checks, the protocol-neutral view
//! and the session state machine with its ACL decisions. Nothing may panic;
//! nothing outside the device's namespace may be granted or handed on.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use palisade_core::DeviceId;
use palisade_mqtt::Limits;
use palisade_mqtt::session::{In, Proto, Reaction, Session, check_connect, incoming};
use rmqtt_codec::version::VersionCodec;
use tokio_util::codec::Decoder;

const ME: &str = "dev-1";
const OWN: &str = "palisade/d/dev-1/";

fuzz_target!(|data: &[u8]| {
    let me = DeviceId::parse(ME).expect("valid id");
    let mut buf = BytesMut::from(data);
    let proto = match VersionCodec.decode(&mut buf) {
        Ok(Some(v)) => Proto::from_version(v).unwrap_or(Proto::V3),
        _ => Proto::V3,
    };
    let limits = Limits::default();
    let mut codec = proto.codec(limits.max_packet_bytes);
    let mut session = Session::new(me, proto, limits, false, 0);
    for step in 0..64i64 {
        // The protocol-neutral view of the packet, decoded from a copy, for
        // the topic invariants below.
        let mut peek = buf.clone();
        let view = match proto.codec(limits.max_packet_bytes).decode(&mut peek) {
            Ok(Some((p, _))) => incoming(p),
            _ => break,
        };
        let packet = match codec.decode(&mut buf) {
            Ok(Some((p, _))) => p,
            _ => break,
        };
        if let In::Connect(c) = &view
            && let Ok(a) = check_connect(Some(ME), c)
        {
            assert_eq!(a.device.as_str(), ME);
            assert!(a.will.is_none_or(|(k, _)| k.device_publishes()));
        }
        match session.handle(packet, step * 7) {
            Reaction::Publish { kind, retain, .. } => {
                assert!(kind.device_publishes());
                let In::Publish { topic, .. } = &view else {
                    panic!("a publish reaction to a packet that is not a PUBLISH");
                };
                assert!(topic.starts_with(OWN) && !topic.contains(['+', '#']));
                assert!(retain.is_none_or(|t| t == **topic));
            }
            Reaction::Subscribed { denied, .. } => {
                let In::Subscribe { filters, .. } = &view else {
                    panic!("a SUBACK for a packet that is not a SUBSCRIBE");
                };
                for (f, _) in filters {
                    let refused = denied.iter().any(|(d, _)| d == f);
                    assert!(refused || f.starts_with(OWN), "granted {f:?}");
                }
            }
            Reaction::Close { .. } => break,
            // Nothing was sent to the device, so no PUBACK can deliver anything.
            Reaction::Delivered { .. } => panic!("a PUBACK freed a message never sent"),
            _ => {}
        }
        assert!(session.inflight() <= limits.max_inflight);
    }
});
