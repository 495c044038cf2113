#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive

/// Builds a layer's index in one sequential pass over its blob, which at the same time checks
/// the blob's size and digest against its descriptor and the uncompressed stream's digest
/// against the config's diff_id. Nothing is returned unless all three match.
public enum LayerIndexer {
    /// Uncompressed bytes between two gzip access points.
    public static let accessPointSpacing: Int64 = 1 << 20

    /// - zstdCopy: for zstd layers, a file to receive the decompressed stream (random reads of
    ///   zstd layers are served from that copy; see docs/formats.md).
    /// - progress: called with the compressed bytes read so far.
    public static func build(
        blobPath: String, layer: Descriptor, diffID: Digest, zstdCopy: Int32? = nil,
        progress: ((Int64) -> Void)? = nil
    ) throws(StoreError) -> LayerIndex {
        let digest = layer.digest
        // Errors name the layer; its digest is their subject, so that an error from the consumer
        // (already naming it) is passed through and any other is wrapped once.
        let subject = "\(digest)"
        func fail(_ code: StoreError.Code, _ what: String) -> StoreError {
            StoreError(code, "layer \(digest): \(what)", subject: subject)
        }
        func fail(_ error: StoreError) -> StoreError {
            error.subject == subject ? error : error.wrapped("layer \(digest)", subject: subject)
        }
        let compression = try LayerCompression(mediaType: layer.mediaType)
        guard Files.exists(blobPath) else {
            throw StoreError(.notFound, "blob \(digest) is missing from the image layout (\(blobPath))")
        }
        let fd = try OwnedDescriptor(opening: blobPath, O_RDONLY)
        posix_fadvise(fd.raw, 0, 0, POSIX_FADV_SEQUENTIAL)

        let blobHasher = try DigestHasher(algorithm: digest.isVerifiable ? digest.algorithm : Digest.sha256)
        let diffHasher = try DigestHasher(algorithm: diffID.isVerifiable ? diffID.algorithm : Digest.sha256)
        var scanner = TarScanner()
        var entries: [LayerIndex.Entry] = []
        var uncompressed: Int64 = 0
        // The span digests: fed on the hand-off thread for zstd (spans of the decompressed
        // copy), on this one otherwise (spans of the blob).
        let spans = SpanHasher()

        // Everything the uncompressed stream goes through, on a thread of its own (the hand-off's)
        // while this one reads, hashes and inflates the blob. `scanner`, `entries` and
        // `uncompressed` belong to that thread until the hand-off is finished.
        let consume = { (chunk: UnsafeRawBufferPointer) throws(StoreError) -> Void in
            diffHasher.update(chunk)
            uncompressed += Int64(chunk.count)
            if let zstdCopy {
                try Files.writeAll(zstdCopy, chunk, path: "decompressed copy of \(digest)")
            }
            if compression == .zstd { spans.update(chunk, cuttingEvery: LayerIndex.spanSize) }
            do {
                try scanner.consume(chunk)
            } catch {
                throw fail(.corrupt, "malformed tar: \(error)")
            }
            for s in scanner.takeEntries() {
                entries.append(LayerIndex.Entry(entry: s.entry, dataOffset: s.dataOffset))
            }
        }

        let handOff = try StreamHandOff(consume: consume)
        defer { handOff.close() }
        let gzip = compression == .gzip ? try GzipDecoder(accessPointSpacing: accessPointSpacing) : nil
        let zstd = compression == .zstd ? try ZstdDecoder() : nil
        var compressed: Int64 = 0
        try Files.forEachChunk(of: fd.raw, path: blobPath) { (chunk) throws(StoreError) in
            blobHasher.update(chunk)
            compressed += Int64(chunk.count)
            guard compressed <= layer.size else {
                throw fail(.corrupt, "verified reader size mismatch: descriptor says \(layer.size) bytes, blob is larger")
            }
            do throws(StoreError) {
                if let gzip {
                    let known = gzip.pointCount
                    try gzip.decode(chunk, output: handOff.write)
                    spans.update(chunk, pointsOf: gzip, from: known)
                } else if let zstd {
                    try zstd.decode(chunk, output: handOff.write)
                } else {
                    spans.update(chunk, cuttingEvery: LayerIndex.spanSize)
                    try handOff.write(chunk)
                }
            } catch {
                throw fail(error)
            }
            progress?(compressed)
        }
        // What the consumer found comes first, as when it ran inline with the reading.
        try handOff.finish()
        guard compressed == layer.size else {
            throw fail(.corrupt, "verified reader size mismatch: descriptor says \(layer.size) bytes, blob has \(compressed)")
        }
        do {
            try gzip?.finish()
            try zstd?.finish()
        } catch {
            throw fail(error)
        }
        do {
            try scanner.finish()
        } catch {
            throw fail(.corrupt, "malformed tar: \(error)")
        }
        for s in scanner.takeEntries() {
            entries.append(LayerIndex.Entry(entry: s.entry, dataOffset: s.dataOffset))
        }
        if digest.isVerifiable {
            let actual = blobHasher.finalize()
            guard actual == digest else { throw fail(.corrupt, "verified reader digest mismatch: blob content hashes to \(actual)") }
        }
        if diffID.isVerifiable {
            let actual = diffHasher.finalize()
            guard actual == diffID else {
                throw fail(.corrupt, "diff_id mismatch: the config says \(diffID), the uncompressed layer hashes to \(actual)")
            }
        }
        return LayerIndex(layer: digest, diffID: diffID, compression: compression, compressedSize: compressed,
                          uncompressedSize: uncompressed, entries: entries, accessPoints: gzip?.accessPoints ?? [],
                          spanDigests: spans.finish())
    }
}
