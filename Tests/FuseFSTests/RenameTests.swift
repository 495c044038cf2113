#if canImport(Glibc)
import Glibc
#endif
import CLinux
import FuseFS
import Testing

@Suite("FuseFS rename", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct RenameTests {
    @Test func filesAcrossLowerAndUpper() throws {
        let m = try Mounted()
        defer { m.close() }
        // lower file -> new name in another lower dir
        #expect(rename(m.path("etc/hostname"), m.path("bin/hostname")) == 0)
        #expect(readText(m.path("bin/hostname")) == "test\n")
        #expect(lstatOrNil(m.path("etc/hostname")) == nil)
        expectMarker(m.upperPath("etc/.wh.hostname"))
        #expect(readText(m.upperPath("bin/hostname")) == "test\n")
        // upper file over a lower file
        #expect(writeFile(m.path("new"), "upper") == 0)
        #expect(rename(m.path("new"), m.path("empty")) == 0)
        #expect(readText(m.path("empty")) == "upper")
        #expect(lstatOrNil(m.upperPath("new")) == nil && lstatOrNil(m.upperPath(".wh.new")) == nil)
        // lower file over a lower file
        #expect(rename(m.path("hard-b"), m.path("bigid")) == 0)
        #expect(readText(m.path("bigid")) == "shared content\n")
        expectMarker(m.upperPath(".wh.hard-b"))
        // back to a whited-out name: the whiteout goes
        #expect(rename(m.path("bigid"), m.path("hard-b")) == 0)
        #expect(lstatOrNil(m.upperPath(".wh.hard-b")) == nil)
        expectMarker(m.upperPath(".wh.bigid"))
        #expect(readText(m.path("hard-b")) == "shared content\n")
        // NOREPLACE and EXCHANGE
        #expect(renameat2(m.path("hard-a"), m.path("hard-b"), 1) == EEXIST)
        #expect(renameat2(m.path("hard-a"), m.path("nothing"), 2) == ENOENT)
        #expect(renameat2(m.path("hard-a"), m.path("hard-z"), 1) == 0)
        #expect(readText(m.path("hard-z")) == "shared content\n")
        // type mismatches, missing source
        #expect(err(rename(m.path("hard-z"), m.path("etc"))) == EISDIR)
        #expect(err(rename(m.path("etc"), m.path("hard-z"))) == ENOTDIR)
        #expect(err(rename(m.path("nothing"), m.path("x"))) == ENOENT)
        // a symlink
        #expect(rename(m.path("abs-link"), m.path("etc/abs")) == 0)
        var buf = [CChar](repeating: 0, count: 64)
        #expect(readlink(m.path("etc/abs"), &buf, 64) == 13)
    }

    @Test func directories() throws {
        let m = try Mounted(tag: "whiteouts")
        defer { m.close() }
        // A lower directory with a subtree: copied up whole, opaque, source whited out.
        let before = try #require(listNames(m.path("a")))
        #expect(rename(m.path("a"), m.path("moved")) == 0)
        #expect(listNames(m.path("moved")) == before)
        #expect(lstatOrNil(m.path("a")) == nil)
        expectMarker(m.upperPath(".wh.a"))
        expectMarker(m.upperPath("moved/.wh..wh..opq"))
        #expect(readText(m.upperPath("moved/sub/z")) == "z1")
        #expect(readText(m.path("moved/sub/z")) == "z1")
        #expect(listNames(m.upperPath("moved")) == [".wh..wh..opq"] + before)
        // A merged directory (partly upper, with a whiteout inside) renamed.
        #expect(unlink(m.path("multi/f000")) == 0)
        #expect(writeFile(m.path("multi/new"), "n") == 0)
        #expect(rename(m.path("multi"), m.path("multi2")) == 0)
        let names = try #require(listNames(m.path("multi2")))
        #expect(names.count == 200 && !names.contains("f000") && names.contains("new"))
        #expect(lstatOrNil(m.upperPath("multi2/.wh.f000")) == nil)
        expectMarker(m.upperPath("multi2/.wh..wh..opq"))
        #expect(readText(m.path("multi2/f001")) == String(repeating: "member 1 ", count: 50))
        // Over an empty directory; over a non-empty one.
        #expect(mkdir(m.path("empty1"), 0o755) == 0 && mkdir(m.path("empty2"), 0o755) == 0)
        #expect(writeFile(m.path("empty2/f"), "f") == 0)
        #expect(err(rename(m.path("empty1"), m.path("d"))) == ENOTEMPTY)
        #expect(err(rename(m.path("empty1"), m.path("empty2"))) == ENOTEMPTY)
        #expect(rename(m.path("empty2"), m.path("empty1")) == 0)
        #expect(listNames(m.path("empty1")) == ["f"])
        // An upper directory moved onto a path where the lower view has a directory (emptied).
        for name in listNames(m.path("h")) ?? [] { #expect(unlink(m.path("h/" + name)) == 0) }
        #expect(listNames(m.path("h")) == [])
        #expect(rename(m.path("empty1"), m.path("h")) == 0)
        #expect(listNames(m.path("h")) == ["f"])
        expectMarker(m.upperPath("h/.wh..wh..opq"))
        // Across directories, into a new directory.
        #expect(mkdir(m.path("target"), 0o700) == 0)
        #expect(rename(m.path("d"), m.path("target/d")) == 0)
        #expect(listNames(m.path("target/d")) == ["new"])
        #expect(readText(m.path("target/d/new")) == "new")
    }

    @Test func renamedNodesStayUsable() throws {
        let m = try Mounted(tag: "whiteouts")
        defer { m.close() }
        let fd = open(m.path("a/sub/z"), O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(rename(m.path("a"), m.path("b2")) == 0)
        var buf = [UInt8](repeating: 0, count: 8)
        #expect(pread(fd, &buf, 8, 0) == 2)
        #expect(writeFile(m.path("b2/sub/z"), "changed") == 0)
        #expect(readText(m.path("b2/sub/z")) == "changed")
        #expect(readText(m.upperPath("b2/sub/z")) == "changed")
    }
}
