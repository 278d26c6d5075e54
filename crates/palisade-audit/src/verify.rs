//! Recomputes a stored log and names the first entry that was tampered with.
//!
//! The signed checkpoints are the trust anchor: every committed batch of entries
//! is covered by one, so a root that does not match its checkpoint proves
//! tampering within that batch. To name the entry and what was done to it, the
//! verifier also compares each row with the digest recorded when it was
//! appended, and recognises moved rows by recomputing a digest at other indices.

use std::fmt;

use crate::entry::Entry;
use crate::merkle::{Digest32, MerkleLog};
use crate::note::{Checkpoint, NoteVerifier};

/// A checkpoint as stored next to the entries.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// Claimed size (the signed note says the same, or verification fails).
    pub size: u64,
    /// The signed note text.
    pub note: String,
}

/// What was done to the first bad entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Its content changed.
    Edited,
    /// It is missing.
    Deleted,
    /// An entry that was never appended by the log stands here.
    Inserted,
    /// It holds another position's entry.
    Reordered,
    /// Entries and their recorded digests were rewritten consistently; only the
    /// signed checkpoint shows it.
    Rewritten,
    /// A checkpoint's signature or content is bad.
    BadCheckpoint,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Rewritten => "rewritten",
            ProblemKind::BadCheckpoint => "bad-checkpoint",
        })
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Index of the first bad entry (or the checkpoint size for `BadCheckpoint`).
    pub index: u64,
    /// What was done.
    pub kind: ProblemKind,
    /// Human-readable detail.
    pub detail: String,
}

/// The verifier's conclusion.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Entries read.
    pub entries: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: usize,
    /// The newest checkpoint that verified and matched.
    pub latest: Option<Checkpoint>,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

/// Streams stored rows through the tree and compares with signed checkpoints.
#[derive(Debug)]
pub struct Verifier {
    checkpoints: Vec<Checkpoint>,
    next_cp: usize,
    log: MerkleLog,
    rows: u64,
    latest: Option<Checkpoint>,
    /// First row anomaly: position, stored seq, the entry and its recorded digest.
    first_row: Option<(u64, Entry, Digest32)>,
    /// The row after the first anomaly, to recognise an insertion.
    after_first_row: Option<(Entry, Digest32)>,
    first_gap: Option<u64>,
    /// First checkpoint whose root did not match: (previous size, size).
    first_root_mismatch: Option<(u64, u64)>,
    bad_checkpoint: Option<Problem>,
}

impl Verifier {
    /// Checks every checkpoint's signature (and origin), then is ready for rows.
    pub fn new(key: &NoteVerifier, origin: Option<&str>, stored: &[StoredCheckpoint]) -> Self {
        let mut checkpoints = Vec::with_capacity(stored.len());
        let mut bad_checkpoint = None;
        for s in stored {
            match key.verify(&s.note, origin) {
                Ok(cp) if cp.size == s.size => checkpoints.push(cp),
                Ok(cp) => {
                    bad_checkpoint.get_or_insert(Problem {
                        index: s.size,
                        kind: ProblemKind::BadCheckpoint,
                        detail: format!(
                            "checkpoint stored for size {} is signed for size {}",
                            s.size, cp.size
                        ),
                    });
                }
                Err(e) => {
                    bad_checkpoint.get_or_insert(Problem {
                        index: s.size,
                        kind: ProblemKind::BadCheckpoint,
                        detail: format!("checkpoint for size {}: {e}", s.size),
                    });
                }
            }
        }
        checkpoints.sort_by_key(|c| c.size);
        checkpoints.dedup_by_key(|c| c.size);
        Self {
            checkpoints,
            next_cp: 0,
            log: MerkleLog::new(),
            rows: 0,
            latest: None,
            first_row: None,
            after_first_row: None,
            first_gap: None,
            first_root_mismatch: None,
            bad_checkpoint,
        }
    }

