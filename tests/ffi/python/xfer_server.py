"""A transfer endpoint for the FFI tests, run inside a node's namespace.

    python3 xfer_server.py ADDR PORT

Each connection sends one request line:
  PUT N  - then N bytes; the server answers with the sha256 (hex) of what it received.
  GET N  - the server sends the sha256 (hex) and a newline, then N random bytes.
"""

import hashlib
import os
import socket
import sys


def serve(conn):
    f = conn.makefile("rb")
    line = f.readline().decode().split()
    if len(line) != 2:
        return
    verb, n = line[0], int(line[1])
    if verb == "PUT":
        h = hashlib.sha256()
        left = n
        while left:
            chunk = f.read(min(left, 1 << 16))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        conn.sendall(h.hexdigest().encode() + b"\n")
    elif verb == "GET":
        data = os.urandom(n)
        conn.sendall(hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(8)
    print("listening", flush=True)
    while True:
        conn, _ = s.accept()
        with conn:
            serve(conn)


if __name__ == "__main__":
    main()
