package net.veil.android

import java.net.Inet4Address
import java.net.Inet6Address
import java.net.InetAddress
import java.util.Locale
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.collectLatest
import kotlinx.coroutines.flow.distinctUntilChanged
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import uniffi.veil_ffi.IpRoute
import uniffi.veil_ffi.NodeStatus
import uniffi.veil_ffi.PeerInfo
import uniffi.veil_ffi.VeilEvent
import uniffi.veil_ffi.VeilException
import uniffi.veil_ffi.VeilNodeInterface

// The layer between the generated bindings (uniffi.veil_ffi) and the app: the state the UI
// shows, how the node's events change it, the status/peers polling while the UI is visible,
// throughput from byte counters, and the messages of VeilException. No android.* here, so
// this file is compiled and exercised on the JVM by tests/ffi/kotlin (scripts/test-kotlin.sh).

/** Where the connection is. */
enum class Phase {
    /** No node. */
    STOPPED,

    /** The service is building the node and the interface. */
    STARTING,

    /** The node runs; the relay has not answered yet (or stopped answering). */
    CONNECTING,

    /** The relay session is up: peers can reach this device. */
    CONNECTED,

    /** `stop()` was called; waiting for the goodbyes. */
    STOPPING,

    /** The node could not start, or stopped on an error: [VeilState.message] says why. */
    FAILED,
    ;

    /** Whether the connect switch shows "on". */
    val active: Boolean get() = this == STARTING || this == CONNECTING || this == CONNECTED
}

/** One peer as the UI lists it: [PeerInfo] plus the throughput since the previous poll. */
data class PeerRow(
    val id: String,
    /** The peer's DNS name, once the rendezvous confirmed it. */
    val name: String?,
    val overlayIpv4: String?,
    val overlayIpv6: String,
    /** `direct`, `relayed`, `private` or `none`. */
    val path: String,
    val relayReason: String?,
    val endpoint: String?,
    val pmtu: UInt?,
    val pmtuState: String,
    val rttMs: Double?,
    val txBytes: ULong,
    val rxBytes: ULong,
    /** Bytes per second sent since the previous poll; null until two polls were made. */
    val txRate: Double?,
    /** Bytes per second received since the previous poll; null until two polls were made. */
    val rxRate: Double?,
    val cipher: String,
    /** False after a PeerDown event, until the next poll shows the peer again. */
    val up: Boolean = true,
) {
    /** The address to show: the overlay IPv4 once verified, else the IPv6. */
    val overlayAddress: String get() = overlayIpv4 ?: overlayIpv6

    /** `direct (192.0.2.7:41641)`, `relayed: symmetric NAT`, `private`, `none`. */
    val pathLabel: String
        get() = when (path) {
            "direct" -> if (endpoint != null) "direct ($endpoint)" else "direct"
            "relayed" -> if (!relayReason.isNullOrBlank()) "relayed: $relayReason" else "relayed"
            else -> path
        }
}

/** Everything the UI shows. */
data class VeilState(
    val phase: Phase = Phase.STOPPED,
    /** The last error (start failure, Error event, refused permission), for the UI. */
    val message: String? = null,
    val publicKey: String? = null,
    val nodeId: String? = null,
    val overlayIpv4: String? = null,
    val overlayIpv6: String? = null,
    val relay: String? = null,
    val relayConnected: Boolean = false,
    val relayTransport: String? = null,
    val uptimeS: ULong? = null,
    /** This device's DNS name, as configured. */
    val dnsName: String? = null,
    /** Another member holds [dnsName]: this device runs without one. */
    val nameTaken: Boolean = false,
    val peers: List<PeerRow> = emptyList(),
    /** Sum of the peers' send rates, bytes per second. */
    val txRate: Double? = null,
    /** Sum of the peers' receive rates, bytes per second. */
    val rxRate: Double? = null,
    /** The newest events, oldest first (at most [VeilBridge.EVENT_LOG]). */
    val recentEvents: List<String> = emptyList(),
    /** How many status polls answered (for tests and the "last updated" hint). */
    val polls: Long = 0,
)

/**
 * The process-wide link between [VeilVpnService] (which owns the node) and the UI.
 *
 * The service calls [starting], [attach], [onEvent], [stopping], [detach] and [failed]; the UI
 * collects [state]. While at least one collector is subscribed (Compose's
 * `collectAsStateWithLifecycle` subscribes only while the activity is started), the bridge
 * polls `status()` and `peers()` every [pollMillis] on [io] and derives throughputs.
 */
