// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.content.pm;

import android.content.Intent;

public abstract class PackageManager {
    public abstract Intent getLaunchIntentForPackage(String packageName);
}
