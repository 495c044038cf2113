import CZlib
import Dispatch

/// A place in a gzip blob where inflation can start without decoding what precedes it: a deflate
/// block boundary, as recorded by zlib's examples/zran.c.
public struct GzipAccessPoint: Sendable, Equatable {
    /// Offset in the uncompressed stream (counting all members) of the first byte after the point.
    public var uncompressedOffset: Int64
    /// Offset in the blob of the first byte not yet fully consumed (zran's `in`).
    public var compressedOffset: Int64
    /// Number of bits of the byte at `compressedOffset - 1` still to feed (zran's `bits`), 0...7.
    public var bits: UInt8
    /// The up to 32 KiB of the member's output preceding the point (less near the start of a
    /// member), stored as raw deflate (level 1) to keep the index small.
    public var window: [UInt8]

    public init(uncompressedOffset: Int64, compressedOffset: Int64, bits: UInt8, window: [UInt8]) {
        self.uncompressedOffset = uncompressedOffset
        self.compressedOffset = compressedOffset
        self.bits = bits
        self.window = window
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

/// One sequential pass over a gzip stream (possibly several concatenated members), fed in chunks.
///
/// With an access point spacing it records a ``GzipAccessPoint`` (the zran approach) at the first
/// deflate block boundary at least that many uncompressed bytes after the previous point (or the
/// stream start), found with `Z_BLOCK`; the window is read with `inflateGetDictionary` only there
/// and deflated (raw, level 1) on a background queue. Between points it inflates plainly, so indexing costs only a few percent
/// over a plain inflate. Without a spacing it is a plain inflate. Either way output goes through
/// one reused 256 KiB buffer, and the points do not depend on how the input is chunked.
///
/// Concatenated members are decoded one after another, like Go's `gzip.Reader` in multistream
/// mode: bytes after a member that do not start a gzip member are an "invalid gzip header" error,
/// except trailing zero bytes (padding), which are tolerated.
public final class GzipDecoder {
    private enum State { case member, between, padding }

    private let stream: UnsafeMutablePointer<z_stream>
    /// Filled by zlib as it parses each member's header; `done == 1` once the header is complete.
    private let header: UnsafeMutablePointer<gz_header>
    private let outputBuffer: UnsafeMutablePointer<UInt8>
    private let spacing: Int64?

    /// Deflates access point windows off this thread (only with a spacing).
    private let compressor: WindowCompressor?

    private var state: State = .member
    /// Compressed bytes consumed by earlier decode calls (and earlier parts of the current one).
    private var consumedBefore: Int64 = 0
    private var lastPoint: Int64 = 0
    private var failure: StoreError?

    /// Points recorded so far; windows from `mergedWindows` on are still with the compressor.
    private var points: [GzipAccessPoint] = []
    private var mergedWindows = 0

    /// The access points recorded so far, in stream order, windows compressed (this waits for
    /// the background compression of the windows still in progress).
    public var accessPoints: [GzipAccessPoint] {
        if let compressor, mergedWindows < points.count {
            let windows = compressor.results()
            for i in mergedWindows..<points.count { points[i].window = windows[i] }
            mergedWindows = points.count
        }
        return points
    }
    /// Uncompressed bytes produced so far, all members counted.
    public private(set) var totalOut: Int64 = 0

    /// accessPointSpacing: record an access point about every that many uncompressed bytes; nil:
    /// record none.
    public init(accessPointSpacing: Int64?) throws(StoreError) {
        spacing = accessPointSpacing
        stream = Zlib.allocateStream()
        header = UnsafeMutablePointer<gz_header>.allocate(capacity: 1)
        header.initialize(to: gz_header())
        outputBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Zlib.outputBufferSize)
        compressor = accessPointSpacing == nil ? nil : WindowCompressor()
        let ret = umoci_inflateInit2(stream, Zlib.gzipWindowBits)
        stream.pointee.next_out = outputBuffer
        stream.pointee.avail_out = uInt(Zlib.outputBufferSize)
        if ret != Z_OK {
            let message = Zlib.message(stream, ret)
            inflateEnd(stream)  // harmless on a failed init; deinit must not end it again
            stream.pointee.state = nil
            throw StoreError("gzip: cannot initialize inflate: \(message)")
        }
        if let compressor, !compressor.ready {
            throw StoreError("gzip: cannot initialize deflate for access point windows")
        }
        inflateGetHeader(stream, header)
    }

    deinit {
        if stream.pointee.state != nil { inflateEnd(stream) }
        stream.deinitialize(count: 1)
        stream.deallocate()
        header.deallocate()
        outputBuffer.deallocate()
    }

    /// Inflates `input`, calling `output` with each produced chunk (views of one internal buffer,
    /// valid only during the call). All output the input allows is delivered before returning.
    public func decode(_ input: UnsafeRawBufferPointer,
                       output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        if let failure { throw failure }
        guard let base = input.baseAddress, input.count > 0 else { return }
        do throws(StoreError) {
            var next = base.assumingMemoryBound(to: UInt8.self)
            var remaining = input.count
            while remaining > 0 {
                switch state {
                case .member:
                    let used = try inflateMember(next, min(remaining, Int(UInt32.max)), output)
                    next += used
                    remaining -= used
                    consumedBefore += Int64(used)
                case .between:
                    if next.pointee == 0 {
                        state = .padding
                    } else {
                        let ret = inflateReset(stream)
                        guard ret == Z_OK else { throw StoreError("gzip: inflateReset: \(Zlib.message(stream, ret))") }
                        inflateGetHeader(stream, header)
                        state = .member
                    }
                case .padding:
                    let bytes = UnsafeBufferPointer(start: next, count: remaining)
                    if let i = bytes.firstIndex(where: { $0 != 0 }) {
                        throw StoreError("invalid gzip header (non-zero byte at offset \(consumedBefore + Int64(i)) after trailing zero padding)")
                    }
                    consumedBefore += Int64(remaining)
                    remaining = 0
                }
            }
            try flushOutput(output)
        } catch {
            failure = error
            throw error
        }
    }

    /// Marks the end of input. Throws "truncated gzip stream" when the last member (or the first,
    /// for an empty stream) is incomplete.
    public func finish() throws(StoreError) {
        if let failure { throw failure }
        if state == .member {
            let error = StoreError("truncated gzip stream")
            failure = error
            throw error
        }
    }

    /// Delivers the pending part of the output buffer and rewinds it.
    @inline(__always)
    private func flushOutput(_ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        let pending = Zlib.outputBufferSize - Int(stream.pointee.avail_out)
        guard pending > 0 else { return }
        stream.pointee.next_out = outputBuffer
        stream.pointee.avail_out = uInt(Zlib.outputBufferSize)
        try output(UnsafeRawBufferPointer(start: outputBuffer, count: pending))
    }

    /// Inflates up to `count` bytes of the current member; returns how many were consumed (all of
    /// them unless the member ended, in which case the state becomes `.between`).
    private func inflateMember(_ input: UnsafePointer<UInt8>, _ count: Int,
                               _ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) -> Int {
        let strm = stream
        strm.pointee.next_in = UnsafeMutablePointer(mutating: input)
        strm.pointee.avail_in = uInt(count)
        while true {
            // Space left in the output buffer, and how much of it this call may fill.
            let space = strm.pointee.avail_out
            var allowed = space
            var flush = Z_NO_FLUSH
            if let spacing {
                // Stopping at every block boundary (Z_BLOCK) costs a few percent, so inflate plainly up to
                // one byte before the next point becomes due, and only then block by block. A
                // boundary there is the first one at or past the due offset, as with Z_BLOCK
                // throughout: the points do not depend on how the input is chunked.
                let (due, overflow) = lastPoint.addingReportingOverflow(spacing)
                let plain = overflow ? Int64.max : due - 1 - totalOut
                if plain > 0 {
                    allowed = uInt(min(Int64(space), plain))
                } else {
                    flush = Z_BLOCK
                }
            }
            strm.pointee.avail_out = allowed
            let ret = inflate(strm, flush)
            let produced = allowed - strm.pointee.avail_out
            let stoppedForOutput = strm.pointee.avail_out == 0
            strm.pointee.avail_out = space - produced
            totalOut += Int64(produced)
            switch ret {
            case Z_OK:
                if flush == Z_BLOCK, (strm.pointee.data_type & 0xc0) == 0x80,
                   let spacing, totalOut - lastPoint >= spacing {
                    // At a block boundary that is not after the last block, and a point is due.
                    let used = count - Int(strm.pointee.avail_in)
                    try addPoint(compressedOffset: consumedBefore + Int64(used),
                                 bits: UInt8(strm.pointee.data_type & 7))
                }
            case Z_STREAM_END:
                state = .between
                return count - Int(strm.pointee.avail_in)
            case Z_BUF_ERROR:
                break  // no progress: needs more input or output space, handled below
            case Z_DATA_ERROR where header.pointee.done != 1:
                throw StoreError("invalid gzip header (at offset \(consumedBefore + Int64(count - Int(strm.pointee.avail_in))))")
            case Z_NEED_DICT:
                throw StoreError("corrupt gzip stream: deflate data requires a preset dictionary")
            default:
                throw StoreError("corrupt gzip stream: \(Zlib.message(strm, ret))")
            }
            if strm.pointee.avail_out == 0 {
                try flushOutput(output)
            } else if strm.pointee.avail_in == 0, !stoppedForOutput {
                // All input taken and inflate had room: everything it can produce is out.
                return count
            }
        }
    }

    /// Records an access point at the current block boundary. The window is read with
    /// inflateGetDictionary and handed to the compressor; its compressed form is merged into the
    /// point when `accessPoints` is read.
    private func addPoint(compressedOffset: Int64, bits: UInt8) throws(StoreError) {
        guard let compressor else { return }
        var ret = Z_OK
        let window = [UInt8](unsafeUninitializedCapacity: Zlib.windowSize) { buffer, count in
            var length: uInt = 0
            ret = inflateGetDictionary(stream, buffer.baseAddress, &length)
            count = ret == Z_OK ? Int(length) : 0
        }
        guard ret == Z_OK else { throw StoreError("gzip: inflateGetDictionary: \(Zlib.message(stream, ret))") }
        compressor.submit(window)
        points.append(GzipAccessPoint(uncompressedOffset: totalOut, compressedOffset: compressedOffset,
                                      bits: bits, window: []))
        lastPoint = totalOut
    }
}

/// Deflates access point windows (raw deflate, level 1) in submission order on a serial
/// background queue, so that indexing a stream costs little more than inflating it.
final class WindowCompressor: @unchecked Sendable {
    // Everything below is used only on `queue` (after init).
    private let queue = DispatchQueue(label: "umoci.gzip.access-point-windows")
    private let stream: UnsafeMutablePointer<z_stream>
    private let output: UnsafeMutablePointer<UInt8>
    private let outputSize: Int
    private var compressed: [[UInt8]] = []
    /// Whether deflateInit2 succeeded.
    let ready: Bool