class VeilBridge(
    private val scope: CoroutineScope,
    private val io: CoroutineDispatcher = Dispatchers.IO,
    private val pollMillis: Long = 1_000,
    private val clockNanos: () -> Long = System::nanoTime,
) {
    private val mutableState = MutableStateFlow(VeilState())

    /** What the UI shows; subscribing starts the polling, the last unsubscribe stops it. */
    val state: StateFlow<VeilState> = mutableState.asStateFlow()

    @Volatile
    private var node: VeilNodeInterface? = null
    private val meter = RateMeter()

    init {
        scope.launch {
            mutableState.subscriptionCount
                .map { it > 0 }
                .distinctUntilChanged()
                .collectLatest { visible ->
                    while (visible) {
                        pollOnce()
                        delay(pollMillis)
                    }
                }
        }
    }

    /** The service begins building a node (clears the previous error). */
    fun starting() {
        mutableState.update { VeilState(phase = Phase.STARTING, recentEvents = it.recentEvents) }
    }

    /** The node was started: polling and events now refer to it. */
    fun attach(node: VeilNodeInterface, publicKey: String?) {
        synchronized(meter) { meter.reset() }
        this.node = node
        mutableState.update {
            it.copy(phase = Phase.CONNECTING, message = null, publicKey = publicKey)
        }
    }

    /** One event of the attached node (from the service's `nextEvent()` loop). */
    fun onEvent(event: VeilEvent) {
        mutableState.update { reduce(it, event) }
    }

    /** `stop()` is being called. */
    fun stopping() {
        mutableState.update { if (it.phase == Phase.FAILED) it else it.copy(phase = Phase.STOPPING) }
    }

    /** The node is gone. An error seen before (Error event, [failed]) stays on screen. */
    fun detach() {
        node = null
        mutableState.update {
            it.copy(
                phase = if (it.phase == Phase.FAILED) Phase.FAILED else Phase.STOPPED,
                relayConnected = false,
                peers = emptyList(),
                txRate = null,
                rxRate = null,
                uptimeS = null,
            )
        }
    }

    /** Something failed (the node could not start, the permission was refused or revoked). */
    fun failed(message: String) {
        mutableState.update { it.copy(phase = Phase.FAILED, message = message) }
    }

    /**
     * Asks the attached node for its status and peers once and folds them into [state].
     * Returns false when there is no running node to ask.
     */
    suspend fun pollOnce(): Boolean {
        val n = node ?: return false
        val answer = withContext(io) {
            try {
                Result.success(n.status() to n.peers())
            } catch (e: VeilException) {
                Result.failure(e)
            } catch (e: IllegalStateException) {
                // The object was destroyed between the check and the call (service teardown).
                Result.failure(e)
            }
        }
        if (node !== n) return false
        val (status, peers) = answer.getOrElse { return false }
        val rates = synchronized(meter) { meter.update(peers, clockNanos()) }
        mutableState.update { withSnapshot(it, status, peers, rates) }
        return true
    }

    companion object {
        /** How many events [VeilState.recentEvents] keeps. */
        const val EVENT_LOG = 50

        /** The instance the service and the UI of this process share. */
        val shared: VeilBridge by lazy { VeilBridge(CoroutineScope(SupervisorJob() + Dispatchers.Default)) }

        /** The state after [event]: pure, so it is checked on the JVM. */
        fun reduce(state: VeilState, event: VeilEvent): VeilState {
            val s = state.copy(recentEvents = (state.recentEvents + describe(event)).takeLast(EVENT_LOG))
            return when (event) {
                is VeilEvent.Connected -> s.copy(
                    phase = if (s.phase == Phase.FAILED) s.phase else Phase.CONNECTED,
                    relay = event.relay,
                    relayConnected = true,
                )
                is VeilEvent.Disconnected -> s.copy(
                    phase = if (s.phase == Phase.CONNECTED) Phase.CONNECTING else s.phase,
                    relayConnected = false,
                )
                is VeilEvent.PeerUp -> s.copy(peers = s.peers.map { if (it.id == event.peer) it.copy(up = true) else it })
                is VeilEvent.PeerDown -> s.copy(peers = s.peers.map { if (it.id == event.peer) it.copy(up = false) else it })
                is VeilEvent.PathChanged -> s.copy(
                    peers = s.peers.map {
                        if (it.id == event.peer) it.copy(path = event.path, endpoint = event.endpoint, pmtu = event.pmtu) else it
                    },
                )
                is VeilEvent.SettingsChanged -> s.copy(overlayIpv4 = event.settings.ipv4Address)
                is VeilEvent.NameTaken -> s.copy(dnsName = event.name, nameTaken = true)
                is VeilEvent.Error -> s.copy(phase = Phase.FAILED, message = event.message)
                VeilEvent.Stopped -> s.copy(
                    phase = if (s.phase == Phase.FAILED) Phase.FAILED else Phase.STOPPED,
                    relayConnected = false,
                )
            }
        }

        /** A status and peers snapshot folded into [state]. */
        fun withSnapshot(
            state: VeilState,
            status: NodeStatus,
            peers: List<PeerInfo>,
            rates: Map<String, Pair<Double?, Double?>>,
        ): VeilState {
            val rows = peers.map { p ->
                val (tx, rx) = rates[p.id] ?: (null to null)
                PeerRow(
                    id = p.id,
                    name = p.name,
                    overlayIpv4 = p.overlayIpv4,
                    overlayIpv6 = p.overlayIpv6,
                    path = p.path,
                    relayReason = p.relayReason,
                    endpoint = p.endpoint,
                    pmtu = p.pmtu,
                    pmtuState = p.pmtuState,
                    rttMs = p.rttMs,
                    txBytes = p.txBytes,
                    rxBytes = p.rxBytes,
                    txRate = tx,
                    rxRate = rx,
                    cipher = p.cipher,
                )
            }
            fun total(pick: (PeerRow) -> Double?): Double? =
                rows.mapNotNull(pick).takeIf { it.isNotEmpty() }?.sum()
            val phase = when {
                state.phase == Phase.STOPPING || state.phase == Phase.FAILED || state.phase == Phase.STOPPED -> state.phase
                status.relayConnected -> Phase.CONNECTED
                else -> Phase.CONNECTING
            }
            return state.copy(
                phase = phase,
                nodeId = status.id,
                overlayIpv4 = status.overlayIpv4 ?: state.overlayIpv4,
                overlayIpv6 = status.overlayIpv6,
                relay = status.relay ?: state.relay,
                relayConnected = status.relayConnected,
                relayTransport = status.relayTransport,
                uptimeS = status.uptimeS,
                dnsName = status.name,
                nameTaken = status.nameTaken,
                peers = rows,
                txRate = total { it.txRate },
                rxRate = total { it.rxRate },
                polls = state.polls + 1,
            )
        }

        /** One line per event for the UI's event list and the log. */
        fun describe(event: VeilEvent): String = when (event) {
            is VeilEvent.Connected -> "connected to relay ${event.relay}"
            is VeilEvent.Disconnected -> "relay ${event.relay} stopped answering; retrying"
            is VeilEvent.PeerUp -> "peer ${event.peer} up"
            is VeilEvent.PeerDown -> "peer ${event.peer} down"
            is VeilEvent.PathChanged -> buildString {
                append("peer ${event.peer}: ${event.path}")
                event.endpoint?.let { append(" via $it") }
                event.pmtu?.let { append(", PMTU $it") }
            }
            is VeilEvent.SettingsChanged ->
                "interface rebuilt: ${event.settings.ipv4Address}/${event.settings.ipv4PrefixLen}"
            is VeilEvent.NameTaken -> "the name ${event.name} is held by another member; running without it"
            is VeilEvent.Error -> "error: ${event.message}"
            VeilEvent.Stopped -> "stopped"
        }
    }
}

