#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import BundleFormat

/// What unpack created, so that a failure removes exactly that and leaves nothing half-made.
public struct BundleCreation {
    let paths: BundlePaths
    let createdBundle: Bool
    /// The manifest whose mtree an extracted bundle gets; nil for a mounted bundle.
    let extracting: Digest?

    /// For a mounted bundle: the upper directory and the mount point. For an extracted one
    /// (`extracting` its manifest): the rootfs directory.
    public init(_ paths: BundlePaths, extracting: Digest? = nil) throws {
        self.paths = paths
        self.extracting = extracting
        if Files.exists(paths.bundle) {
            guard Files.isDirectory(paths.bundle) else { throw StoreError("create runtime bundle: \(paths.bundle) is not a directory") }
            createdBundle = false
        } else {
            if mkdir(paths.bundle, 0o700) != 0 { throw StoreError.system("create runtime bundle", paths.bundle) }
            createdBundle = true
        }
        chmod(paths.bundle, 0o700)
        for dir in extracting == nil ? [paths.upper, paths.rootfs] : [paths.rootfs] where mkdir(dir, 0o755) != 0 {
            let e = StoreError.system("create runtime bundle", dir)
            undo()
            throw e
        }
    }

    public func undo() {
        if createdBundle {
            try? Files.removeTree(paths.bundle)
        } else if let extracting {
            for p in [paths.config, paths.metadata, ExtractedBundle.manifestPath(paths, extracting),
                      ExtractedBundle.stampsPath(paths, extracting)] { unlink(p) }
            try? Files.removeTree(paths.rootfs)
        } else {
            for p in [paths.config, paths.metadata, paths.log, paths.pid] { unlink(p) }
            try? Files.removeTree(paths.upper)
            rmdir(paths.rootfs)
        }
    }
}
