// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.net;

import java.net.InetAddress;

public final class IpPrefix {
    public IpPrefix(InetAddress address, int prefixLength) { throw new RuntimeException("Stub!"); }
}
