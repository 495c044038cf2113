import Testing
@testable import OCI

/// `--compress=auto`, as umoci 0.6's mutate.PickDefaultCompressAlgorithm picks: the most recent
/// layer whose media type suffix (after the first '+') is an algorithm umoci has, never an
/// uncompressed layer's, else blobcompress.Default (gzip).
@Suite struct LayerCompressionTests {
    static func layers(_ types: String...) -> [Descriptor] {
        types.map { Descriptor(mediaType: $0, digest: try! Digest(parsing: "sha256:" + String(repeating: "a", count: 64)), size: 1) }
    }

    @Test func autoPicksTheLatestCompressedLayer() {
        #expect(LayerCompression.auto(for: []) == .gzip)
        #expect(LayerCompression.auto(for: Self.layers(MediaType.layerTar)) == .gzip)
        #expect(LayerCompression.auto(for: Self.layers(MediaType.layerTarZstd, MediaType.layerTar)) == .zstd)
        #expect(LayerCompression.auto(for: Self.layers(MediaType.layerTarZstd, MediaType.layerTarGzip)) == .gzip)
        #expect(LayerCompression.auto(for: Self.layers(MediaType.layerTarGzip, MediaType.layerNondistributableTarZstd)) == .zstd)
        // Docker's gzip type has no '+' suffix; an unknown suffix is skipped too.
        #expect(LayerCompression.auto(for: Self.layers(MediaType.layerTarZstd, MediaType.dockerLayerGzip)) == .zstd)
        #expect(LayerCompression.auto(for: Self.layers(MediaType.layerTarZstd, "application/vnd.oci.image.layer.v1.tar+lz4")) == .zstd)
    }
}
