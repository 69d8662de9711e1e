// The Kotlin bindings of veil-ffi, called for real on the JVM (run by scripts/test-kotlin.sh):
// the library is loaded through JNA from target/debug (-Djna.library.path), the platform
// traits (SecretStore, SocketProtector, LogSink) are implemented here in Kotlin, and the node
// runs on a datagram socketpair that stands in for the TUN descriptor Android's
// VpnService.establish() returns (one packet per read and write, no root, no interface).
//
// Environment:
//   VEIL_TEST_TOKEN        a token whose relay is 127.0.0.1:7999, where nothing answers
//   VEIL_TEST_RELAY_TOKEN  a token of the relay scripts/test-kotlin.sh runs on 127.0.0.1
//                          (loopback only: every packet of this test stays on this machine)
//
// Also exercises net.veil.android's JVM-only code (VeilBridge.kt, SecretSealing.kt) against
// the real node. Prints one line per check; ends with "kotlin: N passed, M failed" and exits
// non-zero on the first failed check.

import com.sun.jna.Library
import com.sun.jna.Native
import com.sun.jna.NativeLong
import java.net.Inet4Address
import java.net.Inet6Address
import java.net.InetAddress
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger
import javax.crypto.AEADBadTagException
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import kotlin.system.exitProcess
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.TimeoutCancellationException
import kotlinx.coroutines.async
import kotlinx.coroutines.cancel
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import net.veil.android.Phase
import net.veil.android.PeerRow
import net.veil.android.RateMeter
import net.veil.android.SecretSealing
import net.veil.android.UnderlayWatch
import net.veil.android.VeilBridge
import net.veil.android.VeilState
import net.veil.android.formatBytes
import net.veil.android.formatDuration
import net.veil.android.formatRate
import net.veil.android.parseIpLiteral
import net.veil.android.routesCover
import net.veil.android.userMessage
import uniffi.veil_ffi.IpRoute
import uniffi.veil_ffi.LogLevel
import uniffi.veil_ffi.LogSink
import uniffi.veil_ffi.PeerInfo
import uniffi.veil_ffi.PrivateMode
import uniffi.veil_ffi.SecretStore
import uniffi.veil_ffi.SocketProtector
import uniffi.veil_ffi.TunnelSettings
import uniffi.veil_ffi.VeilConfig
import uniffi.veil_ffi.VeilEvent
import uniffi.veil_ffi.VeilException
import uniffi.veil_ffi.VeilNode
import uniffi.veil_ffi.defaultConfig
import uniffi.veil_ffi.veilVersion

// ---- checks -------------------------------------------------------------------------------

class CheckFailed(message: String) : Exception(message)

var passed = 0

fun check(condition: Boolean, what: String, detail: () -> String = { "" }) {
    if (!condition) {
        val d = detail()
        throw CheckFailed(if (d.isEmpty()) what else "$what ($d)")
    }
    passed++
    println("  ok  $what")
}

fun section(name: String) = println("== $name")

inline fun <reified E : Throwable> expectThrows(what: String, block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) {
            passed++
            println("  ok  $what -> ${e::class.simpleName}: ${e.message?.lineSequence()?.first()}")
            return e
        }
        throw CheckFailed("$what: expected ${E::class.simpleName}, got ${e::class.qualifiedName}: ${e.message}")
    }
    throw CheckFailed("$what: expected ${E::class.simpleName}, but the call returned")
}

inline fun <T> timed(block: () -> T): Pair<T, Long> {
    val t0 = System.nanoTime()
    val r = block()
    return r to (System.nanoTime() - t0) / 1_000_000
}

// ---- the platform's side, in Kotlin -------------------------------------------------------

/** What a phone's secret store does, in memory. */
class MemoryStore : SecretStore {
    val data = ConcurrentHashMap<String, ByteArray>()
    val loads = AtomicInteger()
    val stores = AtomicInteger()

    override fun load(name: String): ByteArray? {
        loads.incrementAndGet()
        return data[name]?.copyOf()
    }

    override fun store(name: String, value: ByteArray) {
        stores.incrementAndGet()
        data[name] = value.copyOf()
    }
}

/** The Android store's format (SecretSealing, as KeystoreSecretStore uses it) with a software
 * AES key instead of the Keystore's, and a map instead of SharedPreferences. */
class SealedStore(private val key: SecretKey) : SecretStore {
    val texts = ConcurrentHashMap<String, String>()

    override fun load(name: String): ByteArray? = texts[name]?.let { SecretSealing.open(key, name, it) }

    override fun store(name: String, value: ByteArray) {
        texts[name] = SecretSealing.seal(key, name, value)
    }
}

class Protector(private val answer: Boolean) : SocketProtector {
    val fds = CopyOnWriteArrayList<Int>()

    override fun protectSocket(fd: Int): Boolean {
        fds += fd
        return answer
    }
}

class Logs : LogSink {
    val lines = CopyOnWriteArrayList<Triple<LogLevel, String, String>>()

