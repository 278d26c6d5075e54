//! People's accounts for the console: passwords hashed with argon2id, sessions
//! held server-side (the cookie carries a 256-bit secret; only its SHA-256 is
//! stored), idle and absolute expiry, revocation on sign-out and when an
//! account is disabled, and sign-in failures rate-limited per account and per
//! address, audited and told to the detectors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use palisade_audit::{Digest32, EntryDraft};
use palisade_core::{Clock, OperatorName, Role};
use palisade_detect::detect::AuthPlace;
use palisade_store::{AccountRecord, Change, SessionRecord, Store};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{ServiceError, bad};
use crate::events::{Event, EventBus};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (argon2 has no limit; a bound keeps hashing cheap).
pub const MAX_PASSWORD: usize = 1024;
/// The session cookie's name.
pub const COOKIE: &str = "palisade_session";
/// A session is touched in the store at most this often (ms).
const TOUCH_EVERY_MS: i64 = 60_000;
/// Failures counted per account and per address over this window (ms).
const WINDOW_MS: i64 = 15 * 60_000;
/// Failures per account in a window before it is locked for the rest of it.
const PER_ACCOUNT: u32 = 5;
/// Failures per address in a window.
const PER_ADDRESS: u32 = 20;

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session unused this long ends (ms).
    pub idle_ms: i64,
    /// A session ends this long after sign-in, however used (ms).
    pub absolute_ms: i64,
}

/// A signed-in person, from a valid session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Who.
    pub operator: OperatorName,
    /// Their role (the account's, read at each request).
    pub role: Role,
    /// The session's CSRF token.
    pub csrf: String,
    /// The session.
    pub id_hash: Digest32,
}

impl SignedIn {
    /// The audit actor.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.operator)
    }
}

/// A session just opened.
#[derive(Debug)]
pub struct NewSession {
    /// The cookie value (the secret; never stored).
    pub cookie: Zeroizing<String>,
    /// Its lifetime in seconds (the cookie's Max-Age).
    pub max_age_secs: i64,
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Wrong name or password, or a disabled account (one answer for all,
    /// so names cannot be probed).
    #[error("wrong name or password")]
    Refused,
    /// Too many failures for this account or from this address.
    #[error("too many failed sign-ins: try again in {0} minutes")]
    Throttled(i64),
    /// Our fault.
    #[error("sign-in failed: {0}")]
    Internal(String),
}

#[derive(Debug, Default)]
struct Failures {
    by_account: HashMap<String, (i64, u32)>,
    by_address: HashMap<IpAddr, (i64, u32)>,
}

fn count(map_entry: Option<&(i64, u32)>, now: i64) -> u32 {
    match map_entry {
        Some((since, n)) if now - since < WINDOW_MS => *n,
        _ => 0,
    }
}

/// The accounts service.
#[derive(Debug)]
pub struct Accounts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    bus: Arc<dyn EventBus>,
    limits: SessionLimits,
    failures: Mutex<Failures>,
    rng: SystemRandom,
}

