// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.net;

public class ConnectivityManager {
    public LinkProperties getLinkProperties(Network network) { throw new RuntimeException("Stub!"); }
    public void registerNetworkCallback(NetworkRequest request, NetworkCallback networkCallback) { throw new RuntimeException("Stub!"); }
    public void registerDefaultNetworkCallback(NetworkCallback networkCallback) { throw new RuntimeException("Stub!"); }
    public void unregisterNetworkCallback(NetworkCallback networkCallback) { throw new RuntimeException("Stub!"); }

    public static class NetworkCallback {
        public NetworkCallback() { throw new RuntimeException("Stub!"); }
        public void onAvailable(Network network) { throw new RuntimeException("Stub!"); }
        public void onLost(Network network) { throw new RuntimeException("Stub!"); }
        public void onCapabilitiesChanged(Network network, NetworkCapabilities networkCapabilities) { throw new RuntimeException("Stub!"); }
        public void onLinkPropertiesChanged(Network network, LinkProperties linkProperties) { throw new RuntimeException("Stub!"); }
    }
}
