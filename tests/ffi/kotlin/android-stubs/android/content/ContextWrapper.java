// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.content;

import android.content.pm.PackageManager;
import java.io.File;

public class ContextWrapper extends Context {
    public ContextWrapper(Context base) { throw new RuntimeException("Stub!"); }
    @Override public Context getApplicationContext() { throw new RuntimeException("Stub!"); }
    @Override public SharedPreferences getSharedPreferences(String name, int mode) { throw new RuntimeException("Stub!"); }
    @Override public PackageManager getPackageManager() { throw new RuntimeException("Stub!"); }
    @Override public String getPackageName() { throw new RuntimeException("Stub!"); }
    @Override public File getFilesDir() { throw new RuntimeException("Stub!"); }
    @Override public ComponentName startService(Intent service) { throw new RuntimeException("Stub!"); }
    @Override public Object getSystemService(String name) { throw new RuntimeException("Stub!"); }
}
