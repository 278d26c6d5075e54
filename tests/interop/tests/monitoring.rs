//! Monitoring end to end in a network the test builds with namespaces:
//! softflowd (Debian) exports real flows of two devices to the control
//! plane's collector; the flows land on the right device; a flow outside a
//! device's policy raises an alert that a webhook receiver (HMAC checked), a
//! syslog-over-TLS listener (RFC 5425 framing) and the server-sent-events
//! stream all receive; the alert is acknowledged and resolved from the CLI;
//! the device's timeline, exported with audit inclusion proofs, verifies
//! against the signed audit log, and a tampered copy does not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use palisade_interop::netlab::{CONTROL, Lab, device_ip, host};
use palisade_interop::*;
use serde_json::Value;

/// cam devices may reach host 0 on TCP 8080, nothing else.
fn mud() -> String {
    format!(
        r#"{{"ietf-mud:mud": {{"mud-version": 1, "mud-url": "https://acme.example/cam.json", "mfg-name": "acme",
    "from-device-policy": {{"access-lists": {{"access-list": [{{"name": "cam-fr"}}]}}}}}},
  "ietf-access-control-list:acls": {{"acl": [{{"name": "cam-fr", "aces": {{"ace": [
    {{"name": "api", "matches": {{"ipv4": {{"destination-ipv4-network": "{}/32", "protocol": 6}},
      "tcp": {{"destination-port": {{"operator": "eq", "port": 8080}}}}}}, "actions": {{"forwarding": "accept"}}}}
  ]}}}}]}}}}"#,
        host(0)
    )
}

const WEBHOOK: &str = r#"
import http.server, hmac, hashlib, json, sys
secret = open(sys.argv[1], 'rb').read().strip()
out = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        ts = self.headers.get('X-Palisade-Timestamp', '')
        sig = self.headers.get('X-Palisade-Signature', '')
        good = 'sha256=' + hmac.new(secret, ts.encode() + b'.' + body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(sig, good)
        with open(out, 'a') as f:
            f.write(json.dumps({'signature_ok': ok, 'body': json.loads(body)}) + '\n')
        self.send_response(200 if ok else 401); self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[3], 9000), H).serve_forever()
"#;

/// RFC 5425: TLS, then `MSG-LEN SP SYSLOG-MSG` frames.
const SYSLOG: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[4], 6514)); s.listen(4)
while True:
    c, _ = s.accept()
    try:
        c = ctx.wrap_socket(c, server_side=True)
        buf = b''
        while True:
            d = c.recv(65536)
            if not d: break
            buf += d
            while b' ' in buf:
                n, rest = buf.split(b' ', 1)
                n = int(n)
                if len(rest) < n: break
                with open(sys.argv[3], 'a') as f:
                    f.write(rest[:n].decode('utf-8') + '\n')
                buf = rest[n:]
    except Exception as e:
        with open(sys.argv[3] + '.err', 'a') as f: f.write(repr(e) + '\n')