    /// Feeds the next stored row in storage order, with the digest recorded for it
    /// when it was appended.
    pub fn push(&mut self, entry: Entry, recorded: Digest32) {
        let position = self.rows;
        if entry.index != position && self.first_gap.is_none() && entry.index > position {
            self.first_gap = Some(position);
        }
        let digest = entry.digest();
        match &self.first_row {
            None if digest != recorded => self.first_row = Some((position, entry, recorded)),
            Some((p, _, _)) if *p + 1 == position => {
                self.after_first_row = Some((entry, recorded));
            }
            _ => {}
        }
        self.log.push(digest);
        self.rows += 1;
        while let Some(cp) = self.checkpoints.get(self.next_cp) {
            if cp.size > self.rows {
                break;
            }
            if cp.size == self.rows {
                if self.log.root() == cp.root {
                    if self.first_root_mismatch.is_none() {
                        self.latest = Some(cp.clone());
                    }
                } else if self.first_root_mismatch.is_none() {
                    let prev = self
                        .next_cp
                        .checked_sub(1)
                        .and_then(|i| self.checkpoints.get(i))
                        .map_or(0, |c| c.size);
                    self.first_root_mismatch = Some((prev, cp.size));
                }
            }
            self.next_cp += 1;
        }
    }

    fn classify_row(&self, position: u64, entry: &Entry, recorded: &Digest32) -> Problem {
        if position > 0 && entry.digest_at(position - 1) == *recorded {
            return Problem {
                index: position - 1,
                kind: ProblemKind::Inserted,
                detail: format!(
                    "entry {} was pushed down to position {position}: an entry was inserted before it",
                    position - 1
                ),
            };
        }
        if entry.digest_at(position + 1) == *recorded {
            return Problem {
                index: position,
                kind: ProblemKind::Deleted,
                detail: format!(
                    "position {position} holds entry {}: entry {position} was deleted and later entries renumbered",
                    position + 1
                ),
            };
        }
        if let Some((next, next_recorded)) = &self.after_first_row
            && next.digest_at(position) == *next_recorded
        {
            return Problem {
                index: position,
                kind: ProblemKind::Inserted,
                detail: format!(
                    "position {position} holds an entry the log never appended ({} {} by {}); the original entry {position} follows it",
                    entry.action, entry.subject, entry.actor
                ),
            };
        }
        for q in 0..self.rows {
            if q != position && entry.digest_at(q) == *recorded {
                return Problem {
                    index: position,
                    kind: ProblemKind::Reordered,
                    detail: format!("position {position} holds entry {q}"),
                };
            }
        }
        Problem {
            index: position,
            kind: ProblemKind::Edited,
            detail: format!(
                "entry {position} ({} {} by {}) does not match the digest recorded when it was appended",
                entry.action, entry.subject, entry.actor
            ),
        }
    }

    /// Concludes: the earliest problem wins.
    pub fn finish(self) -> VerifyReport {
        let mut problems: Vec<Problem> = Vec::new();
        if let Some(p) = self.bad_checkpoint.clone() {
            problems.push(p);
        }
        if let Some(pos) = self.first_gap {
            problems.push(Problem {
                index: pos,
                kind: ProblemKind::Deleted,
                detail: format!("entry {pos} is missing from storage"),
            });
        }
        if let Some((pos, entry, recorded)) = &self.first_row {
            problems.push(self.classify_row(*pos, entry, recorded));
        }
        if let Some((prev, size)) = self.first_root_mismatch {
            problems.push(Problem {
                index: prev,
                kind: ProblemKind::Rewritten,
                detail: format!(
                    "entries {prev}..{size} do not match the signed checkpoint of size {size}"
                ),
            });
        }
        let signed_max = self.checkpoints.last().map_or(0, |c| c.size);
        if signed_max > self.rows {
            problems.push(Problem {
                index: self.rows,
                kind: ProblemKind::Deleted,
                detail: format!(
                    "the log holds {} entries but a signed checkpoint covers {signed_max}",
                    self.rows
                ),
            });
        } else if self.rows > signed_max {
            problems.push(Problem {
                index: signed_max,
                kind: ProblemKind::Inserted,
                detail: format!(
                    "entries {signed_max}..{} are not covered by any signed checkpoint",
                    self.rows
                ),
            });
        }
        // Earliest index first; for one index, the most specific finding first.
        let problem = problems
            .into_iter()
            .min_by_key(|p| (p.index, p.kind == ProblemKind::Rewritten));
        VerifyReport {
            entries: self.rows,
            checkpoints: self.checkpoints.len(),
            latest: self.latest,
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryDraft;
    use crate::note::sign_checkpoint;
    use palisade_core::{KeyAlgorithm, Signer};
    use palisade_keystore::SoftwareKey;

    const ORIGIN: &str = "test/audit";

    struct Fixture {
        rows: Vec<(Entry, Digest32)>,
        cps: Vec<StoredCheckpoint>,
        key: NoteVerifier,
    }

    /// A log of `n` entries with a checkpoint after every entry.
    fn fixture(n: u64) -> Fixture {
        let (k, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "t").unwrap();
        let key = NoteVerifier::new(ORIGIN, k.public_key_raw()).unwrap();
        let mut log = MerkleLog::new();
        let mut rows = vec![];
        let mut cps = vec![];
        for i in 0..n {
            let e = EntryDraft::success("system", "test.append", format!("s{i}"))
                .seal(i, 1_000 + i as i64);
            let d = e.digest();
            log.push(d);
            rows.push((e, d));
            let cp = Checkpoint {
                origin: ORIGIN.into(),
                size: log.len(),
                root: log.root(),
            };
            cps.push(StoredCheckpoint {
                size: cp.size,
                note: sign_checkpoint(&cp, ORIGIN, &k).unwrap(),
            });
        }
        Fixture { rows, cps, key }
    }

    fn run(f: &Fixture) -> VerifyReport {
        let mut v = Verifier::new(&f.key, Some(ORIGIN), &f.cps);
        for (e, d) in &f.rows {
            v.push(e.clone(), *d);
        }
        v.finish()
    }

    #[test]
    fn an_untouched_log_verifies() {
        let f = fixture(10);
        let r = run(&f);
        assert_eq!(r.problem, None);
        assert_eq!(r.entries, 10);
        assert_eq!(r.latest.unwrap().size, 10);
    }

    #[test]
    fn names_an_edited_entry() {
        let mut f = fixture(10);
        f.rows[4].0.subject = "changed".into();
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (4, ProblemKind::Edited));
    }

    #[test]
    fn names_a_deleted_entry() {
        let mut f = fixture(10);
        f.rows.remove(6);
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (6, ProblemKind::Deleted));
    }

