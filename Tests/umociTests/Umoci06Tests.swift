import Foundation
import LayerStore
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
}
