// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.app;

import android.content.Context;
import android.content.Intent;

public final class PendingIntent {
    public static final int FLAG_IMMUTABLE = 67108864;
    public static final int FLAG_UPDATE_CURRENT = 134217728;
    public static PendingIntent getActivity(Context context, int requestCode, Intent intent, int flags) { throw new RuntimeException("Stub!"); }
    public static PendingIntent getService(Context context, int requestCode, Intent intent, int flags) { throw new RuntimeException("Stub!"); }
}
