#if canImport(Glibc)
import Glibc
#endif
import Basics

// Linux interfaces that Glibc's Swift module leaves out (GNU extensions, variadic `syscall`),
// reached by constant or through dlsym. The C functions looked up here are plain functions
// (glibc implements `syscall` in assembly, moving integer registers only), so calling them
// through a non-variadic function pointer with integer arguments is sound on x86_64 and arm64.

/// An errno value, the only error the filesystem code throws; callbacks reply it as is.
struct Errno: Error {
    var code: Int32
    init(_ code: Int32) { self.code = code }
    /// The current `errno` (EIO if it is somehow 0).
    static var current: Errno { Errno(errno == 0 ? EIO : errno) }
}

enum Sys {
    static let O_PATH: Int32 = Files.O_PATH_FLAG
    static let AT_EMPTY_PATH: Int32 = 0x1000
    static let RENAME_NOREPLACE: UInt32 = 1
    static let RENAME_EXCHANGE: UInt32 = 2
    static let RENAME_WHITEOUT: UInt32 = 4
    static let XATTR_CREATE: Int32 = 1
    static let XATTR_REPLACE: Int32 = 2
    static let RESOLVE_NO_MAGICLINKS: UInt64 = 0x02
    static let RESOLVE_NO_SYMLINKS: UInt64 = 0x04
    static let RESOLVE_BENEATH: UInt64 = 0x08
    static let SYS_openat2: Int = 437  // same number on x86_64 and arm64 (unified table)
    static let UTIME_NOW: Int = (1 << 30) - 1
    static let UTIME_OMIT: Int = (1 << 30) - 2

    typealias Syscall5 = @convention(c) (Int, Int, Int, Int, Int, Int) -> Int
    typealias Fallocate = @convention(c) (Int32, Int32, Int64, Int64) -> Int32
    typealias Renameat2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32

    static let syscallFunction: Syscall5? = symbol("syscall")
    static let fallocateFunction: Fallocate? = symbol("fallocate64") ?? symbol("fallocate")
    static let renameat2Function: Renameat2? = symbol("renameat2")

    static func symbol<T>(_ name: String) -> T? {
        guard let handle = dlopen(nil, RTLD_NOW), let p = dlsym(handle, name) else { return nil }
        return unsafeBitCast(p, to: T.self)
    }

    private struct OpenHow { var flags: UInt64; var mode: UInt64; var resolve: UInt64 }

    /// openat2(2) with `resolve`; -1 with errno ENOSYS where the kernel or libc lacks it.
    static func openat2(_ dirfd: Int32, _ path: ByteString, flags: Int32, resolve: UInt64) -> Int32 {
        guard let call = syscallFunction else { errno = ENOSYS; return -1 }
        var how = OpenHow(flags: UInt64(UInt32(bitPattern: flags)), mode: 0, resolve: resolve)
        return path.c.withUnsafeBufferPointer { buffer in
            let p = buffer.baseAddress!
            return withUnsafeMutablePointer(to: &how) { h in
                while true {
                    let r = call(SYS_openat2, Int(dirfd), Int(bitPattern: UnsafeRawPointer(p)), Int(bitPattern: UnsafeRawPointer(h)),
                                 MemoryLayout<OpenHow>.size, 0)
                    if r == -1 && (errno == EINTR || errno == EAGAIN) { continue }
                    return Int32(truncatingIfNeeded: r)
                }
            }
        }
    }

    static func fallocate(_ fd: Int32, _ mode: Int32, _ offset: Int64, _ length: Int64) -> Int32 {
        guard let f = fallocateFunction else { errno = EOPNOTSUPP; return -1 }
        return f(fd, mode, offset, length)
    }

    static func renameat2(_ olddir: Int32, _ old: ByteString, _ newdir: Int32, _ new: ByteString, _ flags: UInt32) -> Int32 {
        guard let f = renameat2Function else { errno = ENOSYS; return -1 }
        return f(olddir, old.c, newdir, new.c, flags)
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
