#if canImport(Glibc)
import Glibc
#endif

/// The result of a system call that returns -1 and sets errno on failure (an fd, a count, or
/// 0), or `StoreError.system(operation, path)` naming it. The operation and path are
/// autoclosures: nothing is formatted unless the call failed, so checked calls on hot paths
/// cost no allocation.
@inline(__always) @discardableResult
public func check<T: BinaryInteger>(_ result: T, _ operation: @autoclosure () -> String,
                                    _ path: @autoclosure () -> String) throws(StoreError) -> T {
    if result < 0 { throw .system(operation(), path()) }
    return result
}

/// An open file descriptor with one owner, closed when the owner goes: noncopyable, so it
/// cannot be closed twice or used after close by a copy. `raw` lends it to system calls;
/// `take()` hands it on (to a C API or a longer-lived owner) without closing it.
public struct OwnedDescriptor: ~Copyable {
    public let raw: Int32

    /// Takes ownership of `raw`, an open descriptor.
    public init(_ raw: Int32) { self.raw = raw }

    /// Opens `path` (with O_CLOEXEC, retried on EINTR), or throws "open PATH: strerror".
    public init(opening path: String, _ flags: Int32, mode: mode_t = 0) throws(StoreError) {
        raw = try check(Files.retrying { open(path, flags | O_CLOEXEC, mode) }, "open", path)
    }

    /// Opens `name` under the directory `dirfd` (with O_CLOEXEC, retried on EINTR); `path`
    /// names it in the error.
    public init(at dirfd: Int32, _ name: UnsafePointer<CChar>, _ flags: Int32, mode: mode_t = 0,
                path: @autoclosure () -> String) throws(StoreError) {
        raw = try check(Files.retrying { openat(dirfd, name, flags | O_CLOEXEC, mode) }, "open", path())
    }

    /// The descriptor, no longer owned: the caller closes it.
    public consuming func take() -> Int32 {
        let fd = raw
        discard self
        return fd
    }

    deinit { close(raw) }
}
