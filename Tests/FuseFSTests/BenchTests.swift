#if canImport(Glibc)
import Glibc
#endif
import FuseFS
import LayerStore
import Testing

/// Read throughput through the mount against the view itself (UMOCI_FUSE_BENCH=1; builds the
/// 40 MiB "big" image, so it is off by default).
@Suite("FuseFS read benchmark", .enabled(if: Images.fuseAvailable && getenv("UMOCI_FUSE_BENCH") != nil))
struct BenchTests {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    @Test func bigFileThroughput() throws {
        let layout = try #require(Images.layout)
        #expect(run("python3 '\(Images.repository)/scripts/fixtures/make_image.py' '\(layout)' big >/dev/null") == 0)
        let m = try Mounted(tag: "big")
        defer { m.close() }
        let node = try #require(m.view.lookup("opt/big.bin"))
        let size = Int(m.view.inode(of: node).size)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for round in 0..<2 {
            var t = BenchTests.now()
            var offset = 0
            while offset < size {
                offset += try buffer.withUnsafeMutableBytes { try m.view.read(inode: m.view.inodeNumber(of: node), at: Int64(offset), into: $0) }
            }
            let direct = BenchTests.now() - t
            t = BenchTests.now()
            let fd = open(m.path("opt/big.bin"), O_RDONLY)
            var total = 0
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                total += n
            }
            close(fd)
            let mounted = BenchTests.now() - t
            #expect(total == size)
            print("round \(round): view \(Int(Double(size) / direct / 1e6)) MB/s, mount \(Int(Double(size) / mounted / 1e6)) MB/s")
        }
        // Many small lookups + stats.
        let t = BenchTests.now()
        for _ in 0..<3 { _ = listNames(m.path("opt")); _ = lstatOrNil(m.path("opt/after")) }
        print("stat loop \(BenchTests.now() - t) s")
    }
}