    override fun log(level: LogLevel, target: String, message: String) {
        lines += Triple(level, target, message)
    }

    fun text() = lines.joinToString("\n") { "${it.first} ${it.second}: ${it.third}" }
}

// ---- a TUN stand-in: a datagram socketpair through JNA's libc -----------------------------

interface LibC : Library {
    fun socketpair(domain: Int, type: Int, protocol: Int, sv: IntArray): Int
    fun close(fd: Int): Int
    fun send(fd: Int, buf: ByteArray, len: NativeLong, flags: Int): NativeLong
    fun recv(fd: Int, buf: ByteArray, len: NativeLong, flags: Int): NativeLong
    fun fcntl(fd: Int, cmd: Int): Int

    companion object {
        val C: LibC = Native.load("c", LibC::class.java)
        const val AF_UNIX = 1
        const val SOCK_DGRAM = 2
        const val MSG_DONTWAIT = 0x40
        const val F_GETFD = 1
    }
}

/** [nodeFd] goes to `start`/`setTun` (as VpnService's descriptor would); the test reads and
 * writes the packets "the kernel" would at [testFd]. */
class FakeTun : AutoCloseable {
    val nodeFd: Int
    val testFd: Int

    init {
        val sv = IntArray(2)
        if (LibC.C.socketpair(LibC.AF_UNIX, LibC.SOCK_DGRAM, 0, sv) != 0) {
            throw CheckFailed("socketpair failed: errno ${Native.getLastError()}")
        }
        nodeFd = sv[0]
        testFd = sv[1]
    }

    fun send(packet: ByteArray) {
        LibC.C.send(testFd, packet, NativeLong(packet.size.toLong()), LibC.MSG_DONTWAIT)
    }

    /** The next packet the node wrote that [want] accepts, or null after [timeoutMs]. */
    fun receive(timeoutMs: Long, want: (ByteArray) -> Boolean = { true }): ByteArray? {
        val buf = ByteArray(65536)
        val deadline = System.nanoTime() + timeoutMs * 1_000_000
        while (true) {
            val n = LibC.C.recv(testFd, buf, NativeLong(buf.size.toLong()), LibC.MSG_DONTWAIT).toLong()
            if (n > 0) {
                val p = buf.copyOf(n.toInt())
                if (want(p)) return p
                continue
            }
            if (System.nanoTime() >= deadline) return null
            Thread.sleep(5)
        }
    }

    /** Drops what the node wrote so far. */
    fun drain() {
        do {
            val p = receive(0)
        } while (p != null)
    }

    fun nodeFdOpen() = LibC.C.fcntl(nodeFd, LibC.F_GETFD) != -1

    override fun close() {
        LibC.C.close(nodeFd)
        LibC.C.close(testFd)
    }
}

// ---- IPv4 packets ---------------------------------------------------------------------------

fun checksum(b: ByteArray, off: Int, len: Int): Int {
    var sum = 0L
    var i = off
    while (i + 1 < off + len) {
        sum += ((b[i].toInt() and 0xff) shl 8) or (b[i + 1].toInt() and 0xff)
        i += 2
    }
    if (i < off + len) sum += (b[i].toInt() and 0xff) shl 8
    while (sum shr 16 != 0L) sum = (sum and 0xffff) + (sum shr 16)
    return sum.toInt().inv() and 0xffff
}

/** An ICMP echo request (type 8) or reply (type 0) from [src] to [dst]. */
fun icmpPacket(src: String, dst: String, type: Int, seq: Int, payload: ByteArray): ByteArray {
    val p = ByteArray(28 + payload.size)
    p[0] = 0x45
    p[2] = (p.size shr 8).toByte()
    p[3] = p.size.toByte()
    p[4] = 0x12
    p[5] = seq.toByte()
    p[6] = 0x40 // DF
    p[8] = 64 // TTL
    p[9] = 1 // ICMP
    InetAddress.getByName(src).address.copyInto(p, 12)
    InetAddress.getByName(dst).address.copyInto(p, 16)
    val h = checksum(p, 0, 20)
    p[10] = (h shr 8).toByte()
    p[11] = h.toByte()
    p[20] = type.toByte()
    p[24] = 0x56 // identifier 0x5645 ("VE")
    p[25] = 0x45
    p[26] = (seq shr 8).toByte()
    p[27] = seq.toByte()
    payload.copyInto(p, 28)
    val c = checksum(p, 20, p.size - 20)
    p[22] = (c shr 8).toByte()
    p[23] = c.toByte()
    return p
}

fun isIcmpFrom(p: ByteArray, src: String, dst: String, payload: ByteArray): Boolean =
    p.size == 28 + payload.size && (p[0].toInt() shr 4) == 4 && p[9].toInt() == 1 &&
        p.copyOfRange(12, 16).contentEquals(InetAddress.getByName(src).address) &&
        p.copyOfRange(16, 20).contentEquals(InetAddress.getByName(dst).address) &&
        p.copyOfRange(28, p.size).contentEquals(payload)

