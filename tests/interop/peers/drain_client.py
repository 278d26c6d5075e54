"""An MQTT 5 device (paho-mqtt) that follows a server's DISCONNECT "use another
server" to the server reference it names, as a device behind a balancer should.

usage: drain_client.py HOST PORT CAFILE CERT KEY DEVICE
1. Connects with clean start false and a one-day session expiry, subscribes to
   its commands at QoS 1, prints "subscribed".
2. When the server disconnects it, prints one JSON line: {"reason": code,
   "server_reference": text or null}.
3. Waits for a line on stdin, connects to the server reference (host:port;
   HOST:PORT if there was none), collects messages for 3 s after the last one
   (at most 10 s), and prints one JSON line: {"session_present": bool,
   "messages": [payload, ...]}.
"""
import json
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, cafile, cert, key, device = sys.argv[1:7]
state = {"messages": [], "session_present": None}
subscribed = threading.Event()
connected = threading.Event()
gone = threading.Event()
last = [time.time()]


def on_connect(client, userdata, flags, reason_code, properties):
    state["session_present"] = bool(flags.session_present)
    state["connack"] = int(reason_code.value)
    connected.set()
    if not state.get("moved"):
        client.subscribe(f"palisade/d/{device}/commands", qos=1)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    subscribed.set()


def on_disconnect(client, userdata, flags, reason_code, properties):
    ref = getattr(properties, "ServerReference", None) if properties else None
    state["disconnect"] = {"reason": int(reason_code.value), "server_reference": ref}
    gone.set()


def on_message(client, userdata, msg):
    state["messages"].append(msg.payload.decode("utf-8", "replace"))
    last[0] = time.time()


def client():
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=device,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )
    c.tls_set(ca_certs=cafile, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_disconnect = on_disconnect
    c.on_message = on_message
    return c


def connect(c, h, p):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 86400
    c.connect(h, int(p), keepalive=30, clean_start=False, properties=props)
    c.loop_start()


first = client()
connect(first, host, port)
if not subscribed.wait(10):
    print(json.dumps({"error": "not subscribed", **state}), flush=True)
    sys.exit(1)
print("subscribed", flush=True)
if not gone.wait(60):
    print(json.dumps({"error": "the server did not disconnect"}), flush=True)
    sys.exit(1)
first.loop_stop()
print(json.dumps(state["disconnect"]), flush=True)

sys.stdin.readline()
ref = state["disconnect"]["server_reference"] or f"{host}:{port}"
h, _, p = ref.rpartition(":")
state["moved"] = True
state["messages"] = []
connected.clear()
second = client()
connect(second, h, p)
connected.wait(10)
deadline = time.time() + 10
last[0] = time.time()
while time.time() < deadline and time.time() - last[0] < 3:
    time.sleep(0.1)
second.disconnect()
second.loop_stop()
print(json.dumps({"session_present": state["session_present"], "messages": state["messages"]}), flush=True)
