//! The RFC 6962 Merkle tree over entry digests, by ct-merkle.
//!
//! Leaf input is the 32-byte entry digest, so leaf hash = SHA-256(0x00 ‖ digest)
//! and interior nodes SHA-256(0x01 ‖ left ‖ right). The tree is kept in memory
//! (about 100 bytes an entry) and rebuilt from storage at start.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2::Sha256;

/// A 32-byte digest.
pub type Digest32 = [u8; 32];

/// A proof did not verify or was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Index or sizes out of range for the tree.
    #[error("proof request out of range: {0}")]
    OutOfRange(String),
    /// The proof does not lead to the expected root.
    #[error("proof does not verify against the checkpoint root")]
    Mismatch,
}

/// The in-memory Merkle tree of the audit log.
#[derive(Debug, Default)]
pub struct MerkleLog {
    tree: MemoryBackedTree<Sha256, Digest32>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry digest; returns its index.
    pub fn push(&mut self, digest: Digest32) -> u64 {
        self.tree.push(digest);
        self.tree.len() - 1
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The Merkle tree hash of all entries.
    pub fn root(&self) -> Digest32 {
        to32(self.tree.root().as_bytes())
    }

    /// The entry digest at `index`.
    pub fn leaf(&self, index: u64) -> Option<Digest32> {
        self.tree.get(usize::try_from(index).ok()?).copied()
    }

    /// Audit path for `index` in the current tree.
    pub fn inclusion_proof(&self, index: u64) -> Result<Vec<Digest32>, ProofError> {
        if index >= self.len() {
            return Err(ProofError::OutOfRange(format!(
                "entry {index} is not in a log of {} entries",
                self.len()
            )));
        }
        let idx = usize::try_from(index).map_err(|_| ProofError::OutOfRange(index.to_string()))?;
        Ok(split(self.tree.prove_inclusion(idx).as_bytes()))
    }

    /// Proof that the first `old_size` entries are a prefix of the current tree.
    pub fn consistency_proof(&self, old_size: u64) -> Result<Vec<Digest32>, ProofError> {
        if old_size == 0 || old_size > self.len() {
            return Err(ProofError::OutOfRange(format!(
                "old size {old_size} must be between 1 and {}",
                self.len()
            )));
        }
        let additions = usize::try_from(self.len() - old_size)
            .map_err(|_| ProofError::OutOfRange(old_size.to_string()))?;
        if additions == 0 {
            return Ok(Vec::new());
        }
        Ok(split(self.tree.prove_consistency(additions).as_bytes()))
    }
}

fn to32(g: &[u8]) -> Digest32 {
    let mut out = [0u8; 32];
    out.copy_from_slice(&g[..32]);
    out
}

fn split(bytes: &[u8]) -> Vec<Digest32> {
    bytes.chunks_exact(32).map(to32).collect()
}

fn root_hash(root: &Digest32, size: u64) -> RootHash<Sha256> {
    RootHash::new((*root).into(), size)
}

/// Checks that `leaf` (an entry digest) is entry `index` of the tree `(root, size)`.
pub fn verify_inclusion(
    leaf: &Digest32,
    index: u64,
    size: u64,
    root: &Digest32,
    proof: &[Digest32],
) -> Result<(), ProofError> {
    let proof = InclusionProof::<Sha256>::from_bytes(proof.concat());
    root_hash(root, size)
        .verify_inclusion(leaf, index, &proof)
        .map_err(|_| ProofError::Mismatch)
}

/// Checks that tree `(old_root, old_size)` is a prefix of `(new_root, new_size)`.
pub fn verify_consistency(
    old_size: u64,
    old_root: &Digest32,
    new_size: u64,
    new_root: &Digest32,
    proof: &[Digest32],
) -> Result<(), ProofError> {
    if old_size == new_size {
        return if old_root == new_root && proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    let proof = ConsistencyProof::<Sha256>::try_from_bytes(proof.concat())
        .map_err(|_| ProofError::Mismatch)?;
    root_hash(new_root, new_size)
        .verify_consistency(&root_hash(old_root, old_size), &proof)
        .map_err(|_| ProofError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn d(i: u8) -> Digest32 {
        [i; 32]
    }

    #[test]
    fn empty_root_is_hash_of_nothing() {
        let empty: Digest32 = Sha256::digest(b"").into();
        assert_eq!(MerkleLog::new().root(), empty);
    }

    #[test]
    fn matches_rfc6962_shape_for_three_leaves() {
        // MTH({a,b,c}) = H(1 ‖ H(1 ‖ H(0‖a) ‖ H(0‖b)) ‖ H(0‖c))
        let lh = |x: &Digest32| -> Digest32 {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(x);
            h.finalize().into()
        };
        let nh = |l: &Digest32, r: &Digest32| -> Digest32 {
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(l);
            h.update(r);
            h.finalize().into()
        };
        let mut log = MerkleLog::new();
        for i in 0..3 {
            log.push(d(i));
        }
        let expect = nh(&nh(&lh(&d(0)), &lh(&d(1))), &lh(&d(2)));
        assert_eq!(log.root(), expect);
    }

    #[test]
    fn proofs_verify_and_detect_changes() {
        let mut log = MerkleLog::new();
        let mut roots = vec![];
        for i in 0..37u8 {
            log.push(d(i));
            roots.push(log.root());
        }
        let size = log.len();
        for i in 0..size {
            let p = log.inclusion_proof(i).unwrap();
            verify_inclusion(&d(i as u8), i, size, &log.root(), &p).unwrap();
            assert!(verify_inclusion(&d(200), i, size, &log.root(), &p).is_err());
        }
        for old in 1..=size {
            let p = log.consistency_proof(old).unwrap();
            verify_consistency(old, &roots[old as usize - 1], size, &log.root(), &p).unwrap();
            if old < size {
                assert!(
                    verify_consistency(old, &roots[old as usize], size, &log.root(), &p).is_err()
                );
            }
        }
        assert!(log.inclusion_proof(size).is_err());
        assert!(log.consistency_proof(0).is_err());
    }
}