// ---- events -------------------------------------------------------------------------------

/** Consumes a node's `nextEvent()` in a coroutine, as VeilVpnService's pump does. */
class EventLog(private val node: VeilNode, scope: CoroutineScope) {
    val events = CopyOnWriteArrayList<VeilEvent>()
    val job: Job = scope.launch {
        while (isActive) {
            val e = node.nextEvent()
            events += e
        }
    }

    /** Waits until an event matches; fails listing what came. */
    fun await(what: String, timeoutMs: Long, want: (VeilEvent) -> Boolean): VeilEvent {
        val deadline = System.nanoTime() + timeoutMs * 1_000_000
        while (System.nanoTime() < deadline) {
            events.firstOrNull(want)?.let { return it }
            Thread.sleep(20)
        }
        throw CheckFailed("no $what within $timeoutMs ms; events: $events")
    }
}

fun nextEventOrNull(node: VeilNode, timeoutMs: Long): VeilEvent? =
    runBlocking { withTimeoutOrNull(timeoutMs) { node.nextEvent() } }

// ---- the checks ---------------------------------------------------------------------------

fun versionAndDefaults() {
    section("veilVersion, defaultConfig")
    val v = veilVersion()
    check(Regex("""\d+\.\d+\.\d+.*""").matches(v), "veilVersion() is a version", { v })
    val c = defaultConfig()
    check(c.tunMtu.toInt() in 1280..65535, "default tunMtu ${c.tunMtu} is within 1280..65535")
    check(c.directPaths && c.privateMode == PrivateMode.OFF && c.aes, "defaults: direct paths, private off, AES offered")
    check(c.logFilter == "info" && c.stateDir == null && c.dnsServers.isEmpty() && c.certificate == null, "defaults: info logs, no state dir, system DNS, no certificate")
    check(c.ipv4Pool == "100.64.0.0/10", "default pool is 100.64.0.0/10", { c.ipv4Pool })
}

fun identityAndStore(token: String) {
    section("VeilNode with a Kotlin SecretStore")
    val store = MemoryStore()
    val key1 = VeilNode(token, defaultConfig(), store, null, null).use { n ->
        val key = store.data["node-key"]
        check(key != null && key.size == 32, "the node stored a 32-byte `node-key`", { "${store.data.keys} ${key?.size}" })
        check(key!!.any { it != 0.toByte() }, "the node key is not zeros")
        check(store.stores.get() == 1, "stored once")
        val pk = n.publicKey()
        check(Regex("[0-9a-f]{64}").matches(pk), "publicKey() is 64 hex digits", { pk })
        pk
    }
    val key2 = VeilNode(token, defaultConfig(), store, null, null).use { it.publicKey() }
    check(key1 == key2, "a second node with the same store has the same publicKey()")
    check(store.stores.get() == 1 && store.loads.get() == 2, "the second node only loaded the key", { "loads=${store.loads} stores=${store.stores}" })
    val other = VeilNode(token, defaultConfig(), MemoryStore(), null, null).use { it.publicKey() }
    check(other != key1, "a fresh store gives another identity")

    section("the Android store's format (SecretSealing) as the node's store")
    val aes = KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()
    val sealed = SealedStore(aes)
    val pk = VeilNode(token, defaultConfig(), sealed, null, null).use { it.publicKey() }
    val text = sealed.texts["node-key"] ?: ""
    check(text.startsWith("v1:") && text.split(':').size == 3, "the node key is kept sealed as v1:IV:CIPHERTEXT", { text })
    check(pk == VeilNode(token, defaultConfig(), sealed, null, null).use { it.publicKey() }, "the sealed key opens to the same identity")
    val a = SecretSealing.seal(aes, "n", byteArrayOf(1, 2, 3))
    val b = SecretSealing.seal(aes, "n", byteArrayOf(1, 2, 3))
    check(a != b, "two seals of one value differ (fresh IV)")
    check(SecretSealing.open(aes, "n", a).contentEquals(byteArrayOf(1, 2, 3)), "seal/open round trip")
    expectThrows<AEADBadTagException>("a value opened under another name") { SecretSealing.open(aes, "m", a) }
    // Flip one bit of the ciphertext itself (editing a base64 character could touch only
    // padding bits that decoding discards).
    val (version, iv, body) = a.split(':')
    val bytes = java.util.Base64.getDecoder().decode(body)
    bytes[0] = (bytes[0].toInt() xor 1).toByte()
    val tampered = "$version:$iv:" + java.util.Base64.getEncoder().encodeToString(bytes)
    expectThrows<AEADBadTagException>("a tampered value") { SecretSealing.open(aes, "n", tampered) }
    expectThrows<IllegalArgumentException>("text of another format") { SecretSealing.open(aes, "n", "plain") }
}

