//! Telemetry payloads as devices publish them: decoding never panics, and
//! whatever decodes passes its own bounds and can feed the detectors.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_detect::detect::{Engine, Observation};

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = palisade_detect::telemetry::decode(data) {
        if let Some(m) = t.metrics {
            assert!(m.check().is_ok());
            let mut e = Engine::default();
            let mut out = Vec::new();
            for at_ms in [0, 4_000_000] {
                e.observe(
                    &Observation::Telemetry {
                        device: "d".into(),
                        model: None,
                        at_ms,
                        metrics: m.clone(),
                        assigned: vec![],
                    },
                    &mut out,
                );
            }
        }
    }
});
