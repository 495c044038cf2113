#if canImport(Glibc)
import Glibc
#endif

/// Hands a byte stream to a consumer running on a thread of its own, through a fixed set of
/// buffers: the producer fills one while the consumer works through the others, so that
/// producing (reading and inflating a layer) and consuming (hashing the output and scanning
/// its tar headers) take a core each.
///
/// Ownership: `consume`, and whatever it captures, is called only on the consumer thread, and
/// only until ``finish()`` (or ``close()``) returns; the producer must not touch what it
/// captures before then. The queues, `closed` and `failure` are shared and guarded by `lock`;
/// `current` and `filled` belong to the producer. One producer thread.
package final class StreamHandOff: @unchecked Sendable {
    private let bufferSize: Int
    private let buffers: [UnsafeMutableRawPointer]
    private let consume: (UnsafeRawBufferPointer) throws(StoreError) -> Void

    private let lock = Lock()
    private let changed = Lock.Condition()
    private var free: [Int]
    /// Filled buffers in stream order: (buffer, byte count).
    private var ready: [(Int, Int)] = []
    private var readyHead = 0
    private var closed = false
    private var failure: StoreError?

    private var current: Int?
    private var filled = 0
    private var thread: pthread_t?

    package init(bufferSize: Int = 1 << 20, buffers count: Int = 4,
         consume: @escaping (UnsafeRawBufferPointer) throws(StoreError) -> Void) throws(StoreError) {
        self.bufferSize = bufferSize
        self.consume = consume
        buffers = (0..<count).map { _ in UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 64) }
        free = Array(0..<count)
        ready.reserveCapacity(count)
        // Unretained: deinit joins the thread before the instance goes away.
        var t = pthread_t()
        let ret = pthread_create(&t, nil, { raw in
            Unmanaged<StreamHandOff>.fromOpaque(raw!).takeUnretainedValue().run()
            return nil
        }, Unmanaged.passUnretained(self).toOpaque())
        guard ret == 0 else { throw StoreError(.systemCall, "cannot start a thread", errno: ret) }
        thread = t
    }

    deinit {
        close()
        for b in buffers { b.deallocate() }
    }

    /// Appends bytes to the stream; throws the consumer's error once it has failed.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        var offset = 0
        while offset < bytes.count {
            let buffer: Int
            if let current {
                buffer = current
            } else {
                buffer = try takeFree()
                current = buffer
            }
            let n = min(bytes.count - offset, bufferSize - filled)
            (buffers[buffer] + filled).copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
            filled += n
            offset += n
            if filled == bufferSize { submit() }
        }
    }

    /// Ends the stream: waits until the consumer has seen all of it; throws its error.
    package func finish() throws(StoreError) {
        if current != nil { submit() }
        if let failure = close() { throw failure }
    }

    /// Stops the consumer after what was submitted and waits for it; returns its error.
    @discardableResult
    package func close() -> StoreError? {
        lock.withLock {
            closed = true
            changed.broadcast()
        }
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
        return failure
    }

    private func takeFree() throws(StoreError) -> Int {
        lock.lock()
        defer { lock.unlock() }
        while free.isEmpty && failure == nil { changed.wait(lock) }
        if let failure { throw failure }
        return free.removeLast()
    }

    private func submit() {
        guard let buffer = current else { return }
        lock.withLock {
            ready.append((buffer, filled))
            changed.broadcast()
        }
        current = nil
        filled = 0
    }

    /// The consumer thread: takes filled buffers in order until the stream is closed and drained.
    private func run() {
        while true {
            lock.lock()
            while readyHead == ready.count && !closed { changed.wait(lock) }
            if readyHead == ready.count {
                lock.unlock()
                return
            }
            let (buffer, count) = ready[readyHead]
            readyHead += 1
            if readyHead == ready.count {
                ready.removeAll(keepingCapacity: true)
                readyHead = 0
            }
            let failed = failure != nil
            lock.unlock()
            var error: StoreError?
            if !failed {
                do throws(StoreError) {
                    try consume(UnsafeRawBufferPointer(start: buffers[buffer], count: count))
                } catch let e {
                    error = e
                }
            }
            lock.withLock {
                if let error, failure == nil { failure = error }
                free.append(buffer)
                changed.broadcast()
            }
        }
    }
}
