package net.veil.android

import androidx.compose.foundation.isSystemInDarkTheme
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.PaddingValues
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.Card
import androidx.compose.material3.LocalTextStyle
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.material3.darkColorScheme
import androidx.compose.material3.lightColorScheme
import androidx.compose.runtime.Composable
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.tooling.preview.Preview
import androidx.compose.ui.unit.dp

// The Compose UI: stateless, fed by MainActivity with VeilBridge's state. Everything it
// computes (rates, labels, formats) comes from VeilBridge.kt, which is tested on the JVM.

@Composable
fun VeilTheme(content: @Composable () -> Unit) {
    MaterialTheme(
        colorScheme = if (isSystemInDarkTheme()) darkColorScheme() else lightColorScheme(),
        content = content,
    )
}

@Composable
fun VeilScreen(
    state: VeilState,
    token: String,
    hasStoredToken: Boolean,
    version: String,
    onTokenChange: (String) -> Unit,
    onScan: () -> Unit,
    onConnectChange: (Boolean) -> Unit,
) {
    Scaffold { insets ->
        LazyColumn(
            modifier = Modifier
                .fillMaxSize()
                .padding(insets),
            contentPadding = PaddingValues(16.dp),
            verticalArrangement = Arrangement.spacedBy(12.dp),
        ) {
            item { Header(state, onConnectChange) }
            item { TokenCard(token, hasStoredToken, editable = !state.phase.active, onTokenChange, onScan) }
            item { StatusCard(state) }
            item {
                Text("Peers (${state.peers.size})", style = MaterialTheme.typography.titleMedium)
            }
            if (state.peers.isEmpty()) {
                item {
                    Text(
                        if (state.phase.active) "No peer sessions yet: they open when traffic flows." else "Not connected.",
                        style = MaterialTheme.typography.bodyMedium,
                        color = MaterialTheme.colorScheme.onSurfaceVariant,
                    )
                }
            }
            items(state.peers, key = { it.id }) { peer -> PeerCard(peer) }
            if (state.recentEvents.isNotEmpty()) {
                item { Text("Events", style = MaterialTheme.typography.titleMedium) }
                items(state.recentEvents.asReversed()) { line ->
                    Text(line, style = MaterialTheme.typography.bodySmall, fontFamily = FontFamily.Monospace)
                }
            }
            item {
                Text(
                    "Veil $version",
                    style = MaterialTheme.typography.labelSmall,
                    color = MaterialTheme.colorScheme.onSurfaceVariant,
                )
            }
        }
    }
}

@Composable
private fun Header(state: VeilState, onConnectChange: (Boolean) -> Unit) {
    // One root per lazy item: several would be drawn over each other.
    Column(verticalArrangement = Arrangement.spacedBy(4.dp)) {
        Row(verticalAlignment = Alignment.CenterVertically) {
            Column(modifier = Modifier.weight(1f)) {
                Text("Veil", style = MaterialTheme.typography.headlineSmall)
                Text(phaseLabel(state.phase), style = MaterialTheme.typography.bodyMedium)
            }
            Switch(
                checked = state.phase.active,
                onCheckedChange = onConnectChange,
                enabled = state.phase != Phase.STOPPING,
            )
        }
        state.message?.let {
            Text(it, color = MaterialTheme.colorScheme.error, style = MaterialTheme.typography.bodyMedium)
        }
    }
}

@Composable
private fun TokenCard(
    token: String,
    hasStoredToken: Boolean,
    editable: Boolean,
    onTokenChange: (String) -> Unit,
    onScan: () -> Unit,
) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(modifier = Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
            OutlinedTextField(
                value = token,
                onValueChange = onTokenChange,
                modifier = Modifier.fillMaxWidth(),
                enabled = editable,
                label = { Text("Join token") },
                placeholder = {
                    Text(if (hasStoredToken) "Saved token in use; paste another to replace it" else "veil1…")
                },
                textStyle = LocalTextStyle.current.copy(fontFamily = FontFamily.Monospace),
                maxLines = 4,
            )
            OutlinedButton(onClick = onScan, enabled = editable) { Text("Scan QR code") }
        }
    }
}

