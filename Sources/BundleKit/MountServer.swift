import FuseFS
import Basics
import OCI
import LayerView
import UpperFormat
import BundleFormat

/// What the mount server (`umoci __serve`) does with its bundle, beside serving it: open the
/// base image, rebase onto a new one.
extension RuntimeBundle {
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
