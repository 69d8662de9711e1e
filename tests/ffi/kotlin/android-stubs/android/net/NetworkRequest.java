// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.net;

public class NetworkRequest {
    public static class Builder {
        public Builder() { throw new RuntimeException("Stub!"); }
        public Builder addCapability(int capability) { throw new RuntimeException("Stub!"); }
        public Builder removeCapability(int capability) { throw new RuntimeException("Stub!"); }
        public NetworkRequest build() { throw new RuntimeException("Stub!"); }
    }
}