"#;

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, t.elapsed());
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn flows_alerts_and_timeline_end_to_end() {
    if !(have("ip") && have("softflowd") && have("curl") && have("python3") && have("openssl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut lab = Lab::new("pm");
    lab.site(3, 2);

    // Receivers: a webhook (checks the HMAC) and a syslog-over-TLS listener.
    let secret = d.join("webhook.secret");
    std::fs::write(&secret, "a-webhook-secret-of-enough-length\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hooks = d.join("webhook.jsonl");
    lab.spawn(
        "webhook",
        "inet",
        &[
            "python3",
            "-c",
            WEBHOOK,
            secret.to_str().unwrap(),
            hooks.to_str().unwrap(),
            CONTROL,
        ],
        None,
    );
    // The collector's certificate: a leaf signed by a test CA (a self-signed
    // end-entity certificate is rightly refused).
    let o = sh(
        "set -e
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=lab-ca \
           -days 1 -addext basicConstraints=critical,CA:TRUE -keyout ca.key -out ca.pem
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=syslog.lab \
           -keyout syslog.key -out syslog.csr
         printf 'subjectAltName=DNS:syslog.lab\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext
         openssl x509 -req -in syslog.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
           -extfile ext -out syslog.pem",
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let syslog = d.join("syslog.txt");
    lab.spawn(
        "syslog",
        "inet",
        &[
            "python3",
            "-c",
            SYSLOG,
            d.join("syslog.pem").to_str().unwrap(),
            d.join("syslog.key").to_str().unwrap(),
            syslog.to_str().unwrap(),
            CONTROL,
        ],
        None,
    );
    let config = d.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            r#"[monitoring]
flow_summary_secs = 3

[monitoring.respond]
quarantine = ["policy_violation"]

[[monitoring.webhooks]]
url = "http://{CONTROL}:9000/palisade"
secret_file = "{}"

[monitoring.syslog]
address = "{CONTROL}:6514"
server_name = "syslog.lab"
ca_file = "{}"
"#,
            secret.display(),
            d.join("ca.pem").display()
        ),
    )
    .unwrap();
    let server = ServerProc::start_in_netns_with(
        &lab.ns("inet"),
        CONTROL,
        &d.join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let flow_port = server.flow_port();
    assert!(
        flow_port > 0,
        "the collector's port is written to DATA_DIR/flows"
    );

    // The site, the model's policy, and where the two cameras sit.
    server.cli_ok(&["model", "add", "cam"]);
    let mud_file = d.join("cam.mud.json");
    std::fs::write(&mud_file, mud()).unwrap();
    server.cli_ok(&["policy", "mud", "cam", "--file", mud_file.to_str().unwrap()]);
    let spec = d.join("site.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "resolver": "10.10.1.1",
            "control_plane": [[CONTROL, server.port()], [CONTROL, server.mqtt_port()]],
            "segments": [{"name": "cams", "interface": "br0", "subnet": "10.10.1.0/24"}]
        })
        .to_string(),
    )
    .unwrap();
    server.cli_ok(&["site", "set", "lab", "--file", spec.to_str().unwrap()]);
    for (i, id) in ["cam-1", "cam-2"].iter().enumerate() {
        enrol_with_token(&server, d, id, "cam");
        server.cli_ok(&[
            "site",
            "place",
            id,
            "--site",
            "lab",
            "--segment",
            "cams",
            "--address",
            &device_ip(i),
        ]);
    }

    // The live stream, from before anything happens.
    let sse = d.join("sse.txt");
    let mut stream = in_netns(server.netns.as_deref(), std::path::Path::new("curl"));
    stream
        .args(["-sN", "--max-time", "120", "--cacert"])
        .arg(server.data.join("ca/root.pem"))
        .args([
            "-H",
            &format!("Authorization: Bearer {}", server.admin_token()),
        ])
        .arg("-o")
        .arg(&sse)
        .arg(format!("{}/api/v1/alerts/stream", server.url));
    lab.spawn_cmd("sse", stream, None);

    // softflowd watches the device bridge and exports IPFIX to the collector.
    lab.softflowd("rtr", "br0", &format!("{CONTROL}:{flow_port}"), d);
    std::thread::sleep(Duration::from_millis(500));
    let get = |ns: &str, url: &str| {
        lab.exec(
            ns,
            &["curl", "-s", "--max-time", "2", "-o", "/dev/null", url],
        )
    };
    let t0 = Instant::now();
    get("d0", &format!("http://{}:8080/", host(0)));
    get("d1", &format!("http://{}:8080/", host(0)));

    // Flows land on the right device: each camera's flow summary names its
    // peer, and only traffic it sent or received.
    let peers = |id: &str| -> Vec<String> {
        let t: Value =
            serde_json::from_str(&server.api_get(&format!("/api/v1/devices/{id}/timeline")))
                .unwrap();
        t["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "flows")
            .flat_map(|i| {
                i["detail"]["top_peers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p["address"].as_str().map(str::to_owned))
            .collect()
    };
    let mut polls = 0;
    let (_, took) = wait_for("cam-1's flows in its timeline", 60, || {
        polls += 1;
        if polls == 100 {
            eprintln!(
                "after 25 s: {}\nsoftflowd: {}\ntimeline: {}",
                server
                    .api_get("/metrics")
                    .lines()
                    .filter(|l| l.contains("flow"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                std::fs::read_to_string(d.join("softflowd.log")).unwrap_or_default(),
                server.api_get("/api/v1/devices/cam-1/timeline")
            );
        }
        peers("cam-1").contains(&host(0)).then_some(())
    });
    eprintln!("first flow summary on cam-1 after {took:?} (softflowd → collector → timeline)");
    assert!(!peers("cam-1").contains(&host(1)));
    let metrics = server.api_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("palisade_flow_records_total") && !l.ends_with(" 0")),
        "the collector counted records: {}",
        metrics
            .lines()
            .filter(|l| l.contains("flow"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // cam-2 reaches for host 1: outside its policy.
    let sent = Instant::now();
    get("d1", &format!("http://{}:8080/", host(1)));
    let (alert, took) = wait_for("a policy-violation alert on cam-2", 30, || {
        let list: Vec<Value> = serde_json::from_str(
            &server.cli_ok(&["alerts", "list", "--device", "cam-2", "--json"]),
        )
        .unwrap();
        list.into_iter()
            .find(|a| a["detector"] == "policy_violation")
    });
    eprintln!("policy violation detected {took:?} after the flow (softflowd timeouts included)");
    let id = alert["id"].as_str().unwrap().to_owned();
    assert_eq!(alert["state"], "open");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["evidence"]["flow"]["dst"], host(1));
    assert!(sent.elapsed() < Duration::from_secs(30));
    // No alert on cam-1, which stayed inside its policy.
    let quiet: Vec<Value> =
        serde_json::from_str(&server.cli_ok(&["alerts", "list", "--device", "cam-1", "--json"]))
            .unwrap();
    assert!(quiet.is_empty(), "{quiet:?}");
    let shown = server.cli_ok(&["alerts", "show", &id]);
    assert!(
        shown.contains("policy_violation") && shown.contains(&host(1)),
        "{shown}"
    );

    // Delivered: webhook (signature checked by the receiver), syslog, stream.
    wait_for("the webhook", 20, || {
        lines(&hooks)
            .iter()
            .any(|l| l.contains(&id) && l.contains("\"opened\""))
            .then_some(())
    });
    for l in lines(&hooks) {
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["signature_ok"], true, "{l}");
    }
    let mut polls = 0;
    let (line, _) = wait_for("the syslog listener", 20, || {
        polls += 1;
        if polls == 70 {
            eprintln!(
                "syslog so far: {:?}; listener errors: {:?}; server log: {}",
                lines(&syslog),
                std::fs::read_to_string(d.join("syslog.txt.err")).unwrap_or_default(),
                std::fs::read_to_string(d.join("data.log")).unwrap_or_default()
            );
        }
        lines(&syslog).into_iter().find(|l| l.contains(&id))
    });
    // <PRI>1 TIMESTAMP HOST APP - MSGID [SD] MSG; facility 10, severity 3 (error) for high.
    assert!(line.starts_with("<83>1 "), "{line}");
    assert!(
        line.contains(" palisade - ALERT_OPEN [alert@32473 "),
        "{line}"
    );
    assert!(
        line.contains("detector=\"policy_violation\"") && line.contains("device=\"cam-2\""),
        "{line}"
    );
    let mut polls = 0;
    wait_for("the event stream", 20, || {
        let s = std::fs::read_to_string(&sse).unwrap_or_default();
        polls += 1;
        if polls == 60 {
            eprintln!("stream so far: {s:?}");
        }
        (s.contains("event: opened") && s.contains(&id)).then_some(())
    });

    // The configured automatic response: cam-2 quarantined, audited, noted on
    // the alert.
    let (responses, _) = wait_for("the automatic quarantine", 20, || {
        let a: Value =
            serde_json::from_str(&server.cli_ok(&["alerts", "show", &id, "--json"])).unwrap();
        a["responses"].as_array().filter(|r| !r.is_empty()).cloned()
    });
    assert_eq!(responses[0]["action"], "quarantine");
    assert_eq!(responses[0]["ok"], true, "{responses:?}");
    let dev: Value =
        serde_json::from_str(&server.cli_ok(&["device", "show", "cam-2", "--json"])).unwrap();
    assert_eq!(dev["device"]["state"], "quarantined", "{dev}");

    // Lifecycle from the CLI, each step audited and delivered.
    server.cli_ok(&["alerts", "ack", &id, "--note", "on it"]);
    let out = server.cli(&["alerts", "ack", &id]);
    assert!(!out.status.success(), "acknowledging twice is refused");
    server.cli_ok(&["alerts", "resolve", &id, "--note", "test traffic"]);
    let a: Value =
        serde_json::from_str(&server.cli_ok(&["alerts", "show", &id, "--json"])).unwrap();
    assert_eq!(a["state"], "resolved");
    assert_eq!(a["resolved_by"], "operator:admin");
    wait_for("the resolution at the webhook and syslog", 20, || {
        (lines(&hooks).iter().any(|l| l.contains("\"resolved\""))
            && lines(&syslog).iter().any(|l| l.contains("ALERT_RESOLVE")))
        .then_some(())
    });

    // The timeline: enrolment, placement, alert, its lifecycle, flows.
    let timeline: Value =
        serde_json::from_str(&server.api_get("/api/v1/devices/cam-2/timeline")).unwrap();
    let kinds: Vec<&str> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    for k in [
        "est.enroll",
        "alert.open",
        "alert.respond",
        "alert.ack",
        "alert.resolve",
        "policy_violation",
        "flows",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let export = d.join("cam-2.timeline.json");
    server.cli_ok(&[
        "device",
        "timeline",
        "cam-2",
        "--export",
        export.to_str().unwrap(),
    ]);
    let key = server.data.join("audit/log.pub");
    let ok = server.cli_ok(&[
        "audit",
        "verify-timeline",
        export.to_str().unwrap(),
        "--log-key",
        key.to_str().unwrap(),
    ]);
    assert!(ok.contains("cam-2"), "{ok}");
    // Tampered: an audit item rewritten (the alert's resolution note).
    let mut t: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    let item = t["items"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i["kind"] == "alert.resolve")
        .unwrap();
    item["detail"]["note"] = "nothing happened".into();
    let forged = d.join("forged.json");
    let verify_forged = |t: &Value| {
        std::fs::write(&forged, serde_json::to_vec(t).unwrap()).unwrap();
        server.cli(&[
            "audit",
            "verify-timeline",
            forged.to_str().unwrap(),
            "--log-key",
            key.to_str().unwrap(),
        ])
    };
    let bad = verify_forged(&t);
    assert!(
        !bad.status.success(),
        "a rewritten timeline must not verify"
    );
    // Tampered: the proven entry itself rewritten to match.
    let p = t["proofs"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["entry"]["action"] == "alert.resolve")
        .unwrap();
    let mut detail: Value = serde_json::from_str(p["entry"]["detail"].as_str().unwrap()).unwrap();
    detail["note"] = "nothing happened".into();
    p["entry"]["detail"] = detail.to_string().into();
    let bad = verify_forged(&t);
    assert!(
        !bad.status.success(),
        "a rewritten entry must not verify against its proof"
    );
    assert!(text(&bad).contains("does not verify"), "{}", text(&bad));
    eprintln!("monitoring end to end in {:?}", t0.elapsed());
}
