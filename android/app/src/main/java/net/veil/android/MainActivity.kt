package net.veil.android

import android.Manifest
import android.content.ActivityNotFoundException
import android.content.Intent
import android.content.pm.PackageManager
import android.net.VpnService
import android.os.Build
import android.os.Bundle
import android.widget.Toast
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import uniffi.veil_ffi.veilVersion

/**
 * The one screen: paste (or scan) a join token, flip the switch, watch the peers.
 *
 * Connecting follows Android's VPN consent flow: [VpnService.prepare] returns an intent the
 * first time (the system's "allow Veil to set up a VPN?" dialog), and null once allowed; then
 * [VeilVpnService.connect] starts the service with the token. The screen only shows
 * [VeilBridge.state], which polls the node while this activity is started.
 */
class MainActivity : ComponentActivity() {
    private val bridge: VeilBridge get() = VeilBridge.shared

    /** What the token field holds (not yet saved: the service saves a token once it decodes). */
    private var token by mutableStateOf("")

    /** Whether a token is saved in the Keystore-backed store (the field may stay empty then). */
    private var hasStoredToken by mutableStateOf(false)

    /** The token to connect with once the consent dialog returns (null: the saved one). */
    private var pendingToken: String? = null

    private val vpnConsent =
        registerForActivityResult(ActivityResultContracts.StartActivityForResult()) { result ->
            if (result.resultCode == RESULT_OK) {
                VeilVpnService.connect(this, pendingToken)
            } else {
                bridge.failed("Veil needs Android's permission to set up a VPN to connect.")
            }
            pendingToken = null
        }

    private val scanner =
        registerForActivityResult(ActivityResultContracts.StartActivityForResult()) { result ->
            val text = result.data?.getStringExtra(SCAN_RESULT)
            if (result.resultCode == RESULT_OK && !text.isNullOrBlank()) token = text.trim()
        }

    private val notificationPermission =
        registerForActivityResult(ActivityResultContracts.RequestPermission()) { /* optional */ }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        token = savedInstanceState?.getString(STATE_TOKEN) ?: ""
        if (Build.VERSION.SDK_INT >= 33 &&
            checkSelfPermission(Manifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED
        ) {
            notificationPermission.launch(Manifest.permission.POST_NOTIFICATIONS)
        }
        val version = veilVersion()
        setContent {
            val state by bridge.state.collectAsStateWithLifecycle()
            VeilTheme {
                VeilScreen(
                    state = state,
                    token = token,
                    hasStoredToken = hasStoredToken,
                    version = version,
                    onTokenChange = { token = it },
                    onScan = ::scanQr,
                    onConnectChange = { on -> if (on) connect() else VeilVpnService.disconnect(this) },
                )
            }
        }
    }

    override fun onResume() {
        super.onResume()
        hasStoredToken = KeystoreSecretStore(applicationContext).contains(KeystoreSecretStore.JOIN_TOKEN)
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        outState.putString(STATE_TOKEN, token)
    }

    private fun connect() {
        val fresh = token.trim().ifEmpty { null }
        if (fresh == null && !hasStoredToken) {
            bridge.failed("Paste a join token (or scan its QR code) first.")
            return
        }
        val consent = VpnService.prepare(this)
        if (consent == null) {
            VeilVpnService.connect(this, fresh)
        } else {
            pendingToken = fresh
            vpnConsent.launch(consent)
        }
    }

    /** Asks a QR scanner app (the ZXing "Barcode Scanner" intent) for the token, if one is there. */
    private fun scanQr() {
        val intent = Intent(SCAN_ACTION).putExtra("SCAN_MODE", "QR_CODE_MODE")
        try {
            scanner.launch(intent)
        } catch (e: ActivityNotFoundException) {
            Toast.makeText(this, "No QR scanner app is installed; paste the token instead.", Toast.LENGTH_LONG).show()
        }
    }

    private companion object {
        const val SCAN_ACTION = "com.google.zxing.client.android.SCAN"
        const val SCAN_RESULT = "SCAN_RESULT"
        const val STATE_TOKEN = "token"
    }
}
