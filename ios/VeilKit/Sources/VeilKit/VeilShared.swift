import Foundation

/// What the app and the extension must agree on. The identifiers come from the Info.plist of
/// the running bundle (both set them from the same build settings in `ios/project.yml`), so a
/// team changes `VEIL_BUNDLE_ID_PREFIX` once and nothing here.
public enum VeilShared {
    /// The App Group both processes share (`com.apple.security.application-groups`).
    public static var appGroup: String { info("VeilAppGroup") }

    /// The keychain access group both processes share (`keychain-access-groups`), team
    /// prefix included: `ABCDE12345.org.example.veil.shared`.
    public static var keychainGroup: String { info("VeilKeychainGroup") }

    /// The bundle identifier of the packet tunnel extension.
    public static var tunnelBundleID: String { info("VeilTunnelBundleID") }

    /// The keys of the join token and of this device's DNS name (optional) in
    /// `NETunnelProviderProtocol.providerConfiguration`.
    public static let tokenKey = "token"
    public static let nameKey = "name"

    /// Where the node remembers its overlay IPv4 and the newest policy: a directory in the
    /// App Group container (nil when the entitlement is missing).
    public static func stateDirectory() -> URL? {
        guard let container = FileManager.default.containerURL(
            forSecurityApplicationGroupIdentifier: appGroup)
        else { return nil }
        let dir = container.appendingPathComponent("veil", isDirectory: true)
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    private static func info(_ key: String) -> String {
        guard let value = Bundle.main.object(forInfoDictionaryKey: key) as? String, !value.isEmpty
        else { fatalError("\(key) is missing from Info.plist; see docs/ios.md") }
        return value
    }
}
