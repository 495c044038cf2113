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

/// `umoci repack`: a bundle's changes become a new layer on the image the bundle was unpacked
/// from, committed under a tag (umoci's `Repack` in repack.go, which its command line calls).
/// - A mounted bundle's layer holds exactly its upper directory, whiteouts included; the mount
///   is flushed first. A mounted-mode bundle that is not mounted (after a reboot) is repacked
///   from upper/ alone, with a warning naming `umoci mount`; files put into its plain rootfs/
///   are refused (the stray-rootfs check).
/// - An extracted bundle's layer holds what differs between rootfs/ and its mtree manifest,
///   owners mapped back through the bundle's maps, as umoci finds it.
/// - With `refreshBundle` the new image becomes the bundle's base (see Refresh).
public struct BundleRepack {
    /// Where the new image goes, chosen once the bundle's umoci.json is read (a registry-based
    /// bundle's base is not in the layout it is repacked into).
    public var target: (BundleMetadata) throws -> any RepackTarget
    public var bundle: RuntimeBundle
    /// nil: the latest compressed layer's compression, else gzip.
    public var compression: LayerCompression?
    /// Paths in the rootfs to leave out of the layer, with everything below them.
    public var maskPaths: [String] = []
    /// Leave the image's volumes (config Volumes) out too, as umoci does by default.
    public var maskVolumes = true
    public var refreshBundle = false
    /// SOURCE_DATE_EPOCH: no mtime in the layer is later.
    public var mtimeClamp: Int64?
    /// The new history entry, made once the layer is known: given the base image's author
    /// (the default author) and whether nothing changed (an empty layer); nil for none.
    public var history: (_ baseAuthor: String?, _ emptyLayer: Bool) throws -> History? = { _, _ in nil }
    public var log: RuntimeBundle.Log

    public init(target: @escaping (BundleMetadata) throws -> any RepackTarget, bundle: RuntimeBundle, log: RuntimeBundle.Log) {
        self.target = target
        self.bundle = bundle
        self.log = log
    }

    /// Repack into `tag` of the layout at `layout`, the bundle's base being there.
    public init(layout: String, tag: String, bundle: RuntimeBundle, log: RuntimeBundle.Log) {
        self.init(target: { _ in LayoutTarget(layout: layout, tag: tag) }, bundle: bundle, log: log)
    }

    public struct Result {
        /// The new image (its manifest is the commit's).
        public var image: DescriptorPath
        /// How the rootfs stood when repack read it.
        public var state: RuntimeBundle.RootfsState
        /// nil when nothing changed (the history entry alone was added).
        public var layer: Descriptor?
    }

    @discardableResult
    public func run() throws -> Result {
        let paths = bundle.paths
        // One repack of a bundle at a time, from reading its baseline to the server's rebase:
        // a second one reading the baseline while the first's rebase moves entries out would
        // take them for deleted.
        let bundleLock: DirectoryLock
        do {
            bundleLock = try DirectoryLock(paths.bundle, .exclusive, what: "bundle")
        } catch {
            _ = try bundle.metadata  // says what is missing, if it is
            throw error
        }
        defer { bundleLock.release() }
        var metadata = try bundle.metadata
        let state = bundle.rootfsState(metadata)
        if state == .notMounted { try bundle.checkNoStrayEntries() }
        // Every write that returned before now is in the upper directory already (the
        // server writes through); pages dirtied through mmap are pushed out by a syncfs of
        // the mount alone (sync(2) would flush every file system on the machine).
        if state == .mounted { try Mounting.flush(paths) }

        let target = try self.target(metadata)
        defer { target.cleanUp() }
        let result = try ImageLayout.withLocked(target.layout, .exclusive) { layout in
            try write(layout, target, &metadata, state)
        }
        // The server opens the new base with the layout's shared lock: after ours is gone.
        if refreshBundle && state == .mounted { Refresh.rebaseMount(paths, log: log) }
        return result
    }

