// Compile-only stub of the Android SDK for scripts/test-kotlin.sh: only the members the app's
// VeilVpnService.kt / KeystoreSecretStore.kt use, with their real signatures. Never run.
package android.net;

import android.app.PendingIntent;
import android.app.Service;
import android.content.Context;
import android.content.Intent;
import android.os.ParcelFileDescriptor;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.Socket;

public class VpnService extends Service {
    public static final String SERVICE_INTERFACE = "android.net.VpnService";

    public VpnService() { throw new RuntimeException("Stub!"); }
    public static Intent prepare(Context context) { throw new RuntimeException("Stub!"); }
    public boolean protect(int socket) { throw new RuntimeException("Stub!"); }
    public boolean protect(Socket socket) { throw new RuntimeException("Stub!"); }
    public boolean protect(DatagramSocket socket) { throw new RuntimeException("Stub!"); }
    public void onRevoke() { throw new RuntimeException("Stub!"); }

    // A (non-static) inner class, as in the SDK: `Builder()` inside the service.
    public class Builder {
        public Builder() { throw new RuntimeException("Stub!"); }
        public Builder setSession(String session) { throw new RuntimeException("Stub!"); }
        public Builder setConfigureIntent(PendingIntent intent) { throw new RuntimeException("Stub!"); }
        public Builder setMtu(int mtu) { throw new RuntimeException("Stub!"); }
        public Builder addAddress(InetAddress address, int prefixLength) { throw new RuntimeException("Stub!"); }
        public Builder addAddress(String address, int prefixLength) { throw new RuntimeException("Stub!"); }
        public Builder addRoute(InetAddress address, int prefixLength) { throw new RuntimeException("Stub!"); }
        public Builder addRoute(String address, int prefixLength) { throw new RuntimeException("Stub!"); }
        public Builder addRoute(IpPrefix prefix) { throw new RuntimeException("Stub!"); }
        public Builder excludeRoute(IpPrefix prefix) { throw new RuntimeException("Stub!"); }
        public Builder addDnsServer(InetAddress address) { throw new RuntimeException("Stub!"); }
        public Builder addDnsServer(String address) { throw new RuntimeException("Stub!"); }
        public Builder setBlocking(boolean blocking) { throw new RuntimeException("Stub!"); }
        public Builder setMetered(boolean isMetered) { throw new RuntimeException("Stub!"); }
        public ParcelFileDescriptor establish() { throw new RuntimeException("Stub!"); }
    }
}
