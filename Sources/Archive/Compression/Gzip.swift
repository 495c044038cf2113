import CZlib

/// A place in a gzip blob where inflation can start without decoding what precedes it: ISA-L's
/// inflate state there (see ``GzipInflation``), taken after about every MiB of output.
public struct GzipAccessPoint: Sendable, Equatable {
    /// Offset in the uncompressed stream (counting all members) of the first byte after the point.
    public var uncompressedOffset: Int64
    /// Offset in the blob of the first byte the state has not taken.
    public var compressedOffset: Int64
    /// The inflate state (``GzipInflation/snapshot()``), zstd-compressed (level 1) to keep the
    /// index small.
    public var state: [UInt8]

    public init(uncompressedOffset: Int64, compressedOffset: Int64, state: [UInt8]) {
        self.uncompressedOffset = uncompressedOffset
        self.compressedOffset = compressedOffset
        self.state = state
    }
}

/// Shared zlib helpers of the gzip coders (zlib deflates the parallel encoder's chunks when
/// asked to).
enum Zlib {
    /// Size of deflate's sliding window: the dictionary each parallel chunk is deflated with.
    static let windowSize = 32768
    /// windowBits for raw deflate (no wrapper).
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
