#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import FuseFS
import Basics
import Testing

@Suite("FuseFS server", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct ServerTests {
    @Test func mountErrorsAreStoreErrors() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(throws: StoreError.self) {
            try OverlayServer(view: m.view, upperDirectory: m.base + "/missing", mountpoint: m.mnt, options: MountOptions())
        }
        #expect(throws: StoreError.self) {
            try OverlayServer(view: m.view, upperDirectory: m.upper, mountpoint: m.base + "/missing", options: MountOptions())
        }
    }

    @Test func stopWithOpenFilesAndUnmountFromOutside() throws {
        let m = try Mounted()
        do {
            defer { m.close() }
            let fd = open(m.path("etc/hostname"), O_RDONLY)
            #expect(fd >= 0)
            var buf = [UInt8](repeating: 0, count: 16)
            #expect(read(fd, &buf, 16) == 5)
            close(fd)
        }
        #expect(!Mounted.isMounted(m.mnt))
        // An unmount by someone else ends serve() too.
        let m2 = try Mounted()
        defer { m2.close() }
        #expect(run("fusermount3 -u '\(m2.mnt)' 2>/dev/null || umount '\(m2.mnt)'") == 0)
        m2.close()
        #expect(!Mounted.isMounted(m2.mnt))
    }

    /// close() costs no round trip: the server answers the kernel's first FLUSH with ENOSYS, and
    /// the kernel closes files without asking from then on. Reads and writes are unchanged.
    @Test func closeSendsNoFlush() throws {
        let m = try Mounted()
        defer { m.close() }
        for _ in 0..<5 {
            #expect(readText(m.path("etc/hostname")) == "test\n")
            #expect(writeFile(m.path("new-file"), "written\n", flags: O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW) == 0)
        }
        #expect(readText(m.path("new-file")) == "written\n")
        #expect(m.server.requestCount(.open) + m.server.requestCount(.create) >= 10)
        #expect(m.server.requestCount(.flush) <= 1)
    }

    @Test func concurrentOperations() throws {
        let m = try Mounted(tag: "whiteouts")
        defer { m.close() }
        let failures = Mutexed(0)
        DispatchQueue.concurrentPerform(iterations: 6) { t in
            let dir = m.path("w\(t)")
            if mkdir(dir, 0o755) != 0 { failures.add(1); return }
            for i in 0..<40 {
                let f = "\(dir)/f\(i)"
                if writeFile(f, "thread \(t) file \(i)") != 0 { failures.add(1) }
                if readText(f) != "thread \(t) file \(i)" { failures.add(1) }
                if rename(f, "\(dir)/g\(i)") != 0 { failures.add(1) }
                if i % 2 == 0, unlink("\(dir)/g\(i)") != 0 { failures.add(1) }
                // Lower reads and copy-ups interleaved.
                if readText(m.path("multi/f\(pad3(i))")) == nil { failures.add(1) }
                if t == 0, chmod(m.path("multi/f\(pad3(i))"), 0o600) != 0 { failures.add(1) }
                _ = listNames(m.path("multi"))
            }
            if (listNames(dir) ?? []).count != 20 { failures.add(1) }
        }
        #expect(failures.value == 0)
        #expect((listNames(m.path("multi")) ?? []).count == 200)
    }
}

func pad3(_ i: Int) -> String {
    let s = String(i)
    return String(repeating: "0", count: max(0, 3 - s.count)) + s
}

final class Mutexed: @unchecked Sendable {
    private var v: Int
    private var lock = pthread_mutex_t()
    init(_ v: Int) { self.v = v; pthread_mutex_init(&lock, nil) }
    func add(_ n: Int) { pthread_mutex_lock(&lock); v += n; pthread_mutex_unlock(&lock) }
    var value: Int { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return v }
}

@Suite("FuseFS upper safety", .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct SafetyTests {
    /// A symlink planted in the upper directory behind the server's back is never followed.
    @Test func upperSymlinksAreNotFollowed() throws {
        let m = try Mounted()
        defer { m.close() }
        let outside = m.base + "/outside"
        mkdir(outside, 0o755)
        #expect(writeFile(m.path("etc/hostname"), "copied") == 0)
        #expect(rename(m.upperPath("etc"), m.upperPath("etc.real")) == 0)
        #expect(symlink(outside, m.upperPath("etc")) == 0)
        #expect(writeFile(m.path("etc/planted"), "x") != 0)
        #expect(mkdir(m.path("etc/d"), 0o755) != 0)
        #expect(listNames(outside) == [])
    }
}

@Suite("FuseFS directory listings", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct ListingTests {
    /// `.` and `..` in a listing carry the st_ino stat reports for the directory and its
    /// parent, as on ext4 (they carried the FUSE node id, truncated to 32 bits).
    @Test func dotEntriesReportTheDirectoriesInodes() throws {
        let m = try Mounted()
        defer { m.close() }
        for (dir, parent) in [("home/user", "home"), ("etc", ""), ("", "")] {
            let d = try #require(opendir(m.path(dir)))
            defer { closedir(d) }
            var dots: [String: UInt64] = [:]
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name == "." || name == ".." { dots[name] = UInt64(e.pointee.d_ino) }
            }
            #expect(dots["."] == lstatOrNil(m.path(dir)).map { UInt64($0.st_ino) }, "\(dir)/.")
            // The mount's root has no parent in the mount: `..` is itself, as for any mount root.
            #expect(dots[".."] == lstatOrNil(m.path(parent)).map { UInt64($0.st_ino) }, "\(dir)/..")
        }
    }
}