fun errors(token: String) {
    section("errors are VeilException subclasses with useful fields")
    val store = MemoryStore()
    val bad = expectThrows<VeilException.InvalidToken>("a bad token") {
        VeilNode("veil1.this-is-not-a-token", defaultConfig(), store, null, null)
    }
    check(bad.detail.contains("veil network create"), "InvalidToken's detail says where a token comes from", { bad.detail })
    check(bad.userMessage().startsWith("The join token"), "userMessage() is the detail, capitalized", { bad.userMessage() })
    check(store.loads.get() == 0 && store.stores.get() == 0, "a bad token never touches the secret store")
    expectThrows<VeilException.InvalidToken>("an empty token") { VeilNode("", defaultConfig(), store, null, null) }

    val configs: List<Pair<String, (VeilConfig) -> VeilConfig>> = listOf(
        "tun_mtu" to { c -> c.copy(tunMtu = 1000u) },
        "dns_servers" to { c -> c.copy(dnsServers = listOf("dns.example")) },
        "ipv4_pool" to { c -> c.copy(ipv4Pool = "100.64.0.0") },
        "log_filter" to { c -> c.copy(logFilter = "info,=[") },
        "state_dir" to { c -> c.copy(stateDir = "") },
        "private_mode" to { c -> c.copy(privateMode = PrivateMode.TWO_HOP) },
        "certificate" to { c -> c.copy(certificate = "veilcert1.x") },
        "name" to { c -> c.copy(name = "Bad Name") },
        "dns_domain" to { c -> c.copy(dnsDomain = "a..b") },
    )
    for ((field, change) in configs) {
        val e = expectThrows<VeilException.InvalidConfig>("bad $field") {
            VeilNode(token, change(defaultConfig()), store, null, null)
        }
        check(e.field == field && e.detail.isNotBlank(), "InvalidConfig names `$field`", { "${e.field}: ${e.detail}" })
    }
    val mtu = expectThrows<VeilException.InvalidConfig>("tunMtu 1000 again") {
        VeilNode(token, defaultConfig().copy(tunMtu = 1000u), store, null, null)
    }
    check(mtu.detail.contains("1280"), "the tun_mtu detail says the least allowed", { mtu.detail })

    val locked = object : SecretStore {
        override fun load(name: String): ByteArray? = throw VeilException.SecretStore("the keychain is locked")
        override fun store(name: String, value: ByteArray) = throw VeilException.SecretStore("the keychain is locked")
    }
    val e1 = expectThrows<VeilException.SecretStore>("a store that throws VeilException.SecretStore") {
        VeilNode(token, defaultConfig(), locked, null, null)
    }
    check(e1.detail.contains("locked"), "the store's own detail comes back", { e1.detail })
    val broken = object : SecretStore {
        override fun load(name: String): ByteArray? = throw IllegalStateException("disk on fire")
        override fun store(name: String, value: ByteArray) = Unit
    }
    val e2 = expectThrows<VeilException.Internal>("a store that throws another exception") {
        VeilNode(token, defaultConfig(), broken, null, null)
    }
    check(e2.detail.contains("disk on fire"), "the Kotlin exception's text is in the detail", { e2.detail.take(200) })
    val short = MemoryStore().apply { data["node-key"] = byteArrayOf(1, 2, 3) }
    val e3 = expectThrows<VeilException.SecretStore>("a stored key of 3 bytes") {
        VeilNode(token, defaultConfig(), short, null, null)
    }
    check(e3.detail.contains("3 bytes"), "the detail says what is wrong", { e3.detail })
    check(short.data["node-key"]!!.size == 3, "the foreign value is left alone")

    VeilNode(token, defaultConfig(), MemoryStore(), null, null).use { n ->
        val nr = expectThrows<VeilException.NotRunning>("status() before start") { n.status() }
        check(nr.detail.contains("start()"), "NotRunning's detail says to call start()", { nr.detail })
        expectThrows<VeilException.NotRunning>("peers() before start") { n.peers() }
        expectThrows<VeilException.NotRunning>("setTun() before start") { n.setTun(0) }
        val tunErr = expectThrows<VeilException.Tun>("start(-1)") { n.start(-1) }
        check(tunErr.detail.contains("-1"), "the Tun detail names the descriptor", { tunErr.detail })
        val closed = FakeTun().also { it.close() }
        expectThrows<VeilException.Tun>("start() on a closed descriptor") { n.start(closed.nodeFd) }
        n.stop()
        n.networkChanged()
        check(true, "stop() and networkChanged() before start return quietly")
    }

    val refusing = Protector(false)
    VeilNode(token, defaultConfig(), MemoryStore(), refusing, null).use { n ->
        FakeTun().use { tun ->
            val e = expectThrows<VeilException.Network>("start() when the platform refuses to protect the socket") { n.start(tun.nodeFd) }
            check(e.detail.contains("protect"), "the Network detail mentions protect", { e.detail })
            check(refusing.fds.isNotEmpty(), "protectSocket was asked")
        }
    }
}

