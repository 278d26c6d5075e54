//! IPFIX / NetFlow v9 datagrams from the network: the collector must never
//! panic, and its state stays bounded whatever the exporters send (template
//! loops, zero or huge field lengths, unknown templates, many exporters).
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_detect::flow::{Collector, CollectorLimits};

fuzz_target!(|data: &[u8]| {
    let mut c = Collector::new(CollectorLimits {
        max_exporters: 4,
        ..CollectorLimits::default()
    })
    .unwrap();
    let mut out = Vec::new();
    // The input is a sequence of datagrams: [len u16][exporter u8][bytes].
    let mut rest = data;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let from = std::net::SocketAddr::from(([127, 0, 0, rest[2] % 8], 4739));
        c.decode(from, &rest[3..3 + len], 0, &mut out);
        rest = &rest[3 + len..];
        assert!(out.len() <= 1 << 20);
    }
});
