import CLinux
import Foundation
import Basics
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// Names are bytes everywhere: in layers, the view, the mount, the upper directory, the
/// bundle's baseline and the layers repack writes. The "names" image has the NFC and NFD
/// spellings of "café" (two files), Latin-1 names, names with a newline and a trailing CR,
/// a symlink target that is not UTF-8 and names of 252 and 255 bytes.
@Suite(.enabled(if: fuseAvailable, "FUSE is not available here (/dev/fuse)"), .serialized)
struct NameTests {
    static let nfc = ByteString("d/caf\u{e9}")
    static let nfd = ByteString("d/cafe\u{301}")
    static let latin1 = ByteString(bytes: Array("d/caf".utf8) + [0xE9])

    func path(_ root: String, _ rel: ByteString) -> ByteString { ByteString(root + "/") + rel }

    func read(_ p: ByteString) -> [UInt8]? {
        let fd = open(p.c, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        try? Files.forEachChunk(of: fd, path: p.description) { out += $0 }
        return out
    }

    @discardableResult
    func write(_ p: ByteString, _ text: String, flags: Int32 = O_WRONLY | O_CREAT | O_TRUNC) -> Int32 {
        let fd = open(p.c, flags | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        return Glibc.write(fd, bytes, bytes.count) == bytes.count ? 0 : errno
    }

    func ino(_ p: ByteString) -> UInt64? {
        var st = stat()
        return lstat(p.c, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    @Test func rawUnpackKeepsEveryName() throws {
        let dir = TemporaryDirectory()
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":names", dir("ours")))
        ok(try run(debianUmoci, ["raw", "unpack", "--image", fixtureLayout + ":names-gzip", dir("theirs")]))
        try expectSameTree(dir("ours"), dir("theirs"), compareDirectoryMtime: { _ in false })
        #expect(read(path(dir("ours"), Self.nfc)) == Array("nfc\n".utf8))
        #expect(read(path(dir("ours"), Self.nfd)) == Array("nfd\n".utf8))
        #expect(read(path(dir("ours"), Self.latin1)) == Array("latin1 e9\n".utf8))
    }

    @Test func theMountTreatsNamesAsBytes() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let bundle = MountedBundle(dir("bundle"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":names", bundle.paths.bundle))
        let r = bundle.paths.rootfs
        try expectSameTree(r, { () throws -> String in
            ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":names-gzip", dir("theirs")]))
            return dir("theirs")
        }(), compareDirectoryMtime: { _ in false })

        // The NFD spelling is its own file: writing it leaves the NFC one alone.
        #expect(write(path(r, Self.nfd), "NFD changed\n") == 0)
        #expect(read(path(r, Self.nfc)) == Array("nfc\n".utf8))
        #expect(read(path(r, Self.nfd)) == Array("NFD changed\n".utf8))
        #expect(ino(path(r, Self.nfc)) != ino(path(r, Self.nfd)))
        // Names and targets that are not UTF-8 are created as given.
        let ff = path(r, ByteString(bytes: [0x64, 0x2F, 0xFF, 0xFE]))
        #expect(write(ff, "ff fe\n", flags: O_WRONLY | O_CREAT | O_EXCL) == 0)
        let target = ByteString(bytes: Array("/target-".utf8) + [0xFF])
        #expect(symlink(target.c, path(r, "d/sym").c) == 0)
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = readlink(path(r, "d/sym").c, &buffer, buffer.count)
        #expect(n >= 0 && ByteString(bytes: buffer[0..<max(n, 0)]) == target)
        // rename(NFC, NFD) replaces the NFD file.
        #expect(rename(path(r, Self.nfc).c, path(r, Self.nfd).c) == 0)
        #expect(read(path(r, Self.nfd)) == Array("nfc\n".utf8))
        #expect(ino(path(r, Self.nfc)) == nil)
        // Newlines and carriage returns in names survive repack and its baseline.
        #expect(write(path(r, "d/with\nnewline"), "nl\n") == 0)
        #expect(write(path(r, "d/ends\r"), "cr\n") == 0)
        #expect(unlink(path(r, "d/cr\r").c) == 0)
        #expect(unlink(path(r, Self.latin1).c) == 0)
        // Names whose `.wh.` file would not fit in 255 bytes are deleted all the same.
        #expect(unlink(path(r, ByteString(String(repeating: "n", count: 255))).c) == 0)
        #expect(unlink(path(r, ByteString("d/" + String(repeating: "m", count: 252))).c) == 0)

        ok(try umoci("repack", "--refresh-bundle", "--image", L + ":new", bundle.paths.bundle))
        try expectDebianUmociExtracts(L, "new", into: dir("new"), as: r)
        // The bundle's baseline holds those names; the next repack and a remount read it.
        #expect(write(path(r, "d/next"), "next changed\n") == 0)
        ok(try umoci("umount", bundle.paths.bundle))
        ok(try umoci("mount", bundle.paths.bundle))
        #expect(read(path(r, "d/next")) == Array("next changed\n".utf8))
        ok(try umoci("repack", "--image", L + ":newer", bundle.paths.bundle))
        try expectDebianUmociExtracts(L, "newer", into: dir("newer"), as: r)
    }

    /// A layer holds what changed, as umoci writes it: a directory copied up only to hold a
    /// changed file is left out; one whose entries changed is in; so are the root's changes.
    @Test func layersLeaveOutUnchangedDirectories() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let bundle = MountedBundle(dir("bundle"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", bundle.paths.bundle))
        let r = bundle.paths.rootfs
        #expect(write(path(r, "etc/hostname"), "edited\n") == 0)
        #expect(write(path(r, "home/user/notes"), "edited\n") == 0)
        ok(try umoci("repack", "--image", L + ":one", bundle.paths.bundle))
        #expect(try lastLayerEntries(L, "one") == ["etc/hostname", "home/user/notes"])
        try expectDebianUmociExtracts(L, "one", into: dir("one"), as: r)
        // A deletion changes its directory; a change of the root's mode is a "." entry.
        #expect(unlink(path(r, "bin/suid").c) == 0)
        #expect(chmod(r, 0o750) == 0)
        ok(try umoci("repack", "--image", L + ":two", bundle.paths.bundle))
        let two = try lastLayerEntries(L, "two")
        #expect(two.contains("bin/") && two.contains("bin/.wh.suid") && two.contains("."), "\(two)")
        #expect(!two.contains("etc/") && !two.contains("home/") && !two.contains("home/user/"), "\(two)")
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":two", dir("two")]))
        var st = stat()
        #expect(lstat(dir("two"), &st) == 0 && st.st_mode & 0o7777 == 0o750)
    }
}
