// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.util;

public final class Log {
    public static int v(String tag, String msg) { throw new RuntimeException("Stub!"); }
    public static int d(String tag, String msg) { throw new RuntimeException("Stub!"); }
    public static int i(String tag, String msg) { throw new RuntimeException("Stub!"); }
    public static int w(String tag, String msg) { throw new RuntimeException("Stub!"); }
    public static int w(String tag, String msg, Throwable tr) { throw new RuntimeException("Stub!"); }
    public static int e(String tag, String msg) { throw new RuntimeException("Stub!"); }
    public static int e(String tag, String msg, Throwable tr) { throw new RuntimeException("Stub!"); }
}
