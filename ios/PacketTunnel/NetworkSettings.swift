import NetworkExtension
import VeilKit

/// The interface NetworkExtension builds from the node's `TunnelSettings`: the overlay
/// addresses, routes into the tunnel for the overlay prefixes only, the relays excluded, the
/// MTU, and DNS: the overlay's names, or the resolvers the configuration names.
enum NetworkSettings {
    static func make(from settings: TunnelSettings) -> NEPacketTunnelNetworkSettings {
        // Shown as the server in Settings; any address works, the relay's is the honest one.
        let remote = settings.excludedRoutes.first?.address ?? "127.0.0.1"
        let network = NEPacketTunnelNetworkSettings(tunnelRemoteAddress: remote)

        let ipv4 = NEIPv4Settings(
            addresses: [settings.ipv4Address], subnetMasks: [mask(settings.ipv4PrefixLen)])
        ipv4.includedRoutes = ipv4Routes(settings.routes)
        ipv4.excludedRoutes = ipv4Routes(settings.excludedRoutes)
        network.ipv4Settings = ipv4

        let ipv6 = NEIPv6Settings(
            addresses: [settings.ipv6Address],
            networkPrefixLengths: [NSNumber(value: settings.ipv6PrefixLen)])
        ipv6.includedRoutes = ipv6Routes(settings.routes)
        ipv6.excludedRoutes = ipv6Routes(settings.excludedRoutes)
        network.ipv6Settings = ipv6

        network.mtu = NSNumber(value: settings.mtu)
        network.dnsSettings = dns(settings)
        return network
    }

    /// A tunnel has one `NEDNSSettings`. Resolvers named in the configuration answer every
    /// name (`matchDomains` [""]); otherwise the node's own resolver gets its domain alone
    /// (`*.veil`: it refuses other names), and the system's resolvers keep the rest.
    private static func dns(_ settings: TunnelSettings) -> NEDNSSettings? {
        if !settings.dnsServers.isEmpty {
            let dns = NEDNSSettings(servers: settings.dnsServers)
            dns.matchDomains = [""]
            return dns
        }
        guard let server = settings.overlayDnsServer else { return nil }
        let dns = NEDNSSettings(servers: [server])
        dns.matchDomains = [settings.overlayDnsDomain]
        return dns
    }

    private static func ipv4Routes(_ routes: [IpRoute]) -> [NEIPv4Route] {
        routes.filter { !$0.address.contains(":") }
            .map { NEIPv4Route(destinationAddress: $0.address, subnetMask: mask($0.prefixLen)) }
    }

    private static func ipv6Routes(_ routes: [IpRoute]) -> [NEIPv6Route] {
        routes.filter { $0.address.contains(":") }
            .map {
                NEIPv6Route(
                    destinationAddress: $0.address,
                    networkPrefixLength: NSNumber(value: $0.prefixLen))
            }
    }

    /// `255.192.0.0` for 10.
    static func mask(_ prefixLen: UInt8) -> String {
        let bits: UInt32 = prefixLen == 0 ? 0 : ~UInt32(0) << (32 - UInt32(min(prefixLen, 32)))
        return [24, 16, 8, 0].map { String((bits >> $0) & 0xff) }.joined(separator: ".")
    }
}
