//! `palisade-edge`: a site's edge gateway. It enrols with its own identity
//! through EST, fetches its site's signed policy bundle over mutual TLS
//! (long-polling, so changes arrive within a second), renders the nftables
//! ruleset and applies it in one `nft -f` transaction, keeping the last good
//! ruleset to restore, and reports what it applied with its counters. A
//! bundle with a bad signature, for another site or older than the applied
//! one is ignored: the last good policy stays.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod flows;
mod hosts;
mod legacy;
mod proxy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use hyper::{Method, StatusCode};
use palisade_agent::tls_key::ClientIdentity;
use palisade_agent::{Agent, EnrollAuth, EstClient, SoftwareKeystore, SystemClock};
use palisade_policy::signed::{SignedBundle, verify};
use rustls::pki_types::CertificateDer;

/// The Palisade edge gateway.
#[derive(Debug, Parser)]
#[command(name = "palisade-edge", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args, Clone)]
struct Common {
    /// Palisade server URL, e.g. https://palisade.example:8443
    #[arg(long, env = "PALISADE_EDGE_SERVER")]
    server: String,
    /// Palisade's root CA certificate (PEM).
    #[arg(long, env = "PALISADE_EDGE_ROOT", value_name = "FILE")]
    root: PathBuf,
    /// State directory (key 0600, certificate, pinned policy key, last ruleset).
    #[arg(long, env = "PALISADE_EDGE_STATE_DIR", value_name = "DIR")]
    state_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enrol the edge gateway's identity with a one-time token.
    Enroll {
        #[command(flatten)]
        common: Common,
        /// The token (`palisade enrollment-token create --model MODEL`).
        #[arg(long, env = "PALISADE_EDGE_TOKEN", hide_env_values = true)]
        token: String,
        /// This edge's id.
        #[arg(long)]
        edge_id: String,
    },
    /// Enrol an identity the edge holds for a legacy device (plaintext MQTT
    /// only), with a one-time token for that device.
    LegacyEnroll {
        #[command(flatten)]
        common: Common,
        /// The token (`palisade enrollment-token create --model MODEL`).
        #[arg(long, env = "PALISADE_EDGE_TOKEN", hide_env_values = true)]
        token: String,
        /// The legacy device's id.
        #[arg(long)]
        device_id: String,
    },
    /// Enforce the site's policy until stopped.
    Run {
        #[command(flatten)]
        common: Common,
        /// The nft program.
        #[arg(long, env = "PALISADE_EDGE_NFT", default_value = "nft")]
        nft: String,
        /// Apply one bundle (or none if unchanged) and exit.
        #[arg(long)]
        once: bool,
        /// How long each request for a newer bundle waits on the server (1..=25 s);
        /// the status with counters is reported after each.
        #[arg(long, default_value_t = 20)]
        wait_secs: u64,
        /// Run the egress proxy (HTTPS CONNECT and TLS by SNI) on this address;
        /// the site's `egress_proxy_port` must be its port.
        #[arg(long, env = "PALISADE_EDGE_PROXY_LISTEN")]
        proxy_listen: Option<std::net::SocketAddr>,
        /// Serve legacy devices' plaintext MQTT 3.1.1 on this address (on their
        /// segment), bridged to the gateway over mutual TLS as each device; the
        /// site's `legacy_mqtt_port` must be its port.
        #[arg(long, env = "PALISADE_EDGE_LEGACY_MQTT_LISTEN")]
        legacy_mqtt_listen: Option<std::net::SocketAddr>,
        /// The control plane's MQTT gateway, HOST:PORT [default: the server's host, 8883].
        #[arg(long, env = "PALISADE_EDGE_UPSTREAM_MQTT")]
        upstream_mqtt: Option<String>,
        /// The flow exporter run per device segment when the site names a collector.
        #[arg(long, env = "PALISADE_EDGE_SOFTFLOWD", default_value = "softflowd")]
        softflowd: String,
        /// A library preloaded into softflowd (contrib/pcap-immediate: libpcap
        /// immediate mode, so flows are exported within seconds on light traffic).
        #[arg(long, env = "PALISADE_EDGE_SOFTFLOWD_PRELOAD", value_name = "FILE")]
        softflowd_preload: Option<std::path::PathBuf>,
        /// The site resolver's dnsmasq DHCP lease file, read to report hosts
        /// on the segments (unmanaged hosts); a missing file reports none.
        #[arg(
            long,
            env = "PALISADE_EDGE_DHCP_LEASES",
            value_name = "FILE",
            default_value = "/var/lib/misc/dnsmasq.leases"
        )]
        dhcp_leases: std::path::PathBuf,
        /// The `ip` program (iproute2), read for the neighbour table and the
        /// edge's own addresses on its segments.
        #[arg(long, env = "PALISADE_EDGE_IP", default_value = "ip")]
        ip: String,
    },
}

