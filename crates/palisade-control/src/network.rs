//! Network policy on the control plane: models' MUD policies, sites and their
//! segments, where devices sit, edge gateways, and the signed per-site bundle
//! the edges enforce. A bundle's version is the newest change that feeds it
//! (site, placements, model policies, device states such as quarantine), so
//! it grows with every change without a counter to keep in step.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId, DeviceState, ModelId, SiteName};
use palisade_policy::Policy;
use palisade_policy::site::{SiteBundle, SiteDevice};
use palisade_store::{Change, DeviceFilter, ModelPolicyRecord, PlacementRecord, SiteRecord, Store};
use serde_json::json;

use crate::error::ServiceError;
use crate::events::{Event, EventBus, Subscription};

/// The DSSE payload type of a supplier-signed MUD file.
pub const MUD_PAYLOAD_TYPE: &str = "application/mud+json";

pub use palisade_policy::site::SiteSpec;

/// Where an operator places a device.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The site.
    pub site: SiteName,
    /// Its segment (`None`: the site's segment for the device's model).
    pub segment: Option<String>,
    /// The device's address there.
    pub address: IpAddr,
    /// Rules added to the model's policy for this device.
    pub overrides: Policy,
    /// Accept overrides that open everything (audited).
    pub allow_open: bool,
}

/// The network-policy service.
#[derive(Debug)]
pub struct Network {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key: PathBuf,
    /// Counts changes to sites, placements, edges and model policies.
    changed: tokio::sync::watch::Sender<u64>,
    /// Other nodes hear of the changes here.
    bus: Arc<dyn EventBus>,
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest {
        code: "bad_policy",
        message: message.into(),
    }
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

impl Network {
    /// Composes the service; the policy signing key lives at `key` (created
    /// on first use, PKCS#8 Ed25519, 0600).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: PathBuf,
        bus: Arc<dyn EventBus>,
    ) -> Result<Self, ServiceError> {
        if !key.exists() {
            crate::tuf::generate_key(&key).map_err(internal)?;
        }
        Ok(Self {
            store,
            clock,
            key,
            changed: tokio::sync::watch::Sender::new(0),
            bus,
        })
    }

