"""MQTT 5 checks against the Palisade gateway with paho-mqtt (PyPI).

usage: paho_v5.py HOST PORT CAFILE CERT KEY DEVICE OTHER_DEVICE
Prints one JSON object with what the gateway answered.
"""
import json
import ssl
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, cafile, cert, key, device, other = sys.argv[1:8]
port = int(port)
result = {}
done = threading.Event()
pending = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result["connack"] = int(reason_code.value)
    if reason_code.is_failure:
        done.set()
        return
    # Own telemetry (allowed), another device's telemetry (refused), own commands
    # and '#' (granted / refused).
    info = client.publish(f"palisade/d/{device}/telemetry", json.dumps({"firmware": "5.0.0"}), qos=1)
    pending[info.mid] = "own_publish"
    info = client.publish(f"palisade/d/{other}/telemetry", "x", qos=1)
    pending[info.mid] = "cross_publish"
    client.subscribe([(f"palisade/d/{device}/commands", 1), ("#", 1)])


def on_publish(client, userdata, mid, reason_code, properties):
    result[pending.pop(mid, str(mid))] = int(reason_code.value)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    result["suback"] = [int(rc.value) for rc in reason_codes]
    done.set()


def on_disconnect(client, userdata, flags, reason_code, properties):
    done.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
client.tls_set(ca_certs=cafile, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
client.on_connect = on_connect
client.on_publish = on_publish
client.on_subscribe = on_subscribe
client.on_disconnect = on_disconnect
try:
    client.connect(host, port, keepalive=30, clean_start=True)
except Exception as e:  # TLS refusal (revoked, foreign CA)
    result["error"] = type(e).__name__ + ": " + str(e)
    print(json.dumps(result))
    sys.exit(0)
client.loop_start()
done.wait(10)
if "connack" not in result:
    # TLS 1.3: the server checks the client certificate after the client has
    # finished its handshake, so a refusal shows up as a closed connection.
    result["error"] = "connection closed before CONNACK"
client.disconnect()
client.loop_stop()
print(json.dumps(result))
