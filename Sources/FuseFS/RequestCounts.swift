import Synchronization

/// How many requests of each kind the kernel sent the server, for benchmarks, tests and the
/// server's debug log (what a workload costs in round trips is what the mount's speed mostly
/// depends on). One counter per kind, incremented with a relaxed atomic add by whichever worker
/// thread runs the callback: no lock, no allocation. Owned by the ServerContext (the counters
/// live as long as the session); read from any thread.
public enum Request: Int, CaseIterable, Sendable {
    case lookup, forget, getattr, setattr, readlink, mknod, mkdir, symlink, unlink, rmdir, rename, link
    case open, create, read, write, flush, release, fsync, opendir, readdir, readdirplus, releasedir, fsyncdir
    case statfs, setxattr, getxattr, listxattr, removexattr, fallocate

    public var name: String { "\(self)" }
}

final class RequestCounts: Sendable {
    private let counters = InlineArray<30, Atomic<UInt64>> { _ in Atomic(0) }

    init() {
        // One counter per kind: a kind added to Request needs a counter here.
        precondition(Request.allCases.count == counters.count, "RequestCounts: \(Request.allCases.count) kinds, \(counters.count) counters")
    }

    @inline(__always) func count(_ r: Request) {
        counters[r.rawValue].wrappingAdd(1, ordering: .relaxed)
    }

    func value(_ r: Request) -> UInt64 { counters[r.rawValue].load(ordering: .relaxed) }
}
