// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "umoci",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "umoci", targets: ["umoci"]),
        .library(name: "LayerStore", targets: ["LayerStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
    ],
    targets: [
        // OpenSSL's libcrypto, for SHA-256/SHA-512 (EVP digests).
        .systemLibrary(
            name: "CCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // zlib, for gzip layers: deflate for repack, and the raw deflate of access point states.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // ISA-L, for gzip layers: inflate about twice as fast as zlib's, with a state that can
        // be saved anywhere in the stream (access points); deflate about ten times as fast as
        // zlib's level 6 (repack writes layers with it, in parallel chunks).
        .systemLibrary(
            name: "CIsal",
            pkgConfig: "libisal",
            providers: [.apt(["libisal-dev"])]
        ),
        // libzstd, for zstd layers.
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // Linux headers Glibc's module leaves out (xattrs, device numbers); no library.
        .systemLibrary(name: "CLinux"),
        .target(
            name: "LayerStore",
            dependencies: ["CCrypto", "CZlib", "CIsal", "CZstd", "CLinux"],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        // libfuse 3, for the mount that unpack serves.
        .systemLibrary(
            name: "CFuse",
            pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev"])]
        ),
        .target(
            name: "FuseFS",
            dependencies: ["LayerStore", "CFuse", "CLinux"],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        // A runtime bundle as the commands see it: its files, its mode, the mount server's
        // lifecycle and control socket, --refresh-bundle.
        .target(
            name: "BundleKit",
            dependencies: ["LayerStore", "FuseFS", "CLinux"],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        // libcurl (OpenSSL flavour), for every HTTP request and all of TLS the Registry target makes.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        // The client side of the OCI distribution spec: references, credentials, TLS settings,
        // manifests, verified blob streams, uploads.
        .target(
            name: "Registry",
            dependencies: ["LayerStore", "CCurl"],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        .executableTarget(
            name: "umoci",
            dependencies: [
                "LayerStore",
                "FuseFS",
                "BundleKit",
                "Registry",
                "CLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        // Measurements for scripts/bench-*.sh; not installed, not part of the command line.
        .executableTarget(
            name: "umoci-bench",
            dependencies: ["LayerStore"]
        ),
        .testTarget(
            name: "LayerStoreTests",
            dependencies: ["LayerStore", "CIsal"]
        ),
        .testTarget(
            name: "FuseFSTests",
            dependencies: ["FuseFS", "LayerStore", "CLinux"]
        ),
        .testTarget(
            name: "RegistryTests",
            dependencies: ["Registry", "LayerStore"]
        ),
        .testTarget(
            name: "umociTests",
            dependencies: ["LayerStore", "CLinux"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
