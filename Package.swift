// swift-tools-version:6.0
import PackageDescription

let swiftSettings: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "umoci",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "umoci", targets: ["umoci"]),
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
        // Linux interfaces Glibc's module leaves out (xattrs, device numbers, openat2,
        // renameat2, fallocate and their flags): shim.h, and shim.c built with _GNU_SOURCE.
        .target(name: "CLinux", publicHeadersPath: "."),
        // The layers of the project below the FUSE server and the commands, lowest first; each
        // target depends only on targets above it in this list (the compiler checks it).
        //
        // What every other target stands on: errors with codes, the owning file descriptor and
        // its errno helper, the lock, xattr access, byte strings (names are bytes), timestamps,
        // file helpers, the stream hand-off between two threads.
        .target(
            name: "Basics",
            dependencies: ["CLinux"],
            swiftSettings: swiftSettings
        ),
        // The OCI model and the image layout: JSON kept losslessly, digests, descriptors,
        // manifests, configs, media types; the layout on disk (blobs, index.json, references,
        // gc, commits); the runtime spec and its id mappings; `stat`'s text.
        .target(
            name: "OCI",
            dependencies: ["Basics", "CCrypto"],
            swiftSettings: swiftSettings
        ),
        // Layer archives as bytes: tar reading and writing, gzip and zstd in both directions
        // (parallel gzip for repack), random access into gzip streams; the layer whiteout names.
        .target(
            name: "Archive",
            dependencies: ["Basics", "CZlib", "CIsal", "CZstd"],
            swiftSettings: swiftSettings
        ),
        // An image's layers as one tree: the per-layer index (built once, cached), the merged
        // view with whiteouts applied, and the reader of file contents from the layer blobs.
        .target(
            name: "LayerView",
            dependencies: ["Basics", "OCI", "Archive"],
            swiftSettings: swiftSettings
        ),
        // A bundle's upper directory as a format, shared by the FUSE server (which writes it)
        // and the layer writer (which reads it): whiteouts, and the baseline stamps of what a
        // mount started with.
        .target(
            name: "UpperFormat",
            dependencies: ["Basics", "Archive", "CLinux"],
            swiftSettings: swiftSettings
        ),
        // A view's files onto the host (`unpack --extract`, `raw unpack`), with the owners
        // mapped as umoci maps them (id maps, rootless `user.rootlesscontainers`), both ways.
        .target(
            name: "Extraction",
            dependencies: ["Basics", "OCI", "Archive", "LayerView", "CLinux"],
            swiftSettings: swiftSettings
        ),
        // New layers: the difference between a directory and the view (an upper directory or
        // an extracted rootfs) as a tar, compressed, written as a blob and added to an image.
        .target(
            name: "LayerWriter",
            dependencies: ["Basics", "OCI", "Archive", "LayerView", "UpperFormat", "Extraction", "CLinux"],
            swiftSettings: swiftSettings
        ),
        // umoci's bundle on disk: umoci.json, the mtree manifest of an extracted rootfs and
        // its stamps, and what repack of an extracted bundle finds changed.
        .target(
            name: "BundleFormat",
            dependencies: ["Basics", "OCI", "Archive", "LayerView", "UpperFormat", "Extraction", "LayerWriter", "CLinux"],
            swiftSettings: swiftSettings
        ),
        // libfuse 3, for the mount that unpack serves.
        .systemLibrary(
            name: "CFuse",
            pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev"])]
        ),
        .target(
            name: "FuseFS",
            dependencies: ["Basics", "OCI", "Archive", "LayerView", "UpperFormat", "CFuse", "CLinux"],
            swiftSettings: swiftSettings
        ),
        // A runtime bundle as the commands see it: its files, its mode, the mount server's
        // lifecycle and control socket, --refresh-bundle.
        .target(
            name: "BundleKit",
            dependencies: ["Basics", "OCI", "LayerView", "UpperFormat", "BundleFormat", "Extraction", "LayerWriter", "FuseFS", "CLinux"],
            swiftSettings: swiftSettings
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
            dependencies: ["Basics", "OCI", "CCurl"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "umoci",
            dependencies: [
                "Basics", "OCI", "LayerView", "UpperFormat", "Extraction", "LayerWriter", "BundleFormat",
                "FuseFS",
                "BundleKit",
                "Registry",
                "CLinux",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Measurements for scripts/bench-*.sh; not installed, not part of the command line.
        .executableTarget(
            name: "umoci-bench",
            dependencies: ["Basics", "OCI", "Archive", "LayerView"]
        ),
        .testTarget(
            name: "LayerStoreTests",
            dependencies: ["Basics", "OCI", "Archive", "LayerView", "UpperFormat", "LayerWriter", "CIsal", "CLinux"]
        ),
        .testTarget(
            name: "FuseFSTests",
            dependencies: ["FuseFS", "Basics", "OCI", "LayerView", "CLinux"]
        ),
        // What the test targets share: subprocesses, temporary directories, files and
        // xattrs, the fixture images, mounts cleaned up whatever a test did.
        .target(
            name: "TestSupport",
            dependencies: ["Basics", "OCI", "LayerView", "BundleFormat", "CLinux"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "RegistryTests",
            dependencies: ["Registry", "Basics", "OCI", "TestSupport"]
        ),
        .testTarget(
            name: "umociTests",
            dependencies: ["Basics", "OCI", "LayerView", "UpperFormat", "BundleFormat", "CLinux", "TestSupport"]
        ),
        .testTarget(
            name: "BundleKitTests",
            dependencies: ["BundleKit", "Basics", "OCI", "LayerView", "UpperFormat", "BundleFormat", "CLinux", "TestSupport"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
