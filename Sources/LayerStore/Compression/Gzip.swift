import CZlib

/// A place in a gzip blob where inflation can start without decoding what precedes it: ISA-L's
/// inflate state there (see ``GzipInflation``), taken after about every MiB of output.
public struct GzipAccessPoint: Sendable, Equatable {
    /// Offset in the uncompressed stream (counting all members) of the first byte after the point.
    public var uncompressedOffset: Int64
    /// Offset in the blob of the first byte the state has not taken.
    public var compressedOffset: Int64
    /// The inflate state (``GzipInflation/snapshot()``), raw-deflated (level 1) to keep the
    /// index small.
    public var state: [UInt8]

    public init(uncompressedOffset: Int64, compressedOffset: Int64, state: [UInt8]) {
        self.uncompressedOffset = uncompressedOffset
        self.compressedOffset = compressedOffset
        self.state = state
    }
}

/// Shared zlib helpers of the gzip coders.
enum Zlib {
    /// Size of deflate's sliding window: the history an access point must carry.
    static let windowSize = 32768
    /// Size of the coders' reusable output buffers.
    static let outputBufferSize = 256 * 1024
    /// windowBits for inflate/deflate: gzip wrapper only, and raw deflate.
    static let gzipWindowBits: Int32 = 15 + 16
    static let rawWindowBits: Int32 = -15

    /// A zeroed z_stream at a stable address (zlib keeps a pointer to it in its state).
    static func allocateStream() -> UnsafeMutablePointer<z_stream> {
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        return stream
    }

    /// zlib's message for a failed call, or the code's meaning when zlib set none.
    static func message(_ stream: UnsafeMutablePointer<z_stream>, _ code: Int32) -> String {
        if let msg = stream.pointee.msg { return String(cString: msg) }
        switch code {
        case Z_DATA_ERROR: return "invalid data"
        case Z_MEM_ERROR: return "out of memory"
        case Z_BUF_ERROR: return "no progress possible"
        case Z_STREAM_ERROR: return "inconsistent stream state"
        case Z_NEED_DICT: return "preset dictionary required"
        case Z_VERSION_ERROR: return "zlib version mismatch"
        default: return "zlib error \(code)"
        }
    }

    static func mutable(_ pointer: UnsafeRawPointer) -> UnsafeMutablePointer<Bytef> {
        UnsafeMutablePointer(mutating: pointer.assumingMemoryBound(to: Bytef.self))
    }
}

/// Writes one standard gzip member (windowBits 31). The header carries no name and a zero mtime,
/// and OS 255 (unknown), as Go's `gzip.Writer` writes by default, so output is deterministic.
public final class GzipEncoder {
    private let stream: UnsafeMutablePointer<z_stream>
    private let header: UnsafeMutablePointer<gz_header>
    private let outputBuffer: UnsafeMutablePointer<UInt8>
    private var finished = false

    public init(level: Int32 = 6) throws(StoreError) {
        stream = Zlib.allocateStream()
        header = UnsafeMutablePointer<gz_header>.allocate(capacity: 1)
        header.initialize(to: gz_header())
        header.pointee.os = 255
        outputBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Zlib.outputBufferSize)
        let ret = umoci_deflateInit2(stream, level, Zlib.gzipWindowBits, 8, Z_DEFAULT_STRATEGY)
        guard ret == Z_OK else {
            let message = Zlib.message(stream, ret)
            stream.pointee.state = nil
            throw StoreError("gzip: cannot initialize deflate (level \(level)): \(message)")
        }
        deflateSetHeader(stream, header)
    }

    deinit {
        if stream.pointee.state != nil { deflateEnd(stream) }
        stream.deinitialize(count: 1)
        stream.deallocate()
        header.deallocate()
        outputBuffer.deallocate()
    }

    /// Compresses `input`, calling `output` with each chunk of compressed bytes produced (views of
    /// one internal buffer, valid only during the call).
    public func encode(_ input: UnsafeRawBufferPointer,
                       output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        guard !finished else { throw StoreError("gzip: encode after finish") }
        guard let base = input.baseAddress, input.count > 0 else { return }
        var next = base
        var remaining = input.count
        while remaining > 0 {
            let n = min(remaining, Int(UInt32.max))
            stream.pointee.next_in = Zlib.mutable(next)
            stream.pointee.avail_in = uInt(n)
            repeat {
                _ = try run(Z_NO_FLUSH, output)
            } while stream.pointee.avail_in > 0
            next += n
            remaining -= n
        }
    }

    /// Writes the rest of the member and its trailer.
    public func finish(output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        guard !finished else { return }
        stream.pointee.next_in = nil
        stream.pointee.avail_in = 0
        while try !run(Z_FINISH, output) {}
        finished = true
    }

    /// One deflate call into the output buffer; delivers what it produced. Returns whether the
    /// stream ended.
    private func run(_ flush: Int32, _ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) -> Bool {
        stream.pointee.next_out = outputBuffer
        stream.pointee.avail_out = uInt(Zlib.outputBufferSize)
        let ret = deflate(stream, flush)
        guard ret == Z_OK || ret == Z_STREAM_END || ret == Z_BUF_ERROR else {
            throw StoreError("gzip: deflate: \(Zlib.message(stream, ret))")
        }
        let produced = Zlib.outputBufferSize - Int(stream.pointee.avail_out)
        if produced > 0 { try output(UnsafeRawBufferPointer(start: outputBuffer, count: produced)) }
        return ret == Z_STREAM_END
    }
}
