// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.net;

public final class NetworkCapabilities {
    public static final int NET_CAPABILITY_INTERNET = 12;
    public static final int NET_CAPABILITY_NOT_VPN = 15;
}
