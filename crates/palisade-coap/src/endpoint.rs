//! The DTLS endpoint: one task owning its UDP socket and every peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade_control::sessions::admit;
use palisade_core::{DeviceId, Transport};
use palisade_pki::inspect_certificate;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::dtls::{Progress, Read2, Session, Start};
use crate::est::EstAnswer;
use crate::exchange::{Act, EstMode, EstRequest, Exchange, Notice};
use crate::fleet::{Link, forward, send_all};
use crate::server::Coap;

/// A peer's state.
enum Phase {
    Handshake,
    /// Admission runs; early requests wait (a few). The leaf certificate is
    /// kept for EST re-enrolment.
    Admitting {
        early: Vec<Vec<u8>>,
        leaf: Vec<u8>,
    },
    Live(Box<Live>),
    /// A certificate that is not operational (a birth certificate): EST
    /// over CoAP only, for a minute.
    Enrolling(Box<Enrolling>),
}

struct Live {
    device: DeviceId,
    sid: u64,
    exchange: Exchange,
    leaf: Vec<u8>,
}

struct Enrolling {
    chain: Vec<Vec<u8>>,
    exchange: Exchange,
}

/// How long an enrolment-only session may stay.
const ENROLLING_FOR: Duration = Duration::from_secs(60);

struct Peer {
    tls: Box<Session>,
    phase: Phase,
    started: Instant,
    last: Instant,
}

/// Messages to the endpoint's task.
enum Ctl {
    Admitted {
        peer: SocketAddr,
        device: DeviceId,
        serial: String,
        result: Result<(), &'static str>,
    },
    Link {
        peer: SocketAddr,
        sid: u64,
        link: Link,
    },
    Est {
        peer: SocketAddr,
        req: EstRequest,
        answer: EstAnswer,
    },
}

/// Largest datagram read (a DTLS record of a 1024-byte block with its
/// headers is about 1.1 KiB).
const MAX_DATAGRAM: usize = 4096;
/// Requests held while a session is admitted.
const EARLY: usize = 4;

