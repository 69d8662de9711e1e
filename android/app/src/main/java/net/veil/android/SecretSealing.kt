package net.veil.android

import java.util.Base64
import javax.crypto.Cipher
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/**
 * The format [KeystoreSecretStore] keeps a secret in: AES-256-GCM with the secret's name as
 * associated data (a value copied under another name does not open), the 12-byte IV stored
 * with the ciphertext:
 *
 *     v1:<base64 IV>:<base64 ciphertext and 16-byte tag>
 *
 * Plain javax.crypto: the key is whatever [SecretKey] the caller holds (on Android, a
 * non-exportable key of the AndroidKeyStore; in the JVM tests, a software key).
 */
object SecretSealing {
    const val TRANSFORMATION = "AES/GCM/NoPadding"
    const val TAG_BITS = 128
    private const val VERSION = "v1"

    /** Encrypts [value] stored as [name]. The cipher picks a fresh random IV. */
    fun seal(key: SecretKey, name: String, value: ByteArray): String {
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.ENCRYPT_MODE, key)
        cipher.updateAAD(name.toByteArray(Charsets.UTF_8))
        val sealed = cipher.doFinal(value)
        val b64 = Base64.getEncoder()
        return "$VERSION:${b64.encodeToString(cipher.iv)}:${b64.encodeToString(sealed)}"
    }

    /**
     * Decrypts what [seal] made for [name]. Throws [IllegalArgumentException] for text that is
     * not in this format, and a [java.security.GeneralSecurityException] (AEADBadTagException)
     * when the key, the name or the bytes differ.
     */
    fun open(key: SecretKey, name: String, text: String): ByteArray {
        val parts = text.split(':')
        require(parts.size == 3 && parts[0] == VERSION) { "not a sealed value of format $VERSION" }
        val b64 = Base64.getDecoder()
        val iv = b64.decode(parts[1])
        val sealed = b64.decode(parts[2])
        require(iv.size == 12) { "IV of ${iv.size} bytes, not 12" }
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.DECRYPT_MODE, key, GCMParameterSpec(TAG_BITS, iv))
        cipher.updateAAD(name.toByteArray(Charsets.UTF_8))
        return cipher.doFinal(sealed)
    }
}
