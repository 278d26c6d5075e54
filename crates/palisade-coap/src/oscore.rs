//! The OSCORE listener: CoAP on plain UDP (or through a proxy), every request
//! protected end to end with OSCORE (RFC 8613), contexts established by EDHOC
//! (RFC 9528) from the device's identity and never stored: a restart, a
//! revocation or a new EDHOC run ends a context, and the device runs EDHOC
//! again.
//!
//! - `POST /.well-known/edhoc` with `true ‖ message_1` → 2.04 with message_2.
//! - The first OSCORE request may carry message_3 (the EDHOC option, RFC
//!   9668): the device's credential is checked against the inventory (its
//!   CCS subject is the device, its key that of a valid certificate of it,
//!   then the same admission as every session), the context is derived and
//!   the request is answered under it.
//! - Other requests must be OSCORE-protected with a known kid; anything else
//!   gets 4.01. Retransmitted requests are answered from the outer message
//!   layer before OSCORE sees them (RFC 8613 §7.5), so they never meet the
//!   replay window; replays and forgeries are refused and counted.
//! - Behind OSCORE the device's session is the same CoAP layer as over DTLS
//!   ([`crate::exchange`]): the same resources, Observe and block-wise; each
//!   notification is protected under the server's own Partial IV, once (a
//!   retransmission resends the same bytes).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use palisade_control::sessions::admit;
use palisade_core::{Clock, DeviceId, Transport};
use palisade_oscore::{OscoreError, RequestBinding, SecurityContext, request_kid};
use palisade_pki::public_key_raw_of;
use palisade_store::{CertFilter, CertStatus, Store};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::edhoc::{Claim, Responder};
use crate::exchange::{Exchange, Notice};
use crate::fleet::{Link, forward, send_all};
use crate::server::Coap;

/// The EDHOC option (RFC 9668 §3.1).
const EDHOC_OPTION: u16 = 21;
/// Outer message ids remembered per context for retransmissions.
const RECENT: usize = 16;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 4096;
/// Combined requests waiting for the inventory's answer.
const MAX_WAITING: usize = 1024;

struct Ctx {
    device: DeviceId,
    sid: u64,
    sec: SecurityContext,
    exchange: Exchange,
    addr: SocketAddr,
    last: Instant,
    /// Confirmable requests answered, by outer message id: a retransmission
    /// gets the same protected answer.
    recent: VecDeque<(u16, Vec<u8>)>,
    /// What the Observe registrations' notifications are bound to, by token.
    observers: HashMap<Vec<u8>, RequestBinding>,
    /// The notification in flight, plain and protected.
    sealed: Option<(Vec<u8>, Vec<u8>)>,
}

struct Waiting {
    claim: Claim,
    addr: SocketAddr,
    request: Packet,
    at: Instant,
}

enum Ctl {
    Claimed {
        kid: Vec<u8>,
        result: Result<(DeviceId, String), &'static str>,
    },
    Link {
        kid: Vec<u8>,
        sid: u64,
        link: Link,
    },
}

/// The listener's state, owned by its task.
struct State {
    edhoc: Responder,
    contexts: HashMap<Vec<u8>, Ctx>,
    by_addr: HashMap<SocketAddr, Vec<u8>>,
    waiting: HashMap<Vec<u8>, Waiting>,
    ctl: mpsc::Sender<Ctl>,
}

