package net.veil.android

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.content.Context
import android.content.Intent
import android.content.pm.ServiceInfo
import android.net.ConnectivityManager
import android.net.IpPrefix
import android.net.LinkProperties
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import android.net.VpnService
import android.os.Build
import android.os.ParcelFileDescriptor
import android.util.Log
import java.io.File
import java.io.IOException
import java.net.InetAddress
import kotlinx.coroutines.CoroutineExceptionHandler
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext
import uniffi.veil_ffi.LogLevel
import uniffi.veil_ffi.LogSink
import uniffi.veil_ffi.SocketProtector
import uniffi.veil_ffi.TunnelSettings
import uniffi.veil_ffi.VeilEvent
import uniffi.veil_ffi.VeilException
import uniffi.veil_ffi.VeilNode
import uniffi.veil_ffi.defaultConfig

/**
 * Veil's VPN: builds the interface from the node's `tunnelSettings()`, hands its descriptor to
 * [VeilNode.start], keeps the node's sockets out of the tunnel with [VpnService.protect],
 * rebuilds the interface on `SettingsChanged`, tells the node when the underlying network
 * changes (Wi-Fi to cellular), and runs in the foreground with a notification.
 *
 * Started by the app ([connect], [disconnect]) or by the system (always-on VPN: action
 * `android.net.VpnService`, no token: the stored one is used).
 *
 * Threading: every call into the node blocks (up to seconds for `stop()`), so all of them run
 * on [Dispatchers.IO] under [control], never on the main thread and never from the node's own
 * callbacks ([protector], [AndroidLogSink]).
 */
class VeilVpnService : VpnService() {

    private val bridge: VeilBridge get() = VeilBridge.shared
    private val scope = CoroutineScope(
        SupervisorJob() + Dispatchers.IO + CoroutineExceptionHandler { _, e -> Log.e(TAG, "unexpected failure", e) },
    )

    /** Serializes start, rebuild and stop. */
    private val control = Mutex()

    // Written under `control`; `node` is also read by the network callback.
    @Volatile
    private var node: VeilNode? = null

    /** The interface the node runs on. Veil works on its own dup() of the descriptor, so this
     * stays ours to close when the interface is rebuilt or torn down. */
    private var tun: ParcelFileDescriptor? = null
    private var events: Job? = null
    private var networkCallback: ConnectivityManager.NetworkCallback? = null

    @Volatile
    private var networkJob: Job? = null

