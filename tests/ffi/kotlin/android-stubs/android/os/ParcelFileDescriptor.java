// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.os;

import java.io.Closeable;
import java.io.IOException;

public class ParcelFileDescriptor implements Closeable {
    public int getFd() { throw new RuntimeException("Stub!"); }
    public int detachFd() { throw new RuntimeException("Stub!"); }
    @Override public void close() throws IOException { throw new RuntimeException("Stub!"); }
}