impl Coap {
    /// Serves the OSCORE listener until `shutdown` is set.
    pub async fn run_oscore(
        self: Arc<Self>,
        socket: UdpSocket,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let edhoc = match Responder::new(&self.p.edhoc) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the OSCORE listener cannot start");
                return;
            }
        };
        let (ctl_tx, mut ctl) = mpsc::channel::<Ctl>(1024);
        let mut st = State {
            edhoc,
            contexts: HashMap::new(),
            by_addr: HashMap::new(),
            waiting: HashMap::new(),
            ctl: ctl_tx,
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    if n == buf.len() {
                        self.p.metrics.coap().refused("oversized");
                        continue;
                    }
                    let out = self.oscore_datagram(&mut st, from, &buf[..n]);
                    for (to, d) in out {
                        send_all(&socket, to, vec![d]).await;
                    }
                }
                Some(c) = ctl.recv() => {
                    for (to, d) in self.oscore_control(&mut st, c) {
                        send_all(&socket, to, vec![d]).await;
                    }
                }
                _ = tick.tick() => {
                    for (to, d) in self.oscore_timers(&mut st) {
                        send_all(&socket, to, vec![d]).await;
                    }
                }
            }
        }
        for (_, c) in st.contexts.drain() {
            self.session_down(&c.device, c.sid, "server shutting down");
        }
    }

    fn oscore_datagram(
        &self,
        st: &mut State,
        from: SocketAddr,
        raw: &[u8],
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let m = self.p.metrics.coap();
        let now = Instant::now();
        let Ok(p) = Packet::from_bytes(raw) else {
            m.refused("malformed");
            return Vec::new();
        };
        let t = p.header.get_type();
        match (t, p.header.code) {
            (MessageType::Acknowledgement | MessageType::Reset, _) => {
                // An empty ACK or RST of a notification: not protected.
                let Some(ctx) = st.by_addr.get(&from).and_then(|k| st.contexts.get_mut(k)) else {
                    return Vec::new();
                };
                let acts = ctx.exchange.incoming(raw, now, self.p.clock.now_ms());
                self.seal_all(ctx, acts)
            }
            (MessageType::Confirmable, MessageClass::Empty) => {
                vec![(from, plain_answer(&p, None, &[]))]
            }
            (_, MessageClass::Request(method)) => {
                if p.get_option(CoapOption::Oscore).is_none() {
                    return vec![(from, self.unprotected(st, &p, method, now))];
                }
                let Ok((kid, _)) = request_kid(&p) else {
                    m.refused("oscore_malformed");
                    return vec![(
                        from,
                        plain_answer(
                            &p,
                            Some(ResponseType::BadOption),
                            b"malformed OSCORE option",
                        ),
                    )];
                };
                if p.get_option(CoapOption::Unknown(EDHOC_OPTION)).is_some() {
                    return self.combined(st, from, p, kid, now);
                }
                match st.contexts.get_mut(&kid) {
                    Some(ctx) => {
                        st.by_addr.insert(from, kid);
                        self.protected(ctx, from, &p, now)
                    }
                    None => {
                        m.refused("oscore_no_context");
                        vec![(
                            from,
                            plain_answer(
                                &p,
                                Some(ResponseType::Unauthorized),
                                b"Security context not found",
                            ),
                        )]
                    }
                }
            }
            _ => {
                m.refused("not_a_request");
                Vec::new()
            }
        }
    }

    /// A request without OSCORE: EDHOC's message_1, or refused.
    fn unprotected(
        &self,
        st: &mut State,
        p: &Packet,
        method: RequestType,
        now: Instant,
    ) -> Vec<u8> {
        let m = self.p.metrics.coap();
        let path: Vec<&[u8]> = p
            .get_option(CoapOption::UriPath)
            .map(|l| l.iter().map(Vec::as_slice).collect())
            .unwrap_or_default();
        if path != [&b".well-known"[..], b"edhoc"] {
            m.refused("not_protected");
            return plain_answer(p, Some(ResponseType::Unauthorized), b"OSCORE required");
        }
        if method != RequestType::Post || p.payload.first() != Some(&0xf5) {
            m.refused("edhoc_malformed");
            return plain_answer(
                p,
                Some(ResponseType::BadRequest),
                b"EDHOC message_1 expected",
            );
        }
        match st.edhoc.message_1(&p.payload[1..], now) {
            Ok(m2) => {
                let mut r = answer_to(p, ResponseType::Changed);
                // application/edhoc+cbor-seq
                r.add_option(CoapOption::ContentFormat, vec![64]);
                r.payload = m2;
                r.to_bytes().unwrap_or_default()
            }
            Err(e) => {
                m.refused("edhoc_message_1");
                tracing::debug!(error = %e, "EDHOC message_1 refused");
                plain_answer(
                    p,
                    Some(ResponseType::BadRequest),
                    b"EDHOC message_1 refused",
                )
            }
        }
    }

    /// The first OSCORE request with EDHOC's message_3 in front (RFC 9668):
    /// the claim goes to the inventory; the request waits for the answer.
    fn combined(
        &self,
        st: &mut State,
        from: SocketAddr,
        mut p: Packet,
        kid: Vec<u8>,
        now: Instant,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let m = self.p.metrics.coap();
        let Some(len) = bstr_len(&p.payload) else {
            m.refused("edhoc_malformed");
            return vec![(
                from,
                plain_answer(
                    &p,
                    Some(ResponseType::BadRequest),
                    b"EDHOC message_3 expected",
                ),
            )];
        };
        if st.waiting.contains_key(&kid) {
            // A retransmission while the inventory answers: it will be
            // answered then.
            return Vec::new();
        }
        let claim = match st.edhoc.message_3(&kid, &p.payload[..len]) {
            Ok(c) => c,
            Err(e) => {
                m.refused("edhoc_message_3");
                tracing::debug!(error = %e, "EDHOC message_3 refused");
                return vec![(
                    from,
                    plain_answer(
                        &p,
                        Some(ResponseType::BadRequest),
                        b"EDHOC message_3 refused",
                    ),
                )];
            }
        };
        if st.waiting.len() >= MAX_WAITING {
            m.refused("edhoc_busy");
            return vec![(
                from,
                plain_answer(&p, Some(ResponseType::ServiceUnavailable), b""),
            )];
        }
        p.clear_option(CoapOption::Unknown(EDHOC_OPTION));
        p.payload = p.payload[len..].to_vec();
        let (subject, point) = (claim.key.subject.clone(), claim.key.point.clone());
        st.waiting.insert(
            kid.clone(),
            Waiting {
                claim,
                addr: from,
                request: p,
                at: now,
            },
        );
        let (store, clock, ctl) = (self.p.store.clone(), self.p.clock.clone(), st.ctl.clone());
        tokio::spawn(async move {
            let result = certified(&*store, &*clock, &subject, &point).await;
            let _ = ctl.send(Ctl::Claimed { kid, result }).await;
        });
        Vec::new()
    }

    /// A protected request under a known context.
    fn protected(
        &self,
        ctx: &mut Ctx,
        from: SocketAddr,
        p: &Packet,
        now: Instant,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let m = self.p.metrics.coap();
        ctx.last = now;
        ctx.addr = from;
        let mid = p.header.message_id;
        let confirmable = p.header.get_type() == MessageType::Confirmable;
        if confirmable && let Some((_, r)) = ctx.recent.iter().find(|(id, _)| *id == mid) {
            m.refused("duplicate");
            return vec![(from, r.clone())];
        }
        let (inner, binding) = match ctx.sec.unprotect_request(p) {
            Ok(x) => x,
            Err(e) => {
                let (label, code, diag): (_, _, &[u8]) = match e {
                    OscoreError::Replay { .. } => (
                        "oscore_replay",
                        ResponseType::Unauthorized,
                        b"Replay detected",
                    ),
                    OscoreError::Decrypt => (
                        "oscore_decrypt",
                        ResponseType::BadRequest,
                        b"Decryption failed",
                    ),
                    _ => (
                        "oscore_refused",
                        ResponseType::BadRequest,
                        b"OSCORE processing failed",
                    ),
                };
                m.refused(label);
                self.p.presence.security_event(&ctx.device);
                tracing::debug!(device = %ctx.device, error = %e, "OSCORE request refused");
                return vec![(from, plain_answer(p, Some(code), diag))];
            }
        };
        if inner.get_observe_value() == Some(Ok(0)) {
            if ctx.observers.len() >= 4 {
                ctx.observers.clear();
            }
            ctx.observers
                .insert(inner.get_token().to_vec(), binding.clone());
        }
        let acts = ctx.exchange.incoming(
            &inner.to_bytes().unwrap_or_default(),
            now,
            self.p.clock.now_ms(),
        );
        let mut out = Vec::new();
        for a in acts {
            let Some(bytes) = self.act(&ctx.device, a) else {
                continue;
            };
            let Ok(resp) = Packet::from_bytes(&bytes) else {
                continue;
            };
            let observe = resp.get_option(CoapOption::Observe).is_some();
            match ctx.sec.protect_response(&resp, &binding, observe) {
                Ok(sealed) => {
                    let sealed = sealed.to_bytes().unwrap_or_default();
                    if confirmable {
                        if ctx.recent.len() >= RECENT {
                            ctx.recent.pop_front();
                        }
                        ctx.recent.push_back((mid, sealed.clone()));
                    }
                    out.push((from, sealed));
                }
                Err(e) => {
                    tracing::warn!(device = %ctx.device, error = %e, "could not protect a response")
                }
            }
        }
        out
    }

    /// Notifications (and resets) from the CoAP layer outside a request:
    /// notifications protected under the registration's binding, once.
    fn seal_all(
        &self,
        ctx: &mut Ctx,
        acts: Vec<crate::exchange::Act>,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for a in acts {
            let Some(bytes) = self.act(&ctx.device, a) else {
                continue;
            };
            let Ok(n) = Packet::from_bytes(&bytes) else {
                continue;
            };
            if n.header.get_type() != MessageType::Confirmable {
                out.push((ctx.addr, bytes));
                continue;
            }
            if let Some((plain, sealed)) = &ctx.sealed
                && *plain == bytes
            {
                out.push((ctx.addr, sealed.clone()));
                continue;
            }
            let Some(binding) = ctx.observers.get(n.get_token()) else {
                continue;
            };
            match ctx.sec.protect_response(&n, binding, true) {
                Ok(sealed) => {
                    let sealed = sealed.to_bytes().unwrap_or_default();
                    ctx.sealed = Some((bytes, sealed.clone()));
                    out.push((ctx.addr, sealed));
                }
                Err(e) => {
                    tracing::warn!(device = %ctx.device, error = %e, "could not protect a notification")
                }
            }
        }
        out
    }

    fn oscore_control(&self, st: &mut State, c: Ctl) -> Vec<(SocketAddr, Vec<u8>)> {
        let now = Instant::now();
        let m = self.p.metrics.coap();
        match c {
            Ctl::Claimed { kid, result } => {
                let Some(w) = st.waiting.remove(&kid) else {
                    return Vec::new();
                };
                let (device, serial) = match result {
                    Ok(x) => x,
                    Err(reason) => {
                        m.refused(reason);
                        self.credential_refused(Some(&w.claim.key.subject), w.addr, reason);
                        return vec![(
                            w.addr,
                            plain_answer(
                                &w.request,
                                Some(ResponseType::Unauthorized),
                                b"device not admitted",
                            ),
                        )];
                    }
                };
                let sec = match w.claim.finish() {
                    Ok(s) => s,
                    Err(e) => {
                        m.refused("edhoc_message_3");
                        self.credential_refused(Some(device.as_str()), w.addr, "edhoc");
                        tracing::debug!(%device, error = %e, "EDHOC message_3 did not verify");
                        return vec![(
                            w.addr,
                            plain_answer(
                                &w.request,
                                Some(ResponseType::BadRequest),
                                b"EDHOC message_3 refused",
                            ),
                        )];
                    }
                };
                m.edhoc();
                let (sid, kill, outbox) =
                    self.p
                        .sessions
                        .register(&device, &serial, Transport::CoapOscore);
                let link_kid = kid.clone();
                forward(kill, outbox, st.ctl.clone(), move |link| Ctl::Link {
                    kid: link_kid.clone(),
                    sid,
                    link,
                });
                self.session_up(&device, w.addr, "oscore");
                let seed = u16::try_from(sid & 0xffff).unwrap_or(0);
                let mut ctx = Ctx {
                    device,
                    sid,
                    sec,
                    exchange: Exchange::new(self.p.limits, seed, self.p.clock.now_ms()),
                    addr: w.addr,
                    last: now,
                    recent: VecDeque::new(),
                    observers: HashMap::new(),
                    sealed: None,
                };
                let out = self.protected(&mut ctx, w.addr, &w.request, now);
                st.by_addr.insert(w.addr, kid.clone());
                st.contexts.insert(kid, ctx);
                m.contexts(st.contexts.len());
                out
            }
            Ctl::Link { kid, sid, link } => {
                let Some(ctx) = st.contexts.get_mut(&kid).filter(|c| c.sid == sid) else {
                    return Vec::new();
                };
                match link {
                    Link::Notice(msg) => {
                        let acts = ctx.exchange.notify(
                            Notice {
                                topic: msg.topic,
                                payload: msg.payload,
                                command: msg.command,
                            },
                            now,
                        );
                        self.seal_all(ctx, acts)
                    }
                    Link::Kill(reason) => {
                        tracing::info!(device = %ctx.device, reason, "dropping the device's OSCORE context");
                        if let Some(c) = st.contexts.remove(&kid) {
                            st.by_addr.retain(|_, k| *k != kid);
                            self.session_down(&c.device, c.sid, reason);
                        }
                        m.contexts(st.contexts.len());
                        Vec::new()
                    }
                }
            }
        }
    }

    fn oscore_timers(&self, st: &mut State) -> Vec<(SocketAddr, Vec<u8>)> {
        let now = Instant::now();
        let idle = self.p.bounds.idle_timeout;
        st.edhoc.expire(now);
        st.waiting
            .retain(|_, w| now.saturating_duration_since(w.at) < self.p.bounds.handshake_timeout);
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (kid, ctx) in st.contexts.iter_mut() {
            if now.saturating_duration_since(ctx.last) > idle {
                gone.push(kid.clone());
                continue;
            }
            if ctx.exchange.next_due().is_some_and(|d| d <= now) {
                let acts = ctx.exchange.tick(now);
                out.extend(self.seal_all(ctx, acts));
            }
        }
        for kid in gone {
            if let Some(c) = st.contexts.remove(&kid) {
                st.by_addr.retain(|_, k| *k != kid);
                self.p.metrics.coap().refused("idle");
                self.session_down(&c.device, c.sid, "idle");
            }
        }
        self.p.metrics.coap().contexts(st.contexts.len());
        out
    }
}

