import CIsal
import Foundation
import Testing
@testable import Basics
@testable import OCI
@testable import Archive
@testable import LayerView

/// Test material shared by the compression tests: a deterministic, partly compressible input of
/// about 40 MiB (runs of word text mixed with runs of random bytes) and helpers around the CLIs.
enum CompressionFixture {
    static let size = 40 * 1024 * 1024 + 12345

    /// xorshift64*: deterministic pseudo-random numbers.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 0x2545_F491_4F6C_DD1D
        }
    }

    static let data: [UInt8] = {
        let words = ["layer", "image", "manifest", "config", "sha256", "blob", "index", "tar", "gzip",
                     "zstd", "rootfs", "whiteout", "opaque", "umoci", "oci", "the", "of", "and", "a",
                     "/usr/lib/x86_64-linux-gnu/", "libc.so.6", "etc", "passwd", "\n", "0644", "root"]
            .map { Array($0.utf8) + [0x20] }
        var random = Random(state: 0x9E37_79B9_7F4A_7C15)
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBufferPointer { out in
            var i = 0
            while i < size {
                let r = random.next()
                let run = min(size - i, Int(r % 60000) + 500)
                if r >> 60 < 4 {  // a quarter of the runs are incompressible
                    var j = i
                    while j < i + run {
                        var v = random.next()
                        for _ in 0..<8 where j < i + run {
                            out[j] = UInt8(truncatingIfNeeded: v)
                            v >>= 8
                            j += 1
                        }
                    }
                } else {
                    var j = i
                    while j < i + run {
                        let v = random.next()
                        let word = words[Int(v % UInt64(words.count))]
                        for b in word where j < i + run {
                            out[j] = b
                            j += 1
                        }
                        if v >> 59 == 0, j < i + run {  // sprinkle numbers
                            out[j] = UInt8(0x30 + (v >> 8) % 10)
                            j += 1
                        }
                    }
                }
                i += run
            }
        }
        return bytes
    }()

    /// A scratch directory for one test, removed afterwards.
    final class Scratch {
        let directory: String
        init() {
            var template = Array("/tmp/umoci-compression-tests-XXXXXX".utf8CString)
            directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        }
        deinit { try? FileManager.default.removeItem(atPath: directory) }

        func path(_ name: String) -> String { directory + "/" + name }

        func write(_ name: String, _ bytes: [UInt8]) throws -> String {
            let p = path(name)
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            return p
        }
    }

    static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Runs a shell command; throws unless it exits 0.
    static func shell(_ command: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw StoreError(.systemCall, "command failed (exit \(process.terminationStatus)): \(command)")
        }
    }

    static func have(_ tool: String) -> Bool {
        ["/usr/bin/", "/bin/", "/usr/local/bin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + tool) }
    }

    /// The fixture compressed by the gzip CLI (default level), made once.
    static let gzipCLI: [UInt8] = {
        do {
            let scratch = Scratch()
            let input = try scratch.write("data", data)
            try shell("gzip -c < \(input) > \(scratch.path("data.gz"))")
            return try read(scratch.path("data.gz"))
        } catch {
            fatalError("cannot make gzip fixture: \(error)")
        }
    }()

    /// Inflates `blob` fed in `chunk`-sized pieces; returns the output and access points.
    static func gunzip(_ blob: [UInt8], spacing: Int64?, chunk: Int = 1 << 20) throws -> (out: [UInt8], points: [GzipAccessPoint]) {
        let decoder = try GzipDecoder(accessPointSpacing: spacing)
        var out: [UInt8] = []
        out.reserveCapacity(size + 1024)
        try blob.withUnsafeBytes { all in
            var at = 0
            while at < all.count {
                let piece = UnsafeRawBufferPointer(rebasing: all[at..<min(all.count, at + chunk)])
                try decoder.decode(piece) { out.append(contentsOf: $0) }
                at += piece.count
            }
        }
        try decoder.finish()
        #expect(decoder.totalOut == Int64(out.count))
        return (out, decoder.accessPoints)
    }

    static func gzip(_ input: [UInt8], level: Int32 = 6) throws -> [UInt8] {
        try gzip(input, engine: .zlib(level: level))
    }

    /// Compresses `input` with ParallelGzipEncoder, fed in `piece`-sized writes.
    static func gzip(_ input: [UInt8], engine: DeflateEngine, chunk: Int = ParallelGzipEncoder.defaultChunkSize,
                     piece: Int = 3 << 20, workers: Int? = nil, slots: Int? = nil) throws -> [UInt8] {
        let encoder = try ParallelGzipEncoder(engine: engine, chunkSize: chunk, workers: workers, slots: slots)
        var out: [UInt8] = []
        try input.withUnsafeBytes { all in
            var at = 0
            while at < all.count {
                let part = UnsafeRawBufferPointer(rebasing: all[at..<min(all.count, at + piece)])
                try encoder.encode(part) { out.append(contentsOf: $0) }
                at += part.count
            }
        }
        try encoder.finish { out.append(contentsOf: $0) }
        return out
    }

    static func unzstd(_ blob: [UInt8], chunk: Int = 1 << 20) throws -> [UInt8] {
        let decoder = try ZstdDecoder()
        var out: [UInt8] = []
        try blob.withUnsafeBytes { all in
            var at = 0
            while at < all.count {
                let piece = UnsafeRawBufferPointer(rebasing: all[at..<min(all.count, at + chunk)])
                try decoder.decode(piece) { out.append(contentsOf: $0) }
                at += piece.count
            }
        }
        try decoder.finish()
        return out
    }

    static func zstd(_ input: [UInt8], level: Int32 = 3) throws -> [UInt8] {
        let encoder = try ZstdEncoder(level: level)
        var out: [UInt8] = []
        try input.withUnsafeBytes { all in
            var at = 0
            while at < all.count {
                let piece = UnsafeRawBufferPointer(rebasing: all[at..<min(all.count, at + 3 << 20)])
                try encoder.encode(piece) { out.append(contentsOf: $0) }
                at += piece.count
            }
        }
        try encoder.finish { out.append(contentsOf: $0) }
        return out
    }

    /// Checks `GzipRandomAccess` reads at `offsets` (each with several lengths) against `expected`.
    static func checkRandomReads(blob: [UInt8], points: [GzipAccessPoint], expected: [UInt8],
                                 offsets: [Int64]) throws {
        let scratch = Scratch()
        let file = try scratch.write("blob.gz", blob)
        let fd = open(file, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        let access = GzipRandomAccess(fd: fd, blobSize: Int64(blob.count), accessPoints: points)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 100_000, alignment: 8)
        defer { buffer.deallocate() }
        for offset in offsets {
            for length in [1, 517, 100_000] {
                let n = try access.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]))
                let want = max(0, min(length, expected.count - Int(offset)))
                #expect(n == want, "read at \(offset) length \(length)")
                if n == want, n > 0, !buffer[0..<n].elementsEqual(expected[Int(offset)..<Int(offset) + n]) {
                    Issue.record("read at \(offset) length \(length): bytes differ")
                }
            }
        }
    }

    /// Interesting offsets: start, around every access point, the end, past the end.
    static func offsets(points: [GzipAccessPoint], total: Int, extra: [Int64] = []) -> [Int64] {
        var set: Set<Int64> = [0, 1, 12345, Int64(total) - 1, Int64(total) - 600, Int64(total), Int64(total) + 10]
        for p in points {
            set.formUnion([p.uncompressedOffset - 1, p.uncompressedOffset, p.uncompressedOffset + 1,
                           p.uncompressedOffset + 40_000])
        }
        for e in extra { set.formUnion([e - 1, e, e + 1, e - 50_000]) }
        return set.filter { $0 >= 0 }.sorted()
    }
}

