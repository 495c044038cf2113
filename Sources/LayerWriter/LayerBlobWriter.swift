#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive

/// Streams a tar archive into a new layer blob of a layout in one pass: the tar bytes are
/// hashed (the diff_id), compressed, hashed again (the blob digest) and written to a temporary
/// file inside the layout, which `finish()` fsyncs and renames into place. Memory stays
/// bounded whatever the layer's size. Gzip is one gzip member compressed in parallel
/// (``ParallelGzipEncoder``, ISA-L level 3): the caller's thread hashes, copies into chunks and
/// writes while the workers deflate. Until `finish()` nothing is visible in the layout;
/// `abort()` (or deinit) removes the temporary file.
public final class LayerBlobWriter {
    public let compression: LayerCompression
    let layout: ImageLayout
    let tempPath: String
    var fd: Int32
    let diffHasher: DigestHasher
    let blobHasher: DigestHasher
    let gzip: ParallelGzipEncoder?
    let zstd: ZstdEncoder?
    var pending: [UInt8] = []
    var blobSize: Int64 = 0
    var finished = false
    static let flushSize = 1 << 20

    public init(layout: ImageLayout, compression: LayerCompression) throws(StoreError) {
        self.layout = layout
        self.compression = compression
        tempPath = layout.path + "/" + Files.temporaryName(prefix: ".umoci-tmp-")
        fd = try Files.open(tempPath, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
        do {
            try layout.owner?.adopt(fd: fd, path: tempPath)
        } catch {
            close(fd)
            unlink(tempPath)
            throw error
        }
        diffHasher = try DigestHasher()
        blobHasher = try DigestHasher()
        gzip = compression == .gzip ? try ParallelGzipEncoder() : nil
        zstd = compression == .zstd ? try ZstdEncoder() : nil
        if gzip == nil { pending.reserveCapacity(LayerBlobWriter.flushSize + 64 * 1024) }
    }

    deinit { abort() }

    /// Appends uncompressed tar bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        diffHasher.update(bytes)
        if let gzip {  // it gathers chunks itself
            try gzip.encode(bytes, output: emit)
            return
        }
        pending.append(contentsOf: bytes)
        if pending.count >= LayerBlobWriter.flushSize { try flush() }
    }

    public func write(_ bytes: [UInt8]) throws(StoreError) {
        var failure: StoreError?
        bytes.withUnsafeBytes { buffer in
            do throws(StoreError) { try write(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Zero bytes, for tar padding.
    public func writeZeros(_ count: Int) throws(StoreError) {
        var left = count
        while left > 0 {
            let n = min(left, LayerBlobWriter.zeros.count)
            var failure: StoreError?
            LayerBlobWriter.zeros.withUnsafeBytes { zeros in
                do throws(StoreError) { try write(UnsafeRawBufferPointer(rebasing: zeros[0..<n])) } catch { failure = error }
            }
            if let failure { throw failure }
            left -= n
        }
    }

    /// One tar block of zeros, so that padding allocates nothing.
    static let zeros = [UInt8](repeating: 0, count: 512)

    func emit(_ compressed: UnsafeRawBufferPointer) throws(StoreError) {
        blobHasher.update(compressed)
        blobSize += Int64(compressed.count)
        try Files.writeAll(fd, compressed, path: tempPath)
    }

    func flush() throws(StoreError) {
        guard !pending.isEmpty else { return }
        var failure: StoreError?
        pending.withUnsafeBytes { buffer in
            do throws(StoreError) {
                if let zstd {
                    try zstd.encode(buffer, output: emit)
                } else {
                    try emit(buffer)
                }
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        pending.removeAll(keepingCapacity: true)
    }

    /// Ends the stream and moves the blob into the layout; returns its descriptor and diff_id.
    public func finish() throws(StoreError) -> (descriptor: Descriptor, diffID: Digest) {
        try flush()
        try gzip?.finish(output: emit)
        try zstd?.finish(output: emit)
        try Files.fsync(fd, path: tempPath)
        close(fd)
        fd = -1
        let digest = blobHasher.finalize()
        let target = layout.blobPath(digest)
        try layout.makeBlobDirectory(digest.algorithm)
        try Files.rename(tempPath, target)
        try Files.fsyncDirectory("\(layout.path)/blobs/\(digest.algorithm)")
        finished = true
        return (Descriptor(mediaType: compression.layerMediaType, digest: digest, size: blobSize), diffHasher.finalize())
    }

    /// Drops what was written; nothing is left in the layout.
    public func abort() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if !finished {
            unlink(tempPath)
            finished = true
        }
    }
}

/// Copies a tar archive into a layer as it is, checking on the way that it is one.
public enum TarCopy {
    public static func copy(_ path: String, to writer: LayerBlobWriter) throws(StoreError) {
        let fd = try OwnedDescriptor(opening: path, O_RDONLY)
        var scanner = TarScanner()
        try Files.forEachChunk(of: fd.raw, path: path) { (chunk) throws(StoreError) in
            do { try scanner.consume(chunk) } catch { throw StoreError(.invalidInput, "\(path) is not a valid tar archive: \(error)") }
            _ = scanner.takeEntries()
            try writer.write(chunk)
        }
        do { try scanner.finish() } catch { throw StoreError(.invalidInput, "\(path) is not a valid tar archive: \(error)") }
    }
}
