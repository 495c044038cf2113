#if canImport(Glibc)
import Glibc
#endif
import CLinux
import FuseFS
import Testing

@Suite("FuseFS POSIX behaviour", .serialized, .enabled(if: Images.fuseAvailable, "needs root and /dev/fuse"))
struct PosixTests {
    @Test func createAndModify() throws {
        let m = try Mounted()
        defer { m.close() }
        // create/write/read/fsync/ftruncate/fallocate through an fd
        let fd = open(m.path("tmp/file"), O_RDWR | O_CREAT | O_EXCL, 0o640)
        #expect(fd >= 0)
        #expect(write(fd, "hello world", 11) == 11)
        #expect(fsync(fd) == 0 && fdatasync(fd) == 0)
        var buf = [UInt8](repeating: 0, count: 32)
        #expect(pread(fd, &buf, 32, 6) == 5)
        #expect(ftruncate(fd, 5) == 0)
        #expect(posix_fallocate(fd, 0, 4096) == 0)
        var st = stat()
        #expect(fstat(fd, &st) == 0 && st.st_size == 4096)
        #expect(fchmod(fd, 0o604) == 0)
        close(fd)
        #expect(open(m.path("tmp/file"), O_RDWR | O_CREAT | O_EXCL, 0o640) == -1 && errno == EEXIST)
        let up = try #require(lstatOrNil(m.upperPath("tmp/file")))
        #expect(up.st_mode == S_IFREG | 0o604 && up.st_size == 4096 && up.st_uid == 0)
        #expect(lstatOrNil(m.upperPath("tmp"))?.st_mode == S_IFDIR | 0o1777, "sticky parent copied up")
        // mkdir with exact mode, symlink, mknod fifo/regular/device (as root)
        let mask = umask(0)
        defer { umask(mask) }
        #expect(mkdir(m.path("newdir"), 0o1750) == 0)
        #expect(lstatOrNil(m.upperPath("newdir"))?.st_mode == S_IFDIR | 0o1750)
        #expect(lstatOrNil(m.path("newdir"))?.st_mode == S_IFDIR | 0o1750)
        #expect(err(mkdir(m.path("newdir"), 0o755)) == EEXIST)
        #expect(err(mkdir(m.path("etc"), 0o755)) == EEXIST)
        #expect(symlink("../etc/hostname", m.path("newdir/l")) == 0)
        #expect(readText(m.path("newdir/l")) == "test\n")
        var target = [CChar](repeating: 0, count: 64)
        #expect(readlink(m.upperPath("newdir/l"), &target, 64) == 15)
        #expect(mknod(m.path("newdir/fifo"), S_IFIFO | 0o620, 0) == 0)
        #expect(lstatOrNil(m.upperPath("newdir/fifo"))?.st_mode == S_IFIFO | 0o620)
        #expect(mknod(m.path("newdir/reg"), S_IFREG | 0o600, 0) == 0)
        #expect(lstatOrNil(m.upperPath("newdir/reg"))?.st_mode == S_IFREG | 0o600)
        #expect(mknod(m.path("newdir/null"), S_IFCHR | 0o666, dev_t(umoci_makedev(1, 3))) == 0)
        let dev = try #require(lstatOrNil(m.path("newdir/null")))
        #expect(dev.st_mode == S_IFCHR | 0o666 && umoci_major(dev_t(dev.st_rdev)) == 1 && umoci_minor(dev_t(dev.st_rdev)) == 3)
        #expect(listNames(m.path("newdir")) == ["fifo", "l", "null", "reg"])
        // statfs is the upper filesystem's
        var a = statvfs(), b = statvfs()
        #expect(statvfs(m.mnt, &a) == 0 && statvfs(m.upper, &b) == 0)
        #expect(a.f_blocks == b.f_blocks && a.f_bsize == b.f_bsize)
    }

