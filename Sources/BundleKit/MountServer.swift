import Dispatch
import FuseFS
import Basics
import OCI
import LayerView
import UpperFormat
import BundleFormat

#if canImport(Glibc)
import Glibc
#endif

/// The mount server (`umoci __serve`, started by Mounting.start): serves the bundle's base
/// image under its upper directory on rootfs/, follows the bundle when it is deleted
/// (BundleWatch), answers `rebase` on the control socket (MountControl), and exits once
/// unmounted; SIGTERM and SIGINT unmount first.
extension RuntimeBundle {
    /// Inflated gzip regions kept by the server: enough for the working set of a few
    /// readers, within the server's memory target (see docs/benchmarks.md).
    public static let serverRegionCacheBytes = 32 << 20

    /// Serves until unmounted. `ready` hears "ok" once the mount is in place, or the one-line
    /// error that stopped it before.
    public func serve(log: Log, ready: (String) -> Void) throws {
        OverlayServer.tuneProcessForServing()
        let paths = self.paths
        let regionCacheBytes = RuntimeBundle.serverRegionCacheBytes
        let server: OverlayServer
        let watch: BundleWatch
        do {
            // The mount follows its bundle: deleting the bundle detaches it (see BundleWatch).
            watch = try BundleWatch(paths)
            var options = MountOptions()
            if geteuid() != 0 {
                // An unprivileged user's server (a rootless or mapped unpack): fusermount3
                // mounts, allow_other only where /etc/fuse.conf lets users ask for it.
                let maps = try metadata.mapOptions
                options.ownership = MountOwnership(uidMappings: maps.uidMappings, gidMappings: maps.gidMappings)
                options.allowOther = RuntimeBundle.userAllowOther()
            }
            options.following = Following(ownerGone: { open in
                watch.bundleGone || open.rootIsEmpty && watch.isBundleOpen(in: open.opener)
            }, detached: { reason in
                watch.followed.store(true, ordering: .sequentiallyConsistent)
                log.info("detaching the mount: \(reason); exiting once it is released")
            })
            server = try OverlayServer(view: RuntimeBundle.openBase(paths, regionCacheBytes: regionCacheBytes, log: log),
                                       upperDirectory: paths.upper, mountpoint: paths.rootfs, options: options)
            // Optional: the synchronous checks cover every deleter that goes through the
            // mount; inotify instances are limited (fs.inotify.max_user_instances).
            do { try watch.watch { server.detach(reason: $0) } } catch { log.warn("not watching the bundle: \(error)") }
            try MountControl.serve(paths) { request in
                guard request == "rebase" else { return "error unknown request \(quoted: ByteString(request))" }
                guard !watch.bundleGone else { return "error the bundle is being deleted" }
                do {
                    let report = try RuntimeBundle.rebase(server, paths, regionCacheBytes: regionCacheBytes, log: log)
                    return "ok moved=\(report.moved) kept=\(report.kept) pause_ms=\(Int((report.pauseSeconds * 1000).rounded()))"
                } catch {
                    log.error("rebase: \(error)")
                    return "error \(error)"
                }
            }
            try Files.writeAtomically(paths.pid, Array("\(getpid())\n".utf8))
        } catch {
            ready("\(error)")
            throw error
        }
        // SIGTERM and SIGINT end serving cleanly (unmount first).
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let signals = [SIGTERM, SIGINT].map { sig in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { server.stop() }
            source.resume()
            return source
        }
        log.info("serving \(paths.rootfs)")
        ready("ok")
        defer {
            // Once the mount followed its bundle, whoever is deleting the bundle removes
            // these (find -delete fails on a file that vanished under it).
            if !watch.followed.load(ordering: .sequentiallyConsistent) {
                watch.unlink(paths.pid)
                watch.unlink(paths.control)
            }
            _ = signals
        }
        try server.serve()
        log.info("unmounted \(paths.rootfs)")
    }

    /// Whether /etc/fuse.conf has `user_allow_other` (fusermount3 refuses allow_other to a
    /// user otherwise).
    public static func userAllowOther() -> Bool {
        guard let text = try? Files.read("/etc/fuse.conf") else { return false }
        return String(decoding: text, as: UTF8.self).split(separator: "\n").contains {
            $0.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first
                .map { String($0).trimmingCharacters(in: " ") } == "user_allow_other"
        }
    }

    /// The merged view of the bundle's base image (umoci.json's from descriptor), from the
    /// layout it came from, or else from the index cache's blob layout, which keeps the
    /// blobs of every image mounted with that cache (so the bundle can be mounted again
    /// after its layout was deleted or gc'ed).
    public static func openBase(_ paths: BundlePaths, regionCacheBytes: Int, log: Log) throws -> MergedView {
        let metadata = try BundleMetadata.read(bundle: paths.bundle)
        guard let mount = metadata.mount else { throw StoreError("\(paths.metadata) has no mount information") }
        let cache = IndexCache(directory: mount.cacheDirectory)
        let descriptorPath = try metadata.fromDescriptorPath()
        func open(_ layout: ImageLayout) throws -> (Image, MergedView) {
            let image = try layout.loadImage(descriptorPath)
            return (image, try MergedView.open(layout: layout, image: image, cache: cache,
                                               options: MergedView.Options(keepDirlinks: mount.keepDirlinks,
                                                                           regionCacheBytes: regionCacheBytes)))
        }
        do {
            return try ImageLayout.withLocked(mount.layout, .shared) { layout in
                let (image, view) = try open(layout)
                do { try cache.keepBlobs(of: image, from: layout) } catch { log.warn("keeping the image's blobs in the index cache: \(error)") }
                return view
            }
        } catch let original {
            guard Files.isDirectory(cache.blobLayoutPath) else { throw original }
            do {
                let view = try ImageLayout.withLocked(cache.blobLayoutPath, .shared) { try open($0).1 }
                log.info("\(original); serving the image from the index cache's copy")
                return view
            } catch {
                throw StoreError("\(original); the index cache has no copy either: \(error)")
            }
        }
    }

    /// Serves the bundle's (new) base image under what of the upper directory is newer
    /// than it (see OverlayServer.rebase). umoci.json names the base, and the baseline file
    /// what repack packed into it; afterwards the baseline file holds what stays in the
    /// upper directory unchanged, and is removed when nothing does.
    public static func rebase(_ server: OverlayServer, _ paths: BundlePaths, regionCacheBytes: Int, log: Log) throws -> RebaseReport {
        guard let packed = try UpperBaseline.read(paths.baseline) else {
            throw StoreError("\(paths.baseline) is missing: nothing says what of the upper directory the base image holds")
        }
        let view = try openBase(paths, regionCacheBytes: regionCacheBytes, log: log)
        try Files.removeTree(paths.trash)
        try Files.makeDirectory(paths.trash, mode: 0o700)
        let report = try server.rebase(onto: view, packed: packed, trashDirectory: paths.trash) { remaining throws(StoreError) in
            if remaining.stamps.isEmpty { try Files.unlink(paths.baseline) } else { try remaining.write(paths.baseline) }
        }
        log.info("rebased onto the new base (namespace paused \(Int(report.pauseSeconds * 1000)) ms): \(report.moved) entries left the upper directory, \(report.kept) stayed")
        if let failure = report.moveFailure { log.warn("rebase: \(failure)") }
        return report
    }
}
