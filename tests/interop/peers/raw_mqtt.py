"""Send raw bytes to the gateway over mutual TLS and report what came back.

usage: raw_mqtt.py HOST PORT CAFILE CERT KEY CLIENT_ID SCENARIO
SCENARIO: garbage | bad_level | oversized | flood | connect_only | persistent | take_no_ack
(take_no_ack: a persistent session that subscribes to its commands, receives one
and drops the connection without acknowledging it.)
Prints JSON: {"connack": <hex or null>, "closed": bool, "bytes": <hex received>}.
"""
import json
import socket
import ssl
import sys
import time

host, port, cafile, cert, key, client_id, scenario = sys.argv[1:8]


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def utf8(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def connect(level=4, clean=True):
    flags = 0x02 if clean else 0x00
    body = utf8("MQTT") + bytes([level, flags]) + (60).to_bytes(2, "big") + utf8(client_id)
    return packet(0x10, body)


def publish(topic, payload):
    return packet(0x30, utf8(topic) + payload)


ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
ctx.load_cert_chain(cert, key)
raw = socket.create_connection((host, int(port)), timeout=10)
s = ctx.wrap_socket(raw, server_hostname=host)
closed = False
try:
    if scenario == "garbage":
        s.sendall(b"\xff\xff\xff\xff GET / HTTP/1.0\r\n\r\n")
    elif scenario == "bad_level":
        s.sendall(connect(level=6))
    elif scenario == "oversized":
        s.sendall(connect())
        time.sleep(0.2)
        # A PUBLISH announcing 1 MiB, far above the 64 KiB limit.
        s.sendall(bytes([0x30]) + varint(1 << 20) + b"\x00\x05hello")
    elif scenario == "flood":
        s.sendall(connect())
        time.sleep(0.2)
        topic = f"palisade/d/{client_id}/telemetry"
        s.sendall(b"".join(publish(topic, b"{}") for _ in range(2000)))
    elif scenario == "connect_only":
        s.sendall(connect())
    elif scenario == "persistent":
        s.sendall(connect(clean=False))
    elif scenario == "take_no_ack":
        s.sendall(connect(clean=False))
        topic = f"palisade/d/{client_id}/commands"
        s.sendall(packet(0x82, (1).to_bytes(2, "big") + utf8(topic) + b"\x01"))
        got = bytearray()
        s.settimeout(0.5)
        deadline = time.time() + 8

        def packet_types(buf):
            """The types of the whole packets in buf (a resumed session's
            PUBLISH may come before the SUBACK)."""
            types, i = [], 0
            while i + 2 <= len(buf):
                n, mult, j = 0, 1, i + 1
                while j < len(buf):
                    n += (buf[j] & 0x7F) * mult
                    mult *= 128
                    j += 1
                    if not buf[j - 1] & 0x80:
                        break
                else:
                    break
                if j + n > len(buf):
                    break
                types.append(buf[i] >> 4)
                i = j + n
            return types

        while time.time() < deadline and 3 not in packet_types(got):
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            got += chunk
        s.close()  # no PUBACK, no DISCONNECT: the connection is lost
        print(json.dumps({"connack": got[:4].hex(), "closed": True, "bytes": got[:64].hex(),
                          "publish": 3 in packet_types(got)}))
        sys.exit(0)
except (ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError):
    # The server closed the connection while we were still sending (flood).
    closed = True

received = bytearray()
deadline = time.time() + 8
s.settimeout(0.5)
while not closed and time.time() < deadline:
    try:
        chunk = s.recv(4096)
    except socket.timeout:
        if scenario in ("connect_only", "persistent") and received:
            break
        continue
    except (ssl.SSLError, ConnectionResetError, OSError):
        closed = True
        break
    if not chunk:
        closed = True
        break
    received += chunk
connack = received[:4].hex() if received[:1] == b"\x20" else None
if scenario == "persistent" and not closed:
    s.sendall(b"\xe0\x00")  # DISCONNECT
print(json.dumps({"connack": connack, "closed": closed, "bytes": received[:64].hex()}))
