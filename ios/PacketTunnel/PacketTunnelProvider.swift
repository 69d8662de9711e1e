import Foundation
import Network
import NetworkExtension
import os
import VeilKit

/// The packet tunnel: a Veil node on the utun interface NetworkExtension builds.
///
/// Start: the join token from the VPN configuration, a `VeilNode` whose key lives in the
/// Keychain shared with the app, the interface built from `tunnelSettings()`, its descriptor
/// found among the process's (`UtunDescriptor`) and handed to `start(tunFd:)`. Then the node's
/// events are read in a task, network changes are reported to the node, and the app's
/// messages are answered with the node's status and peers.
final class PacketTunnelProvider: NEPacketTunnelProvider {
    private let log = Logger(subsystem: "org.veil", category: "tunnel")
    /// Set by `startTunnel` before anything else reads it; kept until the process exits.
    private var node: VeilNode?
    /// The utun the node runs on.
    private var utun: (fd: Int32, name: String)?
    private var events: Task<Void, Never>?
    private let pathMonitor = NWPathMonitor()
    /// The last network seen by `pathMonitor` (touched on its queue only).
    private var lastPath: String?
    /// `stopTunnel` may come while `startTunnel` waits for the network settings.
    private var stopping = false

    override func startTunnel(options: [String: NSObject]?) async throws {
        let configuration = (protocolConfiguration as? NETunnelProviderProtocol)?.providerConfiguration
        guard let token = configuration?[VeilShared.tokenKey] as? String else {
            throw tunnelError("the VPN configuration has no join token; paste one in the app")
        }
        var config = defaultConfig()
        config.stateDir = VeilShared.stateDirectory()?.path
        if let name = configuration?[VeilShared.nameKey] as? String, !name.isEmpty {
            config.name = name  // members reach this device as NAME.veil
        }
        let node: VeilNode
        do {
            // No SocketProtector: on iOS the extension's own sockets never enter its tunnel.
            node = try VeilNode(
                token: token, config: config, secrets: KeychainSecretStore(), protector: nil,
                logger: OSLogSink())
        } catch {
            throw tunnelError(errorMessage(error))
        }
        self.node = node
        log.info("veil \(veilVersion(), privacy: .public), node key \(node.publicKey(), privacy: .public)")

        try await setTunnelNetworkSettings(NetworkSettings.make(from: node.tunnelSettings()))
        guard !stopping else {
            throw tunnelError("stopped while starting")
        }
        guard let utun = UtunDescriptor.find() else {
            throw tunnelError("the tunnel's utun descriptor was not found (see docs/ios.md)")
        }
        self.utun = utun
        do {
            try node.start(tunFd: utun.fd)
        } catch {
            throw tunnelError(errorMessage(error))
        }
        log.info("node started on \(utun.name, privacy: .public) (descriptor \(utun.fd))")
        events = Task { await self.readEvents(of: node) }
        watchNetwork(node)
    }

    override func stopTunnel(with reason: NEProviderStopReason) async {
        log.info("stopping (reason \(reason.rawValue))")
        stopping = true
        pathMonitor.cancel()
        node?.stop()  // tells the relay and the peers; returns within 5 s
        events?.cancel()  // it ends by itself at the node's `.stopped`; no need to wait
    }

    /// The app's questions: `TunnelRequest` names, answered with a JSON `TunnelReply`.
    override func handleAppMessage(_ messageData: Data) async -> Data? {
        TunnelReply.answer(messageData, node: node)
    }

    /// After sleep, NAT mappings may have expired and the network may be another one.
    override func wake() {
        node?.networkChanged()
    }

    /// Reads the node's events until it stops.
    private func readEvents(of node: VeilNode) async {
        while true {
            let event = await node.nextEvent()
            switch event {
            case .settingsChanged(let settings):
                await apply(settings, to: node)
            case .error(let message):
                log.error("node failed: \(message, privacy: .public)")
                cancelTunnelWithError(tunnelError(message))
            case .nameTaken(let name):
                log.warning("another member holds the name \(name, privacy: .public): running without one")
            case .stopped:
                return
            case .connected, .disconnected, .peerUp, .peerDown, .pathChanged:
                // The app polls status and peers; the node logs these itself.
                log.debug("\(String(describing: event), privacy: .public)")
            }
        }
    }

    /// The rendezvous gave another overlay IPv4 than the interface has: rebuild the interface.
    ///
    /// On iOS, `setTunnelNetworkSettings` reconfigures the tunnel's one utun in place (its
    /// addresses, routes, MTU and DNS) and leaves its descriptor open, so the node's duplicate
    /// of it keeps working and `setTun` is not needed. The descriptor is looked up again all
    /// the same: if NetworkExtension ever replaced the interface (another descriptor, or the
    /// same number now naming another utun), the node is moved to it with `setTun`, since its
    /// duplicate would still point at the old one.
    private func apply(_ settings: TunnelSettings, to node: VeilNode) async {
        do {
            try await setTunnelNetworkSettings(NetworkSettings.make(from: settings))
            log.info("interface now \(settings.ipv4Address, privacy: .public)/\(settings.ipv4PrefixLen)")
            guard let now = UtunDescriptor.find() else {
                throw tunnelError("the utun descriptor is gone after new network settings")
            }
            if now.fd != utun?.fd || now.name != utun?.name {
                log.info("utun replaced by \(now.name, privacy: .public): moving the node")
                try node.setTun(tunFd: now.fd)
                utun = now
            }
        } catch {
            log.error("new network settings failed: \(errorMessage(error), privacy: .public)")
            cancelTunnelWithError(error)
        }
    }

    /// Reports to the node when the device's network changes (Wi-Fi to cellular, another
    /// Wi-Fi, a new gateway): it re-reads its addresses and searches direct paths again.
    private func watchNetwork(_ node: VeilNode) {
        pathMonitor.pathUpdateHandler = { [self] path in
            // Our own utun (type .other) aside, so that re-applied settings do not count.
            let interfaces = path.availableInterfaces.filter { $0.type != .other }.map(\.name)
            let now = "\(path.status) \(interfaces) \(path.gateways)"
            defer { lastPath = now }
            guard let before = lastPath, before != now, path.status == .satisfied else { return }
            log.info("network changed: \(now, privacy: .public)")
            node.networkChanged()
        }
        pathMonitor.start(queue: DispatchQueue(label: "org.veil.path"))
    }

    /// An error the system keeps for the app (`fetchLastDisconnectError`): an NSError, whose
    /// description survives the trip between the processes.
    private func tunnelError(_ message: String) -> NSError {
        NSError(domain: "org.veil.tunnel", code: 1, userInfo: [NSLocalizedDescriptionKey: message])
    }
}
