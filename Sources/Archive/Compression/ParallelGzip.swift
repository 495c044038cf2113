import CIsal
import CZlib

#if canImport(Glibc)
import Glibc
#endif
import Basics

/// How ``ParallelGzipEncoder`` deflates each chunk.
public enum DeflateEngine: Sendable, Equatable {
    /// ISA-L's `isal_deflate` (levels 0...3). About ten times faster than zlib at level 6 for a
    /// few percent larger output; level 3 is what layers are written with.
    case isal(level: UInt32)
    /// zlib's `deflate` (levels 1...9).
    case zlib(level: Int32)

    /// What layers are written with (see docs/benchmarks.md, "Repack of a large change").
    public static let layer = DeflateEngine.isal(level: 3)
}

/// Writes ONE standard gzip member (RFC 1952; the header as Go's `gzip.Writer` writes it by
/// default: no name, mtime 0, OS 255, so output is deterministic) whose deflate stream is made
/// of chunks compressed in parallel, as pigz does.
///
/// The input is cut into chunks of `chunkSize` bytes by position alone. Each chunk is deflated
/// (raw deflate) on one of the worker threads with the last 32 KiB of the previous chunk as
/// its dictionary, so matches reach across chunk boundaries as in a serial stream; every chunk
/// but the last ends with a sync flush (an empty stored block, which byte-aligns it), the last
/// with the final block. The CRC-32 of each chunk is computed on its worker and combined in
/// order (`crc32_combine`); the compressed chunks are delivered in order on the caller's thread.
/// The output depends only on the input bytes, never on thread timing or on how the input was
/// split into `encode` calls.
///
/// Memory is bounded: a fixed ring of slots (input chunk plus its dictionary, and the chunk's
/// compressed output) of which at most all are in flight; when none is free, `encode` delivers
/// finished chunks (in order) and waits for the next one. Nothing is allocated per call.
public final class ParallelGzipEncoder {
    public static let defaultChunkSize = 256 * 1024

    /// The gzip member header: magic, CM 8 (deflate), no flags, mtime 0, XFL 0, OS 255.
    static let header: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
        (0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255)

    public let chunkSize: Int
    private let pool: DeflatePool
    /// Sequence number of the chunk being filled, and how many bytes it holds.
    private var current = 0
    private var filled = 0
    private var crc: UInt32 = 0
    private var total: UInt64 = 0
    private var finished = false
    private var failure: StoreError?

    /// workers: threads deflating chunks (default: one per online CPU, at most 16); slots: chunks
    /// in memory at once (default: two per worker plus two).
    public convenience init(engine: DeflateEngine = .layer, chunkSize: Int = ParallelGzipEncoder.defaultChunkSize,
                            workers: Int? = nil, slots: Int? = nil) throws(StoreError) {
        try self.init(engine: engine, chunkSize: chunkSize, workers: workers, slots: slots,
                      startThread: DeflatePool.startWorker)
    }

