#if canImport(Glibc)
import Glibc
#endif

/// An advisory `flock` on a directory (an image layout, a bundle), held until this value is
/// deinitialized or `release()`d.
public final class DirectoryLock {
    public enum Mode: Sendable { case shared, exclusive }

    private var fd: Int32

    /// Takes the lock, waiting for other holders; `what` names the directory in errors.
    public init(_ path: String, _ mode: Mode, what: String) throws(StoreError) {
        fd = try Files.open(path, O_RDONLY | O_DIRECTORY)
        if Files.retrying({ flock(fd, mode == .exclusive ? LOCK_EX : LOCK_SH) }) != 0 {
            let e = StoreError.system("lock \(what)", path)
            close(fd)
            throw e
        }
    }

    public func release() {
        if fd >= 0 { close(fd); fd = -1 }
    }

    deinit { release() }
}
