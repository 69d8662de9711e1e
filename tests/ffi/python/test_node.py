"""A node run through the FFI (the Python bindings of veil-ffi) inside this namespace, on a
TUN device this test opens and hands over as a file descriptor, talking to a node started
with the `veil` CLI: ping, transfers both ways with matching sha256, events, status and
peers, a rebuilt interface, and errors as exceptions. See conftest.py."""

import asyncio
import fcntl
import hashlib
import ipaddress
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import NS_RELAY, RELAY_IP, SCRATCH, VEIL, XFER_PORT, in_ns, wait_for
from veil_ffi import (
    LogSink,
    SecretStore,
    SocketProtector,
    VeilError,
    VeilNode,
    default_config,
    veil_version,
)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MIB = 1 << 20


class MemoryStore(SecretStore):
    def __init__(self):
        self.data = {}

    def load(self, name):
        return self.data.get(name)

    def store(self, name, value):
        self.data[name] = bytes(value)


class Protector(SocketProtector):
    def __init__(self, answer=True):
        self.fds = []
        self.answer = answer

    def protect_socket(self, fd):
        self.fds.append(fd)
        return self.answer


class Logs(LogSink):
    def __init__(self):
        self.lines = []
        self.lock = threading.Lock()

    def log(self, level, target, message):
        with self.lock:
            self.lines.append((level, target, message))

    def text(self):
        with self.lock:
            return "\n".join(m for _, _, m in self.lines)


