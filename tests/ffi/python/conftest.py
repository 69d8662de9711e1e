"""Fixtures of the FFI tests: a relay and a node started the normal way (the `veil` binary,
each in its own namespace), while the tests run in a third namespace and start a node there
through the Python bindings of veil-ffi, on a TUN device they open themselves (as Android's
VpnService hands one over).

Run by tests/e2e/ffi_python.sh, which creates the namespaces (and removes them, with every
process in them, also on failure) and runs pytest inside the third one. Environment:
VEIL_BIN, VEIL_FFI_BINDINGS (the folder of veil_ffi.py and libveil_ffi.so), VEIL_FFI_SCRATCH,
VEIL_FFI_NS_RELAY, VEIL_FFI_NS_A, VEIL_FFI_RELAY_IP.
"""

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.environ["VEIL_FFI_BINDINGS"])

VEIL = os.environ["VEIL_BIN"]
SCRATCH = os.environ["VEIL_FFI_SCRATCH"]
NS_RELAY = os.environ["VEIL_FFI_NS_RELAY"]
NS_A = os.environ["VEIL_FFI_NS_A"]
RELAY_IP = os.environ["VEIL_FFI_RELAY_IP"]
XFER_PORT = 5001
HERE = os.path.dirname(os.path.abspath(__file__))


def in_ns(ns, *args):
    return ["ip", "netns", "exec", ns, *args]


def wait_for(what, check, secs):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {secs} s")


class Network:
    """The relay and node A, started with the CLI."""

    def __init__(self):
        self.procs = []
        self.net = os.path.join(SCRATCH, "net")
        self.state = os.path.join(SCRATCH, "state")
        os.makedirs(self.state, exist_ok=True)
        relay_ep = f"{RELAY_IP}:7000"
        self.token = subprocess.run(
            [VEIL, "network", "create", "--relay", relay_ep, "--out", self.net],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        self.spawn("relay", in_ns(NS_RELAY, VEIL, "relay", "--listen", relay_ep,
                                  "--token-file", f"{self.net}/relay-1.token",
                                  "--state-dir", f"{self.state}/relay"))
        wait_for("the relay answers", lambda: self.ok(in_ns(
            NS_RELAY, VEIL, "relay", "status", "--json", "--state-dir", f"{self.state}/relay")), 20)
        self.spawn("node-a", in_ns(NS_A, VEIL, "up", "--token-file", f"{self.net}/join.token",
                                   "--state-dir", f"{self.state}/a"))
        self.a = wait_for("node a gets an overlay address", self.a_status, 30)
        self.a_ipv4 = self.a["overlay_ipv4"]
        self.relay_ip = RELAY_IP
        self.spawn("xfer", in_ns(NS_A, sys.executable, os.path.join(HERE, "xfer_server.py"),
                                 self.a_ipv4, str(XFER_PORT)))
        wait_for("the transfer server listens", lambda: b"listening" in self.log("xfer"), 10)

    def spawn(self, label, argv):
        log = open(os.path.join(SCRATCH, f"{label}.log"), "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "NO_COLOR": "1"})
        self.procs.append((label, p, log))

    def log(self, label):
        with open(os.path.join(SCRATCH, f"{label}.log"), "rb") as f:
            return f.read()

    @staticmethod
    def ok(argv):
        return subprocess.run(argv, capture_output=True).returncode == 0

    def a_status(self):
        r = subprocess.run(in_ns(NS_A, VEIL, "status", "--json", "--state-dir", f"{self.state}/a"),
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
        s = json.loads(r.stdout)
        return s if s.get("overlay_ipv4") else None

    def a_peers(self):
        r = subprocess.run(in_ns(NS_A, VEIL, "peers", "--json", "--state-dir", f"{self.state}/a"),
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout)

    def close(self):
        for label, p, log in reversed(self.procs):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()
            if p.returncode not in (0, -15, 143):
                print(f"--- {label} exited {p.returncode}; log:\n{self.log(label).decode(errors='replace')[-3000:]}")


@pytest.fixture(scope="session")
def network():
    net = Network()
    try:
        yield net
    finally:
        net.close()
