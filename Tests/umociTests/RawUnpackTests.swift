import Foundation
import OCI
import LayerView
import Testing
import TestSupport

/// Test images written by scripts/fixtures/make_image.py (Python's tarfile, independent of this
/// project's tar code), shared by the tests of a run.
/// A fresh index cache per test, so that tests see cold and warm paths deliberately.
func cacheDirectory(_ dir: TemporaryDirectory) -> String { dir("cache") }

/// `raw unpack` of every test image gives the tree Debian's umoci gives for the same layers.
@Suite struct RawUnpackTests {
    @Test(arguments: ["basic", "whiteouts", "formats", "big", "many", "dirlinks", "names"])
    func sameTreeAsDebianUmoci(_ name: String) throws {
        try compare(name, keepDirlinks: false)
    }

    /// A directory entry over a symlink that leads nowhere (a loop) replaces the link, as umoci
    /// does; links to directories are kept and followed.
    @Test func keepDirlinksThroughALoopSameAsDebianUmoci() throws {
        try compare("dirlink-loop", keepDirlinks: true)
    }

    @Test func keepDirlinksSameAsDebianUmoci() throws {
        try compare("dirlinks", keepDirlinks: true)
        let dir = TemporaryDirectory()
        ok(try umoci("raw", "unpack", "--keep-dirlinks", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":dirlinks", dir("r")))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir("r/lib")) == "usr/lib")
        #expect(FileManager.default.fileExists(atPath: dir("r/usr/lib/added.so")))
    }

    func compare(_ name: String, keepDirlinks: Bool) throws {
        let dir = TemporaryDirectory()
        let flags = keepDirlinks ? ["--keep-dirlinks"] : []
        ok(try run(ourUmoci, ["raw", "unpack", "--cache-dir", dir("cache")] + flags + ["--image", fixtureLayout + ":" + name, dir("ours")]))
        ok(try run(debianUmoci, ["raw", "unpack"] + flags + ["--image", fixtureLayout + ":" + name + "-gzip", dir("theirs")]))
        // umoci gives the root and directories no tar entry defines the time of extraction.
        let layout = try ImageLayout(opening: fixtureLayout)
        let view = try MergedView.open(layout: layout, image: layout.loadImage(tag: name), cache: IndexCache(directory: dir("cache")),
                                       options: .init(keepDirlinks: keepDirlinks))
        try expectSameTree(dir("ours"), dir("theirs"), compareDirectoryMtime: { path in
            guard !path.isEmpty, let node = view.lookup(path) else { return false }
            return !view.inode(of: node).implicit
        })
    }

    @Test func aSecondRunUsesTheCache() throws {
        let dir = TemporaryDirectory()
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":whiteouts", dir("a")))
        let indexes = try FileManager.default.contentsOfDirectory(atPath: dir("cache/index/sha256"))
        #expect(indexes.count == 5)
        let stamps = try indexes.map { try FileManager.default.attributesOfItem(atPath: dir("cache/index/sha256/") + $0)[.modificationDate] as? Date }
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":whiteouts", dir("b")))
        #expect(try indexes.map { try FileManager.default.attributesOfItem(atPath: dir("cache/index/sha256/") + $0)[.modificationDate] as? Date } == stamps)
        try expectSameTree(dir("a"), dir("b"))
        // The environment variable names the cache too.
        ok(try umoci("raw", "unpack", "--image", fixtureLayout + ":whiteouts", dir("c"), environment: ["UMOCI_CACHE_DIR": dir("cache2")]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir("cache2/index/sha256")).count == 5)
    }

    /// A corrupt, truncated or other-version index is rebuilt, never trusted.
    @Test(arguments: ["truncate", "flip", "version", "empty"])
    func damagedIndexIsRebuilt(_ damage: String) throws {
        let dir = TemporaryDirectory()
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":basic", dir("a")))
        let indexDir = dir("cache/index/sha256")
        for name in try FileManager.default.contentsOfDirectory(atPath: indexDir) {
            let file = indexDir + "/" + name
            var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
            let original = bytes
            switch damage {
            case "truncate": bytes = bytes.prefix(bytes.count / 2)
            case "flip": bytes[bytes.count / 2] ^= 0x40
            case "version": bytes[8] = 0x7F
            default: bytes = Data()
            }
            try bytes.write(to: URL(fileURLWithPath: file))
            #expect(LayerIndex.decode(Array(bytes)) == nil)
            ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":basic", dir("b-" + name)))
            #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == original)
            try expectSameTree(dir("a"), dir("b-" + name))
        }
    }

    @Test func refusesANonEmptyTarget() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir("r/x"), withIntermediateDirectories: true)
        fails(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":basic", dir("r")), containing: dir("r"))
        fails(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":broken-hardlink", dir("s")),
              containing: "hardlink target")
        #expect(!FileManager.default.fileExists(atPath: dir("s")))
    }

    /// What Linux cannot hold (a 100,000-byte symlink target, a 70,000-byte xattr) is refused
    /// the same way by raw unpack, unpack and unpack --extract, naming the entry; nothing is
    /// left behind.
    @Test(arguments: [("long-symlink", "symlink target of 100000 bytes"), ("big-xattr", "xattr user.big of 70000 bytes")])
    func linuxLimitsAreTheSameForEveryUnpack(_ image: String, _ message: String) throws {
        let dir = TemporaryDirectory()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/fixtures/make_image.py").path
        ok(try run("/usr/bin/env", ["python3", script, dir("L"), image]))
        fails(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", dir("L") + ":" + image, dir("r")), containing: message)
        #expect(!FileManager.default.fileExists(atPath: dir("r")))
        for flags in [["--extract"], []] where flags.isEmpty == false || access("/dev/fuse", R_OK | W_OK) == 0 {
            fails(try run(ourUmoci, ["unpack", "--cache-dir", dir("cache")] + flags + ["--image", dir("L") + ":" + image, dir("b")]), containing: message)
            #expect(!FileManager.default.fileExists(atPath: dir("b")))
        }
    }
}

