#if canImport(Glibc)
import Glibc
#endif
import CLinux
@testable import FuseFS
import LayerStore
import Synchronization
import Testing

/// The server's file system logic without a mount: an OverlayFS over a real merged view of a
/// real image (scripts/fixtures/make_image.py) and a real upper directory in a temporary
/// directory, driven by calling its operations as the FUSE callbacks do. Nothing here needs
/// the kernel's FUSE; an unprivileged run records owners as a rootless server does.
final class Served: @unchecked Sendable {
    let base: String
    let layout: String
    let upper: String
    let view: MergedView
    let fs: OverlayFS
    let logged = LogLines()

    init(tag: String = "basic") throws {
        let images = try #require(Images.layout, "could not build the test images with make_image.py")
        var template = Array("/tmp/umoci-fusefs-types-XXXXXX".utf8CString)
        base = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        layout = base + "/layout"
        upper = base + "/upper"
        // A layout of its own: some tests damage its blobs.
        #expect(run("cp -a '\(images)' '\(layout)'") == 0)
        mkdir(upper, 0o755)
        let opened = try ImageLayout(opening: layout)
        view = try MergedView.open(layout: opened, image: opened.loadImage(tag: tag), cache: IndexCache(directory: base + "/cache"))
        let ownership: MountOwnership? = geteuid() == 0 ? nil : MountOwnership(
            uidMappings: [IdMapping(containerID: 0, hostID: geteuid(), size: 1)],
            gidMappings: [IdMapping(containerID: 0, hostID: getegid(), size: 1)])
        let logged = self.logged
        fs = try OverlayFS(view: view, upperDirectory: upper, ownership: ownership, log: { line in logged.lines.withLock { $0.append(line) } })
    }

    /// The node id of a path, looked up from the root as the kernel does.
    func lookup(_ path: String) throws(Errno) -> (id: UInt64, st: stat) {
        var id = OverlayFS.rootId
        var st = stat()
        for name in path.split(separator: "/") {
            (id, st) = try fs.lookup(id, ByteString(String(name)))
        }
        return (id, st)
    }

    func upperPath(_ p: String) -> String { upper + "/" + p }

    deinit { try? Files.removeTree(base) }
}

/// What the server logged.
final class LogLines: Sendable {
    let lines = Mutex<[String]>([])
}

/// The errno an operation threw, 0 if it returned.
func errnoOf<R>(_ body: () throws(Errno) -> R) -> Int32 {
    do { _ = try body(); return 0 } catch { return error.code }
}

@Suite("FuseFS types without a mount", .serialized)
struct TypesTests {
    /// read's own EBADF (a handle with neither an upper descriptor nor a view) is replied as
    /// is; a layer that cannot be read is EIO with one log line naming the layer and the path
    /// (both were a bare EIO, the corrupt layer not mentioned anywhere).
    @Test func readKeepsItsErrnoAndLogsACorruptLayer() throws {
        let s = try Served()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { buffer.deallocate() }
        #expect(errnoOf { () throws(Errno) in try s.fs.read(Handle(), at: 0, into: buffer) } == EBADF)

        let (id, _) = try s.lookup("hard-a")
        let h = try s.fs.open(id, flags: O_RDONLY)
        #expect(try s.fs.read(h, at: 0, into: buffer) == 15)
        // Every blob cut short behind the open view: the layer's data is gone.
        for name in try Files.list(s.layout + "/blobs/sha256") { #expect(truncate(s.layout + "/blobs/sha256/" + name, 0) == 0) }
        s.view.dropRegionCache()
        let (other, _) = try s.lookup("home/user/notes")
        let h2 = try s.fs.open(other, flags: O_RDONLY)
        #expect(errnoOf { () throws(Errno) in try s.fs.read(h2, at: 0, into: buffer) } == EIO)
        let lines = s.logged.lines.withLock { $0 }
        #expect(lines.count == 1)
        #expect(lines.first?.contains("home/user/notes") == true, "\(lines)")
        #expect(lines.first?.contains("layer sha256:") == true, "\(lines)")
        #expect(lines.first?.contains("\n") == false)
    }
}

@Suite("FuseFS hardlink groups without a mount", .serialized)
struct GroupTests {
    /// Removing one name of an image hardlink group (a whiteout, no copy-up) lowers the link
    /// count the other names report, as on ext4 (issue 20: `rm usr/bin/uncompress` left
    /// `usr/bin/gunzip` at 2 until it was written). Renaming something over a name does too.
    @Test func removingANameOfAnImageGroupLowersItsLinkCount() throws {
        let s = try Served()
        #expect(try s.lookup("hard-a").st.st_nlink == 4)
        try s.fs.remove(OverlayFS.rootId, "hard-b", directory: false)
        #expect(try s.lookup("hard-a").st.st_nlink == 3)
        #expect(try s.lookup("etc/hard-c").st.st_nlink == 3)
        let etc = try s.lookup("etc").id
        try s.fs.rename(etc, "hostname", OverlayFS.rootId, "hard-a", flags: 0)
        #expect(try s.lookup("etc/hard-c").st.st_nlink == 2)
        // A copy-up of the group then links the names still shown: the same count.
        let (c, _) = try s.lookup("etc/hard-c")
        _ = try s.fs.open(c, flags: O_WRONLY)
        #expect(try s.lookup("etc/hard-c").st.st_nlink == 2)
        #expect(try s.lookup("gnu/hard-to-lower").st.st_nlink == 2)
    }
}
