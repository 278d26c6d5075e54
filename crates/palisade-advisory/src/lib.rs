//! Which firmware a vulnerability advisory hits: OSV records ([`osv`]), the
//! package URLs an SBOM names its components by ([`package`]), each
//! ecosystem's own version order ([`version`]) and the components of a
//! CycloneDX SBOM ([`sbom`]), brought together by [`matcher`].
//!
//! Pure: no I/O. Every parser is bounded and refuses with a clear error; none
//! panics on any input (fuzz targets `osv_record`, `version_order`,
//! `sbom_components`).

pub mod alpine;
pub mod matcher;
pub mod osv;
pub mod package;
pub mod sbom;
pub mod version;
pub mod vex;

pub use matcher::{Hit, affected_at_commit, affected_by};
pub use osv::{AdvisoryError, Record, parse_record};
pub use package::{Ecosystem, Package};
pub use sbom::{Component, components};
