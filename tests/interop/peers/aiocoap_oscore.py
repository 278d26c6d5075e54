#!/usr/bin/env python3
"""An OSCORE peer for the interoperability tests: aiocoap's implementation of
RFC 8613 (aiocoap.oscore), driven line by line with JSON on stdin/stdout.

Commands (one JSON object per line; every answer is one JSON line):
  {"op": "context", "secret": HEX, "salt": HEX, "sender": HEX, "recipient": HEX,
   "id_context": HEX|null}                     -> {"ok": true}
  {"op": "protect_request", "msg": HEX}        -> {"msg": HEX, "request": N}
  {"op": "unprotect_request", "msg": HEX}      -> {"msg": HEX, "request": N} | {"error": ...}
  {"op": "protect_response", "msg": HEX, "request": N, "piv": BOOL} -> {"msg": HEX}
  {"op": "unprotect_response", "msg": HEX, "request": N} -> {"msg": HEX} | {"error": ...}
Messages are CoAP over UDP in hex; an unprotected message comes back with the
protected message's type, message id and token.
"""
import json
import sys
import warnings

# Building messages with a given type, message id and token is deprecated in
# aiocoap (its transport manages them); the test needs exactly that.
warnings.simplefilter("ignore", DeprecationWarning)

import aiocoap
import aiocoap.oscore as oscore


class Context(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """A context kept in memory only (the test's lifetime)."""

    def post_seqnoincrease(self):
        pass

    def _store(self):
        pass


def context(cmd):
    c = Context()
    c.alg_aead = oscore.AES_CCM_16_64_128()
    c.hashfun = oscore.hashfunctions["sha256"]
    c.sender_id = bytes.fromhex(cmd["sender"])
    c.recipient_id = bytes.fromhex(cmd["recipient"])
    c.id_context = bytes.fromhex(cmd["id_context"]) if cmd.get("id_context") else None
    c.derive_keys(bytes.fromhex(cmd["salt"]), bytes.fromhex(cmd["secret"]))
    c.sender_sequence_number = 0
    c.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
    c.recipient_replay_window.initialize_empty()
    # Replay state is known from the start (no Echo recovery).
    c.echo_recovery = None
    return c


def outgoing(inner, outer=None):
    """An outgoing copy of `inner` (aiocoap encodes only outgoing messages),
    with the type, message id and token of `outer` (default: its own)."""
    outer = outer or inner
    m = aiocoap.Message(
        mtype=outer.mtype, mid=outer.mid, token=outer.token, code=inner.code, payload=inner.payload
    )
    for o in inner.opt.option_list():
        m.opt.add_option(o)
    return m


def like(outer, inner):
    return outgoing(inner, outer).encode().hex()


def decode(text):
    return outgoing(aiocoap.Message.decode(bytes.fromhex(text)))


def main():
    ctx = None
    requests = []
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "context":
                ctx = context(cmd)
                out = {"ok": True}
            elif op == "protect_request":
                msg = decode(cmd["msg"])
                protected, request_id = ctx.protect(msg, kid_context=bool(ctx.id_context))
                requests.append(request_id)
                out = {"msg": like(msg, protected), "request": len(requests) - 1}
            elif op == "unprotect_request":
                msg = aiocoap.Message.decode(bytes.fromhex(cmd["msg"]))
                plain, request_id = ctx.unprotect(msg)
                requests.append(request_id)
                out = {"msg": like(msg, plain), "request": len(requests) - 1}
            elif op == "protect_response":
                msg = decode(cmd["msg"])
                request_id = requests[cmd["request"]]
                request_id.can_reuse_nonce = not cmd["piv"]
                protected, _ = ctx.protect(msg, request_id)
                out = {"msg": like(msg, protected)}
            elif op == "unprotect_response":
                msg = aiocoap.Message.decode(bytes.fromhex(cmd["msg"]))
                plain, _ = ctx.unprotect(msg, requests[cmd["request"]])
                out = {"msg": like(msg, plain)}
            else:
                out = {"error": f"unknown op {op}"}
        except Exception as e:  # noqa: BLE001 - every refusal is an answer
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
