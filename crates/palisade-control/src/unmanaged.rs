//! Unmanaged hosts: addresses on a site's segments that map to no enrolled
//! device, seen in flow records, in an edge's neighbour table or in the
//! site's DHCP leases. Sightings are merged in memory and written every few
//! seconds (one commit for all of them), each new address raises one
//! `unmanaged_device` alert, and the operator adopts (registers and places)
//! or blocks each one; a block reaches the site's edges in the next bundle.
//! You cannot secure what you have not inventoried.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId, DeviceState, ModelId, SiteName, UnmanagedState};
use palisade_detect::detect::Observation;
use palisade_policy::hosts::{HostSeen, HostSource, on_segments};
use palisade_policy::site::SiteSpec;
use palisade_store::{
    Change, DeviceRecord, PlacementRecord, Store, UnmanagedRecord, UnmanagedSighting,
};
use serde_json::json;
use tokio::sync::watch;

use crate::error::{ServiceError, bad};
use crate::monitor::Monitor;
use crate::network::Network;

/// Distinct (site, address, source) sightings held between writes, at most;
/// more are dropped (and counted) until the next write.
const PENDING_MAX: usize = 65_536;
/// Addresses remembered as already alerted, at most (then forgotten: the
/// alert's dedup key still folds a repeat into the open alert).
const KNOWN_MAX: usize = 1_000_000;

