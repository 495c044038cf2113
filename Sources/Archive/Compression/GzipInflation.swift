import CIsal
import CZstd
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Basics

/// ISA-L's inflate over a gzip stream of one or more concatenated members: the core that both
/// the indexing pass (``GzipDecoder``) and random reads (``GzipReadCursor``) drive.
///
/// ISA-L keeps everything it needs to go on in its `inflate_state` between calls: the Huffman
/// tables of the current block, the bits it has taken from the input but not used, the partial
/// gzip header or trailer, the CRC so far, and the last 32 KiB of output as history. A copy of
/// that state, taken when all input given so far is consumed, is therefore an access point
/// anywhere in the stream, not only at a deflate block boundary: restore the copy and feed the
/// blob from the offset where it was taken (``snapshot()``, ``init(restoring:compressedOffset:uncompressedOffset:)``).
/// The copy holds the struct up to the history buffer plus the history in use (docs/formats.md);
/// it is only valid with the same ISA-L build, which ``identity`` names and the index records.
///
/// Members follow one another as in Go's `gzip.Reader` (multistream): bytes after a member
/// that do not start a gzip member are an "invalid gzip header" error, except trailing zero
/// bytes (padding), which end the stream.
///
/// Not thread-safe: one instance is used from one thread at a time.
package final class GzipInflation {
    enum Phase {
        /// Inside a member (its header, deflate data or trailer).
        case member
        /// A member has ended; the next byte tells whether another begins.
        case between
        /// Zero bytes after the last member: nothing else may follow.
        case padding
    }

    private let state: UnsafeMutablePointer<inflate_state>
    private(set) var phase: Phase = .member
    /// Compressed bytes consumed: the blob offset of the next input byte.
    private(set) var consumed: Int64
    /// Uncompressed bytes produced, all members counted.
    private(set) var produced: Int64
    /// Blob offset at which the current member began.
    private var memberStart: Int64

    /// Bytes of the state before the history buffer.
    static let historyOffset = umoci_isal_history_offset()
    static var stateSize: Int { MemoryLayout<inflate_state>.size }

    /// The ISA-L build a snapshot belongs to: the headers' version, the loaded library's real
    /// path and size, and the state's layout. An index made with another build is rebuilt.
    package static let identity: String = {
        let library = String(cString: umoci_isal_library_path())
        var resolved = library
        if let real = realpath(library, nil) {
            resolved = String(cString: real)
            free(real)
        }
        var st = stat()
        let size = stat(resolved, &st) == 0 ? Int64(st.st_size) : -1
        return "isa-l \(umoci_isal_header_version()) \(resolved) \(size) state \(stateSize)/\(historyOffset)"
    }()

    /// A state at the start of a gzip stream.
    init() {
        state = GzipInflation.allocateState()
        consumed = 0
        produced = 0
        memberStart = 0
        startMember()
    }

    /// A state restored from an access point's snapshot (as ``snapshot()`` returned it, before
    /// the index compressed it), to be fed the blob from `compressedOffset` on.
    init(restoring snapshot: UnsafeRawBufferPointer, compressedOffset: Int64,
         uncompressedOffset: Int64) throws(StoreError) {
        state = GzipInflation.allocateState()
        consumed = compressedOffset
        produced = uncompressedOffset
        memberStart = compressedOffset
        guard snapshot.count >= Self.historyOffset, snapshot.count <= Self.stateSize,
              let base = snapshot.baseAddress else {
            // (deinit frees the state: every stored property is set)
            throw StoreError(.corrupt, "gzip: invalid access point state (\(snapshot.count) bytes)")
        }
        UnsafeMutableRawPointer(state).copyMemory(from: base, byteCount: snapshot.count)
        let p = state.pointee
        let valid = p.tmp_out_valid >= 0 && p.tmp_out_processed == p.tmp_out_valid
            && Self.historyOffset + Int(p.tmp_out_valid) == snapshot.count
            && p.read_in_length >= 0 && p.read_in_length <= 64
            && p.tmp_in_size >= 0 && Int(p.tmp_in_size) <= Int(ISAL_DEF_MAX_HDR_SIZE)
            && p.block_state.rawValue <= ISAL_CHECKSUM_CHECK.rawValue
            && p.block_state != ISAL_BLOCK_FINISH && p.crc_flag == UInt32(ISAL_GZIP)
            && p.write_overflow_len == 0 && p.copy_overflow_length == 0
        guard valid else {
            throw StoreError(.corrupt, "gzip: invalid access point state (fields out of range)")
        }
    }

    deinit { state.deallocate() }

    private static func allocateState() -> UnsafeMutablePointer<inflate_state> {
        let state = UnsafeMutablePointer<inflate_state>.allocate(capacity: 1)
        // Zeroed, so that a snapshot never carries bytes ISA-L did not write.
        UnsafeMutableRawPointer(state).initializeMemory(as: UInt8.self, repeating: 0, count: stateSize)
        return state
    }

    private func startMember() {
        isal_inflate_init(state)
        state.pointee.crc_flag = UInt32(ISAL_GZIP)
        memberStart = consumed
        phase = .member
    }

    /// Whether a snapshot may be taken now: inside a member, with no output held back.
    var canSnapshot: Bool {
        phase == .member && state.pointee.tmp_out_processed == state.pointee.tmp_out_valid
            && state.pointee.write_overflow_len == 0 && state.pointee.copy_overflow_length == 0
    }

    /// The state as bytes: the struct up to the history buffer, then the history in use. Only
    /// when ``canSnapshot``; the caller has fed everything up to ``consumed``.
    func snapshot() -> [UInt8] {
        state.pointee.next_in = nil
        state.pointee.avail_in = 0
        state.pointee.next_out = nil
        state.pointee.avail_out = 0
        let count = Self.historyOffset + Int(state.pointee.tmp_out_valid)
        return [UInt8](UnsafeRawBufferPointer(start: UnsafeRawPointer(state), count: count))
    }

    /// Inflates from `input` into `output` until the input is used up or the output is full,
    /// crossing member boundaries. Returns the bytes taken and produced; (0, 0) means nothing
    /// can happen without more input (or without output space).
    func step(_ input: UnsafePointer<UInt8>?, _ inputCount: Int,
              _ output: UnsafeMutablePointer<UInt8>, _ outputCount: Int) throws(StoreError) -> (used: Int, produced: Int) {
        var used = 0, made = 0
        while true {
            switch phase {
            case .member:
                guard made < outputCount else { return (used, made) }
                let inAvail = min(inputCount - used, Int(UInt32.max))
                let outAvail = min(outputCount - made, Int(UInt32.max))
                state.pointee.next_in = inAvail > 0 ? UnsafeMutablePointer(mutating: input! + used) : nil
                state.pointee.avail_in = UInt32(inAvail)
                state.pointee.next_out = output + made
                state.pointee.avail_out = UInt32(outAvail)
                let ret = isal_inflate(state)
                let took = inAvail - Int(state.pointee.avail_in)
                let gave = outAvail - Int(state.pointee.avail_out)
                used += took
                made += gave
                consumed += Int64(took)
                produced += Int64(gave)
                // total_out is 32 bits: it wraps in a member of 4 GiB and more, which ISA-L
                // allows for (the trailer's ISIZE is the length modulo 2^32 too).
                if ret < 0 || ret == ISAL_NEED_DICT { throw error(ret) }
                if state.pointee.block_state == ISAL_BLOCK_FINISH {
                    // Whole bytes still in ISA-L's bit buffer were loaded past the trailer (in this
                    // call: the member could only end here once they were); they are the next
                    // member's. Bits short of a byte are what aligning to the trailer left behind
                    // (seen after ISA-L's own level-1 output).
                    let held = Int(state.pointee.read_in_length) / 8
                    guard held <= took else {
                        throw StoreError(.corrupt, "gzip: inflate kept \(held) bytes past the member ending at \(consumed - Int64(held))")
                    }
                    used -= held
                    consumed -= Int64(held)
                    phase = .between
                    continue
                }
                if took == 0 && gave == 0 { return (used, made) }
                if state.pointee.avail_out == 0 || used == inputCount { return (used, made) }
            case .between:
                guard used < inputCount else { return (used, made) }
                if input![used] == 0 {
                    phase = .padding
                } else {
                    startMember()
                }
            case .padding:
                let rest = UnsafeBufferPointer(start: input! + used, count: inputCount - used)
                if let i = rest.firstIndex(where: { $0 != 0 }) {
                    throw StoreError(.corrupt, "invalid gzip header (non-zero byte at offset \(consumed + Int64(i)) after trailing zero padding)")
                }
                consumed += Int64(rest.count)
                return (inputCount, made)
            }
        }
    }

    private func error(_ code: Int32) -> StoreError {
        switch code {
        case ISAL_INVALID_WRAPPER, ISAL_UNSUPPORTED_METHOD:
            return StoreError(.corrupt, "invalid gzip header (at offset \(memberStart))")
        case ISAL_INCORRECT_CHECKSUM:
            return StoreError(.corrupt, "corrupt gzip stream: incorrect data check (member at offset \(memberStart))")
        case ISAL_NEED_DICT:
            return StoreError(.corrupt, "corrupt gzip stream: deflate data requires a preset dictionary")
        case ISAL_INVALID_BLOCK:
            return StoreError(.corrupt, "corrupt gzip stream: invalid deflate block (near offset \(consumed))")
        case ISAL_INVALID_SYMBOL:
            return StoreError(.corrupt, "corrupt gzip stream: invalid code (near offset \(consumed))")
        case ISAL_INVALID_LOOKBACK:
            return StoreError(.corrupt, "corrupt gzip stream: invalid distance too far back (near offset \(consumed))")
        default:
            return StoreError(.corrupt, "corrupt gzip stream: ISA-L inflate error \(code) (near offset \(consumed))")
        }
    }
}