@Suite("Compression")
struct CompressionTests {
    typealias F = CompressionFixture

    @Test func mediaTypes() throws {
        #expect(try LayerCompression(mediaType: MediaType.layerTar) == .none)
        #expect(try LayerCompression(mediaType: MediaType.layerTarGzip) == .gzip)
        #expect(try LayerCompression(mediaType: MediaType.layerTarZstd) == .zstd)
        #expect(try LayerCompression(mediaType: MediaType.layerNondistributableTar) == .none)
        #expect(try LayerCompression(mediaType: MediaType.layerNondistributableTarGzip) == .gzip)
        #expect(try LayerCompression(mediaType: MediaType.layerNondistributableTarZstd) == .zstd)
        #expect(try LayerCompression(mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip") == .gzip)
        #expect(try LayerCompression(mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") == .gzip)
        #expect(LayerCompression.gzip.layerMediaType == "application/vnd.oci.image.layer.v1.tar+gzip")
        #expect(LayerCompression.zstd.layerMediaType == "application/vnd.oci.image.layer.v1.tar+zstd")
        #expect(LayerCompression.none.layerMediaType == "application/vnd.oci.image.layer.v1.tar")
        let error = #expect(throws: StoreError.self) { try LayerCompression(mediaType: "application/x-bzip2") }
        #expect(error?.code == .unsupported)
    }