    /// `startThread` starts a worker thread as pthread_create does (tests give one that fails).
    package init(engine: DeflateEngine, chunkSize: Int, workers: Int?, slots: Int?,
                 startThread: DeflatePool.ThreadStart) throws(StoreError) {
        guard chunkSize >= Zlib.windowSize, chunkSize <= 64 << 20 else {
            throw StoreError(.invalidInput, "gzip: chunk size \(chunkSize) is not between 32 KiB and 64 MiB")
        }
        let workers = max(1, workers ?? min(16, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        self.chunkSize = chunkSize
        pool = try DeflatePool(engine: engine, chunkSize: chunkSize, workers: workers,
                               slots: max(2, slots ?? 2 * workers + 2), startThread: startThread)
    }

    deinit { pool.stop() }

    /// Compresses `input`, calling `output` with compressed bytes (views of internal buffers,
    /// valid only during the call) as chunks finish, in order. May return before everything
    /// given has been compressed; `finish` delivers the rest.
    public func encode(_ input: UnsafeRawBufferPointer,
                       output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        if let failure { throw failure }
        guard !finished else { throw StoreError(.invalidInput, "gzip: encode after finish") }
        guard var next = input.baseAddress, input.count > 0 else { return }
        var remaining = input.count
        while remaining > 0 {
            // A full chunk is handed over only when more input arrives: the last chunk is
            // then always the one `finish` finds, whatever the input's length.
            if filled == chunkSize { try submit(last: false, output) }
            let n = min(remaining, chunkSize - filled)
            (pool.data(current) + filled).update(from: next.assumingMemoryBound(to: UInt8.self), count: n)
            filled += n
            next += n
            remaining -= n
        }
    }

    /// Compresses what is left, delivers it and the trailer (CRC-32 and ISIZE), and stops the
    /// workers.
    public func finish(output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        if let failure { throw failure }
        guard !finished else { return }
        try submit(last: true, output)
        var trailer: (UInt32, UInt32) = (crc.littleEndian, UInt32(truncatingIfNeeded: total).littleEndian)
        try guarded { () throws(StoreError) in
            try withUnsafeBytes(of: &trailer) { (bytes) throws(StoreError) in try output(bytes) }
        }
        finished = true
        pool.stop()
    }

    /// Records a failure, so that later calls report it instead of writing a broken stream.
    private func guarded(_ body: () throws(StoreError) -> Void) throws(StoreError) {
        do { try body() } catch {
            failure = error
            throw error
        }
    }

    /// Queues the chunk being filled; for a last chunk, waits for and delivers everything, else
    /// takes the next slot (delivering finished chunks until it is free) and gives it the
    /// chunk's last 32 KiB as dictionary.
    private func submit(last: Bool, _ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        let seq = current
        pool.queue(seq, length: filled, last: last)
        try guarded { () throws(StoreError) in
            if last {
                try deliver(until: seq + 1, output)
            } else {
                // Slot of seq + 1 is free once seq + 1 - slots has been delivered.
                try deliver(until: seq + 1 - pool.slotCount + 1, output)
                try deliverFinished(output)
            }
        }
        if !last {
            let dictionary = Zlib.windowSize
            pool.setDictionary(seq + 1, from: pool.data(seq) + chunkSize - dictionary, count: dictionary)
            current = seq + 1
            filled = 0
        }
    }

    /// Delivers chunks in order until `count` chunks have been delivered, waiting as needed.
    private func deliver(until count: Int, _ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        while pool.delivered < count {
            let result = pool.waitDone(pool.delivered)
            try emit(result, output)
        }
    }

    /// Delivers the chunks already compressed at the head of the queue, without waiting.
    private func deliverFinished(_ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        while pool.delivered <= current, let result = pool.doneWithoutWaiting(pool.delivered) {
            try emit(result, output)
        }
    }

    private func emit(_ result: DeflatePool.Result, _ output: (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        if let message = result.failure { throw StoreError(.systemCall, "gzip: \(message)") }
        if pool.delivered == 0 {
            var header = ParallelGzipEncoder.header
            try withUnsafeBytes(of: &header) { (bytes) throws(StoreError) in try output(bytes) }
        }
        if result.output.count > 0 { try output(result.output) }
        crc = UInt32(truncatingIfNeeded: crc32_combine(uLong(crc), uLong(result.crc), result.length))
        total &+= UInt64(result.length)
        pool.markDelivered()
    }
}

/// The worker threads and the ring of slots of a ``ParallelGzipEncoder``. Slot `seq % slotCount`
/// holds chunk `seq`. Ownership of a slot's buffers moves with its state, changed only under
/// the mutex: the encoder's thread fills a free slot's input, a worker compresses a queued one
/// (reading its input, writing its output), the encoder's thread reads a done one's output;
/// a slot is free again once delivered.
package final class DeflatePool: @unchecked Sendable {
    /// Starts a thread running `main(context)` into `thread`; returns 0 or an errno, as
    /// pthread_create(3) does (which does not set errno).
    package typealias ThreadStart = (_ thread: inout pthread_t, _ main: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer?,
                                     _ context: UnsafeMutableRawPointer) -> Int32

    package static func startWorker(_ thread: inout pthread_t, _ main: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer?,
                                    _ context: UnsafeMutableRawPointer) -> Int32 {
        pthread_create(&thread, nil, main, context)
    }

    struct Result {
        var output: UnsafeRawBufferPointer
        var length: Int
        var crc: UInt32
        var failure: String?
    }

    private struct Slot {
        /// Dictionary space (32 KiB) followed by the chunk.
        var input: UnsafeMutablePointer<UInt8>
        var dictionaryLength = 0
        var length = 0
        var last = false
        var output: UnsafeMutablePointer<UInt8>
        var outputCapacity: Int
        var outputLength = 0
        var crc: UInt32 = 0
        var failure: String?
        var done = false
    }

    let slotCount: Int
    let chunkSize: Int
    private let slots: UnsafeMutablePointer<Slot>
    private let deflaters: [ChunkDeflater]
    private let lock = Lock()
    private let workAvailable = Lock.Condition()
    private let progress = Lock.Condition()
    private var threads: [pthread_t] = []
    // Under `lock` (with the slots' `done`, and their other fields while queued):
    private var queued = 0
    private var claimed = 0
    private var stopping = false
    private var nextWorker = 0
    /// Chunks delivered (only the encoder's thread changes it).
    private(set) var delivered = 0

    init(engine: DeflateEngine, chunkSize: Int, workers: Int, slots count: Int, startThread: ThreadStart) throws(StoreError) {
        self.chunkSize = chunkSize
        slotCount = count
        var deflaters: [ChunkDeflater] = []
        for _ in 0..<workers { deflaters.append(try ChunkDeflater(engine)) }
        self.deflaters = deflaters
        slots = UnsafeMutablePointer<Slot>.allocate(capacity: count)
        // Room for incompressible data: deflate's stored blocks add 5 bytes per 64 KiB.
        let capacity = chunkSize + chunkSize / 8 + 65536
        for i in 0..<count {
            (slots + i).initialize(to: Slot(input: .allocate(capacity: Zlib.windowSize + chunkSize),
                                            output: .allocate(capacity: capacity), outputCapacity: capacity))
        }
        for _ in 0..<workers {
            var thread = pthread_t()
            let context = Unmanaged.passRetained(self).toOpaque()
            let code = startThread(&thread, deflateWorkerMain, context)
            if code != 0 {
                Unmanaged<DeflatePool>.fromOpaque(context).release()
                stop()
                throw StoreError(.systemCall, "gzip: cannot start a compression thread", errno: code)
            }
            threads.append(thread)
        }
    }

    deinit {
        for i in 0..<slotCount {
            slots[i].input.deallocate()
            slots[i].output.deallocate()
        }
        slots.deinitialize(count: slotCount)
        slots.deallocate()
    }

    /// Where chunk `seq`'s bytes go (its slot must be the encoder's).
    func data(_ seq: Int) -> UnsafeMutablePointer<UInt8> {
        slots[seq % slotCount].input + Zlib.windowSize
    }

    /// Gives chunk `seq` (a free slot) the dictionary `bytes`.
    func setDictionary(_ seq: Int, from bytes: UnsafeMutablePointer<UInt8>, count: Int) {
        let slot = slots + seq % slotCount
        (slot.pointee.input + Zlib.windowSize - count).update(from: bytes, count: count)
        slot.pointee.dictionaryLength = count
    }

    /// Hands chunk `seq` (filled with `length` bytes) to the workers.
    func queue(_ seq: Int, length: Int, last: Bool) {
        lock.withLock {
            let slot = slots + seq % slotCount
            slot.pointee.length = length
            slot.pointee.last = last
            slot.pointee.done = false
            slot.pointee.failure = nil
            if seq == 0 { slot.pointee.dictionaryLength = 0 }
            queued = seq + 1
            workAvailable.signal()
        }
    }

    /// Waits until chunk `seq` is compressed.
    func waitDone(_ seq: Int) -> Result {
        lock.withLock {
            while !slots[seq % slotCount].done { progress.wait(lock) }
        }
        return result(seq)
    }

    /// Chunk `seq` when it is compressed and queued, else nil.
    func doneWithoutWaiting(_ seq: Int) -> Result? {
        let done = lock.withLock { seq < queued && slots[seq % slotCount].done }
        return done ? result(seq) : nil
    }

    private func result(_ seq: Int) -> Result {
        let slot = slots[seq % slotCount]
        return Result(output: UnsafeRawBufferPointer(start: slot.output, count: slot.outputLength),
                      length: slot.length, crc: slot.crc, failure: slot.failure)
    }

    /// The oldest undelivered chunk has been delivered: its slot is free.
    func markDelivered() { delivered += 1 }

    /// Stops the workers (after the chunk each is compressing) and waits for them.
    func stop() {
        lock.withLock {
            stopping = true
            workAvailable.broadcast()
        }
        for thread in threads { pthread_join(thread, nil) }
        threads = []
    }

    /// A worker thread's loop: take the oldest queued chunk, compress it, mark it done.
    func work() {
        lock.lock()
        let deflater = deflaters[nextWorker]
        nextWorker += 1
        while true {
            while !stopping && claimed == queued { workAvailable.wait(lock) }
            if stopping { break }
            let slot = slots + claimed % slotCount
            claimed += 1
            lock.unlock()
            compress(slot, deflater)
            lock.lock()
            slot.pointee.done = true
            progress.broadcast()
        }
        lock.unlock()
    }

    private func compress(_ slot: UnsafeMutablePointer<Slot>, _ deflater: ChunkDeflater) {
        let data = slot.pointee.input + Zlib.windowSize
        let length = slot.pointee.length
        slot.pointee.crc = crc32_gzip_refl(0, data, UInt64(length))
        var output = slot.pointee.output
        var capacity = slot.pointee.outputCapacity
        let outcome = deflater.compress(data, length, dictionary: data - slot.pointee.dictionaryLength,
                                        dictionaryLength: slot.pointee.dictionaryLength, last: slot.pointee.last,
                                        output: &output, capacity: &capacity)
        slot.pointee.output = output
        slot.pointee.outputCapacity = capacity
        switch outcome {
        case .success(let produced): slot.pointee.outputLength = produced
        case .failure(let message):
            slot.pointee.outputLength = 0
            slot.pointee.failure = message
        }
    }
}

/// A worker thread's entry point: it never throws; failures are recorded in the slots.
private func deflateWorkerMain(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let pool = Unmanaged<DeflatePool>.fromOpaque(context!).takeRetainedValue()
    pool.work()
    return nil
}

/// One worker's deflate state, reused for every chunk it compresses: a raw zlib stream or an
/// ISA-L stream with its level buffer.
final class ChunkDeflater {
    enum Outcome {
        case success(Int)
        case failure(String)
    }

    private let engine: DeflateEngine
    private let zstream: UnsafeMutablePointer<z_stream>?
    private let istream: UnsafeMutablePointer<isal_zstream>?
    private let levelBuffer: UnsafeMutablePointer<UInt8>?
    /// isa-l.h's ISAL_DEF_LVL3_DEFAULT, through the shim: enough for every level.
    static let isalLevelBufferSize = umoci_isal_level_buffer_size()

    init(_ engine: DeflateEngine) throws(StoreError) {
        self.engine = engine
        switch engine {
        case .zlib(let level):
            let stream = Zlib.allocateStream()
            let ret = umoci_deflateInit2(stream, level, Zlib.rawWindowBits, 8, Z_DEFAULT_STRATEGY)
            guard ret == Z_OK else {
                let message = Zlib.message(stream, ret)
                stream.deinitialize(count: 1)
                stream.deallocate()
                throw StoreError(.systemCall, "gzip: cannot initialize deflate (level \(level)): \(message)")
            }
            zstream = stream
            istream = nil
            levelBuffer = nil
        case .isal(let level):
            guard level <= 3 else { throw StoreError(.invalidInput, "gzip: ISA-L has no compression level \(level) (0...3)") }
            let stream = UnsafeMutablePointer<isal_zstream>.allocate(capacity: 1)
            stream.initialize(to: isal_zstream())
            isal_deflate_init(stream)
            zstream = nil
            istream = stream
            levelBuffer = .allocate(capacity: ChunkDeflater.isalLevelBufferSize)
        }
    }

    deinit {
        if let zstream {
            deflateEnd(zstream)
            zstream.deinitialize(count: 1)
            zstream.deallocate()
        }
        if let istream {
            istream.deinitialize(count: 1)
            istream.deallocate()
        }
        levelBuffer?.deallocate()
    }

    /// Deflates one chunk into `output`, which is grown (and `capacity` with it) if it ever
    /// fills. A last chunk ends the deflate stream, any other ends with a sync flush.
    func compress(_ input: UnsafeMutablePointer<UInt8>, _ length: Int,
                  dictionary: UnsafeMutablePointer<UInt8>, dictionaryLength: Int, last: Bool,
                  output: inout UnsafeMutablePointer<UInt8>, capacity: inout Int) -> Outcome {
        var produced = 0
        if let z = zstream {
            var ret = deflateReset(z)
            if ret == Z_OK, dictionaryLength > 0 { ret = deflateSetDictionary(z, dictionary, uInt(dictionaryLength)) }
            guard ret == Z_OK else { return .failure("deflate reset: \(Zlib.message(z, ret))") }
            z.pointee.next_in = input
            z.pointee.avail_in = uInt(length)
            while true {
                z.pointee.next_out = output + produced
                z.pointee.avail_out = uInt(capacity - produced)
                ret = deflate(z, last ? Z_FINISH : Z_SYNC_FLUSH)
                produced = capacity - Int(z.pointee.avail_out)
                if ret == Z_STREAM_END { return .success(produced) }
                guard ret == Z_OK || ret == Z_BUF_ERROR else { return .failure("deflate: \(Zlib.message(z, ret))") }
                if !last, z.pointee.avail_in == 0, z.pointee.avail_out > 0 { return .success(produced) }
                if z.pointee.avail_out == 0 { grow(&output, &capacity, produced) }
            }
        }
        guard let s = istream, let levelBuffer, case .isal(let level) = engine else { return .failure("no deflate state") }
        isal_deflate_reset(s)
        s.pointee.level = level
        s.pointee.level_buf = levelBuffer
        s.pointee.level_buf_size = UInt32(ChunkDeflater.isalLevelBufferSize)
        s.pointee.gzip_flag = UInt16(IGZIP_DEFLATE)
        s.pointee.hist_bits = 0
        s.pointee.flush = UInt16(last ? NO_FLUSH : SYNC_FLUSH)
        s.pointee.end_of_stream = last ? 1 : 0
        if dictionaryLength > 0 {
            let ret = isal_deflate_set_dict(s, dictionary, UInt32(dictionaryLength))
            guard ret == COMP_OK else { return .failure("isal_deflate_set_dict: error \(ret)") }
        }
        s.pointee.next_in = input
        s.pointee.avail_in = UInt32(length)
        while true {
            s.pointee.next_out = output + produced
            s.pointee.avail_out = UInt32(capacity - produced)
            let ret = isal_deflate(s)
            produced = capacity - Int(s.pointee.avail_out)
            guard ret == COMP_OK else { return .failure("isal_deflate: error \(ret)") }
            if s.pointee.avail_in == 0, s.pointee.avail_out > 0,
               !last || s.pointee.internal_state.state == ZSTATE_END {
                return .success(produced)
            }
            if s.pointee.avail_out == 0 { grow(&output, &capacity, produced) }
        }
    }

    private func grow(_ output: inout UnsafeMutablePointer<UInt8>, _ capacity: inout Int, _ used: Int) {
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
        bigger.update(from: output, count: used)
        output.deallocate()
        output = bigger
        capacity *= 2
    }
}
