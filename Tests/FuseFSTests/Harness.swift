#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Dispatch
import FuseFS
import Basics
import OCI
import LayerView
import Testing

nonisolated(unsafe) var imagesDirectory: String?

/// Images built once per test process by scripts/fixtures/make_image.py (basic, whiteouts).
enum Images {
    static let repository: String = {
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path
    }()

    static let layout: String? = {
        var template = Array("/tmp/umoci-fusefs-images-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            return nil
        }
        let layout = dir + "/layout"
        imagesDirectory = dir
        atexit { if let dir = imagesDirectory { try? Files.removeTree(dir) } }
        for c in ["basic", "whiteouts", "names"] {
            if run("python3 '\(repository)/scripts/fixtures/make_image.py' '\(layout)' \(c) >/dev/null") != 0 { return nil }
        }
        return layout
    }()

    static var fuseAvailable: Bool { access("/dev/fuse", R_OK | W_OK) == 0 && geteuid() == 0 }
}

/// Runs a shell command; its exit status.
@discardableResult
func run(_ command: String) -> Int32 {
    let status = system(command)
    if status == -1 { return -1 }
    return (status >> 8) & 0xFF
}

/// Runs a shell command as uid/gid 1000 without supplementary groups.
@discardableResult
func runAsUser(_ command: String) -> Int32 {
    let escaped = command.replacingOccurrences(of: "'", with: "'\\''")
    return run("/usr/bin/setpriv --reuid=1000 --regid=1000 --clear-groups -- sh -c '\(escaped)' 2>/dev/null")
}

extension String {
    func replacingOccurrences(of a: String, with b: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound]
            out += b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func range(of needle: String) -> Range<Substring.Index>? {
        guard !needle.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}

/// A mount of one image in a fresh temporary directory (upper dir, mountpoint, cache), served
/// on a background thread. `close()` always stops and unmounts (lazily as a last resort).
final class Mounted: @unchecked Sendable {
    let base: String
    let upper: String
    let mnt: String
    let view: MergedView
    let server: OverlayServer
    private let done = DispatchSemaphore(value: 0)
    private var closed = false

    init(tag: String = "basic", options: MountOptions = MountOptions()) throws {
        let layoutPath = try #require(Images.layout, "could not build the test images with make_image.py")
        var template = Array("/tmp/umoci-fusefs-XXXXXX".utf8CString)
        base = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        chmod(base, 0o755)
        upper = base + "/upper"
        mnt = base + "/mnt"
        mkdir(upper, 0o755)
        mkdir(mnt, 0o755)
        let layout = try ImageLayout(opening: layoutPath)
        view = try MergedView.open(layout: layout, image: layout.loadImage(tag: tag), cache: IndexCache(directory: base + "/cache"))
        server = try OverlayServer(view: view, upperDirectory: upper, mountpoint: mnt, options: options)
        let server = self.server
        let done = self.done
        let thread = Thread {
            do { try server.serve() } catch { print("serve: \(error)") }
            done.signal()
        }
        thread.start()
    }

    func path(_ p: String) -> String { mnt + "/" + p }
    func upperPath(_ p: String) -> String { upper + "/" + p }

    static func isMounted(_ path: String) -> Bool {
        guard let text = try? Files.read("/proc/mounts") else { return false }
        let lines = String(decoding: text, as: UTF8.self).split(separator: "\n")
        return lines.contains { $0.split(separator: " ").dropFirst().first.map(String.init) == path }
    }

    func close() {
        guard !closed else { return }
        closed = true
        server.stop()
        if done.wait(timeout: .now() + 10) == .timedOut {
            Issue.record("serve() did not return within 10 s after stop()")
        }
        if Mounted.isMounted(mnt) {
            Issue.record("\(mnt) still mounted after serve() returned")
            umount2(mnt, Int32(MNT_DETACH))
        }
        try? Files.removeTree(base)
    }

    deinit { close() }
}

/// A minimal thread for the server loop (no Foundation).
final class Thread: @unchecked Sendable {
    private let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func start() {
        var tid = pthread_t()
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&tid, nil, { arg in
            let t = Unmanaged<Thread>.fromOpaque(arg!).takeRetainedValue()
            t.body()
            return nil
        }, box)
        pthread_detach(tid)
    }
}

// MARK: Small POSIX helpers

func lstatOrNil(_ path: String) -> stat? {
    var st = stat()
    return lstat(path, &st) == 0 ? st : nil
}

func readFile(_ path: String) -> [UInt8]? { try? Files.read(path) }

func readText(_ path: String) -> String? { readFile(path).map { String(decoding: $0, as: UTF8.self) } }

@discardableResult
func writeFile(_ path: String, _ text: String, flags: Int32 = O_WRONLY | O_CREAT | O_TRUNC, mode: mode_t = 0o644) -> Int32 {
    let fd = open(path, flags | O_CLOEXEC, mode)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    return n == bytes.count ? 0 : errno
}

/// Names in a directory, sorted, without . and ..
func listNames(_ path: String) -> [String]? {
    (try? Files.list(path))?.sorted()
}

/// errno of a call that returns -1 on failure (0 on success).
func err(_ r: Int32) -> Int32 { r == 0 ? 0 : errno }

/// renameat2(2) (from the C shim: Glibc's Swift module lacks it); 0 or errno.
func renameat2(_ from: String, _ to: String, _ flags: UInt32) -> Int32 {
    umoci_renameat2(AT_FDCWD, from, AT_FDCWD, to, flags) == 0 ? 0 : errno
}

func getxattrString(_ path: String, _ name: String) -> String? {
    var buf = [UInt8](repeating: 0, count: 256)
    let n = lgetxattr(path, name, &buf, buf.count)
    return n < 0 ? nil : String(decoding: buf[0..<n], as: UTF8.self)
}

func listxattrNames(_ path: String) -> [String] {
    let size = llistxattr(path, nil, 0)
    guard size > 0 else { return [] }
    var buf = [CChar](repeating: 0, count: size)
    let n = llistxattr(path, &buf, size)
    guard n > 0 else { return [] }
    return buf[0..<n].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }.sorted()
}