fn agent(c: &Common) -> anyhow::Result<Agent> {
    let root = std::fs::read(&c.root).with_context(|| format!("reading {}", c.root.display()))?;
    let est = EstClient::new(&c.server, &root, None)?;
    std::fs::create_dir_all(&c.state_dir)
        .with_context(|| format!("creating {}", c.state_dir.display()))?;
    Ok(Agent::new(
        &c.state_dir,
        Arc::new(SoftwareKeystore::new(&c.state_dir)),
        est,
        Arc::new(SystemClock),
    ))
}

/// The edge's identity for mutual TLS.
fn identity(a: &Agent) -> anyhow::Result<(String, ClientIdentity)> {
    let id = a
        .identity()?
        .context("not enrolled: run `palisade-edge enroll` first")?;
    Ok((
        id.device_id,
        ClientIdentity::new(
            vec![CertificateDer::from(id.cert_der)],
            a.operational_key()?,
        ),
    ))
}

async fn call(
    a: &Agent,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(StatusCode, Vec<u8>)> {
    let (_, id) = identity(a)?;
    let (s, b) = a
        .est()
        .call(method, path, id, body.map(|b| b.to_string().into_bytes()))
        .await?;
    Ok((s, b.to_vec()))
}

/// The policy key, pinned on first use (fetched over TLS pinned to the
/// Palisade root, with the edge's certificate).
async fn policy_key(a: &Agent, dir: &Path) -> anyhow::Result<Vec<u8>> {
    let p = dir.join("policy.pub");
    if let Ok(k) = std::fs::read(&p) {
        return Ok(k);
    }
    let (s, b) = call(a, Method::GET, "/edge/v1/key", None).await?;
    if s != StatusCode::OK {
        bail!(
            "fetching the policy key: HTTP {s}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&b)?;
    let k = v["ed25519_public"]
        .as_str()
        .and_then(|s| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).ok())
        .filter(|k| k.len() == 32)
        .context("the policy key is malformed")?;
    std::fs::write(&p, &k).with_context(|| format!("writing {}", p.display()))?;
    Ok(k)
}

/// The stored signed bundle, if it verifies with the pinned key and is the
/// applied version.
fn restore(
    path: &Path,
    key: &[u8],
    site: &str,
    applied: u64,
) -> anyhow::Result<palisade_policy::site::SiteBundle> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let signed: SignedBundle = serde_json::from_slice(&b).context("the stored bundle")?;
    let bundle = verify(&signed, key, site, applied.saturating_sub(1))
        .context("the stored bundle does not verify")?;
    anyhow::ensure!(
        bundle.version == applied,
        "the stored bundle is version {}, the applied one {applied}",
        bundle.version
    );
    Ok(bundle)
}

/// Applies `script` with `nft -f`; on failure the previous ruleset (if any)
/// is applied again and the error returned.
fn apply(nft: &str, dir: &Path, script: &str) -> anyhow::Result<()> {
    let next = dir.join("ruleset.nft.next");
    let good = dir.join("ruleset.nft");
    std::fs::write(&next, script).with_context(|| format!("writing {}", next.display()))?;
    let o = std::process::Command::new(nft)
        .arg("-f")
        .arg(&next)
        .output()
        .with_context(|| format!("running {nft}"))?;
    if o.status.success() {
        std::fs::rename(&next, &good).with_context(|| format!("keeping {}", good.display()))?;
        return Ok(());
    }
    let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
    // nft -f is one transaction: a failed apply changed nothing. Re-applying
    // the last good ruleset also repairs a table edited by hand meanwhile.
    if good.exists() {
        let _ = std::process::Command::new(nft)
            .arg("-f")
            .arg(&good)
            .output();
    }
    bail!("nft refused the ruleset (the previous one stays): {why}")
}

/// What the DNS keeper resolves: the site resolver and the named flows of
/// the applied bundle.
#[derive(Debug, Default)]
struct DnsWork {
    resolver: Option<std::net::IpAddr>,
    flows: Vec<palisade_policy::site::DnsFlow>,
    /// The latest answers, reported with the status.
    answers: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
}

/// Keeps the name-based flows current: resolves each name through the site
/// resolver (no cache: each answer's TTL is the element's lifetime) and
/// replaces the `dns_out` sets in one transaction, at half the shortest TTL
/// (1..=60 s) and whenever a bundle is applied. If the resolver stops
/// answering, the elements expire with their TTL: the gateway fails closed.
async fn dns_keeper(
    nft: String,
    work: Arc<tokio::sync::Mutex<DnsWork>>,
    wake: Arc<tokio::sync::Notify>,
) {
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::proto::rr::{RData, RecordType};
    let mut next = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(next) => {}
        }
        let (resolver_ip, flows) = {
            let w = work.lock().await;
            (w.resolver, w.flows.clone())
        };
        let Some(resolver_ip) = resolver_ip else {
            continue;
        };
        if flows.is_empty() {
            next = Duration::from_secs(30);
            continue;
        }
        let cfg = ResolverConfig::from_parts(
            None,
            vec![],
            NameServerConfigGroup::from_ips_clear(&[resolver_ip], 53, true),
        );
        let mut b = hickory_resolver::Resolver::builder_with_config(
            cfg,
            TokioConnectionProvider::default(),
        );
        b.options_mut().cache_size = 0;
        b.options_mut().attempts = 1;
        b.options_mut().timeout = Duration::from_secs(2);
        let resolver = b.build();
        let mut names: Vec<&palisade_policy::DnsName> = flows.iter().map(|f| &f.name).collect();
        names.sort();
        names.dedup();
        let mut answers = std::collections::BTreeMap::new();
        let mut min_ttl = 60u32;
        for n in names {
            let mut addrs = vec![];
            for rt in [RecordType::A, RecordType::AAAA] {
                if let Ok(l) = resolver.lookup(n.as_str(), rt).await {
                    for r in l.records() {
                        let ip = match r.data() {
                            RData::A(a) => std::net::IpAddr::V4(a.0),
                            RData::AAAA(a) => std::net::IpAddr::V6(a.0),
                            _ => continue,
                        };
                        min_ttl = min_ttl.min(r.ttl());
                        addrs.push((ip, r.ttl()));
                    }
                }
            }
            answers.insert(n.clone(), addrs);
        }
        work.lock().await.answers = answers
            .iter()
            .map(|(n, a)| (n.to_string(), a.iter().map(|(ip, _)| *ip).collect()))
            .collect();
        let mut script = format!(
            "flush set inet {t} dns_out4\nflush set inet {t} dns_out6\n",
            t = palisade_policy::site::TABLE
        );
        let mut count = 0;
        for f in &flows {
            for (ip, ttl) in answers.get(&f.name).into_iter().flatten() {
                if ip.is_ipv4() != f.device.is_ipv4() {
                    continue;
                }
                let set = if ip.is_ipv4() { "dns_out4" } else { "dns_out6" };
                let proto = f.protocol.map_or("0-255".to_string(), |p| p.to_string());
                let ports = f
                    .ports
                    .map_or("0-65535".to_string(), |p| format!("{}-{}", p.lo, p.hi));
                script.push_str(&format!(
                    "add element inet {} {set} {{ {} . {ip} . {proto} . {ports} timeout {}s }}\n",
                    palisade_policy::site::TABLE,
                    f.device,
                    (*ttl).max(2) + 1
                ));
                count += 1;
            }
        }
        match nft_stdin(&nft, &script) {
            Ok(()) => tracing::debug!(elements = count, "DNS-named flows refreshed"),
            Err(e) => tracing::warn!(error = %e, "could not refresh the DNS-named flows"),
        }
        next = Duration::from_secs(u64::from((min_ttl / 2).clamp(1, 60)));
    }
}