/// Bad layers: a clear error naming the layer, and no index, copy or rootfs left behind.
@Suite struct BadLayerTests {
    /// A copy of one fixture image in its own layout, with `edit` applied to its first layer.
    func brokenImage(_ dir: TemporaryDirectory, _ edit: (inout Data, inout JSONObject, inout JSONObject) throws -> Void) throws -> String {
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let layout = try ImageLayout(opening: L)
        var image = try layout.loadImage(tag: "basic")
        var blob = try Data(contentsOf: URL(fileURLWithPath: layout.blobPath(image.manifest.layers[0].digest)))
        var layer = image.manifest.layers[0].json
        var config = image.config.json
        try edit(&blob, &layer, &config)
        let newBlob = try layout.putBlob(Array(blob), mediaType: image.manifest.layers[0].mediaType)
        if layer["digest"] == image.manifest.layers[0].json["digest"] && layer["size"] == image.manifest.layers[0].json["size"] {
            // Keep the old digest: the blob file itself is tampered with.
            try blob.write(to: URL(fileURLWithPath: layout.blobPath(image.manifest.layers[0].digest)))
        } else {
            layer["digest"] = .string(newBlob.digest.description)
            layer["size"] = .int(newBlob.size)
        }
        var layers = image.manifest.layers
        layers[0] = try Descriptor(json: layer)
        image.manifest.setLayers(layers)
        image.config.json = config
        try layout.commit(image, tag: "broken")
        return L
    }

    // The command line says what is wrong in one line and exits 1 for every failure, as umoci
    // does: the line is all a caller of the command sees, so these compare it.
    func expectCleanFailure(_ L: String, _ dir: TemporaryDirectory, containing text: String) throws {
        fails(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", L + ":broken", dir("rootfs")), containing: text)
        #expect(!FileManager.default.fileExists(atPath: dir("rootfs")))
        let leftovers = (try? FileManager.default.subpathsOfDirectory(atPath: dir("cache"))) ?? []
        let layout = try ImageLayout(opening: L)
        let bad = try layout.loadImage(tag: "broken").manifest.layers[0].digest.encoded
        #expect(!leftovers.contains { $0.contains(bad) || $0.contains(".tmp") || $0.contains(".umoci-tmp") }, "\(leftovers)")
    }

    @Test func tamperedBlob() throws {
        let dir = TemporaryDirectory()
        let L = try brokenImage(dir) { blob, _, _ in blob[blob.count / 2] ^= 0x01 }
        try expectCleanFailure(L, dir, containing: "layer sha256:")
    }

    @Test func truncatedGzipStream() throws {
        let dir = TemporaryDirectory()
        let L = try brokenImage(dir) { blob, layer, _ in
            blob = blob.prefix(blob.count - 100)
            layer["digest"] = .string("changed")
        }
        try expectCleanFailure(L, dir, containing: "truncated")
    }

    @Test func wrongDiffID() throws {
        let dir = TemporaryDirectory()
        let L = try brokenImage(dir) { _, _, config in
            var rootfs = config[object: "rootfs"]
            var ids = rootfs["diff_ids"]?.strings ?? []
            ids[0] = "sha256:" + String(repeating: "a", count: 64)
            rootfs["diff_ids"] = .strings(ids)
            config["rootfs"] = .object(rootfs)
        }
        try expectCleanFailure(L, dir, containing: "diff_id mismatch")
    }

    /// A blob tampered with after its index was cached is still caught.
    @Test func tamperedAfterIndexing() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", dir("first")))
        let layout = try ImageLayout(opening: L)
        let layer = try layout.loadImage(tag: "basic").manifest.layers[0]
        var blob = try Data(contentsOf: URL(fileURLWithPath: layout.blobPath(layer.digest)))
        blob[blob.count / 3] ^= 0x01
        try blob.write(to: URL(fileURLWithPath: layout.blobPath(layer.digest)))
        fails(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", dir("second")), containing: "digest mismatch")
        #expect(!FileManager.default.fileExists(atPath: dir("second")))
    }
}
