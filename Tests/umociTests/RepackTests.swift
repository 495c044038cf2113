import CLinux
import Foundation
import OCI
import BundleFormat
import Testing
import TestSupport

/// Layers written from a directory in OCI diff form (repack of an upper directory, insert,
/// raw add-layer), checked by unpacking the result with Debian's umoci.
@Suite struct RepackTests {
    /// A bundle of `tag` of a copy of the fixtures whose upper directory is filled by hand,
    /// exactly as the mount would leave it: a copy of that layout and the bundle's paths.
    func handMadeBundle(_ dir: TemporaryDirectory, tag: String = "whiteouts-gzip") throws -> (layout: String, paths: BundlePaths) {
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let layout = try ImageLayout(opening: L)
        let path = try layout.resolveImage(tag: tag)
        let paths = BundlePaths(dir("bundle"))
        try FileManager.default.createDirectory(atPath: paths.upper, withIntermediateDirectories: true)
        try adoptImageRootMtime(L, tag, upper: paths.upper, cache: dir("cache"))
        try BundleMetadata(from: path, mount: .init(layout: L, cacheDirectory: dir("cache"), keepDirlinks: false)).write(bundle: paths.bundle)
        return (L, paths)
    }

    /// Applies the same changes to an extracted tree (what the mount shows) and to an upper
    /// directory (how the mount records them).
    func change(tree: String, upper: String) throws {
        // New files, a new directory with a hardlink pair, a fifo and a device.
        for root in [tree, upper] {
            try write(root + "/new-file", "new\n")
            try makeDirectory(root + "/newdir/sub")
            try write(root + "/newdir/sub/f", "deep\n", mode: 0o600)
            link(root + "/newdir/sub/f", root + "/newdir/hardlink")
            mkfifo(root + "/newdir/fifo", 0o640)
            mknod(root + "/newdir/null", S_IFCHR | 0o666, umoci_makedev(1, 3))
            symlink("../a/y", root + "/newdir/link")
            lchown(root + "/newdir/link", 1000, 1000)
        }
        // An edit of a lower file (the upper holds the whole new file).
        try write(tree + "/a/y", "edited\n")
        try makeDirectory(upper + "/a")
        try write(upper + "/a/y", "edited\n")
        // chmod/chown/xattr-only changes: full copies with the new metadata.
        chmod(tree + "/a/sub/z", 0o4750)
        chown(tree + "/a/sub/z", 1234, 5678)
        try makeDirectory(upper + "/a/sub")
        try write(upper + "/a/sub/z", "z1", mode: 0o4750)
        chown(upper + "/a/sub/z", 1234, 5678)
        chmod(upper + "/a/sub/z", 0o4750)
        for root in [tree, upper] { setxattr(root + "/multi/f001", "user.note", "v", 1, 0) }
        try makeDirectory(upper + "/multi")
        ok(try run("/bin/cp", ["-a", tree + "/multi/f001", upper + "/multi/f001"]))
        // Deletions: a lower file and a whole lower directory.
        try FileManager.default.removeItem(atPath: tree + "/dup")
        try write(upper + "/.wh.dup", "", mode: 0)
        try FileManager.default.removeItem(atPath: tree + "/a/sub")
        try FileManager.default.removeItem(atPath: upper + "/a/sub")
        try write(upper + "/a/.wh.sub", "", mode: 0)
        // A lower directory replaced by a new one (opaque).
        try FileManager.default.removeItem(atPath: tree + "/d")
        for root in [tree, upper] { try write(root + "/d/only-new", "fresh\n") }
        try write(upper + "/d/.wh..wh..opq", "", mode: 0)
        // file -> directory, directory -> symlink, symlink -> file.
        try FileManager.default.removeItem(atPath: tree + "/f")
        for root in [tree, upper] { try write(root + "/f/inside", "was a file\n") }
        try FileManager.default.removeItem(atPath: tree + "/multi/f002")
        for root in [tree, upper] { symlink("/a", root + "/multi/f002") }
        try FileManager.default.removeItem(atPath: tree + "/g")
        for root in [tree, upper] { try write(root + "/g", "was a symlink\n") }
    }

