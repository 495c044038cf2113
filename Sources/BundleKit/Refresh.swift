#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import UpperFormat
import BundleFormat

/// --refresh-bundle: the new image becomes the bundle's base, and what the upper directory
/// holds no longer counts as a change.
/// - An unmounted bundle's upper directory is emptied.
/// - A mounted one is rebased by its server: repack records what it packed (the baseline,
///   BUNDLE/umoci-upper-baseline) and asks the server to serve the new base, which empties the
///   upper directory of everything still exactly as packed while the mount and the containers
///   on it go on (see OverlayServer.rebase). What changed after repack read it, and files open
///   for writing, stay and go into the next layer.
/// - If the server cannot do it, the bundle stays consistent on the baseline alone: the next
///   repack leaves out what is unchanged and whites out what was removed since, and `umoci
///   mount` adds those whiteouts before serving the new base.
public enum Refresh {
    public static func rebase(_ paths: BundlePaths, metadata: inout BundleMetadata, onto path: DescriptorPath, in layout: String,
                       mounted: Bool, packed: UpperBaseline) throws {
        // The new base first: a crash before the baseline is written only makes the next layer
        // repeat what this one holds, never miss a change.
        metadata.setFromDescriptorPath(path)
        metadata.mount?.layout = Mounting.canonical(layout)
        try metadata.write(bundle: paths.bundle)
        if mounted {
            try packed.write(paths.baseline)
        } else {
            let fd = try Files.open(paths.upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            defer { close(fd) }
            try Files.removeContents(of: fd, path: paths.upper)
            try Files.unlink(paths.baseline)
        }
    }

    /// Asks the mount server to serve the new base; warns (the bundle is consistent either way)
    /// when it cannot.
    public static func rebaseMount(_ paths: BundlePaths, log: RuntimeBundle.Log) {
        do {
            let reply = try MountControl.request(paths, "rebase")
            guard reply.hasPrefix("ok") else {
                throw StoreError(reply.hasPrefix("error ") ? String(reply.dropFirst(6)) : "unexpected reply \(quoted: ByteString(reply))")
            }
            log.info("the mount now serves the new image (\(reply))")
        } catch {
            log.warn("the mount keeps serving the previous image with the upper directory as it is (the next repack still holds only newer changes): \(error)")
            return
        }
        do {
            try Files.removeTree(paths.trash)
        } catch {
            log.warn("\(error) (removed at the next mount)")
        }
    }
}
