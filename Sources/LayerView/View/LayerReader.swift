import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive

/// Random reads of one layer's uncompressed stream: straight from the blob for uncompressed
/// layers, from the cached decompressed copy for zstd, and for gzip by inflating the region
/// between two access points, which is then kept in the shared `RegionCache`.
final class LayerReader: Sendable {
    let number: Int
    let digest: Digest
    let compression: LayerCompression
    let uncompressedSize: Int64
    /// Start offsets of the gzip regions: 0, then each access point's uncompressed offset.
    let regionStarts: [Int64]
    let fd: Int32
    let gzip: GzipRandomAccess?
    let cache: RegionCache

    init(number: Int, index: LayerIndex, blobPath: String, zstdCopyPath: String, cache: RegionCache) throws(StoreError) {
        self.number = number
        digest = index.layer
        compression = index.compression
        uncompressedSize = index.uncompressedSize
        self.cache = cache
        let path = index.compression == .zstd ? zstdCopyPath : blobPath
        fd = try Files.open(path, O_RDONLY)
        if index.compression == .gzip {
            gzip = GzipRandomAccess(fd: fd, blobSize: index.compressedSize, accessPoints: index.accessPoints)
            var starts: [Int64] = [0]
            for p in index.accessPoints where p.uncompressedOffset > starts[starts.count - 1] {
                starts.append(p.uncompressedOffset)
            }
            regionStarts = starts
        } else {
            gzip = nil
            regionStarts = []
        }
    }

    deinit { close(fd) }

    /// Fills `buffer` from uncompressed `offset`; returns the count, short only at the end.
    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        guard offset < uncompressedSize, buffer.count > 0 else { return 0 }
        let wanted = Int(min(Int64(buffer.count), uncompressedSize - offset))
        guard gzip != nil else {
            var done = 0
            while done < wanted {
                let n = try check(Files.retrying { pread(fd, buffer.baseAddress! + done, wanted - done, off_t(offset) + off_t(done)) }, "read layer", "\(digest)")
                if n == 0 { throw StoreError(.corrupt, "layer \(digest): blob is shorter than its index says") }
                done += n
            }
            return done
        }
        var done = 0
        while done < wanted {
            let position = offset + Int64(done)
            let r = region(containing: position)
            let bytes = try regionBytes(r)
            let within = Int(position - regionStarts[r])
            guard within < bytes.count else { throw StoreError(.corrupt, "layer \(digest): stream ends before offset \(position)") }
            let n = min(wanted - done, bytes.count - within)
            bytes.withUnsafeBytes { src in
                (buffer.baseAddress! + done).copyMemory(from: src.baseAddress! + within, byteCount: n)
            }
            done += n
        }
        return done
    }

    func region(containing offset: Int64) -> Int {
        var lo = 0, hi = regionStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if regionStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    func regionBytes(_ r: Int) throws(StoreError) -> [UInt8] {
        let key = RegionCache.Key(layer: Int32(number), region: Int32(r))
        // Readahead asks for neighbouring offsets at once: one thread inflates a region, the
        // others wait for it instead of inflating it again.
        while true {
            if let hit = cache.get(key) { return hit }
            if cache.inflight.begin(key) { break }
        }
        defer { cache.inflight.end(key) }
        if let hit = cache.get(key) { return hit }
        // A reader going through the layer in order (the region before this one is cached) is
        // likely to read on: the next region is inflated meanwhile on another core (inflating
        // is the cost of a cold read). Random access prefetches nothing.
        if r > 0, cache.get(RegionCache.Key(layer: Int32(number), region: Int32(r - 1)), touch: false) != nil {
            prefetch(r + 1)
        }
        return try inflate(r, key)
    }

    /// Inflates region r in the background unless it is cached or being inflated.
    func prefetch(_ r: Int) {
        guard r < regionStarts.count, cache.prefetching else { return }
        let key = RegionCache.Key(layer: Int32(number), region: Int32(r))
        guard cache.get(key, touch: false) == nil, cache.inflight.tryBegin(key) else { return }
        DispatchQueue.global(qos: .utility).async { [self] in
            defer { cache.inflight.end(key) }
            _ = try? inflate(r, key)
        }
    }

    /// Inflates region r and keeps it in the cache; the caller holds `key` in the inflight set.
    private func inflate(_ r: Int, _ key: RegionCache.Key) throws(StoreError) -> [UInt8] {
        let start = regionStarts[r]
        let end = r + 1 < regionStarts.count ? regionStarts[r + 1] : uncompressedSize
        let size = Int(end - start)
        var failure: StoreError?
        var n = 0
        // Not zeroed first: inflating writes every byte (a short stream is an error below).
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            do throws(StoreError) {
                n = try gzip!.read(at: start, into: UnsafeMutableRawBufferPointer(buf))
            } catch {
                failure = error
            }
            count = failure == nil && n == size ? size : 0
        }
        if let failure { throw failure }
        guard n == size else {
            throw StoreError(.corrupt, "layer \(digest): gzip stream ends at \(start + Int64(n)), its index says \(end)")
        }
        cache.put(key, bytes)
        return bytes
    }
}

