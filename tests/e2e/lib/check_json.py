#!/usr/bin/env python3
"""Checks the JSON that `veil ... --json` prints against the CLI contract.

Usage: check_json.py status|peers|relay-status  < json

Exits 1 and prints every problem if a field is missing or has the wrong type; fields beyond the
contract are reported as notes on stderr but do not fail (the contract may grow).
"""

import ipaddress
import json
import sys

OVERLAY_V4 = ipaddress.ip_network("100.64.0.0/10")
ULA = ipaddress.ip_network("fc00::/7")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def is_str(v):
    return isinstance(v, str)


def is_null(v):
    return v is None


def opt(check):
    return lambda v: v is None or check(v)


def is_obj_of_ints(v):
    return isinstance(v, dict) and all(is_str(k) and is_int(x) for k, x in v.items())


STATUS = {
    "id": ("string", is_str),
    "overlay_ipv4": ("string|null", opt(is_str)),
    "overlay_ipv6": ("string", is_str),
    "relay": ("string|null", opt(is_str)),
    "uptime_s": ("int", is_int),
    "counters": ("object of ints", is_obj_of_ints),
}

PATHS = {"direct", "relayed", "private", "none"}

PEER = {
    "id": ("string", is_str),
    "name": ("string|null", opt(is_str)),
    "overlay_ipv4": ("string", is_str),
    "overlay_ipv6": ("string", is_str),
    "path": ("string: direct|relayed|private|none", lambda v: is_str(v) and v in PATHS),
    "relay_reason": ("string|null", opt(is_str)),
    "endpoint": ("string|null", opt(is_str)),
    "rtt_ms": ("number|null", opt(is_num)),
    "pmtu": ("int|null", opt(is_int)),
    "pmtu_state": ("string", is_str),
    "tx_bytes": ("int", is_int),
    "rx_bytes": ("int", is_int),
    "last_handshake_unix": ("int|null", opt(is_int)),
    "cipher": (
        "string: aes-256-gcm|chacha20-poly1305|none",
        lambda v: v in ("aes-256-gcm", "chacha20-poly1305", "none"),
    ),
}


def check_fields(obj, spec, where, errors, notes):
    if not isinstance(obj, dict):
        errors.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return
    for key, (want, ok) in spec.items():
        if key not in obj:
            errors.append(f"{where}: missing field '{key}' ({want})")
        elif not ok(obj[key]):
            errors.append(f"{where}: field '{key}' should be {want}, got {json.dumps(obj[key])}")
    extra = sorted(set(obj) - set(spec))
    if extra:
        notes.append(f"{where}: fields beyond the contract: {', '.join(extra)}")


def check_v4(value, where, errors):
    try:
        if ipaddress.ip_address(value) not in OVERLAY_V4:
            errors.append(f"{where}: {value} is not in {OVERLAY_V4}")
    except ValueError:
        errors.append(f"{where}: {value!r} is not an IPv4 address")


def check_v6(value, where, errors):
    try:
        addr = ipaddress.ip_address(value)
        if addr.version != 6 or addr not in ULA:
            errors.append(f"{where}: {value} is not an IPv6 ULA (fc00::/7)")
    except ValueError:
        errors.append(f"{where}: {value!r} is not an IPv6 address")


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("status", "peers", "relay-status"):
        print(__doc__, file=sys.stderr)
        return 2
    kind = sys.argv[1]
    raw = sys.stdin.read()
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        print(f"{kind}: not valid JSON ({e}): {raw[:400]!r}", file=sys.stderr)
        return 1
    errors, notes = [], []
    if kind == "status":
        check_fields(doc, STATUS, "status", errors, notes)
        if isinstance(doc, dict):
            if is_str(doc.get("overlay_ipv4")):
                check_v4(doc["overlay_ipv4"], "status.overlay_ipv4", errors)
            if is_str(doc.get("overlay_ipv6")):
                check_v6(doc["overlay_ipv6"], "status.overlay_ipv6", errors)
            if is_int(doc.get("uptime_s")) and doc["uptime_s"] < 0:
                errors.append("status.uptime_s is negative")
    elif kind == "peers":
        if not isinstance(doc, list):
            errors.append(f"peers: expected a JSON array, got {type(doc).__name__}")
        else:
            for i, peer in enumerate(doc):
                where = f"peers[{i}]"
                check_fields(peer, PEER, where, errors, notes)
                if isinstance(peer, dict):
                    if is_str(peer.get("overlay_ipv4")):
                        check_v4(peer["overlay_ipv4"], where + ".overlay_ipv4", errors)
                    if is_str(peer.get("overlay_ipv6")):
                        check_v6(peer["overlay_ipv6"], where + ".overlay_ipv6", errors)
    else:
        if not isinstance(doc, dict):
            errors.append(f"relay status: expected a JSON object, got {type(doc).__name__}")
        elif not is_int(doc.get("clients")):
            errors.append(f"relay status: 'clients' should be an int, got {json.dumps(doc.get('clients'))}")
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    for e in errors:
        print(f"contract violation: {e}", file=sys.stderr)
    if errors:
        print(f"offending JSON: {raw.strip()[:2000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
