#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Basics

/// An errno value, the only error the filesystem code throws; callbacks reply it as is.
struct Errno: Error {
    var code: Int32
    init(_ code: Int32) { self.code = code }
    /// The current `errno` (EIO if it is somehow 0).
    static var current: Errno { Errno(errno == 0 ? EIO : errno) }
}

/// The kernel interfaces Glibc's Swift module leaves out, from the C shim (CLinux/shim.h,
/// where each value is checked against the system headers), under shorter names.
enum Sys {
    static let O_PATH: Int32 = UMOCI_O_PATH
    static let O_TMPFILE: Int32 = UMOCI_O_TMPFILE
    static let AT_EMPTY_PATH: Int32 = UMOCI_AT_EMPTY_PATH
    static let RENAME_NOREPLACE: UInt32 = UMOCI_RENAME_NOREPLACE
    static let RENAME_EXCHANGE: UInt32 = UMOCI_RENAME_EXCHANGE
    static let RESOLVE_BENEATH_NO_LINKS: UInt64 = UMOCI_RESOLVE_BENEATH | UMOCI_RESOLVE_NO_SYMLINKS | UMOCI_RESOLVE_NO_MAGICLINKS
    static let UTIME_NOW: Int = UMOCI_UTIME_NOW
    static let UTIME_OMIT: Int = UMOCI_UTIME_OMIT

    /// openat2(2) with `resolve`; -1 with errno ENOSYS where the kernel lacks it.
    @inline(__always)
    static func openat2(_ dirfd: Int32, _ path: ByteString, flags: Int32, resolve: UInt64) -> Int32 {
        umoci_openat2(dirfd, path.c, flags, resolve)
    }

    @inline(__always)
    static func renameat2(_ olddir: Int32, _ old: ByteString, _ newdir: Int32, _ new: ByteString, _ flags: UInt32) -> Int32 {
        umoci_renameat2(olddir, old.c, newdir, new.c, flags)
    }
}

/// A per-thread scratch buffer, grown on demand and reused across requests so that the read
/// paths do not allocate. Owned by the thread (freed by the key's destructor at thread exit).
enum ThreadBuffer {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in free(p) }
        return k
    }()

    /// At least `size` bytes, valid until the calling thread's next call.
    static func get(_ size: Int) -> UnsafeMutableRawBufferPointer {
        let header = 16
        if let p = pthread_getspecific(key) {
            if p.load(as: Int.self) >= size { return UnsafeMutableRawBufferPointer(start: p + header, count: size) }
            free(p)
        }
        let capacity = max(size, 256 << 10)
        guard let p = malloc(capacity + header) else { fatalError("out of memory") }
        p.storeBytes(of: capacity, as: Int.self)
        pthread_setspecific(key, p)
        return UnsafeMutableRawBufferPointer(start: p + header, count: size)
    }
}

/// A directory file descriptor that is either owned (closed by `close()`) or borrowed (the
/// upper root).
struct DirFD {
    var fd: Int32
    var owned: Bool
    func close() { if owned { _ = Glibc.close(fd) } }
}

extension ByteString {
    static let whiteoutPrefix: ByteString = ".wh."
    /// A name the upper directory uses for its markers: never shown, never created through
    /// the mount.
    @inline(__always) var isWhiteoutName: Bool { hasPrefix(ByteString.whiteoutPrefix) }
}
