//! The CoAP message layer and resources of one device's session, with no I/O
//! and time passed in: deduplication (RFC 7252 §4.5), piggybacked answers,
//! confirmable notifications with retransmission (§4.2, NSTART 1), Observe
//! (RFC 7641) of the commands and update notices, block-wise transfer
//! (RFC 7959) both ways, and the fleet's resources:
//!
//! | resource             | method       | what                                  |
//! |----------------------|--------------|---------------------------------------|
//! | `/telemetry`         | POST         | telemetry (as MQTT `…/telemetry`)     |
//! | `/events`            | POST         | events (as MQTT `…/events`)           |
//! | `/acks`              | POST         | command answers (as MQTT `…/acks`)    |
//! | `/commands`          | GET, Observe | commands, one notification each       |
//! | `/ota`               | GET, Observe | update notices                        |
//! | `/.well-known/core`  | GET          | the list above (RFC 6690)             |
//! | `/.well-known/est/crts`, `sen`, `sren` | GET, POST | EST over CoAP (RFC 9148), over DTLS only |
//!
//! The device is who its DTLS certificate says; there is no device id in a
//! path, so no request can reach another device's resources.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use palisade_mqtt::TopicKind;
use std::time::Instant;

use crate::block::{Block, MAX_SZX, trim};

/// RFC 7252 §4.8: ACK_TIMEOUT and MAX_RETRANSMIT.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u8 = 4;
/// §4.8.2: how long a message id is remembered for deduplication.
const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Message ids remembered per device (a device has NSTART 1 too; this covers
/// a burst of non-confirmable telemetry).
const RECENT: usize = 32;
/// Observe sequence numbers are 24 bits (RFC 7641 §4.4).
const OBSERVE_MASK: u32 = 0x00ff_ffff;
/// Link-format content format (RFC 6690).
const LINK_FORMAT: u16 = 40;
/// application/json.
const JSON: u16 = 50;
const WELL_KNOWN_CORE: &str = "</telemetry>;rt=\"palisade.telemetry\";ct=50,</events>;rt=\"palisade.events\";ct=50,</acks>;rt=\"palisade.acks\";ct=50,</commands>;rt=\"palisade.commands\";obs;ct=50,</ota>;rt=\"palisade.ota\";obs;ct=50";

/// Sizes a session holds to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (assembled from Block1 blocks).
    pub max_body: usize,
    /// Notifications waiting for the one in flight.
    pub max_queued: usize,
    /// Telemetry, events and acks per second, and the burst allowed.
    pub rate: u32,
    /// The burst.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024,
            max_queued: 64,
            rate: 50,
            burst: 200,
        }
    }
}

/// What a session asks its endpoint to do.
#[derive(Debug, PartialEq)]
pub enum Act {
    /// Send this CoAP message to the device.
    Send(Vec<u8>),
    /// A device message for the fleet, as an MQTT publish on `kind`.
    Publish {
        /// Telemetry, events or acks.
        kind: TopicKind,
        /// The body.
        payload: Bytes,
    },
    /// The device observes its commands now.
    CommandsObserved,
    /// The device acknowledged the notification carrying this command.
    Delivered(String),
    /// Something refused, for the metrics (`malformed`, `rate_limited`, ...).
    Refused(&'static str),
    /// A notification was sent.
    Notified,
    /// A confirmable notification was sent again.
    Retransmitted,
    /// An EST-coaps request for the enrolment service; the endpoint answers
    /// it later with [`Exchange::est_answer`].
    Est(EstRequest),
    /// A request was answered with this code (`2.04`, `4.04`, ...).
    Answered(String),
}

/// What EST over CoAP (RFC 9148) a session may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstMode {
    /// None (OSCORE sessions: EST-coaps is defined over DTLS).
    Off,
    /// A device with an operational certificate: everything, and EST.
    Operational,
    /// A device with a birth certificate only: EST and nothing else.
    EnrolmentOnly,
}

