//! Palisade's persistence, behind the [`Store`] trait so that services never name
//! a database. [`SqlStore`] implements it on SQLite (the embedded default) and
//! on PostgreSQL ([`Database`] says which).
//!
//! Every security-relevant change is committed together with its audit entries
//! and a signed checkpoint covering them, in one transaction, before the caller
//! is answered. Concurrent commits are grouped into one transaction (group
//! commit), each in its own savepoint so that one failure does not undo others.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod leader;
pub mod notify;
mod records;
mod sql;

use async_trait::async_trait;
use palisade_audit::{Digest32, EntryDraft, StoredCheckpoint};
use palisade_core::{
    DeviceId, DeviceState, ModelId, OperatorName, RolloutName, SiteName, SupplierName, Tag,
    UnmanagedState,
};

pub use records::*;
pub use sql::{AuditConfig, Database, Engine, PoolSettings, SqlReader, SqlStore, SqliteStore};

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist.
    #[error("{what} {key:?} not found")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// A uniqueness or state precondition failed.
    #[error("{what} {key:?}: {reason}")]
    Conflict {
        /// What kind of thing.
        what: &'static str,
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data does not match its signed audit checkpoint.
    #[error(
        "the audit log in {path} does not match its latest signed checkpoint ({detail}); the database may have been altered: run `palisade audit verify --db {path}` to find the first bad entry"
    )]
    AuditDamaged {
        /// Database file.
        path: String,
        /// What did not match.
        detail: String,
    },
    /// Stored data cannot be read back (an invalid enum value, say).
    #[error("stored {what} is invalid: {detail}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Signing the audit checkpoint failed.
    #[error("signing the audit checkpoint failed: {0}")]
    Checkpoint(String),
    /// The writer task has stopped (the server is shutting down).
    #[error("the store is shutting down")]
    Closed,
    /// An audit proof was asked for out of range.
    #[error(transparent)]
    Proof(#[from] palisade_audit::ProofError),
    /// The database location or settings are wrong.
    #[error("store configuration: {detail}")]
    Config {
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The database server cannot be reached (or did not answer in time).
    #[error("the database is unavailable: {detail}")]
    Unavailable {
        /// Which server, and what happened.
        detail: String,
    },
    /// A bug in the store itself; the message says where.
    #[error("internal store error (a bug): {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the database could not be reached or answered that it cannot
    /// serve now (a lost connection, a pool that timed out, a server shutting
    /// down or starting): nothing was changed and the request may be retried.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception) and 57P0x
                // (operator intervention: shutdown, cannot connect now).
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Indices of the audit entries appended.
    pub audit_indices: Vec<u64>,
    /// Size of the checkpoint that covers them.
    pub checkpoint_size: u64,
    /// New values of counters bumped by the commit, in order.
    pub counters: Vec<i64>,
}

/// The newest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// Entries covered.
    pub size: u64,
    /// The signed note.
    pub note: String,
}

/// An inclusion proof for one entry against the newest checkpoint.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The entry.
    pub entry: StoredEntry,
    /// The audit path, leaf to root.
    pub path: Vec<Digest32>,
    /// The checkpoint it leads to.
    pub head: AuditHead,
}

/// A consistency proof from an older size to the newest checkpoint.
#[derive(Debug, Clone)]
pub struct ConsistencyProof {
    /// The older size.
    pub old_size: u64,
    /// The proof hashes.
    pub path: Vec<Digest32>,
    /// The checkpoint it leads to.
    pub head: AuditHead,
}

