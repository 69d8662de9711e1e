import Foundation
import Security

/// The node key in the Keychain, in an access group the app and the extension share, readable
/// after the first unlock (the tunnel may start at boot, or on demand, while the device is
/// locked). Never synchronised to iCloud: each device is its own node.
public final class KeychainSecretStore: SecretStore {
    private let service: String
    private let accessGroup: String

    public init(service: String = "org.veil.node", accessGroup: String = VeilShared.keychainGroup) {
        self.service = service
        self.accessGroup = accessGroup
    }

    public func load(name: String) throws -> Data? {
        var query = baseQuery(name)
        query[kSecReturnData as String] = true
        query[kSecMatchLimit as String] = kSecMatchLimitOne
        var item: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &item)
        switch status {
        case errSecSuccess: return item as? Data
        case errSecItemNotFound: return nil
        default: throw failure("reading", name, status)
        }
    }

    public func store(name: String, value: Data) throws {
        let attributes: [String: Any] = [
            kSecValueData as String: value,
            kSecAttrAccessible as String: kSecAttrAccessibleAfterFirstUnlock,
        ]
        var status = SecItemUpdate(baseQuery(name) as CFDictionary, attributes as CFDictionary)
        if status == errSecItemNotFound {
            let item = baseQuery(name).merging(attributes) { $1 }
            status = SecItemAdd(item as CFDictionary, nil)
        }
        guard status == errSecSuccess else { throw failure("storing", name, status) }
    }

    private func baseQuery(_ name: String) -> [String: Any] {
        [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: name,
            kSecAttrAccessGroup as String: accessGroup,
            kSecAttrSynchronizable as String: false,
        ]
    }

    private func failure(_ doing: String, _ name: String, _ status: OSStatus) -> VeilError {
        let text = SecCopyErrorMessageString(status, nil) as String? ?? "OSStatus \(status)"
        return VeilError.SecretStore(detail: """
            \(doing) `\(name)` in the Keychain (group \(accessGroup)) failed: \(text); \
            check the keychain-access-groups entitlement of the app and the extension
            """)
    }
}
