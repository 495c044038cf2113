import CLinux
import Foundation
import Basics
import OCI
import UpperFormat
import BundleFormat
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// Extracted bundles (`unpack --extract`, UMOCI_UNPACK_MODE, the fallback without FUSE):
/// umoci's own bundle format, checked against Debian's umoci in both directions.
@Suite struct ExtractTests {
    /// The lines of an mtree file (as bytes: a directory's comment holds its raw name) after
    /// go-mtree's header comments that name the user, the machine, the tree and the date.
    func mtreeBody(_ path: String) throws -> [[UInt8]] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map { Array($0) }
        for (i, prefix) in ["#          user: ", "#       machine: ", "#          tree: ", "#          date: "].enumerated() {
            #expect(lines[i].starts(with: prefix.utf8), "line \(i + 1) of \(path): \(ByteString(bytes: lines[i]))")
        }
        return Array(lines.dropFirst(4))
    }

    func mtreeFile(_ bundle: String) throws -> String {
        let names = try FileManager.default.contentsOfDirectory(atPath: bundle).filter { $0.hasSuffix(".mtree") }
        #expect(names.count == 1, "\(bundle): \(names)")
        return bundle + "/" + (try #require(names.first))
    }

    func manifestDigest(_ layout: String, _ tag: String) throws -> String {
        try ImageLayout(opening: layout).resolveImage(tag: tag).manifest.digest.encoded
    }

    /// Our mtree writer on a tree Debian's umoci extracted gives exactly the file Debian's
    /// umoci wrote for it, and our reader reads that file back to the same entries. The names
    /// image has names that are different bytes but equal Strings, and names and a symlink
    /// target that are not UTF-8.
    @Test(arguments: ["basic-gzip", "whiteouts-gzip", "names-gzip"])
    func mtreeIsWhatDebianUmociWrites(_ tag: String) throws {
        let dir = TemporaryDirectory()
        ok(try reference("unpack", "--image", fixtureLayout + ":" + tag, dir("D")))
        let theirs = try mtreeFile(dir("D"))
        #expect(theirs == dir("D") + "/sha256_" + (try manifestDigest(fixtureLayout, tag)) + ".mtree")
        let walk = try RootfsWalk.walk(rootfs: dir("D/rootfs"))
        let ours = dir("ours.mtree")
        try Data(MtreeManifest(entries: walk.entries).serialized(tree: dir("D/rootfs"))).write(to: URL(fileURLWithPath: ours))
        let a = try mtreeBody(ours), b = try mtreeBody(theirs)
        #expect(a == b, "first difference: \(zip(a, b).first { $0 != $1 }.map { "\(ByteString(bytes: $0)) | \(ByteString(bytes: $1))" } ?? "length \(a.count) vs \(b.count)")")
        let parsed = try MtreeManifest.read(theirs)
        #expect(parsed.entries == walk.entries)
        #expect(parsed.usedKeywords.isSubset(of: Set(MtreeManifest.keywords)))
    }

    @Test func visEncodingRoundTrips() throws {
        let name = ByteString(bytes: Array("we ird\\name#x*?[\t\nü".utf8) + [0xE9, 0xFF, 0x80])
        #expect(MtreeManifest.vis(name)
                == "we\\040ird\\\\name\\043x\\052\\077\\133\\011\\012\\303\\274\\351\\377\\200")
        #expect(ByteString(bytes: try MtreeManifest.unvis(MtreeManifest.vis(name))) == name)
        #expect(try MtreeManifest.unvis("a\\sb\\^A\\t\\M-i") == Array("a b\u{01}\t".utf8) + [0xE9])
        #expect(Base64.encode(Array("hello".utf8)) == "aGVsbG8=")
        #expect(Base64.encode([]) == "")
    }

    /// A manifest's names are bytes: the NFC and NFD spellings of "café" and a Latin-1 name
    /// are three paths, a directory comment that is not UTF-8 is read and written as it is,
    /// and a link target's two vis spellings of one byte are one value.
    @Test func manifestNamesAreBytes() throws {
        var text = Array("#      keywords: size,type,link\n\n# .\n. type=dir\n".utf8)
        text += Array("    cafe\\314\\201 type=file\n    caf\\303\\251 type=file\n    caf\\351 type=file\n".utf8)
        text += Array("    l type=link link=/t\\M-~\n\n# dir".utf8) + [0xFE] + Array("\ndir\\376 type=dir\n..\n..\n".utf8)
        let m = try MtreeManifest.parse(text, path: "test.mtree")
        let nfd = ByteString("cafe\u{301}"), nfc = ByteString("caf\u{e9}"), latin1 = ByteString(bytes: Array("caf".utf8) + [0xE9])
        #expect(m.entries.map(\.path) == [".", nfd, nfc, latin1, "l", ByteString(bytes: Array("dir".utf8) + [0xFE])])
        #expect(m.byPath().count == 6)
        #expect(m.byPath()["l"]?.keywords["link"] == "/t\\376")
        // Written back, the directory's comment is its raw bytes, as go-mtree writes it.
        let out = MtreeManifest(entries: m.entries).serialized(tree: "t")
        #expect(out.split(separator: 0x0A).contains { Array($0) == Array("# dir".utf8) + [0xFE] })
        let again = try MtreeManifest.parse(out, path: "again")
        #expect(again.entries.map(\.path) == m.entries.map(\.path))
        #expect(again.byPath()["l"]?.keywords["link"] == "/t\\376")
        // go-mtree's comment for a directory with a newline in its name spans two lines.
        let broken = "# .\n. type=dir\n\n# dir\nwith newline\n/set type=file\ndir\\012with\\040newline type=dir\n..\n..\n"
        #expect(try MtreeManifest.parse(Array(broken.utf8), path: "broken.mtree").entries.map(\.path) == [".", "dir\nwith newline"])
        do {
            _ = try MtreeManifest.parse(Array("# .\n. type=dir\n    a\\000b type=file\n".utf8), path: "nul.mtree")
            Issue.record("a name with a NUL byte was accepted")
        } catch {
            #expect(error.code == .corrupt && error.subject == "nul.mtree", "\(error)")
            #expect(error.message.contains("nul.mtree: line 3: a name with a NUL byte"), "\(error.message)")
        }
    }

    @Test func malformedManifestIsNamed() throws {
        let dir = TemporaryDirectory()
        let file = dir("bad.mtree")
        try "# comment\n.  type=dir\n    f size\n".write(toFile: file, atomically: false, encoding: .utf8)
        #expect(throws: StoreError.self) { try MtreeManifest.read(file) }
        do { _ = try MtreeManifest.read(file) } catch {
            #expect(error.code == .corrupt && error.subject == file, "\(error)")
            #expect(error.message.contains("line 3"))  // the line the user is told
        }
    }

    /// `unpack --extract` writes umoci's bundle: the same rootfs and the same manifest as
    /// Debian's umoci (directories that no layer entry defines aside: their mtime is the
    /// extraction time), umoci.json naming the mode; mount refuses it, umount does nothing.
    @Test func unpackExtractGivesUmocisBundle() throws {
        let dir = TemporaryDirectory()
        let out = try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":basic-gzip", dir("E"))
        ok(out)
        #expect(out.stderr.isEmpty, "\(out)")
        ok(try reference("unpack", "--image", fixtureLayout + ":basic-gzip", dir("D")))
        var names = try FileManager.default.contentsOfDirectory(atPath: dir("E")).sorted()
        let digest = try manifestDigest(fixtureLayout, "basic-gzip")
        #expect(names == ["config.json", "rootfs", "sha256_\(digest).mtree", "umoci-rootfs-stamps.sha256_\(digest)", "umoci.json"])
        names = try FileManager.default.contentsOfDirectory(atPath: dir("D")).sorted()
        #expect(names == ["config.json", "rootfs", "sha256_\(digest).mtree", "umoci.json"])
        try expectSameTree(dir("E/rootfs"), dir("D/rootfs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        func withoutDirectoryTimes(_ m: MtreeManifest) -> [MtreeManifest.Entry] {
            m.entries.map { e in
                var e = e
                if e.isDirectory { e.keywords["tar_time"] = nil }
                e.xattrKeys.sort()  // Debian's umoci sets xattrs in Go's map order
                return e
            }
        }
        #expect(withoutDirectoryTimes(try MtreeManifest.read(try mtreeFile(dir("E"))))
                == withoutDirectoryTimes(try MtreeManifest.read(try mtreeFile(dir("D")))))
        let meta = try BundleMetadata.read(bundle: dir("E"))
        #expect(meta.mode == .extract)
        #expect(meta.json["unpack_mode"]?.string == "extract")
        #expect(try BundleMetadata.read(bundle: dir("D")).mode == .extract)
        #expect(try readJSON(dir("E/config.json"))["root"]?.object?["path"]?.string == "rootfs")
        // Unchanged, xattrs included (taken from the manifest where the stamp vouches for
        // them), so repack adds no layer.
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("repack", "--image", L + ":same", dir("E")))
        #expect(try ImageLayout(opening: L).loadImage(tag: "same").manifest.layers.count
                == ImageLayout(opening: L).loadImage(tag: "basic-gzip").manifest.layers.count)
        #expect(setxattr(dir("E/rootfs/xattr-file"), "user.comment", "changed", 7, 0) == 0)
        ok(try umoci("repack", "--image", L + ":changed", dir("E")))
        #expect(try lastLayerEntries(L, "changed") == ["xattr-file"])
        fails(try umoci("mount", dir("E")), containing: dir("E"))
        fails(try umoci("mount", dir("D")), containing: dir("D"))
        ok(try umoci("umount", dir("D")))
        ok(try umoci("umount", dir("E")))
        #expect(FileManager.default.fileExists(atPath: dir("E/rootfs/etc/hostname")))
        // An existing rootfs is refused, as umoci does.
        fails(try umoci("unpack", "--extract", "--image", fixtureLayout + ":basic-gzip", dir("E")), containing: dir("E/config.json"))
    }

    @Test func environmentChoosesTheMode() throws {
        let dir = TemporaryDirectory()
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":whiteouts-gzip", dir("E"),
                     environment: ["UMOCI_UNPACK_MODE": "extract"]))
        #expect(try BundleMetadata.read(bundle: dir("E")).mode == .extract)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir("E")).contains { $0.hasSuffix(".mtree") })
        fails(try umoci("unpack", "--image", fixtureLayout + ":whiteouts-gzip", dir("X"), environment: ["UMOCI_UNPACK_MODE": "copy"]),
              containing: "invalid UMOCI_UNPACK_MODE 'copy'")
        #expect(!FileManager.default.fileExists(atPath: dir("X")))
    }

    /// Runs our umoci in a private mount namespace whose /dev is an empty tmpfs: no /dev/fuse.
    func withoutFuse(_ arguments: [String], environment: [String] = [],
                     hide: String = "mount -t tmpfs none /dev") throws -> Output {
        let command = ([hide + " && exec env"] + environment + [ourUmoci] + arguments.map { "'\($0)'" }).joined(separator: " ")
        return try run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", command])
    }

    /// No /dev/fuse (an empty tmpfs on /dev), or a /dev/fuse that is /dev/null so that the
    /// mount is refused: either way unpack says why in one line and extracts.
    @Test(arguments: [("mount -t tmpfs none /dev", "/dev/fuse does not exist"),
                      ("mount --bind /dev/null /dev/fuse", "cannot mount FUSE")])
    func fallsBackToExtractionWithoutFuse(_ hide: String, _ reason: String) throws {
        let dir = TemporaryDirectory()
        let out = try withoutFuse(["unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":whiteouts-gzip", dir("B")],
                                  hide: hide)
        #expect(out.status == 0, "\(out)")
        let lines = out.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(out)")
        #expect(out.stderr.contains(reason) && out.stderr.contains("extracting the rootfs instead"), "\(out)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir("B")).sorted().filter { !$0.hasSuffix(".mtree") && !$0.hasPrefix("umoci-rootfs-stamps.") }
                == ["config.json", "rootfs", "umoci.json"])
        #expect(try BundleMetadata.read(bundle: dir("B")).mode == .extract)
        // A working bundle: Debian's umoci repacks it.
        try "added\n".write(toFile: dir("B/rootfs/added"), atomically: false, encoding: .utf8)
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try reference("repack", "--image", L + ":after", dir("B")))
        #expect(try lastLayerEntries(L, "after").contains("added"))
        // Asked for a mount explicitly, unpack fails in one line and creates nothing.
        let refused = try withoutFuse(["unpack", "--image", fixtureLayout + ":whiteouts-gzip", dir("M")],
                                      environment: ["UMOCI_UNPACK_MODE=mount"], hide: hide)
        fails(refused, containing: reason)
        #expect(!FileManager.default.fileExists(atPath: dir("M")))
    }

    // MARK: Repack

    func setTime(_ path: String, _ seconds: Int = 1_700_000_000) {
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
    }

    /// Added, modified and deleted files, a changed mode, a new symlink, a deleted directory,
    /// a new directory, a new hardlink and an xattr; files get a fixed mtime so that two
    /// rootfs changed this way give the same tree.
    func change(_ rootfs: String) throws {
        try write(rootfs + "/added", "added\n")
        try write(rootfs + "/a/y", "modified y\n")
        try FileManager.default.removeItem(atPath: rootfs + "/a/sub/z")
        chmod(rootfs + "/f", 0o600)
        symlink("/etc/passwd", rootfs + "/a/new-link")
        try FileManager.default.removeItem(atPath: rootfs + "/multi")
        try FileManager.default.createDirectory(atPath: rootfs + "/newdir/deep", withIntermediateDirectories: true)
        try write(rootfs + "/newdir/deep/file", "deep\n")
        link(rootfs + "/newdir/deep/file", rootfs + "/newdir/hardlink")
        setxattr(rootfs + "/dup", "user.note", "v", 1, 0)
        for p in ["added", "a/y", "a/new-link", "newdir/deep/file", "f", "dup"] { setTime(rootfs + "/" + p) }
    }

    func expectChanged(_ layout: String, _ tag: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let entries = try lastLayerEntries(layout, tag)
        for e in ["added", "a/y", "a/sub/.wh.z", "f", "a/new-link", ".wh.multi", "newdir/", "newdir/deep/file", "newdir/hardlink", "dup"] {
            #expect(entries.contains(e), "\(e) missing from \(entries.sorted())", sourceLocation: sourceLocation)
        }
        #expect(!entries.contains { $0.hasPrefix("multi/") }, "whiteouts below a removed directory: \(entries.sorted())",
                sourceLocation: sourceLocation)
        #expect(!entries.contains("e") && !entries.contains("h/mine"), "unchanged files in the layer: \(entries.sorted())",
                sourceLocation: sourceLocation)
    }

    /// This tool extracts and Debian's umoci repacks, and the other way round; each tool also
    /// repacks the bundle of the other's kind of its own. Every new image gives the same tree,
    /// and our layer of a bundle has the entries Debian umoci's layer of it has.
    @Test func extractedBundlesRoundTripAcrossTools() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":whiteouts-gzip", dir("E")))
        ok(try reference("unpack", "--image", L + ":whiteouts-gzip", dir("D")))
        try change(dir("E/rootfs"))
        try change(dir("D/rootfs"))
        ok(try reference("repack", "--image", L + ":E-by-debian", dir("E")))
        ok(try umoci("repack", "--image", L + ":D-by-us", dir("D")))
        ok(try umoci("repack", "--image", L + ":E-by-us", dir("E")))
        ok(try reference("repack", "--image", L + ":D-by-debian", dir("D")))
        for tag in ["E-by-debian", "D-by-us", "E-by-us", "D-by-debian"] { try expectChanged(L, tag) }
        #expect(try lastLayerEntries(L, "D-by-us") == lastLayerEntries(L, "D-by-debian"))
        #expect(try lastLayerEntries(L, "E-by-us") == lastLayerEntries(L, "E-by-debian"))
        // Debian's umoci extracts every new image to the tree we changed.
        for tag in ["E-by-debian", "D-by-us", "E-by-us", "D-by-debian"] {
            ok(try reference("raw", "unpack", "--image", L + ":" + tag, dir("check-" + tag)))
            try expectSameTree(dir("check-" + tag), dir("D/rootfs"), compareDirectoryMtime: { _ in false })
            ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", L + ":" + tag, dir("ours-" + tag)))
            try expectSameTree(dir("ours-" + tag), dir("check-" + tag), compareDirectoryMtime: { _ in false })
        }
    }

    // MARK: Names as bytes

    static let longest = ByteString(String(repeating: "n", count: 255))
    static let newline: ByteString = "d/with\nnewline"
    static let newlineDirectory: ByteString = "d/dir\nwith newline"
    static let backslashDirectory: ByteString = "d/ends in\\"
    static let inLatin1Directory = ByteString(bytes: Array("dir".utf8) + [0xFE, 0x2F] + Array("added".utf8) + [0xFF])
    static let symlinkTarget = ByteString(bytes: Array("/target-".utf8) + [0xFE])

    /// The entry names of the last layer of `layout`:`tag` as the bytes the tar headers hold,
    /// read by Python's tarfile (not this project's tar code).
    func lastLayerNames(_ layout: String, _ tag: String) throws -> Set<ByteString> {
        let opened = try ImageLayout(opening: layout)
        let blob = opened.blobPath(try opened.loadImage(tag: tag).manifest.layers.last!.digest)
        let script = """
            import sys, tarfile
            with tarfile.open(sys.argv[1], "r:gz", encoding="utf-8", errors="surrogateescape") as t:
                for m in t:
                    sys.stdout.buffer.write(m.name.encode("utf-8", "surrogateescape") + b"\\0")
            """
        let out = try run("/usr/bin/env", ["python3", "-c", script, blob])
        ok(out)
        return Set(out.stdoutBytes.split(separator: 0).map { ByteString(bytes: $0) })
    }

    /// Edits with names that are bytes: the NFD "café" is rewritten (the NFC one is not), a
    /// Latin-1 name and the 255-byte name are deleted, a name with a newline, a directory with
    /// a newline in its name and one whose name ends in a backslash (go-mtree writes both raw
    /// in the manifest's comment line), a
    /// name that is not UTF-8 in a directory whose name is not UTF-8 and a symlink to a target
    /// that is not UTF-8 are created, each with a fixed mtime. Written with O_NOFOLLOW on paths whose
    /// directories are real directories of the rootfs.
    func changeNames(_ rootfs: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let r = ByteString(rootfs + "/")
        func create(_ rel: ByteString, _ text: String) {
            let fd = open((r + rel).c, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
            #expect(fd >= 0, "open \(rel): errno \(errno)", sourceLocation: sourceLocation)
            guard fd >= 0 else { return }
            let bytes = Array(text.utf8)
            #expect(Glibc.write(fd, bytes, bytes.count) == bytes.count, sourceLocation: sourceLocation)
            close(fd)
        }
        create(NameTests.nfd, "NFD changed\n")
        #expect(unlink((r + NameTests.latin1).c) == 0, sourceLocation: sourceLocation)
        create(Self.newline, "nl\n")
        #expect(unlink((r + Self.longest).c) == 0, sourceLocation: sourceLocation)
        create(Self.inLatin1Directory, "added\n")
        #expect(mkdir((r + Self.newlineDirectory).c, 0o755) == 0, sourceLocation: sourceLocation)
        create(Self.newlineDirectory + "/inside", "inside\n")
        #expect(mkdir((r + Self.backslashDirectory).c, 0o755) == 0, sourceLocation: sourceLocation)
        create(Self.backslashDirectory + "/inside", "inside\n")
        #expect(symlink(Self.symlinkTarget.c, (r + "d/sym").c) == 0, sourceLocation: sourceLocation)
        for rel in [NameTests.nfd, Self.newline, Self.inLatin1Directory, "d/sym", Self.newlineDirectory + "/inside",
                    Self.backslashDirectory + "/inside"] {
            var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 0), timespec(tv_sec: 1_700_000_000, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, (r + rel).c, &times, AT_SYMLINK_NOFOLLOW) == 0, sourceLocation: sourceLocation)
        }
    }

    func expectNamesChanged(_ layout: String, _ tag: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let names = try lastLayerNames(layout, tag)
        let whiteouts = [ByteString(bytes: Array("d/.wh.caf".utf8) + [0xE9]), ".wh." + Self.longest]
        for e in [NameTests.nfd, Self.newline, Self.inLatin1Directory, "d/sym", Self.newlineDirectory + "/inside",
                  Self.backslashDirectory + "/inside"] + whiteouts {
            #expect(names.contains(e), "\(e.description.debugDescription) missing from \(names.sorted())", sourceLocation: sourceLocation)
        }
        // The NFC spelling is another file, unchanged; so are the others.
        for e: ByteString in [NameTests.nfc, "d/next", "d/cr\r", "d/link", ByteString(bytes: Array("dir".utf8) + [0xFE, 0x2F] + Array("inner".utf8))] {
            #expect(!names.contains(e), "\(e.description.debugDescription) in the layer: \(names.sorted())", sourceLocation: sourceLocation)
        }
    }

    /// The names image in extract mode: `unpack --extract` gives Debian umoci's rootfs and
    /// manifest; edits with names that are bytes are repacked by this tool and by Debian's
    /// umoci, from this tool's bundle and from Debian's, into layers with the same entries;
    /// Debian's umoci extracts each new image to the edited rootfs. After --refresh-bundle the
    /// manifest this tool wrote (names and targets that are not UTF-8, NFC and NFD) reads back
    /// with no change, by this tool and by Debian's umoci.
    @Test func namesAreBytesInExtractedBundles() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":names-gzip", dir("E")))
        ok(try reference("unpack", "--image", L + ":names-gzip", dir("D")))
        try expectSameTree(dir("E/rootfs"), dir("D/rootfs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        func entries(_ m: MtreeManifest) -> [MtreeManifest.Entry] {
            m.entries.map { e in
                var e = e
                if e.isDirectory { e.keywords["tar_time"] = nil }
                return e
            }
        }
        let ours = try MtreeManifest.read(try mtreeFile(dir("E"))), theirs = try MtreeManifest.read(try mtreeFile(dir("D")))
        #expect(entries(ours) == entries(theirs))
        #expect(ours.byPath().count == ours.entries.count && ours.byPath()[NameTests.nfc] != nil && ours.byPath()[NameTests.nfd] != nil)

        changeNames(dir("E/rootfs"))
        changeNames(dir("D/rootfs"))
        try expectSameTree(dir("E/rootfs"), dir("D/rootfs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        ok(try reference("repack", "--image", L + ":E-by-debian", dir("E")))
        ok(try umoci("repack", "--image", L + ":D-by-us", dir("D")))
        ok(try umoci("repack", "--image", L + ":E-by-us", dir("E")))
        ok(try reference("repack", "--image", L + ":D-by-debian", dir("D")))
        for tag in ["E-by-debian", "D-by-us", "E-by-us", "D-by-debian"] { try expectNamesChanged(L, tag) }
        #expect(try lastLayerNames(L, "D-by-us") == lastLayerNames(L, "D-by-debian"))
        #expect(try lastLayerNames(L, "E-by-us") == lastLayerNames(L, "E-by-debian"))
        for tag in ["E-by-debian", "D-by-us", "E-by-us", "D-by-debian"] {
            ok(try reference("raw", "unpack", "--image", L + ":" + tag, dir("check-" + tag)))
            try expectSameTree(dir("check-" + tag), dir("D/rootfs"), compareDirectoryMtime: { _ in false })
        }

        // Our manifest of the edited rootfs: nothing changed since, for either tool.
        ok(try umoci("repack", "--refresh-bundle", "--image", L + ":refreshed", dir("E")))
        let layers = { (tag: String) throws -> Int in try ImageLayout(opening: L).loadImage(tag: tag).manifest.layers.count }
        ok(try umoci("repack", "--image", L + ":same-by-us", dir("E")))
        #expect(try layers("same-by-us") == layers("refreshed"))
        ok(try reference("repack", "--image", L + ":same-by-debian", dir("E")))
        #expect(try layers("same-by-debian") == layers("refreshed"), "Debian's umoci finds changes against our manifest")
        // Debian's manifest of the edited rootfs has the newline directory's comment broken
        // over two lines (Debian's umoci then whites out "d/with", a path that never was);
        // this tool reads it as one comment and finds no change.
        ok(try reference("repack", "--refresh-bundle", "--image", L + ":refreshed-by-debian", dir("D")))
        ok(try umoci("repack", "--image", L + ":same-after-debian", dir("D")))
        #expect(try layers("same-after-debian") == layers("refreshed-by-debian"),
                "changes against Debian's manifest: \((try? lastLayerNames(L, "same-after-debian"))?.sorted() ?? [])")
    }

    /// An extraction into an existing empty rootfs that fails part way (its tmpfs runs out of
    /// inodes, after 3 to 13 of them; 14 are enough) leaves the rootfs empty, names that are not UTF-8
    /// included, and says why in one line, a newline in a name escaped. Each run is in a mount
    /// namespace of its own; what is left is counted there, by find.
    @Test func failedExtractionLeavesTheRootfsEmpty() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir("T"), withIntermediateDirectories: false)
        var messages: [String] = []
        for inodes in 3...13 {
            let script = "mount -t tmpfs -o nr_inodes=\(inodes) none \(dir("T")) || exit 99; "
                + "\(ourUmoci) raw unpack --cache-dir \(dir("cache")) --image \(fixtureLayout):names \(dir("T")); s=$?; "
                + "find \(dir("T")) -mindepth 1 -printf x; exit $s"
            let out = try run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script])
            fails(out, containing: "No space left on device")
            #expect(out.stdout.isEmpty, "nr_inodes=\(inodes): \(out.stdout.count) paths left in the rootfs after \(out.stderr)")
            messages.append(out.stderr)
        }
        // The runs failed after the name with a newline and inside the directory whose name
        // is not UTF-8 (shown with U+FFFD), so both were there to be removed.
        #expect(messages.contains { $0.contains("d/new\\nline") }, "\(messages)")
        #expect(messages.contains { $0.contains("dir\u{FFFD}/inner") }, "\(messages)")
    }

    /// A content change that keeps size and mtime is found: through the stamps (ctime moved)
    /// in our bundle, through hashing in Debian umoci's bundle, which has no stamps.
    @Test func contentChangeWithTheSameSizeAndMtimeIsFound() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":whiteouts-gzip", dir("E")))
        ok(try reference("unpack", "--image", L + ":whiteouts-gzip", dir("D")))
        for b in ["E", "D"] {
            let f = dir(b + "/rootfs/multi/f007")
            var st = stat()
            lstat(f, &st)
            var data = try #require(FileManager.default.contents(atPath: f))
            data[0] = data[0] == 0x41 ? 0x42 : 0x41
            try data.write(to: URL(fileURLWithPath: f))
            var times = [st.st_atim, st.st_mtim]
            utimensat(AT_FDCWD, f, &times, 0)
            ok(try umoci("repack", "--image", L + ":" + b, dir(b)))
            let entries = try lastLayerEntries(L, b)
            #expect(entries == ["multi/f007"], "\(b): \(entries.sorted())")
        }
        // Nothing changed: no layer, as umoci.
        ok(try reference("unpack", "--image", L + ":whiteouts-gzip", dir("D2")))
        let before = try ImageLayout(opening: L).loadImage(tag: "whiteouts-gzip").manifest.layers.count
        ok(try umoci("repack", "--image", L + ":same", dir("D2")))
        #expect(try ImageLayout(opening: L).loadImage(tag: "same").manifest.layers.count == before)
    }

    /// A directory replaced by a symlink is that one entry: no whiteouts below it, which a
    /// reader resolving through the symlink would apply to its target (umoci 0.4.7 writes
    /// them). The tree is the one Debian's umoci extracts too.
    @Test func directoryReplacedBySymlinkHasNoWhiteoutsBelowIt() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":whiteouts-gzip", dir("E")))
        try FileManager.default.removeItem(atPath: dir("E/rootfs/a"))
        #expect(symlink("/multi", dir("E/rootfs/a")) == 0)
        try FileManager.default.createDirectory(atPath: dir("E/rootfs/multi/sub"), withIntermediateDirectories: false)
        ok(try umoci("repack", "--image", L + ":x", dir("E")))
        let entries = try lastLayerEntries(L, "x")
        #expect(entries.contains("a") && entries.contains("multi/sub/"), "\(entries.sorted())")
        #expect(!entries.contains { $0.hasPrefix("a/") }, "\(entries.sorted())")
        ok(try reference("raw", "unpack", "--image", L + ":x", dir("check")))
        try expectSameTree(dir("check"), dir("E/rootfs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
    }

    /// Racily clean: a file whose stamp matches but whose ctime is not before the start of the
    /// walk that stamped it is hashed again. The stamps file is rewritten by hand to make the
    /// race; with a start after the file's ctime the same stamp is trusted, which shows the
    /// stamps are what decides.
    @Test func racilyCleanFilesAreHashedAgain() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":whiteouts-gzip", dir("E")))
        // The content changes; size and mtime stay (the manifest's keywords all match).
        let f = dir("E/rootfs/multi/f007")
        var st = stat()
        #expect(lstat(f, &st) == 0)
        var data = try #require(FileManager.default.contents(atPath: f))
        data[0] = data[0] == 0x41 ? 0x42 : 0x41
        try data.write(to: URL(fileURLWithPath: f))
        var times = [st.st_atim, st.st_mtim]
        #expect(utimensat(AT_FDCWD, f, &times, 0) == 0)
        #expect(lstat(f, &st) == 0)
        let digest = try manifestDigest(L, "whiteouts-gzip")
        let stampsFile = dir("E/umoci-rootfs-stamps.sha256_" + digest)
        var stamps = try #require(try UpperBaseline.read(stampsFile))
        #expect(stamps.stamps["multi/f007"] != nil && stamps.stamps["multi/f007"] != UpperBaseline.stamp(st))
        stamps.stamps["multi/f007"] = UpperBaseline.stamp(st)
        for (started, tag, expected) in [(st.st_ctim, "racy", Set(["multi/f007"])),
                                         (timespec(tv_sec: st.st_ctim.tv_sec + 1, tv_nsec: 0), "trusted", Set<String>())] {
            stamps.started = UpperBaseline.FileTime(started)
            try stamps.write(stampsFile)
            ok(try umoci("repack", "--image", L + ":" + tag, dir("E")))
            let layers = try ImageLayout(opening: L).loadImage(tag: tag).manifest.layers.count
            let before = try ImageLayout(opening: L).loadImage(tag: "whiteouts-gzip").manifest.layers.count
            if expected.isEmpty {
                #expect(layers == before, "\(tag)")
            } else {
                #expect(try lastLayerEntries(L, tag) == expected, "\(tag)")
            }
        }
    }

    /// The image's volumes and --mask-path stay out of the layer, as with umoci;
    /// --no-mask-volumes puts the volume back.
    @Test func masksApplyToExtractedBundles() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("config", "--image", L + ":whiteouts-gzip", "--tag", "vol", "--config.volume", "/data"))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":vol", dir("E")))
        try FileManager.default.createDirectory(atPath: dir("E/rootfs/data"), withIntermediateDirectories: false)
        try write(dir("E/rootfs/data/in-volume"), "v\n")
        try write(dir("E/rootfs/a/masked"), "m\n")
        try write(dir("E/rootfs/kept"), "k\n")
        try FileManager.default.removeItem(atPath: dir("E/rootfs/a/y"))
        ok(try umoci("repack", "--mask-path", "/a", "--image", L + ":masked", dir("E")))
        #expect(try lastLayerEntries(L, "masked").subtracting(["."]) == ["kept"])
        ok(try umoci("repack", "--no-mask-volumes", "--image", L + ":unmasked", dir("E")))
        #expect(try lastLayerEntries(L, "unmasked").subtracting(["."])
                == ["kept", "data/", "data/in-volume", "a/", "a/masked", "a/.wh.y"])
    }

    /// A new xattr is a change although the manifest holds no xattr at all: the header names
    /// the keywords to compare. The stamp (ctime) tells the file must be looked at again.
    @Test func xattrOnlyChangeIsFound() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":whiteouts-gzip", dir("E")))
        #expect(!(try String(contentsOfFile: try mtreeFile(dir("E")), encoding: .utf8)).contains("xattr."))
        #expect(setxattr(dir("E/rootfs/e"), "user.tag", "1", 1, 0) == 0)
        ok(try umoci("repack", "--image", L + ":x", dir("E")))
        #expect(try lastLayerEntries(L, "x") == ["e"])
    }

    /// --refresh-bundle makes the new image the base: a new manifest replaces the old one,
    /// umoci.json names the new image, and the next repack holds only newer changes, also when
    /// Debian's umoci makes it.
    @Test func refreshBundleRewritesTheManifest() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", L + ":whiteouts-gzip", dir("E")))
        try change(dir("E/rootfs"))
        ok(try umoci("repack", "--refresh-bundle", "--image", L + ":one", dir("E")))
        let one = try manifestDigest(L, "one")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir("E")).sorted()
        #expect(names == ["config.json", "rootfs", "sha256_\(one).mtree", "umoci-rootfs-stamps.sha256_\(one)", "umoci.json"])
        let meta = try BundleMetadata.read(bundle: dir("E"))
        #expect(try meta.fromDescriptorPath().manifest.digest.encoded == one)
        #expect(meta.mode == .extract)
        try write(dir("E/rootfs/second"), "second\n")
        // Whole seconds: Debian's umoci 0.4.7 (which writes layer three) rounds sub-second
        // mtimes where umoci 0.6 and this tool truncate them.
        setTime(dir("E/rootfs/second"), Int(time(nil)))
        ok(try umoci("repack", "--image", L + ":two", dir("E")))
        // The root is in the layer when its mtime moved to another second, as with umoci.
        #expect(try lastLayerEntries(L, "two").subtracting(["."]) == ["second"])
        ok(try reference("repack", "--refresh-bundle", "--image", L + ":three", dir("E")))
        #expect(try lastLayerEntries(L, "three").subtracting(["."]) == ["second"])
        // Debian's umoci rewrote umoci.json and the manifest; we go on from there.
        #expect(try BundleMetadata.read(bundle: dir("E")).mode == .extract)
        try FileManager.default.removeItem(atPath: dir("E/rootfs/added"))
        ok(try umoci("repack", "--image", L + ":four", dir("E")))
        #expect(try lastLayerEntries(L, "four").subtracting(["."]) == [".wh.added"])
        ok(try reference("raw", "unpack", "--image", L + ":four", dir("check")))
        try expectSameTree(dir("check"), dir("E/rootfs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
    }

    @Test func missingManifestIsNamed() throws {
        let dir = TemporaryDirectory()
        ok(try umoci("unpack", "--extract", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":whiteouts-gzip", dir("E")))
        try FileManager.default.removeItem(atPath: try mtreeFile(dir("E")))
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        fails(try umoci("repack", "--image", L + ":x", dir("E")), containing: ".mtree is missing")
        let index = try String(contentsOfFile: L + "/index.json", encoding: .utf8)
        #expect(!index.contains("\"x\""))
    }
}