/// An EST-coaps operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstOp {
    /// `GET /.well-known/est/crts`: the CA certificates.
    CaCerts,
    /// `POST /.well-known/est/sen`: enrol with a birth certificate.
    Enroll,
    /// `POST /.well-known/est/sren`: renew with the operational certificate.
    Reenroll,
}

/// An EST-coaps request waiting for the enrolment service.
#[derive(Debug, Clone, PartialEq)]
pub struct EstRequest {
    /// Which operation.
    pub op: EstOp,
    /// The CSR (DER, content-format 286) for `sen` and `sren`.
    pub csr: Vec<u8>,
    /// The answer is the bare certificate (Accept: 287) rather than a
    /// certs-only CMS message (281).
    pub pkix_cert: bool,
    mid: u16,
    token: Vec<u8>,
    confirmable: bool,
}

/// application/pkcs7-mime; smime-type=certs-only (RFC 9148).
pub const CF_CERTS_ONLY: u16 = 281;
/// application/pkcs10.
pub const CF_PKCS10: u16 = 286;
/// application/pkix-cert.
pub const CF_PKIX_CERT: u16 = 287;

/// A resource a device may observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watched {
    Commands,
    Ota,
}

#[derive(Debug)]
struct Observer {
    token: Vec<u8>,
    seq: u32,
}

#[derive(Debug)]
struct Recent {
    mid: u16,
    at: Instant,
    /// The answer sent (for a confirmable request): sent again on a duplicate.
    reply: Option<Vec<u8>>,
}

/// The confirmable notification awaiting its ACK.
#[derive(Debug)]
struct Inflight {
    mid: u16,
    bytes: Vec<u8>,
    sent: u8,
    timeout: Duration,
    due: Instant,
    command: Option<String>,
    watched: Watched,
}

/// A message for the device, as the session registry hands it over.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Commands or update notices (from the MQTT topic it was addressed to).
    pub topic: String,
    /// The body.
    pub payload: Bytes,
    /// The command whose delivery the device's ACK confirms.
    pub command: Option<String>,
}

/// A request body arriving in Block1 blocks.
#[derive(Debug)]
struct Upload {
    path: String,
    body: Vec<u8>,
    next: u32,
}

/// The device's session at the CoAP layer.
#[derive(Debug)]
pub struct Exchange {
    limits: Limits,
    next_mid: u16,
    recent: VecDeque<Recent>,
    commands: Option<Observer>,
    ota: Option<Observer>,
    inflight: Option<Inflight>,
    queue: VecDeque<Notice>,
    upload: Option<Upload>,
    /// The last notification body larger than one block, for the device's
    /// GETs of the blocks after the first (RFC 7959 §2.6).
    served: Option<(Watched, Bytes)>,
    bucket: palisade_mqtt::TokenBucket,
    est: EstMode,
}

impl Exchange {
    /// A new session; `seed` picks the first message id (unpredictable ids
    /// make off-path spoofing of ACKs harder).
    pub fn new(limits: Limits, seed: u16, now_ms: i64) -> Self {
        Self {
            limits,
            next_mid: seed,
            recent: VecDeque::new(),
            commands: None,
            ota: None,
            inflight: None,
            queue: VecDeque::new(),
            upload: None,
            served: None,
            bucket: palisade_mqtt::TokenBucket::new(limits.rate, limits.burst, now_ms),
            est: EstMode::Off,
        }
    }

    /// What EST over CoAP this session may use (none by default).
    pub fn with_est(mut self, est: EstMode) -> Self {
        self.est = est;
        self
    }

    /// Whether the device observes its commands.
    pub fn observes_commands(&self) -> bool {
        self.commands.is_some()
    }

    fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    /// Handles one CoAP message from the device.
    pub fn incoming(&mut self, raw: &[u8], now: Instant, now_ms: i64) -> Vec<Act> {
        let mut acts = Vec::new();
        let packet = match Packet::from_bytes(raw) {
            Ok(p) => p,
            Err(_) => {
                acts.push(Act::Refused("malformed"));
                // §4.2: a confirmable message that cannot be parsed is
                // rejected with a Reset carrying its message id.
                if raw.len() >= 4 && raw[0] >> 6 == 1 && (raw[0] >> 4) & 3 == 0 {
                    let mid = u16::from_be_bytes([raw[2], raw[3]]);
                    acts.push(Act::Send(empty(MessageType::Reset, mid)));
                }
                return acts;
            }
        };
        let mid = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Acknowledgement | MessageType::Reset, _) => {
                self.answered(
                    mid,
                    packet.header.get_type() == MessageType::Reset,
                    now,
                    &mut acts,
                );
            }
            (MessageType::Confirmable, MessageClass::Empty) => {
                // A CoAP ping (§4.3).
                acts.push(Act::Send(empty(MessageType::Reset, mid)));
            }
            (t, MessageClass::Request(method)) => {
                self.forget_old(now);
                if let Some(r) = self.recent.iter().find(|r| r.mid == mid) {
                    acts.push(Act::Refused("duplicate"));
                    if let Some(reply) = &r.reply {
                        acts.push(Act::Send(reply.clone()));
                    }
                    return acts;
                }
                let confirmable = t == MessageType::Confirmable;
                if let Some(est) = self.est_request(method, &packet, confirmable) {
                    match est {
                        Ok(req) => {
                            // Answered when the enrolment service has; a
                            // retransmission meanwhile is dropped above.
                            self.remember(mid, now, None);
                            acts.push(Act::Est(req));
                            return acts;
                        }
                        Err(response) => {
                            acts.push(Act::Answered(response.header.code.to_string()));
                            let bytes = self.frame(response, confirmable, mid);
                            self.remember(mid, now, confirmable.then(|| bytes.clone()));
                            acts.push(Act::Send(bytes));
                            return acts;
                        }
                    }
                }
                let response = self.request(method, &packet, now_ms, &mut acts);
                acts.push(Act::Answered(response.header.code.to_string()));
                let bytes = self.frame(response, confirmable, mid);
                self.remember(mid, now, confirmable.then(|| bytes.clone()));
                acts.push(Act::Send(bytes));
            }
            (MessageType::Confirmable, _) => {
                // A response or a reserved code where a request belongs.
                acts.push(Act::Refused("not_a_request"));
                acts.push(Act::Send(empty(MessageType::Reset, mid)));
            }
            _ => acts.push(Act::Refused("not_a_request")),
        }
        acts
    }

    /// A piggybacked answer to a confirmable request, or a non-confirmable
    /// answer to a non-confirmable one.
    fn frame(&mut self, mut response: Packet, confirmable: bool, mid: u16) -> Vec<u8> {
        if confirmable {
            response.header.set_type(MessageType::Acknowledgement);
            response.header.message_id = mid;
        } else {
            response.header.set_type(MessageType::NonConfirmable);
            response.header.message_id = self.mid();
        }
        encode(&response)
    }

    fn remember(&mut self, mid: u16, now: Instant, reply: Option<Vec<u8>>) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            mid,
            at: now,
            reply,
        });
    }

    /// A request to `/.well-known/est/…`: `None` if it is not one;
    /// `Some(Err(answer))` if it is refused at once.
    fn est_request(
        &self,
        method: RequestType,
        p: &Packet,
        confirmable: bool,
    ) -> Option<Result<EstRequest, Packet>> {
        let path = uri_path(p);
        let refuse = |code| {
            let mut r = Packet::new();
            r.set_token(p.get_token().to_vec());
            r.header.code = MessageClass::Response(code);
            Err(r)
        };
        let Some(name) = path.strip_prefix(".well-known/est/") else {
            // A birth certificate reaches EST and nothing else.
            return (self.est == EstMode::EnrolmentOnly)
                .then(|| refuse(ResponseType::Unauthorized));
        };
        if self.est == EstMode::Off {
            return Some(refuse(ResponseType::NotFound));
        }
        let op = match (name, method) {
            ("crts", RequestType::Get) => EstOp::CaCerts,
            ("sen", RequestType::Post) => EstOp::Enroll,
            ("sren", RequestType::Post) => EstOp::Reenroll,
            ("crts" | "sen" | "sren", _) => return Some(refuse(ResponseType::MethodNotAllowed)),
            _ => return Some(refuse(ResponseType::NotFound)),
        };
        if op != EstOp::CaCerts {
            if content_format(p) != Some(CF_PKCS10) {
                return Some(refuse(ResponseType::UnsupportedContentFormat));
            }
            if p.get_option(CoapOption::Block1).is_some() || p.payload.len() > self.limits.max_body
            {
                // A P-256 CSR is a few hundred bytes: one block.
                return Some(refuse(ResponseType::RequestEntityTooLarge));
            }
        }
        let accept = p
            .get_first_option(CoapOption::Accept)
            .map(|v| v.iter().take(2).fold(0u16, |a, b| (a << 8) | u16::from(*b)));
        let pkix_cert = match accept {
            None | Some(CF_CERTS_ONLY) => false,
            Some(CF_PKIX_CERT) if op != EstOp::CaCerts => true,
            Some(_) => return Some(refuse(ResponseType::NotAcceptable)),
        };
        Some(Ok(EstRequest {
            op,
            csr: p.payload.clone(),
            pkix_cert,
            mid: p.header.message_id,
            token: p.get_token().to_vec(),
            confirmable,
        }))
    }

    /// The answer to an EST-coaps request, remembered for its
    /// retransmissions: `body` with `format`, or an error `code`.
    pub fn est_answer(
        &mut self,
        req: &EstRequest,
        code: ResponseType,
        format: Option<u16>,
        body: Vec<u8>,
    ) -> Vec<u8> {
        let mut r = Packet::new();
        r.set_token(req.token.clone());
        r.header.code = MessageClass::Response(code);
        if let Some(f) = format {
            r.add_option(CoapOption::ContentFormat, trim(&f.to_be_bytes()));
        }
        r.payload = body;
        let bytes = self.frame(r, req.confirmable, req.mid);
        if let Some(e) = self.recent.iter_mut().find(|e| e.mid == req.mid) {
            e.reply = req.confirmable.then(|| bytes.clone());
        }
        bytes
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|r| now.duration_since(r.at) > EXCHANGE_LIFETIME)
        {
            self.recent.pop_front();
        }
    }

    /// An ACK or RST from the device.
    fn answered(&mut self, mid: u16, reset: bool, now: Instant, acts: &mut Vec<Act>) {
        let Some(f) = self.inflight.take_if(|f| f.mid == mid) else {
            return;
        };
        if reset {
            // §3.6 of RFC 7641: a Reset to a notification ends the observation.
            match f.watched {
                Watched::Commands => self.commands = None,
                Watched::Ota => self.ota = None,
            }
        } else if let Some(id) = f.command {
            acts.push(Act::Delivered(id));
        }
        self.send_next(now, acts);
    }

    fn request(
        &mut self,
        method: RequestType,
        p: &Packet,
        now_ms: i64,
        acts: &mut Vec<Act>,
    ) -> Packet {
        let mut r = Packet::new();
        r.header.code = MessageClass::Response(ResponseType::InternalServerError);
        r.set_token(p.get_token().to_vec());
        if let Some(code) = unsupported_option(p) {
            acts.push(Act::Refused("bad_option"));
            r.header.code = MessageClass::Response(code);
            return r;
        }
        let path = uri_path(p);
        let block2 = match Block::option(p, CoapOption::Block2) {
            Ok(b) => b,
            Err(_) => {
                acts.push(Act::Refused("bad_block"));
                r.header.code = MessageClass::Response(ResponseType::BadOption);
                return r;
            }
        };
        match (path.as_str(), method) {
            ("telemetry" | "events" | "acks", RequestType::Post | RequestType::Put) => {
                let kind = match path.as_str() {
                    "telemetry" => TopicKind::Telemetry,
                    "events" => TopicKind::Events,
                    _ => TopicKind::Acks,
                };
                self.upload_request(kind, path, p, now_ms, &mut r, acts);
            }
            ("commands" | "ota", RequestType::Get) => {
                let watched = if path == "commands" {
                    Watched::Commands
                } else {
                    Watched::Ota
                };
                self.observe_request(watched, p, block2, &mut r, acts);
            }
            (".well-known/core", RequestType::Get) => {
                content(
                    &mut r,
                    LINK_FORMAT,
                    Bytes::from_static(WELL_KNOWN_CORE.as_bytes()),
                    block2,
                );
            }
            ("telemetry" | "events" | "acks" | "commands" | "ota" | ".well-known/core", _) => {
                r.header.code = MessageClass::Response(ResponseType::MethodNotAllowed);
            }
            _ => {
                acts.push(Act::Refused("no_such_resource"));
                r.header.code = MessageClass::Response(ResponseType::NotFound);
            }
        }
        r
    }

    /// A POST of telemetry, events or acks, whole or in Block1 blocks.
    fn upload_request(
        &mut self,
        kind: TopicKind,
        path: String,
        p: &Packet,
        now_ms: i64,
        r: &mut Packet,
        acts: &mut Vec<Act>,
    ) {
        if let Some(cf) = content_format(p)
            && cf != JSON
        {
            r.header.code = MessageClass::Response(ResponseType::UnsupportedContentFormat);
            return;
        }
        let block1 = match Block::option(p, CoapOption::Block1) {
            Ok(b) => b,
            Err(_) => {
                acts.push(Act::Refused("bad_block"));
                r.header.code = MessageClass::Response(ResponseType::BadOption);
                return;
            }
        };
        let body = match block1 {
            None => {
                self.upload = None;
                p.payload.clone()
            }
            Some(b) => {
                if b.num == 0 {
                    self.upload = Some(Upload {
                        path: path.clone(),
                        body: Vec::new(),
                        next: 0,
                    });
                }
                let expected = self
                    .upload
                    .as_ref()
                    .is_some_and(|u| u.path == path && u.next == b.num);
                // Every block but the last is exactly the block size.
                if !expected || (b.more && p.payload.len() != b.size()) {
                    self.upload = None;
                    acts.push(Act::Refused("block_out_of_order"));
                    r.header.code = MessageClass::Response(ResponseType::RequestEntityIncomplete);
                    return;
                }
                let Some(u) = self.upload.as_mut() else {
                    return;
                };
                if u.body.len() + p.payload.len() > self.limits.max_body {
                    self.upload = None;
                    too_large(r, self.limits.max_body);
                    acts.push(Act::Refused("too_large"));
                    return;
                }
                u.body.extend_from_slice(&p.payload);
                u.next += 1;
                Block {
                    num: b.num,
                    more: b.more,
                    szx: b.szx,
                }
                .set(r, CoapOption::Block1);
                if b.more {
                    r.header.code = MessageClass::Response(ResponseType::Continue);
                    return;
                }
                self.upload.take().map(|u| u.body).unwrap_or_default()
            }
        };
        if body.len() > self.limits.max_body {
            too_large(r, self.limits.max_body);
            acts.push(Act::Refused("too_large"));
            return;
        }
        if !self.bucket.take(1, now_ms) {
            acts.push(Act::Refused("rate_limited"));
            r.header.code = MessageClass::Response(ResponseType::TooManyRequests);
            r.add_option(CoapOption::MaxAge, vec![1]);
            return;
        }
        acts.push(Act::Publish {
            kind,
            payload: Bytes::from(body),
        });
        r.header.code = MessageClass::Response(ResponseType::Changed);
    }

    /// A GET of commands or update notices, with or without Observe.
    fn observe_request(
        &mut self,
        watched: Watched,
        p: &Packet,
        block2: Option<Block>,
        r: &mut Packet,
        acts: &mut Vec<Act>,
    ) {
        // The blocks after the first of a large notification.
        if let Some(b) = block2.filter(|b| b.num > 0) {
            match &self.served {
                Some((w, body)) if *w == watched => {
                    content(r, JSON, body.clone(), Some(b));
                }
                _ => {
                    r.header.code = MessageClass::Response(ResponseType::RequestEntityIncomplete);
                }
            }
            return;
        }
        let slot = match watched {
            Watched::Commands => &mut self.commands,
            Watched::Ota => &mut self.ota,
        };
        match p.get_observe_value() {
            Some(Ok(0)) => {
                let seq = slot.as_ref().map_or(0, |o| o.seq);
                *slot = Some(Observer {
                    token: p.get_token().to_vec(),
                    seq,
                });
                r.set_observe_value(seq);
                if watched == Watched::Commands {
                    acts.push(Act::CommandsObserved);
                }
            }
            Some(Ok(1)) => *slot = None,
            Some(_) => {
                r.header.code = MessageClass::Response(ResponseType::BadOption);
                return;
            }
            None => {}
        }
        // The resource's own state is the stream of notifications: a GET
        // answers with an empty list.
        content(r, JSON, Bytes::from_static(b"[]"), None);
    }

    /// A message for the device: sent as a confirmable notification to its
    /// observation, queued behind the one in flight (bounded), or dropped if
    /// the device does not observe that resource (the commands service sends
    /// queued commands again when it observes).
    pub fn notify(&mut self, n: Notice, now: Instant) -> Vec<Act> {
        let mut acts = Vec::new();
        let Some(watched) = watched_topic(&n.topic) else {
            acts.push(Act::Refused("unroutable_notice"));
            return acts;
        };
        let observed = match watched {
            Watched::Commands => self.commands.is_some(),
            Watched::Ota => self.ota.is_some(),
        };
        if !observed {
            acts.push(Act::Refused("not_observed"));
            return acts;
        }
        if self.queue.len() >= self.limits.max_queued {
            acts.push(Act::Refused("queue_full"));
            return acts;
        }
        self.queue.push_back(n);
        if self.inflight.is_none() {
            self.send_next(now, &mut acts);
        }
        acts
    }

    fn send_next(&mut self, now: Instant, acts: &mut Vec<Act>) {
        while self.inflight.is_none() {
            let Some(n) = self.queue.pop_front() else {
                return;
            };
            let Some(watched) = watched_topic(&n.topic) else {
                continue;
            };
            let mid = self.mid();
            let slot = match watched {
                Watched::Commands => &mut self.commands,
                Watched::Ota => &mut self.ota,
            };
            let Some(o) = slot.as_mut() else {
                continue;
            };
            o.seq = (o.seq + 1) & OBSERVE_MASK;
            let mut p = Packet::new();
            p.header.set_type(MessageType::Confirmable);
            p.header.message_id = mid;
            p.set_token(o.token.clone());
            p.set_observe_value(o.seq);
            let first = Block {
                num: 0,
                more: false,
                szx: MAX_SZX,
            };
            if n.payload.len() > first.size() {
                self.served = Some((watched, n.payload.clone()));
            }
            content(&mut p, JSON, n.payload, Some(first));
            let bytes = encode(&p);
            // The first timeout is between ACK_TIMEOUT and 1.5 × that
            // (§4.8), spread by the message id.
            let timeout = ACK_TIMEOUT + Duration::from_millis(u64::from(mid) % 1000);
            self.inflight = Some(Inflight {
                mid,
                bytes: bytes.clone(),
                sent: 0,
                timeout,
                due: now + timeout,
                command: n.command,
                watched,
            });
            acts.push(Act::Notified);
            acts.push(Act::Send(bytes));
        }
    }

    /// Retransmits the notification in flight when its timer ran out; after
    /// MAX_RETRANSMIT the device is taken as gone from that observation.
    pub fn tick(&mut self, now: Instant) -> Vec<Act> {
        let mut acts = Vec::new();
        let Some(f) = self.inflight.as_mut() else {
            return acts;
        };
        if now < f.due {
            return acts;
        }
        if f.sent >= MAX_RETRANSMIT {
            let watched = f.watched;
            self.inflight = None;
            match watched {
                Watched::Commands => self.commands = None,
                Watched::Ota => self.ota = None,
            }
            self.queue.clear();
            acts.push(Act::Refused("notification_unacknowledged"));
            return acts;
        }
        f.sent += 1;
        f.timeout *= 2;
        f.due = now + f.timeout;
        acts.push(Act::Retransmitted);
        acts.push(Act::Send(f.bytes.clone()));
        acts
    }

    /// The next instant `tick` has work, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.inflight.as_ref().map(|f| f.due)
    }
}

