#if canImport(Glibc)
import Glibc
#endif
@testable import FuseFS
import Basics
import OCI
import LayerView
import Testing

/// The server's operations called directly, without the kernel in between: the kernel may
/// refuse a request before it reaches the server (Linux 6.6+ refuses a mode change of a
/// symlink in the VFS), but older kernels forward it, so the server itself must never act
/// through a symlink on the host.
@Suite("FuseFS operations without the kernel", .serialized, .enabled(if: geteuid() == 0, "needs root (chown)"))
struct OperationTests {
    /// An OverlayFS over the basic image with an empty upper directory, plus a host directory
    /// holding the file the test's symlinks point at.
    final class Fixture {
        let base: String
        let fs: OverlayFS
        let hostFile: String

        init() throws {
            let layoutPath = try #require(Images.layout, "could not build the test images with make_image.py")
            var template = Array("/tmp/umoci-ops-XXXXXX".utf8CString)
            base = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
            mkdir(base + "/upper", 0o755)
            mkdir(base + "/host", 0o755)
            hostFile = base + "/host/secret"
            #expect(writeFile(hostFile, "host data\n", mode: 0o600) == 0)
            chmod(hostFile, 0o600)
            let layout = try ImageLayout(opening: layoutPath)
            let view = try MergedView.open(layout: layout, image: layout.loadImage(tag: "basic"), cache: IndexCache(directory: base + "/cache"))
            fs = try OverlayFS(view: view, upperDirectory: base + "/upper")
        }

        /// A symlink at the mount's root pointing at the host file (absolute), as a container
        /// could make one.
        func hostLink(_ name: String) throws -> UInt64 {
            try fs.create(OverlayFS.rootId, ByteString(name), .symlink(ByteString(hostFile)), mode: 0o777, uid: 0, gid: 0).id
        }

        var hostStat: stat { lstatOrNil(hostFile) ?? stat() }

        deinit { try? Files.removeTree(base) }
    }

    static func errnoOf(_ body: () throws -> Void) -> Int32 {
        do { try body(); return 0 } catch let e as Errno { return e.code } catch { return -1 }
    }

    @Test func modeChangeOfSymlinkNeverReachesItsTarget() throws {
        let f = try Fixture()
        let link = try f.hostLink("evil")
        var change = OverlayFS.AttrChange()
        change.mode = 0o4777
        #expect(OperationTests.errnoOf { _ = try f.fs.setattr(link, change, handle: nil) } == EOPNOTSUPP)
        #expect(f.hostStat.st_mode & 0o7777 == 0o600, "the symlink's host target kept its mode")

        // The image's own absolute symlink (abs-link -> /etc/hostname): copied up, not followed.
        let (lower, _) = try f.fs.lookup(OverlayFS.rootId, "abs-link")
        let before = lstatOrNil("/etc/hostname")
        #expect(OperationTests.errnoOf { _ = try f.fs.setattr(lower, change, handle: nil) } == EOPNOTSUPP)
        #expect(lstatOrNil("/etc/hostname")?.st_mode == before?.st_mode)
    }

    @Test func otherAttributeChangesOfSymlinkActOnTheLinkItself() throws {
        let f = try Fixture()
        let link = try f.hostLink("evil")
        let target = f.hostStat
        var owner = OverlayFS.AttrChange()
        owner.uid = 1234
        owner.gid = 5678
        let st = try f.fs.setattr(link, owner, handle: nil)
        #expect(st.st_uid == 1234 && st.st_gid == 5678 && st.st_mode & S_IFMT == S_IFLNK)
        var times = OverlayFS.AttrChange()
        times.mtime = timespec(tv_sec: 1_000_000, tv_nsec: 0)
        let st2 = try f.fs.setattr(link, times, handle: nil)
        #expect(st2.st_mtim.tv_sec == 1_000_000)
        var size = OverlayFS.AttrChange()
        size.size = 0
        #expect(OperationTests.errnoOf { _ = try f.fs.setattr(link, size, handle: nil) } == EINVAL)
        #expect(OperationTests.errnoOf { _ = try f.fs.open(link, flags: O_WRONLY) } == ELOOP)
        let value: [UInt8] = Array("x".utf8)
        _ = value.withUnsafeBytes { v in OperationTests.errnoOf { try f.fs.setxattr(link, "trusted.umoci-test", v, flags: 0) } }
        let after = f.hostStat
        #expect(after.st_uid == target.st_uid && after.st_gid == target.st_gid)
        #expect(after.st_mode == target.st_mode && after.st_size == target.st_size)
        #expect(after.st_mtim.tv_sec == target.st_mtim.tv_sec)
        #expect(getxattrString(f.hostFile, "trusted.umoci-test") == nil)
        #expect(readText(f.hostFile) == "host data\n")
    }

    @Test func rootDirectoryTakesXattrs() throws {
        let f = try Fixture()
        let value: [UInt8] = Array("root value".utf8)
        try value.withUnsafeBytes { v in try f.fs.setxattr(OverlayFS.rootId, "user.umoci-test", v, flags: 0) }
        let size = try f.fs.getxattr(OverlayFS.rootId, "user.umoci-test", nil)
        #expect(size == value.count)
        #expect(getxattrString(f.base + "/upper", "user.umoci-test") == "root value")
        try f.fs.removexattr(OverlayFS.rootId, "user.umoci-test")
        #expect(getxattrString(f.base + "/upper", "user.umoci-test") == nil)
    }

    /// What a copy-up killed halfway left behind is removed before the upper directory is
    /// served, and never packed.
    @Test func leftoversOfAnInterruptedCopyUpAreRemoved() throws {
        var template = Array("/tmp/umoci-ops-XXXXXX".utf8CString)
        let base = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        defer { try? Files.removeTree(base) }
        mkdir(base + "/upper", 0o755)
        mkdir(base + "/upper/etc", 0o755)
        #expect(writeFile(base + "/upper/etc/.wh..wh..umoci-copyup.1234abcd", "half") == 0)
        #expect(writeFile(base + "/upper/etc/kept", "kept") == 0)
        let layout = try ImageLayout(opening: try #require(Images.layout))
        let view = try MergedView.open(layout: layout, image: layout.loadImage(tag: "basic"), cache: IndexCache(directory: base + "/cache"))
        _ = try OverlayFS(view: view, upperDirectory: base + "/upper")
        #expect(listNames(base + "/upper/etc") == ["kept"])
    }

    @Test func lowerSymlinksReportMode0777() throws {
        let f = try Fixture()
        let (_, st) = try f.fs.lookup(OverlayFS.rootId, "rel-link")
        #expect(st.st_mode == S_IFLNK | 0o777)
    }
}
