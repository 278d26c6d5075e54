//! Palisade monitoring, the pure part: flow records decoded from IPFIX and
//! NetFlow v9, the device security metrics agents report, and the detectors
//! that turn both (with gateway and EST events) into findings. No I/O, no
//! clock: every function takes the time it needs.

pub mod detect;
pub mod flow;
pub mod telemetry;
pub mod verdict;
