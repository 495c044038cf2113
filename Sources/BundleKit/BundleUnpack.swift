#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import LayerView
import UpperFormat
import BundleFormat
import Extraction
import LayerWriter

/// `umoci unpack`: an image becomes a runtime bundle (umoci's `Unpack` in unpack.go, which its
/// command line calls). By default the rootfs is the image mounted copy-on-write, served by a
/// mount server (Mounting) over the bundle's upper directory; extracted (umoci's own bundle
/// format, ExtractedBundle) when asked, or when FUSE cannot be used and no mount was asked
/// for. Whatever fails, what unpack created is removed again (BundleCreation): nothing is
/// left half-made, and a mount it started is stopped.
public struct BundleUnpack {
    /// What the user asked for.
    public enum ModeRequest: Sendable, Equatable {
        /// Mount, and extract (saying why in one line) when FUSE cannot be used here.
        case auto
        /// Mount, or fail: no fallback.
        case mount
        case extract
    }

    /// The image, in a layout (a registry image's blobs were fetched into one first).
    public var image: PreparedImage
    public var bundle: RuntimeBundle
    public var mode: ModeRequest = .auto
    /// umoci's --uid-map, --gid-map and --rootless.
    public var mapOptions = MapOptions()
    public var cache: IndexCache
    public var keepDirlinks = false
    /// The mount server's log level.
    public var serverLogLevel = "warn"
    /// The binary whose `__serve` serves the mount: this one (see Mounting.start).
    public var serverExecutable = Mounting.selfExecutable()
    /// Progress of a cold index build before mounting: `start` gives the callback for an
    /// image's layers (nil for none), `finish` ends its display.
    public var indexProgress: (start: (Image) -> (@Sendable (Int, Int64) -> Void)?, finish: () -> Void)?
    public var log: RuntimeBundle.Log

    public init(image: PreparedImage, bundle: RuntimeBundle, cache: IndexCache, log: RuntimeBundle.Log) {
        self.image = image
        self.bundle = bundle
        self.cache = cache
        self.log = log
    }

    /// The mode the bundle got.
    @discardableResult
    public func run() throws -> BundleMetadata.Mode {
        try bundle.checkIsNew()
        let (mode, explicit) = decideMode()
        if mode == .mount {
            do {
                do { try Mounting.checkFuse() } catch { throw MountUnavailable(reason: "\(error)") }
                try unpackMounted()
                return .mount
            } catch let error as MountUnavailable {
                guard !explicit else { throw StoreError(error.reason) }
                log.warn("\(error.reason); extracting the rootfs instead (umoci's bundle format)")
            }
        }
        try unpackExtracted()
        return .extract
    }

    /// The mode to try first, and whether it was asked for (no fallback). Root's server
    /// serves the image's own owners; an unprivileged user's serves them through its maps
    /// (MountOwnership). Root with maps, or a user without any, extracts.
    func decideMode() -> (BundleMetadata.Mode, explicit: Bool) {
        if mode == .extract { return (.extract, true) }
        let rootlessMount = geteuid() != 0 && !mapOptions.isIdentity
        if !rootlessMount && (!mapOptions.isIdentity || geteuid() != 0) {
            if mode == .mount {
                log.warn("mount mode needs root without --rootless/--uid-map/--gid-map, or a user other than root with them: extracting the rootfs instead (umoci's bundle format)")
            }
            return (.extract, true)
        }
        return (.mount, mode == .mount)
    }

    func unpackExtracted() throws {
        let paths = bundle.paths
        try ImageLayout.withLocked(image.layout, .shared) { layout in
            let loaded = try image.load(layout)
            let view = try MergedView.open(layout: layout, image: loaded, cache: cache, options: MergedView.Options(keepDirlinks: keepDirlinks))
            let created = try BundleCreation(paths, extracting: loaded.path.manifest.digest)
            do {
                log.info("unpacking rootfs ...")
                try ExtractedBundle.create(view, paths, from: loaded.path, mapOptions: mapOptions, warn: { log.warn($0) })
                try writeRuntimeConfig(loaded)
                try image.record(bundle: paths.bundle)
            } catch {
                created.undo()
                throw error
            }
        }
    }

    func unpackMounted() throws {
        let paths = bundle.paths
        let (loaded, created) = try ImageLayout.withLocked(image.layout, .shared) { layout in
            let loaded = try image.load(layout)
            // Index the layers now, with progress, so that the server opens a warm view;
            // with a warm cache the server's own open (which verifies) is enough.
            if !cache.isWarm(image: loaded, keepDirlinks: keepDirlinks) {
                _ = try MergedView.open(layout: layout, image: loaded, cache: cache, options: MergedView.Options(keepDirlinks: keepDirlinks),
                                        progress: indexProgress?.start(loaded))
                indexProgress?.finish()
            }
            return (loaded, try BundleCreation(paths))
        }
        do {
            var metadata = BundleMetadata(from: loaded.path, mount: BundleMetadata.Mount(
                layout: Mounting.canonical(image.layout), cacheDirectory: Mounting.canonical(cache.directory), keepDirlinks: keepDirlinks),
                mapOptions: mapOptions)
            image.record(in: &metadata)
            try metadata.write(bundle: paths.bundle)
            do {
                try Mounting.start(paths, logLevel: serverLogLevel, executable: serverExecutable)
            } catch {
                throw MountUnavailable(reason: "\(error)")
            }
            try writeRuntimeConfig(loaded)
        } catch {
            if Mounting.state(of: paths.rootfs) != .notMounted { try? Mounting.stop(paths) }
            created.undo()
            throw error
        }
    }

    /// config.json: umoci's runtime spec for the image, rootless with the maps.
    func writeRuntimeConfig(_ loaded: Image) throws {
        let paths = bundle.paths
        let log = self.log
        var spec = try RuntimeSpec.generate(config: loaded.config, rootfs: paths.rootfs, rootPath: "rootfs", warn: { log.warn($0) })
        try RuntimeSpec.apply(mapOptions, to: &spec, warn: { log.warn($0) })
        try Files.writeAtomically(paths.config, JSON.object(spec).serialized(indent: "\t") + [0x0A])
    }
}

/// FUSE cannot serve the bundle here; unpack extracts instead unless a mount was asked for.
private struct MountUnavailable: Error {
    var reason: String
}
