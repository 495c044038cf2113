#if canImport(Glibc)
import Glibc
#endif
import CLinux
@testable import FuseFS
import Basics
import OCI
import LayerView
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

@Suite("FuseFS operations on the types", .serialized)
struct TypeOperationTests {
    /// setattr on an image symlink copies the symlink up (a symlink, same target) and changes
    /// the link itself, never what it points to (the target resolves on the host).
    @Test func setattrOnASymlinkNode() throws {
        let s = try Served()
        let (id, before) = try s.lookup("abs-link")
        #expect(before.st_mode & S_IFMT == S_IFLNK)
        var change = OverlayFS.AttrChange()
        change.mtime = timespec(tv_sec: 1_234_567, tv_nsec: 89)
        if geteuid() == 0 { change.uid = 1000; change.gid = 1001 }
        let st = try s.fs.setattr(id, change, handle: nil)
        #expect(st.st_mode & S_IFMT == S_IFLNK)
        #expect(st.st_mtim.tv_sec == 1_234_567 && st.st_mtim.tv_nsec == 89)
        #expect(st.st_ino == before.st_ino, "a copy-up keeps the st_ino")
        let up = try #require(lstatOrNil(s.upperPath("abs-link")))
        #expect(up.st_mode & S_IFMT == S_IFLNK && up.st_mtim.tv_sec == 1_234_567)
        if geteuid() == 0 { #expect(up.st_uid == 1000 && up.st_gid == 1001 && st.st_uid == 1000) }
        var target = [CChar](repeating: 0, count: 256)
        let n = readlink(s.upperPath("abs-link"), &target, 255)
        #expect(n > 0 && String(decoding: target[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "/etc/hostname")
        #expect(try s.fs.readlink(id).prefix { $0 != 0 }.count == 13)
        // The host's /etc/hostname was not touched: setattr never follows the link.
        #expect(lstatOrNil("/etc/hostname")?.st_mtim.tv_sec != 1_234_567)
    }

    /// rename between two names of one file does nothing (POSIX), for an image hardlink group
    /// (no copy-up, nothing in the upper directory) and for the group once copied up.
    @Test func renameBetweenTwoNamesOfOneFile() throws {
        let s = try Served()
        let etc = try s.lookup("etc").id
        try s.fs.rename(OverlayFS.rootId, "hard-a", etc, "hard-c", flags: 0)
        #expect(try s.lookup("hard-a").st.st_nlink == 4)
        #expect(try s.lookup("etc/hard-c").st.st_nlink == 4)
        #expect(listNames(s.upper) == [], "nothing copied up or whited out")
        // Copied up as a group: the same through the upper names.
        let (b, _) = try s.lookup("hard-b")
        _ = try s.fs.open(b, flags: O_WRONLY)
        try s.fs.rename(etc, "hard-c", OverlayFS.rootId, "hard-b", flags: 0)
        let a = try s.lookup("hard-a").st, c = try s.lookup("etc/hard-c").st
        #expect(a.st_nlink == 4 && c.st_nlink == 4 && a.st_ino == c.st_ino)
        #expect(lstatOrNil(s.upperPath("etc/hard-c"))?.st_nlink == 4)
        #expect(lstatOrNil(s.upperPath(".wh.hard-b")) == nil && lstatOrNil(s.upperPath("etc/.wh.hard-c")) == nil)
    }

    /// CopyUp on its own: one name of an image hardlink group is copied with its data and
    /// metadata, the other names it shows become links of the copy (their directories copied
    /// up with the image's times), and the effects tell the node table exactly that.
    @Test func copyUpOfAHardlinkGroup() throws {
        let s = try Served()
        let lower = try #require(s.view.lookup("hard-a"))
        var c = CopyUp(view: s.view, upper: s.fs.upper, lowerIno: { UInt64($0) + 1 }, ownership: s.fs.ownership, rootShowsLower: true)
        try c.object(dirfd: s.fs.upper.root, name: "hard-a", lower: lower)
        #expect(readText(s.upperPath("hard-a")) == "shared content\n")
        let a = try #require(lstatOrNil(s.upperPath("hard-a")))
        #expect(a.st_nlink == 4)
        for other in ["hard-b", "etc/hard-c", "gnu/hard-to-lower"] {
            #expect(lstatOrNil(s.upperPath(other))?.st_ino == a.st_ino, "\(other) is a link of the copy")
        }
        let lowerEtc = s.view.inode(of: try #require(s.view.lookup("etc")))
        let etc = try #require(lstatOrNil(s.upperPath("etc")))
        #expect(Int64(etc.st_mtim.tv_sec) == lowerEtc.mtime && etc.st_mode & 0o7777 == mode_t(lowerEtc.mode))
        var linked: [String] = [], directories: [String] = [], kept: [UInt64] = [], files = 0
        for e in c.effects {
            switch e {
            case .linked(let path, let st):
                linked.append(path.map(\.description).joined(separator: "/"))
                #expect(st.st_ino == a.st_ino)
            case .directory(let path, _): directories.append(path.map(\.description).joined(separator: "/"))
            case .keepsIno(_, let ino): kept.append(ino)
            case .file: files += 1
            }
        }
        #expect(linked.sorted() == ["etc/hard-c", "gnu/hard-to-lower", "hard-b"])
        #expect(directories.sorted() == ["etc", "gnu"])
        #expect(files == 1)
        #expect(kept.contains(UInt64(s.view.inodeNumber(of: lower)) + 1))
        // Nothing was left under a temporary name.
        #expect(listNames(s.upper)?.contains { $0.hasPrefix(".wh.") } == false)
    }
}

@Suite("FuseFS node table")
struct NodeTableTests {
    /// Nodes live while the kernel holds lookups or children hold them; a detached node keeps
    /// its lookups and its orphan descriptor until forgotten, then goes with its orphan closed.
    @Test func nodesLiveAsLongAsTheKernelKnowsThem() throws {
        var t = NodeTable(rootLower: 0)
        let a = t.install(parent: NodeTable.rootId, name: "a", upper: false, lower: 3)
        let b = t.install(parent: a, name: "b", upper: true, lower: -1)
        let again = t.install(parent: NodeTable.rootId, name: "a", upper: true, lower: 3)
        #expect(again == a, "a second lookup, the same node")
        #expect(t.components(b) == ["a", "b"])
        #expect(t.node(at: ["a", "b"]) == b)
        t.forget(a, 2)
        #expect(t.snapshot(a) != nil, "a child holds it")
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let adopted = t.adoptOrphan(b, fd, detached: false)
        #expect(adopted)
        t.detach(b)
        #expect(t.snapshot(a) == nil, "its last child detached: collected")
        #expect(t.components(b) == nil && t.orphan(b) == fd)
        t.forget(b, 1)
        #expect(t.snapshot(b) == nil)
        #expect(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "the orphan was closed with its node")
        // Identities: the other names of one upper file.
        let key = UpperKey(dev: 1, ino: 2)
        let x = t.install(parent: NodeTable.rootId, name: "x", upper: true, lower: -1)
        let y = t.install(parent: NodeTable.rootId, name: "y", upper: true, lower: -1)
        t.setIdentity(x, key)
        t.setIdentity(y, key)
        #expect(t.otherNames(of: key, except: x) == [y])
        t.setIdentity(y, nil)
        #expect(t.otherNames(of: key, except: x) == [])
    }
}
