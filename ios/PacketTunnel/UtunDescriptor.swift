import Darwin

/// Finds the descriptor of the utun interface NetworkExtension made for this extension.
///
/// `NEPacketTunnelFlow` does not expose it, but the extension's process holds it: a socket
/// connected to the kernel control `com.apple.net.utun_control` (its peer address is of
/// family `AF_SYSTEM`), whose `UTUN_OPT_IFNAME` option answers the interface's name,
/// `utunN`. No other descriptor answers both, so the scan tries every descriptor up to 1024
/// (the process has a few dozen) and takes the first that does. The descriptor belongs to
/// NetworkExtension: never close it (the node works on its own duplicate).
///
/// The other way to recognise it, comparing the peer's `sc_id` with the control id that the
/// `CTLIOCGINFO` ioctl gives for `com.apple.net.utun_control`, needs `struct ctl_info` and the
/// ioctl number, which the iOS SDK does not ship; asking the socket for its name needs
/// neither.
enum UtunDescriptor {
    // <sys/socket.h>, <sys/kern_control.h> and <net/if_utun.h> of the macOS SDK; the iOS SDK
    // lacks the last two.
    private static let afSystem: sa_family_t = 32  // AF_SYSTEM
    private static let sysprotoControl: Int32 = 2  // SYSPROTO_CONTROL
    private static let utunOptIfname: Int32 = 2  // UTUN_OPT_IFNAME

    /// The utun descriptor and its interface name, or nil before the tunnel's network
    /// settings were applied (NetworkExtension opens the interface then).
    static func find() -> (fd: Int32, name: String)? {
        for fd: Int32 in 0...1024 where isKernelControl(fd) {
            if let name = interfaceName(fd), name.hasPrefix("utun") {
                return (fd, name)
            }
        }
        return nil
    }

    /// Whether `fd` is a socket whose peer is a kernel control.
    private static func isKernelControl(_ fd: Int32) -> Bool {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let connected = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
        return connected && address.ss_family == afSystem
    }

    /// The name a utun control socket answers (`utun3`); nil for any other socket.
    private static func interfaceName(_ fd: Int32) -> String? {
        var name = [CChar](repeating: 0, count: 32)  // IFNAMSIZ is 16
        var length = socklen_t(name.count)
        guard getsockopt(fd, sysprotoControl, utunOptIfname, &name, &length) == 0 else {
            return nil
        }
        return String(cString: name)
    }
}