/// The device named by the CCS subject, if `point` is the key of one of its
/// valid certificates and the device may hold a session; returns it with
/// that certificate's serial. A key whose certificate was revoked or has
/// expired is refused as such.
async fn certified(
    store: &dyn Store,
    clock: &dyn Clock,
    subject: &str,
    point: &[u8],
) -> Result<(DeviceId, String), &'static str> {
    let device = DeviceId::parse(subject).map_err(|_| "unknown_device")?;
    let now = clock.now_ms();
    let certs = store
        .certificates(&CertFilter {
            device: Some(device.clone()),
            status: None,
            limit: Some(64),
        })
        .await
        .map_err(|_| "store")?;
    let of_key: Vec<_> = certs
        .iter()
        .filter(|c| public_key_raw_of(&c.der).is_ok_and(|k| k == point))
        .collect();
    let serial = match of_key
        .iter()
        .find(|c| c.status == CertStatus::Valid && c.not_before_ms <= now && now < c.not_after_ms)
    {
        Some(c) => c.serial.clone(),
        None if of_key.iter().any(|c| c.status == CertStatus::Revoked) => return Err("revoked"),
        None if !of_key.is_empty() => return Err("expired"),
        None => return Err("key_not_certified"),
    };
    admit(store, clock, &device, &serial, "oscore").await?;
    Ok((device, serial))
}