/// Hashes a password with argon2id (OWASP parameters: 19 MiB, 2 passes).
fn hash_password(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("hashing the password: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Hash of an argon2id password nobody has: sign-in against an unknown name
/// costs what it costs against a known one.
fn decoy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lzYWx0ZGVjb3k$Ry2nQz0S9S3Kq3l1S3jx0M4Yb4Uu1k0aMS4Nfl8nN3w"
}

fn check_password(p: &str) -> Result<(), ServiceError> {
    if p.chars().count() < MIN_PASSWORD || p.len() > MAX_PASSWORD {
        return Err(bad(
            "bad_password",
            format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

/// The SHA-256 of a cookie's secret, as the store keys sessions.
pub fn session_key(cookie: &str) -> Digest32 {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Accounts {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        bus: Arc<dyn EventBus>,
        limits: SessionLimits,
    ) -> Self {
        Self {
            store,
            clock,
            bus,
            limits,
            failures: Mutex::default(),
            rng: SystemRandom::new(),
        }
    }

    fn random(&self) -> Result<String, ServiceError> {
        let mut b = [0u8; 32];
        self.rng
            .fill(&mut b)
            .map_err(|_| ServiceError::Internal("random number generator failed".into()))?;
        Ok(B64URL.encode(b))
    }

    /// Creates an account (audited).
    pub async fn add(
        &self,
        actor: &str,
        name: OperatorName,
        role: Role,
        password: Zeroizing<String>,
    ) -> Result<AccountRecord, ServiceError> {
        check_password(&password)?;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let now = self.clock.now_ms();
        let rec = AccountRecord {
            name: name.clone(),
            role,
            password_hash: hash,
            created_ms: now,
            updated_ms: now,
            disabled_ms: None,
        };
        self.store
            .commit(
                vec![Change::InsertAccount(rec.clone())],
                vec![
                    EntryDraft::success(actor, "account.add", name.as_str())
                        .with_detail(json!({ "role": role.to_string() })),
                ],
            )
            .await?;
        Ok(rec)
    }

    /// Sets an account's password (audited).
    pub async fn set_password(
        &self,
        actor: &str,
        name: &OperatorName,
        password: Zeroizing<String>,
    ) -> Result<(), ServiceError> {
        check_password(&password)?;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        self.store
            .commit(
                vec![Change::UpdateAccount {
                    name: name.clone(),
                    password_hash: Some(hash),
                    role: None,
                    at_ms: self.clock.now_ms(),
                }],
                vec![EntryDraft::success(
                    actor,
                    "account.password",
                    name.as_str(),
                )],
            )
            .await?;
        Ok(())
    }

    /// Disables an account and ends its sessions at once (audited).
    pub async fn disable(&self, actor: &str, name: &OperatorName) -> Result<(), ServiceError> {
        self.store
            .commit(
                vec![Change::DisableAccount {
                    name: name.clone(),
                    at_ms: self.clock.now_ms(),
                }],
                vec![EntryDraft::success(actor, "account.disable", name.as_str())],
            )
            .await?;
        Ok(())
    }

    /// Every account.
    pub async fn list(&self) -> Result<Vec<AccountRecord>, ServiceError> {
        Ok(self.store.accounts().await?)
    }

    fn throttled(&self, name: &str, address: IpAddr, now: i64) -> Option<i64> {
        let f = self.failures.lock().ok()?;
        let a = f.by_account.get(name);
        let b = f.by_address.get(&address);
        let over = count(a, now) >= PER_ACCOUNT || count(b, now) >= PER_ADDRESS;
        over.then(|| {
            let since = [a, b]
                .into_iter()
                .flatten()
                .map(|x| x.0)
                .max()
                .unwrap_or(now);
            ((since + WINDOW_MS - now) / 60_000).max(1)
        })
    }

    fn note_failure(&self, name: &str, address: IpAddr, now: i64) {
        if let Ok(mut f) = self.failures.lock() {
            if f.by_account.len() > 100_000 {
                f.by_account.retain(|_, v| now - v.0 < WINDOW_MS);
            }
            if f.by_address.len() > 100_000 {
                f.by_address.retain(|_, v| now - v.0 < WINDOW_MS);
            }
            let bump = |e: &mut (i64, u32)| {
                if now - e.0 >= WINDOW_MS {
                    *e = (now, 0);
                }
                e.1 += 1;
            };
            bump(f.by_account.entry(name.to_owned()).or_insert((now, 0)));
            bump(f.by_address.entry(address).or_insert((now, 0)));
        }
    }

    async fn refuse(&self, name: &str, address: IpAddr, reason: &'static str, now: i64) {
        let shown: String = name.chars().take(64).collect();
        let entry = EntryDraft::denied(format!("anonymous@{address}"), "console.login", &shown)
            .with_detail(json!({ "reason": reason }));
        if let Err(e) = self.store.commit(vec![], vec![entry]).await {
            tracing::error!(error = %e, "could not audit a refused sign-in");
        }
        self.bus.publish(Event::CredentialRefused {
            device: None,
            peer: Some(address),
            place: AuthPlace::Console,
            // Which accounts are being guessed is what the operator asks first.
            reason: format!("{reason} for account {shown}"),
            at_ms: now,
        });
    }

    /// Signs a person in: the password checked against the account's argon2id
    /// hash, the account enabled, and neither it nor the address throttled.
    pub async fn login(
        &self,
        name: &str,
        password: Zeroizing<String>,
        address: IpAddr,
    ) -> Result<NewSession, LoginError> {
        let now = self.clock.now_ms();
        if let Some(mins) = self.throttled(name, address, now) {
            self.refuse(name, address, "throttled", now).await;
            return Err(LoginError::Throttled(mins));
        }
        let account = match OperatorName::parse(name) {
            Ok(n) => self
                .store
                .account(&n)
                .await
                .map_err(|e| LoginError::Internal(e.to_string()))?,
            Err(_) => None,
        };
        let hash = account
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |a| a.password_hash.clone());
        let long = password.len() > MAX_PASSWORD;
        let matches =
            tokio::task::spawn_blocking(move || !long && verify_password(&password, &hash))
                .await
                .unwrap_or(false);
        let account = match account {
            Some(a) if matches && a.disabled_ms.is_none() => a,
            Some(a) if matches => {
                self.note_failure(name, address, now);
                self.refuse(a.name.as_str(), address, "disabled", now).await;
                return Err(LoginError::Refused);
            }
            _ => {
                self.note_failure(name, address, now);
                self.refuse(name, address, "wrong_name_or_password", now)
                    .await;
                return Err(LoginError::Refused);
            }
        };
        let cookie = Zeroizing::new(
            self.random()
                .map_err(|e| LoginError::Internal(e.to_string()))?,
        );
        let csrf = self
            .random()
            .map_err(|e| LoginError::Internal(e.to_string()))?;
        let expires_ms = now + self.limits.absolute_ms;
        self.store
            .commit(
                vec![Change::InsertSession(SessionRecord {
                    id_hash: session_key(&cookie),
                    operator: account.name.clone(),
                    csrf,
                    address: address.to_string(),
                    created_ms: now,
                    last_seen_ms: now,
                    expires_ms,
                    revoked_ms: None,
                })],
                vec![
                    EntryDraft::success(
                        format!("operator:{}", account.name),
                        "console.login",
                        account.name.as_str(),
                    )
                    .with_detail(json!({ "address": address })),
                ],
            )
            .await
            .map_err(|e| LoginError::Internal(e.to_string()))?;
        if let Ok(mut f) = self.failures.lock() {
            f.by_account.remove(name);
        }
        Ok(NewSession {
            cookie,
            max_age_secs: self.limits.absolute_ms / 1000,
        })
    }

    /// The person behind a session cookie, if the session is valid: not
    /// revoked, not idle too long, not past its absolute expiry, and the account
    /// enabled. Touches the session at most once a minute.
    pub async fn session(&self, cookie: &str) -> Result<Option<SignedIn>, ServiceError> {
        if cookie.len() > 128 {
            return Ok(None);
        }
        let key = session_key(cookie);
        let Some(s) = self.store.session(&key).await? else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        if s.revoked_ms.is_some()
            || now >= s.expires_ms
            || now - s.last_seen_ms >= self.limits.idle_ms
        {
            return Ok(None);
        }
        let Some(account) = self.store.account(&s.operator).await? else {
            return Ok(None);
        };
        if account.disabled_ms.is_some() {
            return Ok(None);
        }
        if now - s.last_seen_ms >= TOUCH_EVERY_MS {
            self.store
                .commit(
                    vec![Change::TouchSession {
                        id_hash: key,
                        at_ms: now,
                    }],
                    vec![],
                )
                .await?;
        }
        Ok(Some(SignedIn {
            operator: account.name,
            role: account.role,
            csrf: s.csrf,
            id_hash: key,
        }))
    }

    /// Signs out: the session is revoked server-side (audited).
    pub async fn logout(&self, who: &SignedIn) -> Result<(), ServiceError> {
        self.store
            .commit(
                vec![Change::RevokeSession {
                    id_hash: who.id_hash,
                    at_ms: self.clock.now_ms(),
                }],
                vec![EntryDraft::success(
                    who.actor(),
                    "console.logout",
                    who.operator.as_str(),
                )],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoy_hash_is_a_real_argon2id_hash_so_unknown_names_cost_the_same() {
        assert!(PasswordHash::new(decoy_hash()).is_ok());
        assert!(!verify_password("anything at all", decoy_hash()));
    }

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &h));
        assert!(!verify_password("correct horse battery stapler", &h));
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
    }
}
