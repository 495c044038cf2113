#if canImport(Glibc)
import Glibc
#endif
import CCrypto
import Archive

/// SHA-256 of consecutive spans of a byte stream, fed in chunks and cut where the caller says:
/// what the index keeps so that every read can check the bytes it serves (docs/formats.md).
///
/// A span of a gzip layer is the compressed bytes between two access points (the first from
/// the blob's start, the last to its end); of an uncompressed layer, each `LayerIndex.spanSize`
/// bytes of the blob; of a zstd layer, each `spanSize` bytes of its decompressed copy (the file
/// reads are served from).
///
/// Not thread-safe: one instance is fed from one thread at a time.
final class SpanHasher {
    static let digestSize = 32

    private let context: OpaquePointer
    /// The digests of the spans cut so far, 32 bytes each.
    private(set) var digests: [UInt8] = []
    /// Stream offset of the next byte fed.
    private(set) var position: Int64 = 0
    /// Bytes fed into the span not cut yet.
    private var pending: Int64 = 0

    init() {
        guard let ctx = EVP_MD_CTX_new(), EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else {
            fatalError("libcrypto: cannot initialise sha256")
        }
        context = ctx
    }

    deinit { EVP_MD_CTX_free(context) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        EVP_DigestUpdate(context, bytes.baseAddress, bytes.count)
        position += Int64(bytes.count)
        pending += Int64(bytes.count)
    }

    /// Ends the current span here.
    func cut() {
        let start = digests.count
        digests.append(contentsOf: repeatElement(0, count: Self.digestSize))
        digests.withUnsafeMutableBufferPointer { out in
            var length: UInt32 = 0
            EVP_DigestFinal_ex(context, out.baseAddress! + start, &length)
        }
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
        pending = 0
    }

    /// Feeds `bytes`, cutting a span at every multiple of `size` of the stream offset.
    func update(_ bytes: UnsafeRawBufferPointer, cuttingEvery size: Int64) {
        var rest = bytes
        while rest.count > 0 {
            let n = Int(min(Int64(rest.count), size - position % size))
            update(UnsafeRawBufferPointer(rebasing: rest[..<n]))
            if position % size == 0 { cut() }
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    /// Feeds `bytes` of a gzip blob, cutting a span at the compressed offset of each access
    /// point `gzip` recorded from point `first` on (those its last `decode` call of these bytes
    /// added).
    func update(_ bytes: UnsafeRawBufferPointer, pointsOf gzip: GzipDecoder, from first: Int) {
        let start = position
        var done = 0
        for i in first..<gzip.pointCount {
            let cut = Int(gzip.compressedOffset(ofPoint: i) - start)
            precondition(cut >= done && cut <= bytes.count, "a gzip access point lies outside the bytes that made it")
            update(UnsafeRawBufferPointer(rebasing: bytes[done..<cut]))
            self.cut()
            done = cut
        }
        update(UnsafeRawBufferPointer(rebasing: bytes[done...]))
    }

    /// The digests, after cutting the last span when it holds any bytes.
    func finish() -> [UInt8] {
        if pending > 0 { cut() }
        return digests
    }

    /// Whether `bytes` hash to `expected` (32 bytes). One call of libcrypto, nothing kept.
    static func matches(_ bytes: UnsafeRawBufferPointer, _ expected: UnsafeRawBufferPointer) -> Bool {
        var md = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var length: UInt32 = 0
        let ok = withUnsafeMutableBytes(of: &md) { out in
            EVP_Digest(bytes.baseAddress, bytes.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length, EVP_sha256(), nil)
        }
        guard ok == 1, length == UInt32(digestSize), expected.count == digestSize else { return false }
        return withUnsafeBytes(of: &md) { memcmp($0.baseAddress!, expected.baseAddress!, digestSize) == 0 }
    }
}