    @Test func devicesCannotBeOpened() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(open(m.path("dev/null"), O_RDONLY) == -1)
        #expect(errno == EACCES || errno == ENXIO)
        #expect(open(m.path("dev/loop0"), O_RDONLY) == -1)
        let st = try #require(lstatOrNil(m.path("dev/null")))
        #expect(st.st_mode & S_IFMT == S_IFCHR)
    }

    @Test func directoryListingOffsetsAreStable() throws {
        let m = try Mounted(tag: "whiteouts")
        defer { m.close() }
        #expect(writeFile(m.path("multi/zz-new"), "n") == 0)
        #expect(unlink(m.path("multi/f005")) == 0)
        let dir = try #require(opendir(m.path("multi")))
        defer { closedir(dir) }
        var names: [String] = []
        var positions: [(Int, String)] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            names.append(name)
            if names.count % 37 == 0 { positions.append((telldir(dir), name)) }
        }
        #expect(names.count == 202)
        #expect(Set(names).count == 202 && names.contains("zz-new") && !names.contains("f005"))
        // Seeking back to a position gives the same next entry.
        for (pos, _) in positions {
            seekdir(dir, pos)
            let e = try #require(readdir(dir))
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            let i = names.firstIndex(of: name)
            #expect(i != nil)
        }
    }

    /// The server clears set-user-ID and set-group-ID itself (HANDLE_KILLPRIV): a write or a
    /// truncation by a user without CAP_FSETID, and any chown, must drop them, as on ext4; a
    /// server that left it to the kernel would keep them (its own writes have CAP_FSETID).
    @Test func writeTruncateAndChownClearSetuid() throws {
        let m = try Mounted()
        defer { m.close() }
        for (name, command) in [("w", "printf x >> '%'"), ("t", "truncate -s 1 '%'")] {
            #expect(writeFile(m.path("tmp/\(name)"), "data") == 0)
            #expect(chmod(m.path("tmp/\(name)"), 0o6777) == 0)
            #expect(runAsUser(command.replacingOccurrences(of: "%", with: m.path("tmp/\(name)"))) == 0, "\(name)")
            #expect(lstatOrNil(m.path("tmp/\(name)"))?.st_mode == S_IFREG | 0o777, "\(name) through the mount")
            #expect(lstatOrNil(m.upperPath("tmp/\(name)"))?.st_mode == S_IFREG | 0o777, "\(name) in upper")
        }
        // Without group-execute S_ISGID is mandatory locking and stays.
        #expect(writeFile(m.path("tmp/lock"), "data") == 0)
        #expect(chmod(m.path("tmp/lock"), 0o2666) == 0)
        #expect(runAsUser("printf x >> '\(m.path("tmp/lock"))'") == 0)
        #expect(lstatOrNil(m.path("tmp/lock"))?.st_mode == S_IFREG | 0o2666)
        // Root keeps them on write (CAP_FSETID), loses them on chown.
        #expect(writeFile(m.path("tmp/r"), "data") == 0)
        #expect(chmod(m.path("tmp/r"), 0o6755) == 0)
        #expect(run("printf x >> '\(m.path("tmp/r"))'") == 0)
        #expect(lstatOrNil(m.path("tmp/r"))?.st_mode == S_IFREG | 0o6755)
        #expect(chown(m.path("tmp/r"), 5, 5) == 0)
        #expect(lstatOrNil(m.path("tmp/r"))?.st_mode == S_IFREG | 0o755)
        #expect(lstatOrNil(m.upperPath("tmp/r"))?.st_mode == S_IFREG | 0o755)
    }

    @Test func permissionsAsUser() throws {
        let m = try Mounted()
        defer { m.close() }
        #expect(writeFile(m.path("secret"), "root only", mode: 0o600) == 0)
        #expect(chmod(m.path("secret"), 0o600) == 0)
        #expect(runAsUser("cat '\(m.path("etc/hostname"))' >/dev/null") == 0, "world-readable lower file")
        #expect(runAsUser("cat '\(m.path("secret"))' >/dev/null") != 0, "0600 root file")
        #expect(runAsUser("cat '\(m.path("home/user/notes"))' >/dev/null") == 0, "own 0600 file")
        #expect(runAsUser("touch '\(m.path("etc/x"))'") != 0, "root 0755 directory")
        #expect(lstatOrNil(m.path("etc/x")) == nil)
        #expect(runAsUser("echo hi > '\(m.path("etc/hostname"))'") != 0, "root 0644 file")
        #expect(runAsUser("rm -f '\(m.path("bin/suid"))'") != 0)
        #expect(runAsUser("mkdir '\(m.path("home/user/d"))' && echo data > '\(m.path("home/user/d/f"))'") == 0, "user-owned dir")
        let f = try #require(lstatOrNil(m.upperPath("home/user/d/f")))
        #expect(f.st_uid == 1000 && f.st_gid == 1000)
        #expect(readText(m.upperPath("home/user/d/f")) == "data\n")
        #expect(runAsUser("chmod 600 '\(m.path("home/user/notes"))'") == 0)
        #expect(runAsUser("chmod 600 '\(m.path("etc/hostname"))'") != 0, "chmod of someone else's file")
        // A setgid directory passes its group on, and S_ISGID to new directories.
        #expect(mkdir(m.path("shared"), 0o777) == 0)
        #expect(chown(m.path("shared"), 0, 50) == 0 && chmod(m.path("shared"), 0o2777) == 0)
        #expect(runAsUser("mkdir '\(m.path("shared/sub"))' && touch '\(m.path("shared/f"))'") == 0)
        let sub = try #require(lstatOrNil(m.upperPath("shared/sub")))
        #expect(sub.st_gid == 50 && sub.st_uid == 1000 && sub.st_mode & S_ISGID != 0)
        #expect(lstatOrNil(m.upperPath("shared/f"))?.st_gid == 50)
        // setuid preserved on copy-up, visible to the user; the user may execute it.
        #expect(setxattrOK(m.path("bin/suid")))
        #expect(lstatOrNil(m.upperPath("bin/suid"))?.st_mode == S_IFREG | 0o4755)
        #expect(runAsUser("test -u '\(m.path("bin/suid"))' && test -x '\(m.path("bin/suid"))'") == 0)
        // Sticky /tmp: the user cannot remove root's file there.
        #expect(writeFile(m.path("tmp/rootfile"), "r") == 0)
        #expect(runAsUser("rm -f '\(m.path("tmp/rootfile"))'") != 0)
        #expect(runAsUser("echo u > '\(m.path("tmp/userfile"))' && rm '\(m.path("tmp/userfile"))'") == 0)
    }

    private func setxattrOK(_ path: String) -> Bool {
        lsetxattr(path, "user.touched", "1", 1, 0) == 0
    }
}
