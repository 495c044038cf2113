import ArgumentParser
import BundleKit
import Basics
import OCI
import LayerView
import BundleFormat

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
        @OptionGroup var persist: PersistOption
        @Argument(help: "the bundle directory to create") var arguments: [String] = []

        /// The bundle mode asked for: --extract, else UMOCI_UNPACK_MODE, else mount with a
        /// fallback to extract.
        func requestedMode() throws -> BundleUnpack.ModeRequest {
            if extract { return .extract }
            guard let value = Environment.variables["UMOCI_UNPACK_MODE"], !value.isEmpty else { return .auto }
            switch BundleMetadata.Mode(rawValue: value) {
            case .mount: return .mount
            case .extract: return .extract
            case nil: throw UsageError("invalid UMOCI_UNPACK_MODE \(quoted: value): must be extract or mount")
            }
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
            try persist.check()
            let mode = try requestedMode()
            let bundle = RuntimeBundle(arguments[0])
            try bundle.checkIsNew()
            let cache = layers.cache()
            var unpack = BundleUnpack(image: try image.prepare(cache: cache, layers: true), bundle: bundle,
                                      cache: cache, log: Log.bundleLog)
            unpack.mode = mode
            unpack.mapOptions = mapOptions
            unpack.keepDirlinks = layers.keepDirlinks
            unpack.serverLogLevel = Log.level.rawValue
            unpack.indexProgress = (start: { IndexProgress.start($0) }, finish: { IndexProgress.finish() })
            let got = try unpack.run()
            Log.info("unpacked image bundle: \(arguments[0])")
            try persist.enable(bundle.paths, mounted: got == .mount)
        }
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
            discussion: "usage: umoci umount <bundle>\n\nFor an extracted bundle (unpack --extract, or made by umoci) there is nothing to unmount: umount does nothing and succeeds. A bundle whose mount is gone already (after a reboot) is refused with how to mount it again, `umoci mount <bundle>`; one whose server died is cleaned up.")

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
