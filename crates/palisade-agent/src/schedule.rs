//! When to renew and how long to back off: pure functions of the certificate's
//! validity, the time and a jitter value, so tests drive them directly.

use time::{Duration, OffsetDateTime};

/// The renewal point: two thirds into the validity, spread by `jitter` (0..1)
/// across ±5 % of the lifetime so a fleet enrolled together does not renew
/// together. Never before `not_before`, never after `not_after`.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let life = not_after - not_before;
    if life <= Duration::ZERO {
        return not_before;
    }
    let j = jitter.clamp(0.0, 1.0);
    let fraction = 2.0 / 3.0 + (j - 0.5) * 0.1;
    (not_before + life * fraction).clamp(not_before, not_after)
}

/// The wait after `failures` consecutive failed attempts: 5 s doubling to at most
/// one hour, scaled by 0.5..1.0 with `jitter`, and never past `deadline` (the
/// certificate's expiry) when that is sooner.
pub fn backoff(
    failures: u32,
    jitter: f64,
    now: OffsetDateTime,
    deadline: OffsetDateTime,
) -> Duration {
    let base = Duration::seconds(5) * 2f64.powi(i32::try_from(failures.min(16)).unwrap_or(16));
    let capped = base.min(Duration::hours(1));
    let wait = capped * (0.5 + jitter.clamp(0.0, 1.0) * 0.5);
    let left = deadline - now;
    if left > Duration::ZERO && wait > left / 2 {
        left / 2
    } else {
        wait.max(Duration::seconds(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NB: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

    #[test]
    fn renews_at_about_two_thirds_of_the_lifetime() {
        let na = NB + Duration::days(30);
        let mid = renew_at(NB, na, 0.5);
        assert_eq!(mid, NB + Duration::days(20));
        let early = renew_at(NB, na, 0.0);
        let late = renew_at(NB, na, 1.0);
        assert!(early < mid && mid < late);
        assert!(early >= NB + Duration::days(18) && late <= NB + Duration::days(22));
    }

    #[test]
    fn never_renews_outside_the_validity() {
        assert_eq!(renew_at(NB, NB, 0.5), NB);
        assert_eq!(renew_at(NB, NB - Duration::days(1), 0.5), NB);
        let na = NB + Duration::hours(1);
        for j in [-5.0, 0.0, 0.3, 1.0, 9.0] {
            let r = renew_at(NB, na, j);
            assert!(r >= NB && r <= na);
        }
    }

    #[test]
    fn backoff_grows_caps_and_respects_the_deadline() {
        let far = NB + Duration::days(30);
        let b0 = backoff(0, 1.0, NB, far);
        let b3 = backoff(3, 1.0, NB, far);
        assert_eq!(b0, Duration::seconds(5));
        assert_eq!(b3, Duration::seconds(40));
        assert_eq!(backoff(40, 1.0, NB, far), Duration::hours(1));
        assert!(backoff(40, 0.0, NB, far) >= Duration::minutes(30));
        let near = NB + Duration::minutes(10);
        assert!(backoff(40, 1.0, NB, near) <= Duration::minutes(5));
    }
}
