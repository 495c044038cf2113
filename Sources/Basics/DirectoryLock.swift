#if canImport(Glibc)
import Glibc
#endif

/// An advisory `flock` on a directory (an image layout, a bundle), held until this value is
/// deinitialized or `release()`d.
public final class DirectoryLock {
    public enum Mode: Sendable { case shared, exclusive }

    /// The locked directory, open; nil once released (closing it drops the lock).
    private var directory: OwnedDescriptor?

    /// Takes the lock, waiting for other holders; `what` names the directory in errors
    /// (a lock held without waiting elsewhere is not an error here: this waits).
    public init(_ path: String, _ mode: Mode, what: String) throws(StoreError) {
        let fd = try OwnedDescriptor(opening: path, O_RDONLY | O_DIRECTORY)
        try check(Files.retrying { flock(fd.raw, mode == .exclusive ? LOCK_EX : LOCK_SH) }, "lock \(what)", path)
        directory = consume fd
    }

    public func release() { directory = nil }
}
