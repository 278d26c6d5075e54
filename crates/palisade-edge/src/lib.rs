//! The edge gateway's library half: what other programs must do exactly as the
//! edge does. Today that is how the edge runs its flow exporter
//! ([`softflowd`]), which the detection harness reuses so that it measures the
//! edge's real export settings. The binary (`main.rs`) is the edge itself.

pub mod softflowd;
