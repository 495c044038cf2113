import Dispatch
import FuseFS
import CLinux
import Basics
import UpperFormat
import BundleFormat

#if canImport(Glibc)
import Glibc
#endif

/// Starting, finding and stopping the server that keeps a bundle's rootfs mounted. The server
/// is this same binary run as `umoci __serve BUNDLE` in its own session, logging to the
/// bundle's log file; it tells the starter over a pipe once the mount is in place.
public enum Mounting {
    public enum State { case notMounted, live, dead }

    /// Whether `path` is a mount point, and whether its server still answers.
    public static func state(of path: String) -> State {
        guard mountType(of: path) != nil else { return .notMounted }
        // statvfs always reaches the server (stat may be answered from the kernel's cache).
        var fs = statvfs()
        if statvfs(path, &fs) != 0 && (errno == ENOTCONN || errno == ECONNABORTED || errno == EIO) { return .dead }
        return .live
    }

    /// The file system type of the topmost mount at `path` ("fuse.umoci" for this tool's
    /// mounts), from /proc/self/mountinfo; nil if nothing is mounted there.
    public static func mountType(of path: String) -> String? {
        guard let mounts = try? Files.read("/proc/self/mountinfo") else { return nil }
        let target = canonical(path)
        var found: String?
        for line in String(decoding: mounts, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, unescapeMountPath(String(fields[4])) == target else { continue }
            // After the optional fields, " - " and then the type.
            if let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count { found = String(fields[dash + 1]) }
        }
        return found
    }

    /// The absolute path, resolving symlinks in the parent only: the path itself may be a
    /// mount whose server is gone, which must not be touched.
    public static func canonical(_ path: String) -> String {
        // "layout/" names the same directory as "layout".
        var path = path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        let parent = Files.directoryName(path)
        let base = String(path.split(separator: "/").last ?? "")
        guard let resolved = realpath(parent, nil) else { return path }
        defer { free(resolved) }
        let dir = String(cString: resolved)
        if base.isEmpty || base == "." { return dir }
        return dir == "/" ? "/" + base : dir + "/" + base
    }

    /// /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    public static func unescapeMountPath(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == 0x5C, i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Detaches a mount whose server is gone ("Transport endpoint is not connected").
    public static func cleanUpDeadMount(_ path: String) {
        if state(of: path) == .dead { detach(path) }
    }

    /// Detaches the mount at `path` lazily; an unprivileged user's through fusermount3.
    @discardableResult
    public static func detach(_ path: String) -> Bool {
        if geteuid() != 0 { return fusermount(["-u", "-z", "-q", path]) }
        return umount2(path, Int32(MNT_DETACH)) == 0
    }

    /// Runs Debian's setuid fusermount3 (how an unprivileged user unmounts a FUSE mount of its
    /// own); true if it succeeded.
    public static func fusermount(_ arguments: [String]) -> Bool {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = (["fusermount3"] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        guard posix_spawnp(&pid, "fusermount3", &actions, nil, &argv, environ) == 0 else { return false }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status == 0
    }

    /// Checks that FUSE can work here before anything is created.
    public static func checkFuse() throws {
        guard access("/dev/fuse", F_OK) == 0 else {
            throw StoreError("FUSE is not available: /dev/fuse does not exist (load the fuse module or run where FUSE is allowed)")
        }
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw StoreError("FUSE is not available: cannot open /dev/fuse: \(String(cString: strerror(errno)))")
        }
        close(fd)
    }

