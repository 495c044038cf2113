import OCI
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Progress of a cold index build on a terminal: bytes done of total, per layer, on one
/// rewritten stderr line. Silent without a terminal or with --log=error or higher.
enum IndexProgress {
    struct State {
        var done: [Int64]
        var totals: [Int64]
        var lastDraw: Int64 = 0
        var drawn = false
    }

    static let state = Mutex<State?>(nil)

    static var enabled: Bool { isatty(2) == 1 && Log.level <= .warn }

    /// A progress callback for indexing `image`'s layers, or nil when progress is not shown.
    static func start(_ image: Image) -> (@Sendable (Int, Int64) -> Void)? {
        guard enabled else { return nil }
        let totals = image.manifest.layers.map(\.size)
        state.withLock { $0 = State(done: Array(repeating: 0, count: totals.count), totals: totals) }
        return { layer, bytes in update(layer, bytes) }
    }

    static func update(_ layer: Int, _ bytes: Int64) {
        state.withLock { s in
            guard var st = s else { return }
            st.done[layer] = bytes
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            let now = Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
            if now - st.lastDraw >= 100 || bytes == st.totals[layer] {
                st.lastDraw = now
                st.drawn = true
                let parts = zip(st.done, st.totals).enumerated().map { i, p in
                    "\(i + 1): \(mebibytes(p.0))/\(mebibytes(p.1))"
                }
                var line = "\r   • indexing layers (MiB) " + parts.joined(separator: "  ") + "\u{1B}[K"
                line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
            }
            s = st
        }
    }

    static func finish() {
        state.withLock { s in
            if s?.drawn == true { _ = write(2, "\n", 1) }
            s = nil
        }
    }

    static func mebibytes(_ bytes: Int64) -> String { String(bytes >> 20) }
}