    @Test func decodesGzipCLIOutputWithAndWithoutAccessPoints() throws {
        let plain = try F.gunzip(F.gzipCLI, spacing: nil)
        #expect(plain.out == F.data)
        #expect(plain.points.isEmpty)
        let indexed = try F.gunzip(F.gzipCLI, spacing: 1 << 20)
        #expect(indexed.out == F.data)
        #expect(indexed.points.count >= 30)
        var previous: Int64 = 0
        for p in indexed.points {
            #expect(p.uncompressedOffset - previous >= 1 << 20)
            #expect(p.compressedOffset % GzipDecoder.sliceSize == 0)
            // A compressed inflate state: smaller than the state itself.
            #expect(!p.state.isEmpty && p.state.count < GzipInflation.stateSize)
            previous = p.uncompressedOffset
        }
        // Feeding the same stream in small odd pieces finds the same points, and their states
        // resume the stream as well.
        let small = try F.gunzip(F.gzipCLI, spacing: 1 << 20, chunk: 7777)
        #expect(small.out == F.data)
        #expect(small.points.map { [$0.uncompressedOffset, $0.compressedOffset] }
                == indexed.points.map { [$0.uncompressedOffset, $0.compressedOffset] })
        try F.checkRandomReads(blob: F.gzipCLI, points: small.points, expected: F.data,
                               offsets: small.points.prefix(8).map { $0.uncompressedOffset + 3 })
        // The same chunks give the same index bytes (the index cache is rebuilt byte for byte).
        #expect(try F.gunzip(F.gzipCLI, spacing: 1 << 20, chunk: 7777).points == small.points)
    }

    @Test func encoderRoundTripAndInteroperates() throws {
        let scratch = F.Scratch()
        let blob = try F.gzip(F.data)
        // Header as Go's gzip.Writer writes it: no flags, mtime 0, OS unknown.
        #expect(Array(blob.prefix(4)) == [0x1f, 0x8b, 8, 0])
        #expect(Array(blob[4..<8]) == [0, 0, 0, 0])
        #expect(blob[9] == 255)
        let part = Array(F.data[..<3_000_000])
        #expect(try F.gzip(part) == F.gzip(part))  // deterministic
        #expect(try F.gunzip(blob, spacing: 1 << 20).out == F.data)
        let file = try scratch.write("ours.gz", blob)
        try F.shell("gzip -dc < \(file) > \(scratch.path("ours.out"))")
        #expect(try F.read(scratch.path("ours.out")) == F.data)
        // Empty input still makes a valid member.
        let empty = try F.gzip([])
        #expect(try F.gunzip(empty, spacing: 1 << 20).out == [])
    }

    @Test func multiMemberStreamWithRandomReads() throws {
        let scratch = F.Scratch()
        let split = 20 * 1024 * 1024 + 777
        let first = try scratch.write("first", Array(F.data[..<split]))
        try F.shell("gzip -c < \(first) > \(scratch.path("first.gz"))")
        let a = try F.read(scratch.path("first.gz"))
        let b = try F.gzip(Array(F.data[split...]))
        let blob = a + b
        let (out, points) = try F.gunzip(blob, spacing: 1 << 20, chunk: 300_000)
        #expect(out == F.data)
        #expect(points.contains { $0.compressedOffset < Int64(a.count) })
        #expect(points.contains { $0.compressedOffset > Int64(a.count) + 10 })
        #expect(points.count >= 30)
        try F.checkRandomReads(blob: blob, points: points, expected: F.data,
                               offsets: F.offsets(points: points, total: F.data.count, extra: [Int64(split)]))
        // A cursor reads on sequentially from an offset, across the member boundary to the end.
        let file = try scratch.write("multi.gz", blob)
        let fd = open(file, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        let start = Int64(split) - 3_000_001
        let cursor = try GzipRandomAccess(fd: fd, blobSize: Int64(blob.count), accessPoints: points).cursor(at: start)
        var rest: [UInt8] = []
        var piece = [UInt8](repeating: 0, count: 65_000)
        while true {
            let n = try piece.withUnsafeMutableBytes { try cursor.read(into: $0) }
            if n == 0 { break }
            rest += piece[..<n]
        }
        #expect(rest == Array(F.data[Int(start)...]))
        #expect(cursor.position == Int64(F.data.count))
        // Without points every read inflates from the blob start, across the member boundary too.
        try F.checkRandomReads(blob: blob, points: [], expected: F.data,
                               offsets: [0, 5, Int64(split) - 3, Int64(split) + 100, Int64(F.data.count) - 1])
    }

    @Test func manySmallMembersWithEmptyOnes() throws {
        let expected = Array(F.data[..<2_000_000])
        var blob: [UInt8] = []
        var boundaries: [Int64] = []
        var at = 0
        while at < expected.count {
            let end = min(expected.count, at + 70_000 + at % 50_000)
            // zlib at two levels and ISA-L (whose members end with bits short of a byte left in
            // its inflate state's buffer).
            let engines: [DeflateEngine] = [.zlib(level: 1), .zlib(level: 6), .isal(level: 1), .isal(level: 3)]
            blob += try F.gzip(Array(expected[at..<end]), engine: engines[blob.count % engines.count])
            if at % 4 == 0 { blob += try F.gzip([]) }
            boundaries.append(Int64(end))
            at = end
        }
        for chunk in [1 << 20, 1000] {
            let (out, points) = try F.gunzip(blob, spacing: 100_000, chunk: chunk)
            #expect(out == expected)
            #expect(points.count >= 10)
            try F.checkRandomReads(blob: blob, points: points, expected: expected,
                                   offsets: F.offsets(points: points, total: expected.count, extra: boundaries))
        }
    }

    @Test func randomReadsSingleMember() throws {
        let (_, points) = try F.gunzip(F.gzipCLI, spacing: 1 << 20)
        try F.checkRandomReads(blob: F.gzipCLI, points: points, expected: F.data,
                               offsets: F.offsets(points: points, total: F.data.count))
    }

    @Test func concurrentRandomReads() throws {
        let scratch = F.Scratch()
        let (_, points) = try F.gunzip(F.gzipCLI, spacing: 1 << 20)
        let file = try scratch.write("concurrent.gz", F.gzipCLI)
        let fd = open(file, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        let access = GzipRandomAccess(fd: fd, blobSize: Int64(F.gzipCLI.count), accessPoints: points)
        let failures = LockedCounter()
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            let offset = Int64(i) * Int64(F.data.count / 16) + 1234
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = (try? buffer.withUnsafeMutableBytes { try access.read(at: offset, into: $0) }) ?? -1
            if n != 65536 || !buffer.elementsEqual(F.data[Int(offset)..<Int(offset) + 65536]) {
                failures.increment()
            }
        }
        #expect(failures.value == 0)
    }

    @Test func pigzOutputIfInstalled() throws {
        let scratch = F.Scratch()
        guard F.have("pigz") else { return }
        let input = try scratch.write("data-pigz", F.data)
        try F.shell("pigz -c < \(input) > \(scratch.path("pigz.gz"))")
        let blob = try F.read(scratch.path("pigz.gz"))
        let (out, points) = try F.gunzip(blob, spacing: 1 << 20)
        #expect(out == F.data)
        #expect(points.count >= 30)
        try F.checkRandomReads(blob: blob, points: points, expected: F.data,
                               offsets: Array(F.offsets(points: points, total: F.data.count).prefix(40)))
    }

    @Test func trailingZeroPaddingToleratedGarbageRejected() throws {
        let member = try F.gzip(Array(F.data[..<100_000]))
        #expect(try F.gunzip(member + [UInt8](repeating: 0, count: 1000), spacing: nil).out == Array(F.data[..<100_000]))
        // Garbage after a member, and zeros then garbage.
        for tail: [UInt8] in [[0x50, 0x4b, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 7]] {
            let error = #expect(throws: StoreError.self) { try F.gunzip(member + tail, spacing: 1 << 16) }
            #expect(error?.code == .corrupt, "\(String(describing: error))")
        }
        // Not gzip at all.
        let error = #expect(throws: StoreError.self) { try F.gunzip(Array("plain text, not gzip".utf8), spacing: nil) }
        #expect(error?.code == .corrupt)
        // Nothing at all.
        #expect(throws: StoreError.self) { try F.gunzip([], spacing: nil) }
    }

    @Test func truncatedGzipFailsOnFinish() throws {
        let blob = F.gzipCLI
        for cut in [5, 20, blob.count / 2, blob.count - 4, blob.count - 1] {
            let decoder = try GzipDecoder(accessPointSpacing: 1 << 20)
            try blob.withUnsafeBytes { try decoder.decode(UnsafeRawBufferPointer(rebasing: $0[..<cut])) { _ in } }
            let error = #expect(throws: StoreError.self) { try decoder.finish() }
            #expect(error?.code == .corrupt)
        }
        // A truncated second member too.
        let member = try F.gzip(Array(F.data[..<50_000]))
        #expect(throws: StoreError.self) { try F.gunzip(member + member.prefix(member.count - 3), spacing: nil) }
    }

    @Test func corruptedGzipFails() throws {
        var blob = F.gzipCLI
        blob[blob.count / 3] ^= 0x55
        #expect(throws: StoreError.self) { try F.gunzip(blob, spacing: nil) }
        #expect(throws: StoreError.self) { try F.gunzip(blob, spacing: 1 << 20) }
        // A flipped CRC in the trailer.
        var crc = F.gzipCLI
        crc[crc.count - 6] ^= 1
        let error = #expect(throws: StoreError.self) { try F.gunzip(crc, spacing: nil) }
        #expect(error?.code == .corrupt)
    }

    @Test func wrongLengthInTrailerFails() throws {
        var blob = F.gzipCLI
        blob[blob.count - 1] ^= 1  // ISIZE's top byte
        let error = #expect(throws: StoreError.self) { try F.gunzip(blob, spacing: nil) }
        #expect(error?.code == .corrupt)
    }

    /// A member of more than 4 GiB: ISA-L's 32-bit output counter wraps, its trailer holds the
    /// length modulo 2^32, and look-backs right after the wrap are still valid. Made and
    /// inflated in pieces (nothing is kept): a 1000-byte pattern, so every match is 1000 back.
    @Test func memberOverFourGiB() throws {
        let pattern = (0..<1000).map { UInt8(truncatingIfNeeded: ($0 &* 7919) >> 3) }
        let piece = Array((0..<1000).map { _ in pattern }.joined())  // 1,000,000 bytes
        let total: Int64 = (1 << 32) + 3_000_000
        let encoder = try ParallelGzipEncoder(engine: .isal(level: 1))
        let decoder = try GzipDecoder(accessPointSpacing: 256 << 20)
        var produced: Int64 = 0
        var mismatch = false
        var sent: Int64 = 0
        var offset = 0  // of the next expected byte within the pattern
        func check(_ out: UnsafeRawBufferPointer) {
            for (i, b) in out.prefix(64).enumerated() where b != pattern[(offset + i) % 1000] { mismatch = true }
            offset = (offset + out.count) % 1000
            produced += Int64(out.count)
        }
        try piece.withUnsafeBytes { bytes in
            while sent < total {
                let n = Int(min(Int64(bytes.count), total - sent))
                try encoder.encode(UnsafeRawBufferPointer(rebasing: bytes[..<n])) { (compressed) throws(StoreError) in
                    try decoder.decode(compressed, output: check)
                }
                sent += Int64(n)
            }
        }
        try encoder.finish { (compressed) throws(StoreError) in try decoder.decode(compressed, output: check) }
        try decoder.finish()
        #expect(produced == total)
        #expect(!mismatch)
        #expect(decoder.accessPoints.count >= 8)
    }

    /// A damaged access point (the index cache is checksummed, but its states are ISA-L's memory)
    /// is refused with an error, never restored.
    @Test func damagedAccessPointStatesAreRefused() throws {
        let (_, points) = try F.gunzip(F.gzipCLI, spacing: 1 << 20)
        let scratch = F.Scratch()
        let file = try scratch.write("blob.gz", F.gzipCLI)
        let fd = open(file, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        let point = points[3]
        // Not zstd at all; zstd of too little; zstd of a state with a field out of range.
        let notZstd = Array(repeating: UInt8(0xff), count: 100)
        let short = try F.zstd([UInt8](repeating: 0, count: 1000))
        let body = UnsafeMutableRawBufferPointer.allocate(byteCount: GzipInflation.stateSize, alignment: 16)
        defer { body.deallocate() }
        let n = try SnapshotCompressor.expand(point.state, into: body)
        var state = Array(UnsafeRawBufferPointer(rebasing: body[..<n]))
        let field = MemoryLayout<inflate_state>.offset(of: \.read_in_length)!
        state[field..<field + 4] = [0x7f, 0, 0, 0]  // 127 bits held: more than ISA-L ever holds
        let badField = try F.zstd(state)
        for bad in [notZstd, short, badField] {
            var damaged = points
            damaged[3].state = bad
            let access = GzipRandomAccess(fd: fd, blobSize: Int64(F.gzipCLI.count), accessPoints: damaged)
            var buffer = [UInt8](repeating: 0, count: 4096)
            let error = #expect(throws: StoreError.self) {
                _ = try buffer.withUnsafeMutableBytes { try access.read(at: point.uncompressedOffset + 10, into: $0) }
            }
            #expect(error?.code == .corrupt, "\(String(describing: error))")
        }
    }

    /// An index whose access points another ISA-L build wrote is not used (it is rebuilt).
    @Test func indexOfAnotherDecoderIsNotUsed() throws {
        let (_, points) = try F.gunzip(F.gzipCLI, spacing: 1 << 20)
        let digest = try Digest(parsing: "sha256:" + String(repeating: "ab", count: 32))
        let index = LayerIndex(layer: digest, diffID: digest, compression: .gzip, compressedSize: Int64(F.gzipCLI.count),
                               uncompressedSize: Int64(F.data.count), entries: [], accessPoints: points)
        #expect(LayerIndex.decode(index.encoded())?.accessPoints == points)
        #expect(LayerIndex.decode(index.encoded(decoder: GzipInflation.identity + " (another build)")) == nil)
        #expect(GzipInflation.identity.contains("libisal"))
    }

    @Test func zstdRoundTripAndCLI() throws {
        let scratch = F.Scratch()
        let blob = try F.zstd(F.data)
        #expect(try F.unzstd(blob) == F.data)
        #expect(try F.unzstd(blob, chunk: 4099) == F.data)
        guard F.have("zstd") else { return }
        let ours = try scratch.write("ours.zst", blob)
        try F.shell("zstd -q -dc < \(ours) > \(scratch.path("ours.zst.out"))")
        #expect(try F.read(scratch.path("ours.zst.out")) == F.data)
        let input = try scratch.write("data-zstd", F.data)
        try F.shell("zstd -q -c -T1 -3 --long=27 < \(input) > \(scratch.path("cli.zst"))")
        #expect(try F.unzstd(F.read(scratch.path("cli.zst"))) == F.data)
    }

    @Test func zstdMultiFrameAndSkippable() throws {
        let a = Array(F.data[..<3_000_000]), b = Array(F.data[3_000_000..<5_000_000])
        let skippable: [UInt8] = [0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5]
        let blob = try F.zstd(a) + skippable + F.zstd(b, level: 1) + F.zstd([])
        #expect(try F.unzstd(blob, chunk: 65_536) == a + b)
        #expect(try F.unzstd(skippable) == [])
        #expect(try F.unzstd([]) == [])
    }

    @Test func truncatedOrCorruptZstdFails() throws {
        let blob = try F.zstd(Array(F.data[..<2_000_000]))
        for cut in [3, 100, blob.count / 2, blob.count - 1] {
            let error = #expect(throws: StoreError.self) { try F.unzstd(Array(blob[..<cut])) }
            #expect(error?.code == .corrupt)
        }
        // A complete frame followed by a partial one.
        #expect(throws: StoreError.self) { try F.unzstd(blob + blob.prefix(50)) }
        var corrupt = blob
        corrupt[corrupt.count / 2] ^= 0xff
        #expect(throws: StoreError.self) { try F.unzstd(corrupt) }
        #expect(throws: StoreError.self) { try F.unzstd(Array("not zstd".utf8)) }
    }
}

/// A counter shared by the threads of the concurrent test.
final class LockedCounter: @unchecked Sendable {
    private var count = 0
    private let lock = NSLock()
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