/** Throughput per peer from successive byte counters. */
class RateMeter {
    private class Sample(val tx: ULong, val rx: ULong, val atNanos: Long)

    private val last = HashMap<String, Sample>()

    fun reset() = last.clear()

    /**
     * Bytes per second (sent, received) of each peer since its previous sample; null for a
     * peer seen for the first time. A counter that went down (the peer's session was
     * recreated) counts from zero.
     */
    fun update(peers: List<PeerInfo>, nowNanos: Long): Map<String, Pair<Double?, Double?>> {
        val out = HashMap<String, Pair<Double?, Double?>>()
        val seen = HashSet<String>()
        for (p in peers) {
            seen += p.id
            val prev = last[p.id]
            last[p.id] = Sample(p.txBytes, p.rxBytes, nowNanos)
            val dt = prev?.let { (nowNanos - it.atNanos) / 1e9 }
            out[p.id] = if (prev == null || dt == null || dt <= 0.0) {
                null to null
            } else {
                delta(prev.tx, p.txBytes) / dt to delta(prev.rx, p.rxBytes) / dt
            }
        }
        last.keys.retainAll(seen)
        return out
    }

    private fun delta(before: ULong, now: ULong): Double =
        if (now >= before) (now - before).toDouble() else now.toDouble()
}

