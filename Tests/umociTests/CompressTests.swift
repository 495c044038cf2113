import Foundation
import OCI
import Testing
import TestSupport

/// `--compress` of insert and raw add-layer (repack: RepackTests.compressionChoices): auto is
/// the default and follows the most recent compressed layer (umoci 0.6 uxCompress +
/// mutate.PickDefaultCompressAlgorithm); an unknown value is refused with umoci's message.
@Suite struct CompressTests {
    static func lastLayerType(_ L: String, _ tag: String) throws -> String {
        try ImageLayout(opening: L).loadImage(tag: tag).manifest.layers.last!.mediaType
    }

    @Test func autoFollowsTheLatestCompressedLayer() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        _ = FileManager.default.createFile(atPath: dir("f"), contents: Data("f\n".utf8))
        ok(try run("/bin/tar", ["-cf", dir("layer.tar"), "-C", dir.path, "f"]))
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        ok(try umoci("insert", "--image", L + ":t", dir("f"), "/a"))
        #expect(try Self.lastLayerType(L, "t") == MediaType.layerTarGzip)
        ok(try umoci("insert", "--compress", "zstd", "--image", L + ":t", dir("f"), "/b"))
        ok(try umoci("insert", "--compress", "none", "--image", L + ":t", dir("f"), "/c"))
        #expect(try Self.lastLayerType(L, "t") == MediaType.layerTar)
        // auto skips the uncompressed layer and reuses zstd.
        ok(try umoci("insert", "--image", L + ":t", dir("f"), "/d"))
        #expect(try Self.lastLayerType(L, "t") == MediaType.layerTarZstd)
        ok(try umoci("raw", "add-layer", "--compress", "none", "--image", L + ":t", dir("layer.tar")))
        ok(try umoci("raw", "add-layer", "--image", L + ":t", dir("layer.tar")))
        #expect(try Self.lastLayerType(L, "t") == MediaType.layerTarZstd)
        ok(try umoci("raw", "add-layer", "--compress", "auto", "--image", L + ":t", dir("layer.tar")))
        #expect(try Self.lastLayerType(L, "t") == MediaType.layerTarZstd)
        // Every layer reads back (Debian's umoci 0.4.7 has no zstd).
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", L + ":t", dir("r")))
        #expect(try String(contentsOfFile: dir("r/d"), encoding: .utf8) == "f\n")

        let before = snapshot(L)
        fails(try umoci("insert", "--compress", "lz4", "--image", L + ":t", dir("f"), "/e"),
              containing: #"invalid --compress: unknown layer compression type "lz4""#)
        fails(try umoci("raw", "add-layer", "--compress", "xz", "--image", L + ":t", dir("layer.tar")),
              containing: "invalid --compress")
        #expect(snapshot(L) == before)
    }
}