/// Compresses access point snapshots (zstd, level 1: a tenth of zlib's level-1 time here, and
/// smaller) in submission order on a serial background queue, so that indexing a stream costs
/// little more than inflating it; and expands them again for a reader.
final class SnapshotCompressor: @unchecked Sendable {
    // Everything below is used only on `queue` (after init).
    private let queue = DispatchQueue(label: "umoci.gzip.access-point-states")
    private let context: OpaquePointer?
    private let output: UnsafeMutablePointer<UInt8>
    private let outputSize: Int
    private var compressed: [[UInt8]] = []
    /// Whether the zstd context could be made.
    var ready: Bool { context != nil }

    init() {
        context = ZSTD_createCCtx()
        outputSize = ZSTD_compressBound(GzipInflation.stateSize)
        output = UnsafeMutablePointer<UInt8>.allocate(capacity: outputSize)
    }

    deinit {
        ZSTD_freeCCtx(context)
        output.deallocate()
    }

    func submit(_ snapshot: [UInt8]) {
        queue.async { self.compressed.append(self.compress(snapshot)) }
    }

    /// Waits for every submitted snapshot; returns them all compressed, in submission order.
    func results() -> [[UInt8]] {
        queue.sync { compressed }
    }

    private func compress(_ bytes: [UInt8]) -> [UInt8] {
        let n = bytes.withUnsafeBytes { raw in
            ZSTD_compressCCtx(context, output, outputSize, raw.baseAddress, raw.count, 1)
        }
        precondition(ZSTD_isError(n) == 0, "zstd into ZSTD_compressBound's space cannot fail")
        return Array(UnsafeBufferPointer(start: output, count: n))
    }

    /// Expands a compressed snapshot into `body`, which gets at most `stateSize` bytes; returns
    /// the count.
    static func expand(_ compressed: [UInt8], into body: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        let n = compressed.withUnsafeBytes { raw in
            ZSTD_decompress(body.baseAddress, body.count, raw.baseAddress, raw.count)
        }
        guard ZSTD_isError(n) == 0 else { throw StoreError(.corrupt, "gzip: corrupt access point state: \(Zstd.errorName(n))") }
        return n
    }
}