fn nft_stdin(nft: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut c = std::process::Command::new(nft)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {nft}"))?;
    c.stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let o = c.wait_with_output()?;
    if !o.status.success() {
        bail!("{}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// A ruleset without its comment line (which carries the bundle version).
fn without_comment(script: &str) -> String {
    script
        .lines()
        .filter(|l| !l.trim_start().starts_with("comment "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The named counters of Palisade's table.
fn counters(nft: &str) -> serde_json::Value {
    let o = std::process::Command::new(nft)
        .args([
            "-j",
            "list",
            "counters",
            "table",
            "inet",
            palisade_policy::site::TABLE,
        ])
        .output();
    let mut out = serde_json::Map::new();
    if let Ok(o) = o
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout)
    {
        for item in v["nftables"].as_array().into_iter().flatten() {
            let c = &item["counter"];
            if let Some(name) = c["name"].as_str() {
                out.insert(
                    name.to_string(),
                    serde_json::json!({ "packets": c["packets"], "bytes": c["bytes"] }),
                );
            }
        }
    }
    out.into()
}

/// The optional services a running edge offers its segments.
#[derive(Debug, Default)]
struct Services {
    proxy_listen: Option<std::net::SocketAddr>,
    legacy_mqtt_listen: Option<std::net::SocketAddr>,
    upstream_mqtt: Option<String>,
    softflowd: String,
    softflowd_preload: Option<std::path::PathBuf>,
    dhcp_leases: Option<std::path::PathBuf>,
    ip: String,
}

async fn run(
    common: &Common,
    nft: &str,
    once: bool,
    wait_secs: u64,
    services: Services,
) -> anyhow::Result<ExitCode> {
    let proxy_listen = services.proxy_listen;
    let a = agent(common)?;
    let (edge, _) = identity(&a)?;
    let dir = common.state_dir.clone();
    let key = policy_key(&a, &dir).await?;
    let applied_path = dir.join("applied-version");
    let mut applied: u64 = std::fs::read_to_string(&applied_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut site: Option<String> = std::fs::read_to_string(dir.join("site"))
        .ok()
        .map(|s| s.trim().to_string());
    let mut failures = 0u32;
    let mut last_error = String::new();
    let dns = Arc::new(tokio::sync::Mutex::new(DnsWork::default()));
    let dns_wake = Arc::new(tokio::sync::Notify::new());
    if !once {
        tokio::spawn(dns_keeper(nft.to_string(), dns.clone(), dns_wake.clone()));
    }
    let current = Arc::new(tokio::sync::RwLock::new(None));
    let mut exporters = flows::Exporters::default();
    let proxy_counters = Arc::new(proxy::ProxyCounters::default());
    if let Some(addr) = proxy_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("the egress proxy cannot listen on {addr}"))?;
        tokio::spawn(proxy::serve(l, current.clone(), proxy_counters.clone()));
    }
    if let Some(addr) = services.legacy_mqtt_listen {
        let upstream = match &services.upstream_mqtt {
            Some(u) => {
                let (h, p) = u.rsplit_once(':').context("--upstream-mqtt is HOST:PORT")?;
                (h.to_string(), p.parse().context("--upstream-mqtt port")?)
            }
            None => (a.est().host().to_string(), 8883),
        };
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("the legacy bridge cannot listen on {addr}"))?;
        let bridge = legacy::Bridge {
            identities: dir.join("legacy"),
            est: a.est().clone(),
            upstream,
        };
        tokio::spawn(legacy::serve(l, bridge, current.clone()));
    }
    // A restart takes the applied bundle back into service: the proxy, the
    // legacy bridge, the DNS-named sets and flow export need it, and the
    // server only answers with a newer one. It is verified again against
    // the pinned key; the ruleset is loaded again only if the kernel lost it
    // (a reboot), so counters survive a restart.
    let stored = dir.join("bundle.json");
    if !once && applied > 0 {
        let restored = site
            .as_deref()
            .context("no site pinned")
            .and_then(|s| restore(&stored, &key, s, applied));
        let restored = restored.and_then(|bundle| {
            let rules = palisade_policy::site::render(&bundle)?;
            let in_kernel = std::process::Command::new(nft)
                .args(["list", "table", "inet", palisade_policy::site::TABLE])
                .output()
                .is_ok_and(|o| o.status.success());
            if !in_kernel {
                apply(nft, &dir, &rules.script)?;
            }
            Ok((bundle, rules.dns, in_kernel))
        });
        match restored {
            Ok((bundle, flows, in_kernel)) => {
                {
                    let mut w = dns.lock().await;
                    w.resolver = Some(bundle.spec.resolver);
                    w.flows = flows;
                }
                dns_wake.notify_one();
                exporters.sync(
                    &services.softflowd,
                    services.softflowd_preload.as_deref(),
                    &dir,
                    &bundle,
                );
                *current.write().await = Some(bundle);
                tracing::info!(
                    version = applied,
                    reloaded = !in_kernel,
                    "applied policy restored"
                );
            }
            Err(e) => {
                // Ask the server for its current bundle, the same version
                // included.
                tracing::warn!(error = %format!("{e:#}"), "the applied policy cannot be restored; asking the server for it");
                applied -= 1;
            }
        }
    }
    loop {
        let path = format!(
            "/edge/v1/bundle?after={applied}&wait={}",
            if once { 0 } else { wait_secs.clamp(1, 25) }
        );
        let outcome: anyhow::Result<()> = async {
            let (s, b) = call(&a, Method::GET, &path, None).await?;
            match s {
                StatusCode::NO_CONTENT => return Ok(()),
                StatusCode::OK => {}
                s => bail!("bundle: HTTP {s}: {}", String::from_utf8_lossy(&b)),
            }
            let signed: SignedBundle = serde_json::from_slice(&b).context("bundle")?;
            // The site is learnt from the first verified bundle and pinned.
            let want = site.clone().unwrap_or_default();
            let bundle = match verify(&signed, &key, &want, applied) {
                Ok(b) => b,
                Err(palisade_policy::signed::BundleError::OtherSite(s)) if site.is_none() => {
                    let b = verify(&signed, &key, &s, applied)?;
                    std::fs::write(dir.join("site"), &s)?;
                    site = Some(s);
                    b
                }
                Err(e) => bail!("{e}; keeping the policy in force"),
            };
            let rules = palisade_policy::site::render(&bundle)?;
            // A new version whose rules are the same (a device went from
            // enrolled to active, say) is recorded without touching nftables,
            // so counters and established state stay.
            let same = std::fs::read_to_string(dir.join("ruleset.nft"))
                .is_ok_and(|old| without_comment(&old) == without_comment(&rules.script));
            if !same {
                apply(nft, &dir, &rules.script)?;
            }
            {
                let mut w = dns.lock().await;
                w.resolver = Some(bundle.spec.resolver);
                w.flows = rules.dns;
            }
            dns_wake.notify_one();
            *current.write().await = Some(bundle.clone());
            if !once {
                exporters.sync(
                    &services.softflowd,
                    services.softflowd_preload.as_deref(),
                    &dir,
                    &bundle,
                );
            }
            applied = bundle.version;
            let next = dir.join("bundle.json.next");
            std::fs::write(&next, &b).and_then(|()| std::fs::rename(&next, &stored))?;
            std::fs::write(&applied_path, applied.to_string())?;
            tracing::info!(
                version = applied,
                devices = bundle.devices.len(),
                "policy applied"
            );
            Ok(())
        }
        .await;
        match &outcome {
            Ok(()) => {
                failures = 0;
                last_error.clear();
            }
            Err(e) => {
                failures += 1;
                last_error = format!("{e:#}");
                tracing::warn!(error = %last_error, "policy bundle not applied");
            }
        }
        let mut c = counters(nft);
        c["flow_exporters"] = exporters.count().into();
        c["proxy_allowed"] = proxy_counters
            .allowed
            .load(std::sync::atomic::Ordering::Relaxed)
            .into();
        c["proxy_denied"] = proxy_counters
            .denied
            .load(std::sync::atomic::Ordering::Relaxed)
            .into();
        let seen = match current.read().await.as_ref() {
            Some(bundle) => hosts::seen(
                &services.ip,
                services.dhcp_leases.as_deref(),
                bundle,
                palisade_core::Clock::now_ms(&SystemClock) / 1000,
            ),
            None => hosts::Seen::default(),
        };
        let status = serde_json::json!({
            "applied_version": applied, "counters": c, "error": last_error,
            "dns": dns.lock().await.answers.clone(),
            "hosts": seen.hosts, "own": seen.own,
        });
        if let Err(e) = call(&a, Method::POST, "/edge/v1/status", Some(status)).await {
            tracing::warn!(error = %e, "could not report the edge status");
        }
        if once {
            println!(
                "edge {edge}: applied bundle v{applied}{}",
                if last_error.is_empty() {
                    String::new()
                } else {
                    format!(" ({last_error})")
                }
            );
            return Ok(if outcome.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        // Keep the certificate fresh between polls.
        let mut renew_failures = 0;
        let _ = a.step(0.5, &mut renew_failures).await;
        if outcome.is_err() {
            tokio::time::sleep(Duration::from_secs(u64::from(failures.min(5)) * 2)).await;
        }
    }
}

async fn main_async(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Enroll {
            common,
            token,
            edge_id,
        } => {
            let a = agent(&common)?;
            let id = a
                .enroll(&EnrollAuth::Token {
                    device: edge_id,
                    token,
                })
                .await?;
            eprintln!(
                "edge gateway enrolled as {} (certificate {})",
                id.device_id, id.serial
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            common,
            nft,
            once,
            wait_secs,
            proxy_listen,
            legacy_mqtt_listen,
            upstream_mqtt,
            softflowd,
            softflowd_preload,
            dhcp_leases,
            ip,
        } => {
            let s = Services {
                proxy_listen,
                legacy_mqtt_listen,
                upstream_mqtt,
                softflowd,
                softflowd_preload,
                dhcp_leases: Some(dhcp_leases),
                ip,
            };
            run(&common, &nft, once, wait_secs, s).await
        }
        Cmd::LegacyEnroll {
            common,
            token,
            device_id,
        } => {
            let root = std::fs::read(&common.root)
                .with_context(|| format!("reading {}", common.root.display()))?;
            let est = EstClient::new(&common.server, &root, None)?;
            let dir = common.state_dir.join("legacy").join(&device_id);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let la = Agent::new(
                &dir,
                Arc::new(SoftwareKeystore::new(&dir)),
                est,
                Arc::new(SystemClock),
            );
            let id = la
                .enroll(&EnrollAuth::Token {
                    device: device_id,
                    token,
                })
                .await?;
            eprintln!(
                "the edge holds legacy device {}'s identity (certificate {})",
                id.device_id, id.serial
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_async(cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
