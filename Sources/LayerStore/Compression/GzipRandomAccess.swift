import CZlib
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Random reads of a gzip blob through the access points a ``GzipDecoder`` recorded for it (the
/// zran approach: raw inflate primed with the point's bits and window, then skip to the offset).
///
/// Reads before the first access point inflate from the start of the blob in gzip mode. Reads
/// continue across member boundaries: after a member's deflate data ends, its 8-byte trailer and
/// the next member's header are skipped; trailing zero padding ends the stream.
///
/// Thread safety: the instance is immutable and each `read` uses its own z_stream and buffers and
/// reads the blob with `pread`, so concurrent reads on one instance (and one fd) are safe. The fd
/// must stay open while reads are in progress; it is not closed by this class.
public final class GzipRandomAccess: @unchecked Sendable {
    public let fd: Int32
    public let blobSize: Int64
    public let accessPoints: [GzipAccessPoint]

    public init(fd: Int32, blobSize: Int64, accessPoints: [GzipAccessPoint]) {
        self.fd = fd
        self.blobSize = blobSize
        self.accessPoints = accessPoints
    }

    /// Fills `buffer` with uncompressed bytes starting at `offset`; returns the count, short only
    /// at the end of the stream (0 at or past it).
    public func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        guard offset >= 0 else { throw StoreError("gzip: negative read offset \(offset)") }
        guard buffer.count > 0 else { return 0 }
        return try cursor(at: offset).read(into: buffer)
    }

    /// A sequential reader from `offset` on: for reading a long range in pieces, which `read(at:)`
    /// would re-inflate from the nearest access point for every piece. Each cursor has its own
    /// z_stream; use one cursor from one thread at a time.
    public func cursor(at offset: Int64) throws(StoreError) -> GzipReadCursor {
        guard offset >= 0 else { throw StoreError("gzip: negative read offset \(offset)") }
        let cursor = try GzipReadCursor(fd: fd, blobSize: blobSize, start: point(before: offset))
        try cursor.skip(to: offset)
        return cursor
    }

    /// The last access point at or before `offset`, if any.
    func point(before offset: Int64) -> GzipAccessPoint? {
        var low = 0, high = accessPoints.count  // first index with uncompressedOffset > offset
        while low < high {
            let mid = (low + high) / 2
            if accessPoints[mid].uncompressedOffset <= offset { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : accessPoints[low - 1]
    }
}

/// Sequential inflation of a gzip blob from an access point (or its start), made by
/// ``GzipRandomAccess/cursor(at:)``; also the state of a single ``GzipRandomAccess/read(at:into:)``.
public final class GzipReadCursor {
    private static let inputSize = 128 * 1024
    private static let discardSize = 64 * 1024

    private let fd: Int32
    private let blobSize: Int64
    private let stream: UnsafeMutablePointer<z_stream>
    private let input: UnsafeMutablePointer<UInt8>
    private var discard: UnsafeMutablePointer<UInt8>?
    /// Next blob offset to read into `input`.
    private var filePosition: Int64
    /// Uncompressed offset of the next byte `read(into:)` will produce.
    public private(set) var position: Int64
    /// Inflating raw deflate (started at an access point) rather than a gzip member.
    private var raw: Bool
    private var ended = false

    init(fd: Int32, blobSize: Int64, start point: GzipAccessPoint?) throws(StoreError) {
        self.fd = fd
        self.blobSize = blobSize
        stream = Zlib.allocateStream()
        input = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.inputSize)
        filePosition = 0
        position = 0
        raw = point != nil
        let ret = umoci_inflateInit2(stream, point == nil ? Zlib.gzipWindowBits : Zlib.rawWindowBits)
        guard ret == Z_OK else {
            let message = Zlib.message(stream, ret)
            stream.pointee.state = nil
            throw StoreError("gzip: cannot initialize inflate: \(message)")
        }
        if let point { try start(at: point) }
    }

    deinit {
        if stream.pointee.state != nil { inflateEnd(stream) }
        stream.deinitialize(count: 1)
        stream.deallocate()
        input.deallocate()
        discard?.deallocate()
    }

    /// Primes the raw inflate with the point's bits and window (zran's deflate_index_extract).
    private func start(at point: GzipAccessPoint) throws(StoreError) {
        guard point.bits <= 7, point.compressedOffset >= (point.bits > 0 ? 1 : 0),
              point.compressedOffset <= blobSize else {
            throw StoreError("gzip: invalid access point (offset \(point.compressedOffset), bits \(point.bits))")
        }
        // Decompress the stored window with this same stream, then reset it for the data.
        let window = UnsafeMutablePointer<UInt8>.allocate(capacity: Zlib.windowSize)
        defer { window.deallocate() }
        var windowLength = 0
        if !point.window.isEmpty {
            let ret: Int32 = point.window.withUnsafeBytes { bytes in
                stream.pointee.next_in = Zlib.mutable(bytes.baseAddress!)
                stream.pointee.avail_in = uInt(bytes.count)
                stream.pointee.next_out = window
                stream.pointee.avail_out = uInt(Zlib.windowSize)
                return inflate(stream, Z_FINISH)
            }
            guard ret == Z_STREAM_END else {
                throw StoreError("gzip: corrupt access point window: \(Zlib.message(stream, ret))")
            }
            windowLength = Zlib.windowSize - Int(stream.pointee.avail_out)
            stream.pointee.next_in = nil
            stream.pointee.avail_in = 0
            inflateReset(stream)
        }
        filePosition = point.compressedOffset
        if point.bits > 0 {
            var byte: UInt8 = 0
            let n = Files.retrying { pread(fd, &byte, 1, off_t(point.compressedOffset - 1)) }
            guard n == 1 else {
                throw n < 0 ? StoreError.system("read", "gzip blob (fd \(fd))")
                            : StoreError("truncated gzip stream (access point past end of blob)")
            }
            inflatePrime(stream, Int32(point.bits), Int32(byte >> (8 - point.bits)))
        }
        if windowLength > 0 {
            let ret = inflateSetDictionary(stream, window, uInt(windowLength))
            guard ret == Z_OK else { throw StoreError("gzip: inflateSetDictionary: \(Zlib.message(stream, ret))") }
        }
        position = point.uncompressedOffset
    }

    /// Inflates and drops output until `position == offset` (or the stream ends).
    func skip(to offset: Int64) throws(StoreError) {
        guard position < offset else { return }
        if discard == nil { discard = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.discardSize) }
        while position < offset {
            let n = try fill(discard!, Int(min(Int64(Self.discardSize), offset - position)))
            if n == 0 { return }
        }
    }

    /// Fills `buffer` with the next uncompressed bytes; returns the count, short only at the end
    /// of the stream (0 there).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        return try fill(base.assumingMemoryBound(to: UInt8.self), buffer.count)
    }

    /// Inflates into `destination` until `count` bytes or the end of the stream; returns the count.
    func fill(_ destination: UnsafeMutablePointer<UInt8>, _ count: Int) throws(StoreError) -> Int {
        var done = 0
        while done < count, !ended {
            if stream.pointee.avail_in == 0 { try refill() }
            let want = min(count - done, Int(UInt32.max))
            stream.pointee.next_out = destination + done
            stream.pointee.avail_out = uInt(want)
            let ret = inflate(stream, Z_NO_FLUSH)
            let produced = want - Int(stream.pointee.avail_out)
            done += produced
            position += Int64(produced)
            switch ret {
            case Z_OK:
                break
            case Z_BUF_ERROR:
                if stream.pointee.avail_in == 0 { throw StoreError("truncated gzip stream") }
            case Z_STREAM_END:
                try nextMember()
            case Z_NEED_DICT:
                throw StoreError("corrupt gzip stream: deflate data requires a preset dictionary")
            default:
                throw StoreError("corrupt gzip stream: \(Zlib.message(stream, ret))")
            }
        }
        return done
    }

    /// After a member's deflate data: skip the trailer (raw mode only; gzip mode consumed it) and
    /// set up for the next member, or mark the end (no more bytes, or zero padding).
    private func nextMember() throws(StoreError) {
        if raw {
            var trailer = 8
            while trailer > 0 {
                if stream.pointee.avail_in == 0 {
                    try refill()
                    if stream.pointee.avail_in == 0 { throw StoreError("truncated gzip stream") }
                }
                let n = min(trailer, Int(stream.pointee.avail_in))
                stream.pointee.next_in += n
                stream.pointee.avail_in -= uInt(n)
                trailer -= n
            }
        }
        if stream.pointee.avail_in == 0 { try refill() }
        if stream.pointee.avail_in == 0 || stream.pointee.next_in.pointee == 0 {
            ended = true
            return
        }
        let ret = inflateReset2(stream, Zlib.gzipWindowBits)
        guard ret == Z_OK else { throw StoreError("gzip: inflateReset2: \(Zlib.message(stream, ret))") }
        raw = false
    }

    /// Reads the next chunk of the blob into the input buffer; leaves avail_in 0 at its end.
    private func refill() throws(StoreError) {
        let want = Int(min(Int64(Self.inputSize), blobSize - filePosition))
        guard want > 0 else { return }
        let n = Files.retrying { pread(fd, input, want, off_t(filePosition)) }
        if n < 0 { throw StoreError.system("read", "gzip blob (fd \(fd))") }
        stream.pointee.next_in = input
        stream.pointee.avail_in = uInt(n)
        filePosition += Int64(n)
    }
}
