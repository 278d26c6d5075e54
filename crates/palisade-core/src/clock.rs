//! Time is passed in: code that needs "now" takes a `Clock`, so tests can drive time.
//!
//! [`SystemClock`] is the one reader of the system clock in the workspace (clippy's
//! `disallowed-methods` refuses every other); only binaries and test harnesses
//! construct it. Pure code never does: it takes a `Clock` or a `now`.

use time::OffsetDateTime;

/// A source of the current time. Implemented over the system clock by the binaries
/// and by fixed or stepping clocks in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current UTC time.
    fn now(&self) -> OffsetDateTime;

    /// The current time in Unix milliseconds (how times are stored and sent).
    fn now_ms(&self) -> i64 {
        unix_ms(self.now())
    }
}

/// A time as Unix milliseconds, saturating far outside the representable range.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Unix milliseconds as RFC 3339 (UTC, to the millisecond when there are
/// any), or `None` outside the representable range.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// The system's clock: the one place the workspace reads the time of day.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one permitted reader (see the module doc)
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that always reads the same instant: for tests and reproducible runs.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ms_counts_milliseconds_and_saturates() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(unix_ms(t), 1_700_000_000_000);
        assert_eq!(FixedClock(t).now_ms(), 1_700_000_000_000);
        assert_eq!(
            unix_ms(t + time::Duration::milliseconds(7)),
            1_700_000_000_007
        );
    }
}