/// Persistence for the control plane.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies `changes` and appends `audit` atomically; answers once durable.
    async fn commit(
        &self,
        changes: Vec<Change>,
        audit: Vec<EntryDraft>,
    ) -> Result<Receipt, StoreError>;

    /// One model.
    async fn model(&self, id: &ModelId) -> Result<Option<ModelRecord>, StoreError>;
    /// All models.
    async fn models(&self) -> Result<Vec<ModelRecord>, StoreError>;
    /// One device.
    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError>;
    /// Devices matching a filter.
    async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceRecord>, StoreError>;
    /// One certificate by serial (lower-case hex).
    async fn certificate(&self, serial: &str) -> Result<Option<CertRecord>, StoreError>;
    /// Certificates matching a filter.
    async fn certificates(&self, filter: &CertFilter) -> Result<Vec<CertRecord>, StoreError>;
    /// Every revoked certificate that has not yet expired, for the CRL.
    async fn revoked_unexpired(&self, now_ms: i64) -> Result<Vec<CertRecord>, StoreError>;
    /// Every CA certificate recorded (profiles `root`, `intermediate` and
    /// `cross`), oldest first.
    async fn certificate_authorities(&self) -> Result<Vec<CertRecord>, StoreError>;
    /// When the last valid certificate issued by CA `issuer` (its serial; ''
    /// for the first issuing CA's early ones) expires, if any is unexpired.
    async fn issuer_last_expiry(
        &self,
        issuer: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Devices holding an unexpired valid certificate whose issuer is neither
    /// `current` nor `also` (pass `current` twice for none), at most `limit`:
    /// the devices still to move to the current issuing CA.
    async fn devices_issued_elsewhere(
        &self,
        current: &str,
        also: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeviceId>, StoreError>;
    /// One supplier.
    async fn supplier(&self, name: &SupplierName) -> Result<Option<SupplierRecord>, StoreError>;
    /// All suppliers.
    async fn suppliers(&self) -> Result<Vec<SupplierRecord>, StoreError>;
    /// The device whose IDevID certificate has this SHA-256 (hex).
    /// Registered TPM vendor CAs.
    async fn tpm_vendors(&self) -> Result<Vec<TpmVendorRecord>, StoreError>;
    /// A supplier's release-signing keys.
    async fn supplier_keys(
        &self,
        supplier: &SupplierName,
    ) -> Result<Vec<SupplierKeyRecord>, StoreError>;
    /// A device's latest signed director assignment and its counter.
    async fn assignment(&self, device: &DeviceId) -> Result<Option<(u64, String)>, StoreError>;
    /// A model's network policy.
    async fn model_policy(&self, model: &ModelId) -> Result<Option<ModelPolicyRecord>, StoreError>;
    /// Sites.
    async fn sites(&self) -> Result<Vec<SiteRecord>, StoreError>;
    /// Devices placed at a site (all sites with `None`).
    async fn placements(&self, site: Option<&SiteName>)
    -> Result<Vec<PlacementRecord>, StoreError>;
    /// Edge gateways (of one site, or all).
    async fn edges(&self, site: Option<&SiteName>) -> Result<Vec<EdgeRecord>, StoreError>;
    /// Addresses seen at a site (or every site) that map to no enrolled
    /// device (in one state, or all), undecided first, then by last seen
    /// (newest first); at most 1000.
    async fn unmanaged(
        &self,
        site: Option<&SiteName>,
        state: Option<UnmanagedState>,
    ) -> Result<Vec<UnmanagedRecord>, StoreError>;
    /// Rollouts, newest first.
    async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError>;
    /// A rollout's devices.
    async fn rollout_devices(
        &self,
        name: &RolloutName,
    ) -> Result<Vec<RolloutDeviceRecord>, StoreError>;
    /// A device's tags.
    async fn device_tags(&self, device: &DeviceId) -> Result<Vec<Tag>, StoreError>;
    /// Devices carrying every one of `tags`.
    async fn devices_tagged(&self, tags: &[Tag]) -> Result<Vec<DeviceId>, StoreError>;
    /// What devices last reported about their updates (one device, or all).
    async fn updates(&self, device: Option<&DeviceId>) -> Result<Vec<UpdateRecord>, StoreError>;
    /// Accepted releases, of one model or all.
    async fn releases(&self, model: Option<&ModelId>) -> Result<Vec<ReleaseRecord>, StoreError>;
    /// Firmware approved for a model.
    async fn firmware(&self, model: &ModelId) -> Result<Vec<FirmwareRecord>, StoreError>;
    async fn device_by_birth_cert(&self, sha256: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// One enrolment token by id.
    async fn enrollment_token(&self, id: &str)
    -> Result<Option<EnrollmentTokenRecord>, StoreError>;
    /// One imported batch.
    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError>;
    /// A device's commands, newest first (only queued ones if asked).
    async fn commands(
        &self,
        device: &DeviceId,
        queued_only: bool,
    ) -> Result<Vec<CommandRecord>, StoreError>;
    /// Devices that have commands still queued, by id.
    async fn queued_command_devices(&self) -> Result<Vec<DeviceId>, StoreError>;
    /// The devices an advisory exposed, day by day, oldest first.
    async fn advisory_exposure(
        &self,
        advisory: &str,
    ) -> Result<Vec<AdvisoryExposureRecord>, StoreError>;
    /// When the manufacturer became aware the advisory is actively exploited.
    async fn exploitation(&self, advisory: &str) -> Result<Option<ExploitationRecord>, StoreError>;
    /// Supplier VEX statements, of one release or all (at most 100 000).
    async fn vex_statements(
        &self,
        release: Option<(&ModelId, &str)>,
    ) -> Result<Vec<VexRecord>, StoreError>;
    /// Every model's support-end policy, by model.
    async fn support_policies(&self) -> Result<Vec<SupportPolicyRecord>, StoreError>;
    /// A device's decommissioning, if it is on record.
    async fn decommission(
        &self,
        device: &DeviceId,
    ) -> Result<Option<DecommissionRecord>, StoreError>;
    /// Decommissionings, those whose wipe is in state `wipe` if given, oldest
    /// first (at most 10 000).
    async fn decommissions(
        &self,
        wipe: Option<WipeStatus>,
    ) -> Result<Vec<DecommissionRecord>, StoreError>;
    /// A device's persistent MQTT session kept while it was offline: whether
    /// it had subscribed to its commands; `None` if there is none.
    async fn mqtt_session(&self, device: &DeviceId) -> Result<Option<bool>, StoreError>;
    /// A device's retained messages (topic, payload), by topic.
    async fn retained(&self, device: &DeviceId) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// One advisory by its own id, with its record.
    async fn advisory(&self, id: &str) -> Result<Option<AdvisoryRecord>, StoreError>;
    /// The advisories known by `id` (their own id or an alias, any case),
    /// with their records.
    async fn advisories_named(&self, id: &str) -> Result<Vec<AdvisoryRecord>, StoreError>;
    /// Every advisory, without its record, newest first.
    async fn advisories(&self) -> Result<Vec<AdvisoryRecord>, StoreError>;
    /// The advisories that name a package of `packages` ((OSV ecosystem,
    /// normalised name) pairs), with their records.
    async fn advisories_for(
        &self,
        packages: &[(String, String)],
    ) -> Result<Vec<AdvisoryRecord>, StoreError>;
    /// Matches of one advisory (or all), by advisory, model, version.
    async fn advisory_matches(
        &self,
        advisory: Option<&str>,
    ) -> Result<Vec<AdvisoryMatchRecord>, StoreError>;
    /// Devices' fleet windows closed in `(after_ms, until_ms]`, by device.
    async fn fleet_windows(
        &self,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<FleetWindowRecord>, StoreError>;
    /// A published signed document (the CRL, TUF metadata) by name.
    async fn document(&self, name: &str) -> Result<Option<DocumentRecord>, StoreError>;
    /// One API token by id.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// All API tokens.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Audit entries from index `from`, at most `limit`.
    async fn audit_entries(&self, from: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError>;
    /// Checkpoints with size ≥ `from_size`, at most `limit`.
    async fn audit_checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError>;
    /// The newest checkpoint.
    fn audit_head(&self) -> Option<AuditHead>;
    /// Proves entry `index` is in the log of the newest checkpoint.
    async fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, StoreError>;
    /// Proves the log of size `old_size` is a prefix of the newest checkpoint's.
    async fn consistency_proof(&self, old_size: u64) -> Result<ConsistencyProof, StoreError>;

    /// Alerts, newest first.
    async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError>;

    /// One alert.
    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError>;

    /// A device's timeline events in a time range, oldest first.
    async fn device_events(
        &self,
        device: &str,
        since_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeviceEventRecord>, StoreError>;

    /// One page of the device list, with how many devices match in all.
    async fn device_page(&self, q: &DevicePageQuery) -> Result<DevicePage, StoreError>;
    /// Devices by model and lifecycle state.
    async fn device_counts(&self) -> Result<Vec<(ModelId, DeviceState, u64)>, StoreError>;
    /// Valid certificates expiring before `before_ms`, soonest first, at most `limit`.
    async fn certificates_expiring(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<CertRecord>, StoreError>;

    /// One console account.
    async fn account(&self, name: &OperatorName) -> Result<Option<AccountRecord>, StoreError>;
    /// Every console account, by name.
    async fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError>;
    /// One console session by the hash of its secret.
    async fn session(&self, id_hash: &Digest32) -> Result<Option<SessionRecord>, StoreError>;
    /// Saved device groups, by name.
    async fn device_groups(&self) -> Result<Vec<DeviceGroupRecord>, StoreError>;

    /// Posture snapshots of `framework` and `scope` from `since_day` on, by day.
    async fn posture_snapshots(
        &self,
        framework: &str,
        scope: &str,
        since_day: &str,
    ) -> Result<Vec<PostureSnapshotRecord>, StoreError>;

    /// Every audit entry whose action is one of `actions`, in log order.
    async fn audit_refs(&self, actions: &[&str]) -> Result<Vec<AuditRefRecord>, StoreError>;

    /// Each device's newest timeline event of `kind`.
    async fn latest_device_events(&self, kind: &str) -> Result<Vec<DeviceEventRecord>, StoreError>;

    /// Audit entries whose subject is `subject` or whose detail names it as
    /// `"device"`, oldest first (a scan of the log: for forensics, not hot paths).
    async fn audit_entries_about(
        &self,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError>;
}

#[cfg(test)]
mod unavailable_tests {
    use super::StoreError;

    #[test]
    fn lost_connections_and_timeouts_are_unavailable_and_nothing_else_is() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        for e in [
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Database(sqlx::Error::PoolClosed),
            StoreError::Database(sqlx::Error::Io(io)),
            StoreError::Unavailable { detail: "x".into() },
        ] {
            assert!(e.is_unavailable(), "{e}");
        }
        for e in [
            StoreError::Database(sqlx::Error::RowNotFound),
            StoreError::Closed,
            StoreError::Internal("bug".into()),
            StoreError::Corrupt {
                what: "device",
                detail: "bad state".into(),
            },
        ] {
            assert!(!e.is_unavailable(), "{e}");
        }
    }
}
