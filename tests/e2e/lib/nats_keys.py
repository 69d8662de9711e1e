"""NATS credentials for tests/e2e/cluster.sh, made as `nk` and `nsc` make them (Ed25519 NKeys:
base32 with a prefix byte and a CRC-16; JWTs signed with them, `alg: ed25519-nkey`).

  nats_keys.py nkey SEED_FILE      writes a user NKey's seed, prints its public key (U...)
  nats_keys.py operator DIR        writes DIR/operator.jwt and DIR/relay.creds (a user of
                                   account "veil", JetStream on), prints "ACCOUNT ACCOUNT_JWT
                                   SYS SYS_JWT" for the server's resolver_preload

Run with Debian's python3 (python3-cryptography)."""

import base64
import hashlib
import json
import os
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED = 18 << 3
PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def b32(raw):
    return base64.b32encode(raw + crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


def b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Key:
    def __init__(self, kind):
        prefix = PREFIX[kind]
        seed = os.urandom(32)
        self.private = Ed25519PrivateKey.from_private_bytes(seed)
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = b32(bytes([prefix]) + raw)
        self.seed = b32(bytes([SEED | prefix >> 5, (prefix & 31) << 3]) + seed)


def jwt(issuer, subject, name, nats):
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name,
              "sub": subject.public, "nats": nats}
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(issuer.private.sign(f'{head}.{body}'.encode()))}"


def operator(out):
    op, acc, sys_acc, user = Key("operator"), Key("account"), Key("account"), Key("user")
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                 "wildcards": True, "conn": -1, "leaf": -1}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    with open(os.path.join(out, "operator.jwt"), "w") as f:
        f.write(jwt(op, op, "veil-test", {"type": "operator", "version": 2}) + "\n")
    acc_jwt = jwt(op, acc, "veil", {"limits": {**unlimited, **jetstream}, "type": "account", "version": 2})
    sys_jwt = jwt(op, sys_acc, "SYS", {"limits": unlimited, "type": "account", "version": 2})
    user_jwt = jwt(acc, user, "relay", {"pub": {}, "sub": {}, "subs": -1, "data": -1,
                                         "payload": -1, "type": "user", "version": 2})
    with open(os.path.join(out, "relay.creds"), "w") as f:
        f.write(f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
                "************************* IMPORTANT *************************\n"
                "NKEY Seed printed below can be used to sign and prove identity.\n\n"
                f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n")
    print(acc.public, acc_jwt, sys_acc.public, sys_jwt)


if __name__ == "__main__":
    if sys.argv[1:2] == ["nkey"] and len(sys.argv) == 3:
        k = Key("user")
        with open(sys.argv[2], "w") as f:
            f.write(k.seed + "\n")
        print(k.public)
    elif sys.argv[1:2] == ["operator"] and len(sys.argv) == 3:
        operator(sys.argv[2])
    else:
        sys.exit(__doc__)