fn watched_topic(topic: &str) -> Option<Watched> {
    if topic.ends_with("/commands") {
        Some(Watched::Commands)
    } else if topic.ends_with("/ota") {
        Some(Watched::Ota)
    } else {
        None
    }
}

/// An empty message (ACK or RST) with this id.
fn empty(t: MessageType, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(t);
    p.header.code = MessageClass::Empty;
    p.header.message_id = mid;
    encode(&p)
}

fn encode(p: &Packet) -> Vec<u8> {
    // A packet built here is well formed: tokens come from parsed packets
    // (at most 8 bytes) and bodies are cut to one block.
    p.to_bytes().unwrap_or_default()
}

fn too_large(r: &mut Packet, max: usize) {
    r.header.code = MessageClass::Response(ResponseType::RequestEntityTooLarge);
    let v = u32::try_from(max).unwrap_or(u32::MAX).to_be_bytes();
    r.add_option(CoapOption::Size1, trim(&v));
}

/// A 2.05 Content answer with `body`, cut to the block asked for (or the
/// first block) when it is larger than one block.
fn content(r: &mut Packet, format: u16, body: Bytes, block2: Option<Block>) {
    r.header.code = MessageClass::Response(ResponseType::Content);
    r.add_option(CoapOption::ContentFormat, trim(&format.to_be_bytes()));
    let want = block2.unwrap_or(Block {
        num: 0,
        more: false,
        szx: MAX_SZX,
    });
    let size = want.size();
    if block2.is_none() && body.len() <= size {
        r.payload = body.to_vec();
        return;
    }
    let start = usize::try_from(want.num)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    if start >= body.len() && !(start == 0 && body.is_empty()) {
        r.header.code = MessageClass::Response(ResponseType::BadOption);
        return;
    }
    let end = (start + size).min(body.len());
    Block {
        num: want.num,
        more: end < body.len(),
        szx: want.szx,
    }
    .set(r, CoapOption::Block2);
    if want.num == 0 {
        let total = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
        r.add_option(CoapOption::Size2, trim(&total));
    }
    r.payload = body[start..end].to_vec();
}

fn content_format(p: &Packet) -> Option<u16> {
    p.get_first_option(CoapOption::ContentFormat).map(|v| {
        v.iter()
            .take(2)
            .fold(0u16, |acc, b| (acc << 8) | u16::from(*b))
    })
}

/// The Uri-Path segments joined with `/` (invalid UTF-8 is replaced, and
/// then matches no resource).
fn uri_path(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .map(|segments| {
            segments
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// A critical option this server does not understand (§5.4.1: 4.02), or
/// a proxy request (5.05).
fn unsupported_option(p: &Packet) -> Option<ResponseType> {
    const KNOWN: [u16; 14] = [1, 3, 4, 5, 6, 7, 11, 12, 14, 15, 17, 23, 27, 28];
    for (number, _) in p.options() {
        if matches!(*number, 35 | 39) {
            return Some(ResponseType::ProxyingNotSupported);
        }
        if number % 2 == 1 && !KNOWN.contains(number) && *number != 60 {
            return Some(ResponseType::BadOption);
        }
    }
    None
}
