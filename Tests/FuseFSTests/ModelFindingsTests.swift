#if canImport(Glibc)
import Glibc
#endif
import CLinux
import FuseFS
import Testing

/// Divergences from a plain ext4 directory that the model-based test (umociTests ModelTests)
/// found, each reduced to its shortest sequence.
@Suite("FuseFS model findings", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct ModelFindingsTests {
    /// A change through one name of an image hardlink group copies the group up, creating the
    /// upper directories of the other names. A directory the kernel had looked up before
    /// (here `etc`, as unpack's config generation does) must then be resolved in the upper
    /// directory too: `etc/hard-c` showed the image's data and a link count of 4.
    @Test func groupCopyUpThroughAnotherNameUpdatesKnownDirectories() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(lstatOrNil(m.path("etc/hostname")) != nil)
        #expect(writeFile(m.path("hard-b"), "CHANGED\n", flags: O_WRONLY) == 0)
        #expect(readText(m.path("etc/hard-c")) == "CHANGED\nontent\n")
        let st = try #require(lstatOrNil(m.path("etc/hard-c")))
        #expect(st.st_nlink == 4)
        #expect(st.st_ino == lstatOrNil(m.path("hard-b"))?.st_ino)
    }

    /// An upper directory that moves to where the image has a directory becomes opaque; the
    /// marker file it gets is internal and must not change its mtime (on ext4, neither rename
    /// nor RENAME_EXCHANGE changes the moved directory's mtime).
    /// Issue 20: after `rm` of one name of an image hardlink group, stat of another name
    /// still reported the group's image link count until the file was written.
    @Test func removingANameOfAnImageGroupLowersTheOthersLinkCount() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(lstatOrNil(m.path("hard-a"))?.st_nlink == 4)
        #expect(unlink(m.path("hard-b")) == 0)
        #expect(lstatOrNil(m.path("hard-a"))?.st_nlink == 3)
        #expect(lstatOrNil(m.path("etc/hard-c"))?.st_nlink == 3)
    }

    @Test func movingADirectoryOverAnImageDirectoryKeepsItsMtime() throws {
        let m = try Mounted()
        defer { m.close() }
        let old = timespec(tv_sec: 1_000_000_000, tv_nsec: 5)
        func setOld(_ p: String) { var t = [old, old]; #expect(utimensat(AT_FDCWD, m.path(p), &t, AT_SYMLINK_NOFOLLOW) == 0) }
        func mtime(_ p: String) -> Int? { lstatOrNil(m.path(p)).map { $0.st_mtim.tv_sec } }
        #expect(mkdir(m.path("nd"), 0o755) == 0)
        #expect(mkdir(m.path("nd/x"), 0o755) == 0)
        setOld("nd/x")
        #expect(renameat2(m.path("nd/x"), m.path("etc"), 2) == 0)
        #expect(mtime("etc") == 1_000_000_000, "RENAME_EXCHANGE with an image directory")
        #expect(lstatOrNil(m.path("nd/x/hostname")) != nil)
        #expect(mkdir(m.path("nd/y"), 0o755) == 0)
        setOld("nd/y")
        #expect(rename(m.path("nd/y"), m.path("xattr-dir")) == 0)
        #expect(mtime("xattr-dir") == 1_000_000_000, "rename over an empty image directory")
    }

    /// fchmod, fchown and futimens through a descriptor of an image file that was then
    /// unlinked (or replaced by a rename) work as on ext4, and fstat shows the change; they
    /// failed with ENOENT when the file had never been copied up.
    @Test func changingAnUnlinkedImageFileThroughItsDescriptor() throws {
        let m = try Mounted()
        defer { m.close() }
        let before = try #require(lstatOrNil(m.path("subsecond")))
        let fd = open(m.path("subsecond"), O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(rename(m.path("etc/hostname"), m.path("subsecond")) == 0)
        #expect(err(fchmod(fd, 0o400)) == 0)
        #expect(err(fchown(fd, 1234, 5678)) == 0)
        var st = stat()
        #expect(fstat(fd, &st) == 0)
        #expect(st.st_mode & 0o7777 == 0o400 && st.st_uid == 1234 && st.st_gid == 5678 && st.st_nlink == 0)
        #expect(st.st_ino == before.st_ino, "the file keeps its st_ino")
        #expect(st.st_mtim.tv_sec == before.st_mtim.tv_sec && st.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(pread(fd, &buffer, 8, 0) == 1 && buffer[0] == UInt8(ascii: "t"), "the data is still readable")
        #expect(readText(m.path("subsecond")) == "test\n", "the name shows the renamed file")
        #expect(listNames(m.upper)?.contains { $0.hasPrefix(".wh..wh..umoci") && $0 != ".wh..wh..umoci-whiteout" } == false,
                "nothing internal but the shared whiteout file is left in upper")
    }

    /// A descriptor of one name of a file with two names, after that name is unlinked: a
    /// write through the other name and that name's unlink show in its fstat at once (the
    /// kernel cached the attributes it got when the file was down to one link).
    @Test func openUnlinkedNameSeesChangesThroughTheOtherName() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(writeFile(m.path("f"), "x") == 0)
        #expect(link(m.path("f"), m.path("g")) == 0)
        let fd = open(m.path("g"), O_RDWR)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(unlink(m.path("g")) == 0)
        var st = stat()
        #expect(fstat(fd, &st) == 0 && st.st_nlink == 1 && st.st_size == 1)
        #expect(writeFile(m.path("f"), "longer", flags: O_WRONLY | O_APPEND) == 0)
        #expect(fstat(fd, &st) == 0 && st.st_size == 7, "the write through f")
        #expect(unlink(m.path("f")) == 0)
        #expect(fstat(fd, &st) == 0 && st.st_nlink == 0, "no name left")
    }

    /// fsetxattr, fgetxattr, flistxattr and fremovexattr through the descriptor of a file
    /// unlinked while open (an image file never copied up, and an upper file) work as on ext4;
    /// they failed with ENOENT.
    @Test func xattrsOfAnUnlinkedOpenFile() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(writeFile(m.path("upper-file"), "u") == 0)
        for (name, flags) in [("xattr-file", O_RDONLY), ("upper-file", O_RDWR)] {
            let fd = open(m.path(name), flags)
            #expect(fd >= 0)
            defer { close(fd) }
            #expect(unlink(m.path(name)) == 0)
            #expect(err(fsetxattr(fd, "user.new", "v", 1, 0)) == 0, "\(name)")
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(fgetxattr(fd, "user.new", &buffer, buffer.count) == 1, "\(name)")
            let n = flistxattr(fd, nil, 0)
            #expect(n > 0, "\(name)")
            #expect(err(fremovexattr(fd, "user.new")) == 0, "\(name)")
            #expect(fgetxattr(fd, "user.new", &buffer, buffer.count) == -1 && errno == ENODATA, "\(name)")
            if name == "xattr-file" {
                #expect(fgetxattr(fd, "user.comment", &buffer, buffer.count) == 5, "the image's xattrs are kept")
            }
        }
    }
}