    @Test func repackOfAnUpperDirectoryIsReadByUmoci() throws {
        let dir = TemporaryDirectory()
        let (L, paths) = try handMadeBundle(dir)
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":whiteouts-gzip", dir("expected")]))
        try change(tree: dir("expected"), upper: paths.upper)
        // Both copies of each change get one mtime: they were written at different moments,
        // possibly on either side of a second boundary.
        for rel in try FileManager.default.subpathsOfDirectory(atPath: paths.upper)
        where !(rel as NSString).lastPathComponent.hasPrefix(".wh.") {
            for root in [dir("expected"), paths.upper] { ok(try run("/usr/bin/touch", ["-h", "-d", "@1700000000.75", root + "/" + rel])) }
        }
        let upperBefore = snapshot(paths.upper)
        ok(try umoci("repack", "--image", L + ":new", paths.bundle))
        #expect(snapshot(paths.upper) == upperBefore, "repack must not touch the upper directory")

        // Debian's umoci unpacks the new image to the changed tree.
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":new", dir("theirs")]))
        try expectSameTree(dir("theirs"), dir("expected"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        // A second unpack with this tool shows the same tree.
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", L + ":new", dir("ours")))
        try expectSameTree(dir("ours"), dir("expected"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)

        // History, diff_ids, and other readers.
        let history = try JSON.parse(ok(try umoci("stat", "--image", L + ":new", "--json"))).object?["history"]?.array ?? []
        #expect(history.last?.object?["created_by"] == .string("umoci repack"))
        #expect(history.last?.object?["empty_layer"] == nil)
        ok(try run(skopeo, ["copy", "oci:\(L):new", "oci:\(dir("copy")):new"]))
        let image = try ImageLayout(opening: L).loadImage(tag: "new")
        let blob = try ImageLayout(opening: L).blobPath(image.manifest.layers.last!.digest)
        let listing = ok(try run("/bin/tar", ["-tzvf", blob]))
        #expect(listing.contains("a/.wh.sub"))
        #expect(listing.contains("d/.wh..wh..opq"))
        #expect(listing.contains("newdir/hardlink link to newdir/sub/f") || listing.contains("newdir/sub/f link to newdir/hardlink"))
    }

    /// A change of several MB (files around the 256 KiB chunk size, a file of many chunks,
    /// incompressible and text-like data) becomes ONE gzip member that Debian's umoci unpacks
    /// to the same files and that skopeo decompresses to the tar whose digest is the diff_id.
    @Test func largeRepackIsOneGzipMemberReadByUmociAndSkopeo() throws {
        let dir = TemporaryDirectory()
        let (L, paths) = try handMadeBundle(dir)
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        func random(_ count: Int) -> Data {
            var bytes = [UInt8](repeating: 0, count: count)
            for i in bytes.indices {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                bytes[i] = UInt8(truncatingIfNeeded: state)
            }
            return Data(bytes)
        }
        func text(_ count: Int) -> Data {
            let words = ["layer ", "repack ", "chunk ", "deflate ", "gzip\n", "sha256 ", "0644 "]
            var out = ""
            var i = 0
            while out.utf8.count < count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                out += words[Int(state % UInt64(words.count))] + (i % 11 == 0 ? String(i) : "")
                i += 1
            }
            return Data(out.utf8.prefix(count))
        }
        let chunk = 256 * 1024
        var files: [String: Data] = [
            "big/text": text(9 << 20),
            "big/random": random(3 * chunk + 17),
            "big/busybox": try Data(contentsOf: URL(fileURLWithPath: "/bin/busybox")),
        ]
        for (n, size) in [0, 1, chunk - 513, chunk - 512, chunk, chunk + 1].enumerated() {
            files["edges/f\(n)"] = n % 2 == 0 ? text(size) : random(size)
        }
        for (name, data) in files {
            try FileManager.default.createDirectory(atPath: paths.upper + "/" + (name as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try data.write(to: URL(fileURLWithPath: paths.upper + "/" + name))
        }
        ok(try umoci("repack", "--image", L + ":large", paths.bundle))

        let image = try ImageLayout(opening: L).loadImage(tag: "large")
        let layer = image.manifest.layers.last!
        #expect(layer.mediaType == MediaType.layerTarGzip)
        let blob = try ImageLayout(opening: L).blobPath(layer.digest)
        // One member, nothing after it (Python's zlib stops at the end of the first member).
        let member = ok(try run("/usr/bin/python3", ["-c", """
            import sys, zlib
            d = zlib.decompressobj(31)
            data = d.decompress(open(sys.argv[1], "rb").read()) + d.flush()
            print(d.eof, len(d.unused_data), len(data))
            """, blob]))
        #expect(member.hasPrefix("True 0 "))

        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":large", dir("theirs")]))
        for (name, data) in files {
            #expect(FileManager.default.contents(atPath: dir("theirs/" + name)) == data, "\(name) as Debian's umoci unpacks it")
        }
        // skopeo decompresses the layer (Go's gzip) and names it by its digest: the diff_id.
        ok(try run(skopeo, ["copy", "--dest-decompress", "oci:\(L):large", "dir:\(dir("skopeo"))"]))
        let diffID = image.config.diffIDs.last!
        let tar = dir("skopeo/" + String(diffID.split(separator: ":").last!))
        #expect(FileManager.default.fileExists(atPath: tar), "skopeo wrote no layer named by the diff_id \(diffID)")
        #expect(ok(try run("/usr/bin/sha256sum", [tar])).hasPrefix(String(diffID.split(separator: ":").last!)))
    }

    @Test func noChangesAddsOnlyAHistoryEntry() throws {
        let dir = TemporaryDirectory()
        let (L, paths) = try handMadeBundle(dir)
        let before = try ImageLayout(opening: L).loadImage(tag: "whiteouts-gzip")
        ok(try umoci("repack", "--image", L + ":same", paths.bundle, "--history.comment", "nothing"))
        let after = try ImageLayout(opening: L).loadImage(tag: "same")
        #expect(after.manifest.layers == before.manifest.layers)
        #expect(after.config.history.last?.emptyLayer == true)
        #expect(after.config.history.last?.comment == "nothing")
        ok(try umoci("repack", "--image", L + ":same2", "--no-history", paths.bundle))
        #expect(try ImageLayout(opening: L).loadImage(tag: "same2").config.history.count == before.config.history.count)
    }

    @Test func maskedPathsAndVolumesAreLeftOut() throws {
        let dir = TemporaryDirectory()
        let (L, paths) = try handMadeBundle(dir)
        // A volume in the base image's config: masked unless --no-mask-volumes.
        ok(try umoci("config", "--image", L + ":whiteouts-gzip", "--config.volume", "/vol"))
        let layout = try ImageLayout(opening: L)
        var metadata = try BundleMetadata.read(bundle: paths.bundle)
        metadata.setFromDescriptorPath(try layout.resolveImage(tag: "whiteouts-gzip"))
        try metadata.write(bundle: paths.bundle)
        try write(paths.upper + "/vol/data", "volume data\n")
        try write(paths.upper + "/secret/key", "masked\n")
        try write(paths.upper + "/kept", "kept\n")
        ok(try umoci("repack", "--image", L + ":masked", "--mask-path", "/secret", paths.bundle))
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":masked", dir("m")]))
        #expect(FileManager.default.fileExists(atPath: dir("m/kept")))
        #expect(!FileManager.default.fileExists(atPath: dir("m/secret")))
        #expect(!FileManager.default.fileExists(atPath: dir("m/vol")))
        ok(try umoci("repack", "--image", L + ":unmasked", "--no-mask-volumes", paths.bundle))
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":unmasked", dir("u")]))
        #expect(FileManager.default.fileExists(atPath: dir("u/vol/data")))
    }

    @Test(arguments: ["auto", "gzip", "zstd", "none"])
    func compressionChoices(_ choice: String) throws {
        let dir = TemporaryDirectory()
        let (L, paths) = try handMadeBundle(dir)
        try write(paths.upper + "/file", "x\n")
        ok(try umoci("repack", "--image", L + ":c", "--compress", choice, paths.bundle))
        let layer = try ImageLayout(opening: L).loadImage(tag: "c").manifest.layers.last!
        // The base's last layer is gzip (multi-member), so auto means gzip.
        let expected = ["auto": MediaType.layerTarGzip, "gzip": MediaType.layerTarGzip,
                        "zstd": MediaType.layerTarZstd, "none": MediaType.layerTar][choice]
        #expect(layer.mediaType == expected)
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", L + ":c", dir("r")))
        #expect(try String(contentsOfFile: dir("r/file"), encoding: .utf8) == "x\n")
        fails(try umoci("repack", "--image", L + ":c", "--compress", "lz4", paths.bundle), containing: "--compress")
    }

    @Test func refreshBundleMakesTheNewImageTheBase() throws {
        let dir = TemporaryDirectory()
        let (L, paths) = try handMadeBundle(dir)
        try write(paths.upper + "/first", "1\n")
        ok(try umoci("repack", "--image", L + ":r1", "--refresh-bundle", paths.bundle))
        #expect(try FileManager.default.contentsOfDirectory(atPath: paths.upper).isEmpty)
        try write(paths.upper + "/second", "2\n")
        ok(try umoci("repack", "--image", L + ":r2", paths.bundle))
        let r1 = try ImageLayout(opening: L).loadImage(tag: "r1"), r2 = try ImageLayout(opening: L).loadImage(tag: "r2")
        #expect(r2.manifest.layers.count == r1.manifest.layers.count + 1)
        #expect(Array(r2.manifest.layers.prefix(r1.manifest.layers.count)) == r1.manifest.layers)
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":r2", dir("r")]))
        #expect(FileManager.default.fileExists(atPath: dir("r/first")) && FileManager.default.fileExists(atPath: dir("r/second")))
    }

    @Test func repackErrors() throws {
        let dir = TemporaryDirectory()
        let (L, paths) = try handMadeBundle(dir)
        let before = snapshot(L)
        fails(try umoci("repack", "--image", L + ":x", dir("nowhere")), containing: "umoci.json is missing")
        try write(paths.upper + "/bad", "x")
        fails(try umoci("repack", "--image", L + ":x", "--no-history", "--history.comment", "c", paths.bundle), containing: "may not be specified together")
        // A base image whose blobs are gone (garbage-collected).
        ok(try umoci("init", "--layout", dir("other")))
        let base = try BundleMetadata.read(bundle: paths.bundle).fromDescriptorPath().manifest.digest
        fails(try umoci("repack", "--image", dir("other") + ":x", paths.bundle), containing: "base image \(base)")
        #expect(snapshot(L) == before)
    }
}