@Composable
private fun StatusCard(state: VeilState) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(modifier = Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Field("IPv4", state.overlayIpv4 ?: "-")
            Field("IPv6", state.overlayIpv6 ?: "-")
            Field(
                "Relay",
                state.relay?.let { r ->
                    val how = if (state.relayConnected) "up" else "not answering"
                    "$r ($how${state.relayTransport?.let { ", $it" } ?: ""})"
                } ?: "-",
            )
            Field("Node", state.nodeId ?: "-")
            state.dnsName?.let { Field("Name", if (state.nameTaken) "$it (held by another member)" else it) }
            Field("Uptime", state.uptimeS?.let { formatDuration(it) } ?: "-")
            Field("Traffic", "↑ ${formatRate(state.txRate)}   ↓ ${formatRate(state.rxRate)}")
            state.publicKey?.let { Field("Key", it.take(16) + "…") }
        }
    }
}

@Composable
private fun PeerCard(peer: PeerRow) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(modifier = Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(2.dp)) {
            Row(verticalAlignment = Alignment.CenterVertically) {
                Text(
                    peer.name ?: peer.id,
                    modifier = Modifier.weight(1f),
                    style = MaterialTheme.typography.titleSmall,
                    fontFamily = if (peer.name == null) FontFamily.Monospace else FontFamily.Default,
                )
                Text(
                    if (peer.up) "up" else "down",
                    style = MaterialTheme.typography.labelMedium,
                    color = if (peer.up) MaterialTheme.colorScheme.primary else MaterialTheme.colorScheme.error,
                )
            }
            Field("Address", peer.overlayAddress)
            Field("Path", peer.pathLabel)
            Field("PMTU", peer.pmtu?.let { "$it (${peer.pmtuState})" } ?: peer.pmtuState)
            Field("RTT", formatRtt(peer.rttMs))
            Field("Sent", "${formatBytes(peer.txBytes)}  ↑ ${formatRate(peer.txRate)}")
            Field("Received", "${formatBytes(peer.rxBytes)}  ↓ ${formatRate(peer.rxRate)}")
        }
    }
}

@Composable
private fun Field(label: String, value: String) {
    Row(modifier = Modifier.fillMaxWidth()) {
        Text(
            label,
            modifier = Modifier.width(84.dp),
            style = MaterialTheme.typography.bodyMedium,
            color = MaterialTheme.colorScheme.onSurfaceVariant,
        )
        Text(value, style = MaterialTheme.typography.bodyMedium, fontFamily = FontFamily.Monospace)
    }
}

private fun phaseLabel(phase: Phase): String = when (phase) {
    Phase.STOPPED -> "Disconnected"
    Phase.STARTING -> "Starting…"
    Phase.CONNECTING -> "Connecting to the relay…"
    Phase.CONNECTED -> "Connected"
    Phase.STOPPING -> "Disconnecting…"
    Phase.FAILED -> "Not connected"
}

@Preview(showBackground = true)
@Composable
private fun VeilScreenPreview() {
    val peer = PeerRow(
        id = "3f9a1c2e",
        name = "build-box",
        overlayIpv4 = "100.64.12.7",
        overlayIpv6 = "fd5e:1a2b:3c4d::7",
        path = "relayed",
        relayReason = "symmetric NAT on both sides",
        endpoint = null,
        pmtu = 1380u,
        pmtuState = "done",
        rttMs = 23.4,
        txBytes = 1_234_567u,
        rxBytes = 9_876_543u,
        txRate = 12_500.0,
        rxRate = 250_000.0,
        cipher = "aes-256-gcm",
    )
    VeilTheme {
        VeilScreen(
            state = VeilState(
                phase = Phase.CONNECTED,
                overlayIpv4 = "100.64.3.9",
                overlayIpv6 = "fd5e:1a2b:3c4d::3",
                relay = "relay.example:7000",
                relayConnected = true,
                relayTransport = "udp",
                nodeId = "a1b2c3d4",
                uptimeS = 3_725u,
                peers = listOf(peer),
                txRate = 12_500.0,
                rxRate = 250_000.0,
                recentEvents = listOf("connected to relay relay.example:7000", "peer 3f9a1c2e up"),
            ),
            token = "",
            hasStoredToken = true,
            version = "0.1.0",
            onTokenChange = {},
            onScan = {},
            onConnectChange = {},
        )
    }
}
