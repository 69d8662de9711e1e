// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.app;

import android.content.Context;
import android.graphics.drawable.Icon;

public class Notification {
    public static class Builder {
        public Builder(Context context, String channelId) { throw new RuntimeException("Stub!"); }
        public Builder setSmallIcon(int icon) { throw new RuntimeException("Stub!"); }
        public Builder setContentTitle(CharSequence title) { throw new RuntimeException("Stub!"); }
        public Builder setContentText(CharSequence text) { throw new RuntimeException("Stub!"); }
        public Builder setOngoing(boolean ongoing) { throw new RuntimeException("Stub!"); }
        public Builder setContentIntent(PendingIntent intent) { throw new RuntimeException("Stub!"); }
        public Builder addAction(Action action) { throw new RuntimeException("Stub!"); }
        public Notification build() { throw new RuntimeException("Stub!"); }
    }

    public static class Action {
        public static final class Builder {
            @Deprecated public Builder(int icon, CharSequence title, PendingIntent intent) { throw new RuntimeException("Stub!"); }
            public Builder(Icon icon, CharSequence title, PendingIntent intent) { throw new RuntimeException("Stub!"); }
            public Action build() { throw new RuntimeException("Stub!"); }
        }
    }
}
