#!/usr/bin/env python3
"""A paced TCP transfer that measures its own gaps.

  paced_tcp.py recv HOST PORT OUT.json      listen, receive until EOF, write a report
  paced_tcp.py send HOST PORT SECONDS RATE  send random bytes at RATE bytes/s for SECONDS

The report holds the byte count, the sha256 of what arrived and the longest time between two
receptions (the longest stretch of the transfer that carried nothing), in seconds. The sender
prints the sha256 of what it sent.
"""

import hashlib
import json
import os
import socket
import sys
import time


def recv(host, port, out):
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(1)
    conn, _ = srv.accept()
    h = hashlib.sha256()
    total = 0
    last = None
    longest = 0.0
    first = None
    while True:
        data = conn.recv(65536)
        now = time.monotonic()
        if not data:
            break
        if first is None:
            first = now
        if last is not None:
            longest = max(longest, now - last)
        last = now
        h.update(data)
        total += len(data)
    with open(out, "w") as f:
        json.dump(
            {
                "bytes": total,
                "sha256": h.hexdigest(),
                "longest_gap_s": round(longest, 3),
                "duration_s": round((last or 0) - (first or 0), 3),
            },
            f,
        )


def send(host, port, seconds, rate):
    seconds, rate = float(seconds), int(rate)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(None)
    h = hashlib.sha256()
    chunk = 4096
    start = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        if sent >= due:
            time.sleep(chunk / rate / 2)
            continue
        data = os.urandom(chunk)
        s.sendall(data)
        h.update(data)
        sent += len(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
    print(h.hexdigest())


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv(*sys.argv[2:5])
    elif sys.argv[1] == "send":
        send(*sys.argv[2:6])
    else:
        sys.exit(__doc__)