    /// Starts the server for `bundle` (logging at `logLevel`) and returns once its rootfs is
    /// mounted. The server is `executable __serve` (this binary, unless the caller is not
    /// the command line: a test process names the umoci it built).
    public static func start(_ paths: BundlePaths, logLevel: String, executable: String = selfExecutable()) throws {
        try checkFuse()
        // After a refresh while mounted, the upper directory must describe changes against
        // the new base before it is served on it.
        try UpperBaseline.read(paths.baseline)?.reconcile(upperDirectory: paths.upper)
        // Left by a rebase that was cut short.
        try Files.removeTree(paths.trash)
        var pipeFds: [Int32] = [0, 0]
        guard pipe(&pipeFds) == 0 else { throw StoreError.system("pipe", "for the mount server") }
        let (readEnd, writeEnd) = (pipeFds[0], pipeFds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        defer { close(readEnd) }

        // The server must not hold anything of ours open but what it is given (a pipe inherited
        // by accident would keep whoever reads our output waiting for the server to exit).
        closeOnExecAbove(2)
        let logFd = try Files.open(paths.log, O_WRONLY | O_CREAT | O_APPEND, mode: 0o600)
        defer { close(logFd) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logFd, 1)
        posix_spawn_file_actions_adddup2(&actions, logFd, 2)
        // The pipe's write end becomes fd 3 in the server (dup2 clears close-on-exec).
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // glibc's POSIX_SPAWN_SETSID (a GNU extension the Glibc module does not export): the
        // server gets its own session, so it outlives the terminal that ran unpack.
        let spawnSetsid: Int16 = 0x80
        posix_spawnattr_setflags(&attributes, spawnSetsid)

        // An absolute bundle path, so that `umount` can find the server by its command line.
        let arguments = [executable, "__serve", canonical(paths.bundle), "--ready-fd", "3", "--log", logLevel]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, &argv, environ)
        close(writeEnd)
        guard rc == 0 else { throw StoreError("start the mount server: \(String(cString: strerror(rc)))") }

        // Wait for "ok" or an error line; EOF without either means the server died.
        var message: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Files.retrying { read(readEnd, &chunk, chunk.count) }
            if n <= 0 { break }
            message.append(contentsOf: chunk[0..<n])
        }
        let text = String(decoding: message, as: UTF8.self).trimmingCharacters(in: "\n")
        if text == "ok" { return }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        if mountType(of: paths.rootfs) != nil { detach(paths.rootfs) }
        throw StoreError(text.isEmpty ? "the mount server exited before the mount was ready; see \(paths.log)" : text)
    }

    /// Marks every open descriptor above `n` close-on-exec.
    public static func closeOnExecAbove(_ n: Int32) {
        guard let names = try? Files.list("/proc/self/fd") else { return }
        for name in names {
            if let fd = Int32(name), fd > n { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
    }

    /// Unmounts a bundle's rootfs; the server then exits by itself. Waits for it. Needs
    /// nothing of the bundle but the mount: umoci.json, the pid file or upper/ may be gone.
    public static func stop(_ paths: BundlePaths) throws {
        if let type = mountType(of: paths.rootfs), type != "fuse.umoci" {
            throw StoreError("\(paths.rootfs) is not mounted by umoci (it is a \(type) mount)")
        }
        let servers = serverProcesses(paths)
        switch state(of: paths.rootfs) {
        case .notMounted:
            // A bundle being deleted: its server detached the mount itself (BundleWatch).
            if !Files.exists(paths.metadata) || !Files.isDirectory(paths.upper) { break }
            throw StoreError(.notFound, RuntimeBundle(paths.bundle).notMountedAdvice(.notMounted), subject: paths.rootfs)
        case .dead:
            detach(paths.rootfs)
        case .live where geteuid() != 0:
            // An unprivileged user's mount (a rootless unpack): fusermount3 unmounts it.
            if !fusermount(["-u", paths.rootfs]) {
                if mountType(of: paths.rootfs) == nil { break }
                throw StoreError("\(paths.rootfs) could not be unmounted (fusermount3 -u failed): stop the containers and processes that use it first")
            }
        case .live:
            if umount2(paths.rootfs, 0) != 0 {
                let error = errno
                // The server detached it in the meantime (its bundle is being deleted).
                if error == EINVAL && mountType(of: paths.rootfs) == nil { break }
                errno = error
                if errno == EBUSY {
                    throw StoreError("\(paths.rootfs) is busy: stop the containers and processes that use it first")
                }
                throw StoreError.system("unmount", paths.rootfs)
            }
        }
        for _ in 0..<200 where servers.contains(where: { kill($0, 0) == 0 && isServer($0) }) { usleep(50_000) }
    }

    /// The bundle's server: the pid file's, or else found by its command line
    /// (`umoci __serve ABSOLUTE-BUNDLE`), for when the pid file is gone.
    public static func serverProcesses(_ paths: BundlePaths) -> [pid_t] {
        let bundle = canonical(paths.bundle)
        let found = ((try? Files.list("/proc")) ?? []).compactMap { name -> pid_t? in
            guard let pid = pid_t(name), let cmdline = try? Files.read("/proc/\(name)/cmdline") else { return nil }
            let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let i = arguments.firstIndex(of: "__serve"), i + 1 < arguments.count, arguments[i + 1] == bundle else { return nil }
            return pid
        }
        if !found.isEmpty { return found }
        // A server started with a relative bundle path (by an earlier version).
        if let text = try? Files.read(paths.pid), let pid = pid_t(String(decoding: text, as: UTF8.self).trimmingCharacters(in: "\n")),
           let cmdline = try? Files.read("/proc/\(pid)/cmdline") {
            let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if let i = arguments.firstIndex(of: "__serve"), i + 1 < arguments.count, !arguments[i + 1].hasPrefix("/") { return [pid] }
        }
        return []
    }

    /// The process is a mount server of this tool (the pid file may be stale).
    public static func isServer(_ pid: pid_t) -> Bool {
        guard let cmdline = try? Files.read("/proc/\(pid)/cmdline") else { return false }
        return cmdline.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "__serve" }
    }

    /// Writes out what is dirty on the mount (pages changed through mmap) to the server, with
    /// syncfs(2) on the mount alone.
    public static func flush(_ paths: BundlePaths) throws {
        let fd = open(paths.rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError.system("open", paths.rootfs) }
        defer { close(fd) }
        if umoci_syncfs(fd) != 0 { throw StoreError.system("syncfs", paths.rootfs) }
    }

    public static func selfExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }
}

extension String {
    public func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.last == set { s.removeLast() }
        while s.first == set { s.removeFirst() }
        return String(s)
    }
}
