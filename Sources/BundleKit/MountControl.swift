import Dispatch
import Basics
import BundleFormat

#if canImport(Glibc)
import Glibc
#endif

/// The mount server's control socket (BUNDLE/umoci-mount.sock, mode 0600 in the 0700 bundle):
/// one request line per connection, one reply line. The only request is `rebase` (made by
/// `repack --refresh-bundle`); the reply is `ok moved=N kept=N pause_ms=N` or `error MESSAGE`.
///
/// The socket is named through /proc/self/fd/N/, N an fd of the bundle directory, so that a
/// bundle path of any length fits in sockaddr_un.
public enum MountControl {
    /// How long a client waits for the reply.
    public static let replyTimeout = 600
    /// How long the server waits for a request line.
    public static let requestTimeout = 10

    /// Listens on the bundle's control socket and answers each request with `handle` on a
    /// background thread, one request at a time, for the life of the process.
    public static func serve(_ paths: BundlePaths, handle: @escaping @Sendable (String) -> String) throws(StoreError) {
        let fd = try withAddress(paths) { address throws(StoreError) -> Int32 in
            unlink(paths.control)
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .system("create control socket", paths.control) }
            let previous = umask(0o077)
            defer { umask(previous) }
            let bound = address.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            guard bound == 0, listen(fd, 4) == 0 else {
                close(fd)
                throw .system("listen on control socket", paths.control)
            }
            return fd
        }
        DispatchQueue(label: "umoci.mount-control").async {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EBADF || errno == EINVAL || errno == ENOTSOCK { return }
                    // Out of descriptors or memory, or an aborted connection: try again.
                    if errno != EINTR && errno != ECONNABORTED { usleep(100_000) }
                    continue
                }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                // A client that sends nothing must not hold up the ones after it.
                var timeout = timeval(tv_sec: requestTimeout, tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let request = readLine(client)
                let reply = handle(request) + "\n"
                reply.utf8CString.withUnsafeBufferPointer { buf in
                    _ = send(client, buf.baseAddress, buf.count - 1, Int32(MSG_NOSIGNAL))
                }
                close(client)
            }
        }
    }

    /// Sends `request` to the bundle's server and returns its reply line.
    public static func request(_ paths: BundlePaths, _ request: String) throws(StoreError) -> String {
        let fd = try withAddress(paths) { address throws(StoreError) -> Int32 in
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .system("create socket for", paths.control) }
            let connected = address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
            guard connected == 0 else {
                close(fd)
                throw .system("connect to the mount server at", paths.control)
            }
            return fd
        }
        defer { close(fd) }
        var timeout = timeval(tv_sec: replyTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let line = request + "\n"
        let sent = line.utf8CString.withUnsafeBufferPointer { buf in send(fd, buf.baseAddress, buf.count - 1, Int32(MSG_NOSIGNAL)) }
        guard sent == line.utf8.count else { throw .system("send to the mount server at", paths.control) }
        let reply = readLine(fd)
        guard !reply.isEmpty else { throw StoreError("the mount server at \(paths.control) did not answer") }
        return reply
    }

    /// One line (without its newline), at most 64 KiB.
    private static func readLine(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 16 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk[0..<n]
            if let newline = bytes.firstIndex(of: 0x0A) { return String(decoding: bytes[..<newline], as: UTF8.self) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Calls `body` with the socket's address, the bundle directory held open for its length.
    private static func withAddress<R>(_ paths: BundlePaths, _ body: (UnsafeMutablePointer<sockaddr_un>) throws(StoreError) -> R) throws(StoreError) -> R {
        let dir = try Files.open(paths.bundle, O_RDONLY | O_DIRECTORY)
        defer { close(dir) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let name = Array("/proc/self/fd/\(dir)/\(paths.control.split(separator: "/").last ?? "")".utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: name.prefix(raw.count - 1))
        }
        return try body(&address)
    }
}
