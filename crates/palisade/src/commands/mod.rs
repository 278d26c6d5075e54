//! The operator commands, one module per command family: each command is one
//! or a few API calls, with tables for people and `--json` for scripts. This
//! module holds what every family shares (where the server is, how to name
//! things in a URL).

mod advisories;
mod audit;
mod certs;
mod fleet;
mod onboarding;
mod operators;
mod releases;
mod tokens;

pub use advisories::{AdvisoryCmd, advisories};
pub use audit::{AuditCmd, audit};
pub use certs::{CaCmd, CertCmd, ca, cert};
pub use fleet::{DeviceCmd, ModelCmd, device, model};
pub use onboarding::{
    BatchCmd, EnrollmentTokenCmd, FirmwareCmd, SupplierCmd, SupplierKeyCmd, TpmVendorCmd, batch,
    enrollment_token, supplier, tpm_vendor,
};
pub use operators::{OperatorCmd, operator};
pub use releases::{ReleaseCmd, release};
pub use tokens::{TokenCmd, token};

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Global;
use crate::client::Client;

pub(crate) fn data_dir(g: &Global) -> PathBuf {
    g.data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("palisade-data"))
}

/// Builds the API client from options, environment and the data directory.
pub fn client(g: &Global) -> anyhow::Result<Client> {
    let dir = data_dir(g);
    let url = match &g.url {
        Some(u) => u.clone(),
        None => std::fs::read_to_string(dir.join("url"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "https://127.0.0.1:8443".to_owned()),
    };
    let ca = g.ca.clone().unwrap_or_else(|| dir.join("ca/root.pem"));
    let token = match &g.token {
        Some(t) => Some(t.trim().to_owned()),
        None => std::fs::read_to_string(dir.join("admin-token"))
            .ok()
            .map(|s| s.trim().to_owned()),
    };
    Client::new(&url, &ca, token)
}

pub(crate) fn dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    // Path segments and query values from the command line: keep them from
    // changing the request's shape.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Parses `90s`, `30m`, `24h`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration such as 30m, 24h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("unknown duration unit {other:?}: use s, m, h or d"),
    };
    Ok(n.saturating_mul(mult))
}

pub(crate) fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}
