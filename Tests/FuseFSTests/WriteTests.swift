#if canImport(Glibc)
import Glibc
#endif
import CLinux
import FuseFS
import Testing

/// Whiteout markers are empty regular files, mode 0, owned by root.
func expectMarker(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let st = lstatOrNil(path) else {
        Issue.record("missing marker \(path)", sourceLocation: sourceLocation)
        return
    }
    #expect(st.st_mode == S_IFREG && st.st_size == 0 && st.st_uid == 0 && st.st_gid == 0, "marker \(path)",
            sourceLocation: sourceLocation)
}

@Suite("FuseFS copy-up and upper format", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct CopyUpTests {
    @Test func writeCopiesUpDataAndParents() throws {
        let m = try Mounted()
        defer { m.close() }
        let before = try #require(lstatOrNil(m.path("etc/hostname")))
        #expect(writeFile(m.path("etc/hostname"), "more\n", flags: O_WRONLY | O_APPEND) == 0)
        #expect(readText(m.path("etc/hostname")) == "test\nmore\n")
        #expect(readText(m.upperPath("etc/hostname")) == "test\nmore\n")
        let up = try #require(lstatOrNil(m.upperPath("etc/hostname")))
        #expect(up.st_mode & 0o7777 == 0o644)
        let after = try #require(lstatOrNil(m.path("etc/hostname")))
        #expect(after.st_ino == before.st_ino, "st_ino stable across copy-up")
        // The parent is copied as a plain directory with the lower metadata, not opaque.
        let lowerEtc = m.view.inode(of: try #require(m.view.lookup("etc")))
        let etc = try #require(lstatOrNil(m.upperPath("etc")))
        #expect(etc.st_mode & 0o7777 == mode_t(lowerEtc.mode))
        // ... and the image's mtime: neither its copy-up nor the copy-up of a file in it
        // changes a name the mount shows.
        #expect(Int64(etc.st_mtim.tv_sec) == lowerEtc.mtime && Int64(etc.st_mtim.tv_nsec) == Int64(lowerEtc.mtimeNanoseconds))
        #expect(lstatOrNil(m.upperPath("etc/.wh..wh..opq")) == nil)
        #expect(listNames(m.upperPath("etc")) == ["hostname"])
        // Other lower entries still merge in.
        #expect(listNames(m.path("etc")) == ["hard-c", "hostname"])
        // O_TRUNC copy-up.
        #expect(writeFile(m.path("empty"), "now full") == 0)
        #expect(readText(m.upperPath("empty")) == "now full")
        // truncate(2) of a lower file.
        #expect(truncate(m.path("home/user/notes"), 10) == 0)
        #expect(readFile(m.upperPath("home/user/notes")) == Array(repeating: UInt8(ascii: "n"), count: 10))
        let notes = try #require(lstatOrNil(m.upperPath("home/user/notes")))
        #expect(notes.st_uid == 1000 && notes.st_gid == 1000 && notes.st_mode & 0o7777 == 0o600)
        let home = try #require(lstatOrNil(m.upperPath("home/user")))
        #expect(home.st_uid == 1000 && home.st_mode & 0o7777 == 0o700)
    }

    @Test func metadataChangeCopiesWholeFile() throws {
        let m = try Mounted()
        defer { m.close() }
        // chmod keeps data; setuid survives copy-up caused by another change.
        #expect(chmod(m.path("bin/sgid"), 0o2755) == 0)
        #expect(readText(m.upperPath("bin/sgid")) == "x")
        #expect(lstatOrNil(m.upperPath("bin/sgid"))?.st_mode == S_IFREG | 0o2755)
        var times = (timespec(tv_sec: 1234, tv_nsec: 5), timespec(tv_sec: 1_000_000, tv_nsec: 6))
        let r = withUnsafePointer(to: &times) { p in p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(AT_FDCWD, m.path("bin/suid"), $0, 0) } }
        #expect(r == 0)
        let suid = try #require(lstatOrNil(m.upperPath("bin/suid")))
        #expect(suid.st_mode == S_IFREG | 0o4755, "setuid bit kept on copy-up")
        #expect(suid.st_mtim.tv_sec == 1_000_000 && suid.st_mtim.tv_nsec == 6 && suid.st_atim.tv_sec == 1234)
        #expect(readText(m.upperPath("bin/suid")) == "#!/bin/sh\n")
        #expect(lstatOrNil(m.path("bin/suid"))?.st_mode == S_IFREG | 0o4755)
        // UTIME_OMIT for atime, UTIME_NOW for mtime.
        let atimeBefore = try #require(lstatOrNil(m.upperPath("bin/suid"))).st_atim.tv_sec
        var t2 = (timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2), timespec(tv_sec: 0, tv_nsec: (1 << 30) - 1))
        let r2 = withUnsafePointer(to: &t2) { p in p.withMemoryRebound(to: timespec.self, capacity: 2) { utimensat(AT_FDCWD, m.path("bin/suid"), $0, 0) } }
        #expect(r2 == 0)
        let suid2 = try #require(lstatOrNil(m.upperPath("bin/suid")))
        #expect(suid2.st_atim.tv_sec == atimeBefore && suid2.st_mtim.tv_sec > 1_600_000_000)
        // chown of a lower file keeps its xattrs and content; chown clears setuid.
        #expect(lchown(m.path("xattr-file"), 5, 6) == 0)
        let xf = try #require(lstatOrNil(m.upperPath("xattr-file")))
        #expect(xf.st_uid == 5 && xf.st_gid == 6)
        #expect(getxattrString(m.upperPath("xattr-file"), "user.comment") == "hello")
        #expect(getxattrString(m.upperPath("xattr-file"), "trusted.overlay.x") == "y")
        #expect(readText(m.upperPath("xattr-file")) == "x")
        #expect(chown(m.path("bin/suid"), 7, 7) == 0)
        #expect(lstatOrNil(m.path("bin/suid"))?.st_mode == S_IFREG | 0o755)
        // A symlink's owner change copies up the symlink.
        #expect(lchown(m.path("rel-link"), 9, 9) == 0)
        var buf = [CChar](repeating: 0, count: 100)
        let n = readlink(m.upperPath("rel-link"), &buf, 100)
        #expect(n == 12 && lstatOrNil(m.upperPath("rel-link"))?.st_uid == 9)
        // Directory metadata change: an empty upper directory that still merges.
        #expect(chmod(m.path("xattr-dir"), 0o750) == 0)
        #expect(listNames(m.upperPath("xattr-dir")) == [])
        #expect(lstatOrNil(m.upperPath("xattr-dir"))?.st_mode == S_IFDIR | 0o750)
        #expect(getxattrString(m.upperPath("xattr-dir"), "user.dir") == "1")
        #expect(chmod(m.path("etc"), 0o700) == 0)
        #expect(listNames(m.path("etc")) == ["hard-c", "hostname"])
    }

    @Test func whiteoutsAndOpaqueDirectories() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(unlink(m.path("etc/hostname")) == 0)
        expectMarker(m.upperPath("etc/.wh.hostname"))
        #expect(lstatOrNil(m.path("etc/hostname")) == nil && errno == ENOENT)
        #expect(listNames(m.path("etc")) == ["hard-c"])
        #expect(lstatOrNil(m.path("etc/.wh.hostname")) == nil && errno == ENOENT, ".wh. names are never visible")
        // Recreating removes the whiteout; deleting again restores it.
        #expect(writeFile(m.path("etc/hostname"), "new") == 0)
        #expect(lstatOrNil(m.upperPath("etc/.wh.hostname")) == nil)
        #expect(readText(m.path("etc/hostname")) == "new")
        #expect(unlink(m.path("etc/hostname")) == 0)
        expectMarker(m.upperPath("etc/.wh.hostname"))
        #expect(lstatOrNil(m.upperPath("etc/hostname")) == nil)
        // A new file deleted leaves nothing.
        #expect(writeFile(m.path("newfile"), "n") == 0)
        #expect(unlink(m.path("newfile")) == 0)
        #expect(lstatOrNil(m.upperPath("newfile")) == nil && lstatOrNil(m.upperPath(".wh.newfile")) == nil)
        // rmdir of a non-empty merged dir fails; emptied, it leaves a whiteout.
        #expect(err(rmdir(m.path("etc"))) == ENOTEMPTY)
        #expect(unlink(m.path("etc/hard-c")) == 0)
        #expect(rmdir(m.path("etc")) == 0)
        expectMarker(m.upperPath(".wh.etc"))
        #expect(lstatOrNil(m.upperPath("etc")) == nil)
        // mkdir where a lower directory was: opaque.
        #expect(mkdir(m.path("etc"), 0o755) == 0)
        expectMarker(m.upperPath("etc/.wh..wh..opq"))
        #expect(lstatOrNil(m.upperPath(".wh.etc")) == nil)
        #expect(listNames(m.path("etc")) == [])
        #expect(lstatOrNil(m.path("etc/hostname")) == nil)
        // rmdir of that opaque dir: marker removed with it, whiteout back.
        #expect(rmdir(m.path("etc")) == 0)
        expectMarker(m.upperPath(".wh.etc"))
        // unlink of a lower symlink / fifo / device.
        for name in ["rel-link", "dev/fifo", "dev/null"] {
            #expect(unlink(m.path(name)) == 0, "unlink \(name)")
        }
        expectMarker(m.upperPath(".wh.rel-link"))
        expectMarker(m.upperPath("dev/.wh.fifo"))
        expectMarker(m.upperPath("dev/.wh.null"))
        #expect(listNames(m.path("dev")) == ["loop0"])
        // Whiteouts of the image itself hide lower content (whiteouts image has none visible).
        #expect(err(unlink(m.path("rel-link"))) == ENOENT)
    }

    @Test func whiteoutNamesAreRefused() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(writeFile(m.path(".wh.x"), "x") == EINVAL)
        #expect(err(mkdir(m.path(".wh.d"), 0o755)) == EINVAL)
        #expect(err(mkdir(m.path("etc/.wh..wh..opq"), 0o755)) == EINVAL)
        #expect(err(symlink("t", m.path(".wh.l"))) == EINVAL)
        #expect(err(mknod(m.path(".wh.f"), S_IFIFO | 0o644, 0)) == EINVAL)
        #expect(err(link(m.path("empty"), m.path(".wh.e"))) == EINVAL)
        #expect(err(rename(m.path("empty"), m.path(".wh.e"))) == EINVAL)
        #expect(lstatOrNil(m.path(".wh..wh..opq")) == nil)
        // An upper file named like a whiteout is invisible.
        #expect(writeFile(m.upperPath(".wh.zzz"), "") == 0)
        #expect(lstatOrNil(m.path(".wh.zzz")) == nil && errno == ENOENT)
        #expect(!(listNames(m.mnt) ?? []).contains(".wh.zzz"))
    }

    @Test func xattrs() throws {
        let m = try Mounted()
        defer { m.close() }
        let f = m.path("xattr-file")
        #expect(getxattrString(f, "user.comment") == "hello")
        let lowerNames = m.view.inode(of: try #require(m.view.lookup("xattr-file"))).xattrs.map(\.name.description).sorted()
        #expect(listxattrNames(f) == lowerNames)
        #expect(lgetxattr(f, "user.comment", nil, 0) == 5, "size query")
        var small = [UInt8](repeating: 0, count: 2)
        #expect(lgetxattr(f, "user.comment", &small, 2) == -1 && errno == ERANGE)
        #expect(lgetxattr(f, "user.missing", nil, 0) == -1 && errno == ENODATA)
        #expect(lstatOrNil(m.upperPath("xattr-file")) == nil, "reading xattrs does not copy up")
        #expect(lsetxattr(f, "user.new", "v", 1, 0) == 0)
        #expect(getxattrString(m.upperPath("xattr-file"), "user.new") == "v")
        #expect(getxattrString(m.upperPath("xattr-file"), "user.comment") == "hello")
        #expect(lremovexattr(f, "user.comment") == 0)
        #expect(getxattrString(f, "user.comment") == nil)
        #expect(listxattrNames(f) == (lowerNames.filter { $0 != "user.comment" } + ["user.new"]).sorted())
        #expect(lsetxattr(f, "user.new", "w", 1, 1 /* XATTR_CREATE */) == -1 && errno == EEXIST)
        // removexattr of a missing attribute of a lower file: ENODATA, no copy-up.
        #expect(lremovexattr(m.path("xattr-dir"), "user.none") == -1 && errno == ENODATA)
        #expect(lstatOrNil(m.upperPath("xattr-dir")) == nil)
        #expect(getxattrString(m.path("xattr-dir"), "user.dir") == "1")
    }

    @Test func hardlinksAndInodeNumbers() throws {
        let m = try Mounted()
        defer { m.close() }
        let a = try #require(lstatOrNil(m.path("hard-a")))
        let b = try #require(lstatOrNil(m.path("hard-b")))
        let c = try #require(lstatOrNil(m.path("etc/hard-c")))
        let g = try #require(lstatOrNil(m.path("gnu/hard-to-lower")))
        #expect(a.st_ino == b.st_ino && b.st_ino == c.st_ino && c.st_ino == g.st_ino)
        #expect(a.st_nlink == 4)
        // link() of a lower file copies it up and links in the upper directory.
        #expect(link(m.path("empty"), m.path("etc/empty-link")) == 0)
        let e1 = try #require(lstatOrNil(m.path("empty")))
        let e2 = try #require(lstatOrNil(m.path("etc/empty-link")))
        #expect(e1.st_ino == e2.st_ino && e1.st_nlink == 2)
        let u1 = try #require(lstatOrNil(m.upperPath("empty")))
        let u2 = try #require(lstatOrNil(m.upperPath("etc/empty-link")))
        #expect(u1.st_ino == u2.st_ino)
        // st_ino stays what it was for a copied-up file, also after rename.
        let before = try #require(lstatOrNil(m.path("subsecond")))
        #expect(chmod(m.path("subsecond"), 0o600) == 0)
        #expect(lstatOrNil(m.path("subsecond"))?.st_ino == before.st_ino)
        #expect(rename(m.path("subsecond"), m.path("etc/moved")) == 0)
        #expect(lstatOrNil(m.path("etc/moved"))?.st_ino == before.st_ino)
        // New files get distinct numbers.
        #expect(writeFile(m.path("n1"), "1") == 0 && writeFile(m.path("n2"), "2") == 0)
        #expect(lstatOrNil(m.path("n1"))!.st_ino != lstatOrNil(m.path("n2"))!.st_ino)
        // A hard link of a new file.
        #expect(link(m.path("n1"), m.path("n1-link")) == 0)
        #expect(lstatOrNil(m.path("n1-link"))?.st_nlink == 2)
        #expect(lstatOrNil(m.path("n1-link"))?.st_ino == lstatOrNil(m.path("n1"))?.st_ino)
    }
}
