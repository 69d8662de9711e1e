import Foundation
import NetworkExtension
import VeilKit

/// The VPN configuration (`NETunnelProviderManager`) and what the running extension says,
/// for the screen. The join token lives in the configuration's `providerConfiguration`.
@MainActor
final class TunnelController: ObservableObject {
    @Published var token = ""
    /// This device's DNS name in the network (optional).
    @Published var name = ""
    @Published private(set) var state: NEVPNStatus = .invalid
    @Published private(set) var status: StatusSnapshot?
    @Published private(set) var peers: [PeerSnapshot] = []
    @Published private(set) var rate = Throughput()
    @Published private(set) var message: String?

    private var manager: NETunnelProviderManager?
    private var polling: Task<Void, Never>?
    private var observer: NSObjectProtocol?

    /// The switch: on while connecting, connected or reconnecting.
    var isOn: Bool { [.connecting, .connected, .reasserting].contains(state) }

    /// Loads the saved configuration (and its token), then follows the tunnel's state.
    func load() async {
        do {
            manager = try await NETunnelProviderManager.loadAllFromPreferences().first
        } catch {
            message = error.localizedDescription
        }
        let proto = manager?.protocolConfiguration as? NETunnelProviderProtocol
        if let saved = proto?.providerConfiguration?[VeilShared.tokenKey] as? String {
            token = saved
        }
        name = proto?.providerConfiguration?[VeilShared.nameKey] as? String ?? ""
        if observer == nil {  // `.task` runs again when the view reappears
            observer = NotificationCenter.default.addObserver(
                forName: .NEVPNStatusDidChange, object: nil, queue: .main
            ) { [weak self] _ in
                Task { @MainActor in await self?.stateChanged() }
            }
        }
        await stateChanged()
    }

    func setOn(_ on: Bool) async {
        message = nil
        do {
            if on {
                try await connect()
            } else {
                manager?.connection.stopVPNTunnel()
            }
        } catch {
            message = error.localizedDescription
        }
    }

    /// Saves the configuration with the pasted token and the name (the first time, iOS asks
    /// the user to allow the VPN) and starts the extension.
    private func connect() async throws {
        let token = self.token.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else {
            message = "Paste the join token that `veil network create` printed."
            return
        }
        let manager = self.manager ?? NETunnelProviderManager()
        let proto = NETunnelProviderProtocol()
        proto.providerBundleIdentifier = VeilShared.tunnelBundleID
        proto.serverAddress = "Veil"  // shown in Settings; the relays come from the token
        proto.providerConfiguration = [
            VeilShared.tokenKey: token,
            VeilShared.nameKey: name.trimmingCharacters(in: .whitespaces).lowercased(),
        ]
        manager.protocolConfiguration = proto
        manager.localizedDescription = "Veil"
        manager.isEnabled = true
        try await manager.saveToPreferences()
        try await manager.loadFromPreferences()  // a configuration just saved must be reloaded to start
        self.manager = manager
        try manager.connection.startVPNTunnel()
    }

    private func stateChanged() async {
        state = manager?.connection.status ?? .invalid
        if state == .connected {
            startPolling()
        } else {
            polling?.cancel()
            polling = nil
        }
        if state == .disconnected {
            status = nil
            peers = []
            rate = Throughput()
            // Why the extension stopped (a bad token, an unreachable relay), if it failed.
            do {
                try await manager?.connection.fetchLastDisconnectError()
            } catch {
                message = error.localizedDescription
            }
        }
    }

    /// Asks the extension for status and peers every second while connected.
    private func startPolling() {
        guard polling == nil else { return }
        polling = Task {
            while !Task.isCancelled {
                await poll()
                try? await Task.sleep(nanoseconds: 1_000_000_000)
            }
        }
    }

    private func poll() async {
        guard let session = manager?.connection as? NETunnelProviderSession else { return }
        let status = await ask(session, .status)
        let peers = await ask(session, .peers)
        message = status?.error ?? peers?.error
        if let snapshot = status?.status {
            self.status = snapshot
        }
        if let list = peers?.peers {
            self.peers = list
            rate.update(list)
        }
    }

    private func ask(_ session: NETunnelProviderSession, _ request: TunnelRequest) async -> TunnelReply? {
        await withCheckedContinuation { done in
            do {
                try session.sendProviderMessage(Data(request.rawValue.utf8)) { data in
                    done.resume(returning: data.flatMap { try? JSONDecoder().decode(TunnelReply.self, from: $0) })
                }
            } catch {
                done.resume(returning: nil)
            }
        }
    }
}

/// Bytes per second through the tunnel, from the peers' byte counters between two polls.
struct Throughput {
    private(set) var rxPerSecond = 0.0
    private(set) var txPerSecond = 0.0
    private var last: (time: Date, rx: UInt64, tx: UInt64)?

    mutating func update(_ peers: [PeerSnapshot], now: Date = Date()) {
        let rx = peers.reduce(UInt64(0)) { $0 + $1.rxBytes }
        let tx = peers.reduce(UInt64(0)) { $0 + $1.txBytes }
        if let last, now > last.time {
            let seconds = now.timeIntervalSince(last.time)
            // A peer that went away takes its counters along: never a negative rate.
            rxPerSecond = rx >= last.rx ? Double(rx - last.rx) / seconds : 0
            txPerSecond = tx >= last.tx ? Double(tx - last.tx) / seconds : 0
        }
        last = (now, rx, tx)
    }
}