    /** Called on the node's threads; an exception thrown back into Rust would be a panic there,
     * so none is. */
    private val protector = object : SocketProtector {
        override fun protectSocket(fd: Int): Boolean =
            try {
                protect(fd)
            } catch (e: RuntimeException) {
                Log.e(TAG, "protect($fd) failed", e)
                false
            }
    }

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (intent?.action == ACTION_DISCONNECT) {
            scope.launch {
                shutdown(null)
                // Only if no connect arrived since (stopSelf(startId) checks).
                stopService(startId)
            }
            return START_NOT_STICKY
        }
        // ACTION_CONNECT from the app, SERVICE_INTERFACE from the system (always-on), or a
        // restart after the process was killed (null intent): the stored token is used when
        // the intent carries none.
        val token = intent?.getStringExtra(EXTRA_TOKEN)
        scope.launch { connect(token) }
        return START_STICKY
    }

    override fun onRevoke() {
        // The user revoked the permission or another VPN took over: the interface is gone.
        scope.launch {
            shutdown(null)
            bridge.failed("Disconnected: Android revoked Veil's VPN (another VPN started, or the permission was withdrawn)")
            stopService()
        }
    }

    override fun onDestroy() {
        scope.launch { shutdown(null) }.invokeOnCompletion { scope.cancel() }
        super.onDestroy()
    }

    private suspend fun connect(tokenFromIntent: String?) = control.withLock {
        if (node != null) return@withLock
        bridge.starting()
        var started: VeilNode? = null
        var pfd: ParcelFileDescriptor? = null
        try {
            val secrets = KeystoreSecretStore(applicationContext)
            val fresh = tokenFromIntent?.trim()?.takeIf { it.isNotEmpty() }
            val token = fresh
                ?: secrets.load(KeystoreSecretStore.JOIN_TOKEN)?.toString(Charsets.UTF_8)
                ?: throw SetupException("No join token: paste one in Veil and connect.")
            val stateDir = File(filesDir, "veil").apply { mkdirs() }
            val config = defaultConfig().copy(stateDir = stateDir.absolutePath)
            val n = VeilNode(token, config, secrets, protector, AndroidLogSink)
            started = n
            // The token decoded: keep it for restarts and always-on.
            if (fresh != null) secrets.store(KeystoreSecretStore.JOIN_TOKEN, fresh.toByteArray(Charsets.UTF_8))
            val settings = n.tunnelSettings()
            pfd = establish(settings)
                ?: throw SetupException(
                    "Android refused the VPN interface: open Veil and connect to grant the VPN permission " +
                        "(or turn off another app's always-on VPN).",
                )
            goForeground("Connecting…")
            n.start(pfd.fd)
            node = n
            tun = pfd
            bridge.attach(n, n.publicKey())
            events = scope.launch { pump(n) }
            watchNetworks(n)
            Log.i(TAG, "started on ${settings.ipv4Address} and ${settings.ipv6Address}")
        } catch (e: VeilException) {
            abandon(e.userMessage(), started, pfd)
        } catch (e: SetupException) {
            abandon(e.message ?: "could not start", started, pfd)
        } catch (e: RuntimeException) {
            // VpnService.Builder throws IllegalArgumentException for an address or route it
            // refuses, SecurityException/IllegalStateException when the VPN is not allowed.
            abandon("Could not build the VPN interface: $e", started, pfd)
        }
    }

    /** A start that failed half-way: undo it and stop the service. Called under `control`. */
    private suspend fun abandon(message: String, n: VeilNode?, pfd: ParcelFileDescriptor?) {
        Log.e(TAG, message)
        withContext(NonCancellable) {
            n?.stop()
            n?.close()
            closeQuietly(pfd)
        }
        bridge.failed(message)
        stopService()
    }

    /** Waits for the node's events until it stops. */
    private suspend fun pump(n: VeilNode) {
        while (true) {
            val event = n.nextEvent()
            bridge.onEvent(event)
            when (event) {
                is VeilEvent.SettingsChanged -> rebuild(n, event.settings)
                is VeilEvent.Connected -> updateNotification("Connected to ${event.relay}")
                is VeilEvent.Disconnected -> updateNotification("Relay not answering; retrying…")
                is VeilEvent.PeerUp, is VeilEvent.PeerDown, is VeilEvent.PathChanged -> Unit
                is VeilEvent.NameTaken -> Log.w(TAG, VeilBridge.describe(event))
                is VeilEvent.Error -> Log.e(TAG, event.message)
                VeilEvent.Stopped -> {
                    // After our stop() this is a no-op; after an Error it tears the service down.
                    scope.launch {
                        if (shutdown(n)) stopService()
                    }
                    return
                }
            }
        }
    }

    /** The node wants another interface (the rendezvous gave another overlay IPv4). */
    private suspend fun rebuild(n: VeilNode, settings: TunnelSettings) = control.withLock {
        if (node !== n) return@withLock
        val fresh = try {
            establish(settings)
        } catch (e: RuntimeException) {
            Log.e(TAG, "could not rebuild the interface", e)
            null
        }
        if (fresh == null) {
            bridge.failed("Could not rebuild the VPN interface for ${settings.ipv4Address}; disconnect and connect again.")
            return@withLock
        }
        try {
            n.setTun(fresh.fd)
        } catch (e: VeilException) {
            closeQuietly(fresh)
            bridge.failed(e.userMessage())
            return@withLock
        }
        val old = tun
        tun = fresh
        closeQuietly(old)
        Log.i(TAG, "interface rebuilt for ${settings.ipv4Address}/${settings.ipv4PrefixLen}")
    }

    /**
     * Stops the node ([only]: only if it is still that one) and closes the interface.
     * Returns whether there was something to stop.
     */
    private suspend fun shutdown(only: VeilNode?): Boolean = control.withLock {
        val n = node ?: return@withLock false
        if (only != null && only !== n) return@withLock false
        node = null
        unwatchNetworks()
        bridge.stopping()
        withContext(NonCancellable) {
            n.stop() // the relay and peers are told; returns within a few seconds
            events?.cancel()
            events = null
            n.close() // frees the Rust object (its runtime threads end)
            closeQuietly(tun)
            tun = null
        }
        bridge.detach()
        Log.i(TAG, "stopped")
        true
    }

    /** Builds the interface the node asked for; null when the VPN is not prepared. */
    private fun establish(s: TunnelSettings): ParcelFileDescriptor? {
        val builder = Builder()
            .setSession("Veil")
            .setMtu(s.mtu.toInt())
            .addAddress(s.ipv4Address, s.ipv4PrefixLen.toInt())
            .addAddress(s.ipv6Address, s.ipv6PrefixLen.toInt())
            .setBlocking(false)
        for (r in s.routes) builder.addRoute(r.address, r.prefixLen.toInt())
        for (dns in s.dnsServers) builder.addDnsServer(dns)
        // Not s.overlayDnsServer: it answers only names under s.overlayDnsDomain and refuses
        // the rest, and VpnService has no per-domain DNS (iOS's matchDomains), so as the
        // interface's resolver it would break every other name. See docs/android.md.
        if (Build.VERSION.SDK_INT >= 33) {
            // The relays never go into the tunnel (Veil's sockets are protected anyway; this
            // only matters when a route would cover a relay).
            for (x in s.excludedRoutes) {
                if (routesCover(s.routes, x.address)) {
                    builder.excludeRoute(IpPrefix(InetAddress.getByName(x.address), x.prefixLen.toInt()))
                }
            }
        }
        packageManager.getLaunchIntentForPackage(packageName)?.let {
            builder.setConfigureIntent(PendingIntent.getActivity(this, 0, it, PendingIntent.FLAG_IMMUTABLE))
        }
        return builder.establish()
    }

    /** Calls `networkChanged()` when a non-VPN network appears, goes, or changes address. */
    private fun watchNetworks(n: VeilNode) {
        val cm = getSystemService(ConnectivityManager::class.java) ?: return
        val watch = UnderlayWatch(System::nanoTime, NETWORK_SETTLE_MS * 1_000_000)
        val callback = object : ConnectivityManager.NetworkCallback() {
            override fun onAvailable(network: Network) = seen(network, cm.getLinkProperties(network))

            override fun onLinkPropertiesChanged(network: Network, linkProperties: LinkProperties) =
                seen(network, linkProperties)

            override fun onLost(network: Network) {
                if (watch.update(network.toString(), null)) changed()
            }

            private fun seen(network: Network, lp: LinkProperties?) {
                val signature = lp?.let { p ->
                    "${p.interfaceName} " + p.linkAddresses.map { it.toString() }.sorted().joinToString(",")
                } ?: ""
                if (watch.update(network.toString(), signature)) changed()
            }

            private fun changed() {
                networkJob?.cancel()
                networkJob = scope.launch {
                    delay(NETWORK_DEBOUNCE_MS) // a handover reports several changes at once
                    if (node === n) {
                        Log.i(TAG, "underlying network changed")
                        try {
                            n.networkChanged()
                        } catch (e: IllegalStateException) {
                            // destroyed by a concurrent shutdown
                        }
                    }
                }
            }
        }
        val request = NetworkRequest.Builder()
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_VPN)
            .build()
        try {
            cm.registerNetworkCallback(request, callback)
            networkCallback = callback
        } catch (e: RuntimeException) {
            Log.w(TAG, "no network callbacks: $e")
        }
    }

    private fun unwatchNetworks() {
        networkJob?.cancel()
        val callback = networkCallback ?: return
        networkCallback = null
        try {
            getSystemService(ConnectivityManager::class.java)?.unregisterNetworkCallback(callback)
        } catch (e: RuntimeException) {
            Log.w(TAG, "unregistering the network callback: $e")
        }
    }

    private fun notification(text: String): Notification {
        val manager = getSystemService(NotificationManager::class.java)
        manager?.createNotificationChannel(
            NotificationChannel(CHANNEL_ID, getString(R.string.channel_name), NotificationManager.IMPORTANCE_LOW),
        )
        val disconnect = PendingIntent.getService(
            this,
            1,
            Intent(this, VeilVpnService::class.java).setAction(ACTION_DISCONNECT),
            PendingIntent.FLAG_IMMUTABLE,
        )
        val builder = Notification.Builder(this, CHANNEL_ID)
            .setSmallIcon(R.drawable.ic_stat_veil)
            .setContentTitle(getString(R.string.app_name))
            .setContentText(text)
            .setOngoing(true)
            .addAction(Notification.Action.Builder(null, getString(R.string.disconnect), disconnect).build())
        packageManager.getLaunchIntentForPackage(packageName)?.let {
            builder.setContentIntent(PendingIntent.getActivity(this, 0, it, PendingIntent.FLAG_IMMUTABLE))
        }
        return builder.build()
    }

    private fun goForeground(text: String) {
        val n = notification(text)
        try {
            if (Build.VERSION.SDK_INT >= 34) {
                // Allowed for an app whose VPN is active, which it is once establish() returned.
                startForeground(NOTIFICATION_ID, n, ServiceInfo.FOREGROUND_SERVICE_TYPE_SYSTEM_EXEMPTED)
            } else {
                startForeground(NOTIFICATION_ID, n)
            }
        } catch (e: RuntimeException) {
            // The VPN binding keeps the process alive anyway; only the notification is missing.
            Log.w(TAG, "could not run in the foreground: $e")
        }
    }

    private fun updateNotification(text: String) {
        if (node == null) return
        getSystemService(NotificationManager::class.java)?.notify(NOTIFICATION_ID, notification(text))
    }

    /** Leaves the foreground and stops; [startId]: only if that was the latest start request. */
    private suspend fun stopService(startId: Int? = null) = withContext(Dispatchers.Main) {
        if (node == null) stopForeground(STOP_FOREGROUND_REMOVE)
        if (startId != null) stopSelf(startId) else stopSelf()
    }

    private fun closeQuietly(pfd: ParcelFileDescriptor?) {
        try {
            pfd?.close()
        } catch (e: IOException) {
            Log.w(TAG, "closing the interface: $e")
        }
    }

    private class SetupException(message: String) : Exception(message)

    companion object {
        const val ACTION_CONNECT = "net.veil.android.action.CONNECT"
        const val ACTION_DISCONNECT = "net.veil.android.action.DISCONNECT"
        const val EXTRA_TOKEN = "net.veil.android.extra.TOKEN"
        private const val TAG = "VeilVpnService"
        private const val CHANNEL_ID = "veil"
        private const val NOTIFICATION_ID = 1
        private const val NETWORK_SETTLE_MS = 2_000L
        private const val NETWORK_DEBOUNCE_MS = 500L

        /** Starts (or keeps) the VPN; [token] null: the stored one. Call after [VpnService.prepare]
         * returned null or its activity returned RESULT_OK, from a foreground activity. */
        fun connect(context: Context, token: String?) {
            val intent = Intent(context, VeilVpnService::class.java).setAction(ACTION_CONNECT)
            if (token != null) intent.putExtra(EXTRA_TOKEN, token)
            context.startService(intent)
        }

        /** Stops the VPN. */
        fun disconnect(context: Context) {
            context.startService(Intent(context, VeilVpnService::class.java).setAction(ACTION_DISCONNECT))
        }
    }
}

/** The node's logs into logcat (tag `veil`). Never throws: an exception thrown back into Rust
 * from a callback is a panic on the node's thread (it fails `start()` with InternalException). */
object AndroidLogSink : LogSink {
    private const val TAG = "veil"

    override fun log(level: LogLevel, target: String, message: String) {
        try {
            val text = "$target: $message"
            when (level) {
                LogLevel.ERROR -> Log.e(TAG, text)
                LogLevel.WARN -> Log.w(TAG, text)
                LogLevel.INFO -> Log.i(TAG, text)
                LogLevel.DEBUG -> Log.d(TAG, text)
                LogLevel.TRACE -> Log.v(TAG, text)
            }
        } catch (e: Throwable) {
            // A log line is not worth failing the node's thread for.
        }
    }
}