    private func write(_ layout: ImageLayout, _ target: any RepackTarget, _ metadata: inout BundleMetadata,
                       _ state: RuntimeBundle.RootfsState) throws -> Result {
        let paths = bundle.paths
        let extracted = state == .extracted
        let from = try metadata.fromDescriptorPath()
        var base: Image
        do {
            try target.provideBase(from, into: layout)
            base = try layout.loadImage(from)
        } catch {
            throw StoreError(.notFound, "repack: the bundle's base image \(from.manifest.digest) cannot be read from \(target.layout) (a different layout, or garbage-collected?): \(error)", subject: "\(from.manifest.digest)")
        }
        // Repack goes on (upper/ holds every change), but the user of a bundle whose mount is
        // gone should hear how to bring it back, once nothing else stands in the way.
        if state == .notMounted || state == .serverGone {
            log.warn("\(bundle.notMountedAdvice(state)); repacking its upper directory, which holds every change")
        }
        let masks = maskPaths + (maskVolumes ? base.config.runConfig["Volumes"]?.object?.keys ?? [] : [])
        let layerCompression = compression ?? LayerCompression.auto(for: base.manifest.layers)
        let baseline = extracted ? nil : try UpperBaseline.read(paths.baseline)
        var changes: ExtractedBundle.Changes?
        // The image the upper directory changes, to leave out directories it holds unchanged
        // (the cache has the view: unpack built it).
        let baseView = extracted ? nil : metadata.mount.flatMap { m in
            try? MergedView.open(layout: layout, image: base, cache: IndexCache(directory: m.cacheDirectory),
                                 options: MergedView.Options(keepDirlinks: m.keepDirlinks, regionCacheBytes: 0))
        }
        let mapOptions = metadata.mapOptions
        let log = self.log
        let clamp = mtimeClamp
        let (layer, seen) = try LayerWriting.write(compression: layerCompression, layout: layout, masks: masks, baseline: baseline,
                                                   restarted: { log.info($0.restartNotice) }) { diff throws(DirectoryDiff.Failure) in
            diff.mtimeClamp = clamp
            if extracted {
                if !mapOptions.isIdentity { diff.ownership = RootlessOwnership(options: mapOptions, warn: { log.warn($0) }) }
                changes = try ExtractedBundle.addChanges(paths, base: from.manifest.digest, masks: masks, to: &diff)
            } else {
                diff.base = baseView
                // An unprivileged user's mount keeps owners as a rootless rootfs does
                // (user.rootlesscontainers; see MountOwnership), whatever the maps.
                if !mapOptions.isIdentity {
                    diff.ownership = RootlessOwnership(options: MapOptions(rootless: true), warn: { log.warn($0) })
                }
                try diff.addContents(ofDirectory: paths.upper)
            }
        }
        base.add(layer, history: try history(base.config.author, layer == nil))
        let newPath = try layout.commit(base, tag: target.tag)
        log.info("new image manifest created: \(newPath.manifest.digest)")
        try target.publish(newPath, from: layout)
        if refreshBundle, let changes {
            try ExtractedBundle.refresh(paths, metadata: &metadata, onto: newPath, walk: changes.walk)
        } else if refreshBundle {
            try Refresh.rebase(paths, metadata: &metadata, onto: newPath, in: target.layout, mounted: state == .mounted, packed: seen)
        }
        return Result(image: newPath, state: state, layer: layer?.descriptor)
    }
}

/// Where `repack` commits the new image: a tag of a layout, and what else that place needs
/// around the commit (the CLI's registry destination commits into a staging layout, links the
/// base's blobs in first and pushes afterwards).
public protocol RepackTarget {
    /// The layout the new image is committed into.
    var layout: String { get }
    var tag: String { get }
    /// Makes the bundle's base image readable in `layout` (called with its exclusive lock held).
    func provideBase(_ from: DescriptorPath, into layout: ImageLayout) throws
    /// After the commit, with the layout's lock still held.
    func publish(_ path: DescriptorPath, from layout: ImageLayout) throws
    /// When repack is over, whatever happened.
    func cleanUp()
}

/// A tag of a layout that holds the bundle's base: umoci's only destination.
public struct LayoutTarget: RepackTarget {
    public let layout: String
    public let tag: String

    public init(layout: String, tag: String) {
        self.layout = layout
        self.tag = tag
    }

    public func provideBase(_ from: DescriptorPath, into layout: ImageLayout) throws {}
    public func publish(_ path: DescriptorPath, from layout: ImageLayout) throws {}
    public func cleanUp() {}
}