fun tunnelSettings(token: String) {
    section("tunnelSettings()")
    val cfg = defaultConfig().copy(tunMtu = 1400u, dnsServers = listOf("100.64.0.53", " fd00::53 "))
    VeilNode(token, cfg, MemoryStore(), null, null).use { n ->
        val s = n.tunnelSettings()
        println("      $s")
        check(s.mtu.toInt() == 1400, "mtu is the configured tunMtu", { "${s.mtu}" })
        val v4 = InetAddress.getByName(s.ipv4Address)
        check(v4 is Inet4Address && s.ipv4PrefixLen.toInt() == 10, "ipv4Address is an IPv4 with the pool's prefix length")
        check(routesCover(listOf(IpRoute("100.64.0.0", 10u)), s.ipv4Address), "ipv4Address is in 100.64.0.0/10")
        val v6 = InetAddress.getByName(s.ipv6Address)
        check(v6 is Inet6Address && s.ipv6PrefixLen.toInt() == 48 && (v6.address[0].toInt() and 0xfe) == 0xfc, "ipv6Address is a ULA with a /48")
        check(IpRoute("100.64.0.0", 10u) in s.routes, "routes hold the IPv4 pool", { "${s.routes}" })
        check(s.routes.any { it.prefixLen.toInt() == 48 && routesCover(listOf(it), s.ipv6Address) }, "routes hold the /48 of ipv6Address")
        check(s.routes.size == 2, "routes hold only the overlay prefixes")
        check(s.routes.all { parseIpLiteral(it.address) != null }, "every route address parses")
        check(s.dnsServers == listOf("100.64.0.53", "fd00::53"), "dnsServers are the configured ones, trimmed", { "${s.dnsServers}" })
        check(s.excludedRoutes == listOf(IpRoute("127.0.0.1", 32u)), "excludedRoutes hold the relay as a host route", { "${s.excludedRoutes}" })
        check(!routesCover(s.routes, "127.0.0.1"), "no route covers the relay")
        check(s.overlayDnsDomain == "veil", "overlayDnsDomain is the default `veil`", { s.overlayDnsDomain })
        check(s.overlayDnsServer == null || routesCover(s.routes, s.overlayDnsServer!!), "overlayDnsServer is inside the tunnel's routes", { "${s.overlayDnsServer}" })
        check(n.tunnelSettings() == s, "tunnelSettings() is stable")
    }
}

fun asyncCancellation(token: String) {
    section("nextEvent(): waits, and is cancelled cleanly")
    VeilNode(token, defaultConfig(), MemoryStore(), null, null).use { n ->
        repeat(5) { i ->
            val (e, ms) = timed { nextEventOrNull(n, 150) }
            check(e == null && ms < 2_000, "withTimeoutOrNull(150) #${i + 1} gives null (no event without start) in $ms ms")
        }
        expectThrows<TimeoutCancellationException>("withTimeout(100) { nextEvent() }") {
            runBlocking { withTimeout(100) { n.nextEvent() } }
        }
        runBlocking {
            val waiter = async(Dispatchers.Default) { n.nextEvent() }
            delay(100)
            waiter.cancelAndJoin()
            check(waiter.isCancelled, "a waiting nextEvent() is cancelled by cancelAndJoin()")
        }
        // Many cancelled waits leave no state behind that steals later events.
        runBlocking {
            repeat(50) { withTimeoutOrNull(5) { n.nextEvent() } }
        }
        check(true, "50 more cancelled waits")
        n.publicKey()
    }
}

