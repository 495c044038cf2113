import ArgumentParser
import BundleKit
import LayerStore

#if canImport(Glibc)
import Glibc
#endif

extension Umoci {
    struct Repack: LoggingCommand {
        static let configuration = CommandConfiguration(
            commandName: "repack", abstract: "repacks an OCI runtime bundle into a reference",
            discussion: """
                usage: umoci repack --image <image-path>[:<tag>] <bundle>
                       umoci repack --image docker://<host>[:<port>]/<repo>:<tag> [--creds ...] <bundle>

                For a mounted bundle the new layer holds exactly the bundle's upper directory: \
                what changed through the mount, whiteouts included. For an extracted bundle \
                (unpack --extract, or one made by umoci) it holds what differs between rootfs/ \
                and the bundle's mtree manifest, as umoci finds it. Like umoci, repack always \
                builds on the image the bundle was unpacked from.
                """)

        @OptionGroup var global: GlobalOptions
        @OptionGroup var image: SourceImageOptions
        @OptionGroup var history: HistoryOptions
        @OptionGroup var compression: CompressionOption
        @Option(name: .customLong("mask-path"), help: "a path to leave out of the layer (repeatable)") var maskPaths: [String] = []
        @Flag(name: .customLong("no-mask-volumes"), help: "include the image's volumes in the layer") var noMaskVolumes = false
        @Flag(name: .customLong("refresh-bundle"), help: "make the new image the bundle's base afterwards")
        var refreshBundle = false
        @Argument(help: "the bundle") var arguments: [String] = []

        func run() throws {
            if case .registry = try image.location(), refreshBundle {
                throw UsageError("--refresh-bundle with a docker:// --image is not supported yet: repack into a layout to refresh the bundle")
            }
            try expectArguments(arguments, 1, "<bundle>")
            guard !arguments[0].isEmpty else { throw UsageError("bundle path cannot be empty") }
            try history.check()
            let requested = try compression.choice()
            let paths = BundlePaths(arguments[0])
            // One repack of a bundle at a time, from reading its baseline to the server's
            // rebase: a second one reading the baseline while the first's rebase moves entries
            // out would take them for deleted.
            let bundleLock: DirectoryLock
            do {
                bundleLock = try DirectoryLock(paths.bundle, .exclusive, what: "bundle")
            } catch {
                _ = try BundleMetadata.read(bundle: paths.bundle)  // says what is missing, if it is
                throw error
            }
            defer { bundleLock.release() }
            var metadata = try BundleMetadata.read(bundle: paths.bundle)
            let extracted = metadata.mode == .extract
            let mounted = !extracted && Mounting.state(of: paths.rootfs) == .live
            // The mount detaches itself when its root is emptied through it (the bundle is being
            // deleted, or its content moved out); files put into the plain directory afterwards
            // are not in upper/ and would be silently left out of the layer.
            if !extracted, !mounted, let entries = try? Files.list(paths.rootfs), !entries.isEmpty {
                throw StoreError("\(paths.rootfs) is not mounted but holds \(entries.count) entries that repack cannot see (the mount detaches itself once its root is emptied): move them out, run umoci mount, and put them back")
            }
            // Every write that returned before now is in the upper directory already (the
            // server writes through); pages dirtied through mmap are pushed out by a syncfs of
            // the mount alone (sync(2) would flush every file system on the machine).
            if mounted { try Mounting.flush(paths) }

            let destination = try RepackDestination(image, metadata: metadata)
            defer { destination.cleanUp() }
            try ImageLayout.withLocked(destination.layout, .exclusive) { layout in
                let from = try metadata.fromDescriptorPath()
                var base: Image
                do {
                    try destination.provideBase(from, into: layout)
                    base = try layout.loadImage(from)
                } catch {
                    throw StoreError("repack: the bundle's base image \(from.manifest.digest) cannot be read from \(destination.layout) (a different layout, or garbage-collected?): \(error)")
                }
                let masks = maskPaths + (noMaskVolumes ? [] : base.config.runConfig["Volumes"]?.object?.keys ?? [])
                let layerCompression = requested ?? LayerCompression.auto(for: base.manifest.layers)
                let baseline = extracted ? nil : try UpperBaseline.read(paths.baseline)
                let clamp = try Timestamp.sourceDateEpoch(environment: Environment.variables)
                var changes: ExtractedBundle.Changes?
                // The image the upper directory changes, to leave out directories it holds
                // unchanged (the cache has the view: unpack built it).
                let baseView = metadata.mount.flatMap { m in
                    try? MergedView.open(layout: layout, image: base, cache: IndexCache(directory: m.cacheDirectory),
                                         options: MergedView.Options(keepDirlinks: m.keepDirlinks, regionCacheBytes: 0))
                }
                let (layer, seen) = try LayerWriting.write(compression: layerCompression, layout: layout, masks: masks,
                                                           baseline: baseline, restarted: LayerWriting.logRestart) { diff throws(DirectoryDiff.Failure) in
                    diff.mtimeClamp = clamp
                    if !extracted { diff.base = baseView }
                    if extracted {
                        let mapOptions = metadata.mapOptions
                        if !mapOptions.isIdentity { diff.ownership = RootlessOwnership(options: mapOptions, warn: { Log.warn($0) }) }
                        changes = try ExtractedBundle.addChanges(paths, base: from.manifest.digest, masks: masks, to: &diff)
                    } else {
                        // An unprivileged user's mount keeps owners as a rootless rootfs does
                        // (user.rootlesscontainers; see MountOwnership), whatever the maps.
                        if !metadata.mapOptions.isIdentity {
                            diff.ownership = RootlessOwnership(options: MapOptions(rootless: true), warn: { Log.warn($0) })
                        }
                        try diff.addContents(ofDirectory: paths.upper)
                    }
                }
                base.add(layer, history: try history.entry(createdBy: "umoci repack", author: base.config.author, emptyLayer: layer == nil))
                let newPath = try layout.commit(base, tag: destination.tag)
                Log.info("new image manifest created: \(newPath.manifest.digest)")
                try destination.publish(newPath, from: layout)
                if refreshBundle, let changes {
                    try ExtractedBundle.refresh(paths, metadata: &metadata, onto: newPath, walk: changes.walk)
                } else if refreshBundle {
                    try Refresh.rebase(paths, metadata: &metadata, onto: newPath, in: destination.layout, mounted: mounted, packed: seen)
                }
            }
            // The server opens the new base with the layout's shared lock: after ours is gone.
            if refreshBundle && mounted { Refresh.rebaseMount(paths, log: Log.bundleLog) }
        }
    }
}

/// --compress, for the commands that write layers.
struct CompressionOption: ParsableArguments {
    @Option(name: .customLong("compress"), help: "layer compression: auto (the latest compressed layer's, else gzip), gzip, zstd or none")
    var compress: String = "auto"

    /// nil for auto.
    func choice() throws -> LayerCompression? {
        switch compress {
        case "auto": return nil
        case "gzip": return .gzip
        case "zstd": return .zstd
        case "none": return LayerCompression.none
        default: throw UsageError("invalid --compress: unknown layer compression type \"\(compress)\" (auto, gzip, zstd or none)")
        }
    }
}