    init() {
        stream = Zlib.allocateStream()
        ready = umoci_deflateInit2(stream, 1, Zlib.rawWindowBits, 8, Z_DEFAULT_STRATEGY) == Z_OK
        if !ready { stream.pointee.state = nil }
        outputSize = ready ? Int(deflateBound(stream, uLong(Zlib.windowSize))) : 0
        output = UnsafeMutablePointer<UInt8>.allocate(capacity: max(outputSize, 1))
    }

    deinit {
        if stream.pointee.state != nil { deflateEnd(stream) }
        stream.deinitialize(count: 1)
        stream.deallocate()
        output.deallocate()
    }

    func submit(_ window: [UInt8]) {
        queue.async { self.compressed.append(self.compress(window)) }
    }

    /// Waits for every submitted window; returns them all compressed, in submission order.
    func results() -> [[UInt8]] {
        queue.sync { compressed }
    }

    private func compress(_ window: [UInt8]) -> [UInt8] {
        let done: Bool = window.withUnsafeBytes { bytes in
            guard deflateReset(stream) == Z_OK else { return false }
            stream.pointee.next_in = bytes.isEmpty ? nil : Zlib.mutable(bytes.baseAddress!)
            stream.pointee.avail_in = uInt(bytes.count)
            stream.pointee.next_out = output
            stream.pointee.avail_out = uInt(outputSize)
            return deflate(stream, Z_FINISH) == Z_STREAM_END
        }
        if done {
            return Array(UnsafeBufferPointer(start: output, count: outputSize - Int(stream.pointee.avail_out)))
        }
        // Cannot happen with deflateBound's output space; a stored block is still valid deflate.
        let n = window.count
        return [1, UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8((~n >> 8) & 0xff)] + window
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
