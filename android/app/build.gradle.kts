import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

// The Veil repository this project lives in (android/ is one of its folders): the Rust
// workspace, scripts/gen-bindings.sh, and bindings/kotlin (generated, git-ignored).
val repoRoot: File = rootProject.projectDir.parentFile

android {
    namespace = "net.veil.android"
    compileSdk = 35
    // cargo-ndk builds with this NDK (Android Studio: SDK Manager > SDK Tools > NDK).
    ndkVersion = "27.2.12479018"

    defaultConfig {
        applicationId = "net.veil.android"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        // The ABIs cargoNdk builds libveil_ffi.so for (phones, and the emulator on x86_64).
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    buildFeatures {
        compose = true
    }

    sourceSets {
        getByName("main") {
            // uniffi/veil_ffi/veil_ffi.kt, written by the kotlinBindings task.
            java.srcDir(repoRoot.resolve("bindings/kotlin"))
            // libveil_ffi.so per ABI, written by the cargoNdk task (the default folder).
            jniLibs.srcDir("src/main/jniLibs")
        }
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

// --- the Rust library and its Kotlin bindings ------------------------------------------------

/** libveil_ffi.so for the phones (arm64-v8a) and the emulator (x86_64), release profile. */
val cargoNdk by tasks.registering(Exec::class) {
    group = "veil"
    description = "Builds libveil_ffi.so with cargo-ndk into src/main/jniLibs"
    workingDir = projectDir
    commandLine(
        "cargo", "ndk", "-t", "arm64-v8a", "-t", "x86_64", "-o", "src/main/jniLibs",
        "build", "--release", "-p", "veil-ffi",
    )
    doFirst {
        // cargo-ndk finds the NDK through ANDROID_NDK_HOME: default to the one of this build.
        if (System.getenv("ANDROID_NDK_HOME").isNullOrEmpty()) {
            environment("ANDROID_NDK_HOME", android.ndkDirectory.absolutePath)
        }
    }
}

/** bindings/kotlin/uniffi/veil_ffi/veil_ffi.kt from the host build of the same crate. */
val kotlinBindings by tasks.registering(Exec::class) {
    group = "veil"
    description = "Generates the Kotlin bindings of veil-ffi (scripts/gen-bindings.sh --release kotlin)"
    workingDir = repoRoot
    commandLine("bash", repoRoot.resolve("scripts/gen-bindings.sh").absolutePath, "--release", "kotlin")
}

// Both run before anything is compiled or packaged; cargo itself skips what is up to date.
tasks.named("preBuild") {
    dependsOn(cargoNdk, kotlinBindings)
}

dependencies {
    // The generated bindings call the library through JNA (the aar carries its native part).
    implementation("net.java.dev.jna:jna:5.15.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")

    implementation(platform("androidx.compose:compose-bom:2024.12.01"))
    implementation("androidx.compose.ui:ui")
    implementation("androidx.compose.material3:material3")
    implementation("androidx.compose.ui:ui-tooling-preview")
    debugImplementation("androidx.compose.ui:ui-tooling")
    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.lifecycle:lifecycle-runtime-compose:2.8.7")
}
