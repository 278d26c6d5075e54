//! Bytes from a device connection as the gateway reads them: version probe, then
//! the v3.1.1 or v5 codec (bounded packet size), then the ACL decisions on every
//! topic and filter. Nothing may panic; nothing outside the device's namespace may
//! be granted.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use palisade_core::DeviceId;
use palisade_mqtt::{check_publish, check_subscribe};
use rmqtt_codec::version::VersionCodec;
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use tokio_util::codec::Decoder;

fn topics(p: &MqttPacket) -> (Vec<String>, Vec<String>) {
    match p {
        MqttPacket::V3(v3::Packet::Publish(p)) => (vec![p.topic.to_string()], vec![]),
        MqttPacket::V3(v3::Packet::Subscribe { topic_filters, .. }) => (
            vec![],
            topic_filters.iter().map(|(t, _)| t.to_string()).collect(),
        ),
        MqttPacket::V5(v5::Packet::Publish(p)) => (vec![p.topic.to_string()], vec![]),
        MqttPacket::V5(v5::Packet::Subscribe(s)) => (
            vec![],
            s.topic_filters.iter().map(|(t, _)| t.to_string()).collect(),
        ),
        _ => (vec![], vec![]),
    }
}

fuzz_target!(|data: &[u8]| {
    let me = DeviceId::parse("dev-1").expect("valid id");
    let mut buf = BytesMut::from(data);
    let mut codec = match VersionCodec.decode(&mut buf) {
        Ok(Some(rmqtt_codec::version::ProtocolVersion::MQTT5)) => {
            MqttCodec::V5(v5::Codec::new(65536, 65536))
        }
        Ok(Some(_)) => MqttCodec::V3(v3::Codec::new(65536)),
        _ => MqttCodec::V3(v3::Codec::new(65536)),
    };
    for _ in 0..64 {
        match codec.decode(&mut buf) {
            Ok(Some((p, _))) => {
                let (pubs, subs) = topics(&p);
                for t in pubs {
                    if check_publish(&me, &t).is_ok() {
                        assert!(t.starts_with("palisade/d/dev-1/") && !t.contains(['+', '#']));
                    }
                }
                for f in subs {
                    if check_subscribe(&me, &f).is_ok() {
                        assert!(f.starts_with("palisade/d/dev-1/"));
                    }
                }
            }
            _ => break,
        }
    }
});
