import SwiftUI
import UIKit
import VeilKit

/// The one screen: the join token and device name, the switch, this device, and its peers.
struct ContentView: View {
    @StateObject private var tunnel = TunnelController()

    var body: some View {
        NavigationStack {
            Form {
                Section {
                    TextField("Join token", text: $tunnel.token, axis: .vertical)
                        .lineLimit(2...6)
                        .font(.footnote.monospaced())
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                        .disabled(tunnel.isOn)
                    Button("Paste token") { tunnel.token = UIPasteboard.general.string ?? "" }
                        .disabled(tunnel.isOn)
                    TextField("Device name (optional)", text: $tunnel.name)
                        .textInputAutocapitalization(.never)
                        .autocorrectionDisabled()
                        .disabled(tunnel.isOn)
                    Toggle("Connected", isOn: Binding(
                        get: { tunnel.isOn },
                        set: { on in Task { await tunnel.setOn(on) } }))
                    if let message = tunnel.message {
                        Text(message).font(.footnote).foregroundStyle(.red)
                    }
                } header: {
                    Text("Network")
                } footer: {
                    Text("veil \(veilVersion())")
                }
                if let status = tunnel.status {
                    Section("This device") {
                        LabeledContent("Address", value: status.overlayIpv4 ?? "waiting for the relay")
                        LabeledContent("IPv6", value: status.overlayIpv6)
                        if let name = status.name {
                            LabeledContent("Name", value: status.nameTaken ? "\(name) (taken by another member)" : name)
                        }
                        LabeledContent("Relay", value: relayText(status))
                        LabeledContent("Throughput",
                                       value: "↓ \(perSecond(tunnel.rate.rxPerSecond))  ↑ \(perSecond(tunnel.rate.txPerSecond))")
                        Text(status.publicKey).font(.caption2.monospaced()).textSelection(.enabled)
                    }
                    Section("Peers") {
                        if tunnel.peers.isEmpty {
                            Text("No peers yet").foregroundStyle(.secondary)
                        }
                        ForEach(tunnel.peers) { PeerRow(peer: $0) }
                    }
                }
            }
            .navigationTitle("Veil")
            .task { await tunnel.load() }
        }
    }

    private func relayText(_ status: StatusSnapshot) -> String {
        let state = status.relayConnected ? "up" : "down"
        let via = status.relayTransport.map { ", \($0)" } ?? ""
        let rtt = status.relayRttMs.map { String(format: ", %.0f ms", $0) } ?? ""
        return "\(status.relay ?? "none") (\(state)\(via)\(rtt))"
    }
}

/// One peer: id, overlay address, path (and why it is relayed), PMTU, RTT, traffic.
struct PeerRow: View {
    let peer: PeerSnapshot

    var body: some View {
        VStack(alignment: .leading, spacing: 2) {
            HStack {
                if let name = peer.name {
                    Text(name).font(.body)
                    Text(peer.id).font(.caption.monospaced()).foregroundStyle(.secondary)
                } else {
                    Text(peer.id).font(.body.monospaced())
                }
                Spacer()
                Text(pathText).foregroundStyle(.secondary)
            }
            Text(peer.overlayIpv4 ?? peer.overlayIpv6)
            Text("PMTU \(pmtuText) · RTT \(rttText)")
            Text("↑ \(byteText(peer.txBytes))  ↓ \(byteText(peer.rxBytes))")
        }
        .font(.caption)
    }

    private var pathText: String {
        peer.relayReason.map { "\(peer.path): \($0)" } ?? peer.path
    }

    private var pmtuText: String {
        peer.pmtu.map { "\($0)" } ?? peer.pmtuState
    }

    private var rttText: String {
        peer.rttMs.map { String(format: "%.0f ms", $0) } ?? "–"
    }
}

private func byteText(_ bytes: UInt64) -> String {
    ByteCountFormatter.string(fromByteCount: Int64(clamping: bytes), countStyle: .binary)
}

private func perSecond(_ bytes: Double) -> String {
    byteText(UInt64(max(bytes, 0))) + "/s"
}
