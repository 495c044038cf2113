#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Basics

/// Random reads of a gzip blob through the access points a ``GzipDecoder`` recorded for it: the
/// nearest point's inflate state is restored, then output is skipped up to the offset.
///
/// Reads before the first access point inflate from the start of the blob. Reads continue
/// across member boundaries (and check each member's CRC they reach the end of); trailing zero
/// padding ends the stream.
///
/// Thread safety: the instance is immutable and each `read` uses its own inflate state and buffers and
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
        guard offset >= 0 else { throw StoreError(.invalidInput, "gzip: negative read offset \(offset)") }
        guard buffer.count > 0 else { return 0 }
        return try cursor(at: offset).read(into: buffer)
    }

    /// A sequential reader from `offset` on: for reading a long range in pieces, which `read(at:)`
    /// would re-inflate from the nearest access point for every piece. Each cursor has its own
    /// inflate state; use one cursor from one thread at a time.
    public func cursor(at offset: Int64) throws(StoreError) -> GzipReadCursor {
        guard offset >= 0 else { throw StoreError(.invalidInput, "gzip: negative read offset \(offset)") }
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
    private let inflation: GzipInflation
    private let input: UnsafeMutablePointer<UInt8>
    private var inputNext = 0
    private var inputCount = 0
    private var discard: UnsafeMutablePointer<UInt8>?
    /// Next blob offset to read into `input`.
    private var filePosition: Int64
    private var ended = false

    /// Uncompressed offset of the next byte `read(into:)` will produce.
    public var position: Int64 { inflation.produced }

    init(fd: Int32, blobSize: Int64, start point: GzipAccessPoint?) throws(StoreError) {
        self.fd = fd
        self.blobSize = blobSize
        if let point {
            guard point.compressedOffset >= 0, point.compressedOffset <= blobSize else {
                throw StoreError(.corrupt, "gzip: invalid access point (offset \(point.compressedOffset) in a blob of \(blobSize) bytes)")
            }
            let body = UnsafeMutableRawBufferPointer.allocate(byteCount: GzipInflation.stateSize, alignment: 16)
            defer { body.deallocate() }
            let n = try SnapshotCompressor.expand(point.state, into: body)
            inflation = try GzipInflation(restoring: UnsafeRawBufferPointer(rebasing: body[..<n]),
                                          compressedOffset: point.compressedOffset,
                                          uncompressedOffset: point.uncompressedOffset)
            filePosition = point.compressedOffset
        } else {
            inflation = GzipInflation()
            filePosition = 0
        }
        input = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.inputSize)
    }

    deinit {
        input.deallocate()
        discard?.deallocate()
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
            if inputNext == inputCount { try refill() }
            let (took, made) = try inflation.step(input + inputNext, inputCount - inputNext,
                                                  destination + done, count - done)
            inputNext += took
            done += made
            if took == 0 && made == 0 {
                guard inputNext == inputCount, filePosition == blobSize else {
                    throw StoreError(.corrupt, "gzip: inflate made no progress at offset \(inflation.consumed)")
                }
                // The blob's end: after a member (or in padding) the stream ends there.
                if inflation.phase == .member { throw StoreError(.corrupt, "truncated gzip stream") }
                ended = true
            }
        }
        return done
    }

    /// Reads the next chunk of the blob into the input buffer; leaves it empty at the blob's end.
    private func refill() throws(StoreError) {
        inputNext = 0
        inputCount = 0
        let want = Int(min(Int64(Self.inputSize), blobSize - filePosition))
        guard want > 0 else { return }
        let n = try check(Files.retrying { pread(fd, input, want, off_t(filePosition)) }, "read", "gzip blob (fd \(fd))")
        if n == 0 { throw StoreError(.corrupt, "truncated gzip blob (fd \(fd)): ends at \(filePosition), expected \(blobSize) bytes") }
        inputCount = n
        filePosition += Int64(n)
    }
}