    /// Changes to sites, placements, edges and model policies.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn touched(&self) {
        self.changed.send_modify(|v| *v += 1);
        self.bus.publish(Event::NetworkChanged);
    }

    /// Follows the other nodes' changes, so edges long-polling this node get
    /// bundles changed through another.
    pub async fn follow(self: Arc<Self>, mut bus: Subscription) {
        while let Some(e) = bus.recv().await {
            if let Ok(Event::NetworkChanged) = e {
                self.changed.send_modify(|v| *v += 1);
            }
        }
    }

    fn signing_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, ServiceError> {
        std::fs::read(&self.key)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| internal(format!("{}: {e}", self.key.display())))
    }

    /// The policy key's Ed25519 public key (edges pin it).
    pub fn public_key(&self) -> Result<Vec<u8>, ServiceError> {
        use ring::signature::KeyPair;
        let k = self.signing_key()?;
        let kp =
            ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&k).map_err(internal)?;
        Ok(kp.public_key().as_ref().to_vec())
    }

    async fn refuse(&self, actor: &str, action: &str, subject: &str, why: String) -> ServiceError {
        let _ = self
            .store
            .commit(
                vec![],
                vec![
                    EntryDraft::denied(actor, action, subject)
                        .with_detail(json!({ "reason": why })),
                ],
            )
            .await;
        bad(why)
    }

    /// Imports a model's MUD file. With `envelope` (a DSSE envelope whose
    /// payload is the MUD file) it must be signed by the model's supplier. A
    /// policy that opens everything needs `allow_open`, which is audited.
    pub async fn set_mud(
        &self,
        actor: &str,
        model: &ModelId,
        mud: Option<&[u8]>,
        envelope: Option<&palisade_release::Envelope>,
        allow_open: bool,
    ) -> Result<ModelPolicyRecord, ServiceError> {
        let m = self
            .store
            .model(model)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("model {model} not found")))?;
        let (bytes, signed_by) = match (mud, envelope) {
            (_, Some(env)) => {
                let Some(supplier) = &m.supplier else {
                    return Err(self
                        .refuse(
                            actor,
                            "policy.mud",
                            model.as_str(),
                            format!("model {model} has no supplier to sign its MUD file"),
                        )
                        .await);
                };
                if env.payload_type != MUD_PAYLOAD_TYPE {
                    return Err(self
                        .refuse(
                            actor,
                            "policy.mud",
                            model.as_str(),
                            format!("the envelope's payload type must be {MUD_PAYLOAD_TYPE}"),
                        )
                        .await);
                }
                let keys: Vec<palisade_release::SupplierKey> = self
                    .store
                    .supplier_keys(supplier)
                    .await?
                    .iter()
                    .filter_map(|k| palisade_release::SupplierKey::from_spki_der(&k.spki_der).ok())
                    .collect();
                match palisade_release::verify_envelope(env, &keys, supplier.as_str()) {
                    Ok((payload, k)) => (payload, k.keyid.clone()),
                    Err(e) => {
                        return Err(self
                            .refuse(actor, "policy.mud", model.as_str(), e.to_string())
                            .await);
                    }
                }
            }
            (Some(b), None) => (b.to_vec(), String::new()),
            (None, None) => return Err(bad("give the MUD file, or a DSSE envelope holding it")),
        };
        let parsed = match palisade_policy::mud::parse(&bytes) {
            Ok(p) => p,
            Err(e) => {
                return Err(self
                    .refuse(actor, "policy.mud", model.as_str(), e.to_string())
                    .await);
            }
        };
        if let Err(e) = parsed.policy.check_open(allow_open) {
            return Err(self
                .refuse(actor, "policy.mud", model.as_str(), e.to_string())
                .await);
        }
        let opens = parsed.policy.check_open(false).is_err();
        let rec = ModelPolicyRecord {
            model: model.clone(),
            mud_url: parsed.url.clone(),
            mud: String::from_utf8_lossy(&bytes).into_owned(),
            policy: serde_json::to_string(&parsed.policy).map_err(internal)?,
            signed_by: signed_by.clone(),
            open_override: opens,
            updated_ms: self.clock.now_ms(),
        };
        let mut audit = vec![
            EntryDraft::success(actor, "policy.mud", model.as_str()).with_detail(json!({
                "mud_url": parsed.url, "signed_by": signed_by,
                "rules": parsed.policy.from_device.len() + parsed.policy.to_device.len(),
            })),
        ];
        if opens {
            audit.push(
                EntryDraft::success(actor, "policy.open_override", model.as_str()).with_detail(
                    json!({ "reason": "the operator accepted a policy that opens everything" }),
                ),
            );
        }
        self.store
            .commit(vec![Change::SetModelPolicy(rec.clone())], audit)
            .await?;
        self.touched();
        Ok(rec)
    }

    /// Creates or changes a site.
    pub async fn set_site(
        &self,
        actor: &str,
        name: &SiteName,
        spec: &SiteSpec,
    ) -> Result<SiteRecord, ServiceError> {
        let mut names = std::collections::HashSet::new();
        for s in &spec.segments {
            if !names.insert(&s.name) {
                return Err(bad(format!("segment {} appears twice", s.name)));
            }
        }
        for (model, seg) in &spec.model_segments {
            if !names.contains(seg) {
                return Err(bad(format!(
                    "model {model} is placed in unknown segment {seg}"
                )));
            }
        }
        // The renderer checks interface names and the rest.
        let probe = SiteBundle {
            site: name.to_string(),
            version: 0,
            issued_ms: 0,
            spec: spec.clone(),
            blocked: vec![],
            devices: vec![],
        };
        palisade_policy::site::render(&probe).map_err(|e| bad(e.to_string()))?;
        let now = self.clock.now_ms();
        let created = self
            .store
            .sites()
            .await?
            .into_iter()
            .find(|s| &s.name == name)
            .map_or(now, |s| s.created_ms);
        let rec = SiteRecord {
            name: name.clone(),
            spec: serde_json::to_string(spec).map_err(internal)?,
            created_ms: created,
            updated_ms: now,
        };
        self.store
            .commit(
                vec![Change::UpsertSite(rec.clone())],
                vec![
                    EntryDraft::success(actor, "site.set", name.as_str()).with_detail(json!(spec)),
                ],
            )
            .await?;
        self.touched();
        Ok(rec)
    }

    async fn site(&self, name: &SiteName) -> Result<(SiteRecord, SiteSpec), ServiceError> {
        let rec = self
            .store
            .sites()
            .await?
            .into_iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| ServiceError::NotFound(format!("site {name} not found")))?;
        let spec: SiteSpec = serde_json::from_str(&rec.spec).map_err(internal)?;
        Ok((rec, spec))
    }

    /// Places a device at a site.
    pub async fn place(
        &self,
        actor: &str,
        device: &DeviceId,
        want: Placement,
    ) -> Result<PlacementRecord, ServiceError> {
        let Placement {
            site,
            segment,
            address,
            overrides,
            allow_open,
        } = want;
        let site = &site;
        let d = self
            .store
            .device(device)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("device {device} not found")))?;
        let (_, spec) = self.site(site).await?;
        // Without a segment, the site's segment for the device's model.
        let segment = match segment {
            Some(s) => s,
            None => spec
                .model_segments
                .get(d.model.as_str())
                .cloned()
                .ok_or_else(|| {
                    bad(format!(
                        "give a segment: site {site} places no segment for model {}",
                        d.model
                    ))
                })?,
        };
        let segment = segment.as_str();
        let seg = spec
            .segments
            .iter()
            .find(|s| s.name == segment)
            .ok_or_else(|| bad(format!("site {site} has no segment {segment}")))?;
        if !seg.subnet.contains(address) {
            return Err(bad(format!(
                "{address} is outside segment {segment} ({})",
                seg.subnet
            )));
        }
        if let Err(e) = overrides.check_open(allow_open) {
            return Err(self
                .refuse(actor, "device.place", device.as_str(), e.to_string())
                .await);
        }
        let rec = PlacementRecord {
            device: device.clone(),
            site: site.clone(),
            segment: segment.to_string(),
            address: address.to_string(),
            overrides: serde_json::to_string(&overrides).map_err(internal)?,
            updated_ms: self.clock.now_ms(),
        };
        self.store
            .commit(
                vec![Change::SetPlacement(rec.clone())],
                vec![EntryDraft::success(actor, "device.place", device.as_str()).with_detail(json!({
                    "site": site.as_str(), "segment": segment, "address": address.to_string(),
                    "overrides": overrides, "open_override": allow_open && overrides.check_open(false).is_err(),
                }))],
            )
            .await?;
        self.touched();
        Ok(rec)
    }

    /// Registers `edge` (an enrolled identity) as a site's edge gateway.
    pub async fn add_edge(
        &self,
        actor: &str,
        site: &SiteName,
        edge: &DeviceId,
    ) -> Result<(), ServiceError> {
        self.site(site).await?;
        self.store
            .device(edge)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("edge identity {edge} not found")))?;
        self.store
            .commit(
                vec![Change::SetEdge {
                    device: edge.clone(),
                    site: site.clone(),
                    at_ms: self.clock.now_ms(),
                }],
                vec![
                    EntryDraft::success(actor, "site.edge", site.as_str())
                        .with_detail(json!({ "edge": edge.as_str() })),
                ],
            )
            .await?;
        self.touched();
        Ok(())
    }

    /// The site an edge identity serves.
    pub async fn edge_site(&self, edge: &DeviceId) -> Result<SiteName, ServiceError> {
        self.store
            .edges(None)
            .await?
            .into_iter()
            .find(|e| &e.device == edge)
            .map(|e| e.site)
            .ok_or_else(|| {
                ServiceError::Forbidden(format!("{edge} is not a registered edge gateway"))
            })
    }

    /// The site's bundle as it stands.
    pub async fn bundle(&self, site: &SiteName) -> Result<SiteBundle, ServiceError> {
        let (rec, spec) = self.site(site).await?;
        let placements = self.store.placements(Some(site)).await?;
        let devices: BTreeMap<DeviceId, palisade_store::DeviceRecord> = self
            .store
            .devices(&DeviceFilter {
                model: None,
                state: None,
                limit: Some(palisade_policy::site::MAX_DEVICES as u32),
            })
            .await?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let mut version = rec.updated_ms;
        // Models past their support-end restriction date (their stage moved
        // on `stage_ms`, which moves the bundle's version too).
        let support: BTreeMap<ModelId, (bool, i64)> = self
            .store
            .support_policies()
            .await?
            .into_iter()
            .map(|p| {
                let confined = matches!(
                    p.stage,
                    palisade_core::SupportStage::Restricted | palisade_core::SupportStage::Retired
                );
                (p.model, (confined, p.stage_ms.unwrap_or(0)))
            })
            .collect();
        let mut policies: BTreeMap<ModelId, (Policy, Option<String>)> = BTreeMap::new();
        let mut out = vec![];
        for p in &placements {
            let Some(d) = devices.get(&p.device) else {
                continue;
            };
            // A device leaving the bundle is a change to it too: the version
            // moves on so the edges fetch the bundle without its allowlist.
            version = version
                .max(p.updated_ms)
                .max(d.updated_ms)
                .max(support.get(&d.model).map_or(0, |(_, at)| *at));
            if d.state == DeviceState::Decommissioned {
                continue;
            }
            if !policies.contains_key(&d.model) {
                let mp = self.store.model_policy(&d.model).await?;
                if let Some(mp) = &mp {
                    version = version.max(mp.updated_ms);
                }
                let policy: Policy = match mp {
                    Some(mp) => serde_json::from_str(&mp.policy).map_err(internal)?,
                    None => Policy::default(),
                };
                let mfg = self
                    .store
                    .model(&d.model)
                    .await?
                    .and_then(|m| m.supplier)
                    .map(|s| s.to_string());
                policies.insert(d.model.clone(), (policy, mfg));
            }
            let (policy, mfg) = policies.get(&d.model).cloned().unwrap_or_default();
            let overrides: Policy = serde_json::from_str(&p.overrides).map_err(internal)?;
            out.push(SiteDevice {
                device: p.device.to_string(),
                address: p.address.parse().map_err(internal)?,
                segment: p.segment.clone(),
                manufacturer: mfg,
                quarantined: d.state == DeviceState::Quarantined,
                restricted: support.get(&d.model).is_some_and(|(r, _)| *r),
                policy: policy.with(&overrides),
            });
        }
        // Blocked unmanaged hosts, leaving out any address a device now
        // holds (the device's policy governs it). Every decision counts for
        // the version, so an unblock also reaches the edges.
        for u in self.store.unmanaged(Some(site), None).await? {
            if let Some((_, at)) = &u.decided {
                version = version.max(*at);
            }
        }
        let placed: std::collections::HashSet<IpAddr> = out.iter().map(|d| d.address).collect();
        let mut blocked = Vec::new();
        for u in self
            .store
            .unmanaged(Some(site), Some(palisade_core::UnmanagedState::Blocked))
            .await?
        {
            if let Some((_, at)) = &u.decided {
                version = version.max(*at);
            }
            if let Ok(a) = u.address.parse::<IpAddr>()
                && !placed.contains(&a)
                && spec.segments.iter().any(|s| s.subnet.contains(a))
            {
                blocked.push(a);
            }
        }
        Ok(SiteBundle {
            site: site.to_string(),
            version: u64::try_from(version).unwrap_or(0),
            issued_ms: self.clock.now_ms(),
            spec,
            devices: out,
            blocked,
        })
    }

    /// The bundle, signed with the policy key.
    pub fn sign(
        &self,
        b: &SiteBundle,
    ) -> Result<palisade_policy::signed::SignedBundle, ServiceError> {
        palisade_policy::signed::sign(b, &self.signing_key()?).map_err(internal)
    }
}
