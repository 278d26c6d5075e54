//! Time is passed in: code that needs "now" takes a `Clock`, so tests can drive time.

use time::OffsetDateTime;

/// A source of the current time. Implemented over the system clock by the binaries
/// and by fixed or stepping clocks in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current UTC time.
    fn now(&self) -> OffsetDateTime;
}

/// A clock that always reads the same instant: for tests and reproducible runs.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}
