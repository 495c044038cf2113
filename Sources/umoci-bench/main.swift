// Measurements of LayerStore for the benchmark scripts: prints figures, asserts nothing.
//
//   umoci-bench index LAYOUT:TAG CACHE         index the image (cold if CACHE is empty), open its view
//   umoci-bench open LAYOUT:TAG CACHE RUNS     median time to open the merged view with a warm cache
//   umoci-bench read LAYOUT:TAG CACHE PATH N   N cold 4 KiB reads at random offsets of PATH: median, p90
//   umoci-bench gzip FILE ENGINE [CHUNK_KIB [WORKERS]]  FILE through ParallelGzipEncoder (ENGINE:
//                                                isal-N or zlib-N): seconds and compressed bytes
import Foundation
import Basics
import OCI
import Archive
import LayerView

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("umoci-bench: \(message)\n".utf8))
    exit(1)
}

let args = CommandLine.arguments
if args.count >= 4, args[1] == "gzip" {
    let parts = args[3].split(separator: "-")
    let engine: DeflateEngine
    switch (parts.first, parts.count == 2 ? UInt32(parts[1]) : nil) {
    case ("isal", let level?): engine = .isal(level: level)
    case ("zlib", let level?): engine = .zlib(level: Int32(level))
    default: fail("unknown engine \(args[3]) (isal-N or zlib-N)")
    }
    let chunk = args.count > 4 ? (Int(args[4]) ?? 256) * 1024 : ParallelGzipEncoder.defaultChunkSize
    let workers = args.count > 5 ? Int(args[5]) : nil
    do {
        let fd = open(args[2], O_RDONLY)
        guard fd >= 0 else { fail("cannot open \(args[2])") }
        defer { close(fd) }
        var compressed = 0
        let t0 = now()
        let encoder = try ParallelGzipEncoder(engine: engine, chunkSize: chunk, workers: workers)
        try Files.forEachChunk(of: fd, path: args[2]) { (bytes) throws(StoreError) in
            try encoder.encode(bytes) { compressed += $0.count }
        }
        try encoder.finish { compressed += $0.count }
        print(String(format: "seconds %.3f bytes %d", now() - t0, compressed))
    } catch {
        fail("\(error)")
    }
    exit(0)
}
guard args.count >= 4 else { fail("usage: umoci-bench index|open|read LAYOUT:TAG CACHE ...") }
do {
    let ref = try ImageReference(parsing: args[2])
    let layout = try ImageLayout(opening: ref.layout)
    let image = try layout.loadImage(tag: ref.tag)
    let cache = IndexCache(directory: args[3])
    switch args[1] {
    case "index":
        let t0 = now()
        let indexes = try cache.indexes(layout: layout, image: image)
        let t1 = now()
        let view = try MergedView.open(layout: layout, image: image, cache: cache)
        let t2 = now()
        let uncompressed = indexes.reduce(0) { $0 + $1.uncompressedSize }
        let entries = indexes.reduce(0) { $0 + $1.entries.count }
        let points = indexes.reduce(0) { $0 + $1.accessPoints.count }
        print(String(format: "index_seconds %.3f", t1 - t0))
        print(String(format: "open_view_seconds %.4f", t2 - t1))
        print("layers \(indexes.count) entries \(entries) access_points \(points) uncompressed_bytes \(uncompressed) view_nodes \(view.nodeCount)")
    case "open":
        let runs = args.count > 4 ? Int(args[4]) ?? 20 : 20
        var times: [Double] = [], loads: [Double] = []
        for _ in 0..<runs {
            let t0 = now()
            _ = try cache.indexes(layout: layout, image: image)
            loads.append(now() - t0)
            let t1 = now()
            _ = try MergedView.open(layout: layout, image: image, cache: cache)
            times.append(now() - t1)
        }
        print(String(format: "open_view_median_ms %.2f (of which loading the indexes %.2f)", median(times) * 1000, median(loads) * 1000))
    case "read":
        guard args.count >= 6, let n = Int(args[5]) else { fail("usage: umoci-bench read LAYOUT:TAG CACHE PATH N") }
        let view = try MergedView.open(layout: layout, image: image, cache: cache, options: .init(regionCacheBytes: 0))
        guard let node = view.lookup(ByteString(args[4])) else { fail("\(args[4]) not found in the image") }
        let inode = view.inodeNumber(of: node)
        let size = view.attributes(ofInode: inode).size
        var buffer = [UInt8](repeating: 0, count: 4096)
        var times: [Double] = []
        for _ in 0..<n {
            let offset = Int64.random(in: 0..<max(1, size - 4096))
            let t0 = now()
            _ = try buffer.withUnsafeMutableBytes { try view.read(inode: inode, at: offset, into: $0) }
            times.append(now() - t0)
        }
        let sorted = times.sorted()
        print(String(format: "cold_4k_read_median_ms %.3f p90_ms %.3f (file size %lld, %d reads)",
                     median(times) * 1000, sorted[Int(Double(n) * 0.9)] * 1000, size, n))
    default:
        fail("unknown measurement \(args[1])")
    }
} catch {
    fail("\(error)")
}
