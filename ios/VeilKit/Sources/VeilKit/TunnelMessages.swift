import Foundation

// The app asks the extension through `NETunnelProviderSession.sendProviderMessage`: the
// message is a request's name in UTF-8, the answer a JSON `TunnelReply`. The snapshots are
// plain Codable copies of the node's records (the generated records are not Codable).

/// What the app may ask the extension.
public enum TunnelRequest: String, CaseIterable {
    case status
    case peers
}

/// The extension's answer: one of the fields, or `error`.
public struct TunnelReply: Codable {
    public var status: StatusSnapshot?
    public var peers: [PeerSnapshot]?
    public var error: String?

    public init(status: StatusSnapshot? = nil, peers: [PeerSnapshot]? = nil, error: String? = nil) {
        self.status = status
        self.peers = peers
        self.error = error
    }

    /// Answers `message` from `node` (called by the extension's `handleAppMessage`).
    public static func answer(_ message: Data, node: VeilNode?) -> Data {
        let name = String(decoding: message, as: UTF8.self)
        let reply: TunnelReply
        if let node {
            do {
                switch TunnelRequest(rawValue: name) {
                case .status:
                    reply = TunnelReply(status: StatusSnapshot(try node.status(), publicKey: node.publicKey()))
                case .peers:
                    reply = TunnelReply(peers: try node.peers().map { PeerSnapshot($0) })
                case nil:
                    reply = TunnelReply(error: "unknown request \(name.debugDescription)")
                }
            } catch {
                reply = TunnelReply(error: errorMessage(error))
            }
        } else {
            reply = TunnelReply(error: "the tunnel has not started yet")
        }
        return (try? JSONEncoder().encode(reply)) ?? Data()
    }
}

/// `NodeStatus`, for the app's screen.
public struct StatusSnapshot: Codable, Equatable {
    public var id: String
    public var publicKey: String
    public var overlayIpv4: String?
    public var overlayIpv6: String
    public var relay: String?
    public var relayConnected: Bool
    public var relayRttMs: Double?
    public var relayTransport: String?
    public var privateMode: String
    public var name: String?
    public var nameTaken: Bool
    public var uptimeS: UInt64

    public init(_ s: NodeStatus, publicKey: String) {
        id = s.id
        self.publicKey = publicKey
        overlayIpv4 = s.overlayIpv4
        overlayIpv6 = s.overlayIpv6
        relay = s.relay
        relayConnected = s.relayConnected
        relayRttMs = s.relayRttMs
        relayTransport = s.relayTransport
        privateMode = s.private
        name = s.name
        nameTaken = s.nameTaken
        uptimeS = s.uptimeS
    }
}

/// `PeerInfo`, for the app's peer list.
public struct PeerSnapshot: Codable, Equatable, Identifiable {
    public var id: String
    public var name: String?
    public var overlayIpv4: String?
    public var overlayIpv6: String
    public var path: String
    public var relayReason: String?
    public var endpoint: String?
    public var rttMs: Double?
    public var pmtu: UInt32?
    public var pmtuState: String
    public var txBytes: UInt64
    public var rxBytes: UInt64
    public var cipher: String

    public init(_ p: PeerInfo) {
        id = p.id
        name = p.name
        overlayIpv4 = p.overlayIpv4
        overlayIpv6 = p.overlayIpv6
        path = p.path
        relayReason = p.relayReason
        endpoint = p.endpoint
        rttMs = p.rttMs
        pmtu = p.pmtu
        pmtuState = p.pmtuState
        txBytes = p.txBytes
        rxBytes = p.rxBytes
        cipher = p.cipher
    }
}

/// The text to show for an error of the node (its `detail` says what to do).
public func errorMessage(_ error: Error) -> String {
    guard let e = error as? VeilError else { return error.localizedDescription }
    switch e {
    case .InvalidConfig(let field, let detail):
        return "setting \(field): \(detail)"
    case .InvalidToken(let detail), .SecretStore(let detail), .AlreadyRunning(let detail),
         .NotRunning(let detail), .Tun(let detail), .Network(let detail), .Internal(let detail):
        return detail
    }
}
