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
        let stream = try Stream(layer: layer, diffID: diffID, zstdCopy: zstdCopy)
        defer { stream.close() }
        guard Files.exists(blobPath) else {
            throw StoreError(.notFound, "blob \(layer.digest) is missing from the image layout (\(blobPath))")
        }
        let fd = try OwnedDescriptor(opening: blobPath, O_RDONLY)
        posix_fadvise(fd.raw, 0, 0, POSIX_FADV_SEQUENTIAL)
        try Files.forEachChunk(of: fd.raw, path: blobPath) { (chunk) throws(StoreError) in
            try stream.push(chunk)
            progress?(stream.compressed)
        }
        return try stream.finish()
    }

    /// The index build as a push-style sink of the compressed blob: `push` each chunk in order
    /// (from a file, or from a download as it arrives), then `finish` for the index. The blob
    /// is inflated on the pushing thread; hashing the uncompressed stream and scanning its tar
    /// headers run on a thread of the stream's own. One pushing thread; `close` (also after a
    /// failure) stops that thread.
    ///
    /// `blobDigestVerifiedByCaller`: the caller checks the blob's digest itself (a registry
    /// download hashes what it receives), so the stream does not hash it a second time; the
    /// size is still checked. The index must then be used only once the caller's check passed.
    public final class Stream {
        let layer: Descriptor
        let diffID: Digest
        let subject: String
        let blobHasher: DigestHasher?
        let handOff: StreamHandOff
        let gzip: GzipDecoder?
        let zstd: ZstdDecoder?
        let compression: LayerCompression
        /// Compressed bytes pushed so far.
        public private(set) var compressed: Int64 = 0
        /// Belong to the hand-off's thread until `handOff.finish()` returned.
        private let scan: ScanState

        /// What the consumer thread owns: see `Stream`.
        final class ScanState {
            var scanner = TarScanner()
            var entries: [LayerIndex.Entry] = []
            var uncompressed: Int64 = 0
            let diffHasher: DigestHasher
            init(diffHasher: DigestHasher) { self.diffHasher = diffHasher }
        }

        public init(layer: Descriptor, diffID: Digest, zstdCopy: Int32? = nil, blobDigestVerifiedByCaller: Bool = false) throws(StoreError) {
            self.layer = layer
            self.diffID = diffID
            let digest = layer.digest
            // Errors name the layer; its digest is their subject, so that an error from the
            // consumer (already naming it) is passed through and any other is wrapped once.
            let subject = "\(digest)"
            self.subject = subject
            compression = try LayerCompression(mediaType: layer.mediaType)
            blobHasher = blobDigestVerifiedByCaller ? nil
                : try DigestHasher(algorithm: digest.isVerifiable ? digest.algorithm : Digest.sha256)
            let scan = ScanState(diffHasher: try DigestHasher(algorithm: diffID.isVerifiable ? diffID.algorithm : Digest.sha256))
            self.scan = scan
            // Everything the uncompressed stream goes through, on the hand-off's thread while
            // the pushing thread hashes and inflates the blob.
            let consume = { (chunk: UnsafeRawBufferPointer) throws(StoreError) -> Void in
                scan.diffHasher.update(chunk)
                scan.uncompressed += Int64(chunk.count)
                if let zstdCopy {
                    try Files.writeAll(zstdCopy, chunk, path: "decompressed copy of \(digest)")
                }
                do {
                    try scan.scanner.consume(chunk)
                } catch {
                    throw StoreError(.corrupt, "layer \(digest): malformed tar: \(error)", subject: subject)
                }
                for s in scan.scanner.takeEntries() {
                    scan.entries.append(LayerIndex.Entry(entry: s.entry, dataOffset: s.dataOffset))
                }
            }
            handOff = try StreamHandOff(consume: consume)
            gzip = compression == .gzip ? try GzipDecoder(accessPointSpacing: accessPointSpacing) : nil
            zstd = compression == .zstd ? try ZstdDecoder() : nil
        }

        deinit { handOff.close() }

        private func fail(_ code: StoreError.Code, _ what: String) -> StoreError {
            StoreError(code, "layer \(layer.digest): \(what)", subject: subject)
        }

        private func fail(_ error: StoreError) -> StoreError {
            error.subject == subject ? error : error.wrapped("layer \(layer.digest)", subject: subject)
        }

        /// The next compressed bytes of the blob.
        public func push(_ chunk: UnsafeRawBufferPointer) throws(StoreError) {
            blobHasher?.update(chunk)
            compressed += Int64(chunk.count)
            guard compressed <= layer.size else {
                throw fail(.corrupt, "verified reader size mismatch: descriptor says \(layer.size) bytes, blob is larger")
            }
            do throws(StoreError) {
                if let gzip {
                    try gzip.decode(chunk, output: handOff.write)
                } else if let zstd {
                    try zstd.decode(chunk, output: handOff.write)
                } else {
                    try handOff.write(chunk)
                }
            } catch {
                throw fail(error)
            }
        }

        /// Stops the consumer thread; the stream cannot be used after it.
        public func close() { _ = handOff.close() }

        /// The end of the blob: the index, once size, digest (unless the caller checks it),
        /// diff_id and the tar stream all check out.
        public func finish() throws(StoreError) -> LayerIndex {
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
                try scan.scanner.finish()
            } catch {
                throw fail(.corrupt, "malformed tar: \(error)")
            }
            for s in scan.scanner.takeEntries() {
                scan.entries.append(LayerIndex.Entry(entry: s.entry, dataOffset: s.dataOffset))
            }
            if let blobHasher, layer.digest.isVerifiable {
                let actual = blobHasher.finalize()
                guard actual == layer.digest else { throw fail(.corrupt, "verified reader digest mismatch: blob content hashes to \(actual)") }
            }
            if diffID.isVerifiable {
                let actual = scan.diffHasher.finalize()
                guard actual == diffID else {
                    throw fail(.corrupt, "diff_id mismatch: the config says \(diffID), the uncompressed layer hashes to \(actual)")
                }
            }
            return LayerIndex(layer: layer.digest, diffID: diffID, compression: compression, compressedSize: compressed,
                              uncompressedSize: scan.uncompressed, entries: scan.entries, accessPoints: gzip?.accessPoints ?? [])
        }
    }
}