def open_tun(name, settings):
    """What VpnService.Builder.establish() does: a TUN device with the settings, as an fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    s = settings
    for argv in (
        ["ip", "addr", "add", f"{s.ipv4_address}/{s.ipv4_prefix_len}", "dev", name],
        ["ip", "-6", "addr", "add", f"{s.ipv6_address}/{s.ipv6_prefix_len}", "dev", name, "nodad"],
        ["ip", "link", "set", name, "mtu", str(s.mtu), "up"],
    ):
        subprocess.run(argv, check=True)
    return fd


def events_until(node, want, timeout):
    """Events from node.next_event() until one satisfies `want` (returned last), or the
    timeout (AssertionError listing what came)."""

    async def run():
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                e = await asyncio.wait_for(node.next_event(), left)
            except asyncio.TimeoutError:
                break
            got.append(e)
            if want(e):
                return got
        raise AssertionError(f"no wanted event within {timeout} s; got {got}")

    return asyncio.run(run())


def ping(addr, count=3):
    r = subprocess.run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", addr],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"ping {addr} failed:\n{r.stdout}{r.stderr}"


def put(addr, n):
    data = os.urandom(n)
    with socket.create_connection((addr, XFER_PORT), timeout=30) as c:
        c.sendall(f"PUT {n}\n".encode() + data)
        answer = c.makefile("rb").readline().decode().strip()
    assert answer == hashlib.sha256(data).hexdigest(), "PUT: sha256 differs"


def get(addr, n):
    with socket.create_connection((addr, XFER_PORT), timeout=30) as c:
        c.sendall(f"GET {n}\n".encode())
        f = c.makefile("rb")
        digest = f.readline().decode().strip()
        h = hashlib.sha256()
        left = n
        while left:
            chunk = f.read(min(left, 1 << 16))
            assert chunk, f"GET: connection ended {left} bytes early"
            h.update(chunk)
            left -= len(chunk)
    assert h.hexdigest() == digest, "GET: sha256 differs"


def test_version_and_defaults():
    assert veil_version()
    c = default_config()
    assert c.tun_mtu >= 1280 and c.direct_paths and c.log_filter == "info"


def test_errors_are_exceptions_with_actionable_messages(network):
    store = MemoryStore()
    with pytest.raises(VeilError.InvalidToken) as e:
        VeilNode("not-a-token", default_config(), store, None, None)
    assert "veil network create" in e.value.detail

    for field, change in (
        ("tun_mtu", lambda c: setattr(c, "tun_mtu", 1000)),
        ("dns_servers", lambda c: setattr(c, "dns_servers", ["dns.example"])),
        ("ipv4_pool", lambda c: setattr(c, "ipv4_pool", "100.64.0.0")),
        ("log_filter", lambda c: setattr(c, "log_filter", "info,=[")),
    ):
        cfg = default_config()
        change(cfg)
        with pytest.raises(VeilError.InvalidConfig) as e:
            VeilNode(network.token, cfg, store, None, None)
        assert e.value.field == field, e.value
        assert e.value.detail

    class Locked(SecretStore):
        def load(self, name):
            raise VeilError.SecretStore("the keychain is locked")

        def store(self, name, value):
            raise VeilError.SecretStore("the keychain is locked")

    with pytest.raises(VeilError.SecretStore) as e:
        VeilNode(network.token, default_config(), Locked(), None, None)
    assert "locked" in e.value.detail

    bad = MemoryStore()
    bad.data["node-key"] = b"abc"
    with pytest.raises(VeilError.SecretStore) as e:
        VeilNode(network.token, default_config(), bad, None, None)
    assert "3 bytes" in e.value.detail

    node = VeilNode(network.token, default_config(), store, None, None)
    with pytest.raises(VeilError.NotRunning):
        node.status()
    with pytest.raises(VeilError.Tun) as e:
        node.start(-1)
    assert "descriptor" in e.value.detail
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(VeilError.Tun):
        node.start(r)  # closed

    # The platform refusing to protect the socket (Android without the VPN permission).
    refusing = VeilNode(network.token, default_config(), MemoryStore(), Protector(False), None)
    r, w = os.pipe()
    try:
        with pytest.raises(VeilError.Network) as e:
            refusing.start(r)
        assert "protect" in e.value.detail
    finally:
        os.close(r)
        os.close(w)


def test_node_through_ffi(network):
    store, protector, logs = MemoryStore(), Protector(), Logs()
    node = VeilNode(network.token, default_config(), store, protector, logs)
    assert len(store.data["node-key"]) == 32
    again = VeilNode(network.token, default_config(), store, None, None)
    assert again.public_key() == node.public_key() and len(node.public_key()) == 64
    del again

    s = node.tunnel_settings()
    assert s.mtu == 1400
    pool = ipaddress.ip_network("100.64.0.0/10")
    assert ipaddress.ip_address(s.ipv4_address) in pool and s.ipv4_prefix_len == 10
    assert ipaddress.ip_address(s.ipv6_address) in ipaddress.ip_network(
        f"{s.routes[1].address}/{s.routes[1].prefix_len}")
    assert (s.routes[0].address, s.routes[0].prefix_len) == ("100.64.0.0", 10)
    assert [r.address for r in s.excluded_routes] == [network.relay_ip]

    fd = open_tun("vffi0", s)
    try:
        node.start(fd)
        with pytest.raises(VeilError.AlreadyRunning):
            node.start(fd)
        events_until(node, lambda e: e.is_connected(), 20)
        st = node.status()
        assert st.relay_connected and st.overlay_ipv4 == s.ipv4_address, st
        assert st.tun and st.tun.startswith("fd "), st.tun
        assert protector.fds, "the node's socket was never handed to protect_socket"

        ping(network.a_ipv4)
        got = events_until(node, lambda e: e.is_path_changed() and e.path == "direct", 20)
        assert any(e.is_peer_up() for e in got), got
        direct = got[-1]
        assert direct.endpoint and direct.peer == network.a["id"], direct

        put(network.a_ipv4, 16 * MIB)  # this node's TUN reads
        get(network.a_ipv4, 16 * MIB)  # this node's TUN writes

        peers = {p.overlay_ipv4: p for p in node.peers()}
        a = peers[network.a_ipv4]
        assert a.path == "direct" and a.pmtu and a.pmtu >= 1280, a
        assert a.tx_bytes > 16 * MIB and a.rx_bytes > 16 * MIB, a
        assert any(p["overlay_ipv4"] == s.ipv4_address for p in network.a_peers())
        assert "relay session up" in logs.text(), logs.text()[-2000:]

        node.network_changed()  # nothing changed: the sessions stay
        ping(network.a_ipv4, 2)

        # A phone's node reads its addresses when the platform says the network changed,
        # and scans nothing in between (no wake-ups four times a second): an address that
        # appears quietly is not announced; once network_changed() is called, it is.
        # (The call above also moved the node's 30 s re-read 30 s away.)
        def candidates_sent():
            return next(c.value for c in node.status().counters if c.name == "candidates_sent")
        sent = candidates_sent()
        route = subprocess.run(["ip", "-o", "-4", "route", "get", network.relay_ip],
                               check=True, capture_output=True, text=True).stdout.split()
        dev, mine = route[route.index("dev") + 1], ipaddress.ip_address(route[route.index("src") + 1])
        extra = str(ipaddress.ip_address(int(mine) | 0xF0))  # .240 and up: no host of this test
        subprocess.run(["ip", "addr", "add", f"{extra}/32", "dev", dev], check=True)
        try:
            time.sleep(2)
            assert candidates_sent() == sent, "the node read its addresses by itself"
            node.network_changed()
            deadline = time.monotonic() + 5
            while candidates_sent() == sent and time.monotonic() < deadline:
                time.sleep(0.1)
            assert candidates_sent() > sent, "network_changed() did not announce the new address"
        finally:
            subprocess.run(["ip", "addr", "del", f"{extra}/32", "dev", dev], check=True)
        node.network_changed()
        ping(network.a_ipv4, 2)

        node.stop()
        events_until(node, lambda e: e.is_stopped(), 10)
        with pytest.raises(VeilError.NotRunning):
            node.status()

        # A stopped node starts again on the same interface.
        node.start(fd)
        events_until(node, lambda e: e.is_connected(), 20)
        ping(network.a_ipv4, 2)
        node.stop()
    finally:
        os.close(fd)


def test_settings_change_rebuilds_the_interface(network):
    """The remembered address is now held by node A: the rendezvous gives another one, the
    app is told to rebuild its interface, and hands the new descriptor over."""
    with tempfile.TemporaryDirectory() as state:
        with open(os.path.join(state, "ipv4"), "w") as f:
            f.write(network.a_ipv4 + "\n")
        cfg = default_config()
        cfg.state_dir = state
        node = VeilNode(network.token, cfg, MemoryStore(), None, None)
        first = node.tunnel_settings()
        assert first.ipv4_address == network.a_ipv4
        fd = open_tun("vffi1", first)
        fd2 = None
        try:
            node.start(fd)
            got = events_until(node, lambda e: e.is_settings_changed(), 20)
            new = got[-1].settings
            assert new.ipv4_address != network.a_ipv4, new
            assert node.tunnel_settings() == new
            os.close(fd)  # the platform tears the old interface down
            fd = None
            fd2 = open_tun("vffi2", new)
            node.set_tun(fd2)
            ping(network.a_ipv4)
            put(network.a_ipv4, 2 * MIB)
            with open(os.path.join(state, "ipv4")) as f:
                assert f.read().strip() == new.ipv4_address
            node.stop()
        finally:
            for d in (fd, fd2):
                if d is not None:
                    os.close(d)


def test_shared_relays_are_tried_nearest_first(network):
    """A token whose relays share a rendezvous: start() times each relay's TCP port on
    protected sockets and starts at the one that answers, here the second of the token
    (the first is down), instead of waiting for a failover."""
    net = os.path.join(SCRATCH, "net-shared")
    down, up = f"{RELAY_IP}:7200", f"{RELAY_IP}:7100"
    token = subprocess.run(
        [VEIL, "network", "create", "--shared-rendezvous", "--relay", down, "--relay", up,
         "--relay-tcp-port", "7201", "--relay-tcp-port", "7101", "--out", net],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    state = os.path.join(SCRATCH, "state", "relay-shared")
    network.spawn("relay-shared", in_ns(NS_RELAY, VEIL, "relay", "--listen", up,
                                        "--tcp-listen", f"{RELAY_IP}:7101",
                                        "--token-file", f"{net}/relay-2.token",
                                        "--state-dir", state))
    wait_for("the second relay answers", lambda: network.ok(in_ns(
        NS_RELAY, VEIL, "relay", "status", "--json", "--state-dir", state)), 20)
    protector, logs = Protector(), Logs()
    node = VeilNode(token, default_config(), MemoryStore(), protector, logs)
    fd = open_tun("vffi2", node.tunnel_settings())
    try:
        node.start(fd)
        events_until(node, lambda e: e.is_connected(), 5)
        line = next((l for l in logs.text().splitlines() if "nearest first" in l), "")
        assert line.index(up) < line.index(down), line
        assert f"{down} (not timed)" in line, line
        assert len(protector.fds) >= 3, "the timing sockets were not protected"
        assert node.status().relay == up
        node.stop()
    finally:
        os.close(fd)
