//! An audit entry and its canonical, length-prefixed encoding.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Whether the recorded action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action took effect.
    Success,
    /// The action was refused (bad input, wrong role, failed login).
    Denied,
}

impl Outcome {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
        }
    }
}

/// An entry as a service hands it to the log: the log assigns index and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDraft {
    /// Who acted: `operator:NAME`, `system`, `device:ID`, `anonymous@ADDR`.
    pub actor: String,
    /// What happened, dotted: `cert.issue`, `device.register`, `auth.failure`.
    pub action: String,
    /// What it happened to: a device id, a serial, a token id.
    pub subject: String,
    /// Success or denial.
    pub outcome: Outcome,
    /// Extra facts, as a JSON object.
    pub detail: serde_json::Value,
}

impl EntryDraft {
    /// A successful action.
    pub fn success(actor: impl Into<String>, action: &str, subject: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action: action.to_owned(),
            subject: subject.into(),
            outcome: Outcome::Success,
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    /// A refused action.
    pub fn denied(actor: impl Into<String>, action: &str, subject: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Denied,
            ..Self::success(actor, action, subject)
        }
    }

    /// Adds detail (a JSON object).
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    /// Seals the draft at `index` and `time_ms` (Unix milliseconds).
    pub fn seal(self, index: u64, time_ms: i64) -> Entry {
        Entry {
            index,
            time_ms,
            actor: self.actor,
            action: self.action,
            subject: self.subject,
            outcome: self.outcome.as_str().to_owned(),
            // serde_json writes object keys in a stable order (BTreeMap without
            // the preserve_order feature), so this text is canonical.
            detail: self.detail.to_string(),
        }
    }
}

/// A sealed audit entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: u64,
    /// When it was appended, Unix milliseconds.
    pub time_ms: i64,
    /// Who acted.
    pub actor: String,
    /// What happened.
    pub action: String,
    /// To what.
    pub subject: String,
    /// `success` or `denied`.
    pub outcome: String,
    /// Extra facts, JSON text.
    pub detail: String,
}

const DOMAIN: &[u8] = b"palisade-audit-entry-v1\0";

impl Entry {
    /// The canonical encoding: a domain tag, index and time big-endian, then each
    /// text field with a 4-byte length prefix. Unambiguous by construction.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            DOMAIN.len() + 16 + 20 + self.actor.len() + self.action.len() + self.detail.len(),
        );
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        for field in [
            &self.actor,
            &self.action,
            &self.subject,
            &self.outcome,
            &self.detail,
        ] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    /// SHA-256 of the canonical encoding: the Merkle leaf input.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// The digest the entry would have at another index (used to tell a moved
    /// entry from an edited one).
    pub fn digest_at(&self, index: u64) -> [u8; 32] {
        let mut moved = self.clone();
        moved.index = index;
        moved.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = Entry {
            index: 1,
            time_ms: 2,
            actor: "ab".into(),
            action: "c".into(),
            subject: String::new(),
            outcome: "success".into(),
            detail: "{}".into(),
        };
        let mut b = a.clone();
        b.actor = "a".into();
        b.action = "bc".into();
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), a.digest_at(2));
    }
}
