import Basics
/// One sequential pass over a gzip stream (possibly several concatenated members), fed in
/// chunks, inflated with ISA-L (``GzipInflation``).
///
/// With an access point spacing it records a ``GzipAccessPoint`` at the first slice boundary (a
/// blob offset that is a multiple of `sliceSize`) where at least that many uncompressed bytes
/// came out since the previous point (or the stream start): a snapshot of the inflate state,
/// compressed on a background queue. The input is cut at slice boundaries whatever chunks the
/// caller feeds, so the points depend only on the stream. Output goes through one reused 256 KiB
/// buffer.
public final class GzipDecoder {
    /// Input is handed to ISA-L in slices ending at multiples of this blob offset, the only
    /// places a point may be taken.
    static let sliceSize: Int64 = 64 * 1024
    static let outputSize = 256 * 1024

    private let inflation = GzipInflation()
    private let outputBuffer: UnsafeMutablePointer<UInt8>
    private var outputUsed = 0
    private let spacing: Int64?
    /// Compresses point snapshots off this thread (only with a spacing).
    private let compressor: SnapshotCompressor?
    private var lastPoint: Int64 = 0
    private var failure: StoreError?

    /// Points recorded so far; states from `mergedStates` on are still with the compressor.
    private var points: [GzipAccessPoint] = []
    private var mergedStates = 0

    /// The access points recorded so far, in stream order, states compressed (this waits for
    /// the background compression still in progress).
    public var accessPoints: [GzipAccessPoint] {
        if let compressor, mergedStates < points.count {
            let states = compressor.results()
            for i in mergedStates..<points.count { points[i].state = states[i] }
            mergedStates = points.count
        }
        return points
    }

    /// Uncompressed bytes produced so far, all members counted.
    public var totalOut: Int64 { inflation.produced }

    /// accessPointSpacing: record an access point about every that many uncompressed bytes; nil:
    /// record none.
    public init(accessPointSpacing: Int64?) throws(StoreError) {
        spacing = accessPointSpacing
        outputBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.outputSize)
        compressor = accessPointSpacing == nil ? nil : SnapshotCompressor()
        if let compressor, !compressor.ready {
            outputBuffer.deallocate()
            throw StoreError(.systemCall, "gzip: cannot initialize deflate for access point states")
        }
    }

    deinit { outputBuffer.deallocate() }

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
                let toBoundary = Self.sliceSize - inflation.consumed % Self.sliceSize
                let slice = Int(min(Int64(remaining), toBoundary))
                var used = 0
                while true {
                    let (took, made) = try inflation.step(next + used, slice - used,
                                                          outputBuffer + outputUsed, Self.outputSize - outputUsed)
                    used += took
                    outputUsed += made
                    if outputUsed == Self.outputSize {
                        try flush(output)  // and go on: ISA-L may hold more output
                    } else if used == slice {
                        break
                    } else if took == 0 && made == 0 {
                        throw StoreError(.corrupt, "gzip: inflate made no progress at offset \(inflation.consumed)")
                    }
                }
                next += slice
                remaining -= slice
                if let spacing, let compressor, inflation.consumed % Self.sliceSize == 0,
                   inflation.produced - lastPoint >= spacing, inflation.canSnapshot {
                    compressor.submit(inflation.snapshot())
                    points.append(GzipAccessPoint(uncompressedOffset: inflation.produced,
                                                  compressedOffset: inflation.consumed, state: []))
                    lastPoint = inflation.produced
                }
            }
            try flush(output)
        } catch {
            failure = error
            throw error
        }
    }

    /// Marks the end of input. Throws "truncated gzip stream" when the last member (or the first,
    /// for an empty stream) is incomplete.
    public func finish() throws(StoreError) {
        if let failure { throw failure }
        if inflation.phase == .member {
            let error = StoreError(.corrupt, "truncated gzip stream")
            failure = error
            throw error
        }
    }

    /// Delivers the pending part of the output buffer and rewinds it.
    private func flush(_ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        guard outputUsed > 0 else { return }
        let count = outputUsed
        outputUsed = 0
        try output(UnsafeRawBufferPointer(start: outputBuffer, count: count))
    }
}