/**
 * Decides which platform network callbacks are worth a `networkChanged()`: a network that
 * appeared or was lost, or whose addresses changed, after the first [settleNanos] (the
 * callbacks that report the networks present at registration are not changes).
 */
class UnderlayWatch(private val clockNanos: () -> Long, private val settleNanos: Long) {
    private val seen = HashMap<String, String>()
    private val since = clockNanos()

    /** Network [id] is now described by [signature] (its interface and addresses; null: lost). */
    @Synchronized
    fun update(id: String, signature: String?): Boolean {
        val before = if (signature == null) seen.remove(id) else seen.put(id, signature)
        return before != signature && clockNanos() - since >= settleNanos
    }
}

/**
 * The message to show for an error of the node. Rust puts the whole message (what was wrong,
 * what to do) in `detail`; `InvalidConfig` also names the field. The `when` is exhaustive on
 * purpose: a new kind of error in the bindings fails this build until it is handled here.
 */
fun VeilException.userMessage(): String = when (this) {
    is VeilException.InvalidConfig -> "Setting `$field` is not valid: $detail"
    is VeilException.InvalidToken -> detail
    is VeilException.SecretStore -> detail
    is VeilException.AlreadyRunning -> detail
    is VeilException.NotRunning -> detail
    is VeilException.Tun -> detail
    is VeilException.Network -> detail
    is VeilException.Internal -> detail
}.replaceFirstChar { it.uppercaseChar() }

/** Whether one of [routes] covers [address] (both literal IP addresses; false otherwise). */
fun routesCover(routes: List<IpRoute>, address: String): Boolean {
    val ip = parseIpLiteral(address) ?: return false
    return routes.any { r ->
        val net = parseIpLiteral(r.address) ?: return@any false
        if (net.size != ip.size) return@any false
        val bits = r.prefixLen.toInt().coerceAtMost(net.size * 8)
        (0 until bits).all { i ->
            val mask = 0x80 shr (i % 8)
            (net[i / 8].toInt() and mask) == (ip[i / 8].toInt() and mask)
        }
    }
}

/** The bytes of an IPv4 or IPv6 literal, or null for anything else (never a DNS lookup). */
fun parseIpLiteral(text: String): ByteArray? {
    val t = text.trim()
    val literal = t.isNotEmpty() && (t.contains(':') || t.all { it.isDigit() || it == '.' })
    if (!literal) return null
    return try {
        when (val a = InetAddress.getByName(t)) {
            is Inet4Address, is Inet6Address -> a.address
            else -> null
        }
    } catch (e: Exception) {
        null
    }
}

/** `1.5 MiB`. */
fun formatBytes(bytes: ULong): String {
    val units = listOf("B", "KiB", "MiB", "GiB", "TiB")
    var v = bytes.toDouble()
    var i = 0
    while (v >= 1024 && i < units.size - 1) {
        v /= 1024
        i++
    }
    return if (i == 0) "$bytes B" else String.format(Locale.ROOT, "%.1f %s", v, units[i])
}

/** `12.3 Mbit/s` from bytes per second; `-` when unknown. */
fun formatRate(bytesPerSecond: Double?): String {
    if (bytesPerSecond == null) return "-"
    val bits = bytesPerSecond * 8
    return when {
        bits >= 1e9 -> String.format(Locale.ROOT, "%.2f Gbit/s", bits / 1e9)
        bits >= 1e6 -> String.format(Locale.ROOT, "%.1f Mbit/s", bits / 1e6)
        bits >= 1e3 -> String.format(Locale.ROOT, "%.1f kbit/s", bits / 1e3)
        else -> String.format(Locale.ROOT, "%.0f bit/s", bits)
    }
}

/** `3 d 4 h`, `2 h 5 min`, `4 min 10 s`, `12 s`. */
fun formatDuration(seconds: ULong): String {
    val s = seconds.toLong()
    return when {
        s >= 86_400 -> "${s / 86_400} d ${s % 86_400 / 3_600} h"
        s >= 3_600 -> "${s / 3_600} h ${s % 3_600 / 60} min"
        s >= 60 -> "${s / 60} min ${s % 60} s"
        else -> "$s s"
    }
}

/** `14.2 ms`; `-` when unknown. */
fun formatRtt(ms: Double?): String = if (ms == null) "-" else String.format(Locale.ROOT, "%.1f ms", ms)