impl Coap {
    /// Serves the socket until `shutdown` is set; then closes every session
    /// (close_notify) and returns.
    pub async fn run(self: Arc<Self>, socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
        let (ctl_tx, mut ctl) = mpsc::channel::<Ctl>(1024);
        let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
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
                    let out = self.datagram(&mut peers, from, buf[..n].to_vec(), &ctl_tx);
                    send_all(&socket, from, out).await;
                }
                Some(c) = ctl.recv() => {
                    if let Some((to, out)) = self.control(&mut peers, c, &ctl_tx) {
                        send_all(&socket, to, out).await;
                    }
                }
                _ = tick.tick() => {
                    for (to, out) in self.timers(&mut peers, &ctl_tx) {
                        send_all(&socket, to, out).await;
                    }
                }
            }
        }
        for (addr, mut p) in peers.drain() {
            p.tls.close();
            send_all(&socket, addr, p.tls.take_outbound().into()).await;
            self.end(&p, "server shutting down");
        }
    }

    /// One datagram from `from`; returns what to send back.
    fn datagram(
        &self,
        peers: &mut HashMap<SocketAddr, Peer>,
        from: SocketAddr,
        d: Vec<u8>,
        ctl: &mpsc::Sender<Ctl>,
    ) -> Vec<Vec<u8>> {
        let now = Instant::now();
        let Some(peer) = peers.get_mut(&from) else {
            return self.new_peer(peers, from, d, now);
        };
        peer.last = now;
        match &mut peer.phase {
            Phase::Handshake => {
                let progress = peer.tls.handshake(Some(d));
                let out = peer.tls.take_outbound().into();
                self.progress(peers, from, progress, ctl);
                out
            }
            Phase::Admitting { early, .. } => {
                if let Read2::Data(msgs) = peer.tls.read(d) {
                    for m in msgs {
                        if early.len() < EARLY {
                            early.push(m);
                        }
                    }
                }
                peer.tls.take_outbound().into()
            }
            Phase::Live(_) | Phase::Enrolling(_) => match peer.tls.read(d) {
                Read2::Data(msgs) => {
                    let mut out = Vec::new();
                    for m in msgs {
                        out.extend(self.coap_in(peer, from, &m, now, ctl));
                    }
                    out.extend(peer.tls.take_outbound());
                    out
                }
                Read2::Closed => {
                    let out = peer.tls.take_outbound().into();
                    if let Some(p) = peers.remove(&from) {
                        self.end(&p, "closed by the device");
                    }
                    out
                }
            },
        }
    }

    /// A datagram from an address with no session: the stateless cookie
    /// exchange, then a session within the bounds.
    fn new_peer(
        &self,
        peers: &mut HashMap<SocketAddr, Peer>,
        from: SocketAddr,
        d: Vec<u8>,
        now: Instant,
    ) -> Vec<Vec<u8>> {
        let m = self.p.metrics.coap();
        // Only a handshake record (content type 22) starts a session; data
        // for a session this endpoint dropped gets no answer (the device's
        // retransmissions time out and it handshakes again).
        if d.first() != Some(&22) {
            m.refused("no_session");
            return Vec::new();
        }
        let Some(ctx) = self.p.dtls.current() else {
            return Vec::new();
        };
        match ctx.start(from, d) {
            Start::Verify(out) => {
                m.refused("no_cookie");
                out.into()
            }
            Start::Refused => {
                m.refused("not_a_client_hello");
                Vec::new()
            }
            Start::Session(mut tls, progress) => {
                let same_ip = peers
                    .iter()
                    .filter(|(a, p)| a.ip() == from.ip() && matches!(p.phase, Phase::Handshake))
                    .count();
                if peers.len() >= self.p.bounds.max_peers
                    || same_ip >= self.p.bounds.max_handshakes_per_ip
                {
                    m.refused("too_many_sessions");
                    return Vec::new();
                }
                let out = tls.take_outbound().into();
                peers.insert(
                    from,
                    Peer {
                        tls,
                        phase: Phase::Handshake,
                        started: now,
                        last: now,
                    },
                );
                // The handshake cannot be done by the first flight; the
                // progress is looked at for a failure.
                if let Progress::Failed(why) = progress {
                    tracing::debug!(peer = %from, %why, "DTLS handshake refused");
                    peers.remove(&from);
                    m.refused("handshake");
                }
                out
            }
        }
    }

    /// Acts on a handshake's progress: on completion, identity and admission.
    fn progress(
        &self,
        peers: &mut HashMap<SocketAddr, Peer>,
        from: SocketAddr,
        progress: Progress,
        ctl: &mpsc::Sender<Ctl>,
    ) {
        let m = self.p.metrics.coap();
        match progress {
            Progress::Pending => {}
            Progress::Failed(why) => {
                peers.remove(&from);
                m.refused("handshake");
                self.credential_refused(None, from, "tls");
                tracing::debug!(peer = %from, %why, "DTLS handshake refused");
            }
            Progress::Established(chain) => {
                m.handshake();
                let operational = self.p.dtls.current().is_some_and(|c| c.operational(&chain));
                if !operational {
                    // A birth certificate (or any other): EST only; the
                    // enrolment service judges the chain.
                    if let Some(p) = peers.get_mut(&from) {
                        let exchange =
                            Exchange::new(self.p.limits, from.port(), self.p.clock.now_ms())
                                .with_est(EstMode::EnrolmentOnly);
                        p.phase = Phase::Enrolling(Box::new(Enrolling { chain, exchange }));
                    }
                    return;
                }
                let leaf = chain.into_iter().next().unwrap_or_default();
                let identity = inspect_certificate(&leaf).ok().and_then(|info| {
                    let device = DeviceId::parse(info.common_name.as_deref()?).ok()?;
                    Some((device, info.serial_hex))
                });
                let Some((device, serial)) = identity else {
                    if let Some(mut p) = peers.remove(&from) {
                        p.tls.close();
                    }
                    self.credential_refused(None, from, "bad_certificate");
                    return;
                };
                if let Some(p) = peers.get_mut(&from) {
                    p.phase = Phase::Admitting {
                        early: Vec::new(),
                        leaf,
                    };
                }
                let (store, clock, ctl) = (self.p.store.clone(), self.p.clock.clone(), ctl.clone());
                tokio::spawn(async move {
                    let result = admit(&*store, &*clock, &device, &serial, "coap").await;
                    let _ = ctl
                        .send(Ctl::Admitted {
                            peer: from,
                            device,
                            serial,
                            result,
                        })
                        .await;
                });
            }
        }
    }

    /// A message from elsewhere in the endpoint; returns what to send.
    fn control(
        &self,
        peers: &mut HashMap<SocketAddr, Peer>,
        c: Ctl,
        ctl: &mpsc::Sender<Ctl>,
    ) -> Option<(SocketAddr, Vec<Vec<u8>>)> {
        let now = Instant::now();
        match c {
            Ctl::Admitted {
                peer: addr,
                device,
                serial,
                result,
            } => {
                let peer = peers.get_mut(&addr)?;
                let Phase::Admitting { early, leaf } = &mut peer.phase else {
                    return None;
                };
                let (early, leaf) = (std::mem::take(early), std::mem::take(leaf));
                if let Err(reason) = result {
                    self.p.metrics.coap().refused(reason);
                    self.credential_refused(Some(device.as_str()), addr, reason);
                    peer.tls.close();
                    let out = peer.tls.take_outbound().into();
                    peers.remove(&addr);
                    return Some((addr, out));
                }
                let (sid, kill, outbox) =
                    self.p
                        .sessions
                        .register(&device, &serial, Transport::CoapDtls);
                forward(kill, outbox, ctl.clone(), move |link| Ctl::Link {
                    peer: addr,
                    sid,
                    link,
                });
                self.session_up(&device, addr, "dtls");
                let seed = u16::try_from(sid & 0xffff).unwrap_or(0) ^ addr.port();
                peer.phase = Phase::Live(Box::new(Live {
                    device,
                    sid,
                    exchange: Exchange::new(self.p.limits, seed, self.p.clock.now_ms())
                        .with_est(EstMode::Operational),
                    leaf,
                }));
                self.p.metrics.coap().session_opened();
                let mut out = Vec::new();
                for m in early {
                    out.extend(self.coap_in(peer, addr, &m, now, ctl));
                }
                out.extend(peer.tls.take_outbound());
                Some((addr, out))
            }
            Ctl::Link {
                peer: addr,
                sid,
                link,
            } => {
                let peer = peers.get_mut(&addr)?;
                let Phase::Live(live) = &mut peer.phase else {
                    return None;
                };
                if live.sid != sid {
                    return None;
                }
                match link {
                    Link::Notice(msg) => {
                        let acts = live.exchange.notify(
                            Notice {
                                topic: msg.topic,
                                payload: msg.payload,
                                command: msg.command,
                            },
                            now,
                        );
                        let out = self.apply(peer, addr, acts, ctl);
                        Some((addr, out))
                    }
                    Link::Kill(reason) => {
                        tracing::info!(peer = %addr, reason, "closing the device's CoAP session");
                        peer.tls.close();
                        let out = peer.tls.take_outbound().into();
                        let p = peers.remove(&addr)?;
                        self.end(&p, reason);
                        Some((addr, out))
                    }
                }
            }
            Ctl::Est {
                peer: addr,
                req,
                answer,
            } => {
                let peer = peers.get_mut(&addr)?;
                let exchange = match &mut peer.phase {
                    Phase::Live(l) => &mut l.exchange,
                    Phase::Enrolling(e) => &mut e.exchange,
                    _ => return None,
                };
                self.p
                    .metrics
                    .coap()
                    .answered(&coap_lite::MessageClass::Response(answer.code).to_string());
                let bytes = exchange.est_answer(&req, answer.code, answer.format, answer.body);
                peer.tls.write(&bytes);
                Some((addr, peer.tls.take_outbound().into()))
            }
        }
    }

    /// CoAP messages from a live or enrolling session's device.
    fn coap_in(
        &self,
        peer: &mut Peer,
        addr: SocketAddr,
        m: &[u8],
        now: Instant,
        ctl: &mpsc::Sender<Ctl>,
    ) -> Vec<Vec<u8>> {
        let exchange = match &mut peer.phase {
            Phase::Live(l) => &mut l.exchange,
            Phase::Enrolling(e) => &mut e.exchange,
            _ => return Vec::new(),
        };
        let acts = exchange.incoming(m, now, self.p.clock.now_ms());
        self.apply(peer, addr, acts, ctl)
    }

    /// Carries out what the CoAP layer asked for; returns the datagrams.
    fn apply(
        &self,
        peer: &mut Peer,
        addr: SocketAddr,
        acts: Vec<Act>,
        ctl: &mpsc::Sender<Ctl>,
    ) -> Vec<Vec<u8>> {
        let Peer { tls, phase, .. } = peer;
        let m = self.p.metrics.coap();
        for a in acts {
            match (a, &*phase) {
                (Act::Est(req), Phase::Live(l)) => self.est(addr, req, vec![l.leaf.clone()], ctl),
                (Act::Est(req), Phase::Enrolling(e)) => self.est(addr, req, e.chain.clone(), ctl),
                (a, Phase::Live(l)) => {
                    if let Some(bytes) = self.act(&l.device, a) {
                        tls.write(&bytes);
                    }
                }
                (Act::Send(bytes), _) => {
                    tls.write(&bytes);
                }
                (Act::Refused(why), _) => m.refused(why),
                (Act::Answered(code), _) => m.answered(&code),
                _ => {}
            }
        }
        tls.take_outbound().into()
    }

    /// Runs an EST-coaps request through the enrolment service; the answer
    /// comes back to the task.
    fn est(&self, addr: SocketAddr, req: EstRequest, chain: Vec<Vec<u8>>, ctl: &mpsc::Sender<Ctl>) {
        let (enrollment, pki, metrics, ctl) = (
            self.p.enrollment.clone(),
            self.p.pki.clone(),
            self.p.metrics.clone(),
            ctl.clone(),
        );
        tokio::spawn(async move {
            let answer = crate::est::answer(&enrollment, &pki, &metrics, &req, &chain).await;
            let _ = ctl
                .send(Ctl::Est {
                    peer: addr,
                    req,
                    answer,
                })
                .await;
        });
    }

    /// Handshake retransmissions and deadlines, notification
    /// retransmissions, idle sessions.
    fn timers(
        &self,
        peers: &mut HashMap<SocketAddr, Peer>,
        ctl: &mpsc::Sender<Ctl>,
    ) -> Vec<(SocketAddr, Vec<Vec<u8>>)> {
        let now = Instant::now();
        let b = self.p.bounds;
        let mut sends = Vec::new();
        let mut gone = Vec::new();
        for (addr, peer) in peers.iter_mut() {
            let out: Vec<Vec<u8>> = match &mut peer.phase {
                Phase::Handshake | Phase::Admitting { .. }
                    if now.duration_since(peer.started) > b.handshake_timeout =>
                {
                    gone.push((*addr, "handshake_timeout"));
                    continue;
                }
                Phase::Handshake => {
                    peer.tls.handshake_timer();
                    peer.tls.take_outbound().into()
                }
                Phase::Admitting { .. } => continue,
                Phase::Enrolling(_) => {
                    if now.duration_since(peer.started) > ENROLLING_FOR {
                        peer.tls.close();
                        sends.push((*addr, peer.tls.take_outbound().into()));
                        gone.push((*addr, "enrolment_session_over"));
                    }
                    continue;
                }
                Phase::Live(_) if now.duration_since(peer.last) > b.idle_timeout => {
                    peer.tls.close();
                    sends.push((*addr, peer.tls.take_outbound().into()));
                    gone.push((*addr, "idle"));
                    continue;
                }
                Phase::Live(live) => {
                    if live.exchange.next_due().is_none_or(|d| d > now) {
                        continue;
                    }
                    let acts = live.exchange.tick(now);
                    self.apply(peer, *addr, acts, ctl)
                }
            };
            if !out.is_empty() {
                sends.push((*addr, out));
            }
        }
        for (addr, why) in gone {
            if let Some(p) = peers.remove(&addr) {
                self.p.metrics.coap().refused(why);
                self.end(&p, why);
            }
        }
        self.p.metrics.coap().peers_held(peers.len());
        sends
    }

    /// A peer that was live is gone.
    fn end(&self, p: &Peer, why: &str) {
        if let Phase::Live(live) = &p.phase {
            self.p.metrics.coap().session_closed();
            self.session_down(&live.device, live.sid, why);
        }
    }
}