fun unreachableRelay(token: String) {
    section("running on a socketpair, relay unreachable (127.0.0.1:7999)")
    val logs = Logs()
    val protector = Protector(true)
    val cfg = defaultConfig().copy(logFilter = "debug", name = "kotlin-phone")
    VeilNode(token, cfg, MemoryStore(), protector, logs).use { n ->
        val settings = n.tunnelSettings()
        val tun = FakeTun()
        val (_, startMs) = timed { n.start(tun.nodeFd) }
        check(true, "start(fd of a socketpair) returned in $startMs ms")
        check(protector.fds.isNotEmpty() && protector.fds.all { it >= 0 }, "protectSocket was called with the node's socket(s)", { "${protector.fds}" })
        val ar = expectThrows<VeilException.AlreadyRunning>("start() again") { n.start(tun.nodeFd) }
        check(ar.detail.contains("stop()"), "AlreadyRunning's detail says to call stop()", { ar.detail })
        val (st, statusMs) = timed { n.status() }
        println("      status: id=${st.id} relay=${st.relay} connected=${st.relayConnected} tun=${st.tun} port=${st.localPort} counters=${st.counters.size}")
        check(statusMs < 3_000, "status() answers while running ($statusMs ms)")
        check(!st.relayConnected, "relayConnected is false (nothing listens on the relay address)")
        check(st.overlayIpv6 == settings.ipv6Address, "status().overlayIpv6 is the interface's address")
        check(st.id.isNotBlank() && st.counters.isNotEmpty(), "status() has an id and counters")
        check(st.tun?.contains("fd") == true, "status().tun names the descriptor", { "${st.tun}" })
        check(n.peers().isEmpty(), "peers() is empty")
        check(st.name == "kotlin-phone" && !st.nameTaken, "status().name is the configured name", { "${st.name} ${st.nameTaken}" })
        n.networkChanged()
        check(true, "networkChanged() returns at once")
        val tun2 = FakeTun()
        expectThrows<VeilException.Tun>("setTun(-1) while running") { n.setTun(-1) }
        n.setTun(tun2.nodeFd)
        check(n.status().tun != null, "setTun(new fd) while running is accepted")
        val deadline = System.nanoTime() + 3_000_000_000
        while (logs.lines.isEmpty() && System.nanoTime() < deadline) Thread.sleep(20)
        check(logs.lines.isNotEmpty(), "the Kotlin LogSink received the node's logs", { "none" })
        check(logs.lines.all { it.second.isNotBlank() && it.third.isNotBlank() }, "every log line has a target and a message")
        check(logs.lines.any { it.second.startsWith("veil") }, "log targets are Veil's modules", { logs.lines.take(3).toString() })
        println("      ${logs.lines.size} log lines, first: ${logs.lines.first()}")

        val (_, stopMs) = timed { n.stop() }
        check(stopMs < 7_000, "stop() returned in $stopMs ms")
        val got = mutableListOf<VeilEvent>()
        while (true) {
            val e = nextEventOrNull(n, 5_000) ?: break
            got += e
            if (e == VeilEvent.Stopped) break
        }
        check(got.lastOrNull() == VeilEvent.Stopped, "nextEvent() then gives Stopped", { "$got" })
        check(got.none { it is VeilEvent.Error }, "no Error event", { "$got" })
        expectThrows<VeilException.NotRunning>("status() after stop") { n.status() }
        check(tun.nodeFdOpen() && tun2.nodeFdOpen(), "the caller's descriptors are still open (the node used dups)")

        // A stopped node starts again.
        val tun3 = FakeTun()
        n.start(tun3.nodeFd)
        check(n.status().uptimeS < 5u, "a stopped node starts again")
        n.stop()
        check(nextEventOrNull(n, 5_000) == VeilEvent.Stopped, "and Stopped comes again")
        listOf(tun, tun2, tun3).forEach { it.close() }
    }
}

fun bridgeLogic() {
    section("VeilBridge (the app's state) without a node")
    var s = VeilState(phase = Phase.CONNECTING)
    s = VeilBridge.reduce(s, VeilEvent.Connected("127.0.0.1:7000"))
    check(s.phase == Phase.CONNECTED && s.relayConnected && s.relay == "127.0.0.1:7000", "Connected -> CONNECTED")
    val row = PeerRow("ab12", null, "100.64.0.9", "fd00::9", "relayed", "symmetric NAT", null, null, "searching", null, 0u, 0u, null, null, "chacha20-poly1305")
    s = s.copy(peers = listOf(row))
    s = VeilBridge.reduce(s, VeilEvent.PathChanged("ab12", "direct", "192.0.2.7:4000", 1420u))
    check(s.peers[0].path == "direct" && s.peers[0].pmtu == 1420u && s.peers[0].pathLabel == "direct (192.0.2.7:4000)", "PathChanged updates the row", { "${s.peers[0]}" })
    check(row.pathLabel == "relayed: symmetric NAT", "relayed rows show the reason")
    s = VeilBridge.reduce(s, VeilEvent.PeerDown("ab12"))
    check(!s.peers[0].up, "PeerDown marks the row down")
    s = VeilBridge.reduce(s, VeilEvent.NameTaken("phone"))
    check(s.nameTaken && s.dnsName == "phone", "NameTaken is shown")
    s = VeilBridge.reduce(s, VeilEvent.Disconnected("127.0.0.1:7000"))
    check(s.phase == Phase.CONNECTING && !s.relayConnected, "Disconnected -> CONNECTING")
    s = VeilBridge.reduce(s, VeilEvent.Error("the TUN device failed"))
    s = VeilBridge.reduce(s, VeilEvent.Stopped)
    check(s.phase == Phase.FAILED && s.message == "the TUN device failed", "Error then Stopped stays FAILED with the message")
    check(s.recentEvents.size == 7 && s.recentEvents.last() == "stopped", "events are listed", { "${s.recentEvents}" })
    check(!Phase.FAILED.active && Phase.CONNECTING.active, "Phase.active")

    val meter = RateMeter()
    fun peer(tx: ULong, rx: ULong) = PeerInfo("ab12", null, null, "fd00::9", "direct", null, null, 1.5, 1420u, "done", tx, rx, null, "aes-256-gcm")
    check(meter.update(listOf(peer(1000u, 0u)), 0L)["ab12"] == (null to null), "first sample: no rate")
    val r = meter.update(listOf(peer(3000u, 500u)), 500_000_000L)["ab12"]
    check(r == (4000.0 to 1000.0), "rates are bytes per second between polls", { "$r" })
    val reset = meter.update(listOf(peer(100u, 0u)), 1_000_000_000L)["ab12"]
    check(reset == (200.0 to 0.0), "a counter that went down counts from zero", { "$reset" })
    check(formatBytes(512u) == "512 B" && formatBytes(1536u) == "1.5 KiB" && formatBytes(5uL * 1024uL * 1024uL) == "5.0 MiB", "formatBytes")
    check(formatDuration(42u) == "42 s" && formatDuration(3_725u) == "1 h 2 min" && formatDuration(90_000u) == "1 d 1 h", "formatDuration")
    check(formatRate(125_000.0) == "1.0 Mbit/s" && formatRate(null) == "-", "formatRate", { formatRate(125_000.0) })

    var now = 0L
    val watch = UnderlayWatch({ now }, 1_000)
    check(!watch.update("100", "wlan0 192.0.2.2/24"), "networks present at registration are not changes")
    now = 2_000
    check(!watch.update("100", "wlan0 192.0.2.2/24"), "the same network again is not a change")
    check(watch.update("101", "rmnet0 198.51.100.7/30"), "cellular appearing is a change")
    check(watch.update("100", null), "Wi-Fi lost is a change")
    check(watch.update("101", "rmnet0 198.51.100.9/30"), "a new address is a change")
    check(parseIpLiteral("veil.example") == null && parseIpLiteral("fd00::1")?.size == 16, "parseIpLiteral takes literals only (no DNS)")
    check(
        VeilException.InvalidConfig("tun_mtu", "too small").userMessage() == "Setting `tun_mtu` is not valid: too small" &&
            VeilException.Tun("x failed").userMessage() == "X failed",
        "userMessage()",
    )
}

