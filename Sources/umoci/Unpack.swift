import ArgumentParser
import BundleKit
import LayerStore

#if canImport(Glibc)
import Glibc
#endif

extension Umoci {
    struct Unpack: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "unpack", abstract: "unpacks a reference into an OCI runtime bundle",
            discussion: """
                usage: umoci unpack [--extract] [--rootless] [--uid-map container:host[:size]]... [--gid-map ...]... --image <image-path>[:<tag>] <bundle>

                By default the bundle's rootfs is not extracted: it is the image mounted \
                copy-on-write (FUSE), with every change written to the bundle's upper directory, \
                which `umoci repack` turns into the next layer.

                With --extract (or UMOCI_UNPACK_MODE=extract in the environment) the bundle is \
                umoci's own: rootfs/ a plain directory, and sha256_<manifest>.mtree, which \
                repack compares the rootfs with. Without either, unpack extracts when FUSE \
                cannot be used (no /dev/fuse, mount refused) and says why in one line; \
                UMOCI_UNPACK_MODE=mount makes that an error instead.

                An unprivileged user's --rootless, --uid-map or --gid-map unpack mounts through \
                fusermount3: the mount reports each image owner mapped to the host through the \
                maps (an id outside them as the mapped container root) and keeps the owners it \
                cannot set in the user.rootlesscontainers xattr of the upper files; device nodes \
                show as empty files. Extraction (and root with maps, or a user without them) is \
                umoci's: owners are mapped to the host through the maps; rootless every \
                file belongs to the user, an image owner other than root is kept in the \
                user.rootlesscontainers xattr, device nodes become empty files. Either way \
                config.json is umoci's rootless runtime spec and the maps are kept in \
                umoci.json for repack.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: SourceImageOptions
        @OptionGroup var layers: LayerOptions
        @Flag(name: .customLong("extract"), help: "extract the rootfs as a plain directory (umoci's bundle format) instead of mounting it")
        var extract = false
        @Flag(name: .customLong("rootless"), help: "enable rootless unpacking support (implies --uid-map 0:$(id -u):1 --gid-map 0:$(id -g):1 unless given)")
        var rootless = false
        @Option(name: .customLong("uid-map"), help: "a uid mapping container:host[:size] (repeatable)") var uidMap: [String] = []
        @Option(name: .customLong("gid-map"), help: "a gid mapping container:host[:size] (repeatable)") var gidMap: [String] = []
        @Argument(help: "the bundle directory to create") var arguments: [String] = []

        /// The bundle mode asked for, and whether it was asked for explicitly (no fallback).
        func requestedMode() throws -> (BundleMetadata.Mode, explicit: Bool) {
            if extract { return (.extract, true) }
            guard let value = Environment.variables["UMOCI_UNPACK_MODE"], !value.isEmpty else { return (.mount, false) }
            guard let mode = BundleMetadata.Mode(rawValue: value) else {
                throw UsageError("invalid UMOCI_UNPACK_MODE \(quoted: value): must be extract or mount")
            }
            return (mode, true)
        }

        /// umoci's map options: --rootless defaults each missing map to the user's own id as
        /// the container's root.
        func mapOptions() throws -> MapOptions {
            var options = MapOptions(rootless: rootless)
            let uids = !uidMap.isEmpty || !rootless ? uidMap : ["0:\(geteuid()):1"]
            let gids = !gidMap.isEmpty || !rootless ? gidMap : ["0:\(getegid()):1"]
            do {
                options.uidMappings = try uids.map { s throws(StoreError) in try IdMapping(parsing: s, flag: "--uid-map") }
                options.gidMappings = try gids.map { s throws(StoreError) in try IdMapping(parsing: s, flag: "--gid-map") }
            } catch {
                throw UsageError(error.message)
            }
            return options
        }

        func run() throws {
            _ = try image.location()
            try expectArguments(arguments, 1, "<bundle>")
            guard !arguments[0].isEmpty else { throw UsageError("bundle path cannot be empty") }
            let mapOptions = try mapOptions()
            let paths = BundlePaths(arguments[0])
            for existing in [paths.config, paths.rootfs, paths.metadata] where Files.exists(existing) {
                throw StoreError("create runtime bundle: \(existing) already exists")
            }
            var (mode, explicit) = try requestedMode()
            // Root's server serves the image's own owners; an unprivileged user's serves them
            // through its maps (MountOwnership). Root with maps, or a user without any, extracts.
            let rootlessMount = geteuid() != 0 && !mapOptions.isIdentity
            if mode == .mount && !rootlessMount && (!mapOptions.isIdentity || geteuid() != 0) {
                if explicit {
                    Log.warn("mount mode needs root without --rootless/--uid-map/--gid-map, or a user other than root with them: extracting the rootfs instead (umoci's bundle format)")
                }
                (mode, explicit) = (.extract, true)
            }
            let cache = layers.cache()
            let prepared = try image.prepare(cache: cache, layers: true)
            if mode == .mount {
                do {
                    do { try Mounting.checkFuse() } catch { throw MountUnavailable(reason: "\(error)") }
                    try unpackMounted(prepared, paths, cache, mapOptions)
                    return
                } catch let error as MountUnavailable where !explicit {
                    Log.warn("\(error.reason); extracting the rootfs instead (umoci's bundle format)")
                }
            }
            try ImageLayout.withLocked(prepared.layout, .shared) { layout in
                let loaded = try prepared.load(layout)
                let view = try MergedView.open(layout: layout, image: loaded, cache: cache, options: layers.viewOptions())
                let created = try BundleCreation(paths, extracting: loaded.path.manifest.digest)
                do {
                    Log.info("unpacking rootfs ...")
                    try ExtractedBundle.create(view, paths, from: loaded.path, mapOptions: mapOptions, warn: { Log.warn($0) })
                    try writeRuntimeConfig(loaded, paths, mapOptions)
                    try prepared.record(bundle: paths.bundle)
                } catch {
                    created.undo()
                    throw error
                }
            }
            Log.info("unpacked image bundle: \(paths.bundle)")
        }

        func unpackMounted(_ prepared: PreparedImage, _ paths: BundlePaths, _ cache: IndexCache, _ mapOptions: MapOptions) throws {
            let layoutPath = Mounting.canonical(prepared.layout)
            let (loaded, created) = try ImageLayout.withLocked(prepared.layout, .shared) { layout in
                let loaded = try prepared.load(layout)
                // Index the layers now, with progress, so that the server opens a warm view;
                // with a warm cache the server's own open (which verifies) is enough.
                if !cache.isWarm(image: loaded, keepDirlinks: layers.keepDirlinks) {
                    _ = try MergedView.open(layout: layout, image: loaded, cache: cache, options: layers.viewOptions(),
                                            progress: IndexProgress.start(loaded))
                    IndexProgress.finish()
                }
                return (loaded, try BundleCreation(paths))
            }
            do {
                var metadata = BundleMetadata(from: loaded.path, mount: BundleMetadata.Mount(
                    layout: layoutPath, cacheDirectory: Mounting.canonical(cache.directory), keepDirlinks: layers.keepDirlinks),
                    mapOptions: mapOptions)
                prepared.record(in: &metadata)
                try metadata.write(bundle: paths.bundle)
                do {
                    try Mounting.start(paths, logLevel: Log.level.rawValue)
                } catch {
                    throw MountUnavailable(reason: "\(error)")
                }
                try writeRuntimeConfig(loaded, paths, mapOptions)
            } catch {
                if Mounting.state(of: paths.rootfs) != .notMounted { try? Mounting.stop(paths) }
                created.undo()
                throw error
            }
            Log.info("unpacked image bundle: \(paths.bundle)")
        }

        func writeRuntimeConfig(_ loaded: Image, _ paths: BundlePaths, _ mapOptions: MapOptions = MapOptions()) throws {
            var spec = try RuntimeSpec.generate(config: loaded.config, rootfs: paths.rootfs, rootPath: "rootfs",
                                                warn: { Log.warn($0) })
            try RuntimeSpec.apply(mapOptions, to: &spec, warn: { Log.warn($0) })
            try Files.writeAtomically(paths.config, JSON.object(spec).serialized(indent: "\t") + [0x0A])
        }
    }

    /// FUSE cannot serve the bundle here; unpack extracts instead unless a mount was asked for.
    struct MountUnavailable: Error, CustomStringConvertible {
        var reason: String
        var description: String { reason }
    }

    struct Mount: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "mount", abstract: "mounts the rootfs of a bundle made by unpack again",
            discussion: "usage: umoci mount <bundle>\n\nEvery change in the bundle's upper directory is kept. A mount whose server died is cleaned up first. An extracted bundle (unpack --extract, or made by umoci) cannot be mounted: its rootfs is a plain directory.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "the bundle") var arguments: [String] = []

        func run() throws {
            try expectArguments(arguments, 1, "<bundle>")
            let bundle = RuntimeBundle(arguments[0])
            try bundle.mount(logLevel: Log.level.rawValue)
            let paths = bundle.paths
            Log.info("mounted \(paths.rootfs)")
        }
    }

    struct Umount: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "umount", abstract: "unmounts the rootfs of a bundle and stops its server",
            discussion: "usage: umoci umount <bundle>\n\nFor an extracted bundle (unpack --extract, or made by umoci) there is nothing to unmount: umount does nothing and succeeds.")

        @OptionGroup var global: GlobalOptions
        @Argument(help: "the bundle") var arguments: [String] = []

        func run() throws {
            try expectArguments(arguments, 1, "<bundle>")
            let bundle = RuntimeBundle(arguments[0])
            if try bundle.unmount() {
                Log.info("unmounted \(bundle.paths.rootfs)")
            } else {
                Log.info("\(bundle.paths.rootfs) is a plain directory (an extracted bundle): nothing to unmount")
            }
        }
    }
}
