// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package net.veil.android;

// What AGP generates from android/app/src/main/res (only the entries the service uses).
public final class R {
    public static final class drawable {
        public static final int ic_stat_veil = 0x7f010000;
    }
    public static final class string {
        public static final int app_name = 0x7f020000;
        public static final int channel_name = 0x7f020001;
        public static final int disconnect = 0x7f020002;
    }
}
