#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// One extended attribute: its name as the kernel and tar archives carry it (bytes: a name
/// need not be UTF-8) and its value.
public struct Xattr: Sendable, Equatable {
    public var name: ByteString
    public var value: [UInt8]

    public init(name: ByteString, value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

/// The one way the project reaches an object's xattrs. An object that can be opened is reached
/// through its descriptor (f*xattr); one that cannot without following it or touching a device
/// (a symlink, a device node, a socket) by its name in a pinned directory, through
/// `/proc/self/fd/PARENT/NAME` and the l*xattr calls, which act on the link itself: never a
/// path walked from the root, which a symlink swapped in could redirect.
extension Xattr {
    public enum Target {
        /// An open descriptor of the object itself (not O_PATH): the f*xattr calls.
        case descriptor(Int32)
        /// An O_PATH descriptor of the object (which the f*xattr calls refuse): through its
        /// /proc/self/fd/N link, which names the object itself, so following it is safe.
        case pathDescriptor(Int32)
        /// `name` (one component) in the open directory `parent`, never followed.
        case entry(parent: Int32, name: ByteString)
    }

    /// The value of `name`, into `buffer` (nil: only its size). Returns the size, or -1 with
    /// errno set, as getxattr(2).
    public static func get(_ target: Target, _ name: ByteString, into buffer: UnsafeMutableRawBufferPointer?) -> Int {
        get(target, name.c, into: buffer)
    }

    /// `get` with a C-string name (the FUSE request's own, not copied).
    public static func get(_ target: Target, _ name: UnsafePointer<CChar>, into buffer: UnsafeMutableRawBufferPointer?) -> Int {
        switch target {
        case .descriptor(let fd): return fgetxattr(fd, name, buffer?.baseAddress, buffer?.count ?? 0)
        case .pathDescriptor(let fd): return withProcPath(fd, nil) { getxattr($0, name, buffer?.baseAddress, buffer?.count ?? 0) }
        case .entry(let parent, let entry): return withProcPath(parent, entry) { lgetxattr($0, name, buffer?.baseAddress, buffer?.count ?? 0) }
        }
    }

    /// Sets `name` to `value` (`flags`: XATTR_CREATE, XATTR_REPLACE). Returns 0, or -1 with
    /// errno set, as setxattr(2).
    public static func set(_ target: Target, _ name: ByteString, _ value: UnsafeRawBufferPointer, flags: Int32 = 0) -> Int32 {
        set(target, name.c, value, flags: flags)
    }

    /// `set` with a C-string name.
    public static func set(_ target: Target, _ name: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer, flags: Int32 = 0) -> Int32 {
        switch target {
        case .descriptor(let fd): return fsetxattr(fd, name, value.baseAddress, value.count, flags)
        case .pathDescriptor(let fd): return withProcPath(fd, nil) { setxattr($0, name, value.baseAddress, value.count, flags) }
        case .entry(let parent, let entry): return withProcPath(parent, entry) { lsetxattr($0, name, value.baseAddress, value.count, flags) }
        }
    }

    /// Removes `name`. Returns 0, or -1 with errno set, as removexattr(2).
    public static func remove(_ target: Target, _ name: ByteString) -> Int32 {
        remove(target, name.c)
    }

    /// `remove` with a C-string name.
    public static func remove(_ target: Target, _ name: UnsafePointer<CChar>) -> Int32 {
        switch target {
        case .descriptor(let fd): return fremovexattr(fd, name)
        case .pathDescriptor(let fd): return withProcPath(fd, nil) { removexattr($0, name) }
        case .entry(let parent, let entry): return withProcPath(parent, entry) { lremovexattr($0, name) }
        }
    }

    /// The names, NUL-terminated one after another, into `buffer` (nil: only their size).
    /// Returns the size, or -1 with errno set, as listxattr(2).
    public static func listNames(_ target: Target, into buffer: UnsafeMutableRawBufferPointer?) -> Int {
        let p = buffer?.baseAddress?.assumingMemoryBound(to: CChar.self)
        switch target {
        case .descriptor(let fd): return flistxattr(fd, p, buffer?.count ?? 0)
        case .pathDescriptor(let fd): return withProcPath(fd, nil) { listxattr($0, p, buffer?.count ?? 0) }
        case .entry(let parent, let entry): return withProcPath(parent, entry) { llistxattr($0, p, buffer?.count ?? 0) }
        }
    }

    /// Every xattr of the object, in the order the kernel lists them, or an error naming
    /// `path`: a layer must not silently lose one (say security.capability).
    public static func list(_ target: Target, path: String) throws(StoreError) -> [Xattr] {
        switch target {
        case .descriptor(let fd):
            return try read(path, listing: { flistxattr(fd, $0, $1) }, value: { fgetxattr(fd, $0, $1, $2) })
        case .pathDescriptor(let fd):
            let proc = ByteString("/proc/self/fd/\(fd)")
            return try read(path, listing: { listxattr(proc.c, $0, $1) }, value: { getxattr(proc.c, $0, $1, $2) })
        case .entry(let parent, let entry):
            let proc = ByteString("/proc/self/fd/\(parent)/") + entry
            return try read(path, listing: { llistxattr(proc.c, $0, $1) }, value: { lgetxattr(proc.c, $0, $1, $2) })
        }
    }

    /// Through `body`: "/proc/self/fd/FD" (name nil) or "/proc/self/fd/FD/NAME", built on the
    /// stack: the FUSE server asks per request (getxattr before every write), so no heap.
    static func withProcPath<R>(_ fd: Int32, _ name: ByteString?, _ body: (UnsafePointer<CChar>) -> R) -> R {
        let prefix: StaticString = "/proc/self/fd/"
        let nameCount = name?.count ?? 0
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: prefix.utf8CodeUnitCount + 12 + nameCount + 1) { out in
            var i = 0
            prefix.withUTF8Buffer { for b in $0 { out[i] = CChar(bitPattern: b); i += 1 } }
            var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            if fd < 0 { out[i] = 0x2D; i += 1 }  // "-": no such entry, never another descriptor
            var n = abs(Int(fd))
            var d = 0
            withUnsafeMutableBytes(of: &digits) { ds in
                repeat { ds[d] = UInt8(48 + n % 10); n /= 10; d += 1 } while n > 0
                while d > 0 { d -= 1; out[i] = CChar(bitPattern: ds[d]); i += 1 }
            }
            if let name {
                out[i] = 0x2F; i += 1  // "/"
                name.withBytes { for b in $0 { out[i] = CChar(bitPattern: b); i += 1 } }
            }
            out[i] = 0
            return body(UnsafePointer(out.baseAddress!))
        }
    }

    /// `list` over given listing and value calls (tests give failing ones). As umoci: a file
    /// system without xattrs (ENOTSUP) has none, and an xattr removed between listing and
    /// reading (ENODATA) is gone; sizes that change meanwhile (ERANGE) are read again.
    package static func read(_ path: String, listing: (UnsafeMutablePointer<CChar>?, Int) -> Int,
                             value: (UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int) throws(StoreError) -> [Xattr] {
        var names: [CChar] = []
        var n = 0
        while true {
            let size = listing(nil, 0)
            if size < 0 {
                if errno == ENOTSUP { return [] }
                throw .system("list xattrs of", path)
            }
            if size == 0 { return [] }
            names = [CChar](repeating: 0, count: size)
            n = names.withUnsafeMutableBufferPointer { listing($0.baseAddress, size) }
            if n >= 0 { break }
            if errno != ERANGE { throw .system("list xattrs of", path) }
        }
        var out: [Xattr] = []
        var start = 0
        for i in 0..<n where names[i] == 0 {
            defer { start = i + 1 }
            let key = names[start...i]  // with its NUL
            let name = key.withUnsafeBufferPointer { ByteString(cString: $0.baseAddress!) }
            var bytes: [UInt8] = []
            var got = -1
            var gone = false
            try key.withUnsafeBufferPointer { k throws(StoreError) in
                while true {
                    let length = value(k.baseAddress!, nil, 0)
                    if length < 0 {
                        if errno == ENODATA || errno == ENOTSUP { gone = true; return }
                        throw .system("read xattr \(name) of", path)
                    }
                    bytes = [UInt8](repeating: 0, count: length)
                    got = bytes.withUnsafeMutableBytes { value(k.baseAddress!, $0.baseAddress, length) }
                    if got >= 0 { return }
                    if errno == ENODATA { gone = true; return }
                    if errno != ERANGE { throw .system("read xattr \(name) of", path) }
                }
            }
            if !gone { out.append(Xattr(name: name, value: Array(bytes[0..<got]))) }
        }
        return out
    }
}