fun withRelay(token: String) {
    section("two nodes through a relay on 127.0.0.1: events, packets, peers, the bridge")
    val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
    val aes = KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()
    val logsA = Logs()
    // Direct paths off: the nodes would announce this machine's interface addresses and
    // probe them; through the relay every packet stays on 127.0.0.1.
    val cfg = defaultConfig().copy(directPaths = false)
    val a = VeilNode(token, cfg, SealedStore(aes), Protector(true), logsA)
    val b = VeilNode(token, cfg, MemoryStore(), Protector(true), null)
    val tunA = FakeTun()
    val tunB = FakeTun()
    val tunA2 = FakeTun()
    try {
        val eventsA = EventLog(a, scope)
        val eventsB = EventLog(b, scope)
        a.start(tunA.nodeFd)
        b.start(tunB.nodeFd)
        val (connected, ms) = timed { eventsA.await("Connected on A", 20_000) { it is VeilEvent.Connected } }
        check(true, "A: $connected after $ms ms")
        eventsB.await("Connected on B", 20_000) { it is VeilEvent.Connected }
        check(true, "B: Connected")
        // The rendezvous confirms each node's address (or gives another: SettingsChanged; a
        // socketpair needs no rebuild, packets just use the confirmed address).
        fun confirmed(n: VeilNode): String {
            val deadline = System.nanoTime() + 15_000_000_000
            while (System.nanoTime() < deadline) {
                n.status().overlayIpv4?.let { return it }
                Thread.sleep(50)
            }
            throw CheckFailed("no confirmed overlay IPv4 within 15 s")
        }
        val ipA = confirmed(a)
        val ipB = confirmed(b)
        (eventsA.events + eventsB.events).filterIsInstance<VeilEvent.SettingsChanged>().forEach {
            println("      ${VeilBridge.describe(it)}")
        }
        val stA = a.status()
        check(stA.relayConnected && stA.relay != null, "A: status().relayConnected", { "$stA" })
        check(ipA != ipB, "A ($ipA) and B ($ipB) have distinct overlay IPv4s")
        val idB = b.status().id

        // A packet from A's "kernel" to B comes out of B's descriptor, and one back.
        val payload = "veil over kotlin".toByteArray()
        val (got, pingMs) = timed {
            var p: ByteArray? = null
            var seq = 0
            val deadline = System.nanoTime() + 20_000_000_000
            while (p == null && System.nanoTime() < deadline) {
                tunA.send(icmpPacket(ipA, ipB, 8, ++seq, payload))
                p = tunB.receive(300) { isIcmpFrom(it, ipA, ipB, payload) }
            }
            p
        }
        check(got != null, "an ICMP echo written to A's descriptor came out of B's ($pingMs ms)", { "events A: ${eventsA.events}" })
        val back = "and back".toByteArray()
        var reply: ByteArray? = null
        repeat(20) {
            if (reply == null) {
                tunB.send(icmpPacket(ipB, ipA, 0, 1, back))
                reply = tunA.receive(300) { isIcmpFrom(it, ipB, ipA, back) }
            }
        }
        check(reply != null, "and a reply from B's descriptor came out of A's")
        eventsA.await("PeerUp for B on A", 10_000) { it is VeilEvent.PeerUp && it.peer == idB }
        check(true, "A: PeerUp($idB)")
        val path = eventsA.await("PathChanged for B on A", 10_000) { it is VeilEvent.PathChanged && it.peer == idB } as VeilEvent.PathChanged
        check(path.path == "relayed", "A: PathChanged($idB, ${path.path}, ${path.endpoint}, pmtu ${path.pmtu})")
        val peerB = a.peers().firstOrNull { it.id == idB }
        check(peerB != null && peerB.txBytes > 0u && peerB.rxBytes > 0u, "A: peers() lists B with bytes both ways", { "${a.peers()}" })
        println("      A's peer: $peerB")
        check(peerB!!.path == "relayed" && !peerB.relayReason.isNullOrBlank(), "A: B's path is relayed, with a reason", { "${peerB.relayReason}" })
        check(peerB.overlayIpv4 == null || peerB.overlayIpv4 == ipB, "A: B's overlay IPv4 in peers() is B's")

        // The node moves to a rebuilt interface; sessions stay up.
        a.setTun(tunA2.nodeFd)
        tunB.drain()
        var moved: ByteArray? = null
        repeat(20) { i ->
            if (moved == null) {
                tunA2.send(icmpPacket(ipA, ipB, 8, 100 + i, payload))
                moved = tunB.receive(300) { isIcmpFrom(it, ipA, ipB, payload) }
            }
        }
        check(moved != null, "after setTun(), packets from the new descriptor reach B")

        // The app's bridge: polling while subscribed, throughput from the counters.
        val bridge = VeilBridge(scope, pollMillis = 200)
        bridge.attach(a, a.publicKey())
        val sender = scope.launch(Dispatchers.IO) {
            var seq = 1000
            val big = ByteArray(1000) { it.toByte() }
            while (isActive) {
                tunA2.send(icmpPacket(ipA, ipB, 8, ++seq, big))
                tunB.drain()
                delay(5)
            }
        }
        val busy = runBlocking {
            withTimeoutOrNull(10_000) {
                bridge.state.first { st -> st.peers.any { it.id == idB && (it.txRate ?: 0.0) > 0.0 } }
            }
        }
        sender.cancel()
        check(busy != null, "the bridge's state shows B with a send rate while subscribed", { "${bridge.state.value}" })
        val row = busy!!.peers.first { it.id == idB }
        println("      bridge: phase=${busy.phase} ${row.pathLabel} tx=${formatRate(row.txRate)} rx=${formatRate(row.rxRate)} sent=${formatBytes(row.txBytes)} polls=${busy.polls}")
        check(busy.phase == Phase.CONNECTED && busy.overlayIpv4 == ipA && busy.relayConnected, "the bridge's state: CONNECTED with A's address")
        val polls = bridge.state.value.polls
        Thread.sleep(800)
        check(bridge.state.value.polls - polls <= 1, "no polling once nobody is subscribed", { "${bridge.state.value.polls - polls} polls" })
        runBlocking { bridge.pollOnce() }
        check(bridge.state.value.polls > polls, "pollOnce() answers")

        val (_, stopMs) = timed { a.stop() }
        check(stopMs < 7_000, "A: stop() in $stopMs ms")
        eventsA.await("Stopped on A", 5_000) { it == VeilEvent.Stopped }
        check(true, "A: Stopped")
        bridge.detach()
        check(bridge.state.value.phase == Phase.STOPPED, "the bridge shows STOPPED after detach")
        b.stop()
        eventsB.await("Stopped on B", 5_000) { it == VeilEvent.Stopped }
        check(true, "B: Stopped")
        check(eventsA.events.none { it is VeilEvent.Error } && eventsB.events.none { it is VeilEvent.Error }, "no Error events")
        check(logsA.lines.none { it.first == LogLevel.ERROR }, "no error logs on A", { logsA.lines.filter { it.first == LogLevel.ERROR }.toString() })
        println("      events A: ${eventsA.events.map { VeilBridge.describe(it) }}")
    } finally {
        scope.cancel()
        a.close()
        b.close()
        listOf(tunA, tunB, tunA2).forEach { it.close() }
    }
}

fun main() {
    val token = System.getenv("VEIL_TEST_TOKEN")
    val relayToken = System.getenv("VEIL_TEST_RELAY_TOKEN")
    if (token.isNullOrBlank() || relayToken.isNullOrBlank()) {
        System.err.println("ApiTest: set VEIL_TEST_TOKEN and VEIL_TEST_RELAY_TOKEN (scripts/test-kotlin.sh does)")
        exitProcess(2)
    }
    val t0 = System.nanoTime()
    try {
        versionAndDefaults()
        identityAndStore(token)
        errors(token)
        tunnelSettings(token)
        asyncCancellation(token)
        bridgeLogic()
        unreachableRelay(token)
        withRelay(relayToken)
    } catch (e: Throwable) {
        System.err.println("FAIL: ${e.message ?: e}")
        if (e !is CheckFailed) e.printStackTrace()
        println("kotlin: $passed passed, 1 failed")
        exitProcess(1)
    }
    println("(${(System.nanoTime() - t0) / 1_000_000} ms)")
    println("kotlin: $passed passed, 0 failed")
    exitProcess(0)
}
