import BundleKit
import Foundation
import Basics
import OCI
import LayerView
import BundleFormat
import Synchronization
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// What a bundle step logged, by level.
final class LogLines: Sendable {
    private let lines = Mutex<[(warning: Bool, text: String)]>([])

    var log: RuntimeBundle.Log {
        RuntimeBundle.Log(info: { [self] text in lines.withLock { $0.append((false, text)) } },
                          warn: { [self] text in lines.withLock { $0.append((true, text)) } })
    }
    var warnings: [String] { lines.withLock { $0.filter(\.warning).map(\.text) } }
}

/// Mounts need root and /dev/fuse (the server runs as this user).
let canMount = fuseAvailable && geteuid() == 0

/// A bundle step's setup: a copy of the fixture layout (repack writes to it), an index cache,
/// and the bundle path, all in one temporary directory.
struct Workspace {
    let dir = TemporaryDirectory()
    let layout: String
    let cache: IndexCache
    let bundle: RuntimeBundle
    let log = LogLines()

    init() throws {
        layout = try copyOfFixtures(to: dir("L"))
        cache = IndexCache(directory: dir("cache"))
        bundle = RuntimeBundle(dir("bundle"))
    }

    var paths: BundlePaths { bundle.paths }

    func unpack(_ tag: String = "basic", mode: BundleUnpack.ModeRequest) -> BundleUnpack {
        var unpack = BundleUnpack(image: .layout(layout, tag: tag), bundle: bundle, cache: cache, log: log.log)
        unpack.mode = mode
        // The test process is not umoci: the package's umoci serves the mount.
        unpack.serverExecutable = ourUmoci
        return unpack
    }

    func repack(to tag: String) -> BundleRepack {
        var repack = BundleRepack(layout: layout, tag: tag, bundle: bundle, log: log.log)
        // Uncompressed, so that tar lists it without guessing.
        repack.compression = LayerCompression.none
        return repack
    }

    /// The entry names of the last layer of `tag` (an uncompressed layer), as GNU tar lists them.
    func lastLayerEntries(_ tag: String) throws -> [String] {
        let layout = try ImageLayout(opening: self.layout)
        let image = try layout.loadImage(tag: tag)
        let blob = layout.blobPath(try #require(image.manifest.layers.last).digest)
        let out = try run("/bin/tar", ["-tf", blob])
        try #require(out.status == 0, "\(out)")
        return out.stdout.split(separator: "\n").map(String.init)
    }

    func layerCount(_ tag: String) throws -> Int {
        try ImageLayout(opening: layout).loadImage(tag: tag).manifest.layers.count
    }

    /// What a reboot leaves of a mounted bundle: the server gone (killed, so that it removes
    /// nothing of its own) and nothing mounted on rootfs/, an empty directory.
    func reboot() throws {
        let servers = serverProcesses(of: Mounting.canonical(paths.bundle))
        try #require(!servers.isEmpty, "no mount server for \(paths.bundle)")
        for pid in servers { kill(pid, SIGKILL) }
        try #require(serversExit(Mounting.canonical(paths.bundle)))
        try #require(umount2(paths.rootfs, Int32(MNT_DETACH)) == 0, "umount \(paths.rootfs): \(String(cString: strerror(errno)))")
        try #require(try FileManager.default.contentsOfDirectory(atPath: paths.rootfs).isEmpty)
    }

    /// The layout's index.json, to check that a failed step changed no tag.
    func index() throws -> [UInt8] { try Files.read(layout + "/index.json") }
}
