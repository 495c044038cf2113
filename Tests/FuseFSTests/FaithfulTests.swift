#if canImport(Glibc)
import Glibc
#endif
import CLinux
import FuseFS
import Testing

/// Behaviour a plain ext4 directory has, checked through the mount: rename's flags and its
/// no-op case, names of up to 255 bytes and their deletion, directory times across copy-up
/// and rename, xattrs on the root.
@Suite("FuseFS faithful to ext4", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct FaithfulTests {
    @Test func renameExchange() throws {
        let m = try Mounted(tag: "whiteouts")
        defer { m.close() }
        let aBefore = try #require(listNames(m.path("a")))
        // lower file <-> lower file
        let e = readText(m.path("e")), dup = readText(m.path("dup"))
        #expect(renameat2(m.path("e"), m.path("dup"), 2) == 0)
        #expect(readText(m.path("e")) == dup && readText(m.path("dup")) == e)
        // an upper file <-> a lower directory with contents, in another directory
        #expect(writeFile(m.path("h/new"), "new\n") == 0)
        #expect(renameat2(m.path("h/new"), m.path("a"), 2) == 0)
        #expect(readText(m.path("a")) == "new\n")
        #expect(listNames(m.path("h/new")) == aBefore, "the directory shows what it showed, elsewhere")
        #expect(lstatOrNil(m.upperPath("h/new/.wh..wh..opq")) != nil)
        // and back
        #expect(renameat2(m.path("a"), m.path("h/new"), 2) == 0)
        #expect(listNames(m.path("a")) == aBefore && readText(m.path("h/new")) == "new\n")
        // errors as on ext4
        #expect(renameat2(m.path("e"), m.path("missing"), 2) == ENOENT)
        #expect(renameat2(m.path("missing"), m.path("e"), 2) == ENOENT)
        #expect(renameat2(m.path("e"), m.path("dup"), 3) == EINVAL)
        #expect(renameat2(m.path("e"), m.path("e"), 2) == 0)
    }

    @Test func renameBetweenNamesOfOneFileDoesNothing() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(rename(m.path("hard-a"), m.path("hard-b")) == 0)
        #expect(readText(m.path("hard-a")) == "shared content\n")
        #expect(readText(m.path("hard-b")) == "shared content\n")
        #expect(lstatOrNil(m.upperPath(".wh.hard-a")) == nil)
    }

    @Test func namesOf255Bytes() throws {
        let m = try Mounted(tag: "names")
        defer { m.close() }
        let longest = String(repeating: "n", count: 255)
        let long252 = "d/" + String(repeating: "m", count: 252)
        // Deleting image files whose `.wh.` name would not fit.
        #expect(unlink(m.path(longest)) == 0)
        #expect(lstatOrNil(m.path(longest)) == nil)
        #expect(listNames(m.mnt)?.contains(longest) == false)
        let device = try #require(lstatOrNil(m.upperPath(longest)))
        #expect(device.st_mode & S_IFMT == S_IFCHR && device.st_rdev == 0, "a whiteout device at the name itself")
        #expect(unlink(m.path(long252)) == 0)
        #expect(lstatOrNil(m.path(long252)) == nil)
        // Creating, renaming to and deleting such names.
        #expect(writeFile(m.path(longest), "again\n", flags: O_WRONLY | O_CREAT | O_EXCL) == 0)
        #expect(readText(m.path(longest)) == "again\n")
        #expect(((lstatOrNil(m.upperPath(longest))?.st_mode ?? 0) & S_IFMT) == S_IFREG)
        let other = String(repeating: "o", count: 255)
        #expect(rename(m.path(longest), m.path(other)) == 0)
        #expect(readText(m.path(other)) == "again\n")
        #expect(lstatOrNil(m.path(longest)) == nil)
        #expect(unlink(m.path(other)) == 0)
        #expect(lstatOrNil(m.path(other)) == nil && lstatOrNil(m.upperPath(other)) == nil)
        #expect(mkdir(m.path(longest), 0o755) == 0)
        #expect(rmdir(m.path(longest)) == 0)
        // A device 0/0 under such a name would be a whiteout: refused.
        #expect(err(mknod(m.path(other), S_IFCHR | 0o600, 0)) == EPERM)
    }

    @Test func copyUpAndRenameKeepDirectoryTimes() throws {
        let m = try Mounted(tag: "whiteouts")
        defer { m.close() }
        let before = try #require(lstatOrNil(m.path("a")))
        // Changing a file's data changes no directory.
        let fd = open(m.path("a/y"), O_WRONLY | O_APPEND)
        #expect(fd >= 0)
        #expect(write(fd, "more", 4) == 4)
        close(fd)
        let after = try #require(lstatOrNil(m.path("a")))
        #expect(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
        #expect(lstatOrNil(m.upperPath("a"))?.st_mtim.tv_sec == before.st_mtim.tv_sec)
        // Moving a directory keeps its mtime.
        let sub = try #require(lstatOrNil(m.path("a/sub")))
        #expect(rename(m.path("a/sub"), m.path("sub-moved")) == 0)
        let moved = try #require(lstatOrNil(m.path("sub-moved")))
        #expect(moved.st_mtim.tv_sec == sub.st_mtim.tv_sec && moved.st_mtim.tv_nsec == sub.st_mtim.tv_nsec)
        // Creating a file does change its directory's mtime.
        #expect(writeFile(m.path("sub-moved/new"), "x") == 0)
        #expect((lstatOrNil(m.path("sub-moved"))?.st_mtim.tv_sec ?? 0) > sub.st_mtim.tv_sec)
    }

    @Test func rootDirectoryXattrs() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(setxattr(m.mnt, "user.root-note", "v", 1, 0) == 0)
        #expect(getxattrString(m.mnt, "user.root-note") == "v")
        #expect(getxattrString(m.upper, "user.root-note") == "v")
        #expect(removexattr(m.mnt, "user.root-note") == 0)
        #expect(getxattrString(m.mnt, "user.root-note") == nil)
    }

    @Test func hardlinkGroupsStayGroups() throws {
        let m = try Mounted()
        defer { m.close() }
        let names = ["hard-a", "hard-b", "etc/hard-c", "gnu/hard-to-lower"]
        let ino = try #require(lstatOrNil(m.path("hard-a"))).st_ino
        #expect(writeFile(m.path("hard-b"), "CHANGED\n") == 0)
        for n in names {
            #expect(readText(m.path(n)) == "CHANGED\n", "\(n) shows the change")
            let st = try #require(lstatOrNil(m.path(n)))
            #expect(st.st_ino == ino && st.st_nlink == 4, "\(n): one file, four names")
        }
        let upper = try #require(lstatOrNil(m.upperPath("hard-a")))
        for n in names { #expect(lstatOrNil(m.upperPath(n))?.st_ino == upper.st_ino, "\(n) is a link in the upper directory") }
        // Metadata through one name shows through the others at once.
        #expect(chmod(m.path("etc/hard-c"), 0o600) == 0)
        #expect(lstatOrNil(m.path("hard-a"))?.st_mode == S_IFREG | 0o600)
        // A new link and an unlink change every name's count.
        #expect(link(m.path("hard-a"), m.path("hard-new")) == 0)
        #expect(lstatOrNil(m.path("gnu/hard-to-lower"))?.st_nlink == 5)
        #expect(unlink(m.path("hard-new")) == 0 && unlink(m.path("hard-b")) == 0)
        #expect(lstatOrNil(m.path("hard-a"))?.st_nlink == 3)
    }

    @Test func aGroupInAMovedDirectoryStaysAGroup() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(rename(m.path("etc"), m.path("etc-moved")) == 0)
        #expect(writeFile(m.path("hard-a"), "after move\n") == 0)
        #expect(readText(m.path("etc-moved/hard-c")) == "after move\n")
        #expect(lstatOrNil(m.upperPath("etc-moved/hard-c"))?.st_ino == lstatOrNil(m.upperPath("hard-a"))?.st_ino)
    }

    @Test func openFilesSeeWritesMadeAfterTheyOpened() throws {
        let m = try Mounted()
        defer { m.close() }
        var buffer = [UInt8](repeating: 0, count: 64)
        // The same name: a read-only descriptor opened before the copy-up.
        let reader = open(m.path("etc/hostname"), O_RDONLY)
        #expect(reader >= 0)
        defer { close(reader) }
        #expect(pread(reader, &buffer, 64, 0) == 5)
        #expect(writeFile(m.path("etc/hostname"), "changed\n") == 0)
        let n = pread(reader, &buffer, 64, 0)
        #expect(n == 8 && Array(buffer[0..<max(n, 0)]) == Array("changed\n".utf8))
        // Another name of the file, read through a descriptor and a read-only mapping.
        let other = open(m.path("hard-b"), O_RDONLY)
        #expect(other >= 0)
        defer { close(other) }
        let map = mmap(nil, 4096, PROT_READ, MAP_SHARED, other, 0)
        #expect(map != MAP_FAILED)
        defer { munmap(map, 4096) }
        #expect(map?.load(as: UInt8.self) == UInt8(ascii: "s"))
        #expect(writeFile(m.path("hard-a"), "written elsewhere\n") == 0)
        let k = pread(other, &buffer, 64, 0)
        #expect(k == 18 && Array(buffer[0..<max(k, 0)]) == Array("written elsewhere\n".utf8), "read \(k): \(String(decoding: buffer[0..<max(k, 0)], as: UTF8.self))")
        #expect(map?.load(as: UInt8.self) == UInt8(ascii: "w"), "the mapping shows the new data")
    }

    @Test func openUnlinkedFilesKeepTheirAttributes() throws {
        let m = try Mounted()
        defer { m.close() }
        let fd = open(m.path("tmp/scratch"), O_RDWR | O_CREAT | O_EXCL, 0o644)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(write(fd, "data", 4) == 4)
        #expect(unlink(m.path("tmp/scratch")) == 0)
        var st = stat()
        #expect(fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == 4)
        #expect(fchmod(fd, 0o600) == 0)
        #expect(fstat(fd, &st) == 0 && st.st_mode & 0o7777 == 0o600)
        #expect(fchown(fd, 1234, 5678) == 0)
        #expect(fstat(fd, &st) == 0 && st.st_uid == 1234)
        // A lower file, unlinked while open.
        let lower = open(m.path("etc/hostname"), O_RDONLY)
        #expect(lower >= 0)
        defer { close(lower) }
        #expect(unlink(m.path("etc/hostname")) == 0)
        #expect(fstat(lower, &st) == 0 && st.st_size == 5)
    }

    /// Every `.wh.` file is a hardlink of one shared empty file: a new inode per deletion made
    /// rm -rf through the mount spend most of its time in ext4's inode allocator.
    @Test func whiteoutsShareOneInode() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(unlink(m.path("etc/hostname")) == 0 && unlink(m.path("empty")) == 0 && unlink(m.path("bigid")) == 0)
        let a = try #require(lstatOrNil(m.upperPath("etc/.wh.hostname")))
        let b = try #require(lstatOrNil(m.upperPath(".wh.empty")))
        let c = try #require(lstatOrNil(m.upperPath(".wh.bigid")))
        #expect(a.st_ino == b.st_ino && b.st_ino == c.st_ino && a.st_nlink >= 4)
        expectMarker(m.upperPath(".wh.empty"))
        #expect(listNames(m.mnt)?.contains { $0.hasPrefix(".wh.") } == false)
    }
}
