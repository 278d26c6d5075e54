#!/usr/bin/env python3
"""A constrained device for the interoperability tests: aiocoap's CoAP client
with its EDHOC (lakers-python) and OSCORE, against Palisade's OSCORE listener.

    aiocoap_edhoc.py HOST:PORT DEVICE KEY.pem SERVER-CREDENTIAL.cbor SCRIPT.json

The device's EDHOC credential is a CCS sent by value: subject DEVICE, the
P-256 key of KEY.pem (the key of its Palisade certificate). The server's
credential is the CCS the server wrote to its data directory. SCRIPT is a list
of steps; each prints one JSON line:
  {"op": "post", "path": P, "json": OBJ}           -> {"code": "2.04"}
  {"op": "get", "path": P}                         -> {"code": ..., "payload": TEXT}
  {"op": "observe", "path": P, "count": N, "timeout": S}
        -> {"code": ..., "notifications": [TEXT, ...]}  (the first N after the first answer)
  {"op": "new_context"}                            -> {"ok": true}  (forget it: EDHOC runs again)
Errors print {"error": TEXT}.
"""
import asyncio
import json
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

import cbor2
from cryptography.hazmat.primitives import serialization

import aiocoap
from aiocoap import Context, Message, POST, GET
from aiocoap.edhoc import EdhocCredentials


def device_key(path):
    key = serialization.load_pem_private_key(open(path, "rb").read(), password=None)
    d = key.private_numbers().private_value.to_bytes(32, "big")
    pub = key.public_key().public_numbers()
    return d, pub.x.to_bytes(32, "big"), pub.y.to_bytes(32, "big")


def credentials(authority, device, key_path, server_cred_path):
    d, x, y = device_key(key_path)
    own = {14: {2: device, 8: {1: {1: 2, 2: b"d", -1: 1, -2: x, -3: y}}}}
    server = cbor2.loads(open(server_cred_path, "rb").read())
    return {
        "coap://%s/*" % authority: EdhocCredentials(
            suite=2,
            method=3,
            own_cred_style="by-value",
            own_cred=own,
            private_key={1: 2, -1: 1, -4: d},
            peer_cred={14: server},
        )
    }


async def main():
    authority, device, key_path, cred_path, script = sys.argv[1:6]
    steps = json.load(open(script))
    creds = credentials(authority, device, key_path, cred_path)

    async def fresh():
        ctx = await Context.create_client_context()
        for k, v in creds.items():
            ctx.client_credentials[k] = v
        return ctx

    ctx = await fresh()
    for step in steps:
        uri = "coap://%s/%s" % (authority, step.get("path", ""))
        try:
            if step["op"] == "post":
                body = json.dumps(step["json"]).encode()
                r = await asyncio.wait_for(
                    ctx.request(Message(code=POST, uri=uri, payload=body, content_format=50)).response,
                    30,
                )
                print(json.dumps({"code": str(r.code.dotted)}), flush=True)
            elif step["op"] == "get":
                r = await asyncio.wait_for(ctx.request(Message(code=GET, uri=uri)).response, 30)
                print(json.dumps({"code": str(r.code.dotted), "payload": r.payload.decode(errors="replace")}), flush=True)
            elif step["op"] == "observe":
                req = ctx.request(Message(code=GET, uri=uri, observe=0))
                first = await asyncio.wait_for(req.response, 30)
                print(json.dumps({"ready": str(first.code.dotted)}), flush=True)
                got = []

                async def collect():
                    async for n in req.observation:
                        got.append(n.payload.decode(errors="replace"))
                        if len(got) >= step["count"]:
                            return

                try:
                    await asyncio.wait_for(collect(), step.get("timeout", 20))
                except asyncio.TimeoutError:
                    pass
                req.observation.cancel()
                print(json.dumps({"code": str(first.code.dotted), "notifications": got}), flush=True)
            elif step["op"] == "new_context":
                await ctx.shutdown()
                ctx = await fresh()
                print(json.dumps({"ok": True}), flush=True)
        except Exception as e:  # reported to the test, which decides
            print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
    await ctx.shutdown()


asyncio.run(main())