/// The length of the CBOR byte string at the start of `b` (head and
/// content), if it is one and complete.
fn bstr_len(b: &[u8]) -> Option<usize> {
    let first = *b.first()?;
    if first >> 5 != 2 {
        return None;
    }
    let (head, len) = match first & 0x1f {
        n @ 0..=23 => (1, usize::from(n)),
        24 => (2, usize::from(*b.get(1)?)),
        25 => (3, usize::from(u16::from_be_bytes([*b.get(1)?, *b.get(2)?]))),
        _ => return None,
    };
    let total = head + len;
    (total <= b.len()).then_some(total)
}

/// A response skeleton to request `p`: piggybacked on an ACK for a CON, a
/// NON for a NON (same message id: the device matches on the token).
fn answer_to(p: &Packet, code: ResponseType) -> Packet {
    let mut r = Packet::new();
    r.header
        .set_type(if p.header.get_type() == MessageType::Confirmable {
            MessageType::Acknowledgement
        } else {
            MessageType::NonConfirmable
        });
    r.header.message_id = p.header.message_id;
    r.header.code = MessageClass::Response(code);
    r.set_token(p.get_token().to_vec());
    r
}

/// An unprotected answer (an error, with a diagnostic payload), or with no
/// code a Reset to a ping.
fn plain_answer(p: &Packet, code: Option<ResponseType>, diag: &[u8]) -> Vec<u8> {
    let r = match code {
        Some(c) => {
            let mut r = answer_to(p, c);
            r.payload = diag.to_vec();
            r
        }
        None => {
            let mut r = Packet::new();
            r.header.set_type(MessageType::Reset);
            r.header.code = MessageClass::Empty;
            r.header.message_id = p.header.message_id;
            r
        }
    };
    r.to_bytes().unwrap_or_default()
}
