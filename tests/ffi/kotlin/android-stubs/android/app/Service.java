// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.app;

import android.content.ContextWrapper;
import android.content.Intent;

public abstract class Service extends ContextWrapper {
    public static final int START_NOT_STICKY = 2;
    public static final int START_STICKY = 1;
    public static final int STOP_FOREGROUND_REMOVE = 1;
    public static final int STOP_FOREGROUND_DETACH = 2;

    public Service() { super(null); throw new RuntimeException("Stub!"); }
    public void onCreate() { throw new RuntimeException("Stub!"); }
    public int onStartCommand(Intent intent, int flags, int startId) { throw new RuntimeException("Stub!"); }
    public void onDestroy() { throw new RuntimeException("Stub!"); }
    public final void stopSelf() { throw new RuntimeException("Stub!"); }
    public final void stopSelf(int startId) { throw new RuntimeException("Stub!"); }
    public final void startForeground(int id, Notification notification) { throw new RuntimeException("Stub!"); }
    public final void startForeground(int id, Notification notification, int foregroundServiceType) { throw new RuntimeException("Stub!"); }
    @Deprecated public final void stopForeground(boolean removeNotification) { throw new RuntimeException("Stub!"); }
    public final void stopForeground(int notificationBehavior) { throw new RuntimeException("Stub!"); }
}