    #[test]
    fn names_a_deleted_entry_after_renumbering() {
        let mut f = fixture(10);
        f.rows.remove(3);
        for (i, row) in f.rows.iter_mut().enumerate() {
            row.0.index = i as u64;
        }
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (3, ProblemKind::Deleted));
    }

    #[test]
    fn names_reordered_entries() {
        let mut f = fixture(10);
        let (a, b) = (f.rows[2].clone(), f.rows[7].clone());
        f.rows[2] = (Entry { index: 2, ..b.0 }, b.1);
        f.rows[7] = (Entry { index: 7, ..a.0 }, a.1);
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (2, ProblemKind::Reordered));
    }

    #[test]
    fn names_an_inserted_entry() {
        let mut f = fixture(10);
        let forged = EntryDraft::success("operator:mallory", "cert.issue", "x").seal(5, 1);
        let d = forged.digest();
        f.rows.insert(5, (forged, d));
        for (i, row) in f.rows.iter_mut().enumerate() {
            row.0.index = i as u64;
        }
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (5, ProblemKind::Inserted));
    }

    #[test]
    fn names_an_inserted_entry_with_a_bogus_digest() {
        let mut f = fixture(10);
        let forged = EntryDraft::success("operator:mallory", "cert.issue", "x").seal(5, 1);
        f.rows.insert(5, (forged, [0; 32]));
        for (i, row) in f.rows.iter_mut().enumerate() {
            row.0.index = i as u64;
        }
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (5, ProblemKind::Inserted));
    }

    #[test]
    fn a_consistent_rewrite_is_caught_by_the_checkpoint() {
        let mut f = fixture(10);
        f.rows[8].0.subject = "rewritten".into();
        f.rows[8].1 = f.rows[8].0.digest();
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (8, ProblemKind::Rewritten));
    }

    #[test]
    fn an_appended_unsigned_entry_is_caught() {
        let mut f = fixture(5);
        let e = EntryDraft::success("x", "y", "z").seal(5, 1);
        let d = e.digest();
        f.rows.push((e, d));
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (5, ProblemKind::Inserted));
    }

    #[test]
    fn a_truncated_log_is_caught() {
        let mut f = fixture(5);
        f.rows.truncate(3);
        let p = run(&f).problem.unwrap();
        assert_eq!((p.index, p.kind), (3, ProblemKind::Deleted));
    }

    #[test]
    fn a_forged_checkpoint_is_caught() {
        let mut f = fixture(5);
        f.cps[2].note = f.cps[2].note.replace("\n3\n", "\n9\n");
        let p = run(&f).problem.unwrap();
        assert_eq!(p.kind, ProblemKind::BadCheckpoint);
    }
}