/// A bounded least-recently-used cache of inflated gzip regions, shared by the layers of a
/// view and safe for concurrent readers (one lock around a small table).
final class RegionCache: Sendable {
    struct Key: Hashable { var layer: Int32; var region: Int32 }
    private struct State {
        var entries: [Key: (bytes: [UInt8], used: UInt64)] = [:]
        var clock: UInt64 = 0
        var total = 0
        var disabled = false
    }

    let capacity: Int
    private let state = Mutex(State())
    /// The regions being inflated now (see LayerReader.regionBytes).
    let inflight = Inflight()

    init(capacity: Int) { self.capacity = capacity }

    /// A set of keys with a condition to wait on: begin(key) claims a key, or waits until the
    /// thread holding it calls end(key). `keys` is guarded by `lock`.
    final class Inflight: @unchecked Sendable {
        private let lock = Lock()
        private let ended = Lock.Condition()
        private var keys = Set<Key>()

        /// true: the caller holds `key` and must end(key); false: another thread held it and
        /// has ended it (look for its result again).
        func begin(_ key: Key) -> Bool {
            lock.lock()
            defer { lock.unlock() }
            if keys.insert(key).inserted { return true }
            while keys.contains(key) { ended.wait(lock) }
            return false
        }

        /// Claims `key` if nobody holds it; never waits.
        func tryBegin(_ key: Key) -> Bool {
            lock.withLock { keys.insert(key).inserted }
        }

        func end(_ key: Key) {
            lock.withLock {
                _ = keys.remove(key)
                ended.broadcast()
            }
        }
    }

    /// Whether readers inflate the next region ahead of them (off for a cache too small to
    /// hold both).
    var prefetching: Bool { capacity >= 16 << 20 && !state.withLock { $0.disabled } }

    /// The region, if cached; `touch` marks it as just used.
    func get(_ key: Key, touch: Bool = true) -> [UInt8]? {
        state.withLock { s in
            guard let e = s.entries[key] else { return nil }
            if touch {
                s.clock += 1
                s.entries[key] = (e.bytes, s.clock)
            }
            return e.bytes
        }
    }

    /// Frees every region and keeps none from now on.
    func disable() {
        state.withLock { s in
            s.disabled = true
            s.entries = [:]
            s.total = 0
        }
    }

    func put(_ key: Key, _ bytes: [UInt8]) {
        guard bytes.count <= capacity else { return }
        state.withLock { s in
            if s.disabled { return }
            s.clock += 1
            if let old = s.entries.updateValue((bytes, s.clock), forKey: key) { s.total -= old.bytes.count }
            s.total += bytes.count
            while s.total > capacity, let victim = s.entries.min(by: { $0.value.used < $1.value.used }) {
                s.total -= victim.value.bytes.count
                s.entries[victim.key] = nil
            }
        }
    }
}
