"""A device's persistent MQTT 3.1.1 session (clean session false) with paho-mqtt.

usage: persistent_session.py HOST PORT CAFILE CERT KEY DEVICE PHASE
PHASE subscribe: connect, subscribe to the device's commands at QoS 1, disconnect.
PHASE resume: connect without subscribing and collect what arrives (at most 8 s,
2 s after the last message).
PHASE hold: a clean session that subscribes to its commands and stays until the
server closes it (at most 30 s); "disconnected" says whether it did.
Prints one JSON object: {"session_present": bool, "messages": [payload, ...]}.
With PALISADE_BIND_ADDRESS set, the connection is made from that local address.
"""
import json
import os
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt

host, port, cafile, cert, key, device, phase = sys.argv[1:8]
result = {"session_present": None, "messages": []}
ready = threading.Event()
last = [time.time()]


def on_connect(client, userdata, flags, reason_code, properties):
    result["connack"] = int(reason_code.value)
    result["session_present"] = bool(flags.session_present)
    if phase in ("subscribe", "hold") and not reason_code.is_failure:
        client.subscribe(f"palisade/d/{device}/commands", qos=1)
    else:
        ready.set()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    result["suback"] = [int(rc.value) for rc in reason_codes]
    ready.set()


gone = threading.Event()


def on_disconnect(client, userdata, flags, reason_code, properties):
    gone.set()


def on_message(client, userdata, msg):
    result["messages"].append(msg.payload.decode("utf-8", "replace"))
    last[0] = time.time()


client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id=device,
    clean_session=(phase == "hold"),
    protocol=mqtt.MQTTv311,
    reconnect_on_failure=False,
)
client.tls_set(ca_certs=cafile, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.on_disconnect = on_disconnect
client.connect(host, int(port), keepalive=30, bind_address=os.environ.get("PALISADE_BIND_ADDRESS", ""))
client.loop_start()
ready.wait(10)
if phase == "hold":
    if "suback" in result:
        print("subscribed", flush=True)
    result["disconnected"] = gone.wait(30)
    client.loop_stop()
    print(json.dumps(result))
    sys.exit(0)
if phase == "resume":
    deadline = time.time() + 8
    while time.time() < deadline and not (result["messages"] and time.time() - last[0] > 2):
        time.sleep(0.1)
client.disconnect()
client.loop_stop()
print(json.dumps(result))
