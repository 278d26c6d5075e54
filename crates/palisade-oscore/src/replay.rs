//! The server's replay window (RFC 8613 §7.4): the highest sequence number
//! received and a bitmap of the 32 below it. A sequence number is accepted
//! once, and only if it is not older than the window; the window moves only
//! after the request it came with has been verified.

/// How many sequence numbers below the highest one are remembered.
pub const WINDOW: u64 = 32;

/// A sliding replay window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest sequence number accepted, if any.
    highest: Option<u64>,
    /// Bit i set: `highest - 1 - i` was accepted.
    seen: u32,
    /// The window was lost (a restart without it): no request is known to
    /// be fresh until one comes back with the server's Echo value.
    lost: bool,
}

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Received before.
    Duplicate,
    /// Older than the window remembers: it may have been received.
    TooOld,
}

impl ReplayWindow {
    /// Whether `seq` would be accepted now (nothing changes).
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        let Some(h) = self.highest else {
            return Ok(());
        };
        if seq > h {
            return Ok(());
        }
        if seq == h {
            return Err(Replay::Duplicate);
        }
        let back = h - seq;
        if back > WINDOW {
            return Err(Replay::TooOld);
        }
        if self.seen & (1u32 << (back - 1)) != 0 {
            Err(Replay::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as received (after [`ReplayWindow::check`] and the
    /// request's verification).
    pub fn accept(&mut self, seq: u64) {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.seen = 0;
            }
            Some(h) if seq > h => {
                let shift = seq - h;
                self.seen = if shift > u64::from(u32::BITS) {
                    0
                } else {
                    // The old highest becomes bit shift - 1.
                    let moved = if shift == u64::from(u32::BITS) {
                        0
                    } else {
                        self.seen << shift
                    };
                    moved | (1u32 << (shift - 1))
                };
                self.highest = Some(seq);
            }
            Some(h) if seq < h && h - seq <= WINDOW => {
                self.seen |= 1u32 << (h - seq - 1);
            }
            Some(_) => {}
        }
    }

    /// The highest sequence number accepted.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// A window that was lost: nothing is known about what was received.
    pub fn lost() -> Self {
        Self {
            lost: true,
            ..Self::default()
        }
    }

    /// Whether the window was lost and not yet restarted.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Restarts a lost window at `seq`, a request proven fresh (RFC 8613
    /// Appendix B.1.2): it and every number below it count as received.
    pub fn restart_at(&mut self, seq: u64) {
        self.highest = Some(seq);
        self.seen = u32::MAX;
        self.lost = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_accepted_once_and_old_ones_never() {
        let mut w = ReplayWindow::default();
        for s in [5, 3, 40, 39, 8, 41] {
            assert_eq!(w.check(s), Ok(()), "{s}");
            w.accept(s);
            assert_eq!(w.check(s), Err(Replay::Duplicate), "{s} again");
        }
        // 41 - 32 = 9 is the oldest remembered; 8 (seen), 5 and 3 are older.
        assert_eq!(w.check(9), Ok(()));
        assert_eq!(w.check(8), Err(Replay::TooOld));
        assert_eq!(w.check(3), Err(Replay::TooOld));
        assert_eq!(w.check(5), Err(Replay::TooOld));
        w.accept(1000);
        assert_eq!(w.check(41), Err(Replay::TooOld));
        assert_eq!(w.check(999), Ok(()));
        w.accept(1032);
        assert_eq!(w.check(1000), Err(Replay::Duplicate));
        assert_eq!(w.check(999), Err(Replay::TooOld));
    }
}
