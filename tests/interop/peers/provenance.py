#!/usr/bin/env python3
"""An independent supplier build system for the interop tests: makes signing
keys with `cryptography` and signs SLSA v1 provenance (an in-toto Statement v1)
in a DSSE envelope with securesystemslib, the library in-toto and TUF use.

  provenance.py keygen --type ecdsa|ed25519 --private K.pem --public K.pub
  provenance.py sign --private K.pem --image FILE --out ENVELOPE.json
                     [--subject-sha256 HEX] [--builder-id URL]
"""
import argparse
import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner


def keygen(a):
    key = ec.generate_private_key(ec.SECP256R1()) if a.type == "ecdsa" else ed25519.Ed25519PrivateKey.generate()
    with open(a.private, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(a.public, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def sign(a):
    with open(a.private, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(a.image, "rb") as f:
        digest = a.subject_sha256 or hashlib.sha256(f.read()).hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": a.image.rsplit("/", 1)[-1], "digest": {"sha256": digest}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://example.com/firmware-build/v1",
                "externalParameters": {"repository": "https://git.example.com/fw", "ref": "refs/tags/v1"},
                "internalParameters": {},
                "resolvedDependencies": [],
            },
            "runDetails": {"builder": {"id": a.builder_id}, "metadata": {"invocationId": "42"}},
        },
    }
    env = Envelope(payload=json.dumps(statement).encode(), payload_type="application/vnd.in-toto+json",
                   signatures={})
    env.sign(CryptoSigner(key))
    with open(a.out, "w") as f:
        json.dump(env.to_dict(), f)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("--type", choices=["ecdsa", "ed25519"], default="ecdsa")
    k.add_argument("--private", required=True)
    k.add_argument("--public", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--private", required=True)
    s.add_argument("--image", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--subject-sha256")
    s.add_argument("--builder-id", default="https://ci.example.com/builders/fw@v1")
    a = p.parse_args()
    keygen(a) if a.cmd == "keygen" else sign(a)


if __name__ == "__main__":
    sys.exit(main())