/// insert and raw add-layer give what Debian's umoci gives.
@Suite struct InsertTests {
    func twoLayouts(_ dir: TemporaryDirectory) throws -> (ours: String, theirs: String) {
        // One file for both bases, so that its mtime is the same in both.
        _ = FileManager.default.createFile(atPath: dir("base.txt"), contents: Data("base\n".utf8))
        for L in [dir("ours"), dir("theirs")] {
            ok(try run(debianUmoci, ["init", "--layout", L]))
            ok(try run(debianUmoci, ["new", "--image", L + ":t"]))
            ok(try run(debianUmoci, ["insert", "--image", L + ":t", dir("base.txt"), "/opt/d/old"]))
        }
        return (dir("ours"), dir("theirs"))
    }

    @Test func insertVariantsMatchDebianUmoci() throws {
        let dir = TemporaryDirectory()
        let (ours, theirs) = try twoLayouts(dir)
        try FileManager.default.createDirectory(atPath: dir("src/sub"), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir("src/sub/f"), contents: Data("f\n".utf8))
        _ = FileManager.default.createFile(atPath: dir("file"), contents: Data("file\n".utf8))
        // Whole-second mtimes, where 0.4.7 (rounding) and this tool (truncating, as 0.6) agree.
        for path in [dir("src/sub/f"), dir("file")] { ok(try run("/usr/bin/touch", ["-d", "@1700000000", path])) }
        let steps: [[String]] = [
            ["insert", dir("file"), "/etc/file"],
            ["insert", dir("src"), "/opt/d"],
            ["insert", "--opaque", dir("src"), "/opt/d"],
            ["insert", "--whiteout", "/etc/file"],
        ]
        for (n, step) in steps.enumerated() {
            var args = step
            args.insert(contentsOf: ["--image", ours + ":t"], at: 1)
            ok(try run(ourUmoci, args))
            args = step
            args.insert(contentsOf: ["--image", theirs + ":t"], at: 1)
            ok(try run(debianUmoci, args))
            ok(try run(debianUmoci, ["raw", "unpack", "--image", ours + ":t", dir("o-\(n)")]))
            ok(try run(debianUmoci, ["raw", "unpack", "--image", theirs + ":t", dir("t-\(n)")]))
            try expectSameTree(dir("o-\(n)"), dir("t-\(n)"), compareDirectoryMtime: { _ in false })
        }
        let history = try JSON.parse(ok(try umoci("stat", "--image", ours + ":t", "--json"))).object?["history"]?.array ?? []
        #expect(history.last?.object?["created_by"] == .string("umoci insert"))
        fails(try umoci("insert", "--image", ours + ":t", dir("missing"), "/x"), containing: "does not exist")
    }

