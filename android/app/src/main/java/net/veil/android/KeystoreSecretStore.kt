package net.veil.android

import android.content.Context
import android.content.SharedPreferences
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import java.security.KeyStore
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import uniffi.veil_ffi.SecretStore
import uniffi.veil_ffi.VeilException

/**
 * Veil's [SecretStore] on Android: each value (the node key `node-key`, the join token) is
 * encrypted with an AES-256-GCM key that lives in the Android Keystore (non-exportable,
 * hardware-backed where the device has it) and the ciphertext, with its IV, is kept in the
 * app's private SharedPreferences (format: [SecretSealing]).
 *
 * The key needs no user authentication: the VPN must come up at boot (always-on) and after
 * network changes without a prompt. It is usable once the device was unlocked after boot,
 * like the SharedPreferences file itself (credential-encrypted storage).
 *
 * Every failure reaches Rust as [VeilException.SecretStore] with a message that says what to do:
 * the node then refuses to start rather than making up a new identity.
 */
class KeystoreSecretStore(
    context: Context,
    private val keyAlias: String = DEFAULT_KEY_ALIAS,
    prefsName: String = DEFAULT_PREFS,
) : SecretStore {
    private val prefs: SharedPreferences =
        context.applicationContext.getSharedPreferences(prefsName, Context.MODE_PRIVATE)

    @Synchronized
    override fun load(name: String): ByteArray? {
        val text = prefs.getString(prefKey(name), null) ?: return null
        val key = guarded("read the Keystore key for `$name`") { existingKey() }
            ?: throw VeilException.SecretStore(
                "`$name` is stored but the Keystore key `$keyAlias` that encrypted it is gone " +
                    "(app data restored on another device, or the Keystore was reset); " +
                    "clear Veil's storage to give this device a new identity",
            )
        return guarded("decrypt `$name`") { SecretSealing.open(key, name, text) }
    }

    @Synchronized
    override fun store(name: String, value: ByteArray) {
        val text = guarded("encrypt `$name`") { SecretSealing.seal(key(), name, value) }
        if (!prefs.edit().putString(prefKey(name), text).commit()) {
            throw VeilException.SecretStore("could not write `$name` to the app's storage (is the disk full?)")
        }
    }

    /** Whether a value is stored under [name] (without decrypting it). */
    @Synchronized
    fun contains(name: String): Boolean = prefs.contains(prefKey(name))

    /** Forgets the value under [name] (for `node-key`: this device gets a new identity). */
    @Synchronized
    fun remove(name: String) {
        prefs.edit().remove(prefKey(name)).commit()
    }

    private fun keyStore(): KeyStore = KeyStore.getInstance(ANDROID_KEYSTORE).apply { load(null) }

    private fun existingKey(): SecretKey? = keyStore().getKey(keyAlias, null) as? SecretKey

    /** The Keystore key, made on first use. */
    private fun key(): SecretKey {
        existingKey()?.let { return it }
        val spec = KeyGenParameterSpec.Builder(
            keyAlias,
            KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT,
        )
            .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
            .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
            .setKeySize(256)
            .setRandomizedEncryptionRequired(true)
            .setUserAuthenticationRequired(false)
            .build()
        val generator = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, ANDROID_KEYSTORE)
        generator.init(spec)
        return generator.generateKey()
    }

    /** Runs [block], turning any failure (Keystore errors are often ProviderException) into
     * the error Rust expects. */
    private inline fun <T> guarded(what: String, block: () -> T): T =
        try {
            block()
        } catch (e: VeilException) {
            throw e
        } catch (e: Exception) {
            throw VeilException.SecretStore(
                "could not $what: ${e.javaClass.simpleName}: ${e.message}; " +
                    "if this persists, clear Veil's storage (the device gets a new identity)",
            )
        }

    companion object {
        const val ANDROID_KEYSTORE = "AndroidKeyStore"
        const val DEFAULT_KEY_ALIAS = "veil-secrets"
        const val DEFAULT_PREFS = "veil-secrets"

        /** The name the app keeps the join token under (the node keeps its key under `node-key`). */
        const val JOIN_TOKEN = "join-token"

        private fun prefKey(name: String) = "secret.$name"
    }
}
