// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.security.keystore;

import java.security.spec.AlgorithmParameterSpec;

public final class KeyGenParameterSpec implements AlgorithmParameterSpec {
    public static final class Builder {
        public Builder(String keystoreAlias, int purposes) { throw new RuntimeException("Stub!"); }
        public Builder setBlockModes(String... blockModes) { throw new RuntimeException("Stub!"); }
        public Builder setEncryptionPaddings(String... paddings) { throw new RuntimeException("Stub!"); }
        public Builder setKeySize(int keySize) { throw new RuntimeException("Stub!"); }
        public Builder setRandomizedEncryptionRequired(boolean required) { throw new RuntimeException("Stub!"); }
        public Builder setUserAuthenticationRequired(boolean required) { throw new RuntimeException("Stub!"); }
        public Builder setIsStrongBoxBacked(boolean isStrongBoxBacked) { throw new RuntimeException("Stub!"); }
        public KeyGenParameterSpec build() { throw new RuntimeException("Stub!"); }
    }
}
