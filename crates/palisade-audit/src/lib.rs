//! The tamper-evident audit log's maths, with no I/O.
//!
//! - [`Entry`]: one audit record and its canonical encoding; its SHA-256 digest is
//!   the Merkle leaf input.
//! - [`MerkleLog`]: the RFC 6962/9162 tree over entry digests (ct-merkle does the
//!   hashing and proofs), with inclusion and consistency proofs.
//! - [`note`]: C2SP signed-note checkpoints (`origin`, `size`, `root`), Ed25519.
//! - [`verify`]: recomputes a stored log against its signed checkpoints and names
//!   the first entry that was edited, deleted, inserted or reordered.

mod entry;
mod merkle;
pub mod note;
pub mod verify;

pub use entry::{Entry, EntryDraft, Outcome};
pub use merkle::{Digest32, MerkleLog, ProofError, verify_consistency, verify_inclusion};
pub use note::{Checkpoint, NoteError, NoteVerifier, sign_checkpoint};
pub use verify::{Problem, ProblemKind, StoredCheckpoint, Verifier, VerifyReport};
