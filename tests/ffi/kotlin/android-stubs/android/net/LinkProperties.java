// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.net;

import java.util.List;

public final class LinkProperties {
    public String getInterfaceName() { throw new RuntimeException("Stub!"); }
    public List<LinkAddress> getLinkAddresses() { throw new RuntimeException("Stub!"); }
}
