import Dispatch
import FuseFS
import Basics
import BundleFormat
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How a mount server notices that the user is deleting its bundle (`rm -rf`, Python's rmtree,
/// `find -delete`, in any order and from any mount namespace), so that its mount gets out of
/// the way (see FuseFS.Following):
/// - `upper/` deleted (inotify, after a delay, see watch()) or the bundle directory itself;
/// - at the opendir of the mount's root: `upper/` deleted or `umoci.json` gone. Synchronous,
///   for a delete that reaches `rootfs/` right after removing those (inotify would race it);
///   or, for an empty root, the opener holding the bundle directory open (isBundleOpen).
/// The mount also detaches when its root is emptied through it.
///
/// The bundle directory and `upper/` are held as O_PATH descriptors for the life of the server,
/// so that the checks follow a renamed bundle; nothing here writes into the bundle, and once
/// the mount followed it the server does not even remove its own files (the deleting program
/// would find them gone under it).
public final class BundleWatch: Sendable {
    /// O_PATH descriptors, owned, never closed (the server exits with them).
    public let bundle: Int32
    private let upper: Int32
    /// Set once the mount detached itself (the bundle is being deleted or its rootfs emptied):
    /// from then on the server leaves the bundle's files alone.
    public let followed = Atomic<Bool>(false)
    /// How long after upper/ was deleted the mount detaches, if nothing opened its root.
    public static let upperGoneDelay = 2.0

    public init(_ paths: BundlePaths) throws(StoreError) {
        let pathFlags: Int32 = Files.O_PATH_FLAG | O_DIRECTORY | O_CLOEXEC
        bundle = open(paths.bundle, pathFlags)
        guard bundle >= 0 else { throw .system("open", paths.bundle) }
        upper = open(paths.upper, pathFlags)
        guard upper >= 0 else { throw .system("open", paths.upper) }
    }

    /// Whether the bundle is being deleted: `upper/` or the bundle directory is gone, or
    /// `umoci.json` (never absent from a live bundle: it is replaced by rename).
    public var bundleGone: Bool {
        var st = stat()
        if fstat(upper, &st) == 0 && st.st_nlink == 0 { return true }
        if fstat(bundle, &st) == 0 && st.st_nlink == 0 { return true }
        return fstatat(bundle, BundleMetadata.fileName, &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT
    }

    /// Whether process (or thread) `pid` holds the bundle directory open: the mark of a
    /// recursive delete of the bundle (rm, find and rmtree keep the parent directory open while
    /// they go through its subdirectories). Only asked when the mounted root is empty, where
    /// such a delete has nothing to remove through the mount and would meet the mount point:
    /// a false alarm detaches an empty mount, and repack refuses what is then put into the
    /// plain rootfs/.
    /// Compares the links' texts: reading a link does not touch its target (a stat could wait
    /// on this very mount, or on any other file system).
    public func isBundleOpen(in pid: pid_t) -> Bool {
        guard pid > 0, let bundlePath = BundleWatch.readLink("/proc/self/fd/\(bundle)"),
              let fds = try? Files.list("/proc/\(pid)/fd") else { return false }
        return fds.contains { BundleWatch.readLink("/proc/\(pid)/fd/\($0)") == bundlePath }
    }

    public static func readLink(_ path: String) -> String? {
        var buffer = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = buffer.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { readlink(path, $0.baseAddress!, $0.count - 1) }
        }
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }

    /// Removes one of the server's own files (pid file, socket) from the bundle it was started
    /// in, wherever that is now, and never from a new bundle made at the same path.
    public func unlink(_ path: String) {
        guard let name = path.split(separator: "/").last else { return }
        _ = unlinkat(bundle, String(name), 0)
    }

    /// Calls `gone` (once, on a background thread) when inotify reports that `upper/` or the
    /// bundle directory was deleted. Only deletion counts: renaming the bundle is not the end.
    public func watch(_ gone: @escaping @Sendable (String) -> Void) throws(StoreError) {
        let fd = inotify_init1(Int32(IN_CLOEXEC))
        guard fd >= 0 else { throw .system("inotify_init1", "for the bundle") }
        let mask = UInt32(IN_DELETE) | UInt32(IN_DELETE_SELF)
        guard inotify_add_watch(fd, "/proc/self/fd/\(bundle)", mask) >= 0 else {
            close(fd)
            throw .system("watch the bundle directory", "/proc/self/fd/\(bundle)")
        }
        let upperName = "upper"
        DispatchQueue(label: "umoci.bundle-watch").async {
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            let header = MemoryLayout<inotify_event>.size
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                var offset = 0
                while offset + header <= n {
                    let (mask, length) = buffer.withUnsafeBytes { raw in
                        let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                        return (event.mask, Int(event.len))
                    }
                    let name = String(decoding: buffer[(offset + header)..<min(n, offset + header + length)].prefix { $0 != 0 },
                                      as: UTF8.self)
                    offset += header + length
                    if mask & UInt32(IN_DELETE_SELF) != 0 || mask & UInt32(IN_IGNORED) != 0 {
                        gone("the bundle directory was deleted")
                        return
                    }
                    if mask & UInt32(IN_DELETE) != 0 && name == upperName {
                        // Later, not now: a program deleting the bundle may have stat'ed
                        // rootfs/ (the mount) and be about to open it; detaching in between
                        // would show it another directory (Python's rmtree then fails). If it
                        // goes on into rootfs/, the root's opendir detaches synchronously.
                        DispatchQueue.global().asyncAfter(deadline: .now() + BundleWatch.upperGoneDelay) {
                            gone("the bundle's upper directory was deleted")
                        }
                        return
                    }
                }
            }
        }
    }
}