/// The unmanaged-hosts service.
#[derive(Debug)]
pub struct Unmanaged {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    network: Arc<Network>,
    monitor: Arc<Monitor>,
    pending: std::sync::Mutex<HashMap<(SiteName, IpAddr, HostSource), UnmanagedSighting>>,
    known: std::sync::Mutex<HashSet<(SiteName, IpAddr)>>,
    dropped: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Unmanaged {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        network: Arc<Network>,
        monitor: Arc<Monitor>,
    ) -> Self {
        Self {
            store,
            clock,
            network,
            monitor,
            pending: std::sync::Mutex::default(),
            known: std::sync::Mutex::default(),
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Notes that `host` was seen at `site` (with `bytes` of traffic, for
    /// flows). Cheap: merged in memory, written by [`Unmanaged::run`]. Whether
    /// it is a device's, on the site's segments, or the edge's own address is
    /// decided when written.
    pub fn sighted(&self, site: &SiteName, host: HostSeen, bytes: u64, at_ms: i64) {
        let mut p = lock(&self.pending);
        let key = (site.clone(), host.address, host.source);
        if let Some(s) = p.get_mut(&key) {
            s.at_ms = s.at_ms.max(at_ms);
            s.bytes = s.bytes.saturating_add(bytes);
            if host.mac.is_some() {
                s.mac = host.mac;
            }
            if host.hostname.is_some() {
                s.hostname = host.hostname;
            }
            return;
        }
        if p.len() >= PENDING_MAX {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        p.insert(
            key,
            UnmanagedSighting {
                site: site.clone(),
                address: host.address.to_string(),
                mac: host.mac,
                hostname: host.hostname,
                source: host.source.as_str().to_owned(),
                at_ms,
                bytes,
            },
        );
    }

    /// What an edge reports it sees on its segments (neighbour table, DHCP
    /// leases): checked, bounded and noted.
    pub fn reported(&self, site: &SiteName, hosts: Vec<HostSeen>) {
        let now = self.clock.now_ms();
        for h in hosts
            .into_iter()
            .take(palisade_policy::hosts::MAX_HOSTS)
            .filter(|h| h.source != HostSource::Flows)
        {
            self.sighted(site, h.checked(), 0, now);
        }
    }

    /// Writes what was seen since the last write, leaving out devices'
    /// addresses, the edges' own and whatever is not on the site's segments;
    /// raises one alert per address never seen before. Returns how many
    /// sightings were written.
    pub async fn flush(&self) -> Result<usize, ServiceError> {
        let pending: Vec<UnmanagedSighting> = lock(&self.pending).drain().map(|(_, s)| s).collect();
        let dropped = self.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "unmanaged-host sightings dropped: more distinct hosts than one write holds"
            );
        }
        if pending.is_empty() {
            return Ok(0);
        }
        let mut by_site: HashMap<SiteName, Vec<UnmanagedSighting>> = HashMap::new();
        for s in pending {
            by_site.entry(s.site.clone()).or_default().push(s);
        }
        let mut keep = Vec::new();
        let mut fresh = Vec::new();
        for (site, sightings) in by_site {
            let Some(spec) = self.spec(&site).await? else {
                continue;
            };
            let mut managed: HashSet<IpAddr> = self
                .store
                .placements(Some(&site))
                .await?
                .iter()
                .filter_map(|p| p.address.parse().ok())
                .collect();
            managed.extend(self.edge_addresses(&site).await?);
            let before: HashSet<String> = self
                .store
                .unmanaged(Some(&site), None)
                .await?
                .into_iter()
                .map(|u| u.address)
                .collect();
            for s in sightings {
                let Ok(addr) = s.address.parse::<IpAddr>() else {
                    continue;
                };
                if managed.contains(&addr) || !on_segments(&spec, addr) {
                    continue;
                }
                let new = !before.contains(&s.address) && {
                    let mut k = lock(&self.known);
                    if k.len() >= KNOWN_MAX {
                        k.clear();
                    }
                    k.insert((site.clone(), addr))
                };
                if new {
                    fresh.push((s.clone(), addr));
                }
                keep.push(s);
            }
        }
        let n = keep.len();
        if n > 0 {
            self.store
                .commit(vec![Change::RecordUnmanaged(keep)], vec![])
                .await?;
        }
        for (s, address) in fresh {
            self.monitor.observe(Observation::UnmanagedHost {
                site: s.site.to_string(),
                address,
                mac: s.mac,
                source: s.source,
                at_ms: s.at_ms,
            });
        }
        Ok(n)
    }

    /// Takes the flow collector's addresses of no device, and writes
    /// sightings every `every` until shutdown (and once more then).
    pub async fn run(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        let mut flows = self.monitor.take_unmapped();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = self.flush().await;
                    return;
                }
                _ = tick.tick() => {}
                seen = async {
                    match flows.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match seen {
                        Some((site, host, bytes, at_ms)) => self.sighted(&site, host, bytes, at_ms),
                        None => flows = None,
                    }
                    continue;
                }
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "could not record unmanaged hosts");
            }
        }
    }

    async fn spec(&self, site: &SiteName) -> Result<Option<SiteSpec>, ServiceError> {
        let Some(rec) = self
            .store
            .sites()
            .await?
            .into_iter()
            .find(|s| &s.name == site)
        else {
            return Ok(None);
        };
        serde_json::from_str(&rec.spec)
            .map(Some)
            .map_err(|e| ServiceError::Internal(format!("site {site}: {e}")))
    }

    /// The addresses a site's edges report as their own.
    async fn edge_addresses(&self, site: &SiteName) -> Result<Vec<IpAddr>, ServiceError> {
        Ok(self
            .store
            .edges(Some(site))
            .await?
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.status).ok())
            .flat_map(|v| {
                v["own"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().and_then(|s| s.parse().ok()))
                    .collect::<Vec<IpAddr>>()
            })
            .collect())
    }

    /// Unmanaged hosts of a site (or every site), undecided first.
    pub async fn list(
        &self,
        site: Option<&SiteName>,
    ) -> Result<Vec<UnmanagedRecord>, ServiceError> {
        if let Some(s) = site
            && self.spec(s).await?.is_none()
        {
            return Err(ServiceError::NotFound(format!("site {s} not found")));
        }
        // A host the operator has not decided on drops out once a device is
        // placed at its address (placed by hand rather than adopted).
        let placed: HashSet<(SiteName, IpAddr)> = self
            .store
            .placements(site)
            .await?
            .into_iter()
            .filter_map(|p| Some((p.site, p.address.parse().ok()?)))
            .collect();
        let mut hosts = self.store.unmanaged(site, None).await?;
        hosts.retain(|h| {
            h.state != UnmanagedState::Seen
                || !h
                    .address
                    .parse()
                    .is_ok_and(|a| placed.contains(&(h.site.clone(), a)))
        });
        Ok(hosts)
    }

    async fn host(
        &self,
        site: &SiteName,
        address: IpAddr,
    ) -> Result<UnmanagedRecord, ServiceError> {
        self.store
            .unmanaged(Some(site), None)
            .await?
            .into_iter()
            .find(|u| u.address == address.to_string())
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no unmanaged host {address} at site {site}: see `palisade site unmanaged {site}`"
                ))
            })
    }

    /// Blocks (or, with `blocked` false, unblocks) an unmanaged host: the
    /// site's edges cut it off from everything with the next bundle.
    pub async fn block(
        &self,
        actor: &str,
        site: &SiteName,
        address: IpAddr,
        blocked: bool,
    ) -> Result<UnmanagedRecord, ServiceError> {
        let h = self.host(site, address).await?;
        if h.state == UnmanagedState::Adopted {
            return Err(ServiceError::Conflict(format!(
                "{address} at site {site} was adopted as device {}: quarantine or decommission the device instead",
                h.device.as_ref().map(DeviceId::as_str).unwrap_or("?")
            )));
        }
        let state = if blocked {
            UnmanagedState::Blocked
        } else {
            UnmanagedState::Seen
        };
        let action = if blocked {
            "unmanaged.block"
        } else {
            "unmanaged.unblock"
        };
        self.store
            .commit(
                vec![Change::SetUnmanagedState {
                    site: site.clone(),
                    address: address.to_string(),
                    state,
                    device: None,
                    actor: actor.to_owned(),
                    at_ms: self.clock.now_ms(),
                }],
                vec![
                    EntryDraft::success(actor, action, format!("{site}/{address}"))
                        .with_detail(json!({ "site": site.as_str(), "address": address.to_string(), "mac": h.mac })),
                ],
            )
            .await?;
        self.network.touched();
        self.host(site, address).await
    }

    /// Adopts an unmanaged host: registers it as `device` of `model` and
    /// places it at its address on the segment that holds it (the model's
    /// segment at the site if that one does), in one commit. The device still
    /// has to enrol; until then the edge enforces its model's policy.
    pub async fn adopt(
        &self,
        actor: &str,
        site: &SiteName,
        address: IpAddr,
        device: DeviceId,
        model: ModelId,
    ) -> Result<UnmanagedRecord, ServiceError> {
        let h = self.host(site, address).await?;
        if h.state == UnmanagedState::Adopted {
            return Err(ServiceError::Conflict(format!(
                "{address} at site {site} was already adopted as device {}",
                h.device.as_ref().map(DeviceId::as_str).unwrap_or("?")
            )));
        }
        if self.store.model(&model).await?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "model {model} not found: add it first with `palisade model add {model}`"
            )));
        }
        if self.store.device(&device).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "device {device} already exists: choose another id"
            )));
        }
        let spec = self
            .spec(site)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("site {site} not found")))?;
        let by_model = spec.model_segments.get(model.as_str());
        let segment = spec
            .segments
            .iter()
            .filter(|s| s.subnet.contains(address))
            .max_by_key(|s| Some(&s.name) == by_model)
            .ok_or_else(|| {
                bad(
                    "bad_address",
                    format!("{address} is on none of site {site}'s segments"),
                )
            })?;
        let now = self.clock.now_ms();
        let record = DeviceRecord {
            id: device.clone(),
            model: model.clone(),
            state: DeviceState::Registered,
            hardware_serial: None,
            created_ms: now,
            updated_ms: now,
            onboarding: Default::default(),
            last_seen_ms: None,
            reported_firmware: None,
            hardware: Default::default(),
        };
        let subject = format!("{site}/{address}");
        self.store
            .commit(
                vec![
                    Change::InsertDevice(record),
                    Change::SetPlacement(PlacementRecord {
                        device: device.clone(),
                        site: site.clone(),
                        segment: segment.name.clone(),
                        address: address.to_string(),
                        overrides: "{}".into(),
                        updated_ms: now,
                    }),
                    Change::SetUnmanagedState {
                        site: site.clone(),
                        address: address.to_string(),
                        state: UnmanagedState::Adopted,
                        device: Some(device.clone()),
                        actor: actor.to_owned(),
                        at_ms: now,
                    },
                ],
                vec![
                    EntryDraft::success(actor, "device.register", device.as_str()).with_detail(
                        json!({ "model": model.as_str(), "adopted_from": subject }),
                    ),
                    EntryDraft::success(actor, "device.place", device.as_str()).with_detail(json!({
                        "site": site.as_str(), "segment": segment.name, "address": address.to_string(),
                    })),
                    EntryDraft::success(actor, "unmanaged.adopt", &subject).with_detail(json!({
                        "device": device.as_str(), "model": model.as_str(), "mac": h.mac,
                        "hostname": h.hostname,
                    })),
                ],
            )
            .await?;
        self.network.touched();
        self.host(site, address).await
    }
}
