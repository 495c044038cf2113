import CLinux
import Foundation
import Basics
import OCI
import BundleFormat
import Testing

#if canImport(Glibc)
import Glibc
#endif

public let fuseAvailable = access("/dev/fuse", R_OK | W_OK) == 0

/// Whether anything is mounted at or below `path` (this process's mount namespace).
public func mountedBelow(_ path: String) -> Bool {
    guard let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
    return mounts.split(separator: "\n").contains { line in
        let fields = line.split(separator: " ")
        return fields.count > 4 && (fields[4] == path || fields[4].hasPrefix(path + "/"))
    }
}

/// The pids of the mount servers of `bundle` (an absolute path), found by command line.
public func serverProcesses(of bundle: String) -> [pid_t] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { name in
        guard let pid = pid_t(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return nil }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard let i = arguments.firstIndex(of: "__serve"), i + 1 < arguments.count, arguments[i + 1] == bundle else { return nil }
        return pid
    }
}

/// Waits up to 10 s for the servers of `bundle` to exit; true if none is left.
public func serversExit(_ bundle: String) -> Bool {
    for _ in 0..<200 {
        if serverProcesses(of: bundle).isEmpty { return true }
        usleep(50_000)
    }
    return false
}

/// A bundle unpacked by this tool, unmounted when the value goes away, whatever the test did.
public final class MountedBundle {
    public let paths: BundlePaths

    public init(_ path: String) { paths = BundlePaths(path) }

    deinit {
        _ = try? run(ourUmoci, ["umount", paths.bundle])
        // Last resort, so that a failed test never leaves a mount for the next run.
        if mountedBelow(paths.rootfs) { umount2(paths.rootfs, Int32(MNT_DETACH)) }
    }
}

/// A tmpfs mounted on a fresh directory under `dir` for the length of `body`, detached after it
/// whatever happened (after the bundle inside it was cleaned up by `body`'s own defers).
public func withTmpfs<T>(_ dir: TemporaryDirectory, _ body: (String) throws -> T) throws -> T {
    let path = dir("tmpfs")
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    try #require(mount("tmpfs", path, "tmpfs", 0, "mode=0755") == 0, "mount tmpfs: \(String(cString: strerror(errno)))")
    defer { umount2(path, Int32(MNT_DETACH)) }
    return try body(path)
}
