import Foundation
import Basics
import OCI
import BundleFormat
import TestSupport
import Testing

/// The last behaviours of umoci 0.6 found different by its own suite (issue 21), each checked
/// against umoci's test and source.
@Suite struct Umoci06Tests {
    /// test/insert.bats: "Insertion of a file with a .wh. prefix must fail", and the whiteout
    /// of one (oci/layer/tar_generate.go: `invalid path has whiteout prefix ".wh.": NAME`, the
    /// name normalised: no leading '/', a '/' after a directory). The layout is not touched.
    @Test func insertRefusesAWhiteoutName() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        try FileManager.default.createDirectory(atPath: dir("src"), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir("src/f"), contents: Data("x\n".utf8))
        let before = snapshot(L)
        fails(try umoci("insert", "--image", L + ":t", dir("src"), "/foo/bar/.wh.invalid-path"),
              containing: #"invalid path has whiteout prefix ".wh.": foo/bar/.wh.invalid-path/"#)
        fails(try umoci("insert", "--image", L + ":t", dir("src/f"), "/foo/.wh.file"),
              containing: #"invalid path has whiteout prefix ".wh.": foo/.wh.file"#)
        fails(try umoci("insert", "--image", L + ":t", "--whiteout", "/foo/bar/.wh.invalid-whiteout"),
              containing: #"invalid path has whiteout prefix ".wh.": foo/bar/.wh.invalid-whiteout"#)
        #expect(snapshot(L) == before)
        // A ".wh." inside a component is an ordinary name.
        ok(try umoci("insert", "--image", L + ":t", dir("src/f"), "/foo/x.wh.y"))
    }

    /// test/stat.bats "pseudo-artifact w/config": a config of a media type umoci does not
    /// parse (`application/vnd.umoci.testing.fake-config+json`, JSON though it is) gets no
    /// `== CONFIG ==` section and no `"config"` in --json (casext.FromDescriptor keeps RawData
    /// only for parsed media types or embedded data; utils.go Stat sets Config only then).
    @Test func statOfAnArtifactWithAForeignConfig() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        let layout = try ImageLayout(opening: L)
        func ref(_ d: Descriptor) -> String { #"{"mediaType":"\#(d.mediaType)","digest":"\#(d.digest)","size":\#(d.size)}"# }
        let config = try layout.putBlob(Array(#"{"dummy": "data"}"#.utf8), mediaType: "application/vnd.umoci.testing.fake-config+json")
        let layers = try [128, 256].map { n in
            try layout.putBlob((0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7) }, mediaType: "application/vnd.umoci.testing.fake-layer+data")
        }
        let manifest = try layout.putBlob(Array(#"{"annotations":{"ci.umo.test-artifact.build-id":"1234567890"},"artifactType":"application/vnd.umoci.testing.fake-artifact+foobar","config":\#(ref(config)),"layers":[\#(layers.map(ref).joined(separator: ","))],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}"#.utf8), mediaType: MediaType.imageManifest)
        try layout.setTag("latest", to: manifest)
        func descriptor(_ p: String, _ d: Descriptor) -> String {
            "\(p)Descriptor:\n\(p)\tMedia Type: \(d.mediaType)\n\(p)\tDigest: \(d.digest)\n\(p)\tSize: \(d.size)B\n"
        }
        let expected = """
            == MANIFEST ==
            Schema Version: 2
            Media Type: application/vnd.oci.image.manifest.v1+json
            Artifact Type: application/vnd.umoci.testing.fake-artifact+foobar
            Config:

            """ + descriptor("\t", config) + "Layers:\n" + layers.map { descriptor("\t", $0) }.joined() + """
            Annotations:
            \tci.umo.test-artifact.build-id: 1234567890
            Descriptor:
            \tMedia Type: application/vnd.oci.image.manifest.v1+json
            \tDigest: \(manifest.digest)
            \tSize: \(manifest.size)B
            \tAnnotations:
            \t\torg.opencontainers.image.ref.name: latest

            """
        #expect(ok(try umoci("stat", "--image", L + ":latest")) == expected)
        let json = try JSON.parse(ok(try umoci("stat", "--image", L + ":latest", "--json")))
        #expect(json.object?["config"] == nil)
        #expect(json.object?["history"] == nil)
        #expect(json.object?["manifest"] != nil)
    }

    /// The root's mtime alone changed (`touch -d 2020-01-01 BUNDLE/rootfs`, as KIWI does):
    /// Debian's umoci repack writes a "." entry with the new mtime, and so does this tool's,
    /// on an extracted and on a mounted bundle. Creating a top-level file moves the root's
    /// mtime too: umoci writes "." beside it; a change deeper down leaves the root alone.
    @Test func rootMtimeIsADotEntry() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let touched: Int64 = 1577836800  // 2020-01-01T00:00:00Z
        func touchRoot(_ rootfs: String) { ok(try! run("/usr/bin/touch", ["-d", "2020-01-01T00:00:00Z", rootfs])) }
        func lastLayer(_ tag: String) throws -> [String: Int64] {
            let layout = try ImageLayout(opening: L)
            let gz = layout.blobPath(try layout.loadImage(tag: tag).manifest.layers.last!.digest)
            ok(try run("/bin/sh", ["-c", "zcat \"$0\" > \"$1\"", gz, dir("layer.tar")]))
            return try TimestampTests.mtimes(dir("layer.tar"))
        }

        ok(try reference("unpack", "--image", L + ":basic", dir("debian")))
        touchRoot(dir("debian/rootfs"))
        ok(try reference("repack", "--image", L + ":debian", dir("debian")))
        #expect(try lastLayer("debian") == [".": touched])

        ok(try umoci("unpack", "--extract", "--image", L + ":basic", dir("extracted")))
        touchRoot(dir("extracted/rootfs"))
        ok(try umoci("repack", "--image", L + ":extracted", dir("extracted")))
        #expect(try lastLayer("extracted") == [".": touched])

        let mounted = MountedBundle(dir("mounted"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", mounted.paths.bundle))
        touchRoot(mounted.paths.rootfs)
        ok(try umoci("repack", "--image", L + ":mounted", mounted.paths.bundle))
        #expect(try lastLayer("mounted") == [".": touched])

        // A new top-level file: "." and the file, in both tools; a deeper change: the file only.
        ok(try reference("unpack", "--image", L + ":basic", dir("debian2")))
        // umoci's manifest has the root's mtime of the unpack, in seconds: a file created in that
        // same second would not move it. Wait for the next second (no timing is measured).
        var st = stat()
        #expect(lstat(dir("debian2/rootfs"), &st) == 0)
        while time(nil) <= st.st_mtim.tv_sec { usleep(50_000) }
        let mounted2 = MountedBundle(dir("mounted2"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", mounted2.paths.bundle))
        for (rootfs, tag) in [(dir("debian2/rootfs"), "debian2"), (mounted2.paths.rootfs, "mounted2")] {
            _ = FileManager.default.createFile(atPath: rootfs + "/new", contents: Data("new\n".utf8))
            try "edited\n".write(toFile: rootfs + "/etc/hostname", atomically: false, encoding: .utf8)
            let repack = tag == "debian2" ? try reference("repack", "--image", L + ":" + tag, dir("debian2"))
                                          : try umoci("repack", "--image", L + ":" + tag, mounted2.paths.bundle)
            ok(repack)
            let names = Set(try lastLayer(tag).keys)
            #expect(names == [".", "new", "etc/hostname"], "\(tag): \(names)")
        }
    }

    /// A deletion deep down leaves the root alone, also across an umount and a mount (the
    /// mount removes the upper root's shared whiteout file, and must keep the root's times).
    @Test func rootMtimeSurvivesAMountAfterADeletion() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let bundle = MountedBundle(dir("bundle"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", bundle.paths.bundle))
        #expect(unlink(bundle.paths.rootfs + "/etc/hostname") == 0)
        ok(try umoci("umount", bundle.paths.bundle))
        ok(try umoci("mount", bundle.paths.bundle))
        ok(try umoci("repack", "--image", L + ":deleted", bundle.paths.bundle))
        let names = try lastLayerEntries(L, "deleted")
        #expect(names.contains("etc/.wh.hostname") && !names.contains("."), "\(names)")
    }
}
