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
        // zlib, for gzip layers (inflate with access points, deflate for repack).
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // libzstd, for zstd layers.
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .target(
            name: "LayerStore",
            dependencies: ["CCrypto", "CZlib", "CZstd"],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        .executableTarget(
            name: "umoci",
            dependencies: [
                "LayerStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        .testTarget(
            name: "LayerStoreTests",
            dependencies: ["LayerStore"]
        ),
        .testTarget(
            name: "umociTests",
            dependencies: ["LayerStore"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
