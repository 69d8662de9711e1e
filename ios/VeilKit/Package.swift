// swift-tools-version:5.9
// VeilKit: the Veil node for the app and its packet tunnel extension.
//
// `VeilFFI.xcframework` (the Rust core as a static library per platform, with the UniFFI
// header and module map) and `Sources/VeilKit/veil_ffi.swift` (the generated bindings) are
// made by `scripts/build-ios.sh`; both are git-ignored. See docs/ios.md.
import PackageDescription

let package = Package(
    name: "VeilKit",
    platforms: [.iOS(.v16)],
    products: [
        .library(name: "VeilKit", targets: ["VeilKit"]),
    ],
    targets: [
        .binaryTarget(name: "VeilFFI", path: "VeilFFI.xcframework"),
        .target(
            name: "VeilKit",
            dependencies: ["VeilFFI"],
            path: "Sources/VeilKit",
            // What `rustc --print native-static-libs` asks for besides libSystem.
            linkerSettings: [.linkedLibrary("iconv")]
        ),
    ]
)