    @Test func rawAddLayer() throws {
        let dir = TemporaryDirectory()
        let (ours, _) = try twoLayouts(dir)
        try FileManager.default.createDirectory(atPath: dir("tree/bin"), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir("tree/bin/tool"), contents: Data("#!/bin/sh\n".utf8))
        ok(try run("/bin/tar", ["-cf", dir("layer.tar"), "-C", dir("tree"), "."]))
        ok(try umoci("raw", "add-layer", "--image", ours + ":t", "--tag", "added", dir("layer.tar")))
        ok(try run(debianUmoci, ["raw", "unpack", "--image", ours + ":added", dir("r")]))
        #expect(FileManager.default.fileExists(atPath: dir("r/bin/tool")))
        let image = try ImageLayout(opening: ours).loadImage(tag: "added")
        #expect(image.config.history.last?.createdBy == "umoci raw add-layer")
        // The diff_id is the tar file's own digest.
        let tarDigest = try DigestHasher.digest(of: Array(try Data(contentsOf: URL(fileURLWithPath: dir("layer.tar")))))
        #expect(image.config.diffIDs.last == tarDigest.description)
        _ = FileManager.default.createFile(atPath: dir("junk.tar"), contents: Data(repeating: 0x41, count: 2000))
        fails(try umoci("raw", "add-layer", "--image", ours + ":t", dir("junk.tar")), containing: "not a valid tar archive")
    }
}
